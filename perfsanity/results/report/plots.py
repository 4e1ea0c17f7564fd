"""PNG plots for the reports (matplotlib, Agg canvas: no display, no pyplot global state)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from perfsanity.load.results_json import ConcurrencyResult, flatten
from perfsanity.results.changepoint import ChangePoint

GOOD = "#1a7f37"
BAD = "#cf222e"
NEUTRAL = "#57606a"
LINE_COLORS = ("#0969da", "#8250df", "#bf3989", "#1a7f37", "#9a6700", "#57606a")

LABELS = {
    "output_token_throughput": "output tokens/s",
    "total_token_throughput": "total tokens/s",
    "request_throughput": "requests/s",
    "output_token_throughput_per_user": "output tokens/s/user",
    "output_token_throughput_per_gpu": "output tokens/s/GPU",
}


def metric_label(metric: str) -> str:
    if metric in LABELS:
        return LABELS[metric]
    lat, _, stat = metric.partition("_")
    return f"{lat.upper()} {stat} (ms)"


def plain(text: str) -> str:
    """Text shown literally by matplotlib (``$`` would otherwise start mathtext)."""
    return text.replace("$", r"\$")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _new(width: float = 6.4, height: float = 3.8) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def throughput_vs_concurrency(results: Sequence[ConcurrencyResult], title: str = "") -> bytes | None:
    """Output and total token throughput against concurrency (log2 x axis)."""
    rows = sorted(results, key=lambda r: r.concurrency)
    fig = _new()
    ax = fig.add_subplot()
    drawn = False
    for i, metric in enumerate(("output_token_throughput", "total_token_throughput")):
        pts = [(r.concurrency, flatten(r).get(metric)) for r in rows]
        pts = [(c, v) for c, v in pts if v is not None]
        if not pts:
            continue
        drawn = True
        ax.plot([c for c, _ in pts], [v for _, v in pts], marker="o", color=LINE_COLORS[i],
                label=metric_label(metric))
    if not drawn:
        return None
    if len({r.concurrency for r in rows}) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks([r.concurrency for r in rows], [str(r.concurrency) for r in rows])
    ax.set_xlabel("concurrency")
    ax.set_ylabel("tokens/s")
    ax.set_title(plain(title) or "Throughput vs concurrency", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    return _png(fig)


def _pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both (higher x, lower y), sorted by x."""
    front = []
    for x, y in points:
        dominated = any(
            (x2 >= x and y2 <= y) and (x2 > x or y2 < y) for x2, y2 in points
        )
        if not dominated:
            front.append((x, y))
    return sorted(front)


def latency_vs_throughput(results: Sequence[ConcurrencyResult], title: str = "") -> bytes | None:
    """TTFT and TPOT (median) against output throughput, each point labelled with its concurrency;
    the Pareto front (more throughput for less latency) is drawn as a line."""
    rows = sorted(results, key=lambda r: r.concurrency)
    panels = [m for m in ("ttft_median", "tpot_median")
              if any(flatten(r).get(m) is not None and r.output_token_throughput for r in rows)]
    if not panels:
        return None
    fig = _new(width=6.4 * len(panels) / 1.4, height=3.8)
    for i, metric in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        pts = []
        for r in rows:
            y, x = flatten(r).get(metric), r.output_token_throughput
            if y is None or x is None:
                continue
            pts.append((x, y))
            ax.annotate(f"c{r.concurrency}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=LINE_COLORS[i], zorder=3)
        front = _pareto_front(pts)
        ax.plot([p[0] for p in front], [p[1] for p in front], color=LINE_COLORS[i], alpha=0.6,
                linestyle="--", label="Pareto front")
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel(metric_label(metric))
        ax.set_title(f"{metric_label(metric).split(' (')[0]} vs throughput", fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(plain(title), fontsize=11)
    return _png(fig)


def trend(
    points: Sequence[tuple[datetime, float]],
    *,
    metric: str,
    title: str,
    baseline: float | None = None,
    threshold_pct: float | None = None,
    higher_is_better: bool = True,
    change_points: Sequence[ChangePoint] = (),
    invalid: Sequence[tuple[datetime, float]] = (),
    today: tuple[datetime, float] | None = None,
) -> bytes:
    """A metric over time: points, the baseline with its tolerance band (the side that counts as a
    regression), change points as vertical lines (red = regression, green = improvement)."""
    fig = _new(width=7.2, height=3.4)
    ax = fig.add_subplot()
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", linewidth=1,
                color=LINE_COLORS[0], label="valid post-merge")
    if invalid:
        ax.scatter([p[0] for p in invalid], [p[1] for p in invalid], marker="x", color=NEUTRAL,
                   label="invalid", zorder=3)
    if today is not None:
        ax.scatter([today[0]], [today[1]], marker="*", s=140, color="#9a6700", label="this run", zorder=4)
    if baseline is not None:
        ax.axhline(baseline, color=GOOD, linewidth=1.2, label="baseline")
        if threshold_pct:
            edge = baseline * (1 - threshold_pct / 100) if higher_is_better else baseline * (
                1 + threshold_pct / 100)
            lo, hi = sorted((baseline, edge))
            sign = "−" if higher_is_better else "+"
            ax.axhspan(lo, hi, color=GOOD, alpha=0.12, label=f"tolerated ({sign}{threshold_pct:g}%)")
    for cp in change_points:
        color = BAD if cp.regression else GOOD
        ax.axvline(cp.time, color=color, linestyle="--", linewidth=1.2)
        ax.annotate(f"{cp.magnitude_pct:+.1f}%", (cp.time, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -12), textcoords="offset points", color=color, fontsize=8)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel(metric_label(metric))
    ax.set_title(plain(title), fontsize=10)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, loc="best")
    return _png(fig)


def node_usage(series: Sequence[tuple[str, Sequence[tuple[float, float, float]]]],
               windows: Sequence[tuple[int, float, float]], title: str = "",
               labels: tuple[str, str] = ("CPU %", "memory %")) -> bytes | None:
    """Two percentages of each monitored node over the job (CPU/memory from ``<node>.cpu.csv``, or GPU
    utilisation/memory from ``<node>.gpu.csv``), the benchmark window of each concurrency shaded."""
    series = [(node, rows) for node, rows in series if rows]
    if not series:
        return None
    t0 = min(rows[0][0] for _, rows in series)
    fig = _new(7.2, 4.2)
    cpu, mem = fig.subplots(2, 1, sharex=True)
    for i, (node, rows) in enumerate(series):
        color = LINE_COLORS[i % len(LINE_COLORS)]
        xs = [r[0] - t0 for r in rows]
        cpu.plot(xs, [r[1] for r in rows], color=color, label=plain(node))
        mem.plot(xs, [r[2] for r in rows], color=color)
    for concurrency, start, end in windows:
        for ax in (cpu, mem):
            ax.axvspan(start - t0, end - t0, color=NEUTRAL, alpha=0.12, linewidth=0)
            ax.axvline(start - t0, color=NEUTRAL, linewidth=0.6)
        cpu.text((start + end) / 2 - t0, 1.0, f"c{concurrency}", transform=cpu.get_xaxis_transform(),
                 ha="center", va="bottom", fontsize=8, color=NEUTRAL)
    cpu.set_ylabel(labels[0])
    mem.set_ylabel(labels[1])
    mem.set_xlabel("seconds since the first sample")
    cpu.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(plain(title))
    return _png(fig)
