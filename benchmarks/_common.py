"""Shared helpers of the harness benchmarks: machine facts, load checks, the test server as a
subprocess, the harness's own aiperf client path, and CPU accounting of a process tree via /proc."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from perfsanity.bootstrap import reexec  # noqa: E402  (stdlib only)

reexec()  # run under the project venv (made from uv.lock on first use)

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------ machine / load


def machine_info() -> dict:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cores": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def load1() -> float:
    return os.getloadavg()[0]


def wait_for_low_load(max_load: float = 1.0, timeout_s: float = 0.0, poll_s: float = 10.0) -> float:
    """Wait (bounded) until the 1-min load average is below ``max_load``; return the load seen.
    ``timeout_s`` 0 = do not wait, just report."""
    end = time.monotonic() + timeout_s
    while True:
        load = load1()
        if load < max_load or time.monotonic() >= end:
            return load
        print(f"  (load {load:.2f} >= {max_load}; waiting, up to {end - time.monotonic():.0f}s more)", flush=True)
        time.sleep(min(poll_s, max(0.1, end - time.monotonic())))


def print_header(title: str, args_line: str) -> dict:
    info = machine_info()
    print(f"# {title}")
    print(f"machine: {info['cores']} cores, {info['cpu_model']}, {info['mem_gib']} GiB, "
          f"Linux {info['kernel']}, Python {info['python']}")
    print(f"date: {info['date']}; load average (1 min) at start: {load1():.2f}")
    print(f"command: {args_line}\n", flush=True)
    return info


# ------------------------------------------------------------------------------------- CPU of a tree


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree_pids(root: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def proc_cpu_s(pid: int, *, with_children: bool = True) -> float:
    """utime+stime (+ reaped children's cutime+cstime) of one process, in seconds; 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


class TreeCpuSampler:
    """Samples the summed CPU seconds of a process tree every ``period_s`` (wall-clock stamps).

    A child that exits and is reaped moves its time into its parent's cutime, so the sum stays
    monotonic (a running process's children are only counted while alive, so no double counting)."""

    def __init__(self, root_pid: int, period_s: float = 0.1) -> None:
        self.root = root_pid
        self.period = period_s
        self.samples: list[tuple[float, float]] = []
        self.max_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._best = 0.0

    def _sample(self) -> None:
        pids = tree_pids(self.root)
        self.max_procs = max(self.max_procs, len(pids))
        total = sum(proc_cpu_s(p) for p in pids)
        self._best = max(self._best, total)  # a reap race can momentarily lose a child's time
        self.samples.append((time.time(), self._best))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period)

    def start(self) -> TreeCpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def cpu_at(self, t: float) -> float:
        s = self.samples
        if not s:
            return 0.0
        if t <= s[0][0]:
            return s[0][1]
        for (ta, ca), (tb, cb) in zip(s, s[1:], strict=False):
            if ta <= t <= tb:
                return ca + (cb - ca) * (t - ta) / (tb - ta) if tb > ta else cb
        return s[-1][1]

    def cpu_between(self, t0: float, t1: float) -> float:
        return self.cpu_at(t1) - self.cpu_at(t0)

    @property
    def total(self) -> float:
        return self.samples[-1][1] if self.samples else 0.0


class SystemCpu:
    """Busy and steal CPU-seconds of the whole machine between two points (/proc/stat), to tell how
    much *other* work (the other helpers' tests, or the VM host: steal) shared the cores."""

    @staticmethod
    def read() -> tuple[float, float, float]:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = (f + [0] * 8)[:8]
        return time.time(), (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK

    def __init__(self) -> None:
        self.start = self.read()

    def since(self) -> dict:
        end = self.read()
        wall = end[0] - self.start[0]
        return {"wall_s": wall, "busy_cores": (end[1] - self.start[1]) / wall, "steal_cores": (end[2] - self.start[2]) / wall}


def wait_for_quiet(max_cores: float = 0.25, timeout_s: float = 90.0, sample_s: float = 3.0) -> float:
    """Call while this benchmark runs nothing: wait (bounded) until the rest of the machine uses less
    than ``max_cores`` over ``sample_s``; return the last level seen (other helpers' tests run here)."""
    end = time.monotonic() + timeout_s
    while True:
        probe = SystemCpu()
        time.sleep(sample_s)
        busy = probe.since()["busy_cores"]
        if busy < max_cores or time.monotonic() >= end:
            if busy >= max_cores:
                print(f"  (machine still busy: {busy:.2f} cores used by others; measuring anyway)", flush=True)
            return busy
        print(f"  (others use {busy:.2f} cores; waiting for < {max_cores})", flush=True)


# --------------------------------------------------------------------------------------- test server


@dataclass
class ServerHandle:
    proc: subprocess.Popen
    url: str
    log: Path | None


@contextlib.contextmanager
def bench_server(args: Sequence[str] = (), log: Path | None = None, max_seconds: float = 1800) -> Iterator[ServerHandle]:
    argv = [sys.executable, str(BENCH / "bench_server.py"), "--host", "127.0.0.1", "--port", "0",
            "--max-seconds", str(max_seconds), *args]
    if log is not None:
        argv += ["--log", str(log)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = ""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if line.startswith("listening ") or proc.poll() is not None:
                break
        if not line.startswith("listening "):
            raise RuntimeError(f"bench server did not start (exit {proc.poll()}): {line!r}")
        yield ServerHandle(proc, line.split()[1], log)
    finally:
        stop_tree(proc)


def stop_tree(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it after ``grace_s``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def read_jsonl(path: Path) -> list[dict]:
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line.strip():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


# ------------------------------------------------------------------------- the harness's aiperf path


@dataclass
class ClientOutcome:
    result: object | None  # perfsanity.load.results_json.ConcurrencyResult
    records: list[dict]  # profiling-phase records of profile_export.jsonl
    exit_code: int
    wall_s: float
    cpu: TreeCpuSampler
    argv: list[str]
    out_dir: Path
    error: str = ""
    extra: dict = field(default_factory=dict)

    def window(self) -> tuple[float, float] | None:
        """Wall-clock (s) of the first request start and the last request end (profiling phase)."""
        ok = [r["metadata"] for r in self.records if not r.get("error")]
        if not ok:
            return None
        return (min(m["request_start_ns"] for m in ok) / 1e9, max(m["request_end_ns"] for m in ok) / 1e9)


def tiny_model() -> str:
    from perfsanity.engines.model_assets import ensure_tiny_model

    return str(ensure_tiny_model())


def run_harness_aiperf(url: str, *, concurrency: int, num_prompts: int, out_dir: Path, input_length: int,
                       output_length: int, extra_argv: Sequence[str] = (), timeout_s: float = 300,
                       warmup_requests: int = 0, seed: int = 0, request_timeout_s: float = 120) -> ClientOutcome:
    """Exactly the BENCHMARK role's client path (perfsanity.load.aiperf command + env changes +
    tool resolution, then its parser) — plus optional extra argv (e.g. ``--workers-max``)."""
    from perfsanity.load.aiperf import CLIENT, RECORDS_FILE
    from perfsanity.load.base import ClientRun
    from perfsanity.run.job import resolve_argv

    out_dir.mkdir(parents=True, exist_ok=True)
    run = ClientRun(url=url, model_name="tiny", tokenizer=tiny_model(), concurrency=concurrency,
                    num_prompts=num_prompts, input_length=input_length, output_length=output_length,
                    streaming=True, request_timeout_s=request_timeout_s, random_seed=seed,
                    warmup_requests=warmup_requests, dataset_file=None, out_dir=out_dir, total_gpus=0)
    cmd = CLIENT.command(run)
    env = dict(os.environ)
    for name in cmd.env_unset:
        env.pop(name, None)
    env.update(cmd.env_set)
    env["PYTHONUNBUFFERED"] = "1"
    argv = resolve_argv(tuple(cmd.argv), cmd.tool) + list(extra_argv)
    log = out_dir / "client.log"
    t0 = time.monotonic()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, env=env, cwd=out_dir, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        sampler = TreeCpuSampler(proc.pid).start()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
        finally:
            sampler.stop()
            stop_tree(proc)
    wall = time.monotonic() - t0
    records = [r for r in read_jsonl(out_dir / RECORDS_FILE)
               if (r.get("metadata") or {}).get("benchmark_phase") in (None, "profiling")]
    outcome = ClientOutcome(None, records, proc.returncode, wall, sampler, argv, out_dir)
    try:
        outcome.result = CLIENT.parse(run)
    except Exception as exc:  # noqa: BLE001 - reported, the caller decides
        tail = log.read_text(errors="replace").splitlines()[-15:]
        outcome.error = f"{type(exc).__name__}: {exc}\n" + "\n".join(tail)
    return outcome


def pct(values: Sequence[float], p: float) -> float | None:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), p)) if len(values) else None


def rel_err(measured: float | None, truth: float | None) -> float | None:
    if measured is None or truth is None or truth == 0:
        return None
    return (measured - truth) / truth * 100.0


def fmt_pct(v: float | None) -> str:
    return "—" if v is None else f"{v:+.2f}%"


def fmt(v: float | None, nd: int = 2) -> str:
    return "—" if v is None else f"{v:.{nd}f}"
