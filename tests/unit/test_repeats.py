"""benchmark.repeats: the config field, and the time bound of the unset (power-math) default."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from perfsanity.run.benchmark import another_repeat_fits
from perfsanity.spec.config import DEFAULT_REPEATS, Benchmark


def test_repeats_field():
    assert Benchmark().repeats is None and DEFAULT_REPEATS == 5
    assert Benchmark(repeats=3).repeats == 3
    for bad in (0, 101, "many"):
        with pytest.raises(ValidationError):
            Benchmark(repeats=bad)


@pytest.mark.parametrize("done, spent, budget, pinned, fits", [
    (1, 10.0, 240, None, True),     # 2 × 10 s ≤ 240 s
    (3, 90.0, 240, None, True),     # 4 × 30 s = 120 s
    (3, 190.0, 240, None, False),   # 4 × 63 s > 240 s: stop at 3
    (1, 200.0, 240, None, False),
    (1, 200.0, 240, 5, True),       # an explicit benchmark.repeats always runs
    (0, 0.0, 1, None, True),
])
def test_unset_repeats_stop_before_the_per_concurrency_timeout(done, spent, budget, pinned, fits):
    assert another_repeat_fits(done, spent, budget, pinned=pinned) is fits
