"""The roles of a perf job, one function each: workers (``GEN_i``/``CTX_i``/``SERVER_i``), the
disaggregated router (``DISAGG_SERVER``) and the client (``BENCHMARK``).

Every role runs the same way on SLURM (one srun step each) and locally (one process each); it learns
who it is from ``DISAGG_SERVING_TYPE`` and everything else from the ``PERFSANITY_*`` variables that
launch.sh exports (see :func:`perfsanity.plan.launch.job_exports`).

Coordination is by files in the job's rendezvous dir (:mod:`perfsanity.run.rendezvous`); every wait is
bounded by the config's ``timeouts`` and aborts at once when another role reports a failure.

What differs between engines (job services, whether the router waits for worker addresses, the
served model name, a default model) is asked of the backend's declared capabilities
(:class:`perfsanity.engines.base.Backend`), never derived from its name.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from perfsanity.common.errors import PerfsanityError, RoleFailed, WaitTimeout
from perfsanity.common.files import write_atomic
from perfsanity.common.ports import free_port_block, listening_ports
from perfsanity.common.processes import ManagedProcess, ProcessSet, TermAsInterrupt
from perfsanity.common.waits import Deadline, wait_until
from perfsanity.engines.base import Address, RouterContext, ServerSpec, WorkerContext
from perfsanity.run.job import Job, job_from_env, model_path, record_start, resolve_argv
from perfsanity.run.monitors import NodeMonitor, monitored_by
from perfsanity.run.services import infra_env, start_infra, start_nginx
from perfsanity.run.wheels import pythonpath
from perfsanity.spec import envvars
from perfsanity.spec.config import Config
from perfsanity.spec.topology import Placement

WORKER_KINDS = ("gen", "ctx", "server")


def run_role(job: Job) -> None:
    """Run ``job.role`` to completion; raise a PerfsanityError (with log tail) on failure."""
    placement = job.topology.role(job.role)
    job.rendezvous.path.mkdir(parents=True, exist_ok=True)
    record_start(job)
    with TermAsInterrupt():
        if placement.kind in WORKER_KINDS:
            run_worker(job, placement)
        elif placement.kind == "router":
            run_router(job)
        else:
            from perfsanity.run.benchmark import run_benchmark

            run_benchmark(job)


# ---------------------------------------------------------------------------------------
# servers (workers and router share the start / discover / publish / watch cycle)
# ---------------------------------------------------------------------------------------


def role_env_layers(config: Config, kind: str) -> tuple[envvars.EnvAssignment, ...]:
    """Composition of ``environment.*_env_var`` for a role kind (later layers win)."""
    e = config.environment
    if kind == "ctx":
        return envvars.merge(e.worker_env_var, e.ctx_worker_env_var)
    if kind == "gen":
        return envvars.merge(e.worker_env_var, e.gen_worker_env_var)
    if kind == "server":
        return tuple(e.worker_env_var)
    if kind == "router":
        return tuple(e.server_env_var)
    return tuple(e.benchmark_env_var)


def process_env(job: Job, kind: str, spec_env: Mapping[str, str], placement: Placement | None = None) -> dict[str, str]:
    env = envvars.apply(role_env_layers(job.config, kind), job.environ)
    env.update(spec_env)
    if placement is not None and placement.shares_node and placement.gpus:
        first = placement.gpu_offset
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in range(first, first + placement.gpus_per_node))
    env["PYTHONUNBUFFERED"] = "1"
    if (path := pythonpath(job.config, job.job_dir, env.get("PYTHONPATH"))) is not None:
        env["PYTHONPATH"] = path  # environment.wheels, installed for this job (perfsanity.run.wheels)
    return env


def write_spec_files(job: Job, spec: ServerSpec) -> None:
    (job.job_dir / "profiles").mkdir(exist_ok=True)
    for rel, content in spec.files.items():
        write_atomic(job.job_dir / rel, content)


def http_get_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - our own server
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def first_healthy_port(host: str, ports: list[int], path: str, timeout_s: float = 1.0) -> int | None:
    """The first of ``ports`` whose ``GET path`` answers 2xx, probing all at once.

    A server's other listeners (request planes, response streams) accept connections but never
    answer HTTP; probed one after the other, each would cost the whole timeout.
    """
    if not ports:
        return None
    pool = ThreadPoolExecutor(max_workers=len(ports))
    try:
        futures = {pool.submit(http_get_ok, f"http://{host}:{port}{path}", timeout_s): port for port in ports}
        for future in as_completed(futures):
            if future.result():
                return futures[future]
        return None
    finally:
        pool.shutdown(wait=False)


def discover_address(job: Job, proc: ManagedProcess, spec: ServerSpec, *, timeout_s: float, what: str) -> Address:
    """Wait until the server's HTTP port answers ``spec.health_path``; the port is read from the
    process tree's listening sockets when it was started with port 0."""

    def check() -> Address | None:
        if proc.poll() is not None:
            raise RoleFailed(job.role, f"{proc.name} exited with code {proc.poll()} while starting", proc.tail())
        job.rendezvous.raise_if_failed()
        ports = [spec.port] if spec.port else (spec.published_ports() or listening_ports(proc.pid))
        port = first_healthy_port(job.host, ports, spec.health_path)
        return Address(job.role, job.host, port) if port is not None else None

    return wait_until(check, timeout_s=timeout_s, what=what, max_poll_s=0.1,
                      on_timeout=lambda: f"listening ports {listening_ports(proc.pid)}; log tail:\n{proc.tail(20)}")


#: liveness by progress: a server whose health endpoint has not answered for this long fails its role
UNRESPONSIVE_S = 15.0
HEALTH_PROBE_S = 2.0  # between probes; each probe is bounded by HEALTH_TIMEOUT_S
HEALTH_TIMEOUT_S = 3.0


def watch_until_done(job: Job, procs: ProcessSet, health_url: str | None = None) -> None:
    """Keep the servers up until the benchmark's status file appears; fail at once if one dies, and
    within :data:`UNRESPONSIVE_S` if the server stops answering ``health_url`` (frozen, SIGSTOPped,
    deadlocked: alive as a process, dead as a server)."""
    deadline = Deadline(job.config.slurm.timeout, "benchmark status file")
    last_ok = next_probe = time.monotonic()
    while True:
        status = job.rendezvous.status()
        if status is not None:
            job.log(f"benchmark finished ({status.get('status')}); stopping")
            return
        dead = procs.first_dead()
        if dead is not None:
            raise RoleFailed(job.role, f"{dead.name} died with exit code {dead.poll()}", dead.tail())
        if deadline.expired:
            raise WaitTimeout(f"{job.role}: waited {deadline.seconds}s (slurm.timeout) for the benchmark to finish")
        now = time.monotonic()
        if health_url is not None and now >= next_probe:
            if http_get_ok(health_url, HEALTH_TIMEOUT_S):
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok >= UNRESPONSIVE_S:
                server = procs.procs[-1]
                raise RoleFailed(job.role, f"{server.name} stopped answering {health_url} for "
                                 f"{time.monotonic() - last_ok:.0f}s (frozen or hung; the process is alive)",
                                 server.tail())
            next_probe = time.monotonic() + HEALTH_PROBE_S
        time.sleep(0.2)


def failure_headline(exc: BaseException) -> str:
    """First line of an error for ``<ROLE>.failed`` (without RoleFailed's own ``ROLE: `` prefix)."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return first.removeprefix(f"{exc.role}: ") if isinstance(exc, RoleFailed) else first


def serve(job: Job, spec: ServerSpec, kind: str, placement: Placement | None, *, ready_timeout_s: float,
          procs: ProcessSet | None = None, copies: int = 1, nginx: bool = False) -> None:
    """Start a server (``copies`` of it, behind nginx when ``nginx``), publish its address (rank 0
    only), watch it, stop it; report failures.

    ``procs`` may already hold job services this role started (they are watched and stopped too).
    Ready means every copy answers ``spec.health_path``, and nginx too (whose address is published).
    """
    rdv = job.rendezvous
    procs = procs if procs is not None else ProcessSet()
    try:
        write_spec_files(job, spec)
        env = process_env(job, kind, {**service_env(job), **spec_ports(job, spec), **spec.env}, placement)
        # backends may refer to per-rank values such as ${SLURM_PROCID}; expanded without a shell
        argv = [envvars.expand(a, env) for a in resolve_argv(spec.argv, spec.tool)]
        started = []
        for copy in range(copies):
            name = f"{job.role} server" if copies == 1 else f"{job.role} frontend {copy}"
            suffix = ("" if job.rank == 0 else f".{job.rank}") + ("" if copies == 1 else f".{copy}")
            log_path = job.job_dir / "logs" / f"{job.role}.server{suffix}.log"
            job.log(f"starting: {' '.join(argv)}")
            started.append(procs.start(name, argv, env=env, log_path=log_path, cwd=job.job_dir))
        if job.rank == 0:
            t0 = time.monotonic()
            addrs = [discover_address(job, proc, spec, timeout_s=ready_timeout_s, what=f"{proc.name} to answer "
                                      f"{spec.health_path} (log {proc.log_path})") for proc in started]
            addr = addrs[0]
            if nginx:
                addr = start_nginx(job, procs, addrs, spec.health_path)
                job.log(f"nginx at {addr} in front of {', '.join(map(str, addrs))}")
            hold_before_publish(job)
            rdv.publish(addr, ready_s=round(time.monotonic() - t0, 3), backends=[str(a) for a in addrs])
            job.log(f"ready at {addr} after {time.monotonic() - t0:.1f}s")
            health_url = f"{addr.url}{spec.health_path}"
        else:
            health_url = None
        watch_until_done(job, procs, health_url)
    except BaseException as exc:
        # a RoleFailed naming another role is that role's failure (it wrote its own .failed): reporting
        # it again under this role's name would make the cascade look like the cause
        foreign = isinstance(exc, RoleFailed) and exc.role != job.role
        if not isinstance(exc, KeyboardInterrupt) and not foreign:
            tail_text = getattr(exc, "log_tail", "") or (procs.procs[-1].tail() if procs.procs else "")
            rdv.report_failure(job.role, failure_headline(exc), tail_text)
        raise
    finally:
        procs.stop_all(job.config.timeouts.shutdown / 2)


#: test hook: ``ROLE=SECONDS[,ROLE=SECONDS]`` holds that role's publish back (its server runs already),
#: so a test can check that the benchmark waits for the last publish (the whole-path race)
HOLD_PUBLISH_VAR = "PERFSANITY_TEST_HOLD_PUBLISH"


def hold_before_publish(job: Job) -> None:
    raw = job.environ.get(HOLD_PUBLISH_VAR, "")
    for item in filter(None, (part.strip() for part in raw.split(","))):
        role, _, seconds = item.partition("=")
        try:
            delay = float(seconds)
        except ValueError:
            raise PerfsanityError(f"{HOLD_PUBLISH_VAR}={raw!r}: {item!r} is not ROLE=SECONDS") from None
        if not 0 <= delay <= job.config.timeouts.server_ready:
            raise PerfsanityError(f"{HOLD_PUBLISH_VAR}={raw!r}: {delay:g}s is outside 0..timeouts.server_ready")
        if role == job.role:
            job.log(f"{HOLD_PUBLISH_VAR}: holding the publish back {delay:g}s")
            time.sleep(delay)


def spec_ports(job: Job, spec: ServerSpec) -> dict[str, str]:
    """Values of ``spec.node_ports`` (chosen by rank 0 on this node, published as ``<ROLE>.<VAR>``,
    waited for by the other ranks) and of ``spec.peer_values`` (other roles' published ports)."""
    out = {}
    timeout_s = job.config.timeouts.server_ready
    for var, count in spec.node_ports.items():
        name = f"{job.role}.{var}"
        if job.rank == 0:
            out[var] = str(free_port_block(job.host, count))
            job.rendezvous.publish_value(name, out[var])
            job.log(f"{var}={out[var]} (ports {out[var]}..{int(out[var]) + count - 1} free on {job.host})")
        else:
            out[var] = job.rendezvous.wait_value(name, timeout_s=timeout_s, waiter=job.role)
    for var, name in spec.peer_values.items():
        out[var] = job.rendezvous.wait_value(name, timeout_s=timeout_s, waiter=job.role)
    return out


def service_env(job: Job) -> dict[str, str]:
    """Env vars carrying job-service values (``Backend.service_env``), waiting (bounded) for each."""
    out = {}
    started = job.backend.services(job.host, job.config)
    for name, var in job.backend.service_env.items():
        if name in started:
            out[var] = job.rendezvous.wait_value(name, timeout_s=job.config.timeouts.server_ready, waiter=job.role)
    if job.backend.uses_job_infra:
        out.update(infra_env(job))  # ETCD_ENDPOINTS / NATS_SERVER per config.infra
    return out


def start_services(job: Job, procs: ProcessSet) -> None:
    """Start the backend's job services (``Backend.services``) and publish the first line each prints."""
    for name, spec in job.backend.services(job.host, job.config).items():
        argv = [envvars.expand(a, job.environ) for a in resolve_argv(spec.argv, spec.tool)]
        log_path = job.job_dir / "logs" / f"{job.role}.{name}.log"
        job.log(f"starting job service {name}: {' '.join(argv)}")
        proc = procs.start(f"{job.role} {name}", argv, env=process_env(job, "router", spec.env), log_path=log_path)

        def first_line(proc=proc) -> str | None:
            if proc.poll() is not None:
                raise RoleFailed(job.role, f"job service {proc.name} exited with code {proc.poll()}", proc.tail())
            lines = [ln for ln in proc.log_path.read_text().splitlines() if not ln.startswith("[perfsanity]")]
            return lines[0].strip() if lines else None

        value = wait_until(first_line, timeout_s=job.config.timeouts.router_ready,
                           what=f"job service {name} to print its address (log {log_path})")
        job.rendezvous.publish_value(name, value)


def run_worker(job: Job, placement: Placement) -> None:
    ctx = WorkerContext(
        config=job.config,
        placement=placement,
        host=job.host,
        job_dir=job.job_dir,
        model_path=model_path(job),
        hostnames=tuple(job.slurm.nodelist if job.slurm else ()),
        discovery_dir=job.discovery_dir,
    )
    spec = job.backend.worker(ctx)
    node = monitored_by([(p.role, p.nodes) for p in job.topology.workers], job.role, job.rank)
    if node is None:  # another worker role monitors this node
        serve(job, spec, placement.kind, placement, ready_timeout_s=job.config.timeouts.server_ready)
        return
    name = job.slurm.node_name if job.slurm and job.slurm.node_name else f"node{node}"
    with NodeMonitor(job.job_dir / "logs", name):
        serve(job, spec, placement.kind, placement, ready_timeout_s=job.config.timeouts.server_ready)


def worker_roles(job: Job, kind: str) -> list[str]:
    return [p.role for p in job.topology.of_kind(kind)]


def run_router(job: Job) -> None:
    rdv = job.rendezvous
    workers = [p.role for p in job.topology.workers]
    procs = ProcessSet()
    uses_infra = job.backend.uses_job_infra
    try:
        if uses_infra:
            start_infra(job, procs)  # etcd / NATS first: every Dynamo process needs them at start
        start_services(job, procs)
    except BaseException as exc:
        procs.stop_all()
        if not isinstance(exc, KeyboardInterrupt):
            rdv.report_failure(job.role, failure_headline(exc), getattr(exc, "log_tail", ""))
        raise
    backend = job.backend
    try:
        addrs: dict[str, Address] = {}
        # routers that find workers themselves (file discovery) start at once; others need the URLs
        if backend.router_needs_worker_addresses:
            job.log(f"waiting for {', '.join(workers)}")
            addrs = rdv.wait_for(workers, timeout_s=job.config.timeouts.server_ready, waiter=job.role)
        ctx = RouterContext(
            config=job.config,
            host=job.host,
            job_dir=job.job_dir,
            model_path=model_path(job),
            ctx=tuple(addrs[r] for r in worker_roles(job, "ctx") if r in addrs),
            gen=tuple(addrs[r] for r in worker_roles(job, "gen") if r in addrs),
            discovery_dir=job.discovery_dir,
        )
        spec = backend.router(ctx)
    except BaseException as exc:
        procs.stop_all()
        if not isinstance(exc, (KeyboardInterrupt, RoleFailed)):
            rdv.report_failure(job.role, failure_headline(exc))
        raise
    frontend = job.config.frontend
    serve(job, spec, "router", None, ready_timeout_s=job.config.timeouts.router_ready, procs=procs,
          copies=frontend.count if uses_infra else 1, nginx=frontend.nginx and uses_infra)


def main(environ: Mapping[str, str] | None = None) -> int:
    """``python -m perfsanity.run.roles``: run the role in $DISAGG_SERVING_TYPE (exit 0 = role passed)."""
    env = dict(os.environ if environ is None else environ)
    try:
        run_role(job_from_env(env))
    except PerfsanityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def dump_json(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
