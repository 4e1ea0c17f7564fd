"""Change points through Apache Otava."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from perfsanity.common.errors import ConfigError
from perfsanity.results.changepoint import detect_change_points

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _series(values):
    return [(T0 + timedelta(days=i), v) for i, v in enumerate(values)]


def test_step_up_in_latency_is_a_regression_and_points_at_first_run_after():
    rng = np.random.default_rng(11)
    values = [100 * (1.1 if i >= 25 else 1.0) * (1 + rng.normal(0, 0.01)) for i in range(50)]
    (cp,) = detect_change_points(_series(values), metric="itl_median")
    assert cp.index == 25 and cp.time == T0 + timedelta(days=25)
    assert cp.direction == "up" and cp.regression is True
    assert 8 < cp.magnitude_pct < 12
    assert cp.mean_before == pytest.approx(100, rel=0.02) and cp.pvalue < 1e-4


def test_input_is_sorted_and_cleaned():
    rng = np.random.default_rng(5)
    values = [100 * (0.9 if i >= 30 else 1.0) * (1 + rng.normal(0, 0.01)) for i in range(60)]
    shuffled = _series(values)[::-1] + [(T0 + timedelta(days=100), float("nan"))]
    (cp,) = detect_change_points(shuffled, metric="output_token_throughput")
    assert cp.index == 30 and cp.regression is True and cp.direction == "down"


def test_without_metric_regression_is_unknown_and_short_series_give_nothing():
    values = [1.0] * 10 + [2.0] * 10
    (cp,) = detect_change_points(_series(values))
    assert cp.regression is None and cp.direction == "up"
    assert detect_change_points(_series([1.0, 2.0, 3.0])) == []


def test_bad_arguments():
    with pytest.raises(ConfigError, match="metric"):
        detect_change_points(_series([1.0] * 20), metric="bogus")
    with pytest.raises(ConfigError, match="max_pvalue"):
        detect_change_points(_series([1.0] * 20), max_pvalue=2)
    with pytest.raises(ConfigError, match="timezone"):
        detect_change_points([(datetime(2025, 1, 1), 1.0)] * 10)
