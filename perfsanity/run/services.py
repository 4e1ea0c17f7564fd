"""Job infrastructure: a per-job etcd and NATS (JetStream) for Dynamo, and nginx in front of several
frontends. DISAGG_SERVER starts them in its own process set (so they are watched like its servers,
and stopped last), on ports of this job only, and publishes their addresses in the rendezvous dir.

* **etcd** (``config.infra.discovery: etcd``): one member, client and peer URLs on ``host``. etcd
  binds port 0 but then advertises ``:0`` and its JSON gateway dials ``:0`` (docs/upstream/dynamo-infra.md),
  so its two ports are taken from the kernel (bind port 0, read, close) just before etcd starts; if
  another process takes one in between, etcd exits at once with ``address already in use`` and is
  started again on new ports (bounded attempts). Healthy = ``GET /health`` says ``"true"``. Value:
  ``http://host:port`` → ``ETCD_ENDPOINTS``.
* **NATS** (``request_plane: nats`` or ``event_plane: nats``): ``nats-server -p -1 -m -1 -js``, so the
  OS assigns both ports; they are read from the ports file the server writes. Healthy =
  ``GET /healthz?js-enabled-only=true`` on the monitoring port is 200. Value: ``nats://host:port`` →
  ``NATS_SERVER``.
* **nginx** (``frontend.nginx``): nginx cannot listen on port 0, so the harness binds the listening
  socket itself (port 0) and hands it to nginx the way nginx hands sockets to a new binary on
  upgrade (the ``NGINX`` environment variable names the inherited descriptor); the rendered
  ``nginx.conf`` names the same address, so nginx adopts the socket instead of binding. Unprivileged
  (no ``user`` line, nothing under /var or /run): pid, logs and temp paths are in ``<job>/nginx/``.

Every wait is bounded by ``timeouts.router_ready`` and names what it waited for; a service that
exits while starting fails DISAGG_SERVER naming the service, with its log tail.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from perfsanity.common.errors import RoleFailed
from perfsanity.common.files import write_atomic
from perfsanity.common.ports import free_port_block
from perfsanity.common.processes import ManagedProcess, ProcessSet, tail
from perfsanity.common.waits import wait_until
from perfsanity.engines.base import Address
from perfsanity.run.job import Job
from perfsanity.spec.config import Config

#: job service -> env var every Dynamo process gets with the service's published value
INFRA_ENV = {"etcd": "ETCD_ENDPOINTS", "nats": "NATS_SERVER"}
ETCD_START_ATTEMPTS = 5
TEMPLATES = Path(__file__).resolve().parent / "templates"
#: nginx ``<directive>_temp_path`` -> dir under ``<root>/tmp``
NGINX_TEMP_DIRS = {"client_body": "body", "proxy": "proxy", "fastcgi": "fastcgi", "uwsgi": "uwsgi", "scgi": "scgi"}


def needed(config: Config) -> tuple[str, ...]:
    """The infrastructure services ``config.infra`` needs, in start order."""
    infra = config.infra
    return tuple(name for name, need in (("etcd", infra.needs_etcd), ("nats", infra.needs_nats)) if need)


def start_infra(job: Job, procs: ProcessSet) -> dict[str, str]:
    """Start every service :func:`needed`, wait until each is healthy, publish its value; name -> value."""
    starters = {"etcd": start_etcd, "nats": start_nats}
    out = {}
    for name in needed(job.config):
        t0 = time.monotonic()
        value = starters[name](job, procs)
        job.rendezvous.publish_value(name, value)
        job.log(f"job service {name} ready at {value} after {time.monotonic() - t0:.2f}s")
        out[name] = value
    return out


def infra_env(job: Job) -> dict[str, str]:
    """``ETCD_ENDPOINTS`` / ``NATS_SERVER`` for a server of this job (waits, bounded, for each value)."""
    return {INFRA_ENV[name]: job.rendezvous.wait_value(name, timeout_s=job.config.timeouts.server_ready,
                                                        waiter=job.role)
            for name in needed(job.config)}


# ------------------------------------------------------------------------------------------ etcd


def etcd_argv(host: str, client_port: int, peer_port: int, data_dir: Path) -> list[str]:
    client, peer = f"http://{host}:{client_port}", f"http://{host}:{peer_port}"
    return ["etcd", "--name", "perfsanity", "--data-dir", str(data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"perfsanity={peer}",
            # one member: elect itself quickly (defaults 100 ms / 1 s)
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-outputs", "stderr"]


def http_text(url: str, timeout_s: float = 1.0) -> tuple[int, str]:
    """(status, body) of a GET; (0, error) when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - our own service
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return 0, str(exc)


def _exited(job: Job, proc: ManagedProcess, name: str) -> RoleFailed:
    return RoleFailed(job.role, f"job service {name} exited with code {proc.poll()} while starting "
                      f"(log {proc.log_path})", proc.tail())


def start_etcd(job: Job, procs: ProcessSet) -> str:
    host = job.host
    log_path = job.job_dir / "logs" / f"{job.role}.etcd.log"
    for attempt in range(1, ETCD_START_ATTEMPTS + 1):
        client_port, peer_port = free_port_block(host), free_port_block(host)
        while peer_port == client_port:
            peer_port = free_port_block(host)
        data_dir = job.job_dir / "services" / "etcd"
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        url = f"http://{host}:{client_port}"
        proc = procs.start(f"{job.role} etcd", etcd_argv(host, client_port, peer_port, data_dir),
                           env=service_environ(job), log_path=log_path, cwd=job.job_dir)

        def healthy(proc: ManagedProcess = proc, url: str = url) -> bool | str:
            if proc.poll() is not None:
                return "exited"
            job.rendezvous.raise_if_failed()
            status, body = http_text(f"{url}/health")
            return status == 200 and '"true"' in body

        state = wait_until(healthy, timeout_s=job.config.timeouts.router_ready, max_poll_s=0.2,
                           what=f"job service etcd to answer {url}/health (log {log_path})",
                           on_timeout=lambda proc=proc: "log tail:\n" + proc.tail(15))
        if state is True:
            return url
        procs.procs.remove(proc)
        if "address already in use" not in proc.tail(20) or attempt == ETCD_START_ATTEMPTS:
            raise _exited(job, proc, "etcd")
        job.log(f"etcd: port {client_port} or {peer_port} was taken meanwhile; new ports (attempt {attempt + 1})")
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------ NATS


def nats_argv(host: str, store_dir: Path, ports_dir: Path) -> list[str]:
    return ["nats-server", "-a", host, "-p", "-1", "-m", "-1", "-js", "-sd", str(store_dir),
            "--ports_file_dir", str(ports_dir)]


def start_nats(job: Job, procs: ProcessSet) -> str:
    base = job.job_dir / "services" / "nats"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    log_path = job.job_dir / "logs" / f"{job.role}.nats.log"
    proc = procs.start(f"{job.role} nats", nats_argv(job.host, base / "jetstream", base), env=service_environ(job),
                       log_path=log_path, cwd=job.job_dir)
    ports_file = base / f"nats-server_{proc.pid}.ports"

    def healthy() -> str | None:
        if proc.poll() is not None:
            raise _exited(job, proc, "nats")
        job.rendezvous.raise_if_failed()
        try:
            ports = json.loads(ports_file.read_text())
            client, monitor = ports["nats"][0], ports["monitoring"][0]
        except (OSError, ValueError, KeyError, IndexError):
            return None
        status, _ = http_text(f"{monitor}/healthz?js-enabled-only=true")
        return client if status == 200 else None

    return wait_until(healthy, timeout_s=job.config.timeouts.router_ready, max_poll_s=0.2,
                      what=f"job service nats to write {ports_file.name} and answer /healthz (log {log_path})",
                      on_timeout=lambda: "log tail:\n" + proc.tail(15))


def service_environ(job: Job) -> dict[str, str]:
    """The role's own environment (it marks the process as this job's: PERFSANITY_JOB_DIR, SLURM_JOB_ID)."""
    return dict(job.environ)


# ----------------------------------------------------------------------------------------- nginx


def render_nginx_conf(listen: str, upstreams: Sequence[str], root: Path) -> str:
    """nginx.conf balancing round-robin over ``upstreams`` (``host:port``), listening on ``listen``,
    with every path nginx writes under ``root``."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined  # lazy: ~0.1 s off every role's start-up

    env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                      autoescape=False)  # noqa: S701 - nginx config, not HTML
    return env.get_template("nginx.conf.j2").render(listen=listen, upstreams=list(upstreams), root=str(root),
                                                     temp_dirs=NGINX_TEMP_DIRS)


def nginx_argv(root: Path, conf: Path, *, test: bool = False) -> list[str]:
    return ["nginx", *(["-t"] if test else []), "-p", f"{root}/", "-c", str(conf), "-e", str(root / "error.log")]


class NginxSocket:
    """The listening socket nginx adopts (bound here to port 0, so it cannot collide)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(511)
        self.sock.set_inheritable(True)
        self.host, self.port = self.sock.getsockname()[:2]

    @property
    def env(self) -> dict[str, str]:
        """What tells nginx to adopt the socket instead of binding its own."""
        return {"NGINX": f"{self.sock.fileno()};"}

    def close(self) -> None:
        self.sock.close()


def prepare_nginx(root: Path, listen: NginxSocket, upstreams: Sequence[Address]) -> Path:
    """Write ``root/nginx.conf`` and make its temp dirs; return the conf path."""
    for name in NGINX_TEMP_DIRS.values():
        (root / "tmp" / name).mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    write_atomic(conf, render_nginx_conf(f"{listen.host}:{listen.port}", [str(a) for a in upstreams], root))
    return conf


def start_nginx(job: Job, procs: ProcessSet, upstreams: Sequence[Address], health_path: str) -> Address:
    """nginx in front of ``upstreams``; returns its address once a proxied ``health_path`` answers 200."""
    root = job.job_dir / "nginx"
    listen = NginxSocket(job.host)
    try:
        conf = prepare_nginx(root, listen, upstreams)
        log_path = job.job_dir / "logs" / f"{job.role}.nginx.log"
        proc = procs.start(f"{job.role} nginx", nginx_argv(root, conf), env={**service_environ(job), **listen.env},
                           log_path=log_path, cwd=job.job_dir, pass_fds=(listen.sock.fileno(),))
    finally:
        listen.close()  # nginx holds its own copy
    url = f"http://{listen.host}:{listen.port}{health_path}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RoleFailed(job.role, f"job service nginx exited with code {proc.poll()} while starting "
                             f"(log {log_path}, {root / 'error.log'})", proc.tail() + "\n" + _tail(root / "error.log"))
        job.rendezvous.raise_if_failed()
        return http_text(url)[0] == 200

    wait_until(healthy, timeout_s=job.config.timeouts.router_ready, max_poll_s=0.2,
               what=f"nginx to answer {url} (error log {root / 'error.log'})",
               on_timeout=lambda: "error log tail:\n" + _tail(root / "error.log"))
    return Address(job.role, listen.host, listen.port)


def _tail(path: Path) -> str:
    return tail(path, 15)
