"""The backend interface: what role code asks an engine backend for.

A backend turns a validated config plus a role's place in the job into a :class:`ServerSpec` — the
argv, the extra environment and the engine config files of one server process. It does no I/O
itself (role code writes the files and starts the process), so every backend is golden-testable.

Ports: a backend passes port 0 wherever its engine can bind an ephemeral port; the role then finds
the real port among the process tree's listening sockets (``perfsanity.common.ports``) by probing
``health_path``. Where an engine must be told a port in advance (SGLang's dist-init and bootstrap
ports), the argv names an env var (``${PERFSANITY_...}``) listed in ``ServerSpec.node_ports``; the
role picks a free port on the server's node just before the start and publishes it, so no port is
fixed in a generated file and two jobs on the same nodes do not share one.

Capabilities: everything code outside ``perfsanity.engines`` may ask a backend (ranks per GPU, whether
it needs GPUs, job services, discovery, the served model name, a default model, the tools to install,
the submit-time validation of engine keys)
is a declared member of :class:`Backend`, with its default in :class:`BackendBase`; nothing outside
this package checks a backend's name or probes for optional attributes.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Protocol

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
    #: file the engine writes ``host:port`` to once it has bound (trtllm-serve ``--report_addr``); read
    #: before the listening-socket scan when ``port`` is 0
    addr_file: str | None = None
    #: env var -> n: before the start the role sets VAR to the first of n consecutive ports free on the
    #: server's first node (engines that must be told a port in advance and cannot bind port 0), and
    #: publishes it in the rendezvous as ``<ROLE>.<VAR>``; every rank of the server gets the same one
    node_ports: Mapping[str, int] = field(default_factory=dict)
    #: env var -> rendezvous value (another role's ``<ROLE>.<VAR>`` node port) the role waits for and sets
    peer_values: Mapping[str, str] = field(default_factory=dict)

    def published_ports(self) -> list[int]:
        """The port in :attr:`addr_file` once the engine wrote it (``host:port``, IPv6 in brackets), else []."""
        if not self.addr_file:
            return []
        try:
            text = Path(self.addr_file).read_text().strip()
        except OSError:
            return []
        port = text.rsplit(":", 1)[-1]
        return [int(port)] if ":" in text and port.isdigit() and int(port) > 0 else []


class Backend(Protocol):
    """One engine family. Implementations are module-level ``BACKEND`` objects, instances of a
    :class:`BackendBase` subclass (which holds the default of every capability below).

    Role, install, launch and test-case code ask these members instead of checking backend names,
    so adding a backend touches only its module and the registry line in :mod:`perfsanity.engines`.
    """

    #: the ``metadata.backend`` value (a key of the registry and of ``perfsanity.spec.config.Backend``)
    name: str
    #: names of perfsanity.engines.tooling envs this backend needs installed on each node (GPU engines: none,
    #: the container provides them)
    tools: tuple[str, ...]
    #: srun tasks per server: True = one MPI rank per GPU (TensorRT-LLM), False = one task per node
    ranks_per_gpu: bool
    #: False = runs on a machine without GPUs (the CPU stand-in); its test cases run locally
    needs_gpu: bool
    #: True = the router is started with the workers' published addresses (it waits for them);
    #: False = it finds the workers itself (file discovery) and starts with them
    router_needs_worker_addresses: bool
    #: True = it brings its own model when ``environment.model_path`` is empty (see default_model_path)
    has_default_model: bool
    #: job service name -> env var: every server process gets ENV_VAR=<value the service published>, for
    #: each service :meth:`services` starts for the job's config
    service_env: Mapping[str, str]
    #: True = its processes follow ``config.infra`` (a per-job etcd / NATS, whose addresses they get as
    #: ETCD_ENDPOINTS / NATS_SERVER) and ``config.frontend`` (several routers behind nginx); False = both
    #: sections must keep their defaults (a submit-time error otherwise)
    uses_job_infra: bool
    #: (start path, stop path) the BENCHMARK POSTs to every worker's published address around each
    #: ``profiling.windows`` point (SGLang's /start_profile, /stop_profile); None = no such endpoints
    #: (``profiling.windows`` is then a submit-time error)
    profiler_endpoints: tuple[str, str] | None
    #: path on the router that lists the workers it has discovered ("" = the router is started with the
    #: workers' addresses, so it discovers nothing; readiness is then every publish + a 1-token completion)
    discovery_path: str

    def discovered_workers(self, body: bytes) -> Mapping[str, int]:
        """Worker kind (``ctx``/``gen``/``server``) -> instances the router lists in ``body``, its answer on
        :attr:`discovery_path`; raises ValueError when the answer is not in the expected form."""
        ...

    def services(self, host: str, config: Config) -> Mapping[str, ServerSpec]:
        """Job-wide service processes this config needs, started by DISAGG_SERVER before it waits for
        workers; the first line each prints is published in the rendezvous dir as the service's value."""
        ...

    def served_model_name(self, config: Config, model_path: str) -> str:
        """The model name clients send in requests."""
        ...

    def default_model_path(self) -> str | None:
        """The model/tokenizer dir used when ``environment.model_path`` is empty (None: it is required).
        May prepare the directory (the one capability that does I/O); called by roles and install."""
        ...

    def worker(self, ctx: WorkerContext) -> ServerSpec:
        """The ctx/gen (or aggregated ``server``) process of ``ctx.placement``."""
        ...

    def router(self, ctx: RouterContext) -> ServerSpec:
        """The disaggregated router (DISAGG_SERVER) in front of the workers."""
        ...

    def validate(self, config: Config, source: str | None) -> None:
        """Submit-time check of the engine keys and generated command lines against the engine facts
        shipped in the repo (:mod:`perfsanity.engines.facts`); raises ConfigError (exit 2) naming key,
        engine and release. Called once per config by :mod:`perfsanity.plan.prepare`, before sbatch."""
        ...


class BackendBase(ABC):
    """The defaults of every :class:`Backend` capability: a GPU engine, one task per node, no tools,
    no job services, a router that needs the workers' addresses, clients sending ``metadata.model_name``
    and a required ``environment.model_path``. A backend overrides only what differs."""

    name: ClassVar[str]
    tools: tuple[str, ...] = ()
    ranks_per_gpu: bool = False
    needs_gpu: bool = True
    router_needs_worker_addresses: bool = True
    has_default_model: bool = False
    service_env: Mapping[str, str] = MappingProxyType({})
    uses_job_infra: bool = False
    discovery_path: str = ""
    profiler_endpoints: tuple[str, str] | None = None

    def discovered_workers(self, body: bytes) -> Mapping[str, int]:
        return {}

    def services(self, host: str, config: Config) -> Mapping[str, ServerSpec]:
        return {}

    def served_model_name(self, config: Config, model_path: str) -> str:
        return config.metadata.model_name

    def default_model_path(self) -> str | None:
        return None

    def validate(self, config: Config, source: str | None) -> None:
        return None

    @abstractmethod
    def worker(self, ctx: WorkerContext) -> ServerSpec: ...

    @abstractmethod
    def router(self, ctx: RouterContext) -> ServerSpec: ...


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


#: the job-dir folder profiler outputs go to (nsys reports, torch traces)
PROFILES_DIR = "profiles"
#: SGLang's torch-profiler endpoints (python/sglang/srt/entrypoints/http_server.py; facts/profiling.yaml)
SGLANG_PROFILER_ENDPOINTS = ("/start_profile", "/stop_profile")


def nsys_prefix(config: Config, role: str, job_dir: Path) -> list[str]:
    """The ``nsys profile`` argv prefix that wraps a role's server when ``profiling.nsys_on`` is set
    (``[]`` otherwise): one report per rank under ``<job_dir>/profiles/``, since nsys itself expands
    ``%q{SLURM_PROCID}``; ``profiling.nsys_args`` are split as a shell would."""
    p = config.profiling
    if not p.nsys_on:
        return []
    out = job_dir / PROFILES_DIR / f"{role}.%q{{SLURM_PROCID}}"
    return ["nsys", "profile", "-o", str(out), "-f", "true", *shlex.split(p.nsys_args)]
