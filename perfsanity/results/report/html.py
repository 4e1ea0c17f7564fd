"""HTML from Jinja2 templates (``templates/``), autoescaped: every value placed in a page is
HTML-escaped, free text that may carry secrets (failure messages) goes through the ``redact`` filter
first, and links are made only for http(s) URLs. Pages are self-contained (inline CSS, PNGs as base64
data URIs, no scripts, nothing fetched).

Filters: ``fmt`` (number, ``–`` when missing), ``pct`` (signed percent), ``b64`` (PNG bytes → base64),
``redact``; test: ``http_url``; global: ``verdict_class`` (CSS class of a :class:`Verdict`).
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from perfsanity.common.redact import redact
from perfsanity.results.gate import GateReport, MetricVerdict, Verdict

TEMPLATES = Path(__file__).resolve().parent / "templates"

VERDICT_CLASS = {
    Verdict.PASS: "pass",
    Verdict.WARN: "warn",
    Verdict.FAIL: "fail",
    Verdict.NO_BASELINE: "none",
    Verdict.NO_VALUE: "none",
    Verdict.CLIENT_SATURATED: "warn",
}
_SEVERITY = {Verdict.FAIL: 0, Verdict.WARN: 1, Verdict.CLIENT_SATURATED: 2, Verdict.PASS: 3, Verdict.NO_VALUE: 4,
             Verdict.NO_BASELINE: 5}


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}%"


def is_http_url(url: object) -> bool:
    """Only http(s) URLs become links (never ``javascript:`` and the like)."""
    return isinstance(url, str) and url.split(":", 1)[0].lower() in ("http", "https") and "://" in url


_ENV = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
_ENV.filters.update(fmt=fmt, pct=fmt_pct, b64=lambda png: base64.b64encode(png).decode("ascii"),
                    redact=lambda text: redact(str(text)))
_ENV.tests["http_url"] = is_http_url
_ENV.globals["verdict_class"] = VERDICT_CLASS


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with ``context`` (plus the globals above)."""
    return _ENV.get_template(template).render(**context)


def gate_verdicts(report: GateReport) -> list[MetricVerdict]:
    """The gate table's rows: worst verdict first, then by concurrency and metric."""
    return sorted(report.verdicts, key=lambda v: (_SEVERITY[v.verdict], v.concurrency, v.metric))
