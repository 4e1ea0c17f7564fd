"""perfsanity.spec.envvars: parsing ``K=V`` strings, run-time ``${VAR}`` expansion, never running a command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfsanity.spec.envvars import EnvAssignment, apply, expand, merge, parse_env_string, to_string

A = EnvAssignment


def test_parse_typical_worker_env() -> None:
    got = parse_env_string("TLLM_LOG_LEVEL=INFO UCX_TLS=rc,cuda_ipc CUDA_DEVICE=${SLURM_LOCALID}")
    assert got == (A("TLLM_LOG_LEVEL", "INFO"), A("UCX_TLS", "rc,cuda_ipc"), A("CUDA_DEVICE", "${SLURM_LOCALID}"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("   \n ", ()),
        ("A=", (A("A", ""),)),
        ("A=''", (A("A", ""),)),
        ("B='two words'", (A("B", "two words"),)),
        ('C="x y" D=1', (A("C", "x y"), A("D", "1"))),
        ("E=a=b=c", (A("E", "a=b=c"),)),
        ("F=#notacomment", (A("F", "#notacomment"),)),
        ("_X9=1\nY=2", (A("_X9", "1"), A("Y", "2"))),
        ('A="$(touch X)"', (A("A", "$(touch X)"),)),
        ("A='`touch X`;rm -rf /'", (A("A", "`touch X`;rm -rf /"),)),
    ],
)
def test_parse_forms(text: str, expected: tuple) -> None:
    assert parse_env_string(text) == expected


@pytest.mark.parametrize(
    "text",
    ["NOVALUE", "1A=1", "A-B=1", "=1", "A='unclosed", "$(touch X)=1", "'A\n'=1", "'A '=1", "A=\x00"],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_env_string(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${SLURM_LOCALID}", {"SLURM_LOCALID": "3"}, "3"),
        ("$SLURM_LOCALID", {"SLURM_LOCALID": "3"}, "3"),
        ("gpu${SLURM_LOCALID}x", {"SLURM_LOCALID": "3"}, "gpu3x"),
        ("${MISSING}", {}, ""),
        ("${MISSING:-fallback}", {}, "fallback"),
        ("${EMPTY:-fallback}", {"EMPTY": ""}, "fallback"),
        ("${SET:-fallback}", {"SET": "v"}, "v"),
        ("${X:-}", {}, ""),
        ("${X:-a b/c}", {}, "a b/c"),
        ("$A$B", {"A": "1", "B": "2"}, "12"),
        ("cost $5", {}, "cost $5"),
        ("$", {}, "$"),
        ("${not closed", {}, "${not closed"),
        ("$(touch X)", {}, "$(touch X)"),
        ("`touch X`", {}, "`touch X`"),
        ("${X:-$(touch X)}", {}, "$(touch X)"),
        ("*", {}, "*"),
    ],
)
def test_expand(value: str, env: dict, expected: str) -> None:
    assert expand(value, env) == expected


def test_expand_is_single_pass() -> None:
    # a value that itself looks like a reference is not expanded again
    assert expand("${A}", {"A": "${B}", "B": "secret"}) == "${B}"


def test_no_command_ever_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "X"
    text = f'A="$(touch {marker})" B=\'`touch {marker}`\' C="${{D:-$(touch {marker})}}" E="x; touch {marker}"'
    assignments = parse_env_string(text)
    env = apply(assignments, {"PATH": os.environ.get("PATH", "")})
    assert env["A"] == f"$(touch {marker})"
    assert env["B"] == f"`touch {marker}`"
    assert env["C"] == f"$(touch {marker})"
    assert env["E"] == f"x; touch {marker}"
    assert not marker.exists()
    assert not (tmp_path / "X").exists()


def test_apply_refers_to_earlier_assignments_and_base() -> None:
    got = apply(parse_env_string("A=1 B=${A}2 C=${BASE}-${B} BASE=changed"), {"BASE": "b"})
    assert got == {"A": "1", "B": "12", "C": "b-12", "BASE": "changed"}


def test_apply_does_not_modify_base() -> None:
    base = {"X": "1"}
    apply((A("X", "2"),), base)
    assert base == {"X": "1"}


def test_merge_later_wins_first_position_kept() -> None:
    got = merge((A("A", "1"), A("B", "1")), (A("C", "2"), A("A", "2")))
    assert got == (A("A", "2"), A("B", "1"), A("C", "2"))


def test_to_string_quotes() -> None:
    assert to_string((A("A", "1"), A("B", "two words"), A("C", ""))) == "A=1 B='two words' C=''"
    assert str(A("A", "x y")) == "A=x y"


_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
_values = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)  # control characters are errors


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.tuples(_names, _values), max_size=6))
def test_to_string_round_trips(pairs: list[tuple[str, str]]) -> None:
    assignments = tuple(A(n, v) for n, v in pairs)
    assert parse_env_string(to_string(assignments)) == assignments


@settings(max_examples=60, deadline=None, database=None)
@given(_values, st.dictionaries(_names, _values, max_size=4))
def test_expand_never_raises_and_keeps_non_references(value: str, env: dict) -> None:
    out = expand(value, env)
    assert isinstance(out, str)
    if "$" not in value:
        assert out == value
