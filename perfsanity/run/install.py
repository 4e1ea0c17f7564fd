"""Per-node install step: the tools a job's backend and client need (each tool installs once; other
ranks wait on its lock, bounded), and the tiny offline model for the CPU stand-in."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from perfsanity.common.errors import PerfsanityError
from perfsanity.engines import get_backend
from perfsanity.spec.cluster import cluster_from_env_or_arg
from perfsanity.spec.config import load_config

CLIENT_TOOLS = {"aiperf": "aiperf"}


def tools_for(backend: str, client: str) -> list[str]:
    tools = list(get_backend(backend).tools)
    if client in CLIENT_TOOLS:
        tools.append(CLIENT_TOOLS[client])
    return tools


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perfsanity.run.install", description=__doc__)
    p.add_argument("--job-dir", type=Path, required=True)
    args = p.parse_args(argv)
    print(f"[install] job dir {args.job_dir}", flush=True)
    try:
        config = load_config(os.environ["PERFSANITY_CONFIG"], cluster=cluster_from_env_or_arg(None))
        from perfsanity.engines.tooling import ensure_tool

        for tool in tools_for(config.metadata.backend, config.benchmark.client):
            env = ensure_tool(tool)
            print(f"[install] {tool} {env.version}: {env.python}", flush=True)
        if config.metadata.backend == "dynamo-mocker" and not config.environment.model_path:
            from perfsanity.engines.model_assets import ensure_tiny_model

            print(f"[install] tiny model: {ensure_tiny_model()}", flush=True)
    except KeyError as exc:
        print(f"error: environment lacks {exc} (set by launch.sh)", file=sys.stderr)
        return 2
    except PerfsanityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
