"""Topology: how many GPUs and nodes each role needs and which node slice it runs on.

Pure arithmetic on a :class:`~perfsanity.spec.config.Config`, no I/O:

* GPUs per server = tensor × pipeline × context parallel size.
* A server with at least a node's worth of GPUs takes whole nodes: ``gpus / gpus_per_node`` of them,
  which must divide evenly (a server never takes part of a node it spans).
* Smaller servers, two rules (``Topology.rule``):

  - ``packed``: packed onto shared nodes while they fit (``gpus_per_node // gpus`` per node), each
    with its own GPU offset on that node. Used when ``hardware.pack`` is true or unset (direct mode).
  - ``upstream``: TensorRT-LLM's arithmetic, every server on nodes of its own:
    ``nodes = Σ ceil(gpus / gpus_per_node)`` over the servers, using ``min(gpus, gpus_per_node)`` GPUs
    on each. Used when ``hardware.pack`` is false (L0 mode sets that unless the config says
    ``pack: true``).
* Node slices are deterministic: generation servers first, then context servers; the disagg server
  (router) and the benchmark client run on node 0 next to the first worker, as extra steps sharing
  that node (``--overlap``).
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsanity.common.errors import ConfigError
from perfsanity.spec.config import Config, WorkerConfig

MAX_NODES = 4096


@dataclass(frozen=True)
class Placement:
    """Where one role runs. ``nodes`` are indices into the job's node list."""

    role: str  # GEN_0, CTX_1, SERVER_0, DISAGG_SERVER, BENCHMARK
    kind: str  # gen | ctx | server | router | benchmark
    index: int
    gpus: int  # GPUs the role uses in total (0 for router and benchmark)
    nodes: tuple[int, ...]
    gpus_per_node: int  # GPUs used on each of its nodes
    gpu_offset: int = 0  # first GPU index on a shared node
    shares_node: bool = False  # another step runs on the same node at the same time

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    def tasks(self, per_gpu: bool) -> int:
        """srun tasks for this role: one per GPU for MPI engines, else one per node."""
        if self.gpus and per_gpu:
            return self.gpus
        return self.num_nodes


RULE_TEXT = {
    "packed": "packed (servers smaller than a node share nodes)",
    "upstream": "upstream (every server on nodes of its own: Σ ceil(gpus / gpus_per_node))",
}


@dataclass(frozen=True)
class Topology:
    gpus_per_node: int
    roles: tuple[Placement, ...]
    rule: str = "packed"  # packed | upstream (see the module doc)

    @property
    def workers(self) -> tuple[Placement, ...]:
        return tuple(p for p in self.roles if p.kind in ("gen", "ctx", "server"))

    def of_kind(self, kind: str) -> tuple[Placement, ...]:
        return tuple(p for p in self.roles if p.kind == kind)

    def role(self, name: str) -> Placement:
        for p in self.roles:
            if p.role == name:
                return p
        raise KeyError(name)

    @property
    def total_nodes(self) -> int:
        return 1 + max((n for p in self.roles for n in p.nodes), default=0)

    @property
    def total_gpus(self) -> int:
        return sum(p.gpus for p in self.roles)

    def summary_lines(self) -> list[str]:
        lines = [f"nodes: {self.total_nodes}   GPUs: {self.total_gpus} ({self.gpus_per_node} per node)",
                 f"node rule: {RULE_TEXT[self.rule]}"]
        for p in self.roles:
            nodes = ",".join(str(n) for n in p.nodes)
            gpu = f"{p.gpus} GPU" + ("s" if p.gpus != 1 else "")
            extra = f" (GPUs {p.gpu_offset}..{p.gpu_offset + p.gpus_per_node - 1} of the node)" if p.shares_node and p.gpus else ""
            lines.append(f"  {p.role:<14} {gpu:<9} node(s) {nodes}{extra}")
        return lines


def node_rule(config: Config) -> str:
    """``upstream`` when ``hardware.pack`` is false, else ``packed``."""
    return "upstream" if config.hardware.pack is False else "packed"


def build_topology(config: Config) -> Topology:
    """Compute the topology or raise a ConfigError naming the key that makes it impossible."""
    gpn = config.hardware.gpus_per_node
    rule = node_rule(config)
    servers: list[tuple[str, str, int, WorkerConfig, str]] = []
    wc = config.worker_config
    if config.kind == "aggr":
        assert wc.server is not None
        for i in range(config.hardware.num_servers):
            servers.append((f"SERVER_{i}", "server", i, wc.server, "worker_config.server"))
    else:
        assert wc.gen is not None
        for i in range(config.hardware.num_gen_servers):
            servers.append((f"GEN_{i}", "gen", i, wc.gen, "worker_config.gen"))
        if config.num_ctx_servers:
            assert wc.ctx is not None
            for i in range(config.num_ctx_servers):
                servers.append((f"CTX_{i}", "ctx", i, wc.ctx, "worker_config.ctx"))

    placements: list[Placement] = []
    next_node = 0
    open_node: int | None = None  # node with free GPUs for small servers
    used_on_open = 0
    for role, kind, idx, worker, key in servers:
        gpus = worker.gpus
        if gpus >= gpn:
            if gpus % gpn:
                raise ConfigError(
                    config.source,
                    f"{key}.tensor_parallel_size",
                    f"bad value: a server of {gpus} GPUs (tensor×pipeline×context) spans nodes of "
                    f"{gpn} GPUs unevenly; use a multiple of hardware.gpus_per_node={gpn}",
                )
            count = gpus // gpn
            if next_node + count > MAX_NODES:  # before building a huge node tuple
                raise ConfigError(config.source, "hardware", f"needs more than {MAX_NODES} nodes")
            placements.append(Placement(role, kind, idx, gpus, tuple(range(next_node, next_node + count)), gpn))
            next_node += count
            continue
        if rule == "upstream" or open_node is None or used_on_open + gpus > gpn:
            open_node = next_node
            next_node += 1
            used_on_open = 0
        placements.append(Placement(role, kind, idx, gpus, (open_node,), gpus, gpu_offset=used_on_open))
        used_on_open += gpus
        if next_node > MAX_NODES:
            break
    if next_node > MAX_NODES:
        raise ConfigError(config.source, "hardware", f"needs {next_node} nodes, more than {MAX_NODES}")

    # mark packed servers that share a node
    per_node: dict[int, int] = {}
    for p in placements:
        for n in p.nodes:
            per_node[n] = per_node.get(n, 0) + 1
    placements = [
        Placement(p.role, p.kind, p.index, p.gpus, p.nodes, p.gpus_per_node, p.gpu_offset,
                  any(per_node[n] > 1 for n in p.nodes))
        for p in placements
    ]
    if config.kind == "disagg":
        placements.append(Placement("DISAGG_SERVER", "router", 0, 0, (0,), 0, shares_node=True))
    placements.append(Placement("BENCHMARK", "benchmark", 0, 0, (0,), 0, shares_node=True))
    return Topology(gpn, tuple(placements), rule)
