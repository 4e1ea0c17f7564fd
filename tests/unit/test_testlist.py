"""perfsanity.spec.testlist: TensorRT-LLM L0 test-list lines → (kind, mode, config name)."""

from __future__ import annotations

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
