"""The perfsanity command: subcommands in-process, plus real `python -m perfsanity` processes."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from gate_helpers import CONFIG, DAY0, job_meta, make_run, seed_history
from junitparser import Failure, JUnitXml

from perfsanity.cli import build_parser, main
from perfsanity.results.history import HistoryStore

ROOT = Path(__file__).resolve().parents[2]
NOW = DAY0 + timedelta(days=90, hours=3)
DROP = {"output_token_throughput": 0.95, "total_token_throughput": 0.95}


def _job(tmp_path: Path, values: dict, name: str = "job", *, meta: bool = True) -> Path:
    job = tmp_path / name
    job.mkdir()
    make_run({64: values}).write(job / "results.json")
    if meta:
        job_meta(timestamp=NOW).write(job / "job_meta.json")
    return job


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    """A history with a 5 % throughput drop at day 60 (the trailing mean's level since), and today's job
    (5 repeats) 5 % below that again; PERFSANITY_* pointed into tmp_path."""
    db = tmp_path / "history.sqlite"
    monkeypatch.setenv("PERFSANITY_HISTORY", str(db))
    monkeypatch.delenv("PERFSANITY_BASELINES", raising=False)  # ./baselines.yaml (cwd is tmp_path)
    monkeypatch.delenv("PERFSANITY_OPENSEARCH_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with HistoryStore(db) as store:
        today = seed_history(store, change_day=60, today_repeats=5, change=DROP)
    today = [dict(r, **{m: r[m] * DROP[m] for m in DROP}) for r in today]
    return db, today


def test_gate_post_merge_warns_records_and_writes_artifacts(seeded, tmp_path, capsys):
    db, today = seeded
    job = _job(tmp_path, today)
    assert main(["gate", str(job)]) == 0
    out = capsys.readouterr().out
    assert "WARN (post-merge" in out and "recorded 1 record(s)" in out
    gate = json.loads((job / "gate.json").read_text())
    assert gate["verdict"] == "WARN"
    assert set(gate["regressions"]) == {"c64.output_token_throughput", "c64.total_token_throughput"}
    cases = {c.name: c for s in JUnitXml.fromfile(str(job / "gate_junit.xml")) for c in s}
    assert cases["c64.output_token_throughput"].is_passed  # WARN does not fail the nightly
    with HistoryStore(db) as store:
        newest = store.query({"config_name": CONFIG}, limit=1)[0]
    assert newest.job_id == "42" and newest.is_regression
    assert newest.gate_verdicts["output_token_throughput"] == "WARN"
    # a second gate run on the same job does not record it twice
    assert main(["gate", str(job)]) == 0
    assert "not adding again" in capsys.readouterr().out


def test_gate_pre_merge_fails_with_exit_5(seeded, tmp_path, capsys):
    _db, today = seeded
    job = _job(tmp_path, [dict(r, output_token_throughput=r["output_token_throughput"] * 0.8) for r in today])
    assert main(["gate", str(job), "--pre-merge", "--no-record"]) == 5
    err = capsys.readouterr().err
    assert err.startswith("perfsanity: error: perf regression (pre-merge): c64.output_token_throughput")
    cases = {c.name: c for s in JUnitXml.fromfile(str(job / "gate_junit.xml")) for c in s}
    assert isinstance(cases["c64.output_token_throughput"].result[0], Failure)


def test_baseline_pin_then_gate_uses_it(seeded, tmp_path, capsys):
    _db, repeats = seeded
    today = {m: statistics.fmean(r[m] for r in repeats) for m in DROP}  # what the gate compares: the mean
    assert main(["baseline", "pin", "--config", CONFIG, "--metric", "output_token_throughput",
                 "--value", str(today["output_token_throughput"]), "--concurrency", "64"]) == 0
    assert main(["baseline", "pin", "--config", CONFIG, "--metric", "total_token_throughput",
                 "--value", str(today["total_token_throughput"] * 1.01)]) == 0
    pinned = yaml.safe_load((tmp_path / "baselines.yaml").read_text())
    assert pinned["configs"][CONFIG]["baselines"]["output_token_throughput"] == {64: today["output_token_throughput"]}
    assert main(["baseline", "show"]) == 0
    assert "output_token_throughput" in capsys.readouterr().out
    job = _job(tmp_path, repeats)
    assert main(["gate", str(job), "--no-record"]) == 0
    gate = json.loads((job / "gate.json").read_text())
    assert gate["verdict"] == "PASS"
    sources = {v["metric"]: v["baseline_source"] for v in gate["verdicts"]}
    assert sources["output_token_throughput"] == "pinned" and sources["ttft_median"] == "history"


def test_gate_without_history_uses_pins_only(tmp_path, capsys):
    job = _job(tmp_path, {"output_token_throughput": 80.0}, meta=False)
    pins = tmp_path / "pins.yaml"
    assert main(["baseline", "pin", "--config", CONFIG, "--metric", "output_token_throughput", "--value", "100",
                 "--file", str(pins)]) == 0
    assert main(["gate", str(job), "--no-history", "--baselines", str(pins), "--pre-merge"]) == 5
    gate = json.loads((job / "gate.json").read_text())
    assert gate["history"] is None and gate["regressions"] == ["c64.output_token_throughput"]


def test_gate_uses_the_configs_gate_section(seeded, tmp_path):
    _db, today = seeded
    job = _job(tmp_path, today, meta=False)
    job_meta(timestamp=NOW, gate={"metrics": ["ttft_median"],
                                  "thresholds": {"ttft_median": {"post_merge_pct": 50}}}).write(job / "job_meta.json")
    assert main(["gate", str(job), "--no-record"]) == 0
    gate = json.loads((job / "gate.json").read_text())
    assert [v["metric"] for v in gate["verdicts"]] == ["ttft_median"]
    assert gate["verdicts"][0]["threshold_pct"] == 50  # the configured floor is above the noise bar


def test_history_table_and_filters(seeded, capsys):
    # the seeded history is from 2025: look far enough back
    assert main(["history", "--config", CONFIG, "--since", "5000", "--metric", "ttft_p99", "--limit", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["id", "time", "(UTC)", "conc", "commit", "branch", "kind", "valid", "ttft_p99"]
    assert len(out) == 2 + 5 and "c0089" in out[-1] and "post" in out[-1]
    assert main(["history", "--config", "nope"]) == 0
    assert "no records for config 'nope'" in capsys.readouterr().out
    assert main(["history", "--json", "--limit", "1", "--since", "5000"]) == 0
    assert json.loads(capsys.readouterr().out)["commit"] == "c0089"


def test_invalidate_and_trend(seeded, tmp_path, capsys):
    assert main(["invalidate", "1", "2", "--reason", "bad node"]) == 0
    assert main(["history", "--since", "5000", "--all", "--limit", "100000"]) == 0
    assert capsys.readouterr().out.count("no: bad node") == 2
    out = tmp_path / "trend.html"
    assert main(["trend", "--config", CONFIG, "--out", str(out), "--metric", "output_token_throughput",
                 "--since", "1000"]) == 0
    assert "regression" in out.read_text()


def test_compare_marks_direction(tmp_path, capsys):
    base = {"output_token_throughput": 1000.0, "ttft_median": 100.0, "tpot_median": 10.0}
    a = _job(tmp_path, base, "a", meta=False)
    b = _job(tmp_path, {"output_token_throughput": 900.0, "ttft_median": 90.0, "tpot_median": 10.1}, "b", meta=False)
    assert main(["compare", str(a), str(b / "results.json")]) == 0
    lines = {ln.split()[1]: ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("64 ")}
    assert "-10.0%" in lines["output_token_throughput"] and "WORSE" in lines["output_token_throughput"]
    assert "-10.0%" in lines["ttft_median"] and "better" in lines["ttft_median"]
    assert "~" in lines["tpot_median"]
    assert main(["compare", str(a), str(b), "--fail-on-regression"]) == 5


@pytest.mark.parametrize("argv, exit_code, message", [
    (["gate", "missing-dir"], 2, "missing-dir: not a job directory"),
    (["gate", "nometa"], 2, "job_meta.json: file not found: it carries the match keys"),
    (["report", "."], 2, "results.json: file not found"),
    (["history", "--metric", "ttft_p50"], 2, "--metric: unknown metric 'ttft_p50'"),
    (["baseline", "pin", "--config", "x", "--metric", "throughput", "--value", "1"], 2, "--metric: unknown metric"),
    (["gate", "job", "--history", "mysql://u:pw@h/db"], 2, "unsupported database 'mysql'"),
    (["trend", "--config", "x", "--since", "99999"], 2, "--since: must be at most 3650 days"),
])
def test_bad_input_is_one_line(seeded, tmp_path, capsys, argv, exit_code, message):
    _job(tmp_path, {"output_token_throughput": 1.0})
    _job(tmp_path, {"output_token_throughput": 1.0}, "nometa", meta=False)
    assert main(argv) == exit_code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "pw@" not in err
    assert err.count("\n") == 1


def test_malformed_results_json(tmp_path, capsys):
    job = tmp_path / "job"
    job.mkdir()
    (job / "results.json").write_text('{"config_name": "x", "results": [{"concurrency": 0}]}')
    assert main(["report", str(job)]) == 2
    err = capsys.readouterr().err
    assert "results.json" in err and err.count("\n") == 1


def test_parser_has_job_dir_commands_and_room_for_more():
    parser = build_parser()
    assert parser.parse_args(["status", "somedir"]).command == "status"
    assert parser.parse_args(["logs", "somedir", "GEN_0"]).command == "logs"
    extra = parser.subparsers.add_parser("extra-cmd")
    extra.set_defaults(func=lambda args: 0)
    assert parser.parse_args(["extra-cmd"]).command == "extra-cmd"


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PERFSANITY_HISTORY": str(tmp_path / "history.sqlite"),
                **env}
    full_env.pop("PERFSANITY_BASELINES", None)
    full_env.pop("PERFSANITY_OPENSEARCH_URL", None)
    return subprocess.run([sys.executable, "-m", "perfsanity", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=full_env, timeout=120, stdin=subprocess.DEVNULL, check=False)


def test_python_dash_m_bad_input_is_one_line(tmp_path):
    proc = _run(["gate", str(tmp_path / "nope")], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == f"perfsanity: error: {tmp_path / 'nope'}: not a job directory (expected a directory with " \
        "results.json)\n"


@pytest.mark.slow
def test_python_dash_m_end_to_end(seeded, tmp_path):
    _db, today = seeded
    job = _job(tmp_path, [dict(r, ttft_median=r["ttft_median"] * 1.3) for r in today])
    proc = _run(["gate", str(job), "--pre-merge"], tmp_path)
    assert proc.returncode == 5, proc.stderr
    assert "c64.ttft_median" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run(["report", "--trends", str(job)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (job / "report.html").stat().st_size > 10_000
    assert "gate" in _run(["--help"], tmp_path).stdout
