"""Fuzzing the loader with malformed mutations of the shipped configs (hypothesis).

* in-process, 1000 examples: ``load_config``/``config_from_dict`` + ``build_topology`` (+ rendering the
  #SBATCH prefix and launch.sh when the config is valid) raise nothing but ``ConfigError``, whose message
  is one line naming the file;
* through the real CLI, ~50 surely-invalid examples: exit 2, the very same one stderr line, nothing written.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfsanity.common.errors import ConfigError
from perfsanity.plan.launch import LaunchPaths, render_launch_sh, render_prefix
from perfsanity.plan.prepare import prepare_direct
from perfsanity.spec.cluster import load_cluster
from perfsanity.spec.config import config_from_dict, load_config, read_yaml
from perfsanity.spec.topology import build_topology

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "test_configs"
CONFIGS = sorted(ROOT.glob("*/perf/*.yaml"))
BASE_RAW = [(p, read_yaml(p)) for p in CONFIGS]
BASE_TEXT = [(p, p.read_text()) for p in CONFIGS]
CLUSTER = load_cluster(ROOT / "clusters/example-gb200.yaml")
STRICT_SECTIONS = ("metadata", "slurm", "hardware", "environment", "benchmark", "accuracy", "profiling",
                   "timeouts", "worker_config")

WEIRD_STRINGS = [
    "", " ", "$(touch X)", "`touch X`", "'", '"', ";", "a;b", "\n", "x\ny", "\x00", "\t", "${X:-y}", "1 1",
    "A=1 B", "=", "-1", "0", "1e999", "nan", "inf", "-inf", "true", "no", "01:00:00\n", "é", "\u202e", "9" * 5000,
    "1,2,3", "e2e", "trtllm", "{}", "[]", "null", "~", "*", "&a", "!!python/object:os.system", "%", "@", "\\",
]
# huge ints are built lazily: hypothesis repr()s sampled_from elements, and a 5000-digit int has no repr
huge_ints = st.sampled_from([(1, 20), (-1, 20), (1, 400), (1, 5000), (-1, 5000), (1, 0)]).map(
    lambda se: se[0] * 10 ** se[1] if se[1] else 2**63
) | st.sampled_from([4097, 1025, 65])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WEIRD_STRINGS),
    st.text(max_size=12),
    st.binary(max_size=4),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-3, 3), st.none()), inner, max_size=3),
    ),
    max_leaves=6,
)
odd_keys = st.one_of(st.text(max_size=12), st.sampled_from(WEIRD_STRINGS), st.integers(-5, 5), st.none(),
                     st.booleans(), st.floats(allow_nan=False))


def paths_of(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in nested mappings (the root is ``()``)."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths_of(v, (*prefix, k))
    return out


def get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def typo(key: str, i: int) -> str:
    """A near-miss of ``key`` (drop, double or swap a letter)."""
    if not key:
        return "x"
    i %= len(key)
    choice = i % 3
    if choice == 0 and len(key) > 1:
        return key[:i] + key[i + 1:]
    if choice == 1:
        return key[:i] + key[i] + key[i:]
    return key[:i] + "z" + key[i + 1:]


@st.composite
def mutate_dict(draw, raw: Any, n_min: int = 1) -> Any:
    """Apply 1-4 random structural mutations to a deep copy of ``raw``."""
    data = copy.deepcopy(raw)
    for _ in range(draw(st.integers(n_min, 4))):
        paths = paths_of(data)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["set", "set", "set", "add", "add", "typo", "typo", "delete", "negative",
                                   "negative", "huge", "huge", "wrong_type", "wrong_type", "not_mapping", "top"]))
        if op == "top":
            data = draw(st.one_of(junk, st.just([data]), st.just(None)))
            continue
        if not isinstance(data, dict):
            break
        parent_path, key = path[:-1], path[-1] if path else None
        if key is None:
            parent, key = data, draw(odd_keys)
        else:
            parent = get(data, parent_path)
        if not isinstance(parent, dict):
            continue
        if op == "set":
            parent[key] = draw(junk)
        elif op == "add":
            target = parent.get(key) if isinstance(parent.get(key), dict) else parent
            target[draw(odd_keys)] = draw(junk)
        elif op == "typo" and isinstance(key, str) and key in parent:
            parent[typo(key, draw(st.integers(0, 50)))] = parent.pop(key)
        elif op == "delete":
            parent.pop(key, None)
        elif op == "negative":
            parent[key] = draw(st.integers(-(10**6), 0))
        elif op == "huge":
            parent[key] = draw(huge_ints | st.sampled_from([float("inf"), 1e308]))
        elif op == "wrong_type":
            old = parent.get(key)
            choice = draw(st.integers(0, 4))  # by index: sampled_from would repr() a 5000-digit int
            parent[key] = ([old], {"v": old}, f"not a {type(old).__name__}", None, True)[choice]
        elif op == "not_mapping":
            parent[key] = draw(st.sampled_from([[], [1], "section", 0, None, ["a", "b"]]))
    return data


INVALID_SNIPPETS = [
    "\nbroken: [unclosed\n", "\n\tindented_with_tab: 1\n", "\na: b: c\n", "\n? [x, y]\n: 1\n",
    "\nalias: *nowhere\n", "\nbad: !!python/object/apply:os.system ['touch X']\n", "\nbad: !!int abc\n",
    "\nbad_date: 2024-13-45\n", "\nnum: " + "9" * 5000 + "\n", "\n" + "[" * 600 + "\n", "\n- a list item\n",
    "\n\x00\n", "\n{a: 1\n", "\n'unterminated\n", "\nx: |\n bad\n  indent\n", "\n%YAML 9.9\n",
]


@st.composite
def mutate_text(draw, text: str) -> str:
    """A text-level mutation of a config's YAML."""
    lines = text.splitlines(keepends=True)
    op = draw(st.sampled_from(["dup_section", "dup_line", "insert", "truncate", "snippet", "replace", "indent"]))
    tops = [i for i, ln in enumerate(lines) if ln[:1].isalpha() and ":" in ln]
    if op == "dup_section" and tops:
        i = draw(st.sampled_from(tops))
        return text + "\n" + lines[i].split(":")[0] + ": {}\n"
    if not lines:
        return draw(st.sampled_from(INVALID_SNIPPETS))
    if op == "dup_line":
        i = draw(st.integers(0, len(lines) - 1))
        return "".join(lines[: i + 1] + [lines[i]] + lines[i + 1:])
    if op == "insert":
        pos = draw(st.integers(0, len(text)))
        junk_text = draw(st.text(alphabet=":[]{}&*!|>'\"%@`\t\n#-,? abc019", min_size=1, max_size=8))
        return text[:pos] + junk_text + text[pos:]
    if op == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    if op == "snippet":
        return text + draw(st.sampled_from(INVALID_SNIPPETS))
    if op == "indent":
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = draw(st.sampled_from([" ", "\t", "   "])) + lines[i]
        return "".join(lines)
    return draw(st.sampled_from(["- 1\n- 2\n", "just text\n", "42\n", "[]\n", "null\n", "", "---\n...\n",
                                 "!!binary aGVsbG8=\n", "a: 1\n---\nb: 2\n"]))


@st.composite
def malformed(draw) -> tuple[str, Path, Any]:
    """('dict', base path, raw mapping) or ('text', base path, YAML text)."""
    if draw(st.booleans()):
        path, raw = draw(st.sampled_from(BASE_RAW))
        return "dict", path, draw(mutate_dict(raw))
    path, text = draw(st.sampled_from(BASE_TEXT))
    if draw(st.booleans()):
        mutated = draw(mutate_dict(read_yaml(path)))
        try:
            text = yaml.safe_dump(mutated, allow_unicode=True)
        except (yaml.YAMLError, ValueError):  # ValueError: an int too long for str()
            text = "metadata: {model_name: x}\nhardware: {gpus_per_node: " + "9" * 5000 + "}\n"
    return "text", path, draw(mutate_text(text))


def check_config_error(exc: ConfigError, source: str) -> None:
    text = str(exc)
    assert "\n" not in text and "\r" not in text, repr(text)
    assert text.startswith(f"{source}: "), text
    assert len(text) < 2000, len(text)


def exercise(kind: str, base_path: Path, payload: Any, workdir: Path, use_cluster: bool) -> None:
    """Load/validate/compute/render; only ConfigError may come out."""
    config_kind = "aggr" if "aggr" in base_path.parts else "disagg"
    target = workdir / config_kind / "perf" / "fuzz-case.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    cluster = CLUSTER if use_cluster else None
    try:
        if kind == "dict":
            config = config_from_dict(payload, name="fuzz-case", kind=config_kind, source=str(target),
                                      cluster=cluster)
        else:
            target.write_text(payload, encoding="utf-8", errors="surrogatepass")
            config = load_config(target, cluster=cluster)
        topology = build_topology(config)
        prefix = render_prefix(config, topology, workdir / "job")
        render_launch_sh(config, topology, LaunchPaths(REPO, workdir / "job", target), prefix_text=prefix,
                         srun_args=[], draft_text="", test_id=config.test_id())
        if kind == "text":  # (a dict may carry a 5000-digit engine option no YAML file can hold)
            yaml.safe_dump(config.resolved_dict())
    except ConfigError as exc:
        check_config_error(exc, str(target))


@pytest.mark.slow  # seconds each: a real engine/tool process or many subprocesses
def test_fuzz_loader_in_process() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)

        @settings(max_examples=1000, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(malformed(), st.booleans())
        def run(case: tuple, use_cluster: bool) -> None:
            exercise(*case, workdir, use_cluster)

        run()


def test_fuzz_non_mapping_roots_in_process() -> None:
    @settings(max_examples=100, deadline=None, database=None)
    @given(junk.filter(lambda v: not isinstance(v, dict)))
    def run(raw: Any) -> None:
        try:
            config_from_dict(raw, name="x", source="x.yaml")
        except ConfigError as exc:
            check_config_error(exc, "x.yaml")
        else:
            raise AssertionError(f"accepted {raw!r}")

    run()


# ---- through the CLI --------------------------------------------------------------------------


@st.composite
def surely_invalid_text(draw) -> tuple[Path, str]:
    """A config text that must be rejected: random mutations plus one mutation that is always an error."""
    path, raw = draw(st.sampled_from(BASE_RAW))
    data = draw(mutate_dict(raw, n_min=0)) if draw(st.booleans()) else copy.deepcopy(raw)
    if not isinstance(data, dict):
        data = {"metadata": data}
    final = draw(st.sampled_from(["unknown_key", "typo_section", "bad_int", "snippet", "non_mapping"]))
    text_tail = ""
    if final == "unknown_key":
        section = draw(st.sampled_from(STRICT_SECTIONS))
        if not isinstance(data.get(section), dict):
            data[section] = {}
        data[section][draw(st.sampled_from(["concurency_list", "gpus_per_nod", "jobname", "x", "$(touch X)"]))] = 1
    elif final == "typo_section":
        section = draw(st.sampled_from(STRICT_SECTIONS))
        data[typo(section, draw(st.integers(0, 20)))] = {}
    elif final == "bad_int":
        data.setdefault("hardware", {}) if isinstance(data.get("hardware"), dict) else data.update(hardware={})
        data["hardware"]["gpus_per_node"] = draw(st.sampled_from([-1, 0, 65, "four", [4], {"n": 4}, 10**30]))
    elif final == "snippet":
        text_tail = draw(st.sampled_from([s for s in INVALID_SNIPPETS if "[" * 600 not in s]))
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        text = "metadata: {model_name: x}\nbroken: [\n"
    if final == "non_mapping":
        text = "- " + text.replace("\n", "\n  ")
    return path, text + text_tail


@pytest.mark.slow  # seconds each: a real engine/tool process or many subprocesses
def test_fuzz_cli_exit_2_one_line(h) -> None:
    cases: list[tuple[Path, str]] = []

    @settings(max_examples=50, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(surely_invalid_text())
    def collect(case: tuple[Path, str]) -> None:
        cases.append(case)

    collect()
    assert len(cases) >= 40
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        arg_lists, expected, outs = [], [], []
        for i, (base_path, text) in enumerate(cases):
            kind = "aggr" if "aggr" in base_path.parts else "disagg"
            cfg = work / f"case{i}" / kind / "perf" / f"fuzz-{i}.yaml"
            cfg.parent.mkdir(parents=True)
            cfg.write_text(text, encoding="utf-8", errors="surrogatepass")
            out = work / f"case{i}" / "out"
            try:
                prepare_direct(cfg, out)
            except ConfigError as exc:
                expected.append(f"error: {exc}")
            else:
                raise AssertionError(f"meant to be invalid but accepted:\n{text}")
            arg_lists.append(["--config", cfg, "--out", out, "--dry-run"])
            outs.append(out)
        for res, want, out, (_, text) in zip(h.run_many(arg_lists, cwd=work), expected, outs, cases, strict=True):
            assert res.returncode == 2, f"exit {res.returncode}\n{res.stderr}\n--- config ---\n{text}"
            assert res.stderr_lines == [want], f"{res.stderr!r} != {want!r}\n--- config ---\n{text}"
            h.assert_nothing_written(out)
        assert not list(work.rglob("X"))
