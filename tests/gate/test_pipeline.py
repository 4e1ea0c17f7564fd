"""The submit side's results pipeline (``perfsanity.results.pipeline.finalize``) on fixture job dirs:
finished, regressed, killed, role-failed and result-less jobs; idempotence; settings from job.json
(never from the environment of whoever runs it); ``perfsanity collect``; and the BENCHMARK role's
import graph, which must not reach the history database or the upload.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from gate_helpers import CONFIG, DAY0, job_meta, make_run, seed_history
from junitparser import Failure, JUnitXml

from perfsanity.cli import main
from perfsanity.common.errors import ConfigError
from perfsanity.results.gating import RECORDED_FILE
from perfsanity.results.history import HistoryStore
from perfsanity.results.pipeline import FINAL_FILE, finalize, read_final, read_settings
from perfsanity.run.rendezvous import Rendezvous

ROOT = Path(__file__).resolve().parents[2]
NOW = DAY0 + timedelta(days=90, hours=3)
CANCELLED = "SLURM job 4711 ended CANCELLED (exit code 0, signal 15)"


def _job(tmp_path: Path, values_by_conc: dict, *, name: str = "job", status: str = "passed",
         failures: tuple[str, ...] = (), pipeline: dict | None = None) -> Path:
    """A job dir as a job leaves it: results.json, job_meta.json, job.json (with its pipeline settings)."""
    job = tmp_path / name
    (job / "logs").mkdir(parents=True)
    run = make_run(values_by_conc, status=status).model_copy(update={"failures": failures})
    run.write(job / "results.json")
    job_meta(timestamp=NOW).write(job / "job_meta.json")
    info = {"config_name": CONFIG, "test_id": f"disagg_upload-e2e-{CONFIG}"}
    if pipeline is not None:
        info["pipeline"] = pipeline
    (job / "job.json").write_text(json.dumps(info))
    return job


def _cases(job: Path) -> dict:
    return {case.name: case for suite in JUnitXml.fromfile(str(job / "junit.xml")) for case in suite}


def _failures(job: Path) -> dict[str, str]:
    return {name: r.message for name, case in _cases(job).items() for r in case.result if isinstance(r, Failure)}


def _records(db: Path) -> list:
    """This job's records (job_meta's job id 42; the seeded history has none)."""
    with HistoryStore(db) as store:
        return [r for r in store.query({"config_name": CONFIG}, valid_only=False) if r.job_id == "42"]


POST = {"pre_merge": False, "post_merge": True, "upload": False}
PRE = {"pre_merge": True, "post_merge": False, "upload": False}


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    """A 90-day post-merge history; the environment names it (as the submit side's does)."""
    db = tmp_path / "history.sqlite"
    for name in ("PERFSANITY_BASELINES", "PERFSANITY_OPENSEARCH_URL", "PERFSANITY_PRE_MERGE", "PERFSANITY_RUN_CI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PERFSANITY_HISTORY", str(db))
    monkeypatch.chdir(tmp_path)
    with HistoryStore(db) as store:
        today = seed_history(store)
    return db, today


def test_finished_job_is_gated_recorded_and_reported_once(seeded, tmp_path, capsys):
    db, today = seeded
    job = _job(tmp_path, {64: today}, pipeline=POST)
    assert finalize(job, job_exit_code=0) == 0
    assert "recorded 1 record(s)" in capsys.readouterr().out
    assert json.loads((job / "gate.json").read_text())["verdict"] == "PASS"
    cases = _cases(job)
    assert {"c64.output_token_throughput", "c64.ttft_median"} <= set(cases) and not _failures(job)
    assert (job / "report.html").is_file() and (job / "report.json").is_file()
    [rec] = _records(db)
    assert rec.post_merge and rec.valid and rec.gate_verdicts["output_token_throughput"] == "PASS"
    assert read_final(job)["exit_code"] == 0

    # idempotent: a second run (perfsanity collect after --wait, an L0 job that finalised in the job)
    assert finalize(job, job_exit_code=0) == 0
    assert "not adding again" in capsys.readouterr().out
    assert len(_records(db)) == 1
    assert json.loads((job / RECORDED_FILE).read_text())["ids"] == [rec.id]


def test_pre_merge_regression_fails_a_valid_measurement(seeded, tmp_path):
    db, today = seeded
    job = _job(tmp_path, {64: dict(today, output_token_throughput=today["output_token_throughput"] * 0.8)},
               pipeline=PRE)
    assert finalize(job, job_exit_code=0) == 1  # the job's code says "valid"; the gate fails it
    failures = _failures(job)
    assert list(failures) == ["c64.output_token_throughput"], failures
    assert failures["c64.output_token_throughput"].startswith("perf regression:")
    [rec] = _records(db)
    assert not rec.post_merge and rec.valid  # pre-merge runs never feed a baseline
    assert read_final(job) | {"finalized": ""} == read_final(job) | {
        "exit_code": 1, "job_exit_code": 0, "gate_verdict": "FAIL", "finalized": ""}


def test_killed_job_yields_gate_and_junit_naming_the_kill(seeded, tmp_path):
    db, today = seeded
    # SIGKILLed after its first concurrency: results.json as written after c64, status still "incomplete"
    job = _job(tmp_path, {64: today}, status="incomplete", pipeline=POST)
    assert finalize(job, job_exit_code=1, reason=CANCELLED) == 1
    gate = json.loads((job / "gate.json").read_text())
    assert {v["concurrency"] for v in gate["verdicts"]} == {64}
    cases = _cases(job)
    assert "c64.output_token_throughput" in cases and cases["c64.output_token_throughput"].is_passed
    assert _failures(job) == {"JOB": CANCELLED}
    # the finished concurrency is kept in history, but as invalid: a killed run never feeds a baseline
    [rec] = _records(db)
    assert not rec.valid and CANCELLED in rec.invalid_reason
    assert json.loads((job / "results.json").read_text())["status"] == "incomplete"  # the role's file, untouched
    assert json.loads((job / "report.json").read_text())["reason"] == CANCELLED


def test_sigtermed_benchmark_keeps_its_own_failure_and_the_kill(seeded, tmp_path):
    _db, today = seeded
    job = _job(tmp_path, {64: today}, status="failed", failures=("interrupted (SIGTERM/SIGINT)",), pipeline=POST)
    assert finalize(job, job_exit_code=1, reason=CANCELLED) == 1
    assert _failures(job) == {"BENCHMARK": "interrupted (SIGTERM/SIGINT)", "JOB": CANCELLED}


def test_role_failure_is_the_only_failure_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFSANITY_HISTORY", str(tmp_path / "h.sqlite"))
    job = _job(tmp_path, {}, status="failed", failures=("GEN_0: GEN_0 server exited with code 2 while starting",),
               pipeline=POST)
    Rendezvous(job / "rendezvous").report_failure("GEN_0", "GEN_0 server exited with code 2 while starting",
                                                  "unrecognized arguments: --bad")
    assert finalize(job, job_exit_code=1) == 1
    cases = _cases(job)
    assert sorted(cases) == ["GEN_0"]  # no cascade, no extra JOB testcase: GEN_0 explains the failure
    assert "unrecognized arguments" in cases["GEN_0"].result[0].text
    assert not (job / "gate.json").exists()  # nothing finished: nothing to gate
    assert json.loads((job / "report.json").read_text())["failed_role"] == "GEN_0"


def test_job_that_wrote_nothing_gets_a_failure_with_the_evidence(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFSANITY_HISTORY", str(tmp_path / "h.sqlite"))
    job = tmp_path / "job"
    (job / "logs").mkdir(parents=True)
    (job / "logs" / "install.log").write_text("pip: No space left on device\n")
    (job / "job.json").write_text(json.dumps({"config_name": "mocker-ctx1-gen1", "pipeline": POST}))
    assert finalize(job, job_exit_code=1) == 1
    [(name, case)] = _cases(job).items()
    assert name == "JOB" and case.result[0].message == "job failed (exit code 1)"
    assert "No space left on device" in case.result[0].text
    assert case.classname == "mocker-ctx1-gen1.roles"


def test_exit_0_without_results_is_a_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFSANITY_HISTORY", str(tmp_path / "h.sqlite"))
    job = tmp_path / "job"
    job.mkdir()
    assert finalize(job, job_exit_code=0) == 1
    [(name, message)] = _failures(job).items()
    assert name == "BENCHMARK" and "results.json is missing" in message


def test_settings_come_from_job_json_not_the_environment(seeded, tmp_path, monkeypatch):
    _db, today = seeded
    regressed = {64: dict(today, output_token_throughput=today["output_token_throughput"] * 0.8)}
    # whoever runs finalize has PERFSANITY_PRE_MERGE=1 set: job.json (written at prepare time) decides
    monkeypatch.setenv("PERFSANITY_PRE_MERGE", "1")
    job = _job(tmp_path, regressed, pipeline=POST)
    assert finalize(job, job_exit_code=0) == 0  # post-merge: a WARN, not a failure
    assert json.loads((job / "gate.json").read_text())["verdict"] == "WARN"
    # a job dir prepared before job.json carried the settings: the environment's, as before
    old = _job(tmp_path, regressed, name="old")
    assert read_settings(old, os.environ).pre_merge
    assert finalize(old, job_exit_code=0) == 1


@pytest.mark.parametrize("pipeline, field", [({"pre_merge": "yes"}, "pipeline.pre_merge"), ([1], "pipeline")])
def test_bad_settings_name_file_and_field(tmp_path, pipeline, field):
    job = _job(tmp_path, {}, pipeline=pipeline)
    with pytest.raises(ConfigError) as exc:
        read_settings(job, {})
    assert str(job / "job.json") in str(exc.value) and field in str(exc.value)


def test_unreachable_history_is_a_gate_failure_not_a_crash(tmp_path, monkeypatch):
    _db = tmp_path
    monkeypatch.chdir(tmp_path)
    job = _job(tmp_path, {64: {"output_token_throughput": 1.0}}, pipeline=POST)
    env = {"PERFSANITY_HISTORY": "/proc/perfsanity-no-such-dir/history.sqlite"}
    assert finalize(job, job_exit_code=0, environ=env) == 0  # the measurement stands
    assert "GATE" in _failures(job)


def test_prepare_fixes_the_settings_in_job_json(tmp_path, monkeypatch):
    from perfsanity.plan.prepare import DEFAULT_CONFIG, prepare_direct

    monkeypatch.setenv("PERFSANITY_PRE_MERGE", "1")
    monkeypatch.delenv("PERFSANITY_RUN_CI", raising=False)
    job = prepare_direct(DEFAULT_CONFIG, tmp_path / "a")
    job.write()
    assert json.loads((tmp_path / "a" / "job.json").read_text())["pipeline"] == {
        "pre_merge": True, "post_merge": False, "upload": False}
    monkeypatch.delenv("PERFSANITY_PRE_MERGE")
    monkeypatch.setenv("PERFSANITY_RUN_CI", "1")
    prepare_direct(DEFAULT_CONFIG, tmp_path / "b").write()
    assert read_settings(tmp_path / "b", {}).__dict__ == {"pre_merge": False, "post_merge": True, "upload": True}


def test_collect_subcommand_on_a_local_job_dir(seeded, tmp_path, capsys):
    db, today = seeded
    job = _job(tmp_path, {64: today}, pipeline=POST)
    Rendezvous(job / "rendezvous").write_status("passed", failures=[])
    assert main(["collect", str(job)]) == 0
    assert (job / "junit.xml").is_file() and len(_records(db)) == 1
    assert main(["collect", str(job)]) == 0
    assert len(_records(db)) == 1
    assert read_final(job)["job_exit_code"] == 0
    assert (job / FINAL_FILE).is_file()


def test_collect_of_a_slurm_job_uses_its_recorded_end(seeded, tmp_path):
    _db, today = seeded
    job = _job(tmp_path, {64: today}, status="incomplete", pipeline=POST)
    (job / "jobid.json").write_text(json.dumps({"job_id": "4711", "state": "CANCELLED", "exit_code": 0,
                                                "exit_signal": 15}))
    assert main(["collect", str(job)]) == 1
    assert _failures(job) == {"JOB": CANCELLED}


def test_collect_asks_slurm_and_refuses_a_running_job(seeded, tmp_path, monkeypatch, capsys):
    import perfsanity.jobs.submit as submit_mod
    from perfsanity.jobs.slurm import JobInfo

    _db, today = seeded
    job = _job(tmp_path, {64: today}, pipeline=POST)
    (job / "jobid.json").write_text(json.dumps({"job_id": "4712"}))  # submitted without --wait
    monkeypatch.setattr(submit_mod, "job_state", lambda job_id: JobInfo(job_id=job_id, state="RUNNING"))
    assert main(["collect", str(job)]) != 0
    assert "job 4712 is RUNNING: collect it once it has ended" in capsys.readouterr().err
    assert not (job / "junit.xml").exists()

    monkeypatch.setattr(submit_mod, "job_state", lambda job_id: JobInfo(job_id=job_id, state="TIMEOUT",
                                                                        exit_code=0, exit_signal=15))
    assert main(["collect", str(job)]) == 1
    assert _failures(job) == {"JOB": "SLURM job 4712 ended TIMEOUT (exit code 0, signal 15)"}
    assert json.loads((job / "jobid.json").read_text())["state"] == "TIMEOUT"  # the final state is kept


def test_collect_of_a_job_slurm_forgot_is_judged_by_its_benchmark(seeded, tmp_path, monkeypatch):
    import perfsanity.jobs.submit as submit_mod
    from perfsanity.jobs.slurm import JobNotFound

    def forgotten(job_id):
        raise JobNotFound(job_id)

    _db, today = seeded
    job = _job(tmp_path, {64: today}, pipeline=POST)
    (job / "jobid.json").write_text(json.dumps({"job_id": "4713", "state": "SUBMITTED"}))
    Rendezvous(job / "rendezvous").write_status("passed", failures=[])
    monkeypatch.setattr(submit_mod, "job_state", forgotten)
    assert main(["collect", str(job)]) == 0 and not _failures(job)


def test_collect_of_something_that_never_ran_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["collect", str(tmp_path / "empty")]) != 0
    err = capsys.readouterr().err
    assert err.startswith("perfsanity: error:") and "never ran" in err and err.count("\n") == 1


# ------------------------------------------------------------------ compute nodes need no database

ROLE_MODULES = ("perfsanity.jobs.testcases", "perfsanity.run.roles", "perfsanity.run.benchmark",
                "perfsanity.run.install", "perfsanity.run.triage")


def test_benchmark_role_imports_no_database_or_upload_at_run_time():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in ROLE_MODULES)
            + "from perfsanity import engines, load\n"
            + "for name in load.names():\n    load.get_client(name)\n"
            + "for name in engines.names():\n    engines.get_backend(name)\n"
            + "print('\\n'.join(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.split()
    assert "perfsanity.run.benchmark" in loaded
    bad = [m for m in loaded if m.split(".")[0] in ("sqlalchemy", "psycopg", "psycopg2")
           or m.startswith(("perfsanity.results", "perfsanity.cli"))]
    assert not bad, bad


def test_benchmark_role_import_graph_has_no_path_to_the_history():
    """Static: no import (function-level ones included) from the role code reaches the history/upload."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("perfsanity", include_external_packages=True)
    reached = set()
    for module in ("perfsanity.run.roles", "perfsanity.run.benchmark", "perfsanity.run.install", "perfsanity.load",
                   "perfsanity.engines"):
        reached |= graph.find_upstream_modules(module)
    bad = sorted(m for m in reached if m.startswith(("perfsanity.results", "sqlalchemy", "psycopg")))
    assert not bad, bad


# ------------------------------------------------------------------------- the Jenkins collect stage


def _jenkins(stage: str, ws: Path) -> int:
    from perfsanity.cli.jenkins import main as jenkins_main

    return jenkins_main(["--stage", stage, "--test", f"disagg_upload-e2e-{CONFIG}", "--workspace", str(ws)])


def test_jenkins_collect_of_a_cancelled_job_writes_junit_naming_it(seeded, tmp_path, capsys):
    db, today = seeded
    ws = _job(tmp_path, {64: today}, name="ws", status="incomplete", pipeline=POST)
    (ws / "jobid.json").write_text(json.dumps({"job_id": "4711", "state": "CANCELLED", "exit_code": 0,
                                               "exit_signal": 15}))
    assert _jenkins("collect", ws) == 1
    assert _failures(ws) == {"JOB": CANCELLED}
    assert "c64.output_token_throughput" in _cases(ws)
    assert len(_records(db)) == 1  # recorded on the agent
    assert "[collect] junit" in capsys.readouterr().out


def test_jenkins_collect_without_a_job_still_leaves_a_junit(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERFSANITY_HISTORY", str(tmp_path / "h.sqlite"))
    ws = tmp_path / "ws"
    ws.mkdir()
    assert _jenkins("collect", ws) == 1
    [(name, message)] = _failures(ws).items()
    assert name == "JOB" and message.startswith("cannot collect the job:") and "never ran" in message


@pytest.mark.parametrize(("score", "threshold", "error", "passed", "kind"), [
    (0.75, 0.5, None, True, None),
    (0.25, 0.5, None, False, "AccuracyBelowThreshold"),
    (None, 0.5, "lm-eval exited with code 1 (log logs/accuracy-lm-eval.log): boom", False, "AccuracyError"),
    (0.0, None, None, True, None),  # no threshold: recorded, not judged
])
def test_accuracy_is_judged_on_the_submit_side(seeded, tmp_path, score, threshold, error, passed, kind):
    """results.json's accuracy becomes an ``accuracy.<task>`` junit case; a task below its threshold (or
    without a score) fails that case and the job (exit 1, named in finalized.json), the perf points stay
    valid, and report.html shows the score."""
    from perfsanity.load.results_json import AccuracyResult, RunResult

    _, today = seeded
    job = _job(tmp_path, {64: today}, pipeline=POST)
    run = RunResult.read(job / "results.json")
    acc = AccuracyResult(task="tiny_arith", metric="exact_match,strip", score=score, threshold=threshold,
                         samples=8 if score is not None else None, error=error, started_at=1.0, ended_at=3.5)
    run.model_copy(update={"accuracy": (acc,)}).write(job / "results.json")

    code = finalize(job, job_exit_code=0)
    case = _cases(job)["accuracy.tiny_arith"]
    final = read_final(job)
    assert code == (0 if passed else 1), final
    assert final["accuracy"][0]["passed"] is passed and final["accuracy"][0]["score"] == score
    if passed:
        assert case.is_passed and "accuracy.tiny_arith" not in final["failures"]
    else:
        (failure,) = [r for r in case.result if isinstance(r, Failure)]
        assert failure.type == kind and "accuracy tiny_arith" in failure.message
        assert final["failures"] == ["accuracy.tiny_arith"]
        if error:
            assert "boom" in failure.text
    assert RunResult.read(job / "results.json").status == "passed"  # perf validity untouched
    assert final["gate_verdict"] is not None  # the perf points were gated as usual
    report = (job / "report.html").read_text()
    assert "<h2>Accuracy</h2>" in report and "tiny_arith" in report
