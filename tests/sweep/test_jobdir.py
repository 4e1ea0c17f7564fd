"""status / logs on synthetic job dirs and sweep dirs built in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfsanity.common.errors import ConfigError
from perfsanity.jobs import jobdir, sweep
from perfsanity.load.results_json import ConcurrencyResult, LatencyStats, RunResult

BASE = "test_configs/disagg/perf/mocker-ctx1-gen1.yaml"  # relative to the repo
SECRET = "hf_" + "a1B2c3D4e5F6g7H8i9J0kLmN"


def _result(status="passed") -> RunResult:
    def conc(c, tps, ttft, itl):
        return ConcurrencyResult(concurrency=c, client="aiperf", requested=8 * c, completed=8 * c, failed=0,
                                 output_token_throughput=tps, ttft=LatencyStats(median=ttft, p99=ttft * 2),
                                 itl=LatencyStats(median=itl))

    return RunResult(config_name="mocker-ctx1-gen1", backend="dynamo-mocker", mode="e2e", total_gpus=4,
                     results=(conc(1, 120.5, 10.0, 1.5), conc(8, 900.25, 42.0, 3.25), conc(4, 950.0, 20.0, 2.0)),
                     status=status)


def _job_dir(root: Path, *, job_id="4242", state="COMPLETED", exit_code=0, failed_role=None,
             status="passed") -> Path:
    d = root / "job"
    (d / "logs").mkdir(parents=True)
    (d / "job.json").write_text(json.dumps({"config_name": "mocker-ctx1-gen1", "test_id": "t"}))
    if job_id:
        (d / "jobid.json").write_text(json.dumps({"job_id": job_id, "state": state, "exit_code": exit_code}))
    if status:
        _result(status).write(d / "results.json")
    (d / "report.json").write_text(json.dumps({"failed_role": failed_role, "error_signature": None}))
    (d / "logs" / "GEN_0.log").write_text("".join(f"gen line {i}\n" for i in range(100)))
    (d / "logs" / "GEN_0.server.log").write_text(f"serving\nHF_TOKEN={SECRET}\nready\n")
    (d / "logs" / "BENCHMARK.log").write_text("bench\n")
    (d / f"slurm-{job_id}.out").write_text("batch\n")
    return d


def test_status_of_a_job_dir(tmp_path, fake_slurm):
    d = _job_dir(tmp_path)
    [s] = jobdir.status(d)
    assert (s.name, s.job_id, s.state, s.exit_code, s.verdict) == ("job", "4242", "COMPLETED", 0, "passed")
    assert s.state_source == "recorded" and fake_slurm.queries == 0  # finished: SLURM not asked
    assert s.best_output_tps == 950.0 and s.best_output_tps_concurrency == 4
    assert (s.max_concurrency, s.ttft_p50_ms, s.itl_p50_ms) == (8, 42.0, 3.25)
    table = jobdir.format_status([s])
    assert "950.0" in table and "42.0" in table and "3.25" in table and "passed" in table
    assert "\x1b" not in table


def test_status_asks_slurm_for_unfinished_jobs_and_survives_its_absence(tmp_path, fake_slurm, monkeypatch):
    d = _job_dir(tmp_path, state="RUNNING", exit_code=None, status=None, failed_role="GEN_0")
    fake_slurm.states["4242"] = "FAILED"
    [s] = jobdir.status(d)
    assert (s.state, s.state_source, s.verdict, s.failed_role) == ("FAILED", "slurm", "failed", "GEN_0")
    [s] = jobdir.status(d, live=False)
    assert (s.state, s.state_source, s.verdict) == ("RUNNING", "recorded", None)

    import perfsanity.jobs.slurm as slurm_jobs

    calls = []

    def down(job_id):
        calls.append(job_id)
        raise slurm_jobs.SlurmCommandError(["scontrol"], "no answer within 30s")

    monkeypatch.setattr(slurm_jobs, "job_state", down)
    [s] = jobdir.status(d)
    assert (s.state, s.state_source) == ("RUNNING", "recorded") and calls == ["4242"]


def test_logs_of_a_job_dir(tmp_path):
    d = _job_dir(tmp_path)
    listing = jobdir.logs(d)
    assert "GEN_0" in listing and "logs/GEN_0.log" in listing and "logs/GEN_0.server.log" in listing
    assert "BENCHMARK" in listing and "slurm-4242.out" in listing
    text = jobdir.logs(d, "gen_0", lines=3)
    assert "==> logs/GEN_0.log <==" in text and "gen line 99" in text and "gen line 96" not in text
    assert "==> logs/GEN_0.server.log <==" in text
    assert SECRET not in text and "HF_TOKEN=***" in text
    assert jobdir.logs(d, "GEN_0.server.log").count("==>") == 1
    with pytest.raises(ConfigError, match="roles with logs: .*BENCHMARK"):
        jobdir.logs(d, "CTX_7")
    with pytest.raises(ConfigError, match="not a job directory"):
        jobdir.status(tmp_path / "nothing-here")


def test_cli_status_and_logs(tmp_path, capsys, fake_slurm):
    d = _job_dir(tmp_path)
    assert jobdir.main(["status", str(d)]) == 0
    assert "950.0" in capsys.readouterr().out
    assert jobdir.main(["status", str(d), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["best_output_tps"] == 950.0
    assert jobdir.main(["logs", str(d), "BENCHMARK", "-n", "5"]) == 0
    assert "bench" in capsys.readouterr().out
    assert jobdir.main(["logs", str(d), "NOPE"]) == 2
    assert jobdir.main(["status", str(tmp_path / "missing")]) == 2


def test_status_and_logs_of_a_sweep_dir(write_sweep, tmp_path, fake_slurm):
    path = write_sweep(f"base: {BASE}\nparameters:\n  worker_config.gen.max_num_seqs: [64, 128]\n"
                       "name: 'bs{max_num_seqs}'\n")
    out = tmp_path / "sw"
    fake_slurm.script = [["NODE_FAIL"], ["FAILED"], ["COMPLETED"]]
    assert sweep.main([str(path), "--out", str(out), "--submit", "--retries", "1"]) == 1
    _result().write(out / "bs64" / "results.json")
    (out / "bs128" / "report.json").write_text(json.dumps({"failed_role": "CTX_0"}))
    (out / "bs128" / "logs" / "CTX_0.log").write_text("boom\n")
    queries = fake_slurm.queries
    statuses = jobdir.status(out)
    assert fake_slurm.queries == queries  # every job finished: no SLURM call
    by = {s.name: s for s in statuses}
    assert [s.name for s in statuses] == ["bs64", "bs128"]
    assert (by["bs64"].state, by["bs64"].verdict, by["bs64"].attempts) == ("COMPLETED", "passed", 2)
    assert by["bs64"].parameters == {"worker_config.gen.max_num_seqs": 64}
    assert by["bs64"].best_output_tps == 950.0
    assert (by["bs128"].state, by["bs128"].verdict, by["bs128"].failed_role) == ("FAILED", "failed", "CTX_0")
    table = jobdir.format_status(statuses)
    assert "TRIES" in table and "2 job(s): 1 COMPLETED, 1 FAILED" in table
    text = jobdir.logs(out, "CTX_0")
    assert "=== bs64 (COMPLETED) ===" in text and "=== bs128 (FAILED) ===" in text and "boom" in text


def test_status_of_a_dry_run_sweep(write_sweep, tmp_path):
    out = tmp_path / "dry"
    assert sweep.run_sweep(write_sweep(f"base: {BASE}\nparameters:\n  hardware.num_gen_servers: [1, 2]\n"), out) == 0
    statuses = jobdir.status(out)
    assert [s.state for s in statuses] == ["pending", "pending"] and all(s.job_id is None for s in statuses)
    assert "no logs yet" in jobdir.logs(out)
