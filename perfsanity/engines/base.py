"""The backend interface: what role code asks an engine backend for.

A backend turns a validated config plus a role's place in the job into a :class:`ServerSpec` — the
argv, the extra environment and the engine config files of one server process. It does no I/O
itself (role code writes the files and starts the process), so every backend is golden-testable.

Ports: a backend passes port 0 wherever its engine can bind an ephemeral port; the role then finds
the real port among the process tree's listening sockets (``perfsanity.common.ports``) by probing
``health_path``. No port is ever probed-then-released.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from perfsanity.spec.config import Config
from perfsanity.spec.topology import Placement


@dataclass(frozen=True)
class Address:
    """A published server address (what ``<role>.addr`` holds)."""

    role: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class WorkerContext:
    """Everything a backend may use to build one worker's command."""

    config: Config
    placement: Placement  # role, kind (ctx | gen | server), GPUs, node indices
    host: str  # address the server must bind/advertise (127.0.0.1 locally, the node's address on SLURM)
    job_dir: Path
    model_path: str
    hostnames: tuple[str, ...] = ()  # hosts of this role's nodes, in order (multi-node servers)
    discovery_dir: Path | None = None  # shared dir for file-based discovery (Dynamo)


@dataclass(frozen=True)
class RouterContext:
    """Everything a backend may use to build the disaggregated router's command."""

    config: Config
    host: str
    job_dir: Path
    model_path: str
    ctx: tuple[Address, ...]
    gen: tuple[Address, ...]
    discovery_dir: Path | None = None


@dataclass(frozen=True)
class ServerSpec:
    """One server process to start."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # added to the role's environment
    files: Mapping[str, str] = field(default_factory=dict)  # job-dir-relative path -> content
    port: int = 0  # the port passed on argv; 0 = ephemeral, discovered after start
    health_path: str = "/health"  # GET that answers 200 once the HTTP server is up
    tool: str | None = None  # perfsanity.engines.tooling env the argv's interpreter comes from (None: PATH)


class Backend(Protocol):
    """One engine family. Implementations are module-level ``BACKEND`` objects."""

    name: str
    #: names of perfsanity.engines.tooling envs this backend needs installed on each node (GPU engines: none,
    #: the container provides them)
    tools: tuple[str, ...]

    def worker(self, ctx: WorkerContext) -> ServerSpec:
        """The ctx/gen (or aggregated ``server``) process of ``ctx.placement``."""
        ...

    def router(self, ctx: RouterContext) -> ServerSpec:
        """The disaggregated router (DISAGG_SERVER) in front of the workers."""
        ...

    # Optional, for backends that need job-wide helper processes (see dynamo_mocker):
    #   services(host) -> {name: ServerSpec}: started by DISAGG_SERVER before it waits for workers;
    #       the first line each prints is published in the rendezvous dir as the service's value.
    #   service_env: {name: ENV_VAR}: every server process gets ENV_VAR=<value of service name>.


def cli_flags(options: Mapping[str, object], *, skip: tuple[str, ...] = ()) -> list[str]:
    """Engine options → ``--key-with-dashes value`` flags (``True`` → bare flag, ``False``/``None`` → omitted).

    Lists repeat the value words after one flag (``--foo a b``); dicts are rendered as JSON.
    """
    import json

    out: list[str] = []
    for key, value in options.items():
        if key in skip or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out.append(flag)
            out.extend(str(v) for v in value)
        elif isinstance(value, dict):
            out += [flag, json.dumps(value, sort_keys=True)]
        else:
            out += [flag, str(value)]
    return out
