"""Shared helpers of the spine's unit tests: repo paths, running ``submit.py`` as a real subprocess,
stub ``srun``/``scontrol`` executables, and path normalisation for golden files.

tests/unit is not a package, so test modules reach these helpers through the ``h`` fixture (this module).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUBMIT = REPO / "submit.py"
CONFIGS_ROOT = REPO / "test_configs"
CONFIGS = sorted(p for p in CONFIGS_ROOT.glob("*/perf/*.yaml"))
CLUSTERS = sorted((CONFIGS_ROOT / "clusters").glob("*.yaml"))
DRAFT = REPO / "jenkins/scripts/perf/disaggregated/slurm_launch_draft.sh"
RUN_SH = REPO / "jenkins/scripts/slurm_run.sh"
INSTALL_SH = REPO / "jenkins/scripts/slurm_install.sh"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
SHELLCHECK = shutil.which("shellcheck")
CLI_TIMEOUT_S = 60
PARALLEL = 2  # the machine has 2 cores; subprocess batches run this many at once


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PERFSANITY_CLUSTER", "PERFSANITY_OUT")}
    env.update(extra)
    return env


def run_submit(args: Sequence[str | os.PathLike], *, cwd: Path | None = None, env: dict | None = None) -> Result:
    """``python3 submit.py ARGS`` as a real subprocess."""
    argv = [sys.executable, str(SUBMIT), *map(str, args)]
    proc = subprocess.run(argv, cwd=cwd or REPO, env=env or cli_env(), capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, check=False)
    return Result(tuple(map(str, args)), proc.returncode, proc.stdout, proc.stderr)


def run_many(arg_lists: Iterable[Sequence[str | os.PathLike]], **kw) -> list[Result]:
    """Several ``run_submit`` calls, :data:`PARALLEL` at a time (results in input order)."""
    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(lambda a: run_submit(a, **kw), list(arg_lists)))


def shellcheck(path: Path, exclude: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """``shellcheck -s bash`` at its default severity: any finding (style, info, warning) fails."""
    assert SHELLCHECK, "shellcheck is required for these tests"
    extra = ["--exclude=" + ",".join(exclude)] if exclude else []
    return subprocess.run([SHELLCHECK, "-s", "bash", *extra, str(path)], capture_output=True, text=True,
                          timeout=60, check=False)


def bash_n(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30, check=False)


def assert_clean_bash(path: Path, exclude: Sequence[str] = ()) -> None:
    """``bash -n`` accepts the script and :func:`shellcheck` (minus ``exclude``) finds nothing."""
    n = bash_n(path)
    assert n.returncode == 0, n.stderr
    sc = shellcheck(path, exclude=exclude)
    assert sc.returncode == 0 and not sc.stdout, sc.stdout


def assert_one_line_error(res: Result, *needles: str) -> None:
    """Exit 2, exactly one stderr line holding every needle, no traceback."""
    assert res.returncode == 2, f"exit {res.returncode}; stderr:\n{res.stderr}\nstdout:\n{res.stdout}"
    assert "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr_lines) == 1, f"expected one stderr line, got:\n{res.stderr}"
    for needle in needles:
        assert needle in res.stderr, f"{needle!r} not in {res.stderr!r}"


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), f"{out} has {sorted(p.name for p in out.iterdir())}"


def normalise(text: str, replacements: dict[str, str]) -> str:
    """Replace machine-specific paths by placeholders, longest path first."""
    for path, placeholder in sorted(replacements.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(path, placeholder)
    return text


# a preflight step (--job-name=preflight-*) runs its task command for real, once per -w host (as that
# node: SLURMD_NODENAME, SLURM_PROCID), so the supervisor gets real reports
STUB_PREFLIGHT = """
if [[ " $* " == *" --job-name=preflight-"* ]]; then
    args=("$@"); hosts=""; cmd=()
    for ((i = 0; i < ${#args[@]}; i++)); do
        [[ ${args[i]} == -w ]] && hosts=${args[i+1]}
        if [[ ${args[i]} == bash ]]; then cmd=("${args[@]:i}"); break; fi
    done
    rank=0
    IFS=, read -ra list <<< "$hosts"
    for node in "${list[@]}"; do
        SLURMD_NODENAME=$node SLURM_PROCID=$rank "${cmd[@]}" &
        rank=$((rank + 1))
    done
    wait
    exit 0
fi
"""
STUB_SRUN = """#!/bin/bash
# stub srun: record argv (one [arg] each) and the role; fail (exit 3) for the role in $STUB_FAIL_ROLE
line=srun; for a in "$@"; do line+=" [$a]"; done  # one write per call: steps start together
printf '%s role=%s\\n' "$line" "${DISAGG_SERVING_TYPE:-}" >> "$STUB_LOG"
""" + STUB_PREFLIGHT + """role=${DISAGG_SERVING_TYPE:-install}
[[ -n ${STUB_FAIL_ROLE:-} && $role == "$STUB_FAIL_ROLE" ]] && exit 3
exit 0
"""
STUB_SCONTROL = """#!/bin/bash
# stub scontrol: `scontrol show hostnames LIST` prints node0..node63
line=scontrol; for a in "$@"; do line+=" [$a]"; done
printf '%s\\n' "$line" >> "$STUB_LOG"
if [[ ${1:-} == show && ${2:-} == hostnames ]]; then
    for i in $(seq 0 63); do echo "node$i"; done
fi
exit 0
"""
STUB_PYTHON = """#!/bin/bash
# stub python3 (triage on failure paths): record argv only
line=python3; for a in "$@"; do line+=" [$a]"; done
printf '%s\\n' "$line" >> "$STUB_LOG"
exit 0
"""


@pytest.fixture
def stub_bin(tmp_path: Path) -> Path:
    """A directory of stub executables to put first in PATH (srun, scontrol, python3)."""
    d = tmp_path / "stub-bin"
    d.mkdir()
    for name, text in (("srun", STUB_SRUN), ("scontrol", STUB_SCONTROL), ("python3", STUB_PYTHON)):
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    return d


def run_launch_sh(launch: Path, stub_bin: Path, *, cwd: Path, log: Path, home: Path,
                  extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run launch.sh as sbatch would, with stub SLURM tools first in PATH and a clean environment."""
    env = {
        "PATH": f"{stub_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "STUB_LOG": str(log),
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "node[0-63]",
        "TMPDIR": str(cwd),
        **(extra_env or {}),
    }
    return subprocess.run(["bash", str(launch)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


# Captured at import: every conftest.py is imported as "conftest", so a later sys.modules lookup may
# find another directory's conftest when several test folders run together.
_THIS_MODULE = sys.modules[__name__]


@pytest.fixture(scope="session")
def h():
    """This module: the helpers and constants above (``h.run_submit(...)``, ``h.REPO``...)."""
    return _THIS_MODULE
