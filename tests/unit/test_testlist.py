"""perfsanity.spec.testlist: TensorRT-LLM L0 test-list lines → (kind, mode, config name)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfsanity.common.errors import ConfigError
from perfsanity.spec import testlist
from perfsanity.spec.testlist import parse_test_id, parse_test_list

Sel = testlist.TestSelection  # not named Test*: pytest would try to collect it

PREFIX = "perf/test_perf_sanity.py::test_e2e"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"{PREFIX}[disagg_upload-e2e-gb200-x_1k1k] TIMEOUT (120)", Sel("disagg", "e2e", "gb200-x_1k1k")),
        (f"{PREFIX}[disagg_upload-gen_only-gb200-x] TIMEOUT (120)", Sel("disagg", "gen_only", "gb200-x")),
        (f"{PREFIX}[disagg_upload-gen_only_no_context-c] TIMEOUT (120)",
         Sel("disagg", "gen_only_no_context", "c")),
        (f"{PREFIX}[disagg_upload-mocker-ctx1-gen1] TIMEOUT (120)", Sel("disagg", None, "mocker-ctx1-gen1")),
        (f"{PREFIX}[aggr_upload-b200-llama-3.3-70b] TIMEOUT (120)", Sel("aggr", None, "b200-llama-3.3-70b")),
        (f"{PREFIX}[aggr_upload-e2e-x]", Sel("aggr", None, "e2e-x")),  # aggr has no mode part
        (f"  {PREFIX}[disagg_upload-e2e-c]   ", Sel("disagg", "e2e", "c")),
        (f"tests/integration/defs/{PREFIX}[disagg_upload-c]", Sel("disagg", None, "c")),
        (f"{PREFIX}[disagg_upload-e2e]", Sel("disagg", None, "e2e")),  # a config named like a mode
    ],
)
def test_forms(tmp_path: Path, line: str, expected: Sel) -> None:
    p = tmp_path / "list.txt"
    p.write_text(f"# comment\n\n{line}\n")
    assert parse_test_list(p) == [expected]


def test_several_lines_in_order(tmp_path: Path) -> None:
    p = tmp_path / "list.txt"
    p.write_text(f"{PREFIX}[disagg_upload-e2e-a] TIMEOUT (120)\n{PREFIX}[aggr_upload-b] TIMEOUT (120)\n")
    assert [s.config_name for s in parse_test_list(p)] == ["a", "b"]


def test_config_path() -> None:
    root = Path("/r/test_configs")
    assert Sel("disagg", "e2e", "c").config_path(root) == root / "disagg/perf/c.yaml"
    assert Sel("aggr", None, "c").config_path(root) == root / "aggr/perf/c.yaml"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "no test in the test list"),
        ("# only a comment\n\n", "no test in the test list"),
        ("perf/test_perf_sanity.py::test_other[x]\n", "line 1"),
        (f"# c\n{PREFIX}[unknown_upload-c]\n", "expected disagg_upload"),
        (f"{PREFIX}[disagg_upload-]\n", "no config name"),
        (f"{PREFIX}[disagg_upload-e2e-../../etc/x]\n", "must match"),
        (f"{PREFIX}[disagg_upload-e2e-$(touch X)]\n", "must match"),
        (f"{PREFIX}[aggr_upload-]\n", "no config name"),
    ],
)
def test_bad_lists(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "list.txt"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        parse_test_list(p)
    assert needle in str(info.value)
    assert str(p) in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read test list"):
        parse_test_list(tmp_path / "missing.txt")


def test_parse_test_id_direct() -> None:
    assert parse_test_id("disagg_upload-gen_only-x") == Sel("disagg", "gen_only", "x")
    with pytest.raises(ConfigError):
        parse_test_id("x")


# ---- upstream forms, TIMEOUT, --split-group ------------------------------------------------------


@pytest.mark.parametrize(
    ("test_id", "expected"),
    [
        ("disagg-e2e-c", Sel("disagg", "e2e", "c")),
        ("aggr-cfg-server", Sel("aggr", None, "cfg-server")),
        ("aggr_upload-ctx_only-gb200_x-y", Sel("aggr", None, "ctx_only-gb200_x-y")),
    ],
)
def test_upstream_prefixes(test_id: str, expected: Sel) -> None:
    assert parse_test_id(test_id) == expected


def test_aggr_id_readings() -> None:
    sel = parse_test_id("aggr_upload-deepseek_r1_fp4_v2_2_nodes_grace_blackwell-r1_fp4_v2_tep8_mtp3")
    assert sel.upstream_server == ("deepseek_r1_fp4_v2_2_nodes_grace_blackwell", "r1_fp4_v2_tep8_mtp3")
    assert sel.ctx_only_config is None
    assert parse_test_id("aggr_upload-cfg").upstream_server == ("cfg", None)
    ctx = parse_test_id("aggr_upload-ctx_only-gb200_deepseek-r1-fp4_128k8k_ccb-UCX")
    assert ctx.ctx_only_config == "gb200_deepseek-r1-fp4_128k8k_ccb-UCX"
    assert parse_test_id("disagg_upload-e2e-ctx_only-x").ctx_only_config is None  # only aggr ids
    with pytest.raises(ConfigError, match="no config name after ctx_only-"):
        parse_test_id("aggr_upload-ctx_only")


def entries_of(tmp_path: Path, text: str) -> list:
    p = tmp_path / "list.txt"
    p.write_text(text)
    return testlist.parse_test_entries(p)


def test_timeout_suffix_is_kept(tmp_path: Path) -> None:
    es = entries_of(tmp_path, f"# c\n{PREFIX}[disagg_upload-e2e-a] TIMEOUT (120)\n{PREFIX}[aggr_upload-b]\n"
                    f"{PREFIX}[aggr_upload-c]  TIMEOUT(5) ISOLATION\n")
    assert [(e.selection.config_name, e.timeout_min, e.timeout_s) for e in es] == [
        ("a", 120, 7200), ("b", None, None), ("c", 5, 300)]
    assert es[0].node_id == f"{PREFIX}[disagg_upload-e2e-a]"
    assert es[1].source == f"{tmp_path / 'list.txt'}:3"
    with pytest.raises(ConfigError, match="TIMEOUT \\(0\\)"):
        entries_of(tmp_path, f"{PREFIX}[aggr_upload-b] TIMEOUT (0)\n")


def test_select_nth_line(tmp_path: Path) -> None:
    es = entries_of(tmp_path, "".join(f"{PREFIX}[aggr_upload-t{i}]\n" for i in range(3)))
    pick = lambda g: testlist.select_entry(es, g, source="l").selection.config_name  # noqa: E731
    assert [pick(0), pick(1), pick(2), pick(3)] == ["t0", "t0", "t1", "t2"]
    with pytest.raises(ConfigError, match="beyond the 3 test"):
        pick(4)
    with pytest.raises(ConfigError, match="must be >= 0"):
        pick(-1)
    # without --splits/--group in pytestCommand the N-th line is used even with a command
    assert testlist.select_entry(es, 2, source="l", pytest_command="pytest -v").selection.config_name == "t1"


def test_least_duration_groups() -> None:
    ids = ["a", "b", "c", "d", "e"]
    durations = {"a": 10.0, "b": 40.0, "c": 30.0, "d": 20.0}  # e: unknown -> average 25
    groups = testlist.least_duration_groups(ids, durations, 2)
    # order b(40) c(30) e(25) d(20) a(10): b->0, c->1, e->1 (30 < 40), d->0 (40 < 55), a->1 (55 < 60)
    assert groups == [["b", "d"], ["c", "e", "a"]]
    assert testlist.least_duration_groups(["x", "y"], {}, 2) == [["x"], ["y"]]  # ties: node id order


def test_select_least_duration(tmp_path: Path) -> None:
    es = entries_of(tmp_path, "".join(f"{PREFIX}[aggr_upload-t{i}]\n" for i in range(3)))
    defs = tmp_path / "llm/tests/integration/defs"
    defs.mkdir(parents=True)
    (defs / ".test_durations").write_text(json.dumps({es[2].node_id: 100, es[0].node_id: 50, es[1].node_id: 1}))
    cmd = "pytest --splits 3 --group={g} --splitting-algorithm=least_duration"
    got = [testlist.select_entry(es, g, source="l", pytest_command=cmd.format(g=g), llm_src=tmp_path / "llm")
           .selection.config_name for g in (1, 2, 3)]
    assert got == ["t2", "t0", "t1"]
    with pytest.raises(ConfigError, match="only least_duration"):
        testlist.select_entry(es, 1, source="l", pytest_command="pytest --splits 3 --group 1")
    with pytest.raises(ConfigError, match="differs from pytestCommand's --group 2"):
        testlist.select_entry(es, 1, source="l", pytest_command=cmd.format(g=2))
    with pytest.raises(ConfigError, match="holds 2 tests"):
        testlist.select_entry(es, 2, source="l", llm_src=tmp_path / "llm",
                              pytest_command="pytest --splits 2 --group 2 --splitting-algorithm least_duration")
    with pytest.raises(ConfigError, match="must be within"):
        testlist.select_entry(es, 4, source="l", pytest_command="pytest --splits 3 --group 4")


def test_pytest_command_of_prefix() -> None:
    prefix = ('#!/bin/bash\nexport jobWorkspace=/w\nexport pytestCommand="LLM_MODELS_ROOT=/m pytest -v"\n'
              "pytestCommand='pytest --splits 2 --group 1'\n")
    assert testlist.pytest_command_of(prefix) == "pytest --splits 2 --group 1"
    assert testlist.pytest_command_of("#!/bin/bash\n") is None
