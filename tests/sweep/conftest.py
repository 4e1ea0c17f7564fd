"""Fixtures for sweep / job-dir tests: sweep files in tmp_path, a fake SLURM (no cluster needed) and a
recording stand-in for the results pipeline (the fake jobs write no results to gate)."""

from __future__ import annotations

from pathlib import Path

import pytest

import perfsanity.jobs.slurm as slurm_jobs
from perfsanity.jobs.slurm import JobInfo

BASE = "test_configs/disagg/perf/mocker-ctx1-gen1.yaml"  # relative to the repo


@pytest.fixture
def write_sweep(tmp_path):
    def write(text: str, name: str = "sweep.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


class FakeSlurm:
    """Stands in for sbatch/scontrol: job ids from 100 up; states set per job id (or per submission
    order with ``script``: a list of state sequences, one per submitted job, last state sticks)."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, Path]] = []  # (job id, job dir)
        self.states: dict[str, str] = {}
        self.script: list[list[str]] = []
        self._seq: dict[str, list[str]] = {}
        self.queries = 0

    def submit(self, script, *, workdir=None, extra_args=(), env=None):
        job_id = str(100 + len(self.submitted))
        self.submitted.append((job_id, Path(workdir)))
        if self.script:
            self._seq[job_id] = list(self.script.pop(0))
        return job_id

    def job_state(self, job_id):
        self.queries += 1
        seq = self._seq.get(job_id)
        if seq:
            state = seq.pop(0) if len(seq) > 1 else seq[0]
        else:
            state = self.states.get(job_id, "PENDING")
        if state == "MISSING":
            raise slurm_jobs.JobNotFound(job_id)
        exit_code = {"COMPLETED": 0, "FAILED": 1}.get(state, 0 if state in slurm_jobs.TERMINAL_STATES else None)
        return JobInfo(job_id=job_id, state=state, exit_code=exit_code)

    def wait_for_job(self, job_id, **kw):  # the sweep polls job_state itself
        raise AssertionError("wait_for_job should not be needed")

    def dir_of(self, job_id: str) -> Path:
        return dict(self.submitted)[job_id]


@pytest.fixture
def fake_slurm(monkeypatch, fake_finalize):
    from perfsanity.jobs import sweep

    fake = FakeSlurm()
    fake.finalize = fake_finalize
    monkeypatch.setattr(slurm_jobs, "submit", fake.submit)
    monkeypatch.setattr(slurm_jobs, "job_state", fake.job_state)
    monkeypatch.setattr(slurm_jobs, "wait_for_job", fake.wait_for_job)
    monkeypatch.setattr(sweep, "_sleep", lambda s: None)
    return fake


class FakeFinalize:
    """Records ``pipeline.finalize`` calls; returns the job's code, or ``verdicts[job dir name]``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []  # (job dir name, job_exit_code, reason)
        self.verdicts: dict[str, int] = {}

    def __call__(self, job_dir, *, job_exit_code, reason="", environ=None):
        self.calls.append((Path(job_dir).name, job_exit_code, reason))
        return self.verdicts.get(Path(job_dir).name, job_exit_code)


@pytest.fixture
def fake_finalize(monkeypatch):
    from perfsanity.results import pipeline

    fake = FakeFinalize()
    monkeypatch.setattr(pipeline, "finalize", fake)
    return fake
