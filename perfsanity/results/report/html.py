"""HTML building blocks: every value goes through :func:`esc` (free text through :func:`esc_free_text`); pages are self-contained (inline CSS,
PNGs as base64 data URIs, no scripts, nothing fetched)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from urllib.parse import urlsplit

from perfsanity.common.redact import redact
from perfsanity.results.gate import GateReport, MetricVerdict, Verdict

VERDICT_CLASS = {
    Verdict.PASS: "pass",
    Verdict.WARN: "warn",
    Verdict.FAIL: "fail",
    Verdict.NO_BASELINE: "none",
    Verdict.NO_VALUE: "none",
}

CSS = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
       margin: 24px; color: #1f2328; background: #fff; font-size: 14px; }
h1 { font-size: 22px; margin: 0 0 4px 0; word-break: break-all; }
h2 { font-size: 17px; margin: 28px 0 8px 0; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px 0; }
.meta { color: #57606a; margin: 2px 0; }
.meta b { color: #1f2328; font-weight: 600; }
table { border-collapse: collapse; margin: 6px 0 12px 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; font-weight: 600; }
td.l, th.l { text-align: left; }
tr.pass td.v { background: #dafbe1; color: #116329; font-weight: 600; }
tr.warn td.v { background: #fff8c5; color: #7d4e00; font-weight: 600; }
tr.fail td.v { background: #ffebe9; color: #a40e26; font-weight: 600; }
tr.none td.v { background: #f6f8fa; color: #57606a; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600; font-size: 13px; }
.badge.pass { background: #dafbe1; color: #116329; } .badge.warn { background: #fff8c5; color: #7d4e00; }
.badge.fail { background: #ffebe9; color: #a40e26; } .badge.none { background: #eaeef2; color: #57606a; }
.good { color: #1a7f37; } .bad { color: #cf222e; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
.plots figure { margin: 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 4px; }
.plots img { max-width: 100%; display: block; }
pre { background: #f6f8fa; padding: 8px; border-radius: 6px; white-space: pre-wrap; word-break: break-all;
      max-height: 320px; overflow: auto; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
.muted { color: #57606a; }
"""


def esc(value: object) -> str:
    """HTML-escape anything (quotes too)."""
    return html.escape(str(value), quote=True)


def esc_free_text(value: object) -> str:
    """For free text that may carry secrets (failure messages, log tails): redact, then escape."""
    return html.escape(redact(str(value)), quote=True)


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}%"


def safe_link(url: str, text: str | None = None) -> str:
    """An ``<a>`` for http(s) URLs only (no ``javascript:``), text escaped; else just the text."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme in ("http", "https"):
        return f'<a href="{esc(url)}">{esc(text or url)}</a>'
    return esc(text or url)


def img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}"></figure>'


def badge(verdict: Verdict | str, text: str | None = None) -> str:
    v = Verdict(verdict) if not isinstance(verdict, Verdict) else verdict
    return f'<span class="badge {VERDICT_CLASS[v]}">{esc(text or v.value)}</span>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str | tuple[str, str]]], *, left: int = 1,
          row_classes: Sequence[str] | None = None) -> str:
    """``rows`` hold already-escaped cell HTML, or ``(html, css_class)``; the first ``left`` columns
    are left-aligned."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for n, row in enumerate(rows):
        cls = f' class="{row_classes[n]}"' if row_classes else ""
        cells = []
        for i, cell in enumerate(row):
            content, extra = cell if isinstance(cell, tuple) else (cell, "")
            classes = " ".join(c for c in ("l" if i < left else "", extra) if c)
            cells.append(f'<td class="{classes}">{content}</td>')
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def direction_mark(v: MetricVerdict) -> str:
    if v.delta_pct is None:
        return ""
    if v.regression:
        return '<span class="bad">▼ worse</span>'
    if v.improvement:
        return '<span class="good">▲ better</span>'
    return '<span class="muted">≈ within threshold</span>' if v.delta_pct else ""


def gate_table(report: GateReport) -> str:
    headers = ["concurrency", "metric", "value", "baseline", "source", "delta", "threshold", "verdict", "note"]
    rows, classes = [], []
    severity = {Verdict.FAIL: 0, Verdict.WARN: 1, Verdict.PASS: 2, Verdict.NO_VALUE: 3, Verdict.NO_BASELINE: 4}
    for v in sorted(report.verdicts, key=lambda x: (severity[x.verdict], x.concurrency, x.metric)):
        better = "higher is better" if v.higher_is_better else "lower is better"
        rows.append([
            esc(v.concurrency),
            f'{esc(v.metric)} <span class="muted">({esc(better)})</span>',
            esc(fmt(v.value)),
            esc(fmt(v.baseline)),
            esc(v.baseline_source + (f" ({v.history_days} d)" if v.baseline_source == "history" else "")),
            f"{esc(fmt_pct(v.delta_pct))} {direction_mark(v)}",
            esc(f"{v.threshold_pct:g}%"),
            (esc(v.verdict.value), "v"),
            esc(v.note),
        ])
        classes.append(VERDICT_CLASS[v.verdict])
    return table(headers, rows, left=2, row_classes=classes)


def page(title: str, body: str, generated_at: datetime) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n{body}\n"
        f'<p class="muted">generated by perfsanity at {esc(generated_at.isoformat(timespec="seconds"))}</p>'
        "</body></html>\n"
    )
