"""The benchmark starts only on the whole path, on a real job: the decode worker's publish is held back
(``PERFSANITY_TEST_HOLD_PUBLISH``; its server runs meanwhile), and neither the readiness completion
nor any aiperf request reaches the frontend before that publish. The frontend's own log dates every
request it served; aiperf's ``profile_export.jsonl`` dates every request it sent.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

HOLD_S = 6.0
# dynamo.frontend: "<UTC ISO>Z  INFO ... request completed ... elapsed_ms=<n> ..."
SERVED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z .*request completed .*elapsed_ms=(\d+)")


def served_request_starts(log: str) -> list[float]:
    """Wall-clock start (log time − elapsed) of every request the frontend logged as completed."""
    out = []
    for line in log.splitlines():
        m = SERVED.match(line)
        if m:
            done = datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC).timestamp()
            out.append(done - int(m.group(2)) / 1e3)
    return out


@pytest.mark.slow
def test_a_held_back_worker_publish_holds_back_every_request(jobs, e2e, monkeypatch):
    monkeypatch.setenv("PERFSANITY_TEST_HOLD_PUBLISH", f"GEN_0={HOLD_S:g}")
    run = jobs.run("benchmark.concurrency_list=1", timeout_s=600)
    assert run.returncode == 0, f"exit {run.returncode}; output:\n{run.stdout[-6000:]}"
    rdv = run.out / "rendezvous"
    published = (rdv / "GEN_0.addr").stat().st_mtime
    role_started = (rdv / "GEN_0.0.started").stat().st_mtime
    gen_log = (run.out / "logs" / "GEN_0.log").read_text()
    assert f"holding the publish back {HOLD_S:g}s" in gen_log, gen_log[-2000:]
    assert published - role_started >= HOLD_S, "the hold did delay the decode worker's publish"
    bench_log = (run.out / "logs" / "BENCHMARK.log").read_text()
    assert "DISAGG_SERVER lists every worker (1 prefill (CTX), 1 decode (GEN))" in bench_log, bench_log[-2000:]

    served = served_request_starts(e2e.strip_ansi((run.out / "logs" / "DISAGG_SERVER.server.log").read_text()))
    assert len(served) >= 3, "the readiness completion and both benchmark requests are in the frontend log"
    assert min(served) >= published - 0.01, (
        f"the frontend served a request {published - min(served):.3f}s before GEN_0 published")
    sent = [json.loads(line)["metadata"]["request_start_ns"] / 1e9
            for f in run.out.glob("client/**/profile_export.jsonl")
            for line in f.read_text().splitlines() if line.strip()]
    assert len(sent) == 2, sent  # multi_round=2 at concurrency 1
    assert min(sent) >= published, f"aiperf sent a request {published - min(sent):.3f}s before GEN_0 published"
