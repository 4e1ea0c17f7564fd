"""Gate power: how often the regression gate and change-point detection catch a real drop, and how
often they cry wolf, on synthetic nightly series (seeded).

    python3 benchmarks/gate_power.py [--trials 400] [--seed 1]

Series: one post-merge run per day, value = level · (1 + noise·N(0,1)), noise 2 %; a 5 % regression
(throughput −5 % / TTFT +5 %) from a given day on. Conditions:

* **gate, next night**: 90 days of history, then the first regressed run is gated
  (perfsanity.results.gate: per-day mean → 3-day rolling mean → P95/P5 baseline, 5 % post-merge WARN,
  10 % pre-merge FAIL). The baseline math is the gate's own (``history_baseline`` + ``judge``) for
  every trial, and the full path (HistoryStore on a temp SQLite + ``gate.evaluate``) on a subset,
  whose verdicts must agree.
* **gate, within 3 nights**: the regressed runs of the following nights are gated too (each
  against history that now holds the earlier regressed runs, as post-merge WARNs are stored valid).
* **false alarms**: the same with no drop (per gated run, per metric).
* **change points** (perfsanity.results.changepoint → Apache Otava, defaults: p ≤ 1e-4, ≥ 1 %, window 30):
  on a 90-point series whose last k points are regressed (k = 1, 3, 7, 30): detected = a change
  point in the bad direction within 3 points of the true start; false alarm = any bad-direction
  change point in a 90-point series without a drop.
* a **proposed** gate for comparison: mean of the last n runs (n = 3, 4: repeated runs in one job, or
  consecutive nights) vs the mean of the 30 days before them, threshold 2.9 % — at 2 % noise a single
  run cannot separate a 5 % drop from noise at ≥ 95 % / ≤ 1 % (that needs 5 % ≥ (2.33 + 1.64)·σ).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# isort: off
from _common import print_header  # noqa: E402  (first: installs the harness's requirements on first use)
import numpy as np  # noqa: E402
# isort: on

from perfsanity.load.results_json import ConcurrencyResult, LatencyStats, RunResult  # noqa: E402
from perfsanity.results.changepoint import detect_change_points  # noqa: E402
from perfsanity.results.gate import GateConfig, Verdict, evaluate, history_baseline, judge  # noqa: E402
from perfsanity.results.history import HistoryStore, MatchKeys, RunMeta  # noqa: E402

METRICS = {"output_token_throughput": (True, 5000.0), "ttft_median": (False, 250.0)}  # higher_is_better, level
DAY0 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
HIST_DAYS = 90


def series(rng: np.random.Generator, n: int, noise: float, level: float, drop_from: int | None, drop: float,
           higher: bool) -> np.ndarray:
    x = level * (1 + noise * rng.standard_normal(n))
    if drop_from is not None:
        x[drop_from:] *= (1 - drop) if higher else (1 + drop)
    return x


def gate_verdict(hist: np.ndarray, value: float, higher: bool, pre_merge: bool = False) -> Verdict:
    pts = [(DAY0 + timedelta(days=i), float(v)) for i, v in enumerate(hist)]
    baseline, _days = history_baseline(pts, higher_is_better=higher, rolling_days=3, min_days=3)
    thr = 10.0 if pre_merge else 5.0
    verdict, _ = judge(value=value, baseline=baseline, higher=higher, threshold_pct=thr, pre_merge=pre_merge)
    return verdict


def proposed_alarm(x: np.ndarray, end: int, higher: bool, n: int = 3, ref_days: int = 30, thr: float = 2.9) -> bool:
    """Mean of runs [end-n, end) vs the mean of the ref_days before them."""
    recent = x[end - n:end].mean()
    ref = x[end - n - ref_days:end - n].mean()
    delta = (recent - ref) / ref * 100
    return (-delta if higher else delta) > thr


def keys(name: str) -> MatchKeys:
    return MatchKeys(config_name=name, model="m", precision="fp8", gpu_type="CPU", backend="dynamo-mocker",
                     mode="e2e", num_ctx_servers=1, num_gen_servers=1, ctx_tp=1, ctx_pp=1, ctx_ep=1,
                     ctx_attention_dp=False, gen_tp=1, gen_pp=1, gen_ep=1, gen_attention_dp=False, isl=128,
                     osl=32, concurrency=8, total_gpus=0)


def run_result(name: str, tput: float, ttft: float) -> RunResult:
    res = ConcurrencyResult(concurrency=8, client="aiperf", requested=64, completed=64, failed=0,
                            output_token_throughput=tput, ttft=LatencyStats(median=ttft))
    return RunResult(config_name=name, backend="dynamo-mocker", mode="e2e", total_gpus=0, results=(res,),
                     status="passed")


def full_path_agreement(trials: int, rng: np.random.Generator, noise: float, drop: float) -> tuple[int, int, float]:
    """gate.evaluate over a real SQLite HistoryStore vs the math; returns (agreeing, compared, seconds)."""
    t0 = time.perf_counter()
    agree = total = 0
    cfg = GateConfig(metrics=tuple(METRICS))
    with tempfile.TemporaryDirectory() as tmp:
        store = HistoryStore(Path(tmp) / "history.sqlite")
        for t in range(trials):
            dropped = t % 2 == 0
            name = f"trial-{t}"
            xs = {m: series(rng, HIST_DAYS + 1, noise, lvl, HIST_DAYS if dropped else None, drop, hi)
                  for m, (hi, lvl) in METRICS.items()}
            k = keys(name)
            for d in range(HIST_DAYS):
                store.add_run(k, run_result(name, xs["output_token_throughput"][d], xs["ttft_median"][d]),
                              RunMeta(timestamp=DAY0 + timedelta(days=d), post_merge=True))
            today = DAY0 + timedelta(days=HIST_DAYS)
            rep = evaluate(run_result(name, xs["output_token_throughput"][-1], xs["ttft_median"][-1]), config=cfg,
                           history=store, keys=k, now=today + timedelta(hours=1))
            for v in rep.verdicts:
                hi = METRICS[v.metric][0]
                expect = gate_verdict(xs[v.metric][:HIST_DAYS], xs[v.metric][-1], hi)
                total += 1
                agree += int(expect == v.verdict)
        store.close()
    return agree, total, time.perf_counter() - t0


def rate(hits: int, n: int) -> str:
    p = hits / n
    half = 1.96 * np.sqrt(max(p * (1 - p), 1e-12) / n)  # normal approx. 95 % interval
    return f"{100 * p:5.1f} % (±{100 * half:.1f}, {hits}/{n})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=1000, help="per condition (≥ 200)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--noise", type=float, default=0.02)
    p.add_argument("--drop", type=float, default=0.05)
    p.add_argument("--full-path-trials", type=int, default=30, help="trials through SQLite + gate.evaluate")
    args = p.parse_args(argv)
    print_header("Gate power: detection and false-alarm rates on synthetic nightly series",
                 "python3 benchmarks/gate_power.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    print(f"noise {args.noise:.0%} (Gaussian, per run), drop {args.drop:.0%}, {HIST_DAYS} days of history, "
          f"{args.trials} trials per condition, seed {args.seed}; targets: detection ≥ 95 %, false alarms ≤ 1 %\n")
    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    n = args.trials
    rows: list[tuple[str, str, str]] = []
    for metric, (hi, lvl) in METRICS.items():
        det1 = det3 = fa1 = fa3 = fa_pre = det_pre = 0
        prop_det = {3: 0, 4: 0}
        prop_fa = {3: 0, 4: 0}
        for _ in range(n):
            # history days 0..89, drop from day 90 on; nights 90, 91, 92 gated
            x = series(rng, HIST_DAYS + 3, args.noise, lvl, HIST_DAYS, args.drop, hi)
            hits = [gate_verdict(x[:HIST_DAYS + j], x[HIST_DAYS + j], hi) == Verdict.WARN for j in range(3)]
            det1 += hits[0]
            det3 += any(hits)
            det_pre += gate_verdict(x[:HIST_DAYS], x[HIST_DAYS], hi, pre_merge=True) == Verdict.FAIL
            y = series(rng, HIST_DAYS + 4, args.noise, lvl, None, args.drop, hi)
            x4 = series(rng, HIST_DAYS + 4, args.noise, lvl, HIST_DAYS, args.drop, hi)
            for m in (3, 4):
                prop_det[m] += proposed_alarm(x4, HIST_DAYS + m, hi, n=m)
                prop_fa[m] += proposed_alarm(y, HIST_DAYS + m, hi, n=m)
            fa_hits = [gate_verdict(y[:HIST_DAYS + j], y[HIST_DAYS + j], hi) == Verdict.WARN for j in range(3)]
            fa1 += fa_hits[0]
            fa3 += any(fa_hits)
            fa_pre += gate_verdict(y[:HIST_DAYS], y[HIST_DAYS], hi, pre_merge=True) == Verdict.FAIL
        rows += [
            (metric, "gate post-merge (5 %): detected on the first regressed night", rate(det1, n)),
            (metric, "gate post-merge (5 %): detected within 3 nights", rate(det3, n)),
            (metric, "gate post-merge (5 %): false alarms per gated run, no drop", rate(fa1, n)),
            (metric, "gate post-merge (5 %): false alarm on any of 3 nights, no drop", rate(fa3, n)),
            (metric, "gate pre-merge (10 %): detected on the first regressed run", rate(det_pre, n)),
            (metric, "gate pre-merge (10 %): false alarms per gated run, no drop", rate(fa_pre, n)),
            (metric, "proposed: mean of 3 runs after the drop vs 30-day mean, 2.9 %: detected", rate(prop_det[3], n)),
            (metric, "proposed (3 runs): false alarms per evaluation", rate(prop_fa[3], n)),
            (metric, "proposed: mean of 4 runs vs 30-day mean, 2.9 %: detected", rate(prop_det[4], n)),
            (metric, "proposed (4 runs): false alarms per evaluation", rate(prop_fa[4], n)),
        ]
        # change points
        for k in (1, 3, 7, 30):
            det = 0
            for _ in range(n):
                x = series(rng, HIST_DAYS, args.noise, lvl, HIST_DAYS - k, args.drop, hi)
                pts = [(DAY0 + timedelta(days=i), float(v)) for i, v in enumerate(x)]
                cps = detect_change_points(pts, metric=metric)
                det += any(c.regression and abs(c.index - (HIST_DAYS - k)) <= 3 for c in cps)
            rows.append((metric, f"change points: detected, last {k} of 90 points regressed", rate(det, n)))
        fa = fa_any = 0
        for _ in range(n):
            y = series(rng, HIST_DAYS, args.noise, lvl, None, args.drop, hi)
            cps = detect_change_points([(DAY0 + timedelta(days=i), float(v)) for i, v in enumerate(y)], metric=metric)
            fa += any(c.regression for c in cps)
            fa_any += bool(cps)
        rows.append((metric, "change points: false alarms per 90-point series (regression direction)", rate(fa, n)))
        rows.append((metric, "change points: any change point per 90-point series, no drop", rate(fa_any, n)))
    agree, total, secs = full_path_agreement(args.full_path_trials, rng, args.noise, args.drop)
    print("| metric | condition | rate (95 % CI) |\n|---|---|---|")
    for m, c, r in rows:
        print(f"| {m} | {c} | {r} |")
    print(f"\nfull path (HistoryStore on temp SQLite + gate.evaluate) agrees with the baseline math on "
          f"{agree}/{total} verdicts ({args.full_path_trials} trials, {secs:.1f} s)")
    # what the gate's baseline is, in noise units
    hist = series(np.random.default_rng(args.seed + 99), 20000, args.noise, 1.0, None, 0, True)
    roll = np.convolve(hist, np.ones(3) / 3, mode="valid")
    print(f"P95 of 3-day rolling means sits {100 * (np.percentile(roll, 95) - 1):.2f} % above the true level "
          f"(noise {args.noise:.0%}); a run is flagged below {100 * ((np.percentile(roll, 95)) * 0.95 - 1):+.2f} % "
          f"of the true level")
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
