"""The statistics of the regression gate (pure; ``docs/gate.md`` derives every formula here).

A gated value is the mean of ``n`` repeats of one job. Its baseline is the trailing mean of the last
``m`` valid post-merge runs of the same match keys (each history record is one job's mean of its own
repeats). The per-run noise σ̂ is pooled from everything known: the within-job spread of every
record that kept one, the spread of the record means around the baseline (between nights), and the
within-job spread of today's repeats. One one-sided t-test per (concurrency, metric):

    t = worse·(x̄ − B) / (σ̂·√(1/n + 1/m)),   df = degrees of freedom of σ̂

and the family of all tests of one job-night is controlled with Holm's step-down procedure at
``alpha``, so the chance that a job-night without any change raises a single alarm is at most
``alpha``. The configured percentage is a floor on the effect worth reporting; the threshold shown
for a test is ``max(pct, t_crit·σ̂·√(1/n + 1/m) / B)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: family-wise false-alarm rate per job-night (all gated metrics × concurrencies of one job): half the
#: 1 % target, so the measured rate stays below it (benchmarks/gate_power.py)
DEFAULT_ALPHA = 0.005


@dataclass(frozen=True)
class Sample:
    """One job's value of one metric: the mean of ``n`` repeats and their sample standard deviation
    (None when the job kept no spread, e.g. a single run or a record from before repeats)."""

    mean: float
    n: int = 1
    sd: float | None = None


@dataclass(frozen=True)
class Noise:
    """Pooled per-run standard deviation σ̂ with its degrees of freedom."""

    sigma: float
    df: int


@dataclass(frozen=True)
class Baseline:
    """Trailing mean of ``runs`` baseline runs (``records`` history records)."""

    mean: float
    runs: int
    records: int


def trailing_baseline(history: Sequence[Sample]) -> Baseline | None:
    """Mean of every run behind ``history`` (each record weighted by its repeats)."""
    usable = [s for s in history if math.isfinite(s.mean) and s.n >= 1]
    runs = sum(s.n for s in usable)
    if not usable or runs == 0:
        return None
    return Baseline(mean=sum(s.mean * s.n for s in usable) / runs, runs=runs, records=len(usable))


def pooled_noise(history: Sequence[Sample], today: Sample | None = None) -> Noise | None:
    """σ̂² = (within-job sums of squares of every sample with a spread, today's included
    + Σ nⱼ·(x̄ⱼ − B)² of the history records) / their degrees of freedom. None without any df."""
    usable = [s for s in history if math.isfinite(s.mean) and s.n >= 1]
    ss = 0.0
    df = 0
    base = trailing_baseline(usable)
    if base is not None and len(usable) >= 2:
        ss += sum(s.n * (s.mean - base.mean) ** 2 for s in usable)
        df += len(usable) - 1
    for s in [*usable, *([today] if today is not None else [])]:
        if s.n >= 2 and s.sd is not None and math.isfinite(s.sd):
            ss += (s.n - 1) * s.sd ** 2
            df += s.n - 1
    if df == 0:
        return None
    return Noise(sigma=math.sqrt(ss / df), df=df)


def _scipy_stats():
    """scipy.stats, imported on first use: a job with no history (NO_BASELINE) never needs it, and the
    import costs ~1.5 s of the submit side's results pipeline."""
    from scipy import stats

    return stats


def standard_error(noise: Noise, n: int, m: int | None) -> float:
    """σ̂·√(1/n + 1/m): the standard error of (today's mean − baseline); ``m`` None = a pinned, exact baseline."""
    return noise.sigma * math.sqrt(1.0 / n + (1.0 / m if m else 0.0))


def one_sided_p(worse: float, se: float, df: int) -> float:
    """P(T ≥ worse/se) under 'no change'; ``worse`` > 0 is a change in the bad direction."""
    if se <= 0:
        return 0.0 if worse > 0 else 1.0
    return float(_scipy_stats().t.sf(worse / se, df))


def critical_t(level: float, df: int) -> float:
    """t with P(T ≥ t) = level."""
    return float(_scipy_stats().t.isf(level, df))


def holm(pvalues: Sequence[float], alpha: float = DEFAULT_ALPHA) -> list[tuple[bool, float]]:
    """Holm's step-down over one family: per p-value, (rejected, the level it was held to).

    Sorted ascending, the k-th smallest (0-based) is held to alpha/(K − k); the first one that misses
    its level stops the procedure, and it and every larger p-value keep that level, unrejected.
    """
    k_total = len(pvalues)
    order = sorted(range(k_total), key=lambda i: pvalues[i])
    out: list[tuple[bool, float]] = [(False, alpha / max(k_total, 1))] * k_total
    stopped: float | None = None
    for rank, i in enumerate(order):
        level = alpha / (k_total - rank)
        if stopped is None and pvalues[i] <= level:
            out[i] = (True, level)
        else:
            stopped = level if stopped is None else stopped
            out[i] = (False, stopped)
    return out


def detection_power(*, drop_pct: float, noise_pct: float, n: int, m: int, family: int,
                    alpha: float = DEFAULT_ALPHA, floor_pct: float = 0.0, df: int | None = None) -> float:
    """Chance that a real ``drop_pct`` change in one metric is flagged on the first night (normal
    approximation of the test above, held to the strictest Holm level alpha/family)."""
    se = noise_pct * math.sqrt(1.0 / n + 1.0 / m)
    dof = df if df is not None else max(m - 1, 1)
    threshold = max(floor_pct, critical_t(alpha / family, dof) * se)
    return float(_scipy_stats().norm.sf((threshold - drop_pct) / se))


def required_repeats(*, drop_pct: float = 5.0, noise_pct: float = 2.0, power: float = 0.95, m: int = 30,
                     family: int = 12, alpha: float = DEFAULT_ALPHA, floor_pct: float = 0.0,
                     max_repeats: int = 20) -> int | None:
    """Smallest n whose :func:`detection_power` reaches ``power`` (None if even ``max_repeats`` does not);
    history records are assumed to hold n repeats each, so the baseline has m·n runs."""
    for n in range(1, max_repeats + 1):
        if detection_power(drop_pct=drop_pct, noise_pct=noise_pct, n=n, m=m * n, family=family, alpha=alpha,
                           floor_pct=floor_pct, df=m * n - 1) >= power:
            return n
    return None
