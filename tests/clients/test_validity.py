"""perfsanity.load.validity.check: each reason fires on its own, a good result passes."""

from __future__ import annotations

import pytest

from perfsanity.load.results_json import ConcurrencyResult, LatencyStats
from perfsanity.load.validity import check

GOOD = ConcurrencyResult(
    concurrency=8, client="aiperf", requested=64, completed=64, failed=0, input_tokens=8192, output_tokens=2048,
    duration_s=2.0, request_throughput=32.0, output_token_throughput=1024.0,
    ttft=LatencyStats(mean=80.0, median=78.0, p90=95.0, p99=110.0),
    tpot=LatencyStats(mean=4.4, median=4.3, p90=4.9, p99=5.5),
    itl=LatencyStats(mean=4.4, median=4.1, p90=6.0, p99=9.0),
    e2e=LatencyStats(mean=220.0, median=218.0, p90=240.0, p99=260.0),
)


def bad(**changes) -> ConcurrencyResult:
    return GOOD.model_copy(update=changes)


def test_good_result_passes():
    assert check(GOOD, requested=64, max_failed_rate=0.0) == []


def test_zero_and_unknown_output_tokens():
    assert check(bad(output_tokens=0), requested=64) == [
        "concurrency 8 (aiperf): zero output tokens were generated"]
    assert check(bad(output_tokens=None), requested=64) == [
        "concurrency 8 (aiperf): output token count is missing"]


def test_failed_requests_above_rate():
    r = bad(completed=64, failed=1)  # e.g. a retried request: all completed, one error recorded
    assert check(r, requested=64, max_failed_rate=0.0) == [
        "concurrency 8 (aiperf): 1 of 64 requests failed (1.6%), above max_failed_rate 0.0%"]
    assert check(r, requested=64, max_failed_rate=0.02) == []


def test_default_failed_rate_is_zero():
    assert len(check(bad(failed=1), requested=64)) == 1


def test_fewer_completed_than_requested():
    assert check(bad(completed=63), requested=64) == [
        "concurrency 8 (aiperf): only 63 of 64 requested requests completed"]


@pytest.mark.parametrize("field,label", [("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL")])
def test_missing_streaming_latency(field: str, label: str):
    r = bad(**{field: LatencyStats()})
    assert check(r, requested=64) == [f"concurrency 8 (aiperf): core metric {label} is missing"]
    assert check(r, requested=64, streaming=False) == []


def test_nan_counts_as_missing():
    r = bad(output_token_throughput=float("nan"), ttft=LatencyStats(mean=float("nan"), median=float("inf")))
    assert check(r, requested=64) == [
        "concurrency 8 (aiperf): core metric output token throughput is missing",
        "concurrency 8 (aiperf): core metric TTFT is missing",
    ]


def test_missing_output_throughput_even_without_streaming():
    assert check(bad(output_token_throughput=None), requested=64, streaming=False) == [
        "concurrency 8 (aiperf): core metric output token throughput is missing"]


def test_median_alone_is_enough():
    assert check(bad(itl=LatencyStats(median=4.1)), requested=64) == []


def test_all_reasons_together():
    r = bad(completed=0, failed=64, output_tokens=0, output_token_throughput=None, ttft=LatencyStats(),
            tpot=LatencyStats(), itl=LatencyStats())
    reasons = check(r, requested=64, max_failed_rate=0.0)
    assert len(reasons) == 7
    assert all(x.startswith("concurrency 8 (aiperf): ") for x in reasons)
