"""perfsanity/bootstrap.py: the harness venv from uv.lock, never installing into a foreign interpreter.

* Every command the bootstrap can run targets a venv it creates (``python -m venv DIR``, that venv's
  own pip, ``uv sync`` with ``UV_PROJECT_ENVIRONMENT`` = the project venv), never the interpreter
  that runs it.
* For real (slow): a fresh ``$PERFSANITY_HOME`` and ``$PERFSANITY_VENV`` under tmp_path: the system
  interpreter's installed packages are unchanged, the venv is made once, a second call does nothing,
  and ``reexec`` runs a script under the venv's interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from perfsanity import bootstrap

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "perfsanity" / "bootstrap.py"


def _interpreters_not_to_touch() -> set[str]:
    found = {sys.executable, sys.prefix, sys.base_prefix, bootstrap._base_python()}
    return {str(Path(p).resolve()) for p in found}


def test_no_install_command_targets_the_running_or_base_interpreter(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFSANITY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PERFSANITY_VENV", str(tmp_path / "venv"))
    commands = bootstrap.install_commands(["test"])
    foreign = _interpreters_not_to_touch()
    kinds = []
    for argv, env in commands:
        if argv[1:3] == ["-m", "venv"]:
            # only creating a venv may use the base interpreter, and only in a directory of ours
            target = Path(argv[3])
            assert target == bootstrap.uv_venv() and str(target.resolve()) not in foreign
            kinds.append("venv")
        elif "pip" in argv:
            exe = Path(argv[0])
            assert exe.parent.parent == bootstrap.uv_venv(), argv  # that venv's own pip
            assert str(bootstrap.uv_venv().resolve()) not in foreign
            kinds.append("pip")
        else:
            assert Path(argv[0]) == bootstrap.uv_venv() / "bin" / "uv" and argv[1] == "sync", argv
            assert env["UV_PROJECT_ENVIRONMENT"] == str(tmp_path / "venv"), env
            assert "--frozen" in argv and argv[argv.index("--group") + 1] == "test"
            assert "--compile-bytecode" in argv  # the venv's packages are imported from bytecode
            kinds.append("uv sync")
    assert kinds == ["venv", "pip", "uv sync"]
    assert Path(sys.prefix).resolve() != (tmp_path / "venv").resolve()


def test_stamp_needs_the_same_lock_and_at_least_the_groups(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    assert not bootstrap._stamp_satisfied(venv, [])
    (venv / bootstrap.STAMP_NAME).write_text(bootstrap._stamp(["test"]))
    assert bootstrap._stamp_satisfied(venv, []) and bootstrap._stamp_satisfied(venv, ["test"])
    assert not bootstrap._stamp_satisfied(venv, ["dev"])
    (venv / bootstrap.STAMP_NAME).write_text("0" * 64 + " extras=changepoint groups=test\n")  # another lock
    assert not bootstrap._stamp_satisfied(venv, [])
    # the same lock, synced before the venv's packages were compiled to bytecode: synced once more
    digest = bootstrap._stamp([]).split()[0]
    (venv / bootstrap.STAMP_NAME).write_text(f"{digest} extras=changepoint groups=test\n")
    assert not bootstrap._stamp_satisfied(venv, [])


def test_compile_sources_writes_bytecode_despite_dontwritebytecode(tmp_path, monkeypatch):
    """The repository's modules get __pycache__ even where PYTHONDONTWRITEBYTECODE is set, so each job's
    roles import them without compiling; stale files are compiled again, fresh ones left alone."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    pkg = tmp_path / "perfsanity"
    pkg.mkdir()
    (pkg / "mod.py").write_text("X = 1\n")
    assert bootstrap.compile_sources(tmp_path)
    cached = list((pkg / "__pycache__").glob("mod.*.pyc"))
    assert len(cached) == 1
    first = cached[0].stat().st_mtime_ns
    assert bootstrap.compile_sources(tmp_path) and cached[0].stat().st_mtime_ns == first  # up to date: kept
    (pkg / "mod.py").write_text("X = 2  # changed\n")
    os.utime(pkg / "mod.py", ns=(first + 10**9, first + 10**9))
    assert bootstrap.compile_sources(tmp_path) and cached[0].stat().st_mtime_ns != first
    (pkg / "bad.py").write_text("def (:\n")
    assert not bootstrap.compile_sources(tmp_path)  # a syntax error is reported, not raised


def _system_packages(python: str) -> str:
    proc = subprocess.run([python, "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
                          capture_output=True, text=True, timeout=120, check=True)
    return proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bootstrap_makes_its_own_venv_once_and_reexecs_into_it(tmp_path):
    base = bootstrap._base_python()
    env = {**os.environ, "PERFSANITY_HOME": str(tmp_path / "home"), "PERFSANITY_VENV": str(tmp_path / "venv")}
    env.pop("VIRTUAL_ENV", None)
    before = _system_packages(base)

    first = subprocess.run([base, str(BOOTSTRAP), "--print-python"], env=env, capture_output=True, text=True,
                           timeout=840, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    python = Path(first.stdout.strip())
    assert python == tmp_path / "venv" / "bin" / "python"
    assert "installing uv" in first.stderr and "installing harness dependencies" in first.stderr
    assert (tmp_path / "home" / f"uv-{bootstrap.UV_VERSION}" / "bin" / "uv").is_file()
    assert _system_packages(base) == before  # nothing landed in the interpreter that ran it

    again = subprocess.run([base, str(BOOTSTRAP), "--print-python"], env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    assert (again.returncode, again.stdout.strip(), again.stderr) == (0, str(python), "")

    script = tmp_path / "where.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(REPO)!r})\nfrom perfsanity import bootstrap\n"
                      "bootstrap.reexec()\nimport yaml, pydantic, pytest, pytest_timeout, otava.analysis\nprint(sys.prefix)\n")
    run = subprocess.run([base, str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert Path(run.stdout.strip()).resolve() == (tmp_path / "venv").resolve()


def test_bad_lock_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFSANITY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PERFSANITY_VENV", str(tmp_path / "venv"))
    monkeypatch.setattr(bootstrap, "LOCK_FILE", tmp_path / "uv.lock")
    assert bootstrap.main(["--print-python"]) == 2
    assert not (tmp_path / "venv").exists() and not (tmp_path / "home").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_lock_file_matches_pyproject():
    """uv.lock is what pyproject.toml resolves to (``uv lock --check``, asks the index)."""
    uv = bootstrap.ensure_uv()
    proc = subprocess.run([str(uv), "lock", "--check", "--project", str(REPO)], capture_output=True, text=True,
                          timeout=240, check=False, env={**os.environ, "UV_SYSTEM_CERTS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
