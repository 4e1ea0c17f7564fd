"""aiperf client: golden command lines, and the parser on summaries shaped like aiperf 0.13.0's
``profile_export_aiperf.json`` (metric objects ``{unit, avg, p50, p90, p99, ...}``)."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import pytest
from clienttest_support import make_run

from perfsanity.load.aiperf import CLIENT as AIPERF
from perfsanity.load.aiperf import SUMMARY_FILE
from perfsanity.load.base import ClientOutputError
from perfsanity.load.validity import check

# ---------------------------------------------------------------- command lines


def test_command_golden():
    cmd = AIPERF.command(make_run())
    assert shlex.join(cmd.argv) == (
        "aiperf profile --model tiny --url http://127.0.0.1:8000 --endpoint-type completions --streaming "
        "--concurrency 4 --request-count 16 --request-rate 10000 --workers-max 1 --synthetic-input-tokens-mean 128 --synthetic-input-tokens-stddev 0 "
        "--output-tokens-mean 32 --output-tokens-stddev 0 --extra-inputs ignore_eos:true "
        "--extra-inputs min_tokens:32 --tokenizer /models/tiny --use-server-token-count --random-seed 0 "
        "--request-timeout-seconds 600 --warmup-request-count 2 --ui none --no-gpu-telemetry "
        "--artifact-dir /jobs/j1/client/c4"
    )
    assert cmd.tool == "aiperf"
    assert cmd.env_unset == ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    assert dict(cmd.env_set) == {}


def test_command_variants():
    cmd = AIPERF.command(make_run(streaming=False, warmup_requests=0, tokenizer=None, request_timeout_s=12.5,
                                  dataset_file="/data/prompts.jsonl", random_seed=42))
    assert shlex.join(cmd.argv) == (
        "aiperf profile --model tiny --url http://127.0.0.1:8000 --endpoint-type completions "
        "--concurrency 4 --request-count 16 --request-rate 10000 --workers-max 1 --input-file /data/prompts.jsonl --custom-dataset-type single-turn "
        "--prompt-corpus random "
        "--output-tokens-mean 32 --output-tokens-stddev 0 --extra-inputs ignore_eos:true "
        "--extra-inputs min_tokens:32 --use-server-token-count --random-seed 42 "
        "--request-timeout-seconds 12.5 --ui none --no-gpu-telemetry --artifact-dir /jobs/j1/client/c4"
    )
    # no local tokenizer dir: leave the offline switches alone (the hub-id path needs them honoured)
    assert cmd.env_unset == ()


def test_workers_scale_with_concurrency_up_to_the_cores():
    from perfsanity.load.aiperf import workers_for

    assert [workers_for(c, cores=2) for c in (1, 64, 65, 256, 2048)] == [1, 1, 2, 2, 2]
    assert [workers_for(c, cores=16) for c in (1, 64, 65, 256, 2048)] == [1, 1, 2, 4, 16]


# ---------------------------------------------------------------- parser

def _metric(unit: str, avg: float, p50=None, p90=None, p99=None, count=None) -> dict:
    m = {"unit": unit, "avg": avg, "p1": None, "p50": p50, "p90": p90, "p99": p99, "min": None, "max": None,
         "std": None}
    if count is not None:
        m["count"] = count
    return m


SUMMARY = {
    "schema_version": "1.4",
    "aiperf_version": "0.13.0",
    "request_throughput": _metric("requests/sec", 24.5),
    "request_latency": _metric("ms", 74.5, 73.75, 77.19, 78.03, count=16),
    "request_count": _metric("requests", 16.0),
    "time_to_first_token": _metric("ms", 25.0, 24.8, 27.8, 28.4, count=16),
    "inter_token_latency": _metric("ms", 3.30, 3.29, 3.35, 3.36, count=16),
    "inter_chunk_latency": _metric("ms", 3.31, 3.24, 3.52, 6.46, count=496),
    "output_token_throughput": _metric("tokens/sec", 784.0),
    "output_token_throughput_per_user": _metric("tokens/sec/user", 302.8, 303.0, count=16),
    "total_token_throughput": _metric("tokens/sec", 3920.0),
    "total_output_tokens": _metric("tokens", 512.0),
    "benchmark_duration": _metric("sec", 0.653),
    "total_isl": _metric("tokens", 2048.0),
    "total_osl": _metric("tokens", 512.0),
    "input_config": {"whatever": "ignored"},
    "was_cancelled": False,
    "is_complete": True,
    "error_summary": [],
}


def _run_with(tmp_path: Path, data, **changes):
    (tmp_path / SUMMARY_FILE).write_text(data if isinstance(data, str) else json.dumps(data))
    return make_run(out_dir=tmp_path, **changes)


def test_parse_maps_every_field(tmp_path: Path):
    r = AIPERF.parse(_run_with(tmp_path, SUMMARY))
    assert (r.concurrency, r.client, r.requested, r.completed, r.failed) == (4, "aiperf", 16, 16, 0)
    assert (r.input_tokens, r.output_tokens, r.duration_s) == (2048, 512, pytest.approx(0.653))
    assert (r.request_throughput, r.output_token_throughput, r.total_token_throughput) == (24.5, 784.0, 3920.0)
    assert r.output_token_throughput_per_user == 302.8
    assert r.output_token_throughput_per_gpu == 392.0  # 784 / total_gpus 2
    assert (r.ttft.mean, r.ttft.median, r.ttft.p90, r.ttft.p99) == (25.0, 24.8, 27.8, 28.4)
    assert (r.tpot.mean, r.tpot.median, r.tpot.p90, r.tpot.p99) == (3.30, 3.29, 3.35, 3.36)  # inter_token_latency
    assert (r.itl.mean, r.itl.median, r.itl.p90, r.itl.p99) == (3.31, 3.24, 3.52, 6.46)  # inter_chunk_latency
    assert (r.e2e.mean, r.e2e.median, r.e2e.p90, r.e2e.p99) == (74.5, 73.75, 77.19, 78.03)
    assert r.raw_path == str(tmp_path / SUMMARY_FILE)
    assert check(r, requested=16) == []


def test_parse_converts_time_units(tmp_path: Path):
    data = copy.deepcopy(SUMMARY)
    data["time_to_first_token"] = _metric("ns", 25_000_000.0, 24_800_000.0, None, 28_400_000.0)
    data["request_latency"] = _metric("sec", 0.0745, 0.07375, None, None)
    data["inter_chunk_latency"] = _metric("us", 3310.0, 3240.0)
    data["benchmark_duration"] = _metric("ms", 653.0)
    r = AIPERF.parse(_run_with(tmp_path, data))
    assert r.ttft.mean == pytest.approx(25.0) and r.ttft.median == pytest.approx(24.8)
    assert r.ttft.p90 is None and r.ttft.p99 == pytest.approx(28.4)
    assert r.e2e.mean == pytest.approx(74.5) and r.e2e.median == pytest.approx(73.75)
    assert r.itl.mean == pytest.approx(3.31)
    assert r.duration_s == pytest.approx(0.653)


def test_parse_failed_requests(tmp_path: Path):
    data = copy.deepcopy(SUMMARY)
    data["request_count"] = _metric("requests", 13.0)
    data["error_request_count"] = _metric("requests", 3.0)
    data["error_summary"] = [{"error_details": {"code": 500, "type": "Internal Server Error", "message": "boom"},
                              "count": 3}]
    r = AIPERF.parse(_run_with(tmp_path, data))
    assert (r.completed, r.failed) == (13, 3)
    assert check(r, requested=16, max_failed_rate=0.2) == [
        "concurrency 4 (aiperf): only 13 of 16 requested requests completed"]


def test_parse_failed_from_error_summary_only(tmp_path: Path):
    data = copy.deepcopy(SUMMARY)
    data["request_count"] = _metric("requests", 14.0)
    data["error_summary"] = [
        {"error_details": {"code": 500, "type": "Internal Server Error", "message": "boom"}, "count": 1},
        {"error_details": {"type": "TimeoutError", "message": "request timed out"}, "count": 1},
    ]
    assert AIPERF.parse(_run_with(tmp_path, data)).failed == 2


def test_parse_all_failed(tmp_path: Path):
    data = {k: v for k, v in SUMMARY.items() if k in ("schema_version", "was_cancelled", "is_complete")}
    data["error_request_count"] = _metric("requests", 16.0)
    data["error_summary"] = [{"error_details": {"code": 404, "message": "model not found"}, "count": 16}]
    r = AIPERF.parse(_run_with(tmp_path, data))
    assert (r.completed, r.failed, r.output_tokens, r.output_token_throughput) == (0, 16, None, None)
    reasons = check(r, requested=16)
    assert len(reasons) == 7  # tokens, failed, completed, throughput, TTFT, TPOT, ITL


# ---------------------------------------------------------------- malformed output

def test_missing_file(tmp_path: Path):
    with pytest.raises(ClientOutputError) as exc:
        AIPERF.parse(make_run(out_dir=tmp_path))
    assert exc.value.path == str(tmp_path / SUMMARY_FILE) and "file not found" in str(exc.value)


@pytest.mark.parametrize("text,match", [("", "empty"), ("{not json", "invalid JSON"),
                                        ("[1, 2]", "top level must be an object")])
def test_unreadable_file(tmp_path: Path, text: str, match: str):
    with pytest.raises(ClientOutputError, match=match) as exc:
        AIPERF.parse(_run_with(tmp_path, text))
    assert str(tmp_path / SUMMARY_FILE) in str(exc.value)


@pytest.mark.parametrize("mutate,field,match", [
    (lambda d: d["time_to_first_token"].pop("unit"), "time_to_first_token.unit", "is missing"),
    (lambda d: d["time_to_first_token"].update(unit="fortnights"), "time_to_first_token.unit", "unknown time unit"),
    (lambda d: d["output_token_throughput"].update(unit="tokens/ms"), "output_token_throughput.unit", "expected"),
    (lambda d: d["request_latency"].update(avg="fast"), "request_latency.avg", "bad value 'fast'"),
    (lambda d: d["total_osl"].update(avg=12.5), "total_osl.avg", "non-negative integer"),
    (lambda d: d.update(request_count=None), "request_count", "no failed requests"),
    (lambda d: d.update(error_summary=[{"count": 2}]), "error_summary.0.error_details", "is missing"),
    (lambda d: d.update(was_cancelled=True), "was_cancelled", "cancelled"),
    (lambda d: d.update(is_complete=False, incomplete_reason="record-stall watchdog fired"), "is_complete",
     "record-stall watchdog fired"),
])
def test_malformed_names_file_and_field(tmp_path: Path, mutate, field: str, match: str):
    data = copy.deepcopy(SUMMARY)
    mutate(data)
    with pytest.raises(ClientOutputError, match=match) as exc:
        AIPERF.parse(_run_with(tmp_path, data))
    assert exc.value.field_name == field
    assert str(exc.value).startswith(f"{tmp_path / SUMMARY_FILE}: field {field!r}: ")
