"""Per-node monitors (perfsanity.run.monitors) and their plots in report.html.

* one worker role per node monitors it, whatever the packing;
* the CPU/memory log is always written; the GPU log comes from nvidia-smi where it is on PATH (here a
  stand-in executable printing nvidia-smi's CSV), and a one-line reason where it is not;
* report.html plots both next to the benchmark windows recorded in results.json.
"""

from __future__ import annotations

import base64
import re
import stat
import time
from pathlib import Path

from perfsanity.load.results_json import ConcurrencyResult, RunResult
from perfsanity.results.report.job import read_monitors, write_job_report
from perfsanity.run import monitors

# what `nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used,memory.total --format=csv,nounits`
# prints (header once, one line per GPU per interval)
SMI_STANDIN = """#!/bin/bash
echo "timestamp, index, utilization.gpu [%], memory.used [MiB], memory.total [MiB]"
while true; do
  echo "$(date '+%Y/%m/%d %H:%M:%S.000'), 0, 87, 40960, 81920"
  sleep 0.2
done
"""


def test_one_monitor_per_node():
    roles = [("GEN_0", (0,)), ("GEN_1", (0,)), ("CTX_0", (1, 2)), ("CTX_1", (2,))]
    assert monitors.monitored_by(roles, "GEN_0", 0) == 0
    assert monitors.monitored_by(roles, "GEN_1", 0) is None  # packed on node 0 with GEN_0
    assert monitors.monitored_by(roles, "CTX_0", 0) == 1 and monitors.monitored_by(roles, "CTX_0", 1) == 2
    assert monitors.monitored_by(roles, "CTX_1", 0) is None
    assert monitors.monitored_by(roles, "BENCHMARK", 0) is None


def _wait_rows(path: Path, n: int, timeout_s: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) > n:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"waited {timeout_s}s for {n} samples in {path}: {path.read_text() if path.exists() else ''}")


def test_cpu_log_always_and_gpu_reason_without_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with monitors.NodeMonitor(tmp_path / "logs", "node7", interval_s=0.05) as mon:
        lines = _wait_rows(mon.cpu_csv, 3)
    assert lines[0] == monitors.CPU_HEADER.strip()
    rows = monitors.read_cpu_csv(mon.cpu_csv)
    assert len(rows) >= 3 and all(0 <= cpu <= 100 and 0 < mem <= 100 for _, cpu, mem in rows)
    assert rows == sorted(rows)  # time goes forward
    assert (tmp_path / "logs" / "node7.gpu.txt").read_text() == "no GPU log: nvidia-smi is not on PATH on this node\n"
    assert not (tmp_path / "logs" / "node7.gpu.csv").exists()


def test_gpu_log_from_nvidia_smi_and_sampler_stopped(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(SMI_STANDIN)
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    mon = monitors.NodeMonitor(tmp_path / "logs", "node1", interval_s=1).start()
    try:
        _wait_rows(mon.gpu_csv, 2)
    finally:
        mon.stop()
    assert mon._smi is not None and mon._smi.poll() is not None  # stopped with the monitor
    rows = monitors.read_gpu_csv(mon.gpu_csv)
    assert rows and all(util == 87.0 and mem == 50.0 for _, util, mem in rows)
    assert not (tmp_path / "logs" / "node1.gpu.txt").exists()


def test_report_plots_node_logs_next_to_benchmark_windows(tmp_path):
    job = tmp_path / "job"
    logs = job / "logs"
    logs.mkdir(parents=True)
    t0 = 1_790_000_000.0
    (logs / "node1.cpu.csv").write_text(monitors.CPU_HEADER + "".join(
        f"{t0 + i},{10 + i},1000,{20 + i / 10}\n" for i in range(30)))
    (logs / "node1.gpu.txt").write_text("no GPU log: nvidia-smi is not on PATH on this node\n")
    results = [ConcurrencyResult(concurrency=c, client="aiperf", requested=4, completed=4, failed=0,
                                 output_token_throughput=100.0 * c, started_at=t0 + 5 * c, ended_at=t0 + 5 * c + 4)
               for c in (1, 2)]
    RunResult(config_name="mon", backend="dynamo-mocker", mode="e2e", total_gpus=8, results=tuple(results),
              status="passed").write(job / "results.json")
    series, gpus, notes = read_monitors(logs)
    assert [n for n, _ in series] == ["node1"] and len(series[0][1]) == 30 and gpus == []
    assert notes == ["node1: no GPU log: nvidia-smi is not on PATH on this node"]
    html = write_job_report(job).read_text()
    assert "worker nodes: CPU and memory during the benchmark" in html
    assert "node1: no GPU log: nvidia-smi is not on PATH on this node" in html
    pngs = [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]
    assert len(pngs) >= 2 and all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_report_without_monitor_logs_has_no_node_plot(tmp_path):
    job = tmp_path / "job"
    (job / "logs").mkdir(parents=True)
    RunResult(config_name="mon", backend="trtllm", mode="e2e", total_gpus=8, status="passed").write(
        job / "results.json")
    html = write_job_report(job).read_text()
    assert "worker nodes" not in html and "GPU logs" not in html
