"""Processes the harness starts: each in its own session (process group), output to a log file, sent
SIGTERM when its parent dies (``PR_SET_PDEATHSIG``: a launcher killed by SIGHUP or kill -9 leaves
nothing running headless), stopped by PID (TERM to the group, then KILL after a bound; group members
that outlive the leader are found with :mod:`psutil`). A :class:`ProcessSet` is a fail-fast registry: it knows every process a role
started and stops them all on exit or signal.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

from perfsanity.common.redact import redact


def tail(path: Path, lines: int = 40, *, max_bytes: int = 64_000) -> str:
    """Last ``lines`` lines of a text file, secrets redacted ('' if missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return redact("\n".join(data.splitlines()[-lines:]))


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when the thread that started it dies, however it dies
    (kill -9 included), so no role or server runs on headless once its launcher is gone. Started in its
    own session, a child gets no SIGHUP from a closed terminal; this covers that case too."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class ManagedProcess:
    """One child process with its log file."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], log_path: Path,
                 cwd: Path | None = None, pass_fds: Sequence[int] = ()) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self._log.write(f"[perfsanity] start {name}: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(  # noqa: S603 - argv list, no shell
            self.argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()) if sys.platform == "linux" else None,  # noqa: PLW1509
            pass_fds=tuple(pass_fds),  # sockets the child inherits (already bound by us)
        )
        self.pid = self.popen.pid
        self.started = time.monotonic()

    def poll(self) -> int | None:
        return self.popen.poll()

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """TERM the process group, wait up to ``timeout_s``, then KILL it. Returns the exit code."""
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            self._signal_group(signal.SIGCONT)  # a stopped (SIGSTOP) process acts on the TERM only once continued
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                try:
                    self.popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        # children that outlived the leader still hold the group id
        self._signal_group(signal.SIGKILL, only_if_alive=True)
        try:
            self._log.close()
        except OSError:
            pass
        return self.popen.poll()

    def _signal_group(self, sig: int, *, only_if_alive: bool = False) -> None:
        try:
            if only_if_alive and not _group_alive(self.pid):
                return
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _group_alive(pgid: int) -> bool:
    """True if a live (not zombie) process is still in process group ``pgid`` (via :mod:`psutil`)."""
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                continue
            if os.getpgid(proc.pid) == pgid:
                return True
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return False


class ProcessSet:
    """Every process one role started; ``stop_all`` on any exit path (use as a context manager)."""

    def __init__(self) -> None:
        self.procs: list[ManagedProcess] = []

    def start(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], log_path: Path,
              cwd: Path | None = None, pass_fds: Sequence[int] = ()) -> ManagedProcess:
        proc = ManagedProcess(name, argv, env=env, log_path=log_path, cwd=cwd, pass_fds=pass_fds)
        self.procs.append(proc)
        return proc

    def first_dead(self) -> ManagedProcess | None:
        for proc in self.procs:
            if proc.poll() is not None:
                return proc
        return None

    def stop_all(self, timeout_s: float = 10.0) -> None:
        for proc in reversed(self.procs):
            proc.stop(timeout_s)

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


class TermAsInterrupt:
    """Turn SIGTERM into KeyboardInterrupt while active, so ``finally`` blocks run on scancel."""

    def __enter__(self) -> TermAsInterrupt:
        self._old = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        try:
            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def node_cores() -> int:
    """Cores this process may run on (the SLURM step's allocation, or the machine)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


class NodeBusy:
    """Share of the machine's CPU time that was busy between construction and :meth:`share`."""

    def __init__(self) -> None:
        self._start = psutil.cpu_times()

    def share(self) -> float:
        end = psutil.cpu_times()
        total = sum(end) - sum(self._start)
        idle = (end.idle - self._start.idle) + (getattr(end, "iowait", 0.0) - getattr(self._start, "iowait", 0.0))
        return 0.0 if total <= 0 else max(0.0, min(1.0, 1.0 - idle / total))


class TreeCpu:
    """CPU seconds of a process and its descendants, sampled by :meth:`sample` (call it while they run;
    a process that exits between samples keeps its last sampled CPU time)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self._cpu: dict[tuple[int, float], float] = {}  # (pid, create_time) → user + system seconds

    def sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    self._cpu[(proc.pid, proc.create_time())] = times.user + times.system
            except psutil.Error:
                continue

    def seconds(self) -> tuple[float, float]:
        """(CPU seconds of the whole tree, of its busiest process) as last sampled."""
        return (sum(self._cpu.values()), max(self._cpu.values())) if self._cpu else (0.0, 0.0)

    def cores(self) -> tuple[float, float]:
        """(cores the whole tree used, cores its busiest process used) since this sampler started."""
        wall = max(time.monotonic() - self.started, 1e-6)
        tree, busiest = self.seconds()
        return tree / wall, busiest / wall
