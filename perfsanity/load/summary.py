"""Human-readable tables of results (terminal and CI logs: plain text, no control codes).

Rendered by :func:`perfsanity.common.tables.render_table`; the column names below are what the e2e
tests (and people reading CI logs) look for.
"""

from __future__ import annotations

from collections.abc import Sequence

from perfsanity.common.tables import render_table
from perfsanity.load.results_json import ConcurrencyResult

HEADERS = ("conc", "done/req", "fail", "out tok/s", "tok/s/user", "TTFT p50 ms", "TTFT p99 ms",
           "TPOT p50 ms", "ITL p50 ms", "E2E p50 ms", "runs", "validity")


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _validity(r: ConcurrencyResult) -> str:
    """``valid`` / ``client_saturated``, plus ``itl invalid`` for each degenerate latency group."""
    return ", ".join([r.validity, *(f"{name} invalid" for name in sorted(r.invalid_metrics))])


def format_table(results: Sequence[ConcurrencyResult]) -> str:
    """One row per point (a ``point`` column leads when any is not a plain concurrency), every column right-aligned; a dropped (degenerate) value shows as ``-``."""
    rows = [(
        str(r.concurrency), f"{r.completed}/{r.requested}", str(r.failed),
        _f(r.output_token_throughput), _f(r.output_token_throughput_per_user),
        _f(r.ttft.median), _f(r.ttft.p99), _f(r.tpot.median, 2), _f(r.itl.median, 2), _f(r.e2e.median),
        str(max(len(r.repeats), 1)), _validity(r),
    ) for r in results]
    if any(r.point for r in results):  # a benchmark type other than plain concurrency: name each point
        return render_table(("point", *HEADERS), [(r.label, *row) for r, row in zip(results, rows, strict=True)],
                            right_from=1)
    return render_table(HEADERS, rows, right_from=0)
