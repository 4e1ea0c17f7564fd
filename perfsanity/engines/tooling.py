"""Isolated, pinned virtual environments for the external tools the CPU stand-in runs.

Each tool (Dynamo's frontend + mocker, the aiperf load generator, lm-eval for the accuracy step) lives in its own venv under
``$PERFSANITY_HOME/venvs/<name>-<version>`` (default ``~/.cache/perfsanity``), so the tools never
share dependencies with each other or with the harness, and fresh clones of the repo reuse them.

* First use installs, printing ``[perfsanity] ...`` progress lines on stderr; pip's output goes to
  ``<venv>/perfsanity-install.log``.
* A cross-process lock (:mod:`filelock` on ``<venv>.lock``) makes concurrent callers install once;
  the others wait, bounded by ``PERFSANITY_INSTALL_TIMEOUT`` seconds (default 1200).
* A venv is trusted only once its ``.perfsanity-complete`` marker exists. The marker is written
  atomically after a smoke import succeeded; a venv without it is deleted and installed again.
* ``PERFSANITY_DYNAMO_PYTHON`` / ``PERFSANITY_AIPERF_PYTHON`` / ``PERFSANITY_LM_EVAL_PYTHON`` name an
  existing interpreter to use instead; nothing is installed then.

Engine-parser venvs (``sglang``, ``sglang-router``, ``dynamo-sglang``) hold only what importing the
engines' argument parsers needs; they are for tests/backends/test_engine_parsers.py and
perfsanity/engines/facts, never for serving (triton/torchvision there are parser-only stubs).

CLI: ``python -m perfsanity.engines.tooling install dynamo aiperf`` and ``python -m perfsanity.engines.tooling
python dynamo`` (prints the interpreter path).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import string
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from perfsanity.common.cliutil import run_main
from perfsanity.common.errors import PerfsanityError
from perfsanity.common.files import write_atomic
from perfsanity.common.ports import listening_sockets, pid_exists
from perfsanity.common.processes import tail

MARKER_NAME = ".perfsanity-complete"
STUB_TEMPLATE = Path(__file__).resolve().parent / "parser_stubs" / "inert_package.py"


@dataclass(frozen=True)
class ParserStub:
    """A parser-only stand-in for a package an import needs but argument parsing never runs: the
    module text is ``parser_stubs/inert_package.py`` filled in with these values."""

    version: str  # the __version__ importers may check
    why: str  # who imports it and why parsing needs none of it (the docstring's middle)

    def render(self, module: str) -> str:
        return string.Template(STUB_TEMPLATE.read_text()).substitute(module=module, version=self.version,
                                                                     why=self.why)


PARSER_STUBS: dict[str, ParserStub] = {
    "triton": ParserStub("3.8.0", "sglang imports triton at module level (kernels are decorated with "
                         "``@triton.jit`` at import time)\nbut building its argument parser runs no kernel."),
    "torchvision": ParserStub("0.28.0", "dynamo.sglang imports ``sglang.Engine``, whose multimodal processors "
                              "import torchvision at module level,\nbut building its argument parser runs no "
                              "kernel."),
    "datasets": ParserStub("4.0.0", "sglang.bench_serving imports Hugging Face ``datasets`` at module level (its "
                           "MMMU loader),\nbut building its argument parser loads no dataset."),
}
LOG_NAME = "perfsanity-install.log"
DEFAULT_INSTALL_TIMEOUT_S = 1200.0
PROGRESS_EVERY_S = 30.0


class ToolInstallError(PerfsanityError):
    """Installing or locating a tool failed; the message names the venv, the log and its tail."""

    exit_code = 5


@dataclass(frozen=True)
class ToolSpec:
    """How to install one tool: pip argument lists run in order, and a smoke-test import."""

    name: str
    version: str
    dist: str
    pip_steps: tuple[tuple[str, ...], ...]
    smoke_code: str
    expected_minutes: str
    #: parser-only stand-ins (names in PARSER_STUBS) written into site-packages after pip, for packages
    #: an import needs but argument parsing never runs
    stubs: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        """Hash of everything that defines the install; a changed spec forces a reinstall."""
        fields: list[object] = [self.name, self.version, self.pip_steps, self.smoke_code]
        if self.stubs:  # appended only when present: venvs without stubs keep their fingerprint
            fields.append([(mod, PARSER_STUBS[mod].render(mod)) for mod in self.stubs])
        payload = json.dumps(fields)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ai-dynamo 1.6.1 depends on aisimulate, whose PyPI release cannot be built offline and which only
# the planner/profiler import. So: the runtime + ai-dynamo's other dependencies, then ai-dynamo
# itself without dependencies.
_DYNAMO_DEPS = (
    "ai-dynamo-runtime==1.6.1",
    "aiohttp<4,>=3.14.3",
    "certifi>=2026.10.19",
    "kubernetes<33,>=32.0.1",
    "msgspec>=0.19",
    "prometheus-client<1,>=0.23.1",
    "pyzmq>=26",
    "redis<9,>=6.2",
    "tqdm>=4",
    "transformers==5.24.0",  # ai-dynamo allows >=4.56; pinned to the measured version because the
    "tokenizers==0.23.3",  # tiny model's files (perfsanity.engines.model_assets) are generated with them
    "typing-extensions>=4.10",
    "zstandard<1,>=0.23",
)

# Engine argument parsers (tests/backends/test_engine_parsers.py). Only what ``import`` of the parser
# module needs, measured by blocking one module at a time (docs/upstream/engine-args-facts.md §2.6,
# §4.1): sglang without its dependencies, a CPU torch wheel, and stubs for triton (~1 GB, imported at
# top level by sglang.srt.utils.common, never run by argparse) and torchvision (dynamo.sglang's
# import of sglang.Engine reaches it). Costs are in docs/upstream/engine-args-facts.md §6.
_TORCH_CPU = "torch==2.13.0+cpu"  # the CPU wheel; pip finds it via find-links / the PyTorch CPU index
_SGLANG_IMPORT_DEPS = (
    _TORCH_CPU, "numpy==2.4.6", "orjson==3.13.0", "psutil==7.2.2", "pybase64==1.5.1", "requests==2.34.2",
    "packaging==26.4", "pillow==13.0.0", "starlette==1.10.0", "msgspec==0.23.0",
    "pyzmq==27.3.0", "tqdm==4.70.1", "ipython==9.18.1", "aiohttp==3.14.5",
)
_DYNAMO_SGLANG_IMPORT_DEPS = (
    "PyYAML==6.0.4", "fastapi==0.165.0", "uvicorn==0.54.0", "openai==3.57.0", "uvloop==0.23.0",
    "sentencepiece==0.2.3", "gguf==0.19.0", "compressed-tensors==0.20.1", "einops==0.8.2",
    "setproctitle==1.3.8", "partial-json-parser==0.2.1.1.post7", "loguru==0.7.3", "networkx==3.6.1",
    "opentelemetry-api==1.45.2", "dill==0.4.1", "regex==2026.11.19", "safetensors==0.8.0",
)
_PARSER_STUBS = ("triton",)

TOOLS: dict[str, ToolSpec] = {
    "dynamo": ToolSpec(
        name="dynamo",
        version="1.6.1",
        dist="ai-dynamo",
        pip_steps=(_DYNAMO_DEPS, ("--no-deps", "ai-dynamo==1.6.1")),
        smoke_code="import dynamo.frontend, dynamo.mocker, tokenizers, transformers",
        expected_minutes="~1 min",
    ),
    "aiperf": ToolSpec(
        name="aiperf",
        version="0.13.0",
        dist="aiperf",
        pip_steps=(("aiperf==0.13.0",),),
        smoke_code="import aiperf.cli",
        expected_minutes="~1.5 min",
    ),
    # lm-eval's API model types (local-completions) need only its ``api`` extra; the base package has no
    # torch/transformers since 0.4.10. The tasks read a local json dataset (perfsanity/load/lm_eval.py).
    "lm-eval": ToolSpec(
        name="lm-eval",
        version="0.4.13",
        dist="lm-eval",
        pip_steps=(("lm-eval[api]==0.4.13",),),
        smoke_code="import lm_eval.evaluator, lm_eval.models.openai_completions, datasets",
        expected_minutes="~5.5 min",
    ),
    "sglang": ToolSpec(
        name="sglang",
        version="0.5.23",
        dist="sglang",
        pip_steps=((_TORCH_CPU,), (*_SGLANG_IMPORT_DEPS, "pydantic==2.14.4"), ("--no-deps", "sglang==0.5.23")),
        smoke_code="import sglang.srt.server_args",
        expected_minutes="~3 min",
        stubs=_PARSER_STUBS,
    ),
    "sglang-router": ToolSpec(
        name="sglang-router",
        version="0.3.2",
        dist="sglang-router",
        pip_steps=(("sglang-router==0.3.2",),),
        smoke_code="import sglang_router.launch_router",
        expected_minutes="~0.5 min",
    ),
    # dynamo.sglang with the sglang release ai-dynamo 1.6.1 pins (sglang[diffusion]==0.5.21)
    "dynamo-sglang": ToolSpec(
        name="dynamo-sglang",
        version="1.6.1",
        dist="ai-dynamo",
        # pydantic: ai-dynamo-runtime 1.6.1 requires <=2.13.5
        pip_steps=((_TORCH_CPU,), (*_SGLANG_IMPORT_DEPS, "pydantic==2.13.5", *_DYNAMO_SGLANG_IMPORT_DEPS,
                                   *_DYNAMO_DEPS),
                   ("--no-deps", "sglang==0.5.21", "ai-dynamo==1.6.1")),
        smoke_code="import dynamo.sglang.args, sglang.benchmark.datasets",
        expected_minutes="~4 min",
        # datasets: sglang.bench_serving (the sglang_bench client's parser) imports it at top level
        stubs=(*_PARSER_STUBS, "torchvision", "datasets"),
    ),
}


@dataclass(frozen=True)
class ToolEnv:
    """A ready interpreter for one tool."""

    name: str
    python: Path
    bin_dir: Path
    version: str

    def module_argv(self, module: str, *args: str) -> list[str]:
        """argv for ``python -m <module> <args>`` in this tool's interpreter."""
        return [str(self.python), "-m", module, *args]

    def script_argv(self, script: str, *args: str) -> list[str]:
        """argv for an installed entry-point script (e.g. ``aiperf``) of this tool."""
        path = self.bin_dir / script
        if not path.exists():
            raise ToolInstallError(f"{self.name}: no script {script!r} in {self.bin_dir}")
        return [str(path), *args]


def perfsanity_home() -> Path:
    """Root of the per-user cache: ``$PERFSANITY_HOME`` or ``~/.cache/perfsanity``."""
    raw = os.environ.get("PERFSANITY_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "perfsanity"


def override_var(name: str) -> str:
    """Name of the env var that points at a pre-existing interpreter for tool ``name``."""
    return f"PERFSANITY_{name.upper().replace('-', '_')}_PYTHON"  # lm-eval: PERFSANITY_LM_EVAL_PYTHON


def install_timeout() -> float:
    """Bound (seconds) for one install, and for waiting on another process's install."""
    raw = os.environ.get("PERFSANITY_INSTALL_TIMEOUT")
    return float(raw) if raw else DEFAULT_INSTALL_TIMEOUT_S


def venv_dir(spec: ToolSpec) -> Path:
    """Where the venv of ``spec`` lives."""
    return perfsanity_home() / "venvs" / f"{spec.name}-{spec.version}"


def _log(message: str) -> None:
    print(f"[perfsanity] {message}", file=sys.stderr, flush=True)


def _spec(name: str) -> ToolSpec:
    try:
        return TOOLS[name]
    except KeyError:
        raise ToolInstallError(f"unknown tool {name!r}; known: {', '.join(sorted(TOOLS))}") from None


def _env_for(venv: Path, spec: ToolSpec) -> ToolEnv:
    return ToolEnv(spec.name, venv / "bin" / "python", venv / "bin", spec.version)


def _is_complete(venv: Path, spec: ToolSpec) -> bool:
    """True when the marker exists, matches the spec and the interpreter is still there."""
    try:
        data = json.loads((venv / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    return data.get("fingerprint") == spec.fingerprint() and (venv / "bin" / "python").exists()


def _write_marker(venv: Path, spec: ToolSpec) -> None:
    data = {"name": spec.name, "version": spec.version, "fingerprint": spec.fingerprint(),
            "installed_at": time.time()}
    write_atomic(venv / MARKER_NAME, json.dumps(data))


@contextlib.contextmanager
def file_lock(lock_path: Path, what: str, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive cross-process lock (:mod:`filelock`) on ``lock_path``; wait at most ``timeout_s``.

    While held, the holder's pid is in ``<lock>.owner``, so a waiter can say whom it waits for.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    owner = lock_path.with_name(lock_path.name + ".owner")
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            holder = owner.read_text().strip() or "?"
        except OSError:
            holder = "?"
        _log(f"waiting for {what} by another process (pid {holder}, lock {lock_path})")
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout:
            raise ToolInstallError(
                f"gave up after {timeout_s:.0f}s waiting for lock {lock_path} "
                f"(held by another process doing: {what})") from None
    try:
        write_atomic(owner, f"{os.getpid()}\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()  # before the release, so it never removes the next holder's note
        lock.release()


def _tail(path: Path, lines: int = 30) -> str:
    """Last lines of an install log, secrets redacted (pip logs may carry index credentials)."""
    return tail(path, lines) or "(no log)"


def _run_logged(argv: Sequence[str], log: Path, deadline: float, label: str) -> None:
    """Run ``argv`` appending its output to ``log``; kill its process group at ``deadline``."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_bounded(proc, deadline, label, log)
    except BaseException:
        _kill_group(proc)  # also on Ctrl-C: never leave a pip behind
        raise
    if proc.returncode != 0:
        raise ToolInstallError(
            f"{label}: exit code {proc.returncode}; log {log}:\n{_tail(log)}")


def _wait_bounded(proc: subprocess.Popen[bytes], deadline: float, label: str, log: Path) -> None:
    """Wait for ``proc``, printing a progress line every 30 s; raise at ``deadline``."""
    started = time.monotonic()
    next_note = started + PROGRESS_EVERY_S
    while proc.poll() is None:
        now = time.monotonic()
        if now >= deadline:
            raise ToolInstallError(
                f"{label}: timed out after {now - started:.0f}s (PERFSANITY_INSTALL_TIMEOUT bounds "
                f"the whole install); log {log}:\n{_tail(log)}")
        if now >= next_note:
            _log(f"  ... {label}: still running ({now - started:.0f}s)")
            next_note = now + PROGRESS_EVERY_S
        time.sleep(0.2)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _create_venv(venv: Path, deadline: float) -> None:
    """``python -m venv`` with the harness interpreter (its base Python when run from a venv)."""
    argv = [sys.executable, "-m", "venv", str(venv)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired as exc:
        raise ToolInstallError(f"creating venv {venv} timed out") from exc
    if proc.returncode != 0:
        raise ToolInstallError(f"creating venv {venv} failed:\n{proc.stdout}{proc.stderr}")


def _install(spec: ToolSpec, venv: Path, timeout_s: float) -> None:
    """Create ``venv`` from scratch, pip-install ``spec``, smoke-test it, then mark it complete."""
    if venv.exists():
        _log(f"removing incomplete install {venv}")
        shutil.rmtree(venv)
    _log(f"installing {spec.name} {spec.version} into {venv} (first use, {spec.expected_minutes})")
    started = time.monotonic()
    deadline = started + timeout_s
    venv.parent.mkdir(parents=True, exist_ok=True)
    _create_venv(venv, deadline)
    log = venv / LOG_NAME
    python = str(venv / "bin" / "python")
    for number, step in enumerate(spec.pip_steps, start=1):
        label = f"pip install {spec.name} (step {number}/{len(spec.pip_steps)})"
        _log(f"  {label}; log {log}")
        _run_logged([python, "-m", "pip", "install", "--no-input", *step], log, deadline, label)
    _write_stubs(spec, python)
    _run_logged([python, "-c", spec.smoke_code], log, deadline, f"smoke import of {spec.name}")
    _write_marker(venv, spec)
    _log(f"installed {spec.name} {spec.version} in {time.monotonic() - started:.0f}s")


def _write_stubs(spec: ToolSpec, python: str) -> None:
    """Write ``spec.stubs`` into the venv's site-packages as ``<module>/__init__.py``."""
    if not spec.stubs:
        return
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60,
                             stdin=subprocess.DEVNULL).stdout.strip()
    for module in spec.stubs:
        _log(f"  stub {module} (parser-only) from {STUB_TEMPLATE}")
        write_atomic(Path(purelib) / module / "__init__.py", PARSER_STUBS[module].render(module))


def _external_env(spec: ToolSpec, python: Path) -> ToolEnv:
    """ToolEnv for an interpreter named by ``PERFSANITY_<NAME>_PYTHON``; checks it has the dist."""
    code = f"import importlib.metadata as m; print(m.version({spec.dist!r}))"
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                             timeout=60, check=True, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolInstallError(
            f"{override_var(spec.name)}={python}: cannot find {spec.dist} there ({exc})") from exc
    return ToolEnv(spec.name, python, python.parent, out.stdout.strip())


def installed_tool(name: str) -> ToolEnv | None:
    """The ready interpreter of tool ``name`` if it is installed (or overridden), else None; never installs."""
    spec = _spec(name)
    override = os.environ.get(override_var(name))
    if override:
        return _external_env(spec, Path(override).expanduser())
    venv = venv_dir(spec)
    return _env_for(venv, spec) if _is_complete(venv, spec) else None


def ensure_tool(name: str) -> ToolEnv:
    """Return a ready interpreter for tool ``name`` ("dynamo" or "aiperf"), installing on first use."""
    spec = _spec(name)
    override = os.environ.get(override_var(name))
    if override:
        return _external_env(spec, Path(override).expanduser())
    venv = venv_dir(spec)
    if _is_complete(venv, spec):
        return _env_for(venv, spec)
    timeout_s = install_timeout()
    lock = venv.with_name(venv.name + ".lock")
    # A waiter starts after the installer took the lock; a small margin covers the marker write.
    with file_lock(lock, f"install of {spec.name} {spec.version} into {venv}", timeout_s + 5):
        if not _is_complete(venv, spec):  # another process may have finished it meanwhile
            _install(spec, venv, timeout_s)
    return _env_for(venv, spec)


# --- helpers for running the tools -------------------------------------------------------------

# A ZMQ XSUB/XPUB forwarder for Dynamo's event plane in broker mode (DYN_ZMQ_BROKER_URL). In direct
# mode Dynamo binds every event publisher on the wildcard address (tcp://0.0.0.0:0, not
# configurable); in broker mode publishers and subscribers only connect, so nothing but this
# broker listens, on the host it is given. Both ports are OS-assigned; the first stdout line is
# the DYN_ZMQ_BROKER_URL value. Needs pyzmq: run it with the dynamo tool's interpreter.
def zmq_broker_argv(dynamo: ToolEnv, host: str = "127.0.0.1") -> list[str]:
    """argv of the event-plane broker; its first stdout line is the ``DYN_ZMQ_BROKER_URL``."""
    from perfsanity.engines import zmq_broker

    return [str(dynamo.python), zmq_broker.__file__, host]


def listening_tcp_ports(pid: int) -> list[tuple[str, int]]:
    """``(host, port)`` of every TCP socket in LISTEN state that process ``pid`` holds (Linux).

    Race-free way to learn OS-assigned ports (``--http-port 0``). Raises ``FileNotFoundError`` if
    ``pid`` is gone.
    """
    if not pid_exists(pid):
        raise FileNotFoundError(f"no process {pid}")
    return listening_sockets(pid, tree=False)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``install NAME...`` or ``python NAME``."""
    parser = argparse.ArgumentParser(prog="python -m perfsanity.engines.tooling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="install (or verify) tool venvs")
    install.add_argument("names", nargs="+", choices=sorted(TOOLS))
    where = sub.add_parser("python", help="print the interpreter path of a tool (installs first)")
    where.add_argument("name", choices=sorted(TOOLS))
    args = parser.parse_args(argv)

    def body() -> None:
        if args.command == "install":
            for tool in args.names:
                env = ensure_tool(tool)
                _log(f"{tool} {env.version} ready: {env.python}")
        else:
            print(ensure_tool(args.name).python)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
