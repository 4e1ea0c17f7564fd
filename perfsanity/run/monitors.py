"""Per-node monitors: what a worker node did while the benchmark ran.

One worker role per node (the first in topology order that has a rank there) samples, every
:data:`INTERVAL_S` seconds until it stops:

* ``logs/<node>.cpu.csv`` — always: ``time`` (Unix seconds), ``cpu_percent`` (whole node),
  ``mem_used_mb``, ``mem_percent`` (:mod:`psutil`);
* ``logs/<node>.gpu.csv`` — where ``nvidia-smi`` is on PATH: its own CSV of
  ``timestamp, index, utilization.gpu, memory.used, memory.total`` every interval; where it is not,
  ``logs/<node>.gpu.txt`` holds one line saying why there is no GPU log.

``perfsanity.results.report`` plots both next to the benchmark windows. Sampling never fails the
role: a monitor that cannot write just stops.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil

INTERVAL_S = 2.0
CPU_HEADER = "time,cpu_percent,mem_used_mb,mem_percent\n"
GPU_QUERY = "timestamp,index,utilization.gpu,memory.used,memory.total"


def monitored_by(topology_roles: list[tuple[str, tuple[int, ...]]], role: str, rank: int) -> int | None:
    """The node index ``role``'s ``rank`` monitors, or None when an earlier worker role covers that node.

    ``topology_roles`` is ``[(role, node indices)]`` of the worker roles in topology order."""
    nodes = dict(topology_roles).get(role, ())
    if rank >= len(nodes):
        return None
    node = nodes[rank]
    for other, other_nodes in topology_roles:
        if node in other_nodes:
            return node if other == role else None
    return None


class NodeMonitor:
    """CPU/memory sampler thread plus, where it exists, an ``nvidia-smi`` sampler process."""

    def __init__(self, logs: Path, node: str, interval_s: float = INTERVAL_S) -> None:
        self.cpu_csv = logs / f"{node}.cpu.csv"
        self.gpu_csv = logs / f"{node}.gpu.csv"
        self.gpu_note = logs / f"{node}.gpu.txt"
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name=f"monitor {node}", daemon=True)
        self._smi: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeMonitor:
        self.cpu_csv.parent.mkdir(parents=True, exist_ok=True)
        self.cpu_csv.write_text(CPU_HEADER)
        psutil.cpu_percent(None)  # the first call only sets the baseline
        self._thread.start()
        smi = shutil.which("nvidia-smi")
        if smi is None:
            self.gpu_note.write_text("no GPU log: nvidia-smi is not on PATH on this node\n")
            return self
        with self.gpu_csv.open("wb") as out:
            self._smi = subprocess.Popen(  # noqa: S603 - fixed argv
                [smi, f"--query-gpu={GPU_QUERY}", "--format=csv,nounits", "-l", str(max(1, round(self.interval_s)))],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def _sample(self) -> None:
        try:
            with self.cpu_csv.open("a") as out:
                while not self._stop.wait(self.interval_s):
                    mem = psutil.virtual_memory()
                    out.write(f"{time.time():.3f},{psutil.cpu_percent(None):.1f},"
                              f"{(mem.total - mem.available) / 2**20:.0f},{mem.percent:.1f}\n")
                    out.flush()
        except OSError:
            return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)
        if self._smi is not None and self._smi.poll() is None:
            os.killpg(self._smi.pid, signal.SIGTERM)  # its own session: the sampler and any child
            try:
                self._smi.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self._smi.pid, signal.SIGKILL)
                self._smi.wait(timeout=5)

    def __enter__(self) -> NodeMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_cpu_csv(path: Path) -> list[tuple[float, float, float]]:
    """``(time, cpu_percent, mem_percent)`` rows of a ``<node>.cpu.csv`` (bad lines skipped)."""
    rows = []
    for line in path.read_text().splitlines()[1:]:
        parts = line.split(",")
        try:
            rows.append((float(parts[0]), float(parts[1]), float(parts[3])))
        except (IndexError, ValueError):
            continue
    return rows


def read_gpu_csv(path: Path) -> list[tuple[float, float, float]]:
    """``(time, utilization %, memory used %)`` rows of an ``nvidia-smi --format=csv,nounits`` log, one
    per GPU sample (lines that are not samples, such as repeated headers or errors, are skipped)."""
    from datetime import datetime

    rows = []
    for line in path.read_text(errors="replace").splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            when = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            rows.append((when, float(parts[2]), 100.0 * float(parts[3]) / float(parts[4])))
        except (IndexError, ValueError, ZeroDivisionError):
            continue
    return rows
