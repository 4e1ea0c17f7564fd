"""A role's view of its job (:class:`Job`), built from the environment launch.sh exports, and the
few facts every role asks of it: where it runs, its model, and the interpreter of a tool argv.

Shared by the servers (:mod:`perfsanity.run.roles`) and the client (:mod:`perfsanity.run.benchmark`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from perfsanity.common.errors import PerfsanityError
from perfsanity.common.files import write_atomic
from perfsanity.engines import get_backend
from perfsanity.engines.base import Backend
from perfsanity.load import default_client
from perfsanity.run.context import SlurmContext
from perfsanity.run.rendezvous import Rendezvous
from perfsanity.spec.cluster import cluster_from_env_or_arg
from perfsanity.spec.config import Config, load_config
from perfsanity.spec.testlist import parse_test_id
from perfsanity.spec.topology import Topology, build_topology


@dataclass(frozen=True)
class Job:
    """A role's view of its job, built from the environment launch.sh exports."""

    config: Config
    topology: Topology
    job_dir: Path
    role: str
    environ: Mapping[str, str]
    slurm: SlurmContext | None

    @property
    def rendezvous(self) -> Rendezvous:
        return Rendezvous(self.job_dir / "rendezvous")

    @property
    def host(self) -> str:
        """Address servers bind and advertise: $PERFSANITY_HOST, else 127.0.0.1 outside SLURM, else
        this node's address."""
        if self.environ.get("PERFSANITY_HOST"):
            return self.environ["PERFSANITY_HOST"]
        if self.slurm is None:
            return "127.0.0.1"
        return socket.gethostbyname(socket.gethostname())

    @property
    def rank(self) -> int:
        return self.slurm.procid if self.slurm and self.slurm.procid is not None else 0

    def log(self, message: str) -> None:
        print(f"[{self.role} {time.strftime('%H:%M:%S')}] {message}", flush=True)

    @property
    def discovery_dir(self) -> Path:
        return self.job_dir / "discovery"

    @property
    def backend(self) -> Backend:
        """The engine backend of ``metadata.backend`` (its capabilities drive the role code)."""
        return get_backend(self.config.metadata.backend)


def job_from_env(environ: Mapping[str, str]) -> Job:
    """Build the Job of the role named by ``DISAGG_SERVING_TYPE``."""
    role = environ.get("DISAGG_SERVING_TYPE", "")
    missing = [k for k in ("PERFSANITY_JOB_DIR", "PERFSANITY_CONFIG", "PERFSANITY_TEST_ID") if not environ.get(k)]
    if missing:
        raise PerfsanityError(f"role {role or '?'}: environment lacks {', '.join(missing)} (set by launch.sh)")
    sel = parse_test_id(environ["PERFSANITY_TEST_ID"])
    cluster = cluster_from_env_or_arg(None, environ)
    overrides = {"benchmark.mode": sel.mode} if sel.mode else None
    config = load_config(environ["PERFSANITY_CONFIG"], cluster=cluster, overrides=overrides)
    topology = build_topology(config)
    names = [p.role for p in topology.roles]
    if role not in names:
        raise PerfsanityError(f"DISAGG_SERVING_TYPE={role!r} is not a role of this job ({', '.join(names)})")
    return Job(config, topology, Path(environ["PERFSANITY_JOB_DIR"]), role, environ,
               SlurmContext.from_env(environ))


def record_start(job: Job) -> None:
    """``rendezvous/<ROLE>.<rank>.started``: where this role runs (tests and triage check placement)."""
    data = {
        "role": job.role,
        "rank": job.rank,
        "node": job.slurm.node_name if job.slurm else "local",
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": job.slurm.job_id if job.slurm else None,
        "slurm_step_id": job.slurm.step_id if job.slurm else None,
        "time": time.time(),
    }
    write_atomic(job.job_dir / "rendezvous" / f"{job.role}.{job.rank}.started", json.dumps(data) + "\n")


def resolve_argv(argv: tuple[str, ...], tool: str | None) -> list[str]:
    """Point ``python3 -m …`` / entry-point argv at the interpreter of a perfsanity.engines.tooling env."""
    if tool is None:
        return list(argv)
    from perfsanity.engines.tooling import ensure_tool

    env = ensure_tool(tool)
    if argv and argv[0] in ("python", "python3"):
        return [str(env.python), *argv[1:]]
    candidate = env.bin_dir / argv[0]
    return [str(candidate), *argv[1:]] if candidate.exists() else list(argv)



def model_path(job: Job) -> str:
    """The model/tokenizer dir: ``environment.model_path``, or the backend's default model (the tiny
    offline model for the mocker); an error for backends without one."""
    if job.config.environment.model_path:
        return job.config.environment.model_path
    default = job.backend.default_model_path()
    if default is not None:
        return default
    raise PerfsanityError(f"{job.config.source}: environment.model_path is required for backend "
                          f"{job.config.metadata.backend}")


def client_name(config: Config) -> str:
    """``benchmark.client``, or its default: the lean built-in client (``perfsanity``, ~0.1 s start-up)
    where the backend needs no GPU (the CPU lanes) and no dataset file is given; aiperf otherwise."""
    bench = config.benchmark
    if bench.client is not None:
        return bench.client
    return default_client(needs_gpu=get_backend(config.metadata.backend).needs_gpu, has_dataset=bool(bench.dataset_file),
                          benchmark_type=bench.type)


def client_model_name(job: Job) -> str:
    return job.backend.served_model_name(job.config, model_path(job))
