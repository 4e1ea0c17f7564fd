"""Helpers of the backend tests: contexts with made-up addresses and a stable text form of ServerSpecs."""

from __future__ import annotations

import difflib
import os
import shlex
from pathlib import Path

import pytest

from perfsanity.engines import get_backend, tooling
from perfsanity.engines.base import Address, RouterContext, ServerSpec, WorkerContext
from perfsanity.spec.config import Config
from perfsanity.spec.topology import Placement, build_topology

REPO = Path(__file__).resolve().parents[2]
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
UPDATE_ENV = "PERFSANITY_UPDATE_GOLDEN"
#: the GPU-engine configs the golden files cover (the mocker configs belong to dynamo-mocker)
GPU_CONFIGS = tuple(
    sorted(
        [p for p in (REPO / "test_configs/disagg/perf").glob("*.yaml") if p.name.startswith("gb200-")]
        + list((REPO / "test_configs/aggr/perf").glob("*.yaml"))
    )
)
CTX_PORT_BASE = 8001
GEN_PORT_BASE = 8101


def tool_env(tool: str) -> tooling.ToolEnv:
    """The ready env of tool venv ``tool``; skip the test when it is not installed, fail it under CI=true
    (naming the install command)."""
    env = tooling.installed_tool(tool)
    if env is None:
        message = (f"tool venv {tool!r} is not installed ({tooling.venv_dir(tooling.TOOLS[tool])}); "
                   f"run: python3 -m perfsanity.engines.tooling install {tool}")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return env


def node_host(node: int) -> str:
    return f"10.0.0.{node + 1}"


def job_dir_for(config: Config) -> Path:
    return Path("/jobs") / config.name


def worker_context(config: Config, placement: Placement, job_dir: Path | None = None) -> WorkerContext:
    job_dir = job_dir or job_dir_for(config)
    hosts = tuple(node_host(n) for n in placement.nodes)
    return WorkerContext(
        config=config,
        placement=placement,
        host=hosts[0],
        job_dir=job_dir,
        model_path=config.environment.model_path or f"/models/{config.metadata.model_name}",
        hostnames=hosts,
        discovery_dir=job_dir / "discovery",
    )


def addresses(config: Config) -> tuple[tuple[Address, ...], tuple[Address, ...]]:
    topo = build_topology(config)
    ctx = tuple(Address(p.role, node_host(p.nodes[0]), CTX_PORT_BASE + p.index) for p in topo.of_kind("ctx"))
    gen = tuple(Address(p.role, node_host(p.nodes[0]), GEN_PORT_BASE + p.index) for p in topo.of_kind("gen"))
    return ctx, gen


def router_context(config: Config, job_dir: Path | None = None) -> RouterContext:
    job_dir = job_dir or job_dir_for(config)
    ctx, gen = addresses(config)
    return RouterContext(
        config=config,
        host=node_host(0),
        job_dir=job_dir,
        model_path=config.environment.model_path or f"/models/{config.metadata.model_name}",
        ctx=ctx,
        gen=gen,
        discovery_dir=job_dir / "discovery",
    )


def render_spec(title: str, spec: ServerSpec) -> str:
    """One ServerSpec as stable text: argv one word per line, env and files sorted."""
    lines = [f"# {title}", f"port: {spec.port}", f"health_path: {spec.health_path}", f"tool: {spec.tool}"]
    if spec.node_ports:  # ports the role picks at start (ServerSpec.node_ports)
        lines.append("node_ports: " + " ".join(f"{k}x{n}" for k, n in sorted(spec.node_ports.items())))
    if spec.peer_values:
        lines.append("peer_values: " + " ".join(f"{k}={v}" for k, v in sorted(spec.peer_values.items())))
    lines.append("argv:")
    lines += [f"  {shlex.quote(word)}" for word in spec.argv]
    lines.append("env:")
    lines += [f"  {k}={v}" for k, v in sorted(spec.env.items())]
    lines.append("files:")
    for path, content in sorted(spec.files.items()):
        lines.append(f"--- {path}")
        lines += content.rstrip("\n").splitlines()
        lines.append("--- end")
    return "\n".join(lines) + "\n"


def render_all(config: Config) -> dict[str, str]:
    """Golden file name -> text, for every worker role and the router of one config."""
    backend = get_backend(config.metadata.backend)
    topo = build_topology(config)
    out: dict[str, str] = {}
    for placement in topo.workers:
        wctx = worker_context(config, placement)
        title = (f"{backend.name} {config.name} {placement.role} ({placement.kind}) nodes "
                 f"{','.join(wctx.hostnames)}")
        out[f"{placement.role}.txt"] = render_spec(title, backend.worker(wctx))
    if config.kind == "disagg":
        rctx = router_context(config)
        urls = " ".join(str(a) for a in (*rctx.ctx, *rctx.gen))
        title = f"{backend.name} {config.name} DISAGG_SERVER (router) host {rctx.host} workers {urls}"
        out["DISAGG_SERVER.txt"] = render_spec(title, backend.router(rctx))
    return out


def check_golden(directory: Path, rendered: dict[str, str]) -> None:
    """Compare ``rendered`` with ``directory``; ``PERFSANITY_UPDATE_GOLDEN=1`` rewrites it instead."""
    if os.environ.get(UPDATE_ENV) == "1":
        directory.mkdir(parents=True, exist_ok=True)
        for stale in set(p.name for p in directory.glob("*.txt")) - rendered.keys():
            (directory / stale).unlink()
        for name, text in rendered.items():
            (directory / name).write_text(text)
        return
    present = {p.name for p in directory.glob("*.txt")} if directory.is_dir() else set()
    problems: list[str] = []
    if missing := sorted(rendered.keys() - present):
        problems.append(f"missing golden files {missing}")
    if stale := sorted(present - rendered.keys()):
        problems.append(f"stale golden files {stale}")
    for name in sorted(rendered.keys() & present):
        want = (directory / name).read_text()
        if want != rendered[name]:
            diff = "".join(difflib.unified_diff(want.splitlines(True), rendered[name].splitlines(True),
                                                f"golden/{directory.name}/{name}", "rendered"))
            problems.append(diff)
    if problems:
        raise AssertionError(f"{directory}: " + "\n".join(problems) + f"\n(set {UPDATE_ENV}=1 to rewrite)")
