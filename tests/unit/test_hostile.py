"""Hostile and careless input through the real ``submit.py``: each failure found by trying the harness as
a hostile user would, reproduced and pinned (alias bombs, pathological redaction, FIFOs and devices as
``--config``, empty paths, ``--set name``, booleans as numbers, control characters, 200 KB values,
secrets in the job dir, half-written job dirs).

Every case runs ``submit.py --dry-run`` as a subprocess bounded at :data:`CASE_TIMEOUT_S`: a hang fails
the test instead of stalling the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from perfsanity.common.errors import PerfsanityError
from perfsanity.common.redact import MASK
from perfsanity.plan.prepare import write_job_dir

CASE_TIMEOUT_S = 10
REPO = Path(__file__).resolve().parents[2]

HF = "hf_" + "Q" * 30
GHP = "ghp_" + "R" * 30
SK = "sk-" + "S" * 30
PGPASS = "pg-pass-7f3a"
DBPASS = "db-password-91c2"
BUILD_PASS = "build-cred-44e1"
SECRETS = (HF, GHP, SK, PGPASS, DBPASS, BUILD_PASS)


def submit(h, args, *, cwd: Path, env: dict | None = None) -> object:
    argv = [sys.executable, str(h.SUBMIT), *map(str, args)]
    proc = subprocess.run(argv, cwd=cwd, env=env or h.cli_env(), capture_output=True, text=True,
                          timeout=CASE_TIMEOUT_S, check=False)
    return h.Result(tuple(map(str, args)), proc.returncode, proc.stdout, proc.stderr)


def base_text(h) -> str:
    return (h.CONFIGS_ROOT / "disagg/perf/mocker-ctx1-gen1.yaml").read_text()


def bomb(levels: int = 9, width: int = 10) -> str:
    """A ~1 KB "billion laughs": ``width ** levels`` scalars once every alias is expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def indent(text: str, n: int) -> str:
    return "".join(" " * n + line + "\n" for line in text.splitlines())


@pytest.mark.parametrize("where", ["worker_config.gen", "gate", "sweep"])
def test_alias_bomb_is_refused_at_once(where: str, tmp_path: Path, h) -> None:
    text = base_text(h)
    if where == "worker_config.gen":
        text = text.replace("  gen:\n", "  gen:\n    extra_bomb:\n" + indent(bomb(), 6), 1)
    else:
        text += f"{where}:\n  bomb:\n" + indent(bomb(), 4)
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(text)
    assert len(text) < 2000
    out = tmp_path / "job"
    res = submit(h, ["--config", cfg, "--out", out, "--dry-run"], cwd=tmp_path)
    h.assert_one_line_error(res, str(cfg), "alias")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.yaml"]


@pytest.mark.parametrize("doc", ["gate: &a [*a]\n", "gate: &a {x: *a}\n", "sweep: &s {k: [1, *s]}\n"])
def test_self_referencing_alias_is_one_error(doc: str, tmp_path: Path, h) -> None:
    cfg = tmp_path / "cycle.yaml"
    cfg.write_text(base_text(h) + doc)
    res = submit(h, ["--config", cfg, "--out", tmp_path / "job", "--dry-run"], cwd=tmp_path)
    h.assert_one_line_error(res, str(cfg), "cycle")
    assert not (tmp_path / "job").exists()


def test_a_few_ordinary_anchors_still_load(tmp_path: Path, h) -> None:
    text = base_text(h).replace("  ctx:\n    tensor_parallel_size: 2", "  ctx: &w\n    tensor_parallel_size: 2")
    text = text.replace("  gen:\n    tensor_parallel_size: 2\n    speedup_ratio: 1.0\n    block_size: 64\n", "  gen: *w\n")
    cfg = tmp_path / "anchors.yaml"
    cfg.write_text(text)
    res = submit(h, ["--config", cfg, "--out", tmp_path / "job", "--dry-run"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "block_size: 64" in (tmp_path / "job/config.resolved.yaml").read_text()


def test_fifo_as_config_does_not_block(tmp_path: Path, h) -> None:
    fifo = tmp_path / "cfg.yaml"
    os.mkfifo(fifo)
    res = submit(h, ["--config", fifo, "--out", tmp_path / "job", "--dry-run"], cwd=tmp_path)
    h.assert_one_line_error(res, str(fifo), "FIFO", "not a regular file")
    assert not (tmp_path / "job").exists()


def test_character_device_as_config(tmp_path: Path, h) -> None:
    res = submit(h, ["--config", "/dev/zero", "--out", tmp_path / "job", "--dry-run"], cwd=tmp_path)
    h.assert_one_line_error(res, "/dev/zero", "character device")
    assert not (tmp_path / "job").exists()


def test_oversized_config_is_refused(tmp_path: Path, h) -> None:
    cfg = tmp_path / "big.yaml"
    cfg.write_text(base_text(h) + "# " + "x" * (1 << 20) + "\n")
    res = submit(h, ["--config", cfg, "--out", tmp_path / "job", "--dry-run"], cwd=tmp_path)
    h.assert_one_line_error(res, str(cfg), "larger than 1024 KiB")


@pytest.mark.parametrize("args", [["--config", ""], ["--cluster", ""], ["--config", "."]])
def test_empty_or_directory_path_is_an_error(args: list[str], tmp_path: Path, h) -> None:
    res = submit(h, [*args, "--out", tmp_path / "job", "--dry-run"], cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    h.assert_one_line_error(res)
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize("key", ["name", "kind", "source"])
def test_set_of_a_derived_key_is_an_error(key: str, tmp_path: Path, h) -> None:
    res = submit(h, ["--set", f"{key}=x", "--out", tmp_path / "job", "--dry-run"], cwd=tmp_path)
    h.assert_one_line_error(res, key, "derived from the file name")
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("timeouts.shutdown", "true", "not a boolean"),
    ("hardware.gpus_per_node", "true", "not a boolean"),
    ("benchmark.benchmark_ratio", "false", "not a boolean"),
    ("worker_config.gen.tensor_parallel_size", "true", "not a boolean"),
    ("benchmark.concurrency_list", "true", "integers"),
    ("slurm.numa_bind", "1", "true or false"),
])
def test_booleans_and_numbers_are_not_interchangeable(key: str, value: str, needle: str, tmp_path: Path,
                                                      h) -> None:
    res = submit(h, ["--set", f"{key}={value}", "--out", tmp_path / "job", "--dry-run"], cwd=tmp_path)
    h.assert_one_line_error(res, key, needle)


@pytest.mark.parametrize(("key", "value"), [
    ("metadata.model_name", "a\x00b"), ("slurm.job_name", "a\nb"), ("metadata.benchmark_type", "a\x1b[31mb"),
    ("environment.model_path", "/m\r/x"), ("environment.worker_env_var", 'A="x\ny"'),
    ("worker_config.gen.served_model", "m\x07"),
])
def test_control_characters_are_rejected(key: str, value: str, tmp_path: Path, h) -> None:
    # the value arrives as a YAML double-quoted string (escapes), as a pasted config line would
    res = submit(h, ["--set", f"{key}={json.dumps(value)}", "--out", tmp_path / "job", "--dry-run"], cwd=tmp_path)
    h.assert_one_line_error(res, "control character")
    assert "\x1b" not in res.stderr and "\x00" not in res.stderr and "\x07" not in res.stderr


def config_with(h, tmp_path: Path, key: str, value: object) -> Path:
    """The mocker config with dotted ``key`` set to ``value``, written to a file (a 200 KB value is
    longer than one command-line argument may be)."""
    raw = yaml.safe_load(base_text(h))
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    cfg = tmp_path / "mocker-ctx1-gen1.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    return cfg


@pytest.mark.parametrize("key", ["slurm.job_time", "metadata.backend", "benchmark.concurrency_list",
                                 "hardware.gpus_per_node", "slurm.extra_args"])
def test_a_200kb_bad_value_is_cut_to_an_excerpt(key: str, tmp_path: Path, h) -> None:
    value = "9a'" * 70_001  # an odd number of quotes: extra_args cannot be split either
    cfg = config_with(h, tmp_path, key, value)
    res = submit(h, ["--config", cfg, "--out", tmp_path / "job", "--dry-run"], cwd=tmp_path)
    h.assert_one_line_error(res, key)
    assert len(res.stderr) < 1000, len(res.stderr)


def test_a_200kb_free_text_value_is_redacted_quickly(tmp_path: Path, h) -> None:
    value = "a." * 100_000
    cfg = config_with(h, tmp_path, "metadata.benchmark_type", value)
    res = submit(h, ["--config", cfg, "--out", tmp_path / "job", "--dry-run"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[:500]
    assert yaml.safe_load((tmp_path / "job/config.resolved.yaml").read_text())["metadata"]["benchmark_type"] == value


PATHOLOGICAL = ["x" * 200_000, "a." * 100_000, "a_" * 100_000, 'A_KEY="' * 30_000, " " * 200_000 + "x",
                "https://" * 30_000, '"a":' * 50_000, "PASS_" * 40_000, "hf_" * 60_000, "a:" * 100_000,
                "-" * 200_000 + "=", "\n" * 200_000]


@pytest.mark.parametrize("text", PATHOLOGICAL, ids=lambda t: repr(t[:6]))
def test_redact_does_not_backtrack(text: str, tmp_path: Path) -> None:
    # 200 KB lines; the quadratic patterns took minutes on these. In a subprocess: a regex holds the GIL,
    # so only a process bound stops a regression from hanging the suite
    src = tmp_path / "line.txt"
    src.write_text(text)
    code = ("import sys; from perfsanity.common.redact import redact; text = open(sys.argv[1]).read(); "
            "sys.stdout.write(redact(text))")
    proc = subprocess.run([sys.executable, "-c", code, str(src)], cwd=REPO, capture_output=True, text=True,
                          timeout=CASE_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    assert 0 < len(proc.stdout) <= len(text) + 3


def test_term_trap_triage_of_pathological_logs_is_bounded(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for i, text in enumerate(PATHOLOGICAL):
        (logs / f"GEN_{i}.log").write_text(("ok line\n" * 1000) + text[:36_000] + "\nDB_PASSWORD=" + DBPASS + "\n")
    proc = subprocess.run([sys.executable, "-m", "perfsanity.run.triage", "--job-dir", str(tmp_path),
                           "--reason", "SIGTERM"], capture_output=True, text=True, timeout=5, check=False,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.json").read_text()
    assert DBPASS not in report and DBPASS not in proc.stdout
    assert json.loads(report)["reason"] == "SIGTERM"


def test_no_secret_lands_in_the_job_dir(tmp_path: Path, h) -> None:
    cfg = tmp_path / "secret.yaml"
    text = base_text(h).replace("  worker_env_var: DYN_LOG=info",
                                f"  worker_env_var: DYN_LOG=info PGPASS={PGPASS} GH=${{GH_TOKEN}}")
    cfg.write_text(text + f"gate:\n  note: 'token {GHP}'\n")
    env = h.cli_env(BUILD_URL=f"https://bot:{BUILD_PASS}@ci.example/job/7/")
    out = tmp_path / "job"
    res = submit(h, ["--config", cfg, "--out", out, "--dry-run",
                     "--set", f"environment.server_env_var=HF_TOKEN={HF} DB_PASSWORD={DBPASS}",
                     "--set", f"benchmark.dataset_file=/d?api_key={SK}"], cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    names = {p.relative_to(out).as_posix() for p in files}
    assert {"launch.sh", "config.resolved.yaml", "job.json", "job_meta.json"} <= names
    assert any(n.startswith("config/") for n in names), names  # the effective config copy (--set)
    for path in files:
        body = path.read_text()
        for secret in SECRETS:
            assert secret not in body, f"{secret} in {path}"
    assert MASK in (out / "config.resolved.yaml").read_text()
    assert json.loads((out / "job_meta.json").read_text())["build_url"] == "https://ci.example/job/7/"
    # a reference to the environment is how a secret reaches the roles: it stays
    assert "GH=${GH_TOKEN}" in next(p for p in files if p.parts[-4] == "config").read_text()
    assert HF not in res.stdout + res.stderr


def test_a_failing_write_leaves_nothing(tmp_path: Path) -> None:
    job = tmp_path / "a/b/job"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    files = {job / "launch.sh": ("#!/bin/bash\n", 0o755), job / "config/x.yaml": ("a: 1\n", None),
             blocker / "launch.sh": ("cannot be written under a regular file\n", 0o755)}
    with pytest.raises(PerfsanityError, match="cannot write the job directory"):
        write_job_dir(job, files, subdirs=("logs",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_failing_write_into_an_existing_dir_removes_only_its_files(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "keep.txt").write_text("mine")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    files = {job / "launch.sh": ("#!/bin/bash\n", 0o755), blocker / "l.sh": ("x\n", None)}
    with pytest.raises(PerfsanityError):
        write_job_dir(job, files, subdirs=("logs",))
    assert sorted(p.name for p in job.iterdir()) == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_written_job_dir_is_complete(tmp_path: Path) -> None:
    job = tmp_path / "job"
    write_job_dir(job, {job / "launch.sh": ("#!/bin/bash\n", 0o755), job / "c/d.yaml": ("a: 1\n", None)},
                  subdirs=("logs",))
    assert sorted(p.relative_to(job).as_posix() for p in job.rglob("*")) == ["c", "c/d.yaml", "launch.sh", "logs"]
    assert os.stat(job / "launch.sh").st_mode & 0o777 == 0o755
    assert not [p for p in tmp_path.iterdir() if p.name != "job"]


def test_a_child_dies_with_its_killed_parent(tmp_path: Path) -> None:
    # a parent that starts a long child through ManagedProcess, then is killed -9: the child must not
    # carry on headless (PR_SET_PDEATHSIG)
    code = ("import sys, time; from pathlib import Path; from perfsanity.common.processes import ManagedProcess; "
            "p = ManagedProcess('child', [sys.executable, '-c', 'import time; time.sleep(120)'], env={}, "
            f"log_path=Path({str(tmp_path / 'child.log')!r})); print(p.pid, flush=True); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        child = int(parent.stdout.readline())
        assert psutil.pid_exists(child)
        parent.kill()
        parent.wait(timeout=10)
        try:
            psutil.Process(child).wait(timeout=5)
        except psutil.NoSuchProcess:
            pass
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    finally:
        if parent.poll() is None:
            parent.kill()
        if child and psutil.pid_exists(child):  # ours: never leave it to outlive the test
            with contextlib.suppress(psutil.Error):
                psutil.Process(child).kill()
        parent.stdout.close()
