"""perfsanity.run.supervisor against a FakeSpawner whose steps are real, tiny ``sh -c`` processes with
scripted exit codes and delays: the verdict, fail-fast with grace, the global deadline, bounded
shutdown (a step that ignores TERM is killed), requeue move-aside, the allocation check, the install
step, and SIGTERM/SIGINT triage. Bounds are fractions of a second, so each test runs in milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from perfsanity.common.processes import ManagedProcess, ProcessSet
from perfsanity.plan.launch import RoleStep
from perfsanity.run.supervisor import RUN_OUTPUTS, RunContext, run

FOREVER = "sleep 30"
IGNORES_TERM = "trap '' TERM; sleep 30"
SHUTDOWN_S = 0.3
STEPS = (
    RoleStep("GEN_0", (0,), 1, 2, True, True),
    RoleStep("CTX_0", (1,), 1, 2, False, True),
    RoleStep("BENCHMARK", (0,), 1, 0, True, False),
)


class FakeSpawner:
    """Each step is ``sh -c SCRIPT`` (``exit 0`` unless scripted); records what it started and where."""

    echo = frozenset({"BENCHMARK"})

    def __init__(self, job_dir: Path, scripts: dict[str, str] | None = None, *, hosts: Sequence[str] = ("n0", "n1"),
                 signal_after_start: int | None = None) -> None:
        self.job_dir = job_dir
        self.scripts = scripts or {}
        self._hosts = tuple(hosts)
        self.signal_after_start = signal_after_start
        self.started: dict[str, ManagedProcess] = {}
        self.placed: dict[str, list[str]] = {}

    def hosts(self, needed: int) -> tuple[str, ...]:
        return self._hosts

    def start_install(self, procs: ProcessSet, hosts: Sequence[str]) -> ManagedProcess:
        return self._start(procs, "install", hosts)

    def start_role(self, procs: ProcessSet, step: RoleStep, hosts: Sequence[str]) -> ManagedProcess:
        proc = self._start(procs, step.role, hosts)
        if step.role == "BENCHMARK" and self.signal_after_start is not None:
            os.kill(os.getpid(), self.signal_after_start)  # the supervisor's handler only notes it
        return proc

    def _start(self, procs: ProcessSet, name: str, hosts: Sequence[str]) -> ManagedProcess:
        self.placed[name] = list(hosts)
        proc = procs.start(name, ["sh", "-c", self.scripts.get(name, "exit 0")], env={"PATH": os.environ["PATH"]},
                           log_path=self.job_dir / "logs" / f"{name}.log", cwd=self.job_dir)
        self.started[name] = proc
        return proc

    def alive(self) -> list[str]:
        return [n for n, p in self.started.items() if p.poll() is None]


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    return RunContext(job_dir=tmp_path, steps=STEPS, total_nodes=2, install_timeout=2.0, shutdown_timeout=SHUTDOWN_S,
                      job_timeout=10.0, test_id="t", poll_s=0.005)


def supervise(ctx: RunContext, spawner: FakeSpawner) -> tuple[int, float]:
    t0 = time.monotonic()
    rc = run(ctx, spawner)
    return rc, time.monotonic() - t0


def report(ctx: RunContext) -> dict:
    return json.loads((ctx.job_dir / "report.json").read_text())


# ------------------------------------------------------------------ verdict


@pytest.mark.parametrize("bench_rc", [0, 5])
def test_the_benchmark_exit_code_is_the_verdict(ctx, bench_rc, capsys) -> None:
    spawner = FakeSpawner(ctx.job_dir, {"BENCHMARK": f"echo bench says hi; sleep 0.05; exit {bench_rc}",
                                        "GEN_0": "sleep 0.1", "CTX_0": "sleep 0.1"})
    rc, took = supervise(ctx, spawner)
    assert rc == bench_rc
    out = capsys.readouterr().out
    assert f"BENCHMARK finished with exit code {bench_rc}" in out
    assert "bench says hi" in out  # the echoed step's log reached stdout
    assert "stopping" not in out  # the servers stopped by themselves within the shutdown bound
    assert not (ctx.job_dir / "report.json").exists()  # the benchmark reports its own failures
    assert spawner.placed["CTX_0"] == ["n1"] and spawner.placed["GEN_0"] == ["n0"]
    assert spawner.placed["install"] == ["n0", "n1"]
    assert f"done: exit code {bench_rc}" in out and took < 2


def test_each_start_is_logged_with_its_full_command(ctx, capsys) -> None:
    supervise(ctx, FakeSpawner(ctx.job_dir))
    out = capsys.readouterr().out
    assert "] run: sh -c 'exit 0'" in out  # install
    for role in ("GEN_0", "CTX_0", "BENCHMARK"):
        assert f"] run: DISAGG_SERVING_TYPE={role} sh -c 'exit 0'" in out


# ------------------------------------------------------------------ fail-fast with grace


def test_a_role_failing_first_gives_the_benchmark_grace_then_fails(ctx, capsys) -> None:
    spawner = FakeSpawner(ctx.job_dir, {"GEN_0": "exit 2", "CTX_0": FOREVER, "BENCHMARK": "sleep 0.1; exit 0"})
    rc, took = supervise(ctx, spawner)
    assert rc == 1  # the benchmark recorded the failure and exited 0: the job still failed
    out = capsys.readouterr().out
    assert f"GEN_0 failed with exit code 2; giving BENCHMARK up to {SHUTDOWN_S:g}s to record it" in out
    assert report(ctx)["reason"] == "GEN_0 failed with exit code 2"
    assert "=== perfsanity triage: GEN_0 failed with exit code 2" in out
    assert not spawner.alive()  # CTX_0 stopped at once, not after a shutdown wait
    assert took < SHUTDOWN_S + 1.5


def test_the_benchmark_exit_code_wins_when_it_records_the_failure(ctx) -> None:
    spawner = FakeSpawner(ctx.job_dir, {"CTX_0": "exit 9", "GEN_0": FOREVER, "BENCHMARK": "sleep 0.05; exit 7"})
    assert supervise(ctx, spawner)[0] == 7


def test_a_benchmark_that_never_records_is_stopped_after_the_grace(ctx, capsys) -> None:
    spawner = FakeSpawner(ctx.job_dir, {"CTX_0": "exit 9", "GEN_0": FOREVER, "BENCHMARK": FOREVER})
    rc, took = supervise(ctx, spawner)
    assert rc == 1 and not spawner.alive()
    assert SHUTDOWN_S <= took < SHUTDOWN_S + 1.5
    assert f"BENCHMARK still running after {SHUTDOWN_S:g}s" in capsys.readouterr().out


# ------------------------------------------------------------------ deadline and shutdown


def test_the_whole_job_is_bounded_by_slurm_timeout(ctx, capsys) -> None:
    spawner = FakeSpawner(ctx.job_dir, {"GEN_0": FOREVER, "CTX_0": FOREVER, "BENCHMARK": FOREVER})
    rc, took = supervise(replace(ctx, job_timeout=0.3), spawner)
    assert rc == 1 and not spawner.alive()
    assert 0.3 <= took < 0.3 + SHUTDOWN_S + 1.5
    out = capsys.readouterr().out
    assert "job exceeded slurm.timeout=0.3s" in out
    assert report(ctx)["reason"].startswith("job exceeded slurm.timeout=0.3s")


def test_the_deadline_bounds_the_install_step_too(ctx, capsys) -> None:
    spawner = FakeSpawner(ctx.job_dir, {"install": FOREVER})
    rc, took = supervise(replace(ctx, job_timeout=0.2), spawner)
    assert rc == 1 and took < 1.5 and list(spawner.started) == ["install"] and not spawner.alive()
    assert "install step failed: still running at the job's deadline (slurm.timeout=0.2s); see " in capsys.readouterr().out


def test_servers_get_the_shutdown_bound_then_are_killed(ctx, capsys) -> None:
    spawner = FakeSpawner(ctx.job_dir, {"GEN_0": IGNORES_TERM, "CTX_0": "sleep 0.05", "BENCHMARK": "exit 0"})
    rc, took = supervise(ctx, spawner)
    assert rc == 0  # the verdict is the benchmark's; a slow server does not change it
    assert not spawner.alive()  # TERM was ignored: KILL after the bound
    assert spawner.started["GEN_0"].poll() == -signal.SIGKILL
    assert spawner.started["CTX_0"].poll() == 0  # stopped by itself within the bound
    assert 2 * SHUTDOWN_S <= took < 2 * SHUTDOWN_S + 1.5  # wait, then TERM's bound, then KILL
    assert f"still running: GEN_0; stopping it (after {SHUTDOWN_S:g}s)" in capsys.readouterr().out


# ------------------------------------------------------------------ allocation and install


def test_too_small_an_allocation_fails_before_any_step(ctx, capsys) -> None:
    spawner = FakeSpawner(ctx.job_dir, hosts=("n0",))
    assert supervise(ctx, spawner)[0] == 2
    assert spawner.started == {}
    assert report(ctx)["reason"] == "allocation has 1 nodes, the topology needs 2"


def test_a_failed_install_starts_no_role(ctx, capsys) -> None:
    spawner = FakeSpawner(ctx.job_dir, {"install": "exit 4"})
    assert supervise(ctx, spawner)[0] == 1
    assert list(spawner.started) == ["install"]
    assert report(ctx)["reason"].startswith("install step failed with exit code 4 (see ")


def test_the_install_step_is_bounded(ctx, capsys) -> None:
    spawner = FakeSpawner(ctx.job_dir, {"install": IGNORES_TERM})
    rc, took = supervise(replace(ctx, install_timeout=0.2), spawner)
    assert rc == 1 and not spawner.alive() and list(spawner.started) == ["install"]
    assert took < 0.2 + SHUTDOWN_S + 1.5
    assert "install step failed: still running after 0.2s (timeouts.install); see " in capsys.readouterr().out


# ------------------------------------------------------------------ requeue


def test_a_requeued_run_moves_the_previous_outputs_aside(ctx, capsys) -> None:
    job = ctx.job_dir
    for name in RUN_OUTPUTS:
        if "." in name:
            (job / name).write_text(name)
        else:
            (job / name).mkdir()
            (job / name / "old").write_text(name)
    (job / "launch.sh").write_text("#!/bin/bash\n")
    assert {"engine", "discovery", "rendezvous", "logs"} <= set(RUN_OUTPUTS)
    spawner = FakeSpawner(job)
    assert supervise(replace(ctx, restart_count=2), spawner)[0] == 0
    prev = job / "requeued" / "2"
    for name in RUN_OUTPUTS:
        assert (prev / name).exists(), name
    assert (prev / "engine" / "old").read_text() == "engine"
    assert not (job / "rendezvous").exists() and not (job / "results.json").exists()
    assert (job / "launch.sh").is_file() and (job / "logs").is_dir()  # the rerun's own logs
    assert f"requeued (restart 2): previous run's outputs moved to {prev}" in capsys.readouterr().out


def test_a_first_run_moves_nothing(ctx) -> None:
    (ctx.job_dir / "results.json").write_text("{}")
    assert supervise(ctx, FakeSpawner(ctx.job_dir))[0] == 0
    assert (ctx.job_dir / "results.json").exists() and not (ctx.job_dir / "requeued").exists()


# ------------------------------------------------------------------ signals


@pytest.mark.parametrize(("sig", "rc", "why"), [
    (signal.SIGTERM, 143, "job received SIGTERM (scancel or time limit)"),
    (signal.SIGINT, 130, "job received SIGINT"),
])
def test_a_signal_triages_stops_every_step_and_exits(ctx, sig, rc, why, capsys) -> None:
    before = signal.getsignal(sig)
    spawner = FakeSpawner(ctx.job_dir, {"GEN_0": IGNORES_TERM, "CTX_0": FOREVER, "BENCHMARK": FOREVER},
                          signal_after_start=sig)
    got, took = supervise(ctx, spawner)
    assert got == rc
    assert not spawner.alive()
    assert took < SHUTDOWN_S + 1.5
    assert report(ctx)["reason"].startswith(why)
    assert f"=== perfsanity triage: {why}" in capsys.readouterr().out
    assert signal.getsignal(sig) is before  # the caller's handler is back


def test_the_local_executor_treats_term_as_an_interrupt(ctx, capsys) -> None:
    spawner = FakeSpawner(ctx.job_dir, {"BENCHMARK": FOREVER}, signal_after_start=signal.SIGTERM)
    local = replace(ctx, term_exit=130, print_triage=False, label="local")
    assert supervise(local, spawner)[0] == 130
    out = capsys.readouterr().out
    assert "[local " in out and "=== perfsanity triage" not in out  # the local executor prints it at the end
    assert report(ctx)["reason"].startswith("job received SIGTERM")


# ------------------------------------------------------------------ exit codes


def test_a_step_killed_by_a_signal_reports_128_plus_n(ctx, capsys) -> None:
    spawner = FakeSpawner(ctx.job_dir, {"BENCHMARK": "kill -KILL $$"})
    assert supervise(ctx, spawner)[0] == 128 + signal.SIGKILL
    assert f"BENCHMARK finished with exit code {128 + signal.SIGKILL}" in capsys.readouterr().out


def test_a_step_that_cannot_start_fails_the_job_and_stops_the_others(ctx, capsys) -> None:
    class NoSrun(FakeSpawner):
        def start_role(self, procs, step, hosts):
            if step.role == "BENCHMARK":
                raise FileNotFoundError(2, "No such file or directory", "srun")
            return super().start_role(procs, step, hosts)

    spawner = NoSrun(ctx.job_dir, {"GEN_0": FOREVER, "CTX_0": FOREVER})
    assert supervise(ctx, spawner)[0] == 1
    assert not spawner.alive()
    assert report(ctx)["reason"].startswith("cannot start the BENCHMARK step: [Errno 2] No such file")
