"""perfsanity.spec.benchmark_types: point expansion and labels, config errors naming file and field,
the aiperf command line of each type, and what a point's labels reach (summary table, keys)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from perfsanity.common.errors import ConfigError
from perfsanity.load.aiperf import CLIENT as AIPERF
from perfsanity.load.results_json import ConcurrencyResult
from perfsanity.load.summary import format_table
from perfsanity.plan.jobmeta import MatchKeys, keys_at
from perfsanity.spec.benchmark_types import points, rate_text, trace_requests
from perfsanity.spec.config import config_from_dict, load_config, read_yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients"))
from clienttest_support import make_run  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PERF = REPO / "test_configs/disagg/perf"
#: the trace example lives outside test_configs/: offline, aiperf 0.13.0 cannot replay it (docs/benchmark-types.md)
TRACE_EXAMPLE = REPO / "examples/benchmark-types/disagg/perf/mocker-ctx1-gen1-trace.yaml"
MOCKER = PERF / "mocker-ctx1-gen1.yaml"
TRACE = REPO / "test_configs/traces/mocker-small.jsonl"


def config_with(source: str = "t.yaml", **bench):
    raw = read_yaml(MOCKER)
    raw["benchmark"] = {**raw["benchmark"], **bench}
    return config_from_dict(raw, name="t", source=source)


def labels(config) -> list[str]:
    return [p.label for p in points(config.benchmark, source=config.source)]


def test_default_type_is_concurrency_with_todays_labels():
    config = load_config(MOCKER)
    assert config.benchmark.type == "concurrency"
    pts = points(config.benchmark)
    assert [(p.label, p.concurrency, p.num_prompts, p.request_rate, p.input_length) for p in pts] == [
        ("c1", 1, 8, None, 128), ("c8", 8, 64, None, 128)]


def test_request_rates_times_concurrencies_with_arrival():
    config = config_with(type="request_rate", request_rates=[2, 0.5], arrival="poisson", concurrency_list="4 8")
    pts = points(config.benchmark)
    assert [p.label for p in pts] == ["rps2.c4", "rps2.c8", "rps0p5.c4", "rps0p5.c8"]
    assert {(p.request_rate, p.arrival, p.benchmark_type) for p in pts} == {
        (2.0, "poisson", "request_rate"), (0.5, "poisson", "request_rate")}
    assert rate_text(10.0) == "10" and rate_text(1.25) == "1p25"


def test_isl_osl_pairs_replace_the_lengths_per_point():
    config = config_with(isl_osl=[[1024, 1024], [8192, 1024]], concurrency_list="8")
    pts = points(config.benchmark)
    assert [(p.label, p.input_length, p.output_length) for p in pts] == [
        ("isl1024_osl1024.c8", 1024, 1024), ("isl8192_osl1024.c8", 8192, 1024)]
    rated = config_with(type="request_rate", request_rates=[2], isl_osl=[[1024, 128]], concurrency_list="8")
    assert labels(rated) == ["isl1024_osl128.rps2.c8"]


def test_trace_is_one_point_named_by_the_file_and_counted_from_it():
    config = load_config(TRACE_EXAMPLE)
    (pt,) = points(config.benchmark)
    lines = TRACE.read_text().splitlines()
    assert (pt.label, pt.benchmark_type, pt.num_prompts, pt.trace_file) == (
        "trace.mocker-small", "trace", len(lines), str(TRACE))
    for line in lines:  # the mooncake fields aiperf's mooncake_trace loader reads
        record = json.loads(line)
        assert set(record) == {"timestamp", "input_length", "output_length", "hash_ids"}


def test_manual_has_no_points():
    assert points(load_config(PERF / "mocker-ctx1-gen1-manual.yaml").benchmark) == ()


@pytest.mark.parametrize("name", ["rate", "isl2", "trace", "manual"])
def test_shipped_type_configs_load_and_stay_small(name: str):
    config = load_config(TRACE_EXAMPLE if name == "trace" else PERF / f"mocker-ctx1-gen1-{name}.yaml")
    assert config.benchmark.type == {"rate": "request_rate", "isl2": "concurrency"}.get(name, name)
    assert sum(p.num_prompts for p in points(config.benchmark)) <= 40
    assert config.benchmark.repeats in (None, 1) and (name == "manual" or config.benchmark.repeats == 1)


@pytest.mark.parametrize(("bench", "key", "match"), [
    ({"type": "request_rate"}, "benchmark.request_rates", "is required with benchmark.type request_rate"),
    ({"request_rates": [1]}, "benchmark.request_rates", "applies to benchmark.type request_rate"),
    ({"type": "request_rate", "request_rates": [0]}, "benchmark.request_rates", "not a rate"),
    ({"type": "request_rate", "request_rates": [2, 2]}, "benchmark.request_rates", "twice"),
    ({"arrival": "bursty"}, "benchmark.arrival", "constant"),
    ({"type": "sweep"}, "benchmark.type", "manual"),
    ({"isl_osl": [[1024]]}, "benchmark.isl_osl", "each entry must be a pair [isl, osl]"),
    ({"isl_osl": [[0, 10]]}, "benchmark.isl_osl", "lengths must be in"),
    ({"type": "trace"}, "benchmark.trace_file", "is required with benchmark.type trace"),
    ({"trace_file": "x.jsonl"}, "benchmark.trace_file", "applies to benchmark.type trace"),
    ({"type": "manual", "isl_osl": [[1, 1]]}, "benchmark.isl_osl", "does not apply"),
])
def test_config_errors_name_file_and_field(bench, key, match):
    with pytest.raises(ConfigError) as info:
        config_with(source="my.yaml", **bench)
    assert info.value.file == "my.yaml"
    assert info.value.key_path == key, str(info.value)
    assert match in info.value.message


@pytest.mark.parametrize(("text", "match"), [
    ("", "holds no request"),
    ("{not json\n", "line 1: invalid JSON"),
    ('{"timestamp": 0, "input_length": 8, "output_length": 4}\n[1]\n', "line 2: must be a JSON object"),
    ('{"timestamp": 0, "input_length": -1, "output_length": 4}\n', "field 'input_length' must be an integer"),
    ('{"timestamp": 0, "output_length": 4}\n', "field 'input_length' must be an integer"),
    ('{"timestamp": 0, "input_length": 8, "output_length": 4, "hash_ids": ["a"]}\n', "'hash_ids' must be a list"),
    ('{"timestamp": 0, "input_length": 600, "output_length": 4, "hash_ids": [1]}\n', "does not fit 1 hash_ids"),
    ('{"timestamp": 0, "input_length": 128, "output_length": 4, "hash_ids": [1]}\n'
     '{"timestamp": 1, "input_length": 64, "output_length": 4, "hash_ids": [1]}\n',
     "line 2: hash id 1 is a block of 64 tokens here and of 128 before"),
])
def test_bad_trace_is_one_error_naming_config_trace_line_and_field(tmp_path: Path, text: str, match: str):
    trace = tmp_path / "t.jsonl"
    trace.write_text(text)
    config = config_with(source="my.yaml", type="trace", trace_file=str(trace))
    with pytest.raises(ConfigError) as info:
        points(config.benchmark, source=config.source)
    assert (info.value.file, info.value.key_path) == ("my.yaml", "benchmark.trace_file")
    assert str(trace) in info.value.message and match in info.value.message


def test_missing_trace_names_the_file(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"my.yaml: benchmark.trace_file: .*nope.jsonl: file not found"):
        trace_requests(tmp_path / "nope.jsonl", source="my.yaml")


# ------------------------------------------------------------------- aiperf command lines (aiperf 0.13.0)


def test_aiperf_request_rate_command():
    cmd = AIPERF.command(make_run(request_rate=2.5, arrival="poisson"))
    assert shlex.join(cmd.argv) == (
        "aiperf profile --model tiny --url http://127.0.0.1:8000 --endpoint-type completions --streaming "
        "--concurrency 4 --request-count 16 --request-rate 2.5 --arrival-pattern poisson --workers-max 1 "
        "--synthetic-input-tokens-mean 128 --synthetic-input-tokens-stddev 0 "
        "--output-tokens-mean 32 --output-tokens-stddev 0 --extra-inputs ignore_eos:true "
        "--extra-inputs min_tokens:32 --tokenizer /models/tiny --use-server-token-count --random-seed 0 "
        "--request-timeout-seconds 600 --warmup-request-count 2 --ui none --no-gpu-telemetry "
        "--artifact-dir /jobs/j1/client/c4"
    )


def test_aiperf_trace_command_replays_on_the_traces_timestamps():
    cmd = AIPERF.command(make_run(trace_file="/repo/test_configs/traces/mocker-small.jsonl", warmup_requests=0))
    assert shlex.join(cmd.argv) == (
        "aiperf profile --model tiny --url http://127.0.0.1:8000 --endpoint-type completions --streaming "
        "--concurrency 4 --workers-max 1 "
        "--input-file /repo/test_configs/traces/mocker-small.jsonl --custom-dataset-type mooncake_trace "
        "--extra-inputs ignore_eos:true --tokenizer /models/tiny --use-server-token-count --random-seed 0 "
        "--request-timeout-seconds 600 --ui none --no-gpu-telemetry --artifact-dir /jobs/j1/client/c4"
    )


# ------------------------------------------------------------------- labels downstream


def _result(concurrency: int, **point) -> ConcurrencyResult:
    return ConcurrencyResult(concurrency=concurrency, client="aiperf", requested=4, completed=4, failed=0, **point)


def test_labels_reach_keys_and_the_summary_table():
    plain = _result(8)
    rated = _result(8, point="rps2.c8", benchmark_type="request_rate", request_rate=2.0, arrival="constant")
    longer = _result(8, point="isl8192_osl1024.c8", isl=8192, osl=1024)
    assert (plain.label, rated.label, longer.label) == ("c8", "rps2.c8", "isl8192_osl1024.c8")
    common = MatchKeys(config_name="t", model="m", precision="", gpu_type="CPU", backend="b", mode="e2e",
                       num_ctx_servers=1, num_gen_servers=1, ctx_tp=1, ctx_pp=1, ctx_ep=1, ctx_attention_dp=False,
                       gen_tp=1, gen_pp=1, gen_ep=1, gen_attention_dp=False, isl=128, osl=32, concurrency=0,
                       total_gpus=2)
    k_plain, k_rated, k_longer = (keys_at(common, r) for r in (plain, rated, longer))
    assert (k_plain.benchmark_type, k_plain.point, k_plain.isl) == ("concurrency", "c8", 128)
    assert (k_rated.benchmark_type, k_rated.point, k_rated.concurrency) == ("request_rate", "rps2.c8", 8)
    assert (k_longer.point, k_longer.isl, k_longer.osl) == ("isl8192_osl1024.c8", 8192, 1024)
    assert len({k_plain, k_rated, k_longer}) == 3  # three history series at one concurrency
    by_label = {"rps2.c8": k_rated}
    assert keys_at(by_label, rated) is k_rated and keys_at(by_label, plain) is None
    assert keys_at({8: k_plain}, plain) is k_plain  # a plain point is still found by its concurrency
    assert format_table([plain]).splitlines()[0].split()[0] == "conc"  # today's table, unchanged
    table = format_table([rated, longer])
    assert table.splitlines()[0].split()[:2] == ["point", "conc"]
    assert "rps2.c8" in table and "isl8192_osl1024.c8" in table


def test_bad_trace_fails_at_submit_with_one_line_and_writes_nothing(tmp_path: Path):
    import subprocess

    config = tmp_path / "disagg/perf/bad-trace.yaml"
    config.parent.mkdir(parents=True)
    text = (TRACE_EXAMPLE).read_text()
    config.write_text(text.replace("test_configs/traces/mocker-small.jsonl", str(tmp_path / "missing.jsonl")))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "submit.py"), "--config", str(config), "--out", str(out),
                           "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (f"error: {config}: benchmark.trace_file: {tmp_path / 'missing.jsonl'}: "
                                   "file not found")
    assert not out.exists()


def test_a_client_that_cannot_run_the_type_is_refused_naming_the_field():
    from perfsanity.load import get_client
    from perfsanity.load.base import check_benchmark_type

    for name in ("sglang-bench-serving", "trtllm-benchmark-serving"):
        check_benchmark_type(get_client(name), "concurrency", source="my.yaml")
        with pytest.raises(ConfigError) as info:
            check_benchmark_type(get_client(name), "request_rate", source="my.yaml")
        assert (info.value.file, info.value.key_path) == ("my.yaml", "benchmark.client")
        assert "cannot run benchmark.type request_rate" in info.value.message
    for kind in ("concurrency", "request_rate", "trace", "manual"):
        check_benchmark_type(get_client("aiperf"), kind, source="my.yaml")
