"""Cross-validation of the lean built-in client (``client: perfsanity``) against aiperf, both through
the BENCHMARK role's exact command and parser, on the same law server (benchmarks/lean_vs_aiperf.py):
at concurrency 1 they agree within 2 % on every judged metric where aiperf's point is valid, and on the
server-paced ones (TPOT, ITL, throughput) even where a busy node made aiperf's point client_saturated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_lean_client_agrees_with_aiperf_within_2pct_at_c1(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/lean_vs_aiperf.py"), "--concurrency", "1",
                           "--requests", "24", "--json", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (pt,) = json.loads(proc.stdout.splitlines()[-1])["points"]
    assert (pt["concurrency"], pt["requests"]) == (1, 24)
    diff = pt["lean_vs_aiperf_pct"]
    # the server-paced figures agree whatever the load; the median TTFT (and so the script's verdict) only on
    # a quiet box where aiperf's point is valid (RESULTS.md): under load aiperf's start timestamps lag past
    # 2 %, even where its point still reads valid (seen in CI at load average 3.7: 3.3 %)
    judged = ["tpot_p50", "itl_p50", "tput"]
    quiet = pt["load_before"] < 1.0
    if pt["aiperf_validity"] != "valid":
        assert pt["aiperf_validity"] == "client_saturated" and pt["aiperf_evidence"], pt
    elif quiet:
        judged.append("ttft_p50")
    for metric in judged:
        assert diff[metric] is not None and abs(diff[metric]) <= 2.0, (metric, pt)
    if quiet:
        assert pt["agrees"], pt
    assert pt["lean"]["tpot_p50"] == pytest.approx(20.0, rel=0.02)  # the law server's 20 ms between tokens
    # the reason for the lean client: its start-up (spawn → first request) is a fraction of aiperf's
    assert pt["startup_s"]["lean"] < pt["startup_s"]["aiperf"] / 3, pt["startup_s"]
