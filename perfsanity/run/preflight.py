"""Preflight: a bounded bring-up check of the allocation before any model load.

One short step per role's node slice (the same slices the roles get), all started together and bounded
by ``preflight.timeout_s`` (at most 60 s). Each task of a step (one per node) checks, in this order:

1. ``answers``: the node runs the step and reports back (missing report = the node did not answer);
2. ``job dir writable``: it writes and reads back a probe under ``preflight/nodes/<node>/`` of the job dir;
3. ``GPUs visible``: ``nvidia-smi -L`` lists at least the GPUs the role uses on the node (skipped, with
   the reason, when the backend runs no GPU code, the role uses no GPU or the node has no nvidia-smi);
4. ``container starts``: with container flags in the srun args the step runs inside the container, so a
   step that exits without a report is a container that did not start;
5. ``node-to-node reach``: it opens a TCP port for the check on the address servers bind
   (``$PERFSANITY_HOST``, else the node's address), publishes it under ``preflight/addr/``, and
   connects to one task on every other node (on a one-node job: to every other task).

A task reports on its stdout (``PERFSANITY-PREFLIGHT {json}``): the step's srun carries that back to the
batch script, so even a node that cannot write the job dir is heard. :func:`run_preflight` (the
supervisor's side) reads the reports and raises :class:`PreflightFailed` naming the first failing
node and check; the supervisor turns that into ``rendezvous/PREFLIGHT.failed`` (junit) and
``report.json`` and ends the job at once.

``python3 -m perfsanity.run.preflight node ...`` is the task side. It imports the standard library only
(the preflight runs before the install step), so it starts fast on a bare node.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from perfsanity.common.files import write_atomic
from perfsanity.common.waits import Deadline

if TYPE_CHECKING:  # the task side imports the standard library only: it runs before the install step
    from perfsanity.common.processes import ManagedProcess
    from perfsanity.plan.launch import RoleStep

CHECKS = ("answers", "job dir writable", "GPUs visible", "container starts", "node-to-node reach")
REPORT_TAG = "PERFSANITY-PREFLIGHT "
DIR = "preflight"
CONNECT_TIMEOUT_S = 3.0
MISSING_PEERS = "peers missing"  # a reach failure that only says some task never published its port
# the task's command inside the step (a container, too): the checkout on PYTHONPATH, then the module under
# the supervisor's interpreter where that path exists ($PERFSANITY_PYTHON), else the step's python3
_TASK_SHELL = ('export PYTHONPATH="$PERFSANITY_REPO${PYTHONPATH:+:$PYTHONPATH}"; p=${PERFSANITY_PYTHON:-python3}; '
               '[ -x "$p" ] || p=python3; exec "$p" -m perfsanity.run.preflight "$@"')


class PreflightFailed(Exception):
    """A check failed: ``message`` names the node and the check; ``details`` holds the evidence."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details


@dataclass(frozen=True)
class PreflightStep:
    """One role's preflight step: its node indices and the GPUs it uses on each node."""

    role: str
    nodes: tuple[int, ...]
    gpus_per_node: int


@dataclass(frozen=True)
class PreflightPlan:
    timeout_s: float
    steps: tuple[PreflightStep, ...]
    container: bool = False  # the srun args start a container
    gpu_skip: str = ""  # why no GPU is checked on any node ('' = check them)

    @property
    def tasks(self) -> int:
        return sum(len(s.nodes) for s in self.steps)


def plan_for(steps: Sequence[RoleStep], *, timeout_s: float, container: bool, needs_gpu: bool,
             backend: str) -> PreflightPlan:
    """The preflight of a role plan: one step per role, on the role's nodes."""
    out = [PreflightStep(s.role, s.nodes, s.gpus // max(1, len(s.nodes)) if needs_gpu else 0) for s in steps]
    skip = "" if needs_gpu else f"backend {backend} runs no GPU code"
    return PreflightPlan(float(timeout_s), tuple(out), container, skip)


def task_argv(plan: PreflightPlan, step: PreflightStep, job_dir: Path) -> list[str]:
    """The command each task of ``step`` runs (after srun's own arguments)."""
    argv = ["bash", "-c", _TASK_SHELL, "preflight", "node", "--job-dir", str(job_dir), "--role", step.role,
            "--expect", str(plan.tasks), "--timeout", f"{plan.timeout_s:g}", "--gpus", str(step.gpus_per_node)]
    if plan.gpu_skip:
        argv += ["--gpu-skip", plan.gpu_skip]
    if plan.container:
        argv.append("--container")
    return argv


# ------------------------------------------------------------------------------ supervisor side


StartStep = Callable[[str, Sequence[str], Sequence[str]], "ManagedProcess"]  # (name, hosts, argv) -> process


def run_preflight(plan: PreflightPlan, hosts: Sequence[str], job_dir: Path, *, start: StartStep,
                  tick: Callable[[], None]) -> list[dict]:
    """Start every step, wait (bounded by ``plan.timeout_s``), and check the reports.

    ``start(name, hosts, argv)`` starts one step; ``tick()`` is called between polls (it sleeps and may
    raise to abort). Returns the reports; raises :class:`PreflightFailed` on the first failed check."""
    from perfsanity.common.processes import tail

    job_dir = Path(job_dir)
    for sub in ("addr", "done"):
        shutil.rmtree(job_dir / DIR / sub, ignore_errors=True)  # a rerun must not see the last run's ports
    procs: list[tuple[PreflightStep, tuple[str, ...], ManagedProcess]] = []
    bound = Deadline(plan.timeout_s, "preflight steps")
    for step in plan.steps:
        step_hosts = tuple(hosts[n] for n in step.nodes)
        procs.append((step, step_hosts, start(f"preflight-{step.role}", step_hosts, task_argv(plan, step, job_dir))))
    # a failed check (or a step that ended without its reports) ends the wait at once
    reports, problems = _collect(plan, procs, gave_up=False)
    while any(p.poll() is None for _, _, p in procs) and not problems and not bound.expired:
        tick()
        reports, problems = _collect(plan, procs, gave_up=False)
    running = [p for _, _, p in procs if p.poll() is None]
    reports, problems = _collect(plan, procs, gave_up=False)  # what a step wrote before it exited counts
    for p in running:
        p.stop(5.0)
    reach = CHECKS.index("node-to-node reach")
    if not problems or all(p[0] == reach and p[3].startswith(MISSING_PEERS) for p in problems):
        # peers that gave up waiting for a port: name the node that never published one (nor reported)
        published = {(name.rsplit(".", 1)[0], str(d.get("node"))) for name, d in
                     _read_addresses(job_dir / DIR / "addr").items()}
        late = _collect(plan, procs, gave_up=True, timed_out=running, after_s=plan.timeout_s - bound.remaining)[1]
        silent = [p for p in late if p[0] != reach and (p[2], p[1]) not in published]
        problems = silent or problems or late
    if problems:
        problems.sort(key=lambda p: p[0])
        index, node, role, why = problems[0]
        more = f" (and {len(problems) - 1} more failed check(s))" if len(problems) > 1 else ""
        message = f"preflight failed: node {node} ({role}): {CHECKS[index]}: {why}{more}"
        details = "\n".join(f"node {n} ({r}): {CHECKS[i]}: {w}" for i, n, r, w in problems)
        logs = "\n".join(f"--- {p.log_path.name} ---\n{tail(p.log_path, 15)}" for _, _, p in procs)
        raise PreflightFailed(message, details + "\n" + logs)
    return reports


def _collect(plan: PreflightPlan, procs: Sequence[tuple[PreflightStep, tuple[str, ...], ManagedProcess]], *,
             gave_up: bool, timed_out: Sequence[ManagedProcess] = (), after_s: float = 0.0,
             ) -> tuple[list[dict], list[tuple]]:
    """(reports so far, problems as (check index, node, role, message)). A node without a report is a
    problem once its step ended, or for every step when ``gave_up`` (the bound ran out)."""
    reports: list[dict] = []
    problems: list[tuple[int, str, str, str]] = []
    for step, step_hosts, proc in procs:
        got = read_reports(proc.log_path, proc.name)
        reports += got
        seen = {r.get("node") for r in got}
        rc = proc.poll()
        for host in step_hosts:
            if host in seen or (rc is None and not gave_up):
                continue
            if proc in timed_out:
                why = (f"no report after {after_s:.0f}s (bound: preflight.timeout_s={plan.timeout_s:g}s; step "
                       f"still running; see {proc.log_path})")
                problems.append((CHECKS.index("answers"), host, step.role, why))
            else:
                check = "container starts" if plan.container and rc else "answers"
                why = f"step exited with code {rc} without a report (see {proc.log_path})"
                problems.append((CHECKS.index(check), host, step.role, why))
        for r in got:
            for c in r.get("checks", []):
                if c.get("status") == "failed" and c.get("check") in CHECKS:
                    problems.append((CHECKS.index(c["check"]), str(r.get("node")), str(r.get("role")),
                                     str(c.get("detail", ""))))
    return reports, problems


def read_reports(log: Path, name: str = "") -> list[dict]:
    """The ``PERFSANITY-PREFLIGHT`` reports in a step's output (with ``name``: only after the log's last
    start header of that step, so an earlier run's output in the same log is not counted)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    if name:
        text = text.rsplit(f"[perfsanity] start {name}:", 1)[-1]
    out = []
    for line in text.splitlines():
        _, tag, body = line.partition(REPORT_TAG)
        if tag:
            try:
                data = json.loads(body)
            except ValueError:
                continue
            if isinstance(data, dict):
                out.append(data)
    return out


def summary(reports: Sequence[dict]) -> str:
    nodes = sorted({str(r.get("node")) for r in reports})
    skipped = sorted({f"{c['check']} ({c.get('detail', '')})" for r in reports for c in r.get("checks", [])
                      if c.get("status") == "skipped"})
    text = f"preflight passed: {len(reports)} task(s) on {len(nodes)} node(s) [{' '.join(nodes)}]"
    return text + (f"; skipped: {', '.join(skipped)}" if skipped else "")


# ------------------------------------------------------------------------------------ task side


def bind_address(environ: Mapping[str, str]) -> str:
    """The address servers bind and advertise on a node: ``$PERFSANITY_HOST``, else the node's own."""
    return environ.get("PERFSANITY_HOST") or socket.gethostbyname(socket.gethostname())


class _Listener:
    """A TCP port opened for the reach check: answers ``ping`` lines with ``pong <task>``."""

    def __init__(self, host: str, me: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.2)
        self.address = (host, self.sock.getsockname()[1])
        self.me = me
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(CONNECT_TIMEOUT_S)
                try:
                    if conn.recv(256).startswith(b"ping "):
                        conn.sendall(f"pong {self.me}\n".encode())
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=1.0)
        self.sock.close()


def _ping(host: str, port: int, me: str) -> str:
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as conn:
        conn.settimeout(CONNECT_TIMEOUT_S)
        conn.sendall(f"ping {me}\n".encode())
        return conn.recv(256).decode(errors="replace").strip()


def _check_write(job_dir: Path, node: str, me: str) -> tuple[str, str]:
    probe = job_dir / DIR / "nodes" / node / f"{me}.probe"
    token = uuid.uuid4().hex
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(probe, token)
        back = probe.read_text()
    except OSError as exc:
        return "failed", f"cannot write {probe}: {exc}"
    if back != token:
        return "failed", f"{probe} reads back other content than was written"
    return "ok", str(probe.parent)


def _check_gpus(gpus: int, skip: str) -> tuple[str, str]:
    if skip:
        return "skipped", skip
    if gpus <= 0:
        return "skipped", "the role uses no GPU on this node"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "skipped", "no nvidia-smi on this node"
    try:
        proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        return "failed", "nvidia-smi -L did not answer within 15s"
    listed = [line for line in proc.stdout.splitlines() if line.startswith("GPU ")]
    if proc.returncode != 0 or len(listed) < gpus:
        return "failed", (f"nvidia-smi -L lists {len(listed)} GPU(s), the role needs {gpus} "
                          f"(exit {proc.returncode}: {proc.stderr.strip()[:200]})")
    return "ok", f"{len(listed)} GPU(s) listed"


def _read_addresses(addr_dir: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(addr_dir.glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


def node_main(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """One task: run the checks, print the report, keep the port open until every task is done."""
    node = environ.get("SLURMD_NODENAME") or socket.gethostname()
    rank = environ.get("SLURM_PROCID") or "0"
    me = f"{args.role}.{rank}"
    job_dir = Path(args.job_dir)
    # keep a margin of the bound for the report to travel back
    bound = Deadline(max(1.0, args.timeout - 3.0), "preflight peers")
    checks = [{"check": "answers", "status": "ok", "detail": f"pid {os.getpid()}"}]
    status, detail = _check_write(job_dir, node, me)
    checks.append({"check": "job dir writable", "status": status, "detail": detail})
    status, detail = _check_gpus(args.gpus, args.gpu_skip)
    checks.append({"check": "GPUs visible", "status": status, "detail": detail})
    checks.append({"check": "container starts", "status": "ok" if args.container else "skipped",
                   "detail": "the step runs in the container" if args.container else "no container flags"})
    addr_dir, done_dir = job_dir / DIR / "addr", job_dir / DIR / "done"
    listener = None
    try:
        listener = _Listener(bind_address(environ), me)
        write_atomic(addr_dir / f"{me}.json", json.dumps({"node": node, "host": listener.address[0],
                                                          "port": listener.address[1]}) + "\n")
        checks.append(_reach(me, node, addr_dir, args.expect, bound))
    except OSError as exc:
        checks.append({"check": "node-to-node reach", "status": "failed", "detail": f"cannot open a port: {exc}"})
    print(REPORT_TAG + json.dumps({"role": args.role, "rank": rank, "node": node, "checks": checks}), flush=True)
    try:
        write_atomic(done_dir / me, "")
        while listener is not None and len(list(done_dir.iterdir())) < args.expect and not bound.expired:
            time.sleep(0.05)  # peers may still be connecting to this task's port
    except OSError:
        pass
    if listener is not None:
        listener.close()
    return 0


def _reach(me: str, node: str, addr_dir: Path, expect: int, bound: Deadline) -> dict:
    peers: dict[str, dict] = {}
    while len(peers) < expect and not bound.expired:
        peers = _read_addresses(addr_dir)
        if len(peers) < expect:
            time.sleep(0.05)
    others = {k: v for k, v in peers.items() if k != me}
    by_node: dict[str, tuple[str, dict]] = {}
    for name, data in others.items():
        if data.get("node") != node:
            by_node.setdefault(str(data.get("node")), (name, data))
    targets = list(by_node.values()) or list(others.items())  # one-node job: the other tasks on it
    errors = []
    for name, data in targets:
        try:
            reply = _ping(str(data["host"]), int(data["port"]), me)
        except (OSError, KeyError, ValueError) as exc:
            errors.append(f"node {data.get('node')} ({name} at {data.get('host')}:{data.get('port')}): {exc}")
            continue
        if reply != f"pong {name}":
            errors.append(f"node {data.get('node')} ({name}): unexpected reply {reply[:80]!r}")
    if len(peers) < expect:
        errors.insert(0, f"{MISSING_PEERS}: only {len(peers)} of {expect} tasks published a port within the bound")
    if errors:
        return {"check": "node-to-node reach", "status": "failed", "detail": "; ".join(errors)}
    return {"check": "node-to-node reach", "status": "ok",
            "detail": f"reached {len(targets)} task(s) on {len({d.get('node') for _, d in targets})} node(s)"}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m perfsanity.run.preflight", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    node = sub.add_parser("node", help="one task of a preflight step (run by srun on each node)")
    node.add_argument("--job-dir", required=True)
    node.add_argument("--role", required=True)
    node.add_argument("--expect", type=int, required=True, help="tasks of all preflight steps together")
    node.add_argument("--timeout", type=float, required=True)
    node.add_argument("--gpus", type=int, default=0, help="GPUs the role uses on this node")
    node.add_argument("--gpu-skip", default="", help="why no GPU is checked")
    node.add_argument("--container", action="store_true", help="the step was started with container flags")
    args = p.parse_args(argv)
    return node_main(args, os.environ)


if __name__ == "__main__":
    sys.exit(main())
