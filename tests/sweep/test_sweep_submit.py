"""--submit with a fake SLURM: caps, resume without duplicates, retries on infrastructure failures only,
progress output, the results pipeline once per point's final attempt (its verdict counts); --local with
a stub run_local."""

from __future__ import annotations

import io
import json
from pathlib import Path

from perfsanity.jobs import sweep

BASE = "test_configs/disagg/perf/mocker-ctx1-gen1.yaml"  # relative to the repo
FOUR = f"""
base: {BASE}
parameters:
  hardware.num_gen_servers: [1, 2]
  worker_config.gen.max_num_seqs: [64, 128]
"""
TWO = f"""
base: {BASE}
parameters:
  worker_config.gen.max_num_seqs: [64, 128]
name: "bs{{max_num_seqs}}"
"""


def _points(out: Path) -> dict[str, dict]:
    return {p["name"]: p for p in json.loads((out / sweep.MANIFEST_FILE).read_text())["points"]}


def test_max_jobs_and_resume_never_submit_twice(write_sweep, tmp_path, fake_slurm):
    path, out = write_sweep(FOUR), tmp_path / "out"
    args = [str(path), "--out", str(out), "--submit", "--max-jobs", "2"]
    assert sweep.main(args) == 0
    pts = _points(out)
    submitted = [p for p in pts.values() if p["job_id"]]
    assert len(fake_slurm.submitted) == 2 and len(submitted) == 2
    assert sorted(p["state"] for p in pts.values()) == ["SUBMITTED", "SUBMITTED", "pending", "pending"]
    for p in submitted:
        jobid = json.loads((out / p["name"] / "jobid.json").read_text())
        assert jobid["job_id"] == p["job_id"] and len(p["attempts"]) == 1

    fake_slurm.states.update({"100": "RUNNING", "101": "PENDING"})
    assert sweep.main(args) == 0  # both slots busy: nothing new, nothing twice
    assert len(fake_slurm.submitted) == 2
    assert sorted(p["state"] for p in _points(out).values()) == ["PENDING", "RUNNING", "pending", "pending"]

    assert fake_slurm.finalize.calls == []  # nothing ended yet
    fake_slurm.states.update({"100": "COMPLETED", "101": "FAILED"})
    assert sweep.main(args) == 0  # two slots free: the two pending points go; the FAILED one stays
    assert len(fake_slurm.submitted) == 4
    # the two jobs that ended meanwhile were collected on this (the submit) side, once each
    by_job = {p["job_id"]: p["name"] for p in _points(out).values()}
    assert sorted(fake_slurm.finalize.calls) == sorted([(by_job["100"], 0, ""), (by_job["101"], 1, "")])
    assert sweep.main(args) == 0
    assert len(fake_slurm.submitted) == 4
    assert len(fake_slurm.finalize.calls) == 2  # not again on a resume
    pts = _points(out)
    assert len({p["job_id"] for p in pts.values()}) == 4
    assert {d.name for _, d in fake_slurm.submitted} == set(pts)  # every point exactly once
    assert sorted(p["state"] for p in pts.values()) == ["COMPLETED", "FAILED", "PENDING", "PENDING"]


def test_retry_node_fail_once_but_never_a_test_failure(write_sweep, tmp_path, fake_slurm, capsys):
    path, out = write_sweep(TWO), tmp_path / "out"
    # job 100 (bs64): NODE_FAIL, its retry 102 completes; job 101 (bs128): a test failure
    fake_slurm.script = [["PENDING", "RUNNING", "NODE_FAIL"], ["RUNNING", "FAILED"], ["RUNNING", "COMPLETED"]]
    # the lost attempt left a batch log behind: it must be archived, not mixed into the retry
    orig_submit = fake_slurm.submit

    def submit(script, **kw):
        job_id = orig_submit(script, **kw)
        (Path(kw["workdir"]) / f"slurm-{job_id}.out").write_text(f"job {job_id}\n")
        return job_id

    import perfsanity.jobs.slurm as slurm_jobs

    slurm_jobs.submit = submit  # restored by the fixture's monkeypatch
    rc = sweep.main([str(path), "--out", str(out), "--submit", "--retries", "3"])
    assert rc == 1  # bs128 failed its test
    assert [j for j, _ in fake_slurm.submitted] == ["100", "101", "102"]
    pts = _points(out)
    a, b = pts["bs64"], pts["bs128"]
    assert a["state"] == "COMPLETED" and a["job_id"] == "102" and len(a["attempts"]) == 2
    assert a["attempts"][0]["state"] == "NODE_FAIL" and a["attempts"][0]["infrastructure_failure"] is True
    assert a["attempts"][0]["archived"] == "attempts/1"
    assert (out / "bs64" / "attempts" / "1" / "slurm-100.out").is_file()
    assert (out / "bs64" / "slurm-102.out").is_file() and not (out / "bs64" / "slurm-100.out").exists()
    assert (out / "bs64" / "launch.sh").is_file()
    assert b["state"] == "FAILED" and len(b["attempts"]) == 1 and b["attempts"][0]["infrastructure_failure"] is False
    assert json.loads((out / "bs64" / "jobid.json").read_text())["state"] == "COMPLETED"
    # the results pipeline ran for each point's final attempt only: not for the attempt lost to NODE_FAIL
    assert sorted(fake_slurm.finalize.calls) == [("bs128", 1, ""), ("bs64", 0, "")]
    text = capsys.readouterr().out
    assert "\r" not in text and "\x1b" not in text
    assert "bs64: infrastructure failure NODE_FAIL; retry 1/3" in text
    assert "bs64: job 100 RUNNING" in text and text.count("bs64: job 100 RUNNING") == 1  # once per change

    # re-running the same command: everything finished, nothing is submitted again
    assert sweep.main([str(path), "--out", str(out), "--submit", "--retries", "3"]) == 1
    assert len(fake_slurm.submitted) == 3
    assert len(fake_slurm.finalize.calls) == 2


def test_retries_are_bounded(write_sweep, tmp_path, fake_slurm):
    path, out = write_sweep(TWO), tmp_path / "out"
    fake_slurm.script = [["BOOT_FAIL"], ["COMPLETED"], ["NODE_FAIL"]]
    assert sweep.main([str(path), "--out", str(out), "--submit", "--retries", "1"]) == 1
    assert len(fake_slurm.submitted) == 3  # bs64: first try + one retry; bs128 once
    pts = _points(out)
    assert [a["state"] for a in pts["bs64"]["attempts"]] == ["BOOT_FAIL", "NODE_FAIL"]
    assert pts["bs128"]["state"] == "COMPLETED"
    # out of retries, the lost point's last attempt is final: collected, naming why it ended
    assert sorted(fake_slurm.finalize.calls) == [
        ("bs128", 0, ""), ("bs64", 1, "SLURM job 102 ended NODE_FAIL (exit code 0)")]
    # a later run resumes the point lost to the cluster (not a verdict), never the completed one
    fake_slurm.script = [["COMPLETED"]]
    assert sweep.main([str(path), "--out", str(out), "--submit", "--wait"]) == 0
    assert len(fake_slurm.submitted) == 4 and _points(out)["bs64"]["job_id"] == "103"


def test_wait_is_bounded_by_slurm_timeout(write_sweep, tmp_path, fake_slurm, monkeypatch):
    path, out = write_sweep(TWO), tmp_path / "out"
    clock = [1_000_000.0]

    def sleep(s):
        clock[0] += 400

    monkeypatch.setattr(sweep, "_now", lambda: clock[0])
    monkeypatch.setattr(sweep, "_sleep", sleep)
    fake_slurm.states.update({"100": "RUNNING", "101": "COMPLETED"})
    assert sweep.main([str(path), "--out", str(out), "--submit", "--wait"]) == 1
    pts = _points(out)
    assert pts["bs64"]["state"] == "RUNNING" and "stopped waiting after 1200s" in pts["bs64"]["note"]
    assert clock[0] - 1_000_000.0 <= 900 + 300 + 400 * 2


def test_sbatch_refusal_is_recorded_and_retried_next_run(write_sweep, tmp_path, fake_slurm, monkeypatch):
    import perfsanity.jobs.slurm as slurm_jobs

    def refuse(script, **kw):
        raise slurm_jobs.SbatchError(["sbatch"], "exit code 1", returncode=1, stderr="invalid partition")

    monkeypatch.setattr(slurm_jobs, "submit", refuse)
    path, out = write_sweep(TWO), tmp_path / "out"
    assert sweep.main([str(path), "--out", str(out), "--submit"]) == 1
    pts = _points(out)
    assert {p["state"] for p in pts.values()} == {"submit-failed"}
    assert "invalid partition" in pts["bs64"]["error"]
    monkeypatch.setattr(slurm_jobs, "submit", fake_slurm.submit)
    assert sweep.main([str(path), "--out", str(out), "--submit"]) == 0
    assert len(fake_slurm.submitted) == 2


def test_deleting_a_point_dir_reruns_it(write_sweep, tmp_path, fake_slurm):
    import shutil

    path, out = write_sweep(TWO), tmp_path / "out"
    fake_slurm.script = [["FAILED"], ["COMPLETED"]]
    assert sweep.main([str(path), "--out", str(out), "--submit", "--wait"]) == 1
    shutil.rmtree(out / "bs64")
    fake_slurm.script = [["COMPLETED"]]
    assert sweep.main([str(path), "--out", str(out), "--submit", "--wait"]) == 0
    assert [j for j, _ in fake_slurm.submitted] == ["100", "101", "102"]
    assert (out / "bs64" / "launch.sh").is_file()


def test_progress_tty_uses_one_updating_line():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    prog = sweep.Progress(tty)
    prog.summary("2 points: 2 PENDING")
    prog.event("a: job 1 RUNNING")
    prog.event("b: job 2 RUNNING")
    assert "\n" not in tty.getvalue() and tty.getvalue().count("\r") == 3
    assert "\x1b" not in tty.getvalue()
    prog.close()
    assert tty.getvalue().endswith("\n")

    plain = io.StringIO()
    prog = sweep.Progress(plain)
    prog.summary("ignored")
    prog.event("a: job 1 RUNNING")
    prog.close()
    lines = plain.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("a: job 1 RUNNING") and "\r" not in plain.getvalue()


def test_local_runs_points_in_turn_and_resumes(write_sweep, tmp_path, monkeypatch, fake_finalize):
    import perfsanity.jobs.local

    ran = []

    def run_local(job):
        ran.append(job.job_dir.name)
        return 0 if job.job_dir.name == "bs64" or len(ran) > 2 else 4

    monkeypatch.setattr(perfsanity.jobs.local, "run_local", run_local)
    path, out = write_sweep(TWO), tmp_path / "out"
    assert sweep.main([str(path), "--out", str(out), "--local"]) == 1
    assert ran == ["bs64", "bs128"]
    assert fake_finalize.calls == [("bs64", 0, ""), ("bs128", 4, "")]  # each point as it ends
    pts = _points(out)
    assert (pts["bs64"]["state"], pts["bs128"]["state"], pts["bs128"]["exit_code"]) == ("COMPLETED", "FAILED", 4)
    assert sweep.main([str(path), "--out", str(out), "--local"]) == 0  # only the failed point again
    assert ran == ["bs64", "bs128", "bs128"]
    assert len(_points(out)["bs128"]["attempts"]) == 2


def test_local_point_failed_by_its_gate_is_failed(write_sweep, tmp_path, monkeypatch, fake_finalize):
    import perfsanity.jobs.local

    monkeypatch.setattr(perfsanity.jobs.local, "run_local", lambda job: 0)
    fake_finalize.verdicts["bs128"] = 1  # a valid measurement, but a pre-merge regression
    path, out = write_sweep(TWO), tmp_path / "out"
    assert sweep.main([str(path), "--out", str(out), "--local"]) == 1
    pts = _points(out)
    assert (pts["bs64"]["state"], pts["bs128"]["state"], pts["bs128"]["final_exit_code"]) == ("COMPLETED", "FAILED", 1)


def test_local_point_already_finalized_by_the_executor_is_not_finalized_again(write_sweep, tmp_path, monkeypatch,
                                                                               fake_finalize):
    import perfsanity.jobs.local
    from perfsanity.results.pipeline import FINAL_FILE

    def run_local(job):  # an executor that runs the results pipeline itself (jobs.local does)
        (job.job_dir / FINAL_FILE).write_text(json.dumps({"exit_code": 1, "job_exit_code": 0}))
        return 1

    monkeypatch.setattr(perfsanity.jobs.local, "run_local", run_local)
    path, out = write_sweep(TWO), tmp_path / "out"
    assert sweep.main([str(path), "--out", str(out), "--local"]) == 1
    assert fake_finalize.calls == []
    assert {p["final_exit_code"] for p in _points(out).values()} == {1}


def test_slurm_point_failed_by_its_gate_fails_the_sweep(write_sweep, tmp_path, fake_slurm):
    path, out = write_sweep(TWO), tmp_path / "out"
    fake_slurm.script = [["RUNNING", "COMPLETED"], ["COMPLETED"]]
    fake_slurm.finalize.verdicts["bs64"] = 1
    assert sweep.main([str(path), "--out", str(out), "--submit", "--wait"]) == 1
    pts = _points(out)
    assert (pts["bs64"]["state"], pts["bs64"]["final_exit_code"]) == ("COMPLETED", 1)
    assert (pts["bs128"]["state"], pts["bs128"]["final_exit_code"]) == ("COMPLETED", 0)


def test_wait_polls_soon_then_backs_off_and_soon_again_after_a_change(write_sweep, tmp_path, fake_slurm, monkeypatch):
    """One job RUNNING for 7 polls, then COMPLETED; the other COMPLETED after 2 (one poll per waiting job)."""
    path, out = write_sweep(TWO), tmp_path / "out"
    sleeps: list[float] = []
    monkeypatch.setattr(sweep, "_sleep", sleeps.append)
    fake_slurm.script = [["PENDING"] + ["RUNNING"] * 7 + ["COMPLETED"], ["RUNNING", "COMPLETED"]]
    assert sweep.main([str(path), "--out", str(out), "--submit", "--wait"]) == 0
    # the refresh before waiting takes none of the scripted states: both jobs are new
    assert sleeps[0] == sweep.POLL_FIRST_S == 1.0
    assert max(sleeps) == sweep.POLL_S
    # polls 1-2: both jobs change state (1 s each time); then A alone stays RUNNING: doubling up to 10 s
    assert sleeps == [1.0, 1.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0], sleeps
