"""aiperf parser on REAL aiperf 0.13.0 output (tests/fixtures/aiperf/, captured by another helper from
runs against the Dynamo frontend + mocker). Expected values are read off those files."""

from __future__ import annotations

import pytest
from clienttest_support import AIPERF_FIXTURES, make_run

from perfsanity.load.aiperf import CLIENT as AIPERF
from perfsanity.load.aiperf import SUMMARY_FILE
from perfsanity.load.base import ClientOutputError
from perfsanity.load.validity import check


def test_c1():
    out = AIPERF_FIXTURES / "c1"
    r = AIPERF.parse(make_run(out_dir=out, concurrency=1, num_prompts=16, total_gpus=2))
    assert (r.concurrency, r.requested, r.completed, r.failed) == (1, 16, 16, 0)
    assert (r.input_tokens, r.output_tokens) == (2048, 512)
    assert r.duration_s == pytest.approx(3.555152896)
    assert r.request_throughput == pytest.approx(4.488836248119172)
    assert r.output_token_throughput == pytest.approx(143.64275993981352)
    assert r.output_token_throughput_per_gpu == pytest.approx(143.64275993981352 / 2)
    assert r.total_token_throughput == pytest.approx(718.2137996990675)
    assert r.output_token_throughput_per_user == pytest.approx(217.33822401847885)
    assert r.ttft.mean == pytest.approx(69.362708) and r.ttft.median == pytest.approx(69.41807399999999)
    assert r.ttft.p90 == pytest.approx(79.4376075) and r.ttft.p99 == pytest.approx(83.58174054999999)
    # tpot <- inter_token_latency (per request), itl <- inter_chunk_latency (pooled chunk gaps)
    assert r.tpot.mean == pytest.approx(4.620907491935484) and r.tpot.median == pytest.approx(4.535142032258064)
    assert r.itl.mean == pytest.approx(4.620907491935484) and r.itl.median == pytest.approx(5.7006935)
    assert r.itl.p99 == pytest.approx(17.58842585000002)
    assert r.e2e.mean == pytest.approx(212.61084025) and r.e2e.p99 == pytest.approx(226.80406619999997)
    assert r.raw_path == str(out / SUMMARY_FILE)
    assert check(r, requested=16) == []


def test_c4():
    r = AIPERF.parse(make_run(out_dir=AIPERF_FIXTURES / "c4", concurrency=4, num_prompts=32, total_gpus=4))
    assert (r.requested, r.completed, r.failed, r.input_tokens, r.output_tokens) == (32, 32, 0, 4096, 1024)
    assert r.output_token_throughput == pytest.approx(545.7067167027428)
    assert r.output_token_throughput_per_gpu == pytest.approx(545.7067167027428 / 4)
    assert r.ttft.p99 == pytest.approx(97.15653427)
    assert r.tpot.p90 == pytest.approx(5.527646738709679)
    assert r.itl.p90 == pytest.approx(9.451509399999997)
    assert r.e2e.median == pytest.approx(218.24495249999998)
    assert check(r, requested=32) == []


def test_worker_killed_mid_run():
    r = AIPERF.parse(make_run(out_dir=AIPERF_FIXTURES / "errors" / "worker_killed", concurrency=2, num_prompts=120))
    assert (r.requested, r.completed, r.failed) == (120, 28, 92)
    assert (r.input_tokens, r.output_tokens) == (3328, 832)
    assert check(r, requested=120, max_failed_rate=0.0) == [
        "concurrency 2 (aiperf): 92 of 120 requests failed (76.7%), above max_failed_rate 0.0%",
        "concurrency 2 (aiperf): only 28 of 120 requested requests completed",
    ]


def test_all_requests_timed_out_no_summary():
    out = AIPERF_FIXTURES / "errors" / "all_timeout"
    with pytest.raises(ClientOutputError) as exc:
        AIPERF.parse(make_run(out_dir=out, concurrency=2, num_prompts=4))
    assert exc.value.path == str(out / SUMMARY_FILE)
    msg = str(exc.value)
    assert "file not found (aiperf wrote no summary)" in msg
    assert "holds 4 profiling records, 4 failed (most common: TimeoutError: TimeoutError() ×4)" in msg
