"""Gate logic: baselines (pinned / history math), direction, thresholds, config validation, files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from gate_helpers import make_keys, make_run

from perfsanity.common.errors import ConfigError
from perfsanity.results.gate import (
    BaselinesFile,
    GateConfig,
    GateReport,
    Verdict,
    evaluate,
    history_baseline,
    judge,
    resolve_gate_config,
)
from perfsanity.results.history import HistoryStore, RunMeta

T0 = datetime(2025, 6, 1, 3, 0, tzinfo=UTC)


def test_history_baseline_is_the_trailing_mean():
    series = [(T0 + timedelta(days=d), float(v)) for d, v in enumerate([500, 100, 110, 90, 100, 120, 80])]
    value, days = history_baseline(list(reversed(series)), max_records=6)  # sorted by time here
    assert days == 7 and value == pytest.approx(100.0)  # the oldest point is outside the trailing 6
    assert history_baseline(series[:2], min_days=3) == (None, 2)
    assert history_baseline(series[:1], min_days=1) == (500.0, 1)


@pytest.mark.parametrize("metric_higher, value, verdict", [
    (True, 94.0, Verdict.WARN), (True, 96.0, Verdict.PASS), (True, 150.0, Verdict.PASS),
    (False, 106.0, Verdict.WARN), (False, 104.0, Verdict.PASS), (False, 50.0, Verdict.PASS),
])
def test_direction_aware_judgement(metric_higher, value, verdict):
    got, delta = judge(value=value, baseline=100.0, higher=metric_higher, threshold_pct=5.0, pre_merge=False)
    assert got is verdict
    assert delta == pytest.approx(value - 100.0)
    pre, _ = judge(value=value, baseline=100.0, higher=metric_higher, threshold_pct=5.0, pre_merge=True)
    assert pre is (Verdict.FAIL if verdict is Verdict.WARN else verdict)
    assert judge(value=None, baseline=1.0, higher=True, threshold_pct=5, pre_merge=False)[0] is Verdict.NO_VALUE
    assert judge(value=1.0, baseline=None, higher=True, threshold_pct=5, pre_merge=False)[0] is Verdict.NO_BASELINE


def test_tpot_is_lower_is_better():
    cfg = GateConfig(baselines={"tpot_median": 10.0})
    report = evaluate(make_run({64: {"tpot_median": 12.0}}), config=cfg)
    (v,) = [x for x in report.verdicts if x.metric == "tpot_median"]
    assert not v.higher_is_better and v.verdict is Verdict.WARN


def test_pinned_baselines_and_thresholds():
    cfg = GateConfig.from_section({
        "thresholds": {"output_token_throughput": {"post_merge_pct": 2, "pre_merge_pct": 3}},
        "baselines": {"output_token_throughput": {64: 1000.0}, "ttft_median": 100.0},
    })
    run = make_run({8: {"output_token_throughput": 500.0, "ttft_median": 50.0},
                    64: {"output_token_throughput": 975.0, "ttft_median": 104.0}})
    report = evaluate(run, config=cfg)
    v = {(x.concurrency, x.metric): x for x in report.verdicts}
    assert v[64, "output_token_throughput"].verdict is Verdict.WARN  # -2.5% beyond 2%
    assert v[64, "output_token_throughput"].baseline_source == "pinned"
    assert v[64, "output_token_throughput"].threshold_pct == 2
    assert v[8, "output_token_throughput"].verdict is Verdict.NO_BASELINE  # pinned only for c64, no history
    assert v[8, "ttft_median"].verdict is Verdict.PASS and v[8, "ttft_median"].delta_pct == pytest.approx(-50)
    assert v[64, "ttft_median"].verdict is Verdict.PASS  # +4% within 5%
    assert v[64, "itl_median"].verdict is Verdict.NO_VALUE
    assert report.verdict is Verdict.WARN
    assert [x.name for x in report.regressions] == ["c64.output_token_throughput"]


def test_pinned_beats_history(tmp_path):
    with HistoryStore(tmp_path / "h.sqlite") as store:
        for d in range(5):
            store.add_run(make_keys(), make_run({64: {"output_token_throughput": 1000.0}}),
                          RunMeta(post_merge=True, timestamp=T0 + timedelta(days=d)))
        now = T0 + timedelta(days=6)
        run = make_run({64: {"output_token_throughput": 900.0}})
        from_history = evaluate(run, history=store, keys=make_keys(), now=now)
        pinned = evaluate(run, history=store, keys=make_keys(), now=now,
                          config=GateConfig(baselines={"output_token_throughput": 910.0}))
    v_h = next(v for v in from_history.verdicts if v.metric == "output_token_throughput")
    v_p = next(v for v in pinned.verdicts if v.metric == "output_token_throughput")
    assert (v_h.baseline_source, v_h.baseline, v_h.verdict) == ("history", 1000.0, Verdict.WARN)
    assert (v_p.baseline_source, v_p.baseline, v_p.verdict) == ("pinned", 910.0, Verdict.PASS)
    assert v_h.history_days == 5


def test_lookback_window_is_respected(tmp_path):
    with HistoryStore(tmp_path / "h.sqlite") as store:
        for d in range(5):  # 100 days old: outside the default 90-day window
            store.add_run(make_keys(), make_run({64: {"output_token_throughput": 1000.0}}),
                          RunMeta(post_merge=True, timestamp=T0 + timedelta(days=d)))
        report = evaluate(make_run({64: {"output_token_throughput": 500.0}}), history=store, keys=make_keys(),
                          now=T0 + timedelta(days=100))
    v = next(v for v in report.verdicts if v.metric == "output_token_throughput")
    assert v.verdict is Verdict.NO_BASELINE and "0 day(s) of history" in v.note


@pytest.mark.parametrize("section, key", [
    ({"thresholds": {"ttft_median": {"post_merge": 5}}}, "gate.thresholds.ttft_median.post_merge"),
    ({"metrics": ["ttft_p50"]}, "gate.metrics"),
    ({"baselines": {"nonsense": 1.0}}, "gate.baselines"),
    ({"baselines": {"ttft_median": -1.0}}, "gate.baselines"),
    ({"lookback_days": 0}, "gate.lookback_days"),
    ({"treshold": 5}, "gate.treshold"),
    ({"default_threshold": {"post_merge_pct": 0}}, "gate.default_threshold.post_merge_pct"),
])
def test_gate_config_rejects_bad_input(section, key):
    with pytest.raises(ConfigError) as info:
        GateConfig.from_section(section, file="configs/x.yaml")
    assert str(info.value).startswith(f"configs/x.yaml: {key}")


def test_gate_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        GateConfig.from_section(["x"], file="c.yaml")
    assert GateConfig.from_section(None) == GateConfig()


def test_baselines_file_pin_roundtrip_and_precedence(tmp_path):
    path = tmp_path / "baselines.yaml"
    data = BaselinesFile.load(path, missing_ok=True)
    data.pin("cfg", "output_token_throughput", 5000.0, concurrency=64)
    data.pin("cfg", "output_token_throughput", 900.0, concurrency=8)
    data.pin("cfg", "ttft_p99", 300.0)
    data.save(path)
    assert "lookback_days" not in path.read_text()  # only what was pinned is written
    loaded = BaselinesFile.load(path)
    cfg = loaded.for_config("cfg")
    assert cfg.pinned("output_token_throughput", 64) == 5000.0
    assert cfg.pinned("output_token_throughput", 8) == 900.0
    assert cfg.pinned("ttft_p99", 1234) == 300.0
    section = GateConfig(baselines={"ttft_p99": 999.0, "itl_median": 9.0},
                         thresholds={"ttft_p99": {"post_merge_pct": 7}}, metrics=("ttft_p99", "itl_median"))
    merged = resolve_gate_config("cfg", section=section, baselines=loaded)
    assert merged.pinned("ttft_p99", 1) == 300.0  # the baselines file wins
    assert merged.pinned("itl_median", 1) == 9.0  # section-only pins survive
    assert merged.threshold("ttft_p99").post_merge_pct == 7
    assert merged.metrics == ("ttft_p99", "itl_median")  # the section's choices survive the file's pins
    assert resolve_gate_config("other", section=None, baselines=loaded) == GateConfig()


def test_baselines_file_errors(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("version: 1\nconfigs:\n  x:\n    baselines: {ttft_median: [1, 2]\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        BaselinesFile.load(path)
    path.write_text("version: 1\nconfigs:\n  x:\n    pins: {}\n")
    with pytest.raises(ConfigError, match=r"configs\.x\.pins: unknown key"):
        BaselinesFile.load(path)
    with pytest.raises(ConfigError, match="baselines file not found"):
        BaselinesFile.load(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="--metric"):
        BaselinesFile().pin("x", "throughput", 1.0)
    with pytest.raises(ConfigError, match="--value"):
        BaselinesFile().pin("x", "ttft_median", float("nan"))


def test_gate_report_json_roundtrip(tmp_path):
    report = evaluate(make_run({64: {"output_token_throughput": 85.0}}),
                      config=GateConfig(baselines={"output_token_throughput": 100.0}), pre_merge=True)
    path = tmp_path / "gate.json"
    report.write(path)
    import json

    raw = json.loads(path.read_text())
    assert raw["verdict"] == "FAIL" and raw["regressions"] == ["c64.output_token_throughput"]
    assert GateReport.read(path) == report
    path.write_text("[]")
    with pytest.raises(ConfigError):
        GateReport.read(path)


def test_improvement_today_is_not_a_regression():
    report = evaluate(make_run({64: {"ttft_median": 92.0, "output_token_throughput": 120.0}}),
                      config=GateConfig(baselines={"ttft_median": 100.0, "output_token_throughput": 100.0}),
                      pre_merge=True)
    for v in report.verdicts:
        if v.metric in ("ttft_median", "output_token_throughput"):
            assert v.verdict is Verdict.PASS and v.improvement
    assert report.verdict is Verdict.PASS
