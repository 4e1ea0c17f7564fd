"""Per-node install step: the tools a job's backend and client need (each tool installs once; other
ranks wait on its lock, bounded), and the backend's default model when the config names none (the tiny
offline model of the CPU stand-in). What to install is asked of the backend and the client
(``Backend.tools``, ``BenchmarkClient.tool``, ``Backend.default_model_path``), never derived from names."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from perfsanity.bootstrap import compile_sources
from perfsanity.common.errors import PerfsanityError
from perfsanity.engines import get_backend
from perfsanity.load import get_client, lm_eval
from perfsanity.run.job import client_name, resolve_argv
from perfsanity.run.wheels import install_wheels
from perfsanity.spec.cluster import cluster_from_env_or_arg
from perfsanity.spec.config import Config, load_config


def tools_for(backend: str, client: str, *, accuracy: bool = False) -> list[str]:
    """The tooling envs a job of ``backend`` benchmarked with ``client`` needs, in install order (with
    ``accuracy``: lm-eval's too, for the accuracy step)."""
    tools = list(get_backend(backend).tools)
    for tool in (get_client(client).tool, lm_eval.TOOL if accuracy else None):
        if tool is not None and tool not in tools:
            tools.append(tool)
    return tools


def job_tools(config: Config) -> list[str]:
    """The tooling envs a job of ``config`` needs (:func:`tools_for` of its backend, client and accuracy step)."""
    return tools_for(config.metadata.backend, client_name(config), accuracy=config.accuracy.enable_accuracy_test)


def ensure_tools(config: Config, say: Callable[[str], None]) -> None:
    """Make sure every env of :func:`job_tools` is ready (built on first use, each bounded by the tool
    install timeout); ``say`` gets one line per env."""
    from perfsanity.engines.tooling import ensure_tool

    for tool in job_tools(config):
        env = ensure_tool(tool)
        say(f"{tool} {env.version}: {env.python}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perfsanity.run.install", description=__doc__)
    p.add_argument("--job-dir", type=Path, required=True)
    args = p.parse_args(argv)
    print(f"[install] job dir {args.job_dir}", flush=True)
    # the roles' pytest, harness and dependency imports then read bytecode instead of compiling it
    if not compile_sources():
        print("[install] could not compile the harness's sources to bytecode (read-only checkout?): "
              "each role compiles them as it imports", flush=True)
    try:
        config = load_config(os.environ["PERFSANITY_CONFIG"], cluster=cluster_from_env_or_arg(None))
        ensure_tools(config, lambda line: print(f"[install] {line}", flush=True))
        if config.environment.wheels:
            backend_tools = get_backend(config.metadata.backend).tools
            python = resolve_argv(("python3",), backend_tools[0] if backend_tools else None)[0]
            install_wheels(config, args.job_dir, python)
        if not config.environment.model_path:
            default = get_backend(config.metadata.backend).default_model_path()
            if default is not None:
                print(f"[install] default model: {default}", flush=True)
    except KeyError as exc:
        print(f"error: environment lacks {exc} (set by launch.sh)", file=sys.stderr)
        return 2
    except PerfsanityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
