"""The nightly / pre-merge perf regression gate (the rule and its error rates: ``docs/gate.md``).

For every (concurrency, gated metric) the gate compares today's value, the mean of the job's
``benchmark.repeats``, against a baseline:

* a **pinned** value, from the test config's ``gate:`` section or the baselines YAML file, when present;
* else the **trailing mean** of the last ``baseline_records`` valid post-merge records with the same
  :class:`~perfsanity.results.history.MatchKeys` from the last ``lookback_days`` (90);
* pre-merge only: **main's latest** post-merge record instead, when that record already missed its own
  baseline (main has regressed), so a PR fails only for what it changed.

The noise σ̂ is pooled from history and today's repeats (:mod:`perfsanity.results.gatestats`); the
threshold is ``max(configured %, t·σ̂·√(1/n + 1/m))`` with the t level set by Holm's procedure over
all tests of the job (family-wise false-alarm rate ``alpha`` per job-night). A change beyond it in
the bad direction is a regression: **WARN** post-merge (recorded, does not fail the job) and **FAIL**
pre-merge. Otava change points over the same history are reported beside each verdict, naming the
first run of a shift (the slow, sure signal).

Direction comes from :func:`perfsanity.load.results_json.higher_is_better` (throughput up; TTFT/TPOT/ITL/E2E down —
note TensorRT-LLM's own scripts treat TPOT as higher-is-better; we do not).
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
    REPEATS_KEY,
    SCALAR_METRICS,
    SPREAD_PREFIX,
    STAT_FIELDS,
    ConcurrencyResult,
    RunResult,
    flatten,
    higher_is_better,
    point_order,
)
from perfsanity.load.validity import invalid_reason
from perfsanity.plan.jobmeta import keys_at
from perfsanity.results.gatestats import (
    DEFAULT_ALPHA,
    Sample,
    critical_t,
    holm,
    one_sided_p,
    pooled_noise,
    standard_error,
    trailing_baseline,
)
from perfsanity.results.history import TYPED_METRICS, HistoryRecord, HistoryStore, MatchKeys, utc

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
    """Smallest change (percent, in the bad direction) worth flagging; the noise can raise the bar above it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    post_merge_pct: float = Field(default=2.0, gt=0, le=100)
    pre_merge_pct: float = Field(default=3.0, gt=0, le=100)

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
    baseline_records: int = Field(default=30, ge=2, le=10_000, description="trailing records behind the mean")
    min_history_days: int = Field(default=3, ge=1, le=3650)
    alpha: float = Field(default=DEFAULT_ALPHA, gt=0, lt=0.5, description="false alarms per job-night")
    unknown_noise_pct: float = Field(default=5.0, gt=0, le=100,
                                     description="threshold when no noise estimate exists (pinned, 1 run, no history)")
    change_points: bool = True

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

    def threshold_configured(self, metric: str) -> bool:
        """True when the metric's threshold was set (``thresholds`` or ``default_threshold``), not defaulted."""
        return metric in self.thresholds or "default_threshold" in self.model_fields_set

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
    NO_VALUE = "NO_VALUE"  # the run did not report this metric (or its basis was degenerate)
    CLIENT_SATURATED = "CLIENT_SATURATED"  # the client, not the server, set this point's numbers: not gated


class MetricVerdict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int
    metric: str
    point: str = ""  # the point's label (perfsanity.spec.benchmark_types); empty: c<concurrency>
    value: float | None
    baseline: float | None
    baseline_source: Literal["pinned", "history", "main-latest", "none"]
    delta_pct: float | None  # (value - baseline) / baseline * 100, signed
    threshold_pct: float
    higher_is_better: bool
    verdict: Verdict
    history_days: int = 0  # days with data behind a history baseline
    note: str = ""
    repeats: int = 1  # n: runs behind value
    baseline_runs: int = 0  # m: runs behind a history baseline (0: pinned, exact)
    sigma_pct: float | None = None  # pooled per-run noise σ̂, % of the baseline
    pvalue: float | None = None  # one-sided, bad direction; None when not tested statistically
    level: float | None = None  # the Holm level this test was held to
    change_point: str = ""  # the latest change point in the bad direction, naming its first run

    @property
    def label(self) -> str:
        return self.point or f"c{self.concurrency}"

    @property
    def name(self) -> str:
        return f"{self.label}.{self.metric}"

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
    alpha: float = DEFAULT_ALPHA
    family_size: int = 0  # statistical tests the false-alarm rate is controlled over
    verdicts: tuple[MetricVerdict, ...] = ()

    @property
    def verdict(self) -> Verdict:
        found = {v.verdict for v in self.verdicts}
        for level in (Verdict.FAIL, Verdict.WARN):
            if level in found:
                return level
        if Verdict.PASS in found:
            return Verdict.PASS
        if found and found <= {Verdict.CLIENT_SATURATED, Verdict.NO_VALUE}:
            return Verdict.CLIENT_SATURATED
        return Verdict.NO_BASELINE

    @property
    def regressions(self) -> list[MetricVerdict]:
        return [v for v in self.verdicts if v.regression]

    def by_point(self) -> dict[str, dict[str, MetricVerdict]]:
        """Verdicts per point label, then per metric."""
        out: dict[str, dict[str, MetricVerdict]] = defaultdict(dict)
        for v in self.verdicts:
            out[v.label][v.metric] = v
        return dict(out)

    def summary(self) -> str:
        counts: dict[str, int] = defaultdict(int)
        for v in self.verdicts:
            counts[v.verdict.value] += 1
        parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        kind = "pre-merge" if self.pre_merge else "post-merge"
        text = f"{self.config_name}: {self.verdict.value} ({kind}; {parts or 'nothing gated'})"
        if self.verdict is Verdict.CLIENT_SATURATED:
            text += ": every point is client_saturated, so nothing measured the server (see the job log)"
        return text

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


def record_sample(metrics: Mapping[str, float], metric: str) -> Sample | None:
    """One history record's value of ``metric`` with its repeats and spread (None when missing)."""
    value = metrics.get(metric)
    if value is None or not math.isfinite(value):
        return None
    n = max(int(metrics.get(REPEATS_KEY, 1) or 1), 1)
    return Sample(mean=float(value), n=n, sd=metrics.get(f"{SPREAD_PREFIX}{metric}"))


def result_sample(result: ConcurrencyResult, metric: str) -> Sample | None:
    """Today's value of ``metric``: the mean of the result's repeats, their count and spread."""
    value = flatten(result).get(metric)
    if value is None or not math.isfinite(value):
        return None
    return Sample(mean=value, n=max(len(result.repeats), 1), sd=result.spread.get(metric))


def history_baseline(
    series: Sequence[tuple[datetime, float]], *, max_records: int = 30, min_days: int = 3
) -> tuple[float | None, int]:
    """Trailing mean of the last ``max_records`` ``(timestamp, value)`` points.

    Returns ``(baseline, days_with_data)``; baseline is None with fewer than ``min_days`` UTC days.
    """
    points = sorted((utc(ts), float(v)) for ts, v in series if v is not None and math.isfinite(v))
    days = len({ts.date() for ts, _ in points})
    if days < min_days or not points:
        return None, days
    tail = points[-max_records:]
    return sum(v for _, v in tail) / len(tail), days


def judge(
    *,
    value: float | None,
    baseline: float | None,
    higher: bool,
    threshold_pct: float,
    pre_merge: bool,
) -> tuple[Verdict, float | None]:
    """Verdict and signed delta % of one value against one baseline and an (already derived) threshold."""
    if value is None or not math.isfinite(value):
        return Verdict.NO_VALUE, None
    if baseline is None or baseline <= 0 or not math.isfinite(baseline):
        return Verdict.NO_BASELINE, None
    delta = (value - baseline) / baseline * 100.0
    worse = -delta if higher else delta
    if worse > threshold_pct:
        return (Verdict.FAIL if pre_merge else Verdict.WARN), delta
    return Verdict.PASS, delta


class _Test(BaseModel):
    """One (point, metric) before the family-wise step: everything but the verdict."""

    model_config = ConfigDict(frozen=True)

    concurrency: int
    point: str
    metric: str
    higher: bool
    floor_pct: float
    value: float | None
    repeats: int
    baseline: float | None
    source: str
    days: int
    runs: int
    note: str
    sigma_pct: float | None
    se_pct: float | None
    df: int
    pvalue: float | None
    change_point: str
    saturated: bool = False
    degenerate: str = ""


def _change_point(samples: list[tuple[HistoryRecord, Sample]], today: Sample | None, metric: str,
                  now: datetime) -> str:
    from perfsanity.results.changepoint import MIN_POINTS, detect_change_points

    if today is None or len(samples) + 1 < MIN_POINTS:
        return ""
    series = [(r.timestamp, s.mean) for r, s in samples] + [(now, today.mean)]
    try:
        found = [cp for cp in detect_change_points(series, metric=metric) if cp.regression]
    except PerfsanityError as exc:
        return f"change points unavailable: {exc}"
    if not found:
        return ""
    cp = max(found, key=lambda c: c.index)
    if cp.index >= len(samples):
        first = "this run"
    else:
        rec = samples[cp.index][0]
        first = f"the run of {utc(rec.timestamp):%Y-%m-%d %H:%M} UTC" + (f" (commit {rec.commit[:12]})"
                                                                          if rec.commit else "")
    return f"{cp.magnitude_pct:+.1f}% level shift from {first}, p={cp.pvalue:.1e}"


def _prepare(res: ConcurrencyResult, metric: str, records: Sequence[HistoryRecord], *, config: GateConfig,
             pre_merge: bool, have_history: bool, now: datetime) -> _Test:
    higher = higher_is_better(metric)
    today = result_sample(res, metric)
    if res.validity == "client_saturated":  # never gated as a server regression, never in the family
        return _Test(concurrency=res.concurrency, point=res.point, metric=metric, higher=higher, floor_pct=0.0,
                     value=today.mean if today is not None else None, repeats=today.n if today is not None else 1,
                     baseline=None, source="none", days=0, runs=0, note="client_saturated: " + "; ".join(res.evidence),
                     sigma_pct=None, se_pct=None, df=0, pvalue=None, change_point="", saturated=True)
    samples = [(r, s) for r in records if (s := record_sample(r.metrics, metric)) is not None]
    days = len({utc(r.timestamp).date() for r, _ in samples})
    trailing = samples[-config.baseline_records:]
    noise = pooled_noise([s for _, s in trailing], today)
    pinned = config.pinned(metric, res.concurrency)
    note = ""
    runs: int | None = None
    if pinned is not None:
        baseline, source = pinned, "pinned"
    elif trailing and days >= config.min_history_days:
        base = trailing_baseline([s for _, s in trailing])
        assert base is not None
        baseline, source, runs = base.mean, "history", base.runs
        latest_rec, latest = trailing[-1]
        missed = latest_rec.gate_verdicts.get(metric)
        if pre_merge and missed in (Verdict.WARN.value, Verdict.FAIL.value):
            baseline, source, runs = latest.mean, "main-latest", latest.n
            commit = f" (commit {latest_rec.commit[:12]})" if latest_rec.commit else ""
            note = (f"main's latest post-merge run of {utc(latest_rec.timestamp):%Y-%m-%d %H:%M} UTC{commit} "
                    f"already missed its baseline ({missed}); compared with main as it is")
    else:
        baseline, source = None, "none"
        note = ("no pinned baseline and no history" if not have_history
                else f"{days} day(s) of history, need {config.min_history_days}")
    se_pct = sigma_pct = pvalue = None
    df = 0
    if noise is not None and today is not None and baseline is not None and baseline > 0:
        se = standard_error(noise, today.n, runs)
        se_pct, sigma_pct, df = 100.0 * se / baseline, 100.0 * noise.sigma / baseline, noise.df
        worse = (baseline - today.mean) if higher else (today.mean - baseline)
        pvalue = one_sided_p(worse, se, noise.df)
    change_point = ""
    if config.change_points and source in ("history", "main-latest"):
        change_point = _change_point(samples, today, metric, now)
    return _Test(
        degenerate=invalid_reason(res.invalid_metrics, metric),
        concurrency=res.concurrency, point=res.point, metric=metric, higher=higher,
        floor_pct=config.threshold(metric).pct(pre_merge=pre_merge),
        value=today.mean if today is not None else None, repeats=today.n if today is not None else 1,
        baseline=baseline, source=source, days=days, runs=runs or 0, note=note, sigma_pct=sigma_pct,
        se_pct=se_pct, df=df, pvalue=pvalue, change_point=change_point,
    )


def _verdict(t: _Test, level: float | None, *, config: GateConfig, pre_merge: bool) -> MetricVerdict:
    if t.saturated:
        return MetricVerdict(concurrency=t.concurrency, point=t.point, metric=t.metric, value=t.value, baseline=None,
                             baseline_source="none", delta_pct=None, threshold_pct=0.0, higher_is_better=t.higher,
                             verdict=Verdict.CLIENT_SATURATED, note=t.note, repeats=t.repeats)
    if t.se_pct is not None and level is not None:
        threshold = max(t.floor_pct, critical_t(level, t.df) * t.se_pct)
    elif config.threshold_configured(t.metric):  # no noise estimate: the operator's own threshold
        threshold = t.floor_pct
    else:  # no noise estimate (pinned, a single run, no history) and only the default floor
        threshold = max(t.floor_pct, config.unknown_noise_pct)
    verdict, delta = judge(value=t.value, baseline=t.baseline, higher=t.higher, threshold_pct=threshold,
                           pre_merge=pre_merge)
    if verdict is Verdict.NO_VALUE:
        note = f"invalid for this point: {t.degenerate}" if t.degenerate else "metric missing from results"
    else:
        note = t.note
    return MetricVerdict(
        concurrency=t.concurrency, point=t.point, metric=t.metric, value=t.value, baseline=t.baseline,
        baseline_source=t.source,  # type: ignore[arg-type]
        delta_pct=delta, threshold_pct=round(threshold, 4), higher_is_better=t.higher, verdict=verdict,
        history_days=t.days, note=note, repeats=t.repeats, baseline_runs=t.runs, sigma_pct=t.sigma_pct,
        pvalue=t.pvalue, level=level, change_point=t.change_point,
    )


def evaluate(
    run: RunResult,
    *,
    config: GateConfig | None = None,
    pre_merge: bool = False,
    history: HistoryStore | None = None,
    keys: MatchKeys | Mapping[str | int, MatchKeys] | None = None,
    now: datetime | None = None,
) -> GateReport:
    """Gate every (point, gated metric) of ``run`` as one family (see the module docstring).

    ``keys`` (common, or per point label) select the history series; without ``history`` or ``keys``
    only pinned baselines are used. History is read from ``[now - lookback_days, now)``, so the run
    being gated never feeds its own baseline.
    """
    config = config or GateConfig()
    now = utc(now) if now is not None else datetime.now(UTC)
    since = now - timedelta(days=config.lookback_days)
    records: dict[str, list[HistoryRecord]] | None = None
    if history is not None and keys is not None:
        records = {}
        for res in run.results:
            k = keys_at(keys, res)
            if k is not None:
                records[res.label] = history.query(k, since=since, until=now, valid_only=True,
                                                         post_merge_only=True)
    report = evaluate_records(run, records, config=config, pre_merge=pre_merge, now=now)
    if history is not None:
        report = report.model_copy(update={"history": history.masked_url})
    return report


def evaluate_records(
    run: RunResult,
    records: Mapping[str, Sequence[HistoryRecord]] | None,
    *,
    config: GateConfig,
    pre_merge: bool,
    now: datetime,
) -> GateReport:
    """:func:`evaluate` on history already selected: ``records`` per point label (valid post-merge,
    oldest first, before ``now``), or None when there is no history at all."""
    tests: list[_Test] = []
    for res in sorted(run.results, key=point_order):
        mine = records.get(res.label, ()) if records is not None else ()
        for metric in config.metrics:
            tests.append(_prepare(res, metric, mine, config=config, pre_merge=pre_merge,
                                  have_history=records is not None, now=now))
    family = [i for i, t in enumerate(tests) if t.pvalue is not None]
    levels: dict[int, float] = {}
    for i, (_rejected, level) in zip(family, holm([tests[i].pvalue or 1.0 for i in family], config.alpha),
                                     strict=True):
        levels[i] = level
    verdicts = [_verdict(t, levels.get(i), config=config, pre_merge=pre_merge) for i, t in enumerate(tests)]
    return GateReport(
        config_name=run.config_name,
        pre_merge=pre_merge,
        evaluated_at=now,
        lookback_days=config.lookback_days,
        alpha=config.alpha,
        family_size=len(family),
        verdicts=tuple(verdicts),
    )
