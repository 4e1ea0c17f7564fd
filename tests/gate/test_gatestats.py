"""The gate's statistics: Holm's step-down, the pooled noise, the power math behind the defaults."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perfsanity.load.repeats import combine
from perfsanity.load.results_json import ConcurrencyResult, LatencyStats, repeat_metrics
from perfsanity.results.gate import GateConfig
from perfsanity.results.gatestats import (
    Sample,
    detection_power,
    holm,
    pooled_noise,
    required_repeats,
    standard_error,
    trailing_baseline,
)
from perfsanity.spec.config import DEFAULT_REPEATS


def test_holm_step_down():
    # K = 4: levels 0.0025, 0.00333, 0.005, 0.01 in p order; 0.004 misses 0.00333 and stops the procedure
    got = holm([0.004, 0.001, 0.2, 0.0045], alpha=0.01)
    assert got[1] == (True, pytest.approx(0.0025))
    assert got[0] == (False, pytest.approx(0.01 / 3))
    assert got[3] == (False, pytest.approx(0.01 / 3)) and got[2] == (False, pytest.approx(0.01 / 3))
    assert [r for r, _ in holm([0.001, 0.004, 0.009], alpha=0.01)] == [True, True, True]
    assert holm([], alpha=0.01) == []


def test_pooled_noise_combines_within_and_between():
    rng = np.random.default_rng(7)
    history = []
    for _ in range(40):
        x = 100 * (1 + 0.02 * rng.standard_normal(4))
        history.append(Sample(mean=float(x.mean()), n=4, sd=float(x.std(ddof=1))))
    noise = pooled_noise(history)
    assert noise.df == 39 + 40 * 3
    assert noise.sigma == pytest.approx(2.0, rel=0.15)
    base = trailing_baseline(history)
    assert (base.runs, base.records) == (160, 40) and base.mean == pytest.approx(100, rel=0.01)
    # single-run records: the spread of the values is all there is; today's repeats add their own df
    singles = [Sample(mean=v) for v in (99.0, 101.0)]
    assert pooled_noise(singles) .df == 1 and pooled_noise(singles).sigma == pytest.approx(math.sqrt(2))
    assert pooled_noise([Sample(mean=1.0)]) is None
    assert pooled_noise([Sample(mean=1.0)], Sample(mean=1.0, n=3, sd=0.5)).df == 2
    assert standard_error(noise, 4, None) == pytest.approx(noise.sigma / 2)  # pinned: no baseline error


def test_default_repeats_come_from_the_power_math():
    """5 % drop at 2 % noise, 12 tests (6 metrics × 2 concurrencies) at 1 % per job-night, 30 trailing jobs."""
    cfg = GateConfig()
    n = required_repeats(drop_pct=5.0, noise_pct=2.0, power=0.95, m=cfg.baseline_records, family=12, alpha=cfg.alpha,
                         floor_pct=cfg.default_threshold.post_merge_pct)
    assert n == DEFAULT_REPEATS
    assert detection_power(drop_pct=5.0, noise_pct=2.0, n=1, m=30, family=12) < 0.5  # one run cannot


def _result(tput: float, ttft: float) -> ConcurrencyResult:
    return ConcurrencyResult(concurrency=8, client="aiperf", requested=16, completed=16, failed=0, output_tokens=512,
                             duration_s=2.0, output_token_throughput=tput, ttft=LatencyStats(median=ttft, p99=None))


def test_combine_keeps_each_repeat_mean_and_spread():
    reps = [_result(100.0, 10.0), _result(110.0, 12.0), _result(90.0, 11.0)]
    got = combine(reps)
    assert got.output_token_throughput == pytest.approx(100.0) and got.ttft.median == pytest.approx(11.0)
    assert got.ttft.p99 is None
    assert (got.requested, got.completed, got.output_tokens, got.duration_s) == (48, 48, 1536, 6.0)
    assert got.spread == {"output_token_throughput": pytest.approx(10.0), "ttft_median": pytest.approx(1.0)}
    assert [r.output_token_throughput for r in got.repeats] == [100.0, 110.0, 90.0]
    assert repeat_metrics(got) == {"n_repeats": 3.0, "sd.output_token_throughput": pytest.approx(10.0),
                                   "sd.ttft_median": pytest.approx(1.0)}
    assert combine(reps[:1]) is reps[0] and repeat_metrics(reps[0]) == {}
    with pytest.raises(ValueError, match="cannot combine"):
        combine([reps[0], reps[0].model_copy(update={"concurrency": 9})])
