"""Fail-closed validity gate for one concurrency's result: is this a measurement at all?

A result that is not trustworthy must never reach history or the regression gate as if it were a
number. :func:`check` returns one human-readable reason per problem (empty list = valid):

* no output tokens (zero or unknown),
* failed requests above ``max_failed_rate`` (a fraction of requested; default 0 = none allowed),
* fewer completed requests than requested,
* a missing core metric: output token throughput always; TTFT, TPOT and ITL when streaming
  (a NaN/inf value counts as missing).
"""

from __future__ import annotations

import math

from perfsanity.load.results_json import ConcurrencyResult, LatencyStats


def _present(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _stat_present(stats: LatencyStats) -> bool:
    return _present(stats.mean) or _present(stats.median)


def check(
    result: ConcurrencyResult,
    *,
    requested: int,
    max_failed_rate: float = 0.0,
    streaming: bool = True,
) -> list[str]:
    """Reasons ``result`` is not a valid measurement (each names the concurrency); [] when valid."""
    where = f"concurrency {result.concurrency} ({result.client})"
    reasons: list[str] = []

    if result.output_tokens is None:
        reasons.append(f"{where}: output token count is missing")
    elif result.output_tokens == 0:
        reasons.append(f"{where}: zero output tokens were generated")

    if requested > 0:
        rate = result.failed / requested
        if rate > max_failed_rate:
            reasons.append(
                f"{where}: {result.failed} of {requested} requests failed ({rate:.1%}), "
                f"above max_failed_rate {max_failed_rate:.1%}"
            )
    elif result.failed > 0:
        reasons.append(f"{where}: {result.failed} requests failed")

    if result.completed < requested:
        reasons.append(f"{where}: only {result.completed} of {requested} requested requests completed")

    missing: list[str] = []
    if not _present(result.output_token_throughput):
        missing.append("output token throughput")
    if streaming:
        for label, stats in (("TTFT", result.ttft), ("TPOT", result.tpot), ("ITL", result.itl)):
            if not _stat_present(stats):
                missing.append(label)
    for name in missing:
        reasons.append(f"{where}: core metric {name} is missing")
    return reasons
