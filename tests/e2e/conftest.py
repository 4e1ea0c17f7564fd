"""Shared set-up of the local end-to-end tests: run ``submit.py --local`` as a real subprocess with
its job dir in ``tmp_path``, find the job's processes in ``/proc``, and check that none outlives
the test.

Every process of a test's job carries a unique marker in its environment (children inherit it), so
leftovers are found even after their parents died and they were re-parented. tests/e2e is not a
package: test modules reach the helpers through the ``e2e`` fixture (this module).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUBMIT = REPO / "submit.py"
MOCKER = REPO / "test_configs/disagg/perf/mocker-ctx1-gen1.yaml"
CONFIGS = Path(__file__).resolve().parent / "configs"
MARKER_VAR = "PERFSANITY_E2E_MARKER"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# a small, quick run: 2 requests per concurrency step, one client run each
FAST = ("benchmark.multi_round=2", "benchmark.repeats=1")
# environment a developer or CI may have set that would change what the job does
_DROP = ("PERFSANITY_CLUSTER", "PERFSANITY_OUT", "PERFSANITY_RUN_CI", "PERFSANITY_PRE_MERGE", "PERFSANITY_HOST",
         "PERFSANITY_JOB_DIR", "PERFSANITY_CONFIG", "PERFSANITY_TEST_ID", "DISAGG_SERVING_TYPE")


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


# ------------------------------------------------------------------------------------------ /proc


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def proc_state(pid: int) -> str | None:
    """The /proc state letter (R, S, D, Z, …), None when the process is gone."""
    raw = _read(f"/proc/{pid}/stat").decode(errors="replace")
    try:
        return raw.rsplit(")", 1)[1].split()[0]
    except IndexError:
        return None


def alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z", "X")


def cmdline(pid: int) -> list[str]:
    return [a.decode(errors="replace") for a in _read(f"/proc/{pid}/cmdline").split(b"\0") if a]


def processes_of(marker: str, job_dir: Path) -> list[int]:
    """Live processes with ``marker`` in their environment, or the job dir in argv or cwd (never us)."""
    env_needle = f"{MARKER_VAR}={marker}".encode()
    dir_needle = str(job_dir).encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd").encode()
        except OSError:
            cwd = b""
        if (env_needle in _read(f"/proc/{pid}/environ") or dir_needle in _read(f"/proc/{pid}/cmdline")
                or cwd.startswith(dir_needle)) and alive(pid):
            out.append(pid)
    return sorted(out)


def describe(pids: list[int]) -> str:
    return "\n".join(f"  pid {p} [{proc_state(p)}]: {' '.join(cmdline(p))[:300]}" for p in pids)


# ------------------------------------------------------------------------------------------ jobs


@dataclass
class Finished:
    returncode: int
    stdout: str  # ANSI codes stripped
    elapsed_s: float
    out: Path

    def json(self, name: str) -> dict:
        return json.loads((self.out / name).read_text())


@dataclass
class LocalJob:
    """One ``python3 submit.py --config … --out OUT --local`` subprocess (its own session)."""

    out: Path
    argv: list[str]
    marker: str
    stdout_path: Path
    proc: subprocess.Popen = field(repr=False)
    started: float = field(default_factory=time.monotonic)

    def wait(self, timeout_s: float) -> Finished:
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{' '.join(self.argv)} still running after {timeout_s}s; output:\n{self.output()[-4000:]}")
        return Finished(self.proc.returncode, self.output(), time.monotonic() - self.started, self.out)

    def wait_for_files(self, *paths: Path, timeout_s: float, what: str) -> None:
        """Until every one of ``paths`` exists; fails when the job ends first or after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(p.exists() for p in paths):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"job ended (exit {self.proc.returncode}) before {what}:\n{self.output()[-3000:]}")
            time.sleep(0.3)
        pytest.fail(f"waited {timeout_s}s for {', '.join(p.name for p in paths)} ({what}):\n{self.output()[-3000:]}")

    def output(self) -> str:
        return strip_ansi(self.stdout_path.read_text(errors="replace"))

    def kill(self) -> None:
        """SIGTERM the submit process group, then SIGKILL it (only the group this test started)."""
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                return
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue


class Jobs:
    """Starts local jobs for one test and, at teardown, checks that none of their processes survived."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.marker = uuid.uuid4().hex
        self.started: list[LocalJob] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DROP and not k.startswith("SLURM_")}
        env["PERFSANITY_HISTORY"] = str(self.tmp_path / "history.sqlite")  # never the user's history
        env[MARKER_VAR] = self.marker
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, *sets: str, config: Path = MOCKER, name: str = "job") -> LocalJob:
        out = self.tmp_path / name
        argv = [sys.executable, str(SUBMIT), "--config", str(config), "--out", str(out), "--local"]
        for s in (*FAST, *sets):
            argv += ["--set", s]
        stdout_path = self.tmp_path / f"{name}.stdout"
        with stdout_path.open("wb") as fh:
            proc = subprocess.Popen(argv, cwd=REPO, env=self.env(), stdin=subprocess.DEVNULL, stdout=fh,  # noqa: S603
                                    stderr=subprocess.STDOUT, start_new_session=True)
        job = LocalJob(out, argv, self.marker, stdout_path, proc)
        self.started.append(job)
        return job

    def run(self, *sets: str, timeout_s: float, config: Path = MOCKER, name: str = "job") -> Finished:
        return self.start(*sets, config=config, name=name).wait(timeout_s)

    def leftovers(self) -> list[int]:
        return sorted({p for job in self.started for p in processes_of(self.marker, job.out)})

    def check_no_leftovers(self, grace_s: float = 10.0) -> None:
        for job in self.started:
            if job.proc.poll() is None:
                job.kill()
        deadline = time.monotonic() + grace_s
        left = self.leftovers()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.leftovers()
        if left:
            text = describe(left)
            for pid in left:  # ours (they carry this test's marker): don't leak them into other tests
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            pytest.fail(f"{len(left)} process(es) of the job outlived it by {grace_s}s:\n{text}", pytrace=False)


@pytest.fixture
def jobs(tmp_path: Path):
    """Start local jobs (``jobs.run(--set values…, timeout_s=…)``); after the test, assert that no
    process the job started is still alive (zombies don't count)."""
    j = Jobs(tmp_path)
    yield j
    j.check_no_leftovers()


# Captured at import: every conftest.py is imported as "conftest", so a later sys.modules lookup may
# find another directory's conftest when several test folders run together.
_THIS_MODULE = sys.modules[__name__]


@pytest.fixture(scope="session")
def e2e():
    """This module: helpers and constants (``e2e.MOCKER``, ``e2e.strip_ansi``, ``e2e.processes_of``…)."""
    return _THIS_MODULE

