"""``pip install .`` into a new venv gives a working ``perfsanity`` command (README, issue 14).

For real (slow): ``python3 -m venv`` in tmp_path, that venv's pip installs a copy of the project's
sources (pyproject.toml + perfsanity/, so the build leaves nothing in the checkout), then the
installed console script runs from a directory outside the checkout with no PYTHONPATH: ``--help``
lists the subcommands, and ``gate`` / ``history`` / ``report`` on a job dir show that the package
data ships (alembic migrations create the history database, the Jinja templates render the report).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from perfsanity import bootstrap
from perfsanity.load.results_json import ConcurrencyResult, LatencyStats, RunResult
from perfsanity.results.history import JobMeta

REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("status", "logs", "report", "history", "compare", "baseline", "gate", "collect", "trend")


def _job_dir(root: Path) -> Path:
    job = root / "job"
    job.mkdir()
    results = tuple(ConcurrencyResult(concurrency=c, client="aiperf", requested=4 * c, completed=4 * c, failed=0,
                                      output_token_throughput=100.0 * c, total_token_throughput=300.0 * c,
                                      ttft=LatencyStats(median=20.0, p99=40.0), tpot=LatencyStats(median=5.0),
                                      itl=LatencyStats(median=5.0))
                    for c in (1, 8))
    RunResult(config_name="pkg-check", backend="dynamo-mocker", mode="e2e", total_gpus=4, status="passed",
              results=results).write(job / "results.json")
    keys = {"config_name": "pkg-check", "model": "tiny-mocker", "precision": "bf16", "gpu_type": "CPU",
            "backend": "dynamo-mocker", "mode": "e2e", "num_ctx_servers": 1, "num_gen_servers": 1, "ctx_tp": 2,
            "ctx_pp": 1, "ctx_ep": 1, "ctx_attention_dp": False, "gen_tp": 2, "gen_pp": 1, "gen_ep": 1,
            "gen_attention_dp": False, "isl": 128, "osl": 32, "total_gpus": 4}
    JobMeta.model_validate({"keys": keys, "commit": "0123456789abcdef", "branch": "main",
                            "job_id": "7"}).write(job / "job_meta.json")
    return job


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pip_install_dot_gives_a_working_perfsanity_command(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
    shutil.copytree(REPO / "perfsanity", src / "perfsanity", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "v"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    made = subprocess.run([bootstrap._base_python(), "-m", "venv", str(venv)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr[-3000:]
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", str(src)],
                         env=env, capture_output=True, text=True, timeout=780, check=False)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-3000:]

    exe = venv / "bin" / "perfsanity"
    work = tmp_path / "elsewhere"
    work.mkdir()
    env["PERFSANITY_HISTORY"] = str(work / "history.sqlite")

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *argv], cwd=work, env=env, capture_output=True, text=True, timeout=120,
                              check=False)

    helped = run("--help")
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert all(f"    {name} " in helped.stdout for name in SUBCOMMANDS), helped.stdout
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import perfsanity; print(perfsanity.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert Path(where.stdout.strip()).is_relative_to(venv), where  # the installed copy, not the checkout

    job = _job_dir(work)
    gated = run("gate", str(job))
    assert gated.returncode == 0, gated.stdout[-2000:] + gated.stderr[-3000:]
    assert "recorded 2 record(s)" in gated.stdout, gated.stdout
    listed = run("history")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert sum(line.split()[3:5] == ["pkg-check", "1"] or line.split()[3:5] == ["pkg-check", "8"]
               for line in listed.stdout.splitlines() if line[:1].isdigit()) == 2, listed.stdout
    reported = run("report", str(job))
    assert reported.returncode == 0, reported.stderr[-3000:]
    html = (job / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "pkg-check" in html

    bad = run("report", str(work / "no-such-job"))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("perfsanity: error:") and "no-such-job" in bad.stderr, bad.stderr
