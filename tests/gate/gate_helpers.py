"""Helpers shared by the history / gate / report tests: synthetic runs, match keys and a seeded 90-day
history. A uniquely named module (other test folders have their own ``conftest``); the fixtures are in
``conftest.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import numpy as np

from perfsanity.load.repeats import combine
from perfsanity.load.results_json import ConcurrencyResult, LatencyStats, RunResult
from perfsanity.plan.jobmeta import PER_RESULT_KEYS
from perfsanity.results.history import HistoryStore, JobMeta, MatchKeys, RunMeta

PG_ENV = "PERFSANITY_TEST_PG_URL"
CONFIG = "dsr1-fp4-1k1k-ctx1tp4-gen1tep8"
DAY0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)

BASE = {  # level of every synthetic metric at concurrency 64
    "output_token_throughput": 5000.0,
    "total_token_throughput": 10000.0,
    "ttft_median": 200.0,
    "ttft_p99": 450.0,
    "tpot_median": 12.0,
    "itl_median": 11.0,
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def make_keys(config_name: str = CONFIG, concurrency: int = 64) -> MatchKeys:
    return MatchKeys(
        config_name=config_name, model="deepseek-r1", precision="fp4", gpu_type="GB200", backend="trtllm",
        mode="e2e", num_ctx_servers=1, num_gen_servers=1, ctx_tp=4, ctx_pp=1, ctx_ep=1, ctx_attention_dp=False,
        gen_tp=8, gen_pp=1, gen_ep=8, gen_attention_dp=True, isl=1024, osl=1024, concurrency=concurrency,
        total_gpus=12,
    )


def make_result(concurrency: int, values: Mapping[str, float]) -> ConcurrencyResult:
    def stats(prefix: str) -> LatencyStats:
        return LatencyStats(median=values.get(f"{prefix}_median"), p99=values.get(f"{prefix}_p99"),
                            mean=values.get(f"{prefix}_mean"))

    return ConcurrencyResult(
        concurrency=concurrency, client="aiperf", requested=concurrency * 10, completed=concurrency * 10, failed=0,
        output_token_throughput=values.get("output_token_throughput"),
        total_token_throughput=values.get("total_token_throughput"),
        output_token_throughput_per_gpu=values.get("output_token_throughput_per_gpu"),
        ttft=stats("ttft"), tpot=stats("tpot"), itl=stats("itl"), e2e=stats("e2e"),
    )


def make_run(values_by_conc: Mapping[int, Mapping[str, float] | list[Mapping[str, float]]],
             config_name: str = CONFIG, status: str = "passed") -> RunResult:
    """One result per concurrency; a list of value mappings is that concurrency's repeats."""
    def result(c: int, v: Mapping[str, float] | list[Mapping[str, float]]) -> ConcurrencyResult:
        return combine([make_result(c, x) for x in v]) if isinstance(v, list) else make_result(c, v)

    return RunResult(
        config_name=config_name, backend="trtllm", mode="e2e", total_gpus=12, status=status,
        results=tuple(result(c, v) for c, v in sorted(values_by_conc.items())),
    )


def day_values(rng: np.random.Generator, factors: Mapping[str, float] | None = None,
               noise: float = 0.02) -> dict[str, float]:
    factors = factors or {}
    return {m: v * factors.get(m, 1.0) * (1 + rng.normal(0, noise)) for m, v in BASE.items()}


def seed_history(store: HistoryStore, *, days: int = 90, change_day: int | None = None,
                 change: Mapping[str, float] | None = None, seed: int = 3, concurrency: int = 64,
                 config_name: str = CONFIG, repeats: int = 1,
                 today_repeats: int = 1) -> dict[str, float] | list[dict[str, float]]:
    """One post-merge job per day for ``days`` days, each the mean of ``repeats`` runs (2 % gaussian
    noise per run); from ``change_day`` on, each metric is multiplied by ``change[metric]``. Returns
    the values of "today" (day ``days``): one mapping, or a list of ``today_repeats`` of them."""
    rng = np.random.default_rng(seed)
    keys = make_keys(config_name, concurrency)
    for d in range(days):
        factors = change if (change_day is not None and d >= change_day) else None
        values = [day_values(rng, factors) for _ in range(repeats)]
        run = make_run({concurrency: values if repeats > 1 else values[0]}, config_name)
        store.add_run(keys, run, RunMeta(commit=f"c{d:04d}", branch="main", post_merge=True,
                                         timestamp=DAY0 + timedelta(days=d, minutes=int(rng.integers(0, 90)))))
    factors = change if change_day is not None else None
    if today_repeats > 1:
        return [day_values(rng, factors) for _ in range(today_repeats)]
    return day_values(rng, factors)


def job_meta(config_name: str = CONFIG, timestamp: datetime | None = None, gate: dict | None = None) -> JobMeta:
    keys = {k: v for k, v in make_keys(config_name).as_dict().items() if k not in PER_RESULT_KEYS}
    return JobMeta.model_validate({"keys": keys, "commit": "abcdef1234567890", "branch": "main",
                                   "build_url": "https://jenkins.example/job/perf/42/", "job_id": "42",
                                   "timestamp": timestamp, "gate": gate})


