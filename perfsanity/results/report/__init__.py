"""Reports: a static HTML report per job (:mod:`.job`) and a nightly trend report per config (:mod:`.trend`).

Both are single self-contained HTML files (inline CSS, PNG plots embedded as base64, no scripts), rendered
from Jinja2 templates in ``templates/`` with autoescape on (:mod:`.html`), so every value is HTML-escaped.
Plots use matplotlib's Agg canvas (:mod:`.plots`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_job_report", "render_trend_report", "write_job_report", "write_trend_report"]


def __getattr__(name: str) -> Any:  # lazy: importing perfsanity.results.report must not load matplotlib
    if name in ("render_job_report", "write_job_report"):
        from perfsanity.results.report import job

        return getattr(job, name)
    if name in ("render_trend_report", "write_trend_report"):
        from perfsanity.results.report import trend

        return getattr(trend, name)
    raise AttributeError(name)
