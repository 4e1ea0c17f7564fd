"""Typed benchmark results: one :class:`ConcurrencyResult` per concurrency, grouped in a :class:`RunResult`.

Every client adapter (aiperf, sglang ``bench_serving``, TensorRT-LLM ``benchmark_serving``) produces
these objects; everything downstream (validity gate, history, regression gate, reports) reads only
these. Latencies are milliseconds, throughputs are per second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from perfsanity.common.files import write_atomic

SCHEMA_VERSION = 1


class LatencyStats(BaseModel):
    """Summary of one latency distribution, in milliseconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: float | None = None
    median: float | None = None
    p90: float | None = None
    p99: float | None = None


class ConcurrencyResult(BaseModel):
    """What one client run at one measurement point measured (:mod:`perfsanity.spec.benchmark_types`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(ge=1)
    point: str = Field(default="", description="the point's label (c8, rps2.c8, isl8192_osl1024.c8, trace.x); "
                       "empty: a plain concurrency point written before benchmark types (c<concurrency>)")
    benchmark_type: str = "concurrency"
    request_rate: float | None = Field(default=None, description="requests/s (benchmark.type request_rate)")
    arrival: str | None = None
    isl: int | None = Field(default=None, ge=1, description="the point's input length when it has its own")
    osl: int | None = Field(default=None, ge=1, description="the point's output length when it has its own")
    client: str
    requested: int = Field(ge=0, description="requests the client was asked to send")
    completed: int = Field(ge=0, description="requests that finished successfully")
    failed: int = Field(ge=0)
    input_tokens: int | None = Field(default=None, ge=0, description="total prompt tokens sent")
    output_tokens: int | None = Field(default=None, ge=0, description="total tokens generated")
    duration_s: float | None = Field(default=None, ge=0)
    request_throughput: float | None = None  # requests / s
    output_token_throughput: float | None = None  # tokens / s
    total_token_throughput: float | None = None  # (input + output) tokens / s
    output_token_throughput_per_user: float | None = None  # tokens / s / request in flight
    output_token_throughput_per_gpu: float | None = None  # tokens / s / GPU of the whole deployment
    ttft: LatencyStats = LatencyStats()
    tpot: LatencyStats = LatencyStats()
    itl: LatencyStats = LatencyStats()
    e2e: LatencyStats = LatencyStats()
    raw_path: str | None = Field(default=None, description="client output file this was parsed from")
    validity: Literal["valid", "client_saturated"] = Field(
        default="valid", description="client_saturated: the client, not the server, limited this point")
    evidence: tuple[str, ...] = Field(default=(), description="why the point is client_saturated")
    invalid_metrics: dict[str, str] = Field(
        default={}, description="latency group (ttft/tpot/itl/e2e) → why its basis is degenerate (values dropped)")
    client_stats: dict[str, float] = Field(
        default={}, description="the client's own health figures (credit→start latency, chunks, client cores)")
    repeats: tuple[ConcurrencyResult, ...] = Field(
        default=(), description="each repeat (benchmark.repeats > 1); the fields above are then their mean")
    spread: dict[str, float] = Field(
        default={}, description="sample standard deviation across the repeats, per flat metric name")
    started_at: float | None = Field(default=None, description="Unix time the client started (benchmark window)")
    ended_at: float | None = Field(default=None, description="Unix time the client ended")

    def metric(self, name: str) -> float | None:
        """Value of a flat metric name such as ``ttft_p99`` or ``output_token_throughput``."""
        return flatten(self).get(name)

    @property
    def label(self) -> str:
        """The point's stable label: ``point``, or ``c<concurrency>`` for a plain concurrency point."""
        return self.point or f"c{self.concurrency}"


def point_order(result: ConcurrencyResult) -> tuple[int, int, float, int, str]:
    """Sort key of results in a table or a plot: by ISL/OSL pair, rate, then concurrency (a plain
    concurrency job: by concurrency, as before benchmark types)."""
    return (result.isl or 0, result.osl or 0, result.request_rate or 0.0, result.concurrency, result.label)


#: the fields that say which point a result measured (copied from a point onto its results)
POINT_FIELDS = ("point", "benchmark_type", "request_rate", "arrival", "isl", "osl")


class AccuracyResult(BaseModel):
    """One accuracy task (lm-eval, after the perf run) against the same front door."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    metric: str | None = Field(default=None, description="lm-eval's result key, e.g. exact_match,none")
    score: float | None = Field(default=None, description="None: lm-eval did not produce one (see error)")
    threshold: float | None = Field(default=None, description="accuracy.threshold; None: not judged")
    samples: int | None = Field(default=None, ge=0, description="examples evaluated")
    error: str | None = Field(default=None, description="why there is no score (lm-eval failed or timed out)")
    raw_path: str | None = None
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def passed(self) -> bool:
        """A score exists and, with a threshold, reaches it."""
        if self.error is not None or self.score is None:
            return False
        return self.threshold is None or self.score >= self.threshold

    def verdict_text(self) -> str:
        if self.error is not None or self.score is None:
            return f"accuracy {self.task}: no score ({self.error or 'lm-eval wrote none'})"
        judged = "not judged (no accuracy.threshold)" if self.threshold is None else (
            f"{'>=' if self.passed else '<'} threshold {self.threshold:g}")
        return f"accuracy {self.task}: {self.metric} {self.score:.4g} {judged}"


class ProfilerCall(BaseModel):
    """One torch-profiler start/stop request of a ``profiling.windows`` point, answered or not."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: str  # the benchmark point, c<concurrency>
    action: Literal["start", "stop"]
    role: str
    url: str
    sent_at: float  # Unix time
    answered_at: float  # Unix time the answer (or the failure) came
    status: int | None = Field(default=None, description="HTTP status; None: no answer (the reason is in answer)")
    answer: str = ""


class RunResult(BaseModel):
    """All concurrencies of one test run, plus what identifies the run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    config_name: str
    backend: str
    mode: str
    total_gpus: int = Field(ge=0)
    results: tuple[ConcurrencyResult, ...] = ()
    status: Literal["passed", "failed", "incomplete"] = "incomplete"
    failures: tuple[str, ...] = ()
    accuracy: tuple[AccuracyResult, ...] = Field(
        default=(), description="accuracy.enable_accuracy_test: one per task; judged on the submit side")
    profiler_calls: tuple[ProfilerCall, ...] = Field(
        default=(), description="profiling.windows: the torch profiler's start/stop requests and their answers")

    def write(self, path: Path) -> None:
        """Write as JSON, atomically (tmp file + rename)."""
        write_atomic(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> RunResult:
        return cls.model_validate(json.loads(path.read_text()))


LATENCY_FIELDS = ("ttft", "tpot", "itl", "e2e")
STAT_FIELDS = ("mean", "median", "p90", "p99")
SCALAR_METRICS = (
    "request_throughput",
    "output_token_throughput",
    "total_token_throughput",
    "output_token_throughput_per_user",
    "output_token_throughput_per_gpu",
)


def flatten(result: ConcurrencyResult) -> dict[str, float]:
    """Flat ``{metric_name: value}`` view, e.g. ``ttft_p99``, ``itl_median``, ``output_token_throughput``.

    Metrics that are ``None`` are left out.
    """
    out: dict[str, float] = {}
    for name in SCALAR_METRICS:
        value = getattr(result, name)
        if value is not None:
            out[name] = float(value)
    for lat in LATENCY_FIELDS:
        stats: LatencyStats = getattr(result, lat)
        for stat in STAT_FIELDS:
            value = getattr(stats, stat)
            if value is not None:
                out[f"{lat}_{stat}"] = float(value)
    return out


REPEATS_KEY = "n_repeats"  # history metrics JSON: how many repeats a record's values are the mean of
SPREAD_PREFIX = "sd."  # history metrics JSON: "sd.<metric>" = the sample SD across those repeats


def repeat_metrics(result: ConcurrencyResult) -> dict[str, float]:
    """``{"n_repeats": n, "sd.<metric>": sd, ...}`` of a result with repeats; {} for a single run."""
    if len(result.repeats) < 2:
        return {}
    return {REPEATS_KEY: float(len(result.repeats)),
            **{f"{SPREAD_PREFIX}{m}": float(v) for m, v in result.spread.items()}}


def higher_is_better(metric: str) -> bool:
    """Direction of a flat metric: throughputs up, latencies (TTFT/TPOT/ITL/E2E) down."""
    if metric.split("_", 1)[0] in LATENCY_FIELDS:
        return False
    if "throughput" in metric:
        return True
    raise ValueError(f"unknown metric direction: {metric!r}")
