"""Change-point detection on a metric's history, via Apache Otava (Hunter's e-divisive + t-test merge).

Otava 0.8.0 is used only through ``otava.analysis.compute_change_points``, which needs numpy and scipy.
Its wheel also declares exact pins (``numpy==2.2.0``, ``scipy<1.17``) and cloud clients we never import,
so the lock (uv.lock, `[tool.uv]` overrides in pyproject.toml) keeps only numpy and scipy of its dependencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from perfsanity.common.errors import ConfigError, PerfsanityError
from perfsanity.load.results_json import higher_is_better
from perfsanity.results.history import utc

MIN_POINTS = 8  # below this a split has no statistical meaning


@dataclass(frozen=True)
class ChangePoint:
    """A shift in a series' level. ``index`` is the first point after the change (into the time-sorted
    series), ``time`` its timestamp; ``magnitude_pct`` is the change of means after vs before, in %."""

    index: int
    time: datetime
    mean_before: float
    mean_after: float
    magnitude_pct: float
    direction: Literal["up", "down"]
    pvalue: float
    metric: str | None = None

    @property
    def regression(self) -> bool | None:
        """True when the change goes the bad way for ``metric`` (None when no metric was given)."""
        if self.metric is None:
            return None
        return (self.direction == "down") == higher_is_better(self.metric)


def _compute(values: list[float], window_len: int, max_pvalue: float, min_magnitude: float) -> list:
    try:
        from otava.analysis import compute_change_points
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PerfsanityError(
            "change point detection needs Apache Otava (the 'changepoint' extra, which the project venv "
            "has): pip install --no-deps apache-otava==0.8.0 "
            f"({exc})"
        ) from None
    points, _weak = compute_change_points(
        values, window_len=window_len, max_pvalue=max_pvalue, min_magnitude=min_magnitude
    )
    return points


def detect_change_points(
    series: Sequence[tuple[datetime, float]],
    *,
    metric: str | None = None,
    max_pvalue: float = 1e-4,
    min_magnitude_pct: float = 1.0,
    window_len: int = 30,
) -> list[ChangePoint]:
    """Change points in ``(timestamp, value)`` points (sorted by time here; timestamps must be aware).

    ``max_pvalue`` is the t-test significance a change must reach; ``min_magnitude_pct`` drops
    significant but tiny shifts; ``window_len`` is Otava's sliding window (in points). With ``metric``
    given, each :class:`ChangePoint` knows whether it is a regression.
    """
    if metric is not None:
        try:
            higher_is_better(metric)
        except ValueError as exc:
            raise ConfigError(None, "metric", str(exc)) from None
    if not 0 < max_pvalue < 1:
        raise ConfigError(None, "max_pvalue", f"must be between 0 and 1, got {max_pvalue}")
    if min_magnitude_pct < 0:
        raise ConfigError(None, "min_magnitude_pct", f"must be >= 0, got {min_magnitude_pct}")
    if window_len < 4:
        raise ConfigError(None, "window_len", f"must be >= 4, got {window_len}")
    points = []
    for ts, value in series:
        if value is None or not math.isfinite(value):
            continue
        points.append((utc(ts), float(value)))
    points.sort(key=lambda p: p[0])
    if len(points) < MIN_POINTS:
        return []
    values = [v for _, v in points]
    found = _compute(values, window_len, max_pvalue, min_magnitude_pct / 100.0)
    out: list[ChangePoint] = []
    for cp in found:
        index = int(cp.index)
        before = float(cp.stats.mean_1)
        after = float(cp.stats.mean_2)
        if before == 0:
            continue
        magnitude = (after - before) / abs(before) * 100.0
        out.append(
            ChangePoint(
                index=index,
                time=points[index][0],
                mean_before=before,
                mean_after=after,
                magnitude_pct=magnitude,
                direction="up" if after > before else "down",
                pvalue=float(cp.stats.pvalue),
                metric=metric,
            )
        )
    return out
