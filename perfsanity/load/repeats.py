"""Repeats of one concurrency (``benchmark.repeats``): one :class:`ConcurrencyResult` that is their mean.

The combined result keeps every repeat (``repeats``) and the sample standard deviation of each flat
metric across them (``spread``), which the gate pools into its noise estimate. Counts (requests,
tokens, duration) are summed; rates and latency statistics are averaged, so the mean of n repeats is
what the gate compares with history. One client_saturated repeat makes the whole point so, and a
latency dropped as degenerate in any repeat is dropped from the mean.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from perfsanity.load.results_json import (
    LATENCY_FIELDS,
    POINT_FIELDS,
    SCALAR_METRICS,
    STAT_FIELDS,
    ConcurrencyResult,
    LatencyStats,
    flatten,
)
from perfsanity.load.validity import invalid_latency

_COUNTS = ("requested", "completed", "failed", "input_tokens", "output_tokens", "duration_s")


def _mean(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return statistics.fmean(v for v in values if v is not None)


def _sum(values: Sequence[float | int | None]) -> float | int | None:
    if any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def combine(repeats: Sequence[ConcurrencyResult]) -> ConcurrencyResult:
    """Mean of ``repeats`` (same concurrency and client); a single result is returned unchanged."""
    if not repeats:
        raise ValueError("combine() needs at least one result")
    if len(repeats) == 1:
        return repeats[0]
    first = repeats[0]
    for r in repeats[1:]:
        if (r.label, r.client) != (first.label, first.client):
            raise ValueError(f"cannot combine {r.label}/{r.client} with {first.label}/{first.client}")
    fields: dict[str, object] = {"concurrency": first.concurrency, "client": first.client,
                                 **{name: getattr(first, name) for name in POINT_FIELDS},
                                 "started_at": first.started_at, "ended_at": repeats[-1].ended_at}  # whole window
    for name in _COUNTS:
        fields[name] = _sum([getattr(r, name) for r in repeats])
    for name in SCALAR_METRICS:
        fields[name] = _mean([getattr(r, name) for r in repeats])
    for lat in LATENCY_FIELDS:
        fields[lat] = LatencyStats(**{s: _mean([getattr(getattr(r, lat), s) for r in repeats]) for s in STAT_FIELDS})
    saturated = [(i, r) for i, r in enumerate(repeats) if r.validity == "client_saturated"]
    if saturated:  # one saturated repeat makes the mean a client figure too
        fields["validity"] = "client_saturated"
        fields["evidence"] = tuple(f"repeat {i}: {e}" for i, r in saturated for e in r.evidence)
    fields["invalid_metrics"] = {k: v for r in repeats for k, v in r.invalid_metrics.items()}
    shared = set.intersection(*(set(r.client_stats) for r in repeats))
    fields["client_stats"] = {k: statistics.fmean(r.client_stats[k] for r in repeats) for k in sorted(shared)}
    flats = [flatten(r) for r in repeats]
    common = set.intersection(*(set(f) for f in flats))
    spread = {m: statistics.stdev(f[m] for f in flats) for m in sorted(common)}
    plain = tuple(r.model_copy(update={"repeats": (), "spread": {}}) for r in repeats)
    for name in fields["invalid_metrics"]:  # type: ignore[union-attr]
        lat, dropped = invalid_latency(name)
        fields[lat] = fields[lat].model_copy(update=dict.fromkeys(dropped))  # type: ignore[union-attr]
    return ConcurrencyResult(**fields, repeats=plain, spread=spread)  # type: ignore[arg-type]
