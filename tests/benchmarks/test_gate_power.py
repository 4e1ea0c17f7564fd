"""benchmarks/gate_power.py runs the shipped gate rule and prints machine-readable figures (a small
run: the figures themselves are recorded in benchmarks/RESULTS.md, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # seconds each: a real engine/tool process or many subprocesses
def test_gate_power_json_reports_the_default_rule_per_job_night():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gate_power.py"), "--json", "--trials", "20",
                           "--side-trials", "5", "--cp-trials", "0", "--full-path-trials", "1"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert data["family"]["size"] == 12 and data["rule"]["repeats"] == 5
    post = data["default_rule_post_merge"]
    assert set(post["detection_first_night"]) == {"output_token_throughput", "ttft_median"}
    assert post["false_alarms_per_job_night"]["trials"] == 20
    assert data["full_path"]["agreeing"] == data["full_path"]["compared"] == 12
    assert isinstance(data["targets_met"], bool) and 0.9 < data["analytic_detection"] < 1
