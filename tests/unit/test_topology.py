"""perfsanity.spec.topology: node slices per role, with hypothesis property tests over random valid layouts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfsanity.common.errors import ConfigError
from perfsanity.spec.config import config_from_dict, load_config
from perfsanity.spec.topology import MAX_NODES, Placement, Topology, build_topology

ROOT = Path(__file__).resolve().parents[2] / "test_configs"
META = {"model_name": "m", "backend": "trtllm"}


def disagg(gpn: int, gen: dict, ctx: dict | None, n_gen: int = 1, n_ctx: int = 1, mode: str = "e2e"):
    wc = {"gen": gen}
    if ctx is not None:
        wc["ctx"] = ctx
    raw = {"metadata": META, "hardware": {"gpus_per_node": gpn, "num_gen_servers": n_gen, "num_ctx_servers": n_ctx},
           "benchmark": {"mode": mode}, "worker_config": wc}
    return config_from_dict(raw, name="t", source="t.yaml")


def aggr(gpn: int, server: dict, n: int):
    raw = {"metadata": META, "hardware": {"gpus_per_node": gpn, "num_servers": n}, "worker_config": {"server": server}}
    return config_from_dict(raw, name="t", kind="aggr", source="t.yaml")


def layout(topo: Topology) -> dict[str, tuple]:
    return {p.role: (p.nodes, p.gpus, p.gpu_offset, p.shares_node) for p in topo.roles}


# ---- the shipped configs ----------------------------------------------------------------


def test_dsr1_1k1k_gen_dep16_ctx_dep4() -> None:
    t = build_topology(load_config(ROOT / "disagg/perf/gb200-deepseek-r1-fp4_1k1k_ctx2_dep4_gen1_dep16_mtp3.yaml"))
    assert layout(t) == {
        "GEN_0": ((0, 1, 2, 3), 16, 0, False),
        "CTX_0": ((4,), 4, 0, False),
        "CTX_1": ((5,), 4, 0, False),
        "DISAGG_SERVER": ((0,), 0, 0, True),
        "BENCHMARK": ((0,), 0, 0, True),
    }
    assert (t.total_nodes, t.total_gpus) == (6, 24)
    assert t.role("GEN_0").tasks(per_gpu=True) == 16
    assert t.role("GEN_0").tasks(per_gpu=False) == 4
    assert t.role("BENCHMARK").tasks(per_gpu=True) == 1


def test_mocker_packs_two_servers_on_one_node() -> None:
    t = build_topology(load_config(ROOT / "disagg/perf/mocker-ctx1-gen1.yaml"))
    assert layout(t)["GEN_0"] == ((0,), 2, 0, True)
    assert layout(t)["CTX_0"] == ((0,), 2, 2, True)
    assert t.total_nodes == 1
    assert "GPUs 2..3 of the node" in "\n".join(t.summary_lines())


def test_aggr_two_tp4_servers_share_an_8_gpu_node() -> None:
    t = build_topology(load_config(ROOT / "aggr/perf/b200-llama-3.3-70b-fp8_1k1k_tp4x2.yaml"))
    assert [p.role for p in t.roles] == ["SERVER_0", "SERVER_1", "BENCHMARK"]
    assert layout(t)["SERVER_1"] == ((0,), 4, 4, True)
    assert t.total_nodes == 1
    assert t.of_kind("router") == ()


def test_gen_only_no_context_has_no_ctx() -> None:
    t = build_topology(disagg(4, {"tensor_parallel_size": 4}, None, n_gen=2, n_ctx=3, mode="gen_only_no_context"))
    assert [p.role for p in t.roles] == ["GEN_0", "GEN_1", "DISAGG_SERVER", "BENCHMARK"]


def test_role_lookup() -> None:
    t = build_topology(disagg(4, {}, {}))
    with pytest.raises(KeyError):
        t.role("NOPE")
    assert isinstance(t.role("CTX_0"), Placement)


# ---- impossible topologies ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("gen", "ctx", "gpn", "key"),
    [
        ({"tensor_parallel_size": 6}, {}, 4, "worker_config.gen.tensor_parallel_size"),
        ({}, {"tensor_parallel_size": 3, "pipeline_parallel_size": 3}, 4, "worker_config.ctx.tensor_parallel_size"),
        ({"tensor_parallel_size": 12}, {}, 8, "worker_config.gen.tensor_parallel_size"),
    ],
)
def test_uneven_multi_node_server(gen: dict, ctx: dict, gpn: int, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_topology(disagg(gpn, gen, ctx))
    assert info.value.key_path == key
    assert info.value.file == "t.yaml"
    assert f"gpus_per_node={gpn}" in str(info.value)


def test_huge_topology_is_rejected_quickly() -> None:
    start = time.monotonic()
    big = {"tensor_parallel_size": 4096, "pipeline_parallel_size": 4096, "context_parallel_size": 4096}
    with pytest.raises(ConfigError) as info:
        build_topology(disagg(1, big, big, n_gen=1024, n_ctx=1024))
    assert info.value.key_path == "hardware"
    with pytest.raises(ConfigError):  # many whole-node servers
        build_topology(disagg(1, {"tensor_parallel_size": 8}, {"tensor_parallel_size": 8}, n_gen=1024, n_ctx=1024))
    assert time.monotonic() - start < 2


def test_max_nodes_exactly_fits() -> None:
    t = build_topology(disagg(1, {"tensor_parallel_size": 4}, {"tensor_parallel_size": 4}, n_gen=512, n_ctx=512))
    assert t.total_nodes == MAX_NODES


# ---- properties ---------------------------------------------------------------------------


@st.composite
def server_shape(draw, gpn: int) -> dict:
    """tensor/pipeline/context sizes whose product is < gpn or a multiple of gpn (a valid server)."""
    if gpn > 1 and draw(st.booleans()):
        gpus = draw(st.integers(1, gpn - 1))
    else:
        gpus = gpn * draw(st.integers(1, 4))
    divisors = [d for d in range(1, gpus + 1) if gpus % d == 0]
    pp = draw(st.sampled_from(divisors))
    rest = gpus // pp
    cp = draw(st.sampled_from([d for d in divisors if rest % d == 0]))
    return {"tensor_parallel_size": rest // cp, "pipeline_parallel_size": pp, "context_parallel_size": cp}


@st.composite
def valid_configs(draw):
    gpn = draw(st.sampled_from([1, 2, 3, 4, 6, 8, 16]))
    if draw(st.integers(0, 4)) == 0:
        return aggr(gpn, draw(server_shape(gpn)), draw(st.integers(1, 6)))
    mode = draw(st.sampled_from(["e2e", "gen_only", "gen_only_no_context"]))
    n_ctx = draw(st.integers(0 if mode == "gen_only_no_context" else 1, 6))
    return disagg(gpn, draw(server_shape(gpn)), draw(server_shape(gpn)), draw(st.integers(1, 6)), n_ctx, mode)


def check_properties(config, topo: Topology) -> None:
    gpn = config.hardware.gpus_per_node
    workers = topo.workers
    # expected servers, gen before ctx
    if config.kind == "aggr":
        expected = [f"SERVER_{i}" for i in range(config.hardware.num_servers)]
        per_server = {"server": config.worker_config.server.gpus}
    else:
        expected = [f"GEN_{i}" for i in range(config.hardware.num_gen_servers)]
        expected += [f"CTX_{i}" for i in range(config.num_ctx_servers)]
        per_server = {"gen": config.worker_config.gen.gpus}
        if config.num_ctx_servers:
            per_server["ctx"] = config.worker_config.ctx.gpus
    assert [p.role for p in workers] == expected
    # every GPU counted once
    for p in workers:
        assert p.gpus == per_server[p.kind]
        assert p.gpus == p.gpus_per_node * p.num_nodes
    assert topo.total_gpus == sum(per_server[p.kind] for p in workers)
    used: dict[int, set[int]] = {}
    for p in workers:
        for n in p.nodes:
            gpus = set(range(p.gpu_offset, p.gpu_offset + p.gpus_per_node))
            assert not (used.setdefault(n, set()) & gpus), f"GPU used twice on node {n}"
            used[n] |= gpus
    # no node over-subscribed: GPUs of the servers on a node add up to at most gpus_per_node
    for n, gpus in used.items():
        assert sum(p.gpus_per_node for p in workers if n in p.nodes) <= gpn
        assert max(gpus) < gpn and min(gpus) >= 0
    # multi-node (or full-node) servers take whole nodes, alone
    for p in workers:
        if p.gpus >= gpn:
            assert p.gpus_per_node == gpn and p.gpu_offset == 0
            assert list(p.nodes) == list(range(p.nodes[0], p.nodes[0] + p.num_nodes))
            for other in workers:
                if other is not p:
                    assert not set(other.nodes) & set(p.nodes)
        else:
            assert p.num_nodes == 1
    # shares_node says whether another server is on the node
    for p in workers:
        others = [o for o in workers if o is not p and set(o.nodes) & set(p.nodes)]
        assert p.shares_node == bool(others)
    # nodes contiguous from 0 and total_nodes = max index + 1
    worker_nodes = sorted({n for p in workers for n in p.nodes})
    assert worker_nodes == list(range(len(worker_nodes)))
    assert topo.total_nodes == max(n for p in topo.roles for n in p.nodes) + 1 == len(worker_nodes)
    # gen servers before ctx servers; servers of a kind in order
    gens, ctxs = topo.of_kind("gen"), topo.of_kind("ctx")
    if gens and ctxs:
        assert max(n for p in gens for n in p.nodes) <= min(n for p in ctxs for n in p.nodes)
    for group in (gens, ctxs, topo.of_kind("server")):
        starts = [p.nodes[0] for p in group]
        assert starts == sorted(starts)
    # router and benchmark on node 0, no GPUs
    extra = [p for p in topo.roles if p.kind in ("router", "benchmark")]
    assert [p.role for p in extra] == (["DISAGG_SERVER", "BENCHMARK"] if config.kind == "disagg" else ["BENCHMARK"])
    for p in extra:
        assert p.nodes == (0,) and p.gpus == 0 and p.shares_node
    assert topo.roles[-1].role == "BENCHMARK"


@settings(max_examples=300, deadline=None, database=None)
@given(valid_configs())
def test_valid_layouts_have_all_properties(config) -> None:
    check_properties(config, build_topology(config))


@settings(max_examples=200, deadline=None, database=None)
@given(
    gpn=st.integers(1, 16),
    gen=st.fixed_dictionaries({"tensor_parallel_size": st.integers(1, 40), "pipeline_parallel_size": st.integers(1, 4)}),
    ctx=st.fixed_dictionaries({"tensor_parallel_size": st.integers(1, 40), "context_parallel_size": st.integers(1, 3)}),
    n_gen=st.integers(1, 5),
    n_ctx=st.integers(1, 5),
)
def test_random_layouts_are_valid_or_config_error(gpn: int, gen: dict, ctx: dict, n_gen: int, n_ctx: int) -> None:
    config = disagg(gpn, gen, ctx, n_gen, n_ctx)
    uneven = [g for g in (config.worker_config.gen.gpus, config.worker_config.ctx.gpus) if g >= gpn and g % gpn]
    if uneven:
        with pytest.raises(ConfigError) as info:
            build_topology(config)
        assert info.value.key_path.startswith("worker_config.")
    else:
        check_properties(config, build_topology(config))


# ---- the node rule ------------------------------------------------------------------------------


def test_upstream_rule_gives_every_server_its_own_nodes() -> None:
    from perfsanity.spec.config import read_yaml

    raw = read_yaml(ROOT / "disagg/perf/mocker-ctx1-gen1.yaml")
    assert raw["hardware"]["pack"] is True  # the shipped mocker config opts in
    raw["hardware"]["pack"] = False
    t = build_topology(config_from_dict(raw, name="t", source="t.yaml"))
    assert t.rule == "upstream"
    assert layout(t)["GEN_0"] == ((0,), 2, 0, False)
    assert layout(t)["CTX_0"] == ((1,), 2, 0, False)
    assert t.total_nodes == 2
    assert "node rule: upstream" in "\n".join(t.summary_lines())


def test_packed_rule_is_named_in_the_summary() -> None:
    t = build_topology(aggr(8, {"tensor_parallel_size": 4}, 2))
    assert t.rule == "packed" and t.total_nodes == 1
    assert "node rule: packed" in "\n".join(t.summary_lines())
    raw_up = {"metadata": META, "hardware": {"gpus_per_node": 8, "num_servers": 2, "pack": False},
              "worker_config": {"server": {"tensor_parallel_size": 4}}}
    up = build_topology(config_from_dict(raw_up, name="t", kind="aggr", source="t.yaml"))
    assert up.total_nodes == 2 and [p.nodes for p in up.workers] == [(0,), (1,)]
