"""Acceptance: 90 days of synthetic history (2 % noise, seeded) through a real store (SQLite and PG)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from gate_helpers import CONFIG, DAY0, make_keys, make_run, seed_history

from perfsanity.results.changepoint import detect_change_points
from perfsanity.results.gate import Verdict, evaluate

NOW = DAY0 + timedelta(days=90, hours=3)
THROUGHPUT_DROP = {"output_token_throughput": 0.95, "total_token_throughput": 0.95}


def _gate(store, today, *, pre_merge=False):
    return evaluate(make_run({64: today}), pre_merge=pre_merge, history=store, keys=make_keys(), now=NOW)


def _verdicts(report):
    return {v.metric: v for v in report.verdicts}


def _series(store, metric):
    return store.series(make_keys(), metric, since=NOW - timedelta(days=90), until=NOW)


def test_throughput_drop_is_flagged_and_located(store):
    today = seed_history(store, change_day=60, change=THROUGHPUT_DROP)
    report = _gate(store, today)
    v = _verdicts(report)
    assert v["output_token_throughput"].verdict is Verdict.WARN
    assert v["output_token_throughput"].baseline_source == "history"
    assert v["output_token_throughput"].delta_pct < -5
    assert v["total_token_throughput"].verdict is Verdict.WARN
    assert report.verdict is Verdict.WARN
    # latencies did not move
    for m in ("ttft_median", "ttft_p99", "tpot_median", "itl_median"):
        assert v[m].verdict is Verdict.PASS, v[m]

    cps = detect_change_points(_series(store, "output_token_throughput"), metric="output_token_throughput")
    regressions = [cp for cp in cps if cp.regression]
    assert len(regressions) == 1, cps
    cp = regressions[0]
    assert abs(cp.time - (DAY0 + timedelta(days=60))) <= timedelta(days=3)
    assert cp.direction == "down"
    assert -7 < cp.magnitude_pct < -3


def test_stable_history_raises_nothing(store):
    today = seed_history(store)
    for pre_merge in (False, True):
        report = _gate(store, today, pre_merge=pre_merge)
        assert {v.verdict for v in report.verdicts} == {Verdict.PASS}, report.summary()
    for metric in ("output_token_throughput", "ttft_median", "tpot_median"):
        cps = detect_change_points(_series(store, metric), metric=metric)
        assert not [cp for cp in cps if cp.regression], cps


def test_ttft_increase_is_flagged(store):
    today = seed_history(store, change_day=60, change={"ttft_median": 1.08, "ttft_p99": 1.08})
    v = _verdicts(_gate(store, today))
    assert v["ttft_median"].verdict is Verdict.WARN
    assert v["ttft_p99"].verdict is Verdict.WARN
    assert v["ttft_median"].delta_pct > 5
    assert v["output_token_throughput"].verdict is Verdict.PASS
    cps = detect_change_points(_series(store, "ttft_median"), metric="ttft_median")
    assert [cp.direction for cp in cps if cp.regression] == ["up"]


def test_ttft_decrease_is_not_flagged(store):
    today = seed_history(store, change_day=60, change={"ttft_median": 0.92, "ttft_p99": 0.92})
    report = _gate(store, today)
    v = _verdicts(report)
    assert v["ttft_median"].verdict is Verdict.PASS
    # the baseline follows the better (lower) level, and today is within the threshold of it
    assert v["ttft_median"].baseline < 200 * 0.95
    assert v["ttft_median"].delta_pct < 5
    assert not report.regressions
    cps = detect_change_points(_series(store, "ttft_median"), metric="ttft_median")
    assert cps, "the improvement is still a change point"
    assert all(cp.regression is False and cp.direction == "down" for cp in cps)


def test_pre_merge_fails_beyond_ten_percent(store):
    today = seed_history(store, days=30)
    today = dict(today, output_token_throughput=today["output_token_throughput"] * 0.85)
    now = DAY0 + timedelta(days=30, hours=3)
    pre = evaluate(make_run({64: today}), pre_merge=True, history=store, keys=make_keys(), now=now)
    assert _verdicts(pre)["output_token_throughput"].verdict is Verdict.FAIL
    assert pre.verdict is Verdict.FAIL
    post = evaluate(make_run({64: today}), pre_merge=False, history=store, keys=make_keys(), now=now)
    assert _verdicts(post)["output_token_throughput"].verdict is Verdict.WARN


def test_only_matching_valid_post_merge_records_feed_the_baseline(store):
    today = seed_history(store, days=20)
    now = DAY0 + timedelta(days=20, hours=3)
    baseline_before = _verdicts(evaluate(make_run({64: today}), history=store, keys=make_keys(),
                                         now=now))["output_token_throughput"].baseline
    # other keys, pre-merge runs, invalid runs and runs after `now` must not move it
    from perfsanity.results.history import RunMeta

    odd = make_run({64: {**today, "output_token_throughput": 1.0}})
    store.add_run(make_keys(), odd, RunMeta(post_merge=False, timestamp=now - timedelta(hours=1)))
    ids = store.add_run(make_keys(), odd, RunMeta(post_merge=True, timestamp=now - timedelta(hours=2)))
    store.mark_invalid(ids[0], "bad node")
    store.add_run(make_keys(), odd, RunMeta(post_merge=True, timestamp=now + timedelta(hours=1)))
    other = make_keys().as_dict() | {"gpu_type": "H200"}
    from perfsanity.results.history import MatchKeys

    store.add_run(MatchKeys(**other), odd, RunMeta(post_merge=True, timestamp=now - timedelta(hours=1)))
    baseline_after = _verdicts(evaluate(make_run({64: today}), history=store, keys=make_keys(),
                                        now=now))["output_token_throughput"].baseline
    assert baseline_after == pytest.approx(baseline_before)


def test_config_name_in_history_is_separate(store):
    seed_history(store, days=10)
    report = evaluate(make_run({64: {"output_token_throughput": 1.0}}, config_name=CONFIG + "-other"),
                      history=store, keys=make_keys(CONFIG + "-other"), now=DAY0 + timedelta(days=11))
    assert {v.verdict for v in report.verdicts} == {Verdict.NO_BASELINE, Verdict.NO_VALUE}
