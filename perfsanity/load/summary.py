"""Human-readable tables of results (terminal and CI logs: plain text, no control codes)."""

from __future__ import annotations

from collections.abc import Sequence

from perfsanity.load.results_json import ConcurrencyResult


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(results: Sequence[ConcurrencyResult]) -> str:
    head = ("conc", "done/req", "fail", "out tok/s", "tok/s/user", "TTFT p50 ms", "TTFT p99 ms",
            "TPOT p50 ms", "ITL p50 ms", "E2E p50 ms")
    rows = [head]
    for r in results:
        rows.append((
            str(r.concurrency), f"{r.completed}/{r.requested}", str(r.failed),
            _f(r.output_token_throughput), _f(r.output_token_throughput_per_user),
            _f(r.ttft.median), _f(r.ttft.p99), _f(r.tpot.median, 2), _f(r.itl.median, 2), _f(r.e2e.median),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
