"""perfsanity.spec.config: schema, loader, error conversion (one line naming file + key path), derived values."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from perfsanity.common.errors import ConfigError
from perfsanity.spec.config import (
    Config,
    apply_overrides,
    config_from_dict,
    job_time_seconds,
    kind_of,
    load_config,
    read_yaml,
)
from perfsanity.spec.topology import build_topology

CONFIGS_ROOT = Path(__file__).resolve().parents[2] / "test_configs"
CONFIGS = sorted(CONFIGS_ROOT.glob("*/perf/*.yaml"))

MOCKER = CONFIGS_ROOT / "disagg/perf/mocker-ctx1-gen1.yaml"
AGGR = CONFIGS_ROOT / "aggr/perf/b200-llama-3.3-70b-fp8_1k1k_tp4x2.yaml"


def base() -> dict:
    return read_yaml(MOCKER)


def err_of(raw: dict, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, name=kw.pop("name", "t"), source=kw.pop("source", "t.yaml"), **kw)
    return info.value


def write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---- every shipped config -------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load(path: Path) -> None:
    config = load_config(path)
    assert config.name == path.stem
    assert config.kind == kind_of(path)
    assert config.source == str(path)
    topo = build_topology(config)
    assert topo.total_nodes >= 1
    assert config.test_id().endswith(path.stem)
    yaml.safe_dump(config.resolved_dict())  # plain data only


def test_kind_of() -> None:
    assert kind_of(Path("test_configs/aggr/perf/x.yaml")) == "aggr"
    assert kind_of(Path("test_configs/disagg/perf/x.yaml")) == "disagg"
    assert kind_of(Path("x.yaml")) == "disagg"


def test_test_id_forms() -> None:
    c = load_config(MOCKER)
    assert c.test_id() == "disagg_upload-e2e-mocker-ctx1-gen1"
    assert c.test_id("gen_only") == "disagg_upload-gen_only-mocker-ctx1-gen1"
    assert load_config(AGGR).test_id("e2e") == "aggr_upload-b200-llama-3.3-70b-fp8_1k1k_tp4x2"


def test_config_is_frozen() -> None:
    c = load_config(MOCKER)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type varies by version
        c.benchmark.multi_round = 3  # type: ignore[misc]


# ---- unknown keys and did-you-mean -----------------------------------------------------


@pytest.mark.parametrize(
    ("section", "typo", "right"),
    [
        ("benchmark", "concurency_list", "concurrency_list"),
        ("slurm", "job_nam", "job_name"),
        ("hardware", "gpus_per_nod", "gpus_per_node"),
        ("metadata", "backnd", "backend"),
        ("environment", "worker_env_vars", "worker_env_var"),
        ("timeouts", "server_redy", "server_ready"),
        ("profiling", "nsys_onn", "nsys_on"),
        ("accuracy", "enable_accuracy_tests", "enable_accuracy_test"),
        ("worker_config", "genn", "gen"),
    ],
)
def test_typo_names_key_path_and_suggests(section: str, typo: str, right: str) -> None:
    raw = base()
    raw.setdefault(section, {})[typo] = 1
    e = err_of(raw)
    assert e.file == "t.yaml"
    assert e.key_path == f"{section}.{typo}"
    assert f"did you mean {right!r}" in str(e)
    assert "\n" not in str(e)


def test_top_level_typo() -> None:
    raw = base()
    raw["benchmarks"] = raw.pop("benchmark")
    e = err_of(raw)
    assert e.key_path == "benchmarks"
    assert "did you mean 'benchmark'" in str(e)


def test_engine_sections_pass_unknown_keys_through() -> None:
    raw = base()
    raw["worker_config"]["gen"]["some_new_engine_flag"] = {"nested": [1, 2]}
    c = config_from_dict(raw, name="t")
    assert c.worker_config.gen.engine_options()["some_new_engine_flag"] == {"nested": [1, 2]}
    # typed defaults that were not written do not appear
    assert "pipeline_parallel_size" not in c.worker_config.gen.engine_options()


# ---- wrong values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "key_path"),
    [
        (("hardware", "gpus_per_node"), "four", "hardware.gpus_per_node"),
        (("hardware", "gpus_per_node"), 0, "hardware.gpus_per_node"),
        (("hardware", "num_gen_servers"), -1, "hardware.num_gen_servers"),
        (("benchmark", "mode"), "e2e2", "benchmark.mode"),
        (("benchmark", "client"), "curl", "benchmark.client"),
        (("benchmark", "benchmark_ratio"), 1.5, "benchmark.benchmark_ratio"),
        (("benchmark", "input_length"), [1], "benchmark.input_length"),
        (("metadata", "backend"), "vllm", "metadata.backend"),
        (("metadata", "model_name"), "", "metadata.model_name"),
        (("slurm", "job_time"), "tomorrow", "slurm.job_time"),
        (("slurm", "timeout"), 10, "slurm.timeout"),
        (("slurm", "extra_args"), "--x='unclosed", "slurm.extra_args"),
        (("worker_config", "gen", "tensor_parallel_size"), 0, "worker_config.gen.tensor_parallel_size"),
        (("worker_config", "gen", "tensor_parallel_size"), 1e300, "worker_config.gen.tensor_parallel_size"),
        (("environment", "worker_env_var"), "NOT-A-NAME=1", "environment.worker_env_var"),
        (("environment", "worker_env_var"), ["A=1"], "environment.worker_env_var"),
        (("timeouts", "shutdown"), 10**9, "timeouts.shutdown"),
        (("gate",), [1], "gate"),
    ],
)
def test_wrong_values_name_key_path(path: tuple, value: object, key_path: str) -> None:
    raw = base()
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    e = err_of(raw)
    assert e.key_path == key_path, str(e)
    assert str(e).startswith(f"t.yaml: {key_path}: ")
    assert "\n" not in str(e)


def test_missing_metadata() -> None:
    raw = base()
    del raw["metadata"]
    assert err_of(raw).key_path == "metadata"


@pytest.mark.parametrize("section", ["metadata", "environment", "worker_config", "hardware"])
def test_section_that_is_not_a_mapping(section: str) -> None:
    raw = base()
    raw[section] = "oops"
    assert err_of(raw).key_path == section


def test_disagg_needs_gen_and_ctx() -> None:
    raw = base()
    del raw["worker_config"]["gen"]
    assert err_of(raw).key_path == "worker_config.gen"
    raw = base()
    del raw["worker_config"]["ctx"]
    assert err_of(raw).key_path == "worker_config.ctx"
    raw["benchmark"]["mode"] = "gen_only_no_context"
    c = config_from_dict(raw, name="t")
    assert c.num_ctx_servers == 0
    raw = base()
    raw["hardware"]["num_gen_servers"] = 0
    assert err_of(raw).key_path == "hardware.num_gen_servers"


def test_aggr_needs_server() -> None:
    raw = read_yaml(AGGR)
    del raw["worker_config"]["server"]
    e = err_of(raw, kind="aggr")
    assert e.key_path == "worker_config.server"


def test_moe_larger_than_server() -> None:
    raw = base()
    raw["worker_config"]["gen"]["moe_expert_parallel_size"] = 64
    e = err_of(raw)
    assert e.key_path == "worker_config.gen"
    assert "moe_expert_parallel_size=64" in str(e)


def test_profiling_range() -> None:
    raw = base()
    raw["profiling"] = {"profile_start_iter": 5, "profile_stop_iter": 1}
    assert err_of(raw).key_path == "profiling"


@pytest.mark.parametrize("key", ["name", "kind", "source"])
def test_derived_keys_rejected(key: str) -> None:
    raw = base()
    raw[key] = "x"
    assert err_of(raw).key_path == key


def test_bad_config_name() -> None:
    e = err_of(base(), name="bad name")
    assert "must match" in str(e)


# ---- concurrency list and job time ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1 8 64", (1, 8, 64)), ("1,8", (1, 8)), ([1, 8], (1, 8)), (4, (4,)), (["2", 3.0], (2, 3))],
)
def test_concurrency_list_forms(value: object, expected: tuple) -> None:
    raw = base()
    raw["benchmark"]["concurrency_list"] = value
    assert config_from_dict(raw, name="t").benchmark.concurrency_list == expected


@pytest.mark.parametrize(
    "value",
    ["", [], "1 1", [0], [-1], [True], True, [1.5], "a b", {"a": 1}, [2_000_000],
     [float("inf")], [float("nan")], [10**5000], "9" * 5000, [None]],
)
def test_concurrency_list_invalid(value: object) -> None:
    raw = base()
    raw["benchmark"]["concurrency_list"] = value
    e = err_of(raw)
    assert e.key_path == "benchmark.concurrency_list"
    assert "\n" not in str(e) and len(str(e)) < 400


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 1800), ("30:15", 1815), ("01:00:00", 3600), ("1-00", 86400), ("1-02:03", 93780), ("1-02:03:04", 93784)],
)
def test_job_time_seconds(text: str, seconds: int) -> None:
    assert job_time_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "1h", "1:2:3:4", "-1", "01:00:00 extra", "1-"])
def test_job_time_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        job_time_seconds(text)


# ---- YAML reading -----------------------------------------------------------------------


def test_duplicate_key(tmp_path: Path) -> None:
    p = write(tmp_path, "metadata: {model_name: a}\nslurm: {}\nslurm: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert "duplicate key 'slurm'" in str(info.value)
    assert "line 3" in str(info.value)
    assert info.value.file == str(p)


def test_nested_duplicate_key(tmp_path: Path) -> None:
    p = write(tmp_path, "metadata:\n  model_name: a\n  model_name: b\n")
    with pytest.raises(ConfigError, match="duplicate key 'model_name'"):
        load_config(p)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "42\n"])
def test_non_mapping_yaml(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    "text",
    ["metadata: [unclosed\n", "a: b: c\n", "\tmetadata: {}\n", "metadata: !!python/object:os.system x\n",
     "? [a, b]\n: 1\n", "[" * 600, "{" * 600 + "}" * 600, "a: \x00\n", "metadata: {model_name: a}\n---\nb: 1\n",
     "metadata: {model_name: a}\nbenchmark: {multi_round: " + "9" * 5000 + "}\n", "a: 2024-13-45\n",
     "a: !!int abc\n", "a: [!!float x]\n"],
    ids=["unclosed", "mapping-values", "tab", "python-tag", "unhashable-key", "deep-list", "deep-map", "nul",
         "two-docs", "5000-digit-int", "bad-date", "bad-int-tag", "bad-float-in-list"],
)
def test_invalid_yaml_is_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError):
        load_config(p)


def test_empty_file_is_missing_metadata(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""))
    assert info.value.key_path == "metadata"


@pytest.mark.parametrize("raw", [["a"], "abc", 5, None, [("metadata", {})]])
def test_config_from_dict_non_mapping(raw: object) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        config_from_dict(raw, name="t", source="t.yaml")  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [1, "a\nb", "a.b", "x" * 500, (1, 2), None, True])
def test_odd_keys_give_one_short_line(key: object) -> None:
    raw = base()
    raw["hardware"][key] = 1
    e = err_of(raw)
    assert "\n" not in str(e)
    assert len(str(e)) < 600


# ---- overrides --------------------------------------------------------------------------


def test_overrides_win_and_do_not_mutate() -> None:
    raw = base()
    before = copy.deepcopy(raw)
    c = config_from_dict(raw, name="t", overrides={"benchmark.concurrency_list": "2 4",
                                                    "worker_config.gen.max_batch_size": 7,
                                                    "accuracy.tasks": "mmlu"})
    assert c.benchmark.concurrency_list == (2, 4)
    assert c.worker_config.gen.engine_options()["max_batch_size"] == 7
    assert c.accuracy.tasks == "mmlu"
    assert raw == before


def test_override_into_scalar_is_error() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides({"benchmark": 5}, {"benchmark.mode": "e2e"}, source="s")
    assert info.value.key_path == "benchmark"


def test_override_typo_is_caught() -> None:
    e = err_of(base(), overrides={"benchmark.concurency_list": "1"})
    assert e.key_path == "benchmark.concurency_list"


# ---- resolved config --------------------------------------------------------------------


def test_resolved_dict_env_strings() -> None:
    raw = base()
    raw["environment"]["worker_env_var"] = "A=1 B='two words' C=${SLURM_LOCALID}"
    d = config_from_dict(raw, name="t").resolved_dict()
    env = d["environment"]
    assert env["worker_env_var"] == "A=1 B='two words' C='${SLURM_LOCALID}'"
    assert env["ctx_worker_env_var"] == ""  # empty env settings stay strings
    assert d["accuracy"]["env_var"] == ""
    assert d["metadata"]["supported_gpus"] == ["CPU"]
    assert "source" not in d
    # the env strings parse back to the same assignments
    again = copy.deepcopy(raw)
    again["environment"] = {k: v for k, v in env.items() if k.endswith("env_var")}
    assert config_from_dict(again, name="t").environment == config_from_dict(raw, name="t").environment


def test_resolved_dict_leaves_engine_options_alone() -> None:
    raw = base()
    raw["worker_config"]["gen"]["env_like"] = [{"name": "a", "value": "b"}]
    d = config_from_dict(raw, name="t").resolved_dict()
    assert d["worker_config"]["gen"]["env_like"] == [{"name": "a", "value": "b"}]


def test_derived_properties() -> None:
    raw = base()
    raw["environment"]["container_image"] = "env-img"
    raw["environment"]["container_mount"] = "/a:/a"
    c = config_from_dict(raw, name="t")
    assert (c.container_image, c.container_mounts) == ("env-img", "/a:/a")
    raw["slurm"]["container_image"] = "slurm-img"
    raw["slurm"]["container_mounts"] = "/b:/b"
    c = config_from_dict(raw, name="t")
    assert (c.container_image, c.container_mounts) == ("slurm-img", "/b:/b")
    assert c.job_time_s == 1200
    assert c.benchmark.num_prompts(8) == 64
    assert isinstance(c, Config)


# ---- TensorRT-LLM compatibility (see also test_upstream_configs.py) --------------------------------


def test_kind_of_upstream_folders() -> None:
    assert kind_of(Path("tests/scripts/perf-sanity/aggregated/x.yaml")) == "aggr"
    assert kind_of(Path("tests/scripts/perf-sanity/disaggregated/x.yaml")) == "disagg"


@pytest.mark.parametrize("text", ["02:00:00", "'02:00:00'", "1:30:00", "'45'"])
def test_unquoted_job_time_is_not_yaml_base_60(tmp_path: Path, text: str) -> None:
    """TensorRT-LLM writes ``job_time: 02:00:00`` unquoted; YAML 1.1 would make it the int 7200."""
    text_yaml = MOCKER.read_text()
    assert 'job_time: "00:20:00"' in text_yaml
    config = load_config(write(tmp_path, text_yaml.replace('job_time: "00:20:00"', f"job_time: {text}")))
    assert config.slurm.job_time == text.strip("'")
    assert config.job_time_s == job_time_seconds(text.strip("'"))


def test_other_yaml_numbers_unchanged(tmp_path: Path) -> None:
    data = read_yaml(write(tmp_path, "a: 12\nb: -0x1f\nc: 1.5e+3\nd: .inf\ne: 1_000\nf: 3:25\ng: 1:20.5\nh: 0o7\n"))
    assert data == {"a": 12, "b": -31, "c": 1500.0, "d": float("inf"), "e": 1000, "f": "3:25", "g": "1:20.5",
                    "h": "0o7"}
    assert yaml.safe_load("x: 017") == read_yaml(write(tmp_path, "x: 017\n"))  # YAML 1.1 octal kept


def test_pack_is_optional_and_only_shown_when_set() -> None:
    raw = base()
    raw["hardware"].pop("pack", None)
    config = config_from_dict(raw, name="t", source="t.yaml")
    assert config.hardware.pack is None and "pack" not in config.resolved_dict()["hardware"]
    raw["hardware"]["pack"] = False
    config = config_from_dict(raw, name="t", source="t.yaml")
    assert config.resolved_dict()["hardware"]["pack"] is False
    raw["hardware"]["pack"] = "sometimes"
    assert err_of(raw).key_path == "hardware.pack"


def test_upstream_precheck_section_is_accepted() -> None:
    raw = base()
    raw["cache_transceiver_precheck"] = {"enabled": True, "step_timeout_s": 600}
    config = config_from_dict(raw, name="t", source="t.yaml")
    assert config.cache_transceiver_precheck == {"enabled": True, "step_timeout_s": 600}
    assert "cache_transceiver_precheck" not in config_from_dict(base(), name="t", source="t.yaml").resolved_dict()
