"""The nightly / pre-merge perf regression gate.

For every (concurrency, gated metric) the gate compares today's value against a baseline:

* a **pinned** value, from the test config's ``gate:`` section or the baselines YAML file, when present;
* else a **history** baseline: valid post-merge records with the same :class:`~perfsanity.results.history.MatchKeys`
  from the last ``lookback_days`` (90) → mean per UTC day → trailing rolling mean over ``rolling_days`` (3)
  days-with-data → the 95th percentile of those for higher-is-better metrics, the 5th for lower-is-better.

Direction comes from :func:`perfsanity.load.results_json.higher_is_better` (throughput up; TTFT/TPOT/ITL/E2E down —
note TensorRT-LLM's own scripts treat TPOT as higher-is-better; we do not).

A change beyond the metric's threshold in the bad direction is a regression: **WARN** post-merge
(default 5 %, recorded, does not fail the job) and **FAIL** pre-merge (default 10 %).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from perfsanity.common.errors import ConfigError, PerfsanityError
from perfsanity.common.files import read_json, write_atomic
from perfsanity.load.results_json import (
    LATENCY_FIELDS,
    SCALAR_METRICS,
    STAT_FIELDS,
    RunResult,
    flatten,
    higher_is_better,
)
from perfsanity.results.history import TYPED_METRICS, HistoryStore, MatchKeys, utc

#: the headline metrics gated by default: the ones history also keeps in typed columns
DEFAULT_GATED_METRICS: tuple[str, ...] = TYPED_METRICS
KNOWN_METRICS: frozenset[str] = frozenset(SCALAR_METRICS) | frozenset(
    f"{lat}_{stat}" for lat in LATENCY_FIELDS for stat in STAT_FIELDS
)
ENV_BASELINES = "PERFSANITY_BASELINES"
DEFAULT_BASELINES_FILE = "baselines.yaml"


class GateFailed(PerfsanityError):
    """A pre-merge gate found a regression beyond its threshold."""

    exit_code = 5


def _check_metric(name: str) -> str:
    if name not in KNOWN_METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(sorted(KNOWN_METRICS))}")
    return name


# ------------------------------------------------------------------------------------------- config


class Threshold(BaseModel):
    """Allowed change (percent, in the bad direction) before a metric counts as regressed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    post_merge_pct: float = Field(default=5.0, gt=0, le=100)
    pre_merge_pct: float = Field(default=10.0, gt=0, le=100)

    def pct(self, *, pre_merge: bool) -> float:
        return self.pre_merge_pct if pre_merge else self.post_merge_pct


PinnedBaseline = float | dict[int, float]


class GateConfig(BaseModel):
    """The ``gate:`` section of a test config, or one config's entry in a baselines file.

    ``baselines`` pins a metric either for every concurrency (``ttft_p99: 250.0``) or per concurrency
    (``output_token_throughput: {64: 5100.0, 128: 8300.0}``). Unknown keys are rejected.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: tuple[str, ...] = DEFAULT_GATED_METRICS
    default_threshold: Threshold = Threshold()
    thresholds: dict[str, Threshold] = {}
    baselines: dict[str, PinnedBaseline] = {}
    lookback_days: int = Field(default=90, ge=1, le=3650)
    rolling_days: int = Field(default=3, ge=1, le=90)
    min_history_days: int = Field(default=3, ge=1, le=3650)

    @field_validator("metrics")
    @classmethod
    def _metrics_known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            _check_metric(name)
        if len(set(value)) != len(value):
            raise ValueError("metrics listed twice")
        return value

    @field_validator("thresholds")
    @classmethod
    def _threshold_keys(cls, value: dict[str, Threshold]) -> dict[str, Threshold]:
        for name in value:
            _check_metric(name)
        return value

    @field_validator("baselines")
    @classmethod
    def _baselines_valid(cls, value: dict[str, PinnedBaseline]) -> dict[str, PinnedBaseline]:
        for name, pinned in value.items():
            _check_metric(name)
            values = pinned.values() if isinstance(pinned, dict) else [pinned]
            for v in values:
                if not math.isfinite(v) or v <= 0:
                    raise ValueError(f"baseline for {name} must be a positive number, got {v!r}")
            if isinstance(pinned, dict) and any(c < 1 for c in pinned):
                raise ValueError(f"baseline concurrencies for {name} must be >= 1")
        return value

    @model_validator(mode="after")
    def _lookback_covers_window(self) -> GateConfig:
        if self.min_history_days > self.lookback_days:
            raise ValueError("min_history_days cannot exceed lookback_days")
        return self

    def threshold(self, metric: str) -> Threshold:
        return self.thresholds.get(metric, self.default_threshold)

    def pinned(self, metric: str, concurrency: int) -> float | None:
        pinned = self.baselines.get(metric)
        if pinned is None:
            return None
        if isinstance(pinned, dict):
            return pinned.get(concurrency)
        return float(pinned)

    def merged_with(self, override: GateConfig) -> GateConfig:
        """``override``'s explicitly set entries win; thresholds and baselines merge per metric
        (and per concurrency for per-concurrency pins)."""
        # only explicitly set fields on both sides, so the result stays minimal (and mergeable again)
        data = self.model_dump(exclude_unset=True)
        patch = override.model_dump(exclude_unset=True)
        for key, value in patch.items():
            if key == "thresholds":
                data["thresholds"] = {**data.get("thresholds", {}), **value}
            elif key == "baselines":
                merged = dict(data.get("baselines", {}))
                for metric, pinned in value.items():
                    old = merged.get(metric)
                    if isinstance(pinned, dict) and isinstance(old, dict):
                        merged[metric] = {**old, **pinned}
                    else:
                        merged[metric] = pinned
                data["baselines"] = merged
            else:
                data[key] = value
        try:
            return GateConfig.model_validate(data)
        except ValidationError as exc:
            raise _config_error(exc, None, "gate") from None

    @classmethod
    def from_section(cls, section: Any, *, file: str | None = None, key_path: str = "gate") -> GateConfig:
        """Validate a ``gate:`` mapping (e.g. from a test config); errors become :class:`ConfigError`."""
        if section is None:
            return cls()
        if not isinstance(section, Mapping):
            raise ConfigError(file, key_path, f"must be a mapping, got {type(section).__name__}")
        try:
            return cls.model_validate(dict(section))
        except ValidationError as exc:
            raise _config_error(exc, file, key_path) from None


def _config_error(exc: ValidationError, file: str | None, prefix: str) -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return ConfigError(file, loc, msg)


class BaselinesFile(BaseModel):
    """``baselines.yaml``: per config name, a :class:`GateConfig` (usually just pinned baselines)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    configs: dict[str, GateConfig] = {}

    @classmethod
    def load(cls, path: Path, *, missing_ok: bool = False) -> BaselinesFile:
        try:
            text = path.read_text()
        except FileNotFoundError:
            if missing_ok:
                return cls()
            raise ConfigError(str(path), "", "baselines file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), "", f"cannot read: {exc}") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            raise ConfigError(str(path), "", f"{where}not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ConfigError(str(path), "", "must be a mapping with 'version' and 'configs'")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise _config_error(exc, str(path), "") from None

    def save(self, path: Path) -> None:
        data = {"version": self.version, "configs": {}}
        for name, cfg in sorted(self.configs.items()):
            data["configs"][name] = cfg.model_dump(mode="python", exclude_unset=True)
        write_atomic(path, "# perfsanity pinned baselines: `perfsanity baseline pin` edits this file\n"
                     + yaml.safe_dump(data, sort_keys=True))

    def pin(self, config_name: str, metric: str, value: float, concurrency: int | None = None) -> None:
        """Pin ``metric`` for one concurrency, or for all when ``concurrency`` is None."""
        if not config_name:
            raise ConfigError(None, "--config", "config name must not be empty")
        try:
            _check_metric(metric)
        except ValueError as exc:
            raise ConfigError(None, "--metric", str(exc)) from None
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(None, "--value", f"must be a positive number, got {value!r}")
        if concurrency is not None and concurrency < 1:
            raise ConfigError(None, "--concurrency", f"must be >= 1, got {concurrency}")
        current = self.configs.get(config_name, GateConfig())
        pinned: PinnedBaseline = value if concurrency is None else {concurrency: value}
        self.configs[config_name] = current.merged_with(GateConfig(baselines={metric: pinned}))

    def for_config(self, config_name: str) -> GateConfig | None:
        return self.configs.get(config_name)


def default_baselines_path() -> Path:
    return Path(os.environ.get(ENV_BASELINES) or DEFAULT_BASELINES_FILE)


def resolve_gate_config(
    config_name: str, *, section: GateConfig | None = None, baselines: BaselinesFile | None = None
) -> GateConfig:
    """Defaults ← the test config's ``gate:`` section ← the baselines file's entry (the operator's pins
    win, since ``perfsanity baseline pin`` is how a new level is accepted)."""
    cfg = section or GateConfig()
    if baselines is not None:
        entry = baselines.for_config(config_name)
        if entry is not None:
            cfg = cfg.merged_with(entry)
    return cfg


# ------------------------------------------------------------------------------------------- report


class Verdict(StrEnum):
    PASS = "PASS"
    WARN = "WARN"  # post-merge regression: recorded, job not failed
    FAIL = "FAIL"  # pre-merge regression: job fails
    NO_BASELINE = "NO_BASELINE"  # nothing pinned and too little history
    NO_VALUE = "NO_VALUE"  # the run did not report this metric


class MetricVerdict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int
    metric: str
    value: float | None
    baseline: float | None
    baseline_source: Literal["pinned", "history", "none"]
    delta_pct: float | None  # (value - baseline) / baseline * 100, signed
    threshold_pct: float
    higher_is_better: bool
    verdict: Verdict
    history_days: int = 0  # days with data behind a history baseline
    note: str = ""

    @property
    def name(self) -> str:
        return f"c{self.concurrency}.{self.metric}"

    @property
    def regression(self) -> bool:
        return self.verdict in (Verdict.WARN, Verdict.FAIL)

    @property
    def improvement(self) -> bool:
        if self.delta_pct is None:
            return False
        return self.delta_pct > 0 if self.higher_is_better else self.delta_pct < 0


class GateReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    config_name: str
    pre_merge: bool
    evaluated_at: datetime
    history: str | None = None  # masked URL of the history store used, if any
    lookback_days: int
    verdicts: tuple[MetricVerdict, ...] = ()

    @property
    def verdict(self) -> Verdict:
        found = {v.verdict for v in self.verdicts}
        for level in (Verdict.FAIL, Verdict.WARN):
            if level in found:
                return level
        if Verdict.PASS in found:
            return Verdict.PASS
        return Verdict.NO_BASELINE

    @property
    def regressions(self) -> list[MetricVerdict]:
        return [v for v in self.verdicts if v.regression]

    def by_concurrency(self) -> dict[int, dict[str, MetricVerdict]]:
        out: dict[int, dict[str, MetricVerdict]] = defaultdict(dict)
        for v in self.verdicts:
            out[v.concurrency][v.metric] = v
        return dict(out)

    def summary(self) -> str:
        counts: dict[str, int] = defaultdict(int)
        for v in self.verdicts:
            counts[v.verdict.value] += 1
        parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        kind = "pre-merge" if self.pre_merge else "post-merge"
        return f"{self.config_name}: {self.verdict.value} ({kind}; {parts or 'nothing gated'})"

    def write(self, path: Path) -> None:
        data = self.model_dump(mode="json")
        data["verdict"] = self.verdict.value
        data["regressions"] = [v.name for v in self.regressions]
        write_atomic(path, json.dumps(data, indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> GateReport:
        data = read_json(path)
        if isinstance(data, dict):
            data.pop("verdict", None)
            data.pop("regressions", None)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _config_error(exc, str(path), "") from None


# --------------------------------------------------------------------------------------------- core


def history_baseline(
    series: Sequence[tuple[datetime, float]],
    *,
    higher_is_better: bool,
    rolling_days: int = 3,
    min_days: int = 3,
) -> tuple[float | None, int]:
    """Baseline from ``(timestamp, value)`` points: per-UTC-day mean → trailing rolling mean over
    ``rolling_days`` consecutive days-with-data → P95 (higher-is-better) or P5 (lower-is-better).

    Returns ``(baseline, days_with_data)``; baseline is None with fewer than ``min_days`` days.
    """
    per_day: dict[Any, list[float]] = defaultdict(list)
    for ts, value in series:
        if value is not None and math.isfinite(value):
            per_day[utc(ts).date()].append(float(value))
    days = sorted(per_day)
    if len(days) < min_days or not days:
        return None, len(days)
    daily = np.array([np.mean(per_day[d]) for d in days])
    window = min(rolling_days, len(daily))
    kernel = np.ones(window) / window
    rolling = np.convolve(daily, kernel, mode="valid")
    pct = 95 if higher_is_better else 5
    return float(np.percentile(rolling, pct)), len(days)


def judge(
    *,
    value: float | None,
    baseline: float | None,
    higher: bool,
    threshold_pct: float,
    pre_merge: bool,
) -> tuple[Verdict, float | None]:
    """Verdict and signed delta % of one value against one baseline."""
    if value is None or not math.isfinite(value):
        return Verdict.NO_VALUE, None
    if baseline is None or baseline <= 0 or not math.isfinite(baseline):
        return Verdict.NO_BASELINE, None
    delta = (value - baseline) / baseline * 100.0
    worse = -delta if higher else delta
    if worse > threshold_pct:
        return (Verdict.FAIL if pre_merge else Verdict.WARN), delta
    return Verdict.PASS, delta


def evaluate(
    run: RunResult,
    *,
    config: GateConfig | None = None,
    pre_merge: bool = False,
    history: HistoryStore | None = None,
    keys: MatchKeys | Mapping[int, MatchKeys] | None = None,
    now: datetime | None = None,
) -> GateReport:
    """Gate every (concurrency, gated metric) of ``run``.

    ``keys`` (common, or per concurrency) select the history series; without ``history`` or ``keys``
    only pinned baselines are used. History is read from ``[now - lookback_days, now)``, so the run
    being gated never feeds its own baseline.
    """
    config = config or GateConfig()
    now = utc(now) if now is not None else datetime.now(UTC)
    since = now - timedelta(days=config.lookback_days)
    verdicts: list[MetricVerdict] = []
    for res in sorted(run.results, key=lambda r: r.concurrency):
        flat = flatten(res)
        records = []
        if history is not None and keys is not None:
            if isinstance(keys, MatchKeys):
                k = keys.with_concurrency(res.concurrency)
            else:
                k = keys.get(res.concurrency)  # type: ignore[assignment]
            if k is not None:
                records = history.query(k, since=since, until=now, valid_only=True, post_merge_only=True)
        for metric in config.metrics:
            higher = higher_is_better(metric)
            threshold = config.threshold(metric).pct(pre_merge=pre_merge)
            value = flat.get(metric)
            pinned = config.pinned(metric, res.concurrency)
            days = 0
            note = ""
            if pinned is not None:
                baseline, source = pinned, "pinned"
            else:
                series = [(r.timestamp, r.metrics[metric]) for r in records if metric in r.metrics]
                baseline, days = history_baseline(
                    series, higher_is_better=higher, rolling_days=config.rolling_days,
                    min_days=config.min_history_days,
                )
                source = "history" if baseline is not None else "none"
                if baseline is None:
                    if history is None or keys is None:
                        note = "no pinned baseline and no history"
                    else:
                        note = f"{days} day(s) of history, need {config.min_history_days}"
            verdict, delta = judge(
                value=value, baseline=baseline, higher=higher, threshold_pct=threshold, pre_merge=pre_merge
            )
            if verdict is Verdict.NO_VALUE:
                note = "metric missing from results"
            verdicts.append(
                MetricVerdict(
                    concurrency=res.concurrency,
                    metric=metric,
                    value=value,
                    baseline=baseline,
                    baseline_source=source,  # type: ignore[arg-type]
                    delta_pct=delta,
                    threshold_pct=threshold,
                    higher_is_better=higher,
                    verdict=verdict,
                    history_days=days,
                    note=note,
                )
            )
    return GateReport(
        config_name=run.config_name,
        pre_merge=pre_merge,
        evaluated_at=now,
        history=history.masked_url if history is not None else None,
        lookback_days=config.lookback_days,
        verdicts=tuple(verdicts),
    )
