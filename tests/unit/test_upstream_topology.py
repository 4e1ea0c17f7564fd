"""Upstream's node arithmetic on configs nobody wrote by hand: hypothesis draws disaggregated and
aggregated layouts in TensorRT-LLM's format; with ``hardware.pack: false`` the topology's node count is
upstream's ``Σ servers × ceil(gpus / gpus_per_node)``, every server's slice is its own and contiguous,
generation servers come first, and packing never needs more nodes than that."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from perfsanity.common.errors import ConfigError
from perfsanity.spec import upstream
from perfsanity.spec.config import config_from_dict
from perfsanity.spec.topology import build_topology

GPN = st.sampled_from([1, 2, 4, 8])
PAR = st.sampled_from([1, 2, 4, 8, 16])


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@st.composite
def disagg_layouts(draw):
    gpn = draw(GPN)
    sides = {}
    for side in ("ctx", "gen"):
        sides[side] = {"tensor_parallel_size": draw(PAR), "pipeline_parallel_size": draw(st.sampled_from([1, 2])),
                       "context_parallel_size": 1, "moe_expert_parallel_size": 1, "max_batch_size": 8}
    n_ctx, n_gen = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    raw = {"metadata": {"model_name": "m", "model_dir_name": "M"},
           "slurm": {"partition": "<partition>", "account": "<account>", "job_time": "02:00:00"},
           "hardware": {"gpus_per_node": gpn, "num_ctx_servers": n_ctx, "num_gen_servers": n_gen},
           "environment": {"model_path": "<model_path>", "work_dir": "<full_path_to_work_dir>"},
           "benchmark": {"mode": "e2e", "concurrency_list": "1 8"},
           "worker_config": sides}
    return raw


def gpus(side: dict) -> int:
    return side["tensor_parallel_size"] * side["pipeline_parallel_size"] * side["context_parallel_size"]


def uneven(g: int, gpn: int) -> bool:
    return g > gpn and g % gpn != 0


@settings(max_examples=150, deadline=None)
@given(disagg_layouts())
def test_unseen_disagg_layouts_follow_upstream(raw: dict) -> None:
    gpn = raw["hardware"]["gpus_per_node"]
    wc, hw = raw["worker_config"], raw["hardware"]
    want = (hw["num_ctx_servers"] * ceil_div(gpus(wc["ctx"]), gpn)
            + hw["num_gen_servers"] * ceil_div(gpus(wc["gen"]), gpn))
    unpacked = {**raw, "hardware": {**hw, "pack": False}}
    if uneven(gpus(wc["ctx"]), gpn) or uneven(gpus(wc["gen"]), gpn):
        # upstream would ask srun for nodes × gpus_per_node tasks, more than the server's ranks: refused
        try:
            build_topology(config_from_dict(unpacked, name="t", source="t.yaml"))
        except ConfigError as exc:
            assert "spans nodes" in str(exc)
            return
        raise AssertionError("an uneven multi-node server was accepted")
    topo = build_topology(config_from_dict(unpacked, name="t", source="t.yaml"))
    assert topo.rule == "upstream" and topo.total_nodes == want
    seen: set[int] = set()
    cursor = 0
    for p in topo.workers:  # GEN_* first, then CTX_*, each on fresh contiguous nodes
        assert p.nodes == tuple(range(cursor, cursor + len(p.nodes)))
        assert not seen & set(p.nodes) and not p.shares_node
        assert p.gpus_per_node == min(p.gpus, gpn)
        seen |= set(p.nodes)
        cursor += len(p.nodes)
    kinds = [p.kind for p in topo.workers]
    assert kinds == sorted(kinds, key=lambda k: k != "gen")
    packed = build_topology(config_from_dict(raw, name="t", source="t.yaml"))
    assert packed.rule == "packed" and packed.total_nodes <= want


@st.composite
def aggregated_files(draw):
    gpn = draw(GPN)
    n = draw(st.integers(1, 4))
    servers = []
    for i in range(n):
        tp, pp = draw(PAR), draw(st.sampled_from([1, 2]))
        clients = [{"name": f"c{j}", "concurrency": c, "iterations": 3, "isl": 128, "osl": 16, "backend": "openai"}
                   for j, c in enumerate(draw(st.lists(st.integers(1, 512), min_size=1, max_size=3, unique=True)))]
        servers.append({"name": f"s{i}", "model_name": "m", "tensor_parallel_size": tp,
                        "pipeline_parallel_size": pp, "max_batch_size": 4, "client_configs": clients})
    return {"metadata": {"model_name": "m", "supported_gpus": ["B200"]}, "hardware": {"gpus_per_node": gpn},
            "server_configs": servers}


@settings(max_examples=100, deadline=None)
@given(aggregated_files())
def test_unseen_aggregated_files_follow_upstream(raw: dict) -> None:
    gpn = raw["hardware"]["gpus_per_node"]
    for entry in raw["server_configs"]:
        name, ours = upstream.aggregated_case(raw, entry["name"], config="cfg", source="cfg.yaml")
        ours["hardware"]["pack"] = False
        g = entry["tensor_parallel_size"] * entry["pipeline_parallel_size"]
        config = config_from_dict(ours, name=name, kind="aggr", source="cfg.yaml")
        assert config.test_id() == f"aggr_upload-cfg-{entry['name']}"
        assert config.benchmark.concurrency_list == tuple(c["concurrency"] for c in entry["client_configs"])
        if uneven(g, gpn):
            continue
        topo = build_topology(config)
        assert topo.total_nodes == ceil_div(g, gpn)
        assert topo.role("SERVER_0").gpus_per_node == min(g, gpn)
