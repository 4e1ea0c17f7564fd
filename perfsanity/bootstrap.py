"""The harness's own venv, made on first use (stdlib only: runs before any dependency exists).

``submit.py``, ``scripts/test``, the Jenkins scripts and the per-node install step call this first.
It keeps a project venv (``.venv`` in the repository, or ``$PERFSANITY_VENV``) in sync with
``uv.lock``:

1. ``uv`` itself, pinned, lives in a venv this module creates under ``~/.cache/perfsanity``
   (``$PERFSANITY_HOME``): ``python3 -m venv`` then that venv's own pip installs ``uv==UV_VERSION``.
2. ``uv sync --frozen`` installs the locked dependencies (plus the groups asked for, e.g. ``test``)
   into the project venv. A stamp in the venv records the lock's hash and the groups; a second run
   with the same lock finds the stamp and does nothing.
3. Bytecode: uv compiles the venv's packages at sync (``--compile-bytecode``), and
   :func:`compile_sources` compiles the repository's own ``perfsanity/`` and ``tests/`` (stale files
   only; the per-node install step and ``scripts/test`` call it too). Without them every process
   compiles every module it imports from source when ``PYTHONDONTWRITEBYTECODE`` is set (as on
   CI runners and many clusters): seconds per role, every job.
4. :func:`reexec` replaces the current process with the same command under the venv's interpreter
   when it runs under any other interpreter.

Nothing is ever installed into an interpreter this module did not create: every install command
runs a venv's own interpreter or ``uv`` with the project venv as its target
(:func:`install_commands` lists them; a test checks their targets). Concurrent callers wait on a
lock (bounded); every step has a timeout and says what it waited for.

CLI: ``python3 perfsanity/bootstrap.py [--group G]... [--compile-sources] [--print-python]``.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = REPO_ROOT / "uv.lock"
UV_VERSION = "0.13.9"
EXTRAS = ("changepoint",)  # always synced: the gate's change-point detection
STEP_TIMEOUT_S = 900.0
STAMP_NAME = ".perfsanity-sync"
STAMP_BYTECODE = "bytecode=1"  # venvs synced before --compile-bytecode lack it and are synced once more
SOURCE_DIRS = ("perfsanity", "tests")


class BootstrapError(Exception):
    """Set-up failed; the message says which step and where its log is."""


def _log(msg: str) -> None:
    print(f"[perfsanity] {msg}", file=sys.stderr, flush=True)


def perfsanity_home() -> Path:
    """Per-user cache root (same rule as perfsanity.engines.tooling): ``$PERFSANITY_HOME`` or ~/.cache/perfsanity."""
    raw = os.environ.get("PERFSANITY_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "perfsanity"


def venv_dir() -> Path:
    """The project venv: ``$PERFSANITY_VENV`` or ``<repo>/.venv``."""
    raw = os.environ.get("PERFSANITY_VENV")
    return Path(raw).expanduser().absolute() if raw else REPO_ROOT / ".venv"


def venv_python(venv: Path | None = None) -> Path:
    return (venv or venv_dir()) / "bin" / "python"


def uv_venv() -> Path:
    return perfsanity_home() / f"uv-{UV_VERSION}"


def in_venv(venv: Path | None = None) -> bool:
    """Whether this interpreter is the one of ``venv`` (the project venv by default)."""
    target = venv or venv_dir()
    try:
        return Path(sys.prefix).resolve() == target.resolve()
    except OSError:
        return False


def _stamp(groups: Sequence[str]) -> str:
    digest = hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()
    return f"{digest} extras={','.join(EXTRAS)} {STAMP_BYTECODE} groups={','.join(sorted(set(groups)))}\n"


def _stamp_satisfied(venv: Path, groups: Sequence[str]) -> bool:
    """True when ``venv`` was synced from this lock with at least ``groups``."""
    path = venv / STAMP_NAME
    if not path.is_file() or not venv_python(venv).exists():
        return False
    text = path.read_text()
    want = _stamp(groups)
    have_digest, _, have_rest = text.partition(" ")
    want_digest, _, _ = want.partition(" ")
    if have_digest != want_digest or STAMP_BYTECODE not in have_rest.split():
        return False
    have_groups = set(have_rest.strip().rpartition("groups=")[2].split(",")) - {""}
    return set(groups) <= have_groups


def install_commands(groups: Sequence[str] = ()) -> list[tuple[list[str], dict[str, str]]]:
    """Every command the bootstrap may run, with the environment overrides it adds.

    Each one either creates a venv (``python -m venv DIR``), runs a venv's own pip, or runs uv with
    ``UV_PROJECT_ENVIRONMENT`` naming the project venv: none targets the running interpreter.
    """
    uv_dir = uv_venv()
    venv = venv_dir()
    sync = [str(uv_dir / "bin" / "uv"), "sync", "--frozen", "--no-install-project", "--compile-bytecode",
            "--project", str(REPO_ROOT), "--python", _base_python()]
    for extra in EXTRAS:
        sync += ["--extra", extra]
    for group in sorted(set(groups)):
        sync += ["--group", group]
    return [
        ([_base_python(), "-m", "venv", str(uv_dir)], {}),
        ([str(uv_dir / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
          f"uv=={UV_VERSION}"], {}),
        # the platform's CA store, as pip uses it (hosts behind a TLS-inspecting proxy need it)
        (sync, {"UV_PROJECT_ENVIRONMENT": str(venv), "UV_SYSTEM_CERTS": os.environ.get("UV_SYSTEM_CERTS", "1")}),
    ]


def _base_python() -> str:
    """The interpreter venvs are made from: the base of the running one (never a venv's)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return str(base) if Path(base).exists() else sys.executable


@contextlib.contextmanager
def _locked(path: Path, what: str, timeout_s: float) -> Iterator[None]:
    """Exclusive cross-process lock on ``path`` (fcntl), waiting at most ``timeout_s``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        deadline = time.monotonic() + timeout_s
        said = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BootstrapError(f"waited {timeout_s:.0f}s for another process setting up {what} "
                                         f"(lock {path})") from None
                if not said:
                    _log(f"waiting for another process setting up {what} (lock {path}, at most {timeout_s:.0f}s)")
                    said = True
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(argv: list[str], env_add: dict[str, str], what: str, log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **env_add}
    # the child must not see this interpreter's venv as "active"
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONHOME", None)
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=STEP_TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise BootstrapError(f"{what} did not finish within {STEP_TIMEOUT_S:.0f}s; log {log}") from None
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise BootstrapError(f"{what} failed (exit {proc.returncode}); log {log}\n{tail}")


def ensure_uv() -> Path:
    """The pinned uv, installed into a venv of its own on first use."""
    uv_dir = uv_venv()
    uv = uv_dir / "bin" / "uv"
    if uv.exists():
        return uv
    make_venv, pip_uv, _ = install_commands()
    with _locked(uv_dir.with_name(uv_dir.name + ".lock"), f"uv {UV_VERSION}", STEP_TIMEOUT_S):
        if uv.exists():
            return uv
        _log(f"first use: installing uv {UV_VERSION} into {uv_dir}")
        shutil.rmtree(uv_dir, ignore_errors=True)
        log = uv_dir.with_name(uv_dir.name + "-install.log")
        _run(*make_venv, what=f"python -m venv {uv_dir}", log=log)
        _run(*pip_uv, what=f"pip install uv=={UV_VERSION}", log=log)
    return uv


def ensure_venv(groups: Sequence[str] = ()) -> Path:
    """Sync the project venv with uv.lock (plus ``groups``); return its interpreter."""
    venv = venv_dir()
    if _stamp_satisfied(venv, groups):
        return venv_python(venv)
    if not LOCK_FILE.is_file():
        raise BootstrapError(f"{LOCK_FILE}: missing (the lock of the harness's dependencies)")
    ensure_uv()
    key = hashlib.sha256(str(venv).encode()).hexdigest()[:16]
    lock = perfsanity_home() / "locks" / f"venv-{key}.lock"
    with _locked(lock, f"the project venv {venv}", STEP_TIMEOUT_S):
        if _stamp_satisfied(venv, groups):
            return venv_python(venv)
        previous = (venv / STAMP_NAME).read_text().rpartition("groups=")[2].strip() if (venv / STAMP_NAME).is_file() else ""
        all_groups = sorted(set(groups) | (set(previous.split(",")) - {""}))
        what = "harness dependencies" + (f" (+ {', '.join(all_groups)})" if all_groups else "")
        _log(f"installing {what} from {LOCK_FILE.name} into {venv} (first use)")
        t0 = time.monotonic()
        *_, sync = install_commands(all_groups)
        _run(*sync, what=f"uv sync into {venv}", log=perfsanity_home() / "logs" / f"venv-sync-{key}.log")
        compile_sources()
        (venv / STAMP_NAME).write_text(_stamp(all_groups))
        _log(f"{venv} ready ({time.monotonic() - t0:.0f}s)")
    return venv_python(venv)


def compile_sources(root: Path = REPO_ROOT) -> bool:
    """Compile the repository's own modules to ``__pycache__`` where the bytecode is missing or stale
    (explicit writes, so ``PYTHONDONTWRITEBYTECODE`` does not stop them); True when all compiled.
    A read-only checkout is no error: imports then compile in memory, as before."""
    ok = True
    for name in SOURCE_DIRS:
        if (root / name).is_dir():
            with contextlib.redirect_stdout(None):
                ok = compileall.compile_dir(str(root / name), quiet=2, workers=0) and ok
    return bool(ok)


def reexec(groups: Sequence[str] = ()) -> None:
    """Run this process's command under the project venv's interpreter (set it up first if needed).

    Returns only when already running in the project venv (after syncing it if the lock changed).
    """
    try:
        python = ensure_venv(groups)
    except BootstrapError as exc:
        print(f"error: setting up the harness venv: {exc}", file=sys.stderr)
        sys.exit(2)
    if in_venv():
        return
    # child processes that run `python3` (launch.sh under sbatch --export=ALL, srun steps) get this venv too
    os.environ["PATH"] = f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["VIRTUAL_ENV"] = str(python.parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:  # python -m NAME: run the module again, not its file
        argv = [str(python), "-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]]
    else:
        argv = [str(python), *sys.argv]
    os.execv(str(python), argv)


def reexec_from_checkout() -> None:
    """:func:`reexec` when this package runs from a checkout (it has uv.lock); else nothing (pip-installed)."""
    if LOCK_FILE.is_file():
        reexec()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 perfsanity/bootstrap.py", description=__doc__.splitlines()[0])
    p.add_argument("--group", action="append", default=[], help="also install this dependency group (e.g. test)")
    p.add_argument("--print-python", action="store_true", help="print the venv's interpreter path")
    p.add_argument("--compile-sources", action="store_true",
                   help="also compile the repository's perfsanity/ and tests/ to bytecode (stale files only)")
    args = p.parse_args(argv)
    try:
        python = ensure_venv(args.group)
    except BootstrapError as exc:
        print(f"error: setting up the harness venv: {exc}", file=sys.stderr)
        return 2
    if args.compile_sources:
        compile_sources()
    if args.print_python:
        print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
