"""Acceptance: 90 days of synthetic history (2 % noise, seeded) through a real store (SQLite and PG)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from gate_helpers import BASE, CONFIG, DAY0, make_keys, make_run, seed_history

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


def test_throughput_drop_is_flagged_on_the_first_night(store):
    # 90 nights of 5-repeat jobs; tonight's 5 repeats are 5 % slower (the power target's case)
    today = seed_history(store, repeats=5, today_repeats=5)
    today = [dict(r, **{m: r[m] * THROUGHPUT_DROP[m] for m in THROUGHPUT_DROP}) for r in today]
    report = _gate(store, today)
    v = _verdicts(report)
    assert v["output_token_throughput"].verdict is Verdict.WARN
    assert v["output_token_throughput"].baseline_source == "history"
    assert v["output_token_throughput"].delta_pct < -3
    assert v["total_token_throughput"].verdict is Verdict.WARN
    assert report.verdict is Verdict.WARN
    tput = v["output_token_throughput"]
    assert (tput.repeats, tput.baseline_runs) == (5, 150)  # n = 5 tonight, m = 30 records × 5 repeats
    assert 1.0 < tput.sigma_pct < 3.0  # the pooled noise recovers the 2 % per run
    assert report.family_size == 6 and tput.level >= report.alpha / 6
    # latencies did not move
    for m in ("ttft_median", "ttft_p99", "tpot_median", "itl_median"):
        assert v[m].verdict is Verdict.PASS, v[m]


def test_an_old_shift_is_the_new_level_and_its_change_point_names_the_first_run(store):
    today = seed_history(store, change_day=60, change=THROUGHPUT_DROP)
    v = _verdicts(_gate(store, today))
    # the trailing 30-run mean is the level main has been at for 30 nights: not tonight's regression
    assert v["output_token_throughput"].verdict is Verdict.PASS
    assert "level shift from the run of 2025-04-" in v["output_token_throughput"].change_point
    assert "(commit c006" in v["output_token_throughput"].change_point or \
        "(commit c005" in v["output_token_throughput"].change_point
    assert v["ttft_median"].change_point == ""

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
    today = seed_history(store, change_day=89, change={"ttft_median": 1.08, "ttft_p99": 1.08}, today_repeats=5)
    v = _verdicts(_gate(store, today))
    assert v["ttft_median"].verdict is Verdict.WARN
    assert v["ttft_p99"].verdict is Verdict.WARN
    assert v["ttft_median"].delta_pct > 5
    assert v["output_token_throughput"].verdict is Verdict.PASS


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


def test_pre_merge_fails_on_a_large_drop(store):
    today = seed_history(store, days=30)
    today = dict(today, output_token_throughput=today["output_token_throughput"] * 0.85)
    now = DAY0 + timedelta(days=30, hours=3)
    pre = evaluate(make_run({64: today}), pre_merge=True, history=store, keys=make_keys(), now=now)
    assert _verdicts(pre)["output_token_throughput"].verdict is Verdict.FAIL
    assert pre.verdict is Verdict.FAIL
    post = evaluate(make_run({64: today}), pre_merge=False, history=store, keys=make_keys(), now=now)
    assert _verdicts(post)["output_token_throughput"].verdict is Verdict.WARN


def test_pre_merge_compares_with_main_as_it_is(store):
    """Main's latest post-merge run already missed its baseline: a PR at that level passes, saying so,
    and a PR that makes it worse still fails."""
    from perfsanity.results.history import RunMeta

    seed_history(store, days=30)
    main_now = {m: v * (0.9 if "throughput" in m else 1.0) for m, v in BASE.items()}
    ids = store.add_run(make_keys(), make_run({64: main_now}),
                        RunMeta(commit="deadbeef0123456789", post_merge=True,
                                timestamp=DAY0 + timedelta(days=30, hours=1)))
    store.set_gate_verdicts(ids[0], {"output_token_throughput": "WARN", "ttft_median": "PASS"})
    now = DAY0 + timedelta(days=30, hours=3)
    same = evaluate(make_run({64: main_now}), pre_merge=True, history=store, keys=make_keys(), now=now)
    tput = _verdicts(same)["output_token_throughput"]
    assert tput.verdict is Verdict.PASS and tput.baseline_source == "main-latest"
    assert tput.baseline == pytest.approx(main_now["output_token_throughput"])
    assert "already missed its baseline (WARN)" in tput.note and "deadbeef0123" in tput.note
    assert _verdicts(same)["ttft_median"].baseline_source == "history"  # only the missed metric moves
    worse = dict(main_now, output_token_throughput=main_now["output_token_throughput"] * 0.8)
    pre = evaluate(make_run({64: worse}), pre_merge=True, history=store, keys=make_keys(), now=now)
    assert _verdicts(pre)["output_token_throughput"].verdict is Verdict.FAIL
    # post-merge keeps gating against the trailing mean (main's regression stays visible there)
    post = evaluate(make_run({64: main_now}), history=store, keys=make_keys(), now=now)
    assert _verdicts(post)["output_token_throughput"].baseline_source == "history"


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
