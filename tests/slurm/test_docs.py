"""Docs that run: every command in a ``bash`` block of README.md and docs/*.md is run here.

Commands run in order, one shell per document, in a sandbox: a directory whose entries are links to
the repository's (so relative paths such as ``sweeps/…`` and ``out/…`` resolve as in a checkout, and
``out/`` is the sandbox's own), with a private history database.

* fast: the commands that need no job's outputs (dry runs, status), in document order;
* slow: everything, including ``--local`` runs and ``--submit`` on the local SLURM cluster (its jobs
  are cancelled at the end). ``scripts/test`` is the command that runs this test, so it is the one
  command not run from here (its own run is the evidence).

Also: shell commands may appear only in ``bash`` blocks (not in indented blocks, where this test
would not see them), and the sweep file docs/sweeps.md shows is the one shipped in sweeps/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
HEAVY = re.compile(r"--submit|--local|--wait")
# without the heavy commands' outputs, these still have something to do: write (dry runs) or read state
FAST = re.compile(r"--dry-run|^python3 submit\.py --sweep \S+ --out \S+\s*(#.*)?$|-m perfsanity status\b")
NOT_FROM_HERE = {"scripts/test"}  # runs this very test
SHELL_START = re.compile(r"^(python3?|perfsanity|scripts/|bash|sbatch|srun|\. )")


def shell_blocks(doc: Path) -> list[tuple[int, str]]:
    """(line number, command) of every command line in the doc's ```bash blocks."""
    out, inside = [], False
    for n, line in enumerate(doc.read_text().splitlines(), 1):
        if line.startswith("```"):
            inside = (not inside) and line.strip() in ("```bash", "```sh", "```console", "```shell")
            continue
        if inside and line.strip() and not line.lstrip().startswith("#"):
            out.append((n, line.strip()))
    return out


def _sandbox(tmp_path: Path) -> Path:
    box = tmp_path / "checkout"
    box.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in ("out", ".git"):
            (box / entry.name).symlink_to(entry)
    return box


def _script(doc: Path, heavy: bool) -> str:
    lines = ["set -euo pipefail"]
    for n, cmd in shell_blocks(doc):
        if cmd.split()[0] in NOT_FROM_HERE or (not heavy and (HEAVY.search(cmd) or not FAST.search(cmd))):
            lines.append(f"true  # {doc.name}:{n} not run here: {cmd}")
            continue
        lines.append(f"echo '>>> {doc.name}:{n}' >&2")
        lines.append(cmd)
    return "\n".join(lines) + "\n"


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PERFSANITY_HISTORY"] = str(tmp_path / "history.sqlite")
    for key in ("PERFSANITY_CLUSTER", "PERFSANITY_OUT", "PERFSANITY_PRE_MERGE", "PERFSANITY_RUN_CI"):
        env.pop(key, None)
    # `python3` in the docs is whatever the reader has; the commands set up the harness venv themselves
    return env


def _run_doc(doc: Path, tmp_path: Path, heavy: bool, timeout_s: float) -> subprocess.CompletedProcess[str]:
    box = _sandbox(tmp_path)
    script = tmp_path / f"{doc.stem}.sh"
    script.write_text(_script(doc, heavy))
    try:
        return subprocess.run(["bash", str(script)], cwd=box, env=_env(tmp_path), capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"{doc.name}: commands did not finish within {timeout_s:g}s:\n{out[-4000:]}", pytrace=False)


def _cancel_jobs(root: Path) -> None:
    from perfsanity.jobs import slurm as jobs

    for path in root.rglob("jobid.json"):
        try:
            job_id = str(json.loads(path.read_text())["job_id"])
        except (OSError, ValueError, KeyError):
            continue
        if job_id and job_id != "local":
            try:
                jobs.cancel(job_id)
            except jobs.SlurmError:
                pass


def test_docs_show_commands_only_in_bash_blocks() -> None:
    hidden = []
    for doc in DOCS:
        inside = False
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if line.startswith("```"):
                inside = not inside
            elif not inside and line.startswith("    ") and SHELL_START.match(line.strip()):
                hidden.append(f"{doc.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hidden, "commands outside ```bash blocks (not run by tests):\n" + "\n".join(hidden)
    assert all(shell_blocks(REPO / "README.md")[i][1] == c for i, c in
               enumerate(["python3 submit.py --local", "scripts/test"])), shell_blocks(REPO / "README.md")[:2]


def test_the_sweep_file_the_docs_show_is_shipped() -> None:
    text = (REPO / "docs" / "sweeps.md").read_text()
    block = re.search(r"```yaml\n(# sweeps/mocker-batch\.yaml\n.*?)```", text, re.S)
    assert block, "docs/sweeps.md shows no sweeps/mocker-batch.yaml"
    assert block.group(1) == (REPO / "sweeps" / "mocker-batch.yaml").read_text()
    named = set(re.findall(r"\b((?:sweeps|test_configs)/[\w./-]+\.yaml)\b", "".join(d.read_text() for d in DOCS)))
    missing = sorted(p for p in named if "<" not in p and not (REPO / p).is_file())
    assert not missing, missing


@pytest.mark.parametrize("doc", [d for d in DOCS if any(FAST.search(c) for _, c in shell_blocks(d))],
                         ids=lambda d: d.name)
def test_doc_commands_that_write_or_read_run(doc: Path, tmp_path: Path) -> None:
    proc = _run_doc(doc, tmp_path, heavy=False, timeout_s=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    assert proc.stderr.count(">>> ") == sum(1 for _, c in shell_blocks(doc) if FAST.search(c) and not HEAVY.search(c))


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("doc", [d for d in DOCS if any(HEAVY.search(c) for _, c in shell_blocks(d))],
                         ids=lambda d: d.name)
def test_every_doc_command_runs(doc: Path, tmp_path: Path, cluster) -> None:
    try:
        proc = _run_doc(doc, tmp_path, heavy=True, timeout_s=1700)
    finally:
        _cancel_jobs(tmp_path / "checkout" / "out")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    assert proc.stderr.count(">>> ") == sum(1 for _, c in shell_blocks(doc) if c.split()[0] not in NOT_FROM_HERE)
