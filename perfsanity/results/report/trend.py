"""Nightly trend report per config: each gated metric over time, per concurrency, with the baseline
band and detected change points marked; rendered from ``templates/trend.html.j2``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from perfsanity.common.errors import PerfsanityError
from perfsanity.common.files import write_atomic
from perfsanity.load.results_json import higher_is_better
from perfsanity.results.changepoint import ChangePoint, detect_change_points
from perfsanity.results.gate import GateConfig, history_baseline
from perfsanity.results.history import HistoryStore, MatchKeys, group_by_keys, utc
from perfsanity.results.report import plots
from perfsanity.results.report.html import fmt, render


@dataclass(frozen=True)
class TrendPanel:
    keys: MatchKeys
    metric: str
    png: bytes
    points: int
    baseline: float | None
    baseline_source: str
    change_points: tuple[ChangePoint, ...]


def trend_panel(
    store: HistoryStore,
    keys: MatchKeys,
    metric: str,
    *,
    config: GateConfig,
    now: datetime,
    today: tuple[datetime, float] | None = None,
) -> TrendPanel:
    """One plot: valid post-merge points of ``metric`` for ``keys`` over the lookback window."""
    since = now - timedelta(days=config.lookback_days)
    records = store.query(keys, since=since, until=now, valid_only=False, post_merge_only=True)
    valid = [(r.timestamp, r.metrics[metric]) for r in records if r.valid and metric in r.metrics]
    invalid = [(r.timestamp, r.metrics[metric]) for r in records if not r.valid and metric in r.metrics]
    higher = higher_is_better(metric)
    pinned = config.pinned(metric, keys.concurrency)
    if pinned is not None:
        baseline, source = pinned, "pinned"
    else:
        baseline, _days = history_baseline(valid, max_records=config.baseline_records,
                                           min_days=config.min_history_days)
        source = "history" if baseline is not None else "none"
    cps = tuple(detect_change_points(valid, metric=metric))
    png = plots.trend(
        valid,
        metric=metric,
        title=f"{keys.config_name} · {keys.point} · {metric}",
        baseline=baseline,
        threshold_pct=config.threshold(metric).post_merge_pct,
        higher_is_better=higher,
        change_points=cps,
        invalid=invalid,
        today=today,
    )
    return TrendPanel(keys, metric, png, len(valid), baseline, source, cps)


def keys_summary(keys: MatchKeys) -> str:
    k = keys
    ctx = f"ctx {k.num_ctx_servers}× tp{k.ctx_tp}/pp{k.ctx_pp}/ep{k.ctx_ep}{' adp' if k.ctx_attention_dp else ''}"
    gen = f"gen {k.num_gen_servers}× tp{k.gen_tp}/pp{k.gen_pp}/ep{k.gen_ep}{' adp' if k.gen_attention_dp else ''}"
    return (f"{k.model} · {k.precision} · {k.gpu_type} · {k.backend} · {k.mode} · {ctx} · {gen} · "
            f"ISL {k.isl} / OSL {k.osl} · {k.total_gpus} GPUs")


def change_point_rows(panels: Sequence[TrendPanel]) -> tuple[list[list[str]], list[str]]:
    """Rows of the change-point table and their CSS classes (``fail`` for regressions)."""
    rows, classes = [], []
    for p in panels:
        for cp in p.change_points:
            rows.append([
                p.keys.point,
                p.metric,
                cp.time.isoformat(timespec="minutes"),
                fmt(cp.mean_before),
                fmt(cp.mean_after),
                f"{cp.magnitude_pct:+.1f}%",
                "regression" if cp.regression else "improvement",
                f"{cp.pvalue:.1e}",
            ])
            classes.append("fail" if cp.regression else "pass")
    return rows, classes


def render_trend_report(
    store: HistoryStore,
    config_name: str,
    *,
    config: GateConfig | None = None,
    metrics: Sequence[str] | None = None,
    now: datetime | None = None,
) -> str:
    """HTML trend report for every match-key group and concurrency of ``config_name``."""
    config = config or GateConfig()
    now = utc(now) if now is not None else datetime.now(UTC)
    metrics = tuple(metrics or config.metrics)
    since = now - timedelta(days=config.lookback_days)
    records = store.query({"config_name": config_name}, since=since, until=now, valid_only=False,
                          post_merge_only=True)
    if not records:
        raise PerfsanityError(
            f"no post-merge history for config {config_name!r} in the last {config.lookback_days} days "
            f"({store.masked_url})"
        )
    groups: dict[MatchKeys, list[MatchKeys]] = {}
    for keys in group_by_keys(records):
        groups.setdefault(keys.with_concurrency(0), []).append(keys)
    rendered = []
    for group, members in groups.items():
        group_panels, concurrencies = [], []
        for keys in sorted(members, key=lambda k: (k.concurrency, k.point)):
            # a plain point reads "concurrency 8" as before benchmark types; others by their label
            where = (f"concurrency {keys.concurrency}" if keys.point == f"c{keys.concurrency}" else keys.point)
            figs = []
            for metric in metrics:
                panel = trend_panel(store, keys, metric, config=config, now=now)
                if panel.points == 0:
                    continue
                group_panels.append(panel)
                figs.append((panel.png, f"{metric} at {where}"))
            concurrencies.append({"concurrency": keys.concurrency, "where": where, "figs": figs})
        rows, classes = change_point_rows(group_panels)
        rendered.append({"summary": keys_summary(group), "concurrencies": concurrencies, "change_points": rows,
                         "change_point_classes": classes})
    return render("trend.html.j2", title=f"perf trend {config_name}", generated_at=now, config_name=config_name,
                  lookback_days=config.lookback_days, history_url=store.masked_url, record_count=len(records),
                  groups=rendered)


def write_trend_report(
    store: HistoryStore,
    config_name: str,
    out: Path,
    *,
    config: GateConfig | None = None,
    metrics: Sequence[str] | None = None,
    now: datetime | None = None,
) -> Path:
    text = render_trend_report(store, config_name, config=config, metrics=metrics, now=now)
    write_atomic(out, text)
    return out

