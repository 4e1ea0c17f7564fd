"""Validity of one concurrency's result: is this a measurement at all, and of the server?

A result that is not trustworthy must never reach history or the regression gate as if it were a
number. Two levels:

* :func:`mark` — the client's own evidence. A point where the client, not the server, set the
  numbers is ``client_saturated`` (kept and shown, never baselined or gated; the job still passes),
  and a latency whose basis is degenerate is dropped (``None``, named in ``invalid_metrics``),
  never reported as 0. Rules and their calibration: ``docs/gate.md`` ("Client saturation").
* :func:`check` — fail-closed, one human-readable reason per problem (empty list = valid); any
  reason fails the job:

* no output tokens (zero or unknown),
* failed requests above ``max_failed_rate`` (a fraction of requested; default 0 = none allowed),
* fewer completed requests than requested,
* a missing core metric: output token throughput always; TTFT, TPOT and ITL when streaming
  (a NaN/inf value counts as missing).
"""

from __future__ import annotations

import math

from perfsanity.load.results_json import STAT_FIELDS, ConcurrencyResult, LatencyStats

#: share of each request slot's cycle the client spent holding a due request back (credit→start /
#: (credit→start + request latency), means without the worst request, judged from 3 requests on):
#: the load it failed to offer, so the throughput error it causes
MAX_OFFER_DEFICIT = 0.02
#: the client's process tree on the node's cores, or its busiest process on one core
MAX_CLIENT_CORES_SHARE = 0.9
MAX_PROCESS_CORE_SHARE = 0.85
#: the node's cores busy (client, servers and anything else) while the client ran
MAX_NODE_BUSY_SHARE = 0.9
#: ITL is the gap between streamed chunks: with far fewer chunks than tokens it measures the client
MIN_CHUNKS_PER_TOKEN = 0.5
#: a latency statistic is reported only when the client's own timing lag is within this share of it:
#: the lag of its event loop (credit→start, the time from a request falling due to its send: the same
#: loop timestamps the streamed chunks) — its trimmed mean against a median (TTFT's also drops the
#: mean), its p99 against a p99. ITL's median is a difference of two timestamps the same lag delays,
#: so it is kept; ITL's p99 is not. The fidelity target (benchmarks/fidelity.py: 2 % of the law).
MAX_TIMING_LAG_SHARE = 0.02
#: (latency, statistic) → the client_stats lag judged against it
TIMING_LAG_CHECKS = (("ttft", "median", "credit_to_start_trimmed_mean_ms"),
                     ("ttft", "p99", "credit_to_start_p99_ms"),
                     ("itl", "p99", "credit_to_start_p99_ms"))
#: tokens per second one aiperf core streams on a paced server (benchmarks/RESULTS.md, client capacity)
TOKENS_PER_CLIENT_CORE = 8000.0


def cores_needed(result: ConcurrencyResult) -> int | None:
    """Cores the client would need to offer this point's load: the tokens/s it should have reached
    (achieved / (1 − offer deficit)) at TOKENS_PER_CLIENT_CORE, plus one for aiperf's timing process."""
    tput = result.output_token_throughput
    if tput is None:
        return None
    deficit = min(_offer_deficit(result) or 0.0, 0.9)
    return math.ceil(tput / (1 - deficit) / TOKENS_PER_CLIENT_CORE) + 1


def _offer_deficit(result: ConcurrencyResult) -> float | None:
    cts = result.client_stats.get("credit_to_start_trimmed_mean_ms")
    e2e = result.e2e.mean
    if cts is None or e2e is None or cts + e2e <= 0:
        return None
    return cts / (cts + e2e)


def mark(result: ConcurrencyResult, *, node_cores: int | None = None) -> ConcurrencyResult:
    """``result`` with ``validity``/``evidence`` set from its ``client_stats`` (and the node's cores
    when the role measured the client's CPU), and degenerate latencies dropped."""
    stats = result.client_stats
    evidence: list[str] = []
    deficit = _offer_deficit(result)
    if deficit is not None and deficit > MAX_OFFER_DEFICIT:
        evidence.append(f"the client held each due request back {stats['credit_to_start_trimmed_mean_ms']:.1f} ms on "
                        f"average ({deficit:.1%} of each request's cycle, limit {MAX_OFFER_DEFICIT:.0%}): "
                        "the load it offered fell short of the concurrency")
    cores = stats.get("client_cores")
    if cores is not None and node_cores and cores >= MAX_CLIENT_CORES_SHARE * node_cores:
        evidence.append(f"the client used {cores:.2f} of the node's {node_cores} cores")
    node_busy = stats.get("node_busy_share")
    if node_busy is not None and node_busy >= MAX_NODE_BUSY_SHARE:
        evidence.append(f"the node's cores were {node_busy:.0%} busy while the client ran (client, servers and "
                        "other processes): its timestamps run late")
    busiest = stats.get("client_busiest_process_cores")
    if busiest is not None and busiest >= MAX_PROCESS_CORE_SHARE:
        evidence.append(f"one client process used {busiest:.2f} of a core: its timestamps run late")
    update: dict[str, object] = {}
    if evidence:
        update |= {"validity": "client_saturated", "evidence": tuple(evidence)}
    chunks, tokens = stats.get("chunks_per_request_p50"), stats.get("output_tokens_per_request_p50")
    if chunks is not None and tokens and tokens >= 4 and chunks < MIN_CHUNKS_PER_TOKEN * tokens:
        update["invalid_metrics"] = {**result.invalid_metrics, "itl": (
            f"a median of {chunks:g} streamed chunks per request for {tokens:g} output tokens: the client "
            "coalesced chunks, so the gaps between them are not inter-token latencies")}
        update["itl"] = LatencyStats()
    for lat, stat, lag_key in TIMING_LAG_CHECKS:
        current = update.get(lat, getattr(result, lat))  # as the rules above left it
        lag, value = stats.get(lag_key), getattr(current, stat)
        if lag is None or value is None or value <= 0 or lag <= MAX_TIMING_LAG_SHARE * value:
            continue
        name = f"{lat}_{stat}"
        update["invalid_metrics"] = {**update.get("invalid_metrics", result.invalid_metrics), name: (
            f"the client's own timing lag ({lag_key.removesuffix('_ms').replace('_', ' ')} {lag:.2f} ms) is "
            f"{lag / value:.1%} of {lat.upper()} {stat} {value:.2f} ms (limit {MAX_TIMING_LAG_SHARE:.0%}): the "
            "client, not the server, sets it at this load")}
        update[lat] = current.model_copy(update=dict.fromkeys(invalid_latency(name)[1]))
    return result.model_copy(update=update) if update else result


def invalid_latency(name: str) -> tuple[str, tuple[str, ...]]:
    """An ``invalid_metrics`` key → (latency, the statistics it drops): ``itl`` drops all of ITL,
    ``ttft_p99`` TTFT's p99, ``ttft_median`` its median and mean (both the centre a lag shifts)."""
    lat, _, stat = name.partition("_")
    if not stat:
        return lat, STAT_FIELDS
    return lat, ("median", "mean") if stat == "median" else (stat,)


def invalid_reason(invalid_metrics: dict[str, str], metric: str) -> str:
    """Why ``metric`` (``ttft_p99``, ``itl_median``, …) was dropped at this point, or "" when it was not."""
    lat, _, stat = metric.partition("_")
    for name, why in invalid_metrics.items():
        dropped_lat, dropped = invalid_latency(name)
        if dropped_lat == lat and stat in dropped:
            return why
    return ""


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
            if not _stat_present(stats) and not any(invalid_latency(k)[0] == label.lower()
                                                    for k in result.invalid_metrics):
                missing.append(label)
    for name in missing:
        reasons.append(f"{where}: core metric {name} is missing")
    return reasons
