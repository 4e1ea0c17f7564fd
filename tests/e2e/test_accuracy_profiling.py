"""The accuracy step and the torch-profiler window hooks on the local mocker, through the real CLI.

* Accuracy: lm-eval runs the shipped offline task against the same front door after the perf point;
  results.json carries the score, junit.xml an ``accuracy.tiny_arith`` case. With a threshold the
  mocker's simulated text cannot reach (every answer exactly right), that case fails, the job's exit
  code is 1 and the verdict says why, while the perf point itself stays a valid measurement.
* Profiling: around the c2 point (``profiling.windows``) the BENCHMARK sent /start_profile to every
  worker before c2's client started and /stop_profile after it ended, nothing around c1; the mocker
  does not serve them, and each call is recorded with its answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml

REPO = Path(__file__).resolve().parents[2]
ACCURACY = REPO / "test_configs/disagg/perf/mocker-ctx1-gen1-accuracy.yaml"
PROFILING = REPO / "test_configs/disagg/perf/mocker-ctx1-gen1-profiling.yaml"


def _accuracy_case(out: Path):
    cases = [c for suite in JUnitXml.fromfile(str(out / "junit.xml")) for c in suite
             if c.name == "accuracy.tiny_arith"]
    assert len(cases) == 1, f"no single accuracy.tiny_arith case in {out / 'junit.xml'}"
    return cases[0]


@pytest.mark.slow
def test_accuracy_step_scores_and_a_forced_threshold_fails_its_case(jobs):
    passing = jobs.start(config=ACCURACY, name="pass")
    forced = jobs.start("accuracy.threshold=1.0", config=ACCURACY, name="forced")
    ok, bad = passing.wait(900), forced.wait(900)

    assert ok.returncode == 0, ok.stdout[-5000:]
    res = ok.json("results.json")
    (acc,) = res["accuracy"]
    assert (acc["task"], acc["metric"], acc["threshold"], acc["samples"], acc["error"]) == \
        ("tiny_arith", "exact_match,strip", 0.0, 8, None), acc
    assert 0.0 <= acc["score"] <= 1.0 and Path(acc["raw_path"]).is_file(), acc
    # the step ran after the perf point, against the same front door
    assert acc["started_at"] >= res["results"][-1]["ended_at"], (acc, res["results"])
    log = (ok.out / "logs" / "BENCHMARK.log").read_text()
    door = log.split(" serves 'tiny-mocker'")[0].rsplit(" ", 1)[-1]
    assert f"base_url={door}/v1/completions" in log, log[-3000:]
    case = _accuracy_case(ok.out)
    assert case.is_passed and not case.result, case
    assert ok.json("finalized.json")["accuracy"][0]["passed"] is True

    assert bad.returncode == 1, bad.stdout[-5000:]
    (acc_bad,) = bad.json("results.json")["accuracy"]
    assert acc_bad["threshold"] == 1.0 and acc_bad["score"] < 1.0, acc_bad
    case = _accuracy_case(bad.out)
    (failure,) = [r for r in case.result if isinstance(r, Failure)]
    assert failure.type == "AccuracyBelowThreshold" and "< threshold 1" in failure.message, failure.message
    final = bad.json("finalized.json")
    assert final["failures"] == ["accuracy.tiny_arith"] and final["job_exit_code"] == 0, final
    assert bad.json("results.json")["status"] == "passed"  # the perf measurement stays valid
    tail = bad.stdout.rstrip().splitlines()
    assert tail[-1].split("] ", 1)[-1].startswith("FAILED"), bad.stdout[-2000:]
    why = "accuracy tiny_arith: exact_match,strip 0 < threshold 1"
    assert f"FAILED: {why}" in tail and f"=== perfsanity triage: {why}" in tail, bad.stdout[-3000:]  # says why


@pytest.mark.slow
def test_profiler_hooks_fire_around_the_chosen_window_only(jobs):
    run = jobs.run(config=PROFILING, timeout_s=900)
    assert run.returncode == 0, run.stdout[-5000:]
    res = run.json("results.json")
    points = {r["concurrency"]: r for r in res["results"]}
    assert sorted(points) == [1, 2]
    calls = res["profiler_calls"]
    assert {c["window"] for c in calls} == {"c2"}, calls
    starts = [c for c in calls if c["action"] == "start"]
    stops = [c for c in calls if c["action"] == "stop"]
    assert sorted(c["role"] for c in starts) == sorted(c["role"] for c in stops) == ["CTX_0", "GEN_0"], calls
    c1, c2 = points[1], points[2]
    for c in starts:
        assert c1["ended_at"] <= c["sent_at"] <= c["answered_at"] <= c2["started_at"], (c, c1, c2)
        assert c["url"].endswith("/start_profile")
    for c in stops:
        assert c2["ended_at"] <= c["sent_at"] <= c["answered_at"], (c, c2)
        assert c["url"].endswith("/stop_profile")
    # the mocker's status server does not serve SGLang's endpoints: the answer is recorded, not hidden
    assert all(c["status"] == 404 for c in calls), calls
    report = (run.out / "report.html").read_text()
    assert "Profiler windows" in report and "/start_profile" in report
