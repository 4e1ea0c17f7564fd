"""A job is recorded in history exactly once: the job's run id (job_meta.json) is a unique key of the
history DB, so a second recording, or two ``perfsanity gate`` racing on one job dir, adds nothing.
SQLite and PostgreSQL (``store_url``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from gate_helpers import CONFIG, job_meta, make_keys, make_run

from perfsanity.results.gating import RECORDED_FILE, gate_job
from perfsanity.results.history import AlreadyRecorded, HistoryStore, RunMeta

ROOT = Path(__file__).resolve().parents[2]
RUN = {8: {"output_token_throughput": 1000.0}, 64: {"output_token_throughput": 5000.0}}


def _job_dir(tmp_path: Path, name: str = "job") -> Path:
    job = tmp_path / name
    job.mkdir()
    make_run(RUN).write(job / "results.json")
    job_meta().model_copy(update={"run_id": str(uuid.uuid4())}).write(job / "job_meta.json")
    return job


def test_the_same_run_id_is_refused(store: HistoryStore) -> None:
    meta = RunMeta(job_id="1", run_id=str(uuid.uuid4()))
    ids = store.add_run(make_keys(), make_run(RUN), meta)
    with pytest.raises(AlreadyRecorded) as info:
        store.add_run(make_keys(), make_run(RUN), meta)
    assert info.value.ids == ids
    assert store.count() == 2
    store.add_run(make_keys(), make_run(RUN), RunMeta(job_id="1"))  # no run id: a new run each time
    assert store.count() == 4


def test_a_lost_marker_does_not_record_twice(store_url: str, tmp_path: Path, capsys) -> None:
    # the marker file was the only guard: the second gate of a check-then-act race does not see it
    job = _job_dir(tmp_path)
    gate_job(job, history=store_url, upload=False, baselines_file=None)
    (job / RECORDED_FILE).unlink()
    gate_job(job, history=store_url, upload=False, baselines_file=None)
    assert "already recorded" in capsys.readouterr().out
    with HistoryStore(store_url) as store:
        assert len(store.query({"config_name": CONFIG}, valid_only=False)) == 2


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(3))
def test_concurrent_gates_record_once(store_url: str, tmp_path: Path, round_: int) -> None:
    with HistoryStore(store_url) as store:
        store.count()  # schema in place: the gates race on recording, not on migrating
    job = _job_dir(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("PERFSANITY_BASELINES", "PERFSANITY_OPENSEARCH_URL", "PERFSANITY_HISTORY"):
        env.pop(name, None)
    procs = [subprocess.Popen([sys.executable, "-m", "perfsanity", "gate", str(job), "--history", store_url],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(4)]
    deadline = time.monotonic() + 120
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert p.returncode == 0, err
        outs.append(out)
    with HistoryStore(store_url) as store:
        records = store.query({"config_name": CONFIG}, valid_only=False)
    assert sorted(r.keys.concurrency for r in records) == [8, 64]
    assert sum("recorded 2 record(s)" in o for o in outs) == 1, outs
    assert sum("already recorded" in o for o in outs) == 3, outs
