"""The job supervisor: one set of rules for running a job's steps, whatever starts them.

:func:`run` runs these stages over a frozen :class:`RunContext`, with a
:class:`~perfsanity.run.spawners.Spawner` deciding how a step is started (``srun`` steps in a SLURM
allocation, or local processes):

1. **requeue move-aside**: on a rerun (``SLURM_RESTART_COUNT`` > 0) the previous run's outputs move to
   ``requeued/<n>/``, so the roles never see stale rendezvous or discovery files;
2. **allocation check**: at least as many nodes as the topology needs (else exit 2);
3. **preflight** (when the context has a plan, :mod:`perfsanity.run.preflight`): one short step per
   role's node slice, bounded by ``preflight.timeout_s``; a failed check writes
   ``rendezvous/PREFLIGHT.failed`` naming the node and the check, and ends the job (exit 1);
4. **install step**: one task per node, bounded by ``timeouts.install`` (failure: exit 1);
5. **one step per role**, in plan order; each start is logged with its full command;
6. **verdict**: the BENCHMARK's exit code. A role failing first gives BENCHMARK
   ``timeouts.shutdown`` seconds to record it, and the verdict is then non-zero. The whole job is
   bounded by ``slurm.timeout`` (exit 1 when it runs out);
7. **bounded shutdown**: after the benchmark finished, the servers get ``timeouts.shutdown`` seconds
   to stop on its status file; on every other path the remaining steps are stopped at once. Either
   way what is left is stopped through the ProcessSet (TERM to the group, KILL after the bound).

SIGTERM (scancel, time limit) and SIGINT at any stage: triage writes ``report.json`` with the
reason and prints it, the steps are stopped, and the exit code is ``term_exit`` (143) / 130.
Failures the supervisor itself detects (allocation, install, a role failing first, the deadline)
are triaged the same way. Nothing here knows whether a step is an ``srun`` or a local process.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from perfsanity.common.processes import ManagedProcess, ProcessSet
from perfsanity.common.waits import Deadline
from perfsanity.plan.launch import RoleStep, role_plan
from perfsanity.run.preflight import PreflightFailed, PreflightPlan, run_preflight
from perfsanity.run.preflight import summary as preflight_summary
from perfsanity.run.rendezvous import Rendezvous
from perfsanity.run.spawners import Spawner
from perfsanity.run.triage import format_report, triage
from perfsanity.spec.config import Config
from perfsanity.spec.topology import Topology

BENCHMARK = "BENCHMARK"
STOPPED_BY_USER = "stopped by user"  # how a manual job's end is recorded (report.json, benchmark.status)
# a previous run's outputs: moved aside on a requeue (the job dir itself, launch.sh and config stay)
RUN_OUTPUTS = ("rendezvous", "preflight", "discovery", "engine", "logs", "client", "profiles", "results.json", "junit.xml",
               "report.json", "report.html", "gate.json", "gate_junit.xml", "history_records.json",
               "finalized.json", "finalize.log")


@dataclass(frozen=True)
class RunContext:
    """Everything the supervisor needs to know about one run of one job."""

    job_dir: Path
    steps: tuple[RoleStep, ...]
    total_nodes: int
    install_timeout: float  # timeouts.install
    shutdown_timeout: float  # timeouts.shutdown
    job_timeout: float  # slurm.timeout: the whole run
    test_id: str = ""
    total_gpus: int = 0
    job_id: str = "local"
    restart_count: int = 0  # SLURM_RESTART_COUNT
    label: str = "launch"  # log prefix: [launch 12:00:00] ...
    term_exit: int = 143  # exit code after SIGTERM (the local executor treats TERM as an interrupt: 130)
    print_triage: bool = True  # print the triage report (the local executor prints its own at the end)
    poll_s: float = 0.05  # the supervisor's poll: each stage change is seen within it
    preflight: PreflightPlan | None = None  # None: no preflight stage
    manual: bool = False  # benchmark.type manual: a signal or the time limit is the job's normal end

    @classmethod
    def from_config(cls, config: Config, topology: Topology, job_dir: Path, **kw: object) -> RunContext:
        return cls(job_dir=Path(job_dir), steps=role_plan(config, topology), total_nodes=topology.total_nodes,
                   install_timeout=config.timeouts.install, shutdown_timeout=config.timeouts.shutdown,
                   job_timeout=config.slurm.timeout, total_gpus=topology.total_gpus,
                   manual=config.benchmark.type == "manual", **kw)  # type: ignore[arg-type]


class StageFailed(Exception):
    """A stage ended the run: exit code and the reason the triage records."""

    def __init__(self, exit_code: int, reason: str) -> None:
        super().__init__(reason)
        self.exit_code = exit_code
        self.reason = reason


class ManualStop(Exception):
    """A manual job reached its end (the time limit): the reason report.json records."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Supervisor:
    """One run: the stages below, in :meth:`run` order."""

    def __init__(self, ctx: RunContext, spawner: Spawner) -> None:
        self.ctx = ctx
        self.spawner = spawner
        self.procs = ProcessSet()
        self.started: dict[str, ManagedProcess] = {}
        self._echo_pos: dict[str, int] = {}
        self._signal: int | None = None
        self.deadline = Deadline(ctx.job_timeout, "the whole job (slurm.timeout)")

    # ------------------------------------------------------------------ the run

    def run(self) -> int:
        """Run the job; return its exit code (0 = the benchmark passed)."""
        with self._signals(), self.procs:
            try:
                self.move_requeued_outputs()
                hosts = self.check_allocation()
                # the install step runs beside the preflight (both are per-node, neither needs the
                # other): a job whose tools are ready pays the longer of the two, not their sum
                install = self.start_install(hosts)
                self.preflight(hosts)
                self.await_install(install)
                self.start_roles(hosts)
                verdict, servers_may_stop = self.await_verdict()
                self.shutdown(wait_first=servers_may_stop)
            except ManualStop as stop:
                verdict = self._stop_manual(stop.reason)
            except StageFailed as failed:
                self.log(failed.reason)
                self._triage(failed.reason)
                self.shutdown(wait_first=False)
                verdict = failed.exit_code
            except Interrupted as sig:
                verdict = self._on_signal(sig.signum)
            self._pump()
        self.log(f"done: exit code {verdict}")
        return verdict

    def run_preflight_only(self) -> int:
        """Only the allocation check and the preflight (what upstream's draft runs as
        ``run_cache_transceiver_precheck``): 0 when it passed, else the stage's exit code."""
        with self._signals(), self.procs:
            try:
                self.preflight(self.check_allocation())
            except StageFailed as failed:
                self.log(failed.reason)
                self._triage(failed.reason)
                return failed.exit_code
            except Interrupted as sig:
                return self._on_signal(sig.signum)
        return 0

    # ------------------------------------------------------------------ stages

    def move_requeued_outputs(self) -> Path | None:
        """A rerun of a requeued job: move the previous run's outputs to ``requeued/<n>/``."""
        ctx = self.ctx
        if ctx.restart_count <= 0:
            (ctx.job_dir / "logs").mkdir(parents=True, exist_ok=True)
            return None
        prev = ctx.job_dir / "requeued" / str(ctx.restart_count)
        prev.mkdir(parents=True, exist_ok=True)
        for name in RUN_OUTPUTS:
            if (ctx.job_dir / name).exists():
                shutil.move(str(ctx.job_dir / name), str(prev / name))
        (ctx.job_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.log(f"requeued (restart {ctx.restart_count}): previous run's outputs moved to {prev}")
        return prev

    def check_allocation(self) -> tuple[str, ...]:
        """The allocation's nodes; at least ``total_nodes`` of them, or exit 2."""
        ctx = self.ctx
        try:
            hosts = tuple(self.spawner.hosts(ctx.total_nodes))
        except ValueError as exc:
            raise StageFailed(2, f"cannot read the allocation's nodes: {exc}") from None
        if len(hosts) < ctx.total_nodes:
            raise StageFailed(2, f"allocation has {len(hosts)} nodes, the topology needs {ctx.total_nodes}")
        used = hosts[: ctx.total_nodes]
        self.log(f"job {ctx.job_id}: {ctx.total_nodes} node(s) [{' '.join(used)}], {ctx.total_gpus} GPU(s), "
                 f"test {ctx.test_id}")
        return used

    def preflight(self, hosts: tuple[str, ...]) -> None:
        """The preflight checks (:mod:`perfsanity.run.preflight`); a failure ends the run (exit 1)."""
        plan = self.ctx.preflight
        if plan is None:
            return
        if self.deadline.remaining < plan.timeout_s:
            plan = PreflightPlan(self.deadline.remaining, plan.steps, plan.container, plan.gpu_skip)
        self.log(f"preflight: {len(plan.steps)} step(s), {plan.tasks} task(s), bounded by "
                 f"preflight.timeout_s={plan.timeout_s:g}s")

        def start(name: str, step_hosts: Sequence[str], argv: Sequence[str]) -> ManagedProcess:
            try:
                proc = self.spawner.start_preflight(self.procs, name, step_hosts, argv)
            except OSError as exc:
                raise StageFailed(1, f"cannot start the {name} step: {exc}") from None
            self.log(f"run: {shlex.join(proc.argv)}")
            return proc

        try:
            reports = run_preflight(plan, hosts, self.ctx.job_dir, start=start, tick=self._tick)
        except PreflightFailed as failed:
            Rendezvous(self.ctx.job_dir / "rendezvous").report_failure("PREFLIGHT", failed.message, failed.details)
            raise StageFailed(1, failed.message) from None
        self.log(preflight_summary(reports))

    def start_install(self, hosts: tuple[str, ...]) -> tuple[ManagedProcess, Deadline]:
        """Start the install step, once per node; (its process, its bound: ``timeouts.install`` or what
        is left of the job's deadline, from now)."""
        self.log(f"install step (bounded by timeouts.install={self.ctx.install_timeout:g}s)")
        bound = Deadline(min(self.ctx.install_timeout, self.deadline.remaining), "install step")
        return self._start("install", lambda: self.spawner.start_install(self.procs, hosts)), bound

    def await_install(self, install: tuple[ManagedProcess, Deadline]) -> None:
        """Wait for the install step within its bound."""
        proc, bound = install
        by_deadline = bound.seconds < self.ctx.install_timeout  # what was left of the job's time bound it
        while proc.poll() is None and not bound.expired:
            self._tick()
        log = self.ctx.job_dir / "logs" / "install.log"
        if proc.poll() is None:
            proc.stop(self.ctx.shutdown_timeout / 2)
            when = (f"at the job's deadline (slurm.timeout={self.ctx.job_timeout:g}s)" if by_deadline
                    else f"after {self.ctx.install_timeout:g}s (timeouts.install)")
            raise StageFailed(1, f"install step failed: still running {when}; see {log}")
        if proc.poll() != 0:
            raise StageFailed(1, f"install step failed with exit code {proc.poll()} (see {log})")

    def start_roles(self, hosts: tuple[str, ...]) -> None:
        """One step per role, in plan order, each on the hosts of its node indices."""
        for step in self.ctx.steps:
            step_hosts = [hosts[n] for n in step.nodes]
            self.log(f"{step.role}: {step.gpus} GPU(s), {step.tasks} task(s) on {' '.join(step_hosts)}")
            self._start(step.role, lambda s=step, h=step_hosts: self.spawner.start_role(self.procs, s, h))

    def await_verdict(self) -> tuple[int, bool]:
        """(verdict, whether the servers can be left to stop by themselves)."""
        ctx = self.ctx
        bench = self.started[BENCHMARK]
        ended_ok: set[str] = set()
        while True:
            # a role failing is looked at first: seen in the same poll as the benchmark's exit, it came first
            failed = next(((role, p.poll()) for role, p in self.started.items()
                           if role not in (BENCHMARK, "install") and p.poll() not in (None, 0)), None)
            if failed is not None:
                role, rc = failed[0], exit_code(failed[1])
                self.log(f"{role} failed with exit code {rc}; giving BENCHMARK up to {ctx.shutdown_timeout:g}s "
                         "to record it")
                grace = Deadline(ctx.shutdown_timeout, "BENCHMARK to record the failure")
                while bench.poll() is None and not grace.expired:
                    self._tick()
                if bench.poll() is None:
                    self.log(f"BENCHMARK still running after {ctx.shutdown_timeout:g}s")
                self._triage(f"{role} failed with exit code {rc}")
                return (exit_code(bench.poll()) or 1), False
            if bench.poll() is not None:
                self._pump()
                self.log(f"BENCHMARK finished with exit code {exit_code(bench.poll())}")
                return exit_code(bench.poll()), True
            for role, p in self.started.items():
                if p.poll() == 0 and role not in ("install", *ended_ok):
                    ended_ok.add(role)
                    self.log(f"{role} exited 0")
            if self.deadline.expired:
                if ctx.manual:
                    raise ManualStop(f"{STOPPED_BY_USER}: the time limit slurm.timeout={ctx.job_timeout:g}s was reached")
                raise StageFailed(1, f"job exceeded slurm.timeout={ctx.job_timeout:g}s; stopping every step")
            self._tick()

    def shutdown(self, *, wait_first: bool) -> None:
        """Stop what is still running: after ``timeouts.shutdown`` seconds of waiting (``wait_first``)
        or at once; each step gets TERM, then KILL once the shutdown bound is used up."""
        bound = self.ctx.shutdown_timeout
        if wait_first:
            grace = Deadline(bound, "servers to stop after the benchmark")
            while self._running() and not grace.expired and self._signal is None:
                self._tick(check_signal=False)
        left = self._running()
        if not left:
            return
        self.log(f"still running: {', '.join(left)}; stopping {'them' if len(left) > 1 else 'it'}"
                 + (f" (after {bound:g}s)" if wait_first else ""))
        stop = Deadline(bound, "steps to stop after TERM")
        for name in reversed(left):
            self.started[name].stop(stop.remaining)

    # ------------------------------------------------------------------ helpers

    def log(self, message: str) -> None:
        print(f"[{self.ctx.label} {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def _start(self, name: str, start: Callable[[], ManagedProcess]) -> ManagedProcess:
        try:
            proc = start()
        except OSError as exc:  # e.g. no srun on PATH
            raise StageFailed(1, f"cannot start the {name} step: {exc}") from None
        self.started[name] = proc
        self._echo_pos[name] = _size(proc.log_path)  # its "[perfsanity] start" header repeats the line below
        role = f"DISAGG_SERVING_TYPE={name} " if name != "install" else ""
        self.log(f"run: {role}{shlex.join(proc.argv)}")
        return proc

    def _running(self) -> list[str]:
        return [name for name, p in self.started.items() if p.poll() is None]

    def _tick(self, *, check_signal: bool = True) -> None:
        """One poll: copy new log output, react to a signal, sleep."""
        self._pump()
        if check_signal and self._signal is not None:
            raise Interrupted(self._signal)
        time.sleep(self.ctx.poll_s)

    def _pump(self) -> None:
        """Copy what the echoed steps wrote since the last call to stdout."""
        echo = self.spawner.echo
        for name, proc in self.started.items():
            if echo is None or name in echo:
                self._echo_pos[name] = _echo_new(proc.log_path, self._echo_pos.get(name, 0))

    def _triage(self, reason: str) -> None:
        try:
            report = triage(self.ctx.job_dir, reason=reason)
        except OSError as exc:
            self.log(f"triage failed: {exc}")
            return
        if self.ctx.print_triage:
            print(format_report(report), flush=True)

    def _stop_manual(self, reason: str) -> int:
        """The normal end of a manual job: say why, tell every role (the status file stops the servers),
        stop what is left, exit 0."""
        self.log(reason)
        Rendezvous(self.ctx.job_dir / "rendezvous").write_status("stopped", reason=reason)
        self._triage(reason)
        grace = Deadline(self.ctx.shutdown_timeout, "the roles of a manual job to stop on its status file")
        while self._running() and not grace.expired:
            self._tick(check_signal=False)
        self.shutdown(wait_first=False)
        return 0

    def _on_signal(self, signum: int) -> int:
        if self.ctx.manual and self.started.get(BENCHMARK) is not None:
            return self._stop_manual(f"{STOPPED_BY_USER} ({signal.Signals(signum).name})")
        if signum == signal.SIGTERM:
            why, rc = "job received SIGTERM (scancel or time limit); role log tails follow", self.ctx.term_exit
        elif signum == signal.SIGHUP:
            why, rc = "job received SIGHUP (terminal closed); role log tails follow", self.ctx.term_exit
        else:
            why, rc = "job received SIGINT", 130
        self.log(why)
        self._triage(why)
        self.shutdown(wait_first=False)
        return rc

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT set a flag that the next poll turns into :class:`Interrupted` (a step is
        never left half started); later signals are ignored while the steps are being stopped."""

        def handler(signum: int, frame: object) -> None:
            if self._signal is None:
                self._signal = signum

        old: dict[int, object] = {}
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # SIGHUP: the terminal was closed
                old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: signals stay with the caller
            pass
        try:
            yield
        finally:
            for sig, previous in old.items():
                signal.signal(sig, previous)  # type: ignore[arg-type]


def exit_code(returncode: int | None) -> int:
    """A process's exit code as a shell reports it: killed by signal N -> 128 + N."""
    if returncode is None:
        return 1
    return 128 - returncode if returncode < 0 else returncode


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _echo_new(path: Path, pos: int) -> int:
    try:
        with path.open("rb") as fh:
            fh.seek(pos)
            data = fh.read()
    except OSError:
        return pos
    if data:
        sys.stdout.write(data.decode("utf-8", errors="replace"))
        sys.stdout.flush()
    return pos + len(data)


def run(ctx: RunContext, spawner: Spawner) -> int:
    """Supervise one run of a job (see the module docstring); return its exit code."""
    return Supervisor(ctx, spawner).run()

