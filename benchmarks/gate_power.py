"""Gate power: how often the shipped regression gate catches a real drop on the first night, and how
often a job-night without any change raises an alarm somewhere in its family (seeded simulation).

    python3 benchmarks/gate_power.py [--trials 2000] [--seed 1] [--json]

Model: every run's value is level · (1 + noise·N(0,1)), noise 2 %, independent across runs, metrics
and concurrencies (independence is the worst case for the family-wise false-alarm rate). A job is
the mean of n = ``benchmark.repeats`` runs (default ``DEFAULT_REPEATS``); history holds the last 30
nightly post-merge jobs of the same keys, each the mean of its own repeats, with their spread. The
family is the default gated metrics (6) × 2 concurrencies = 12 tests per job-night.

Verdicts come from the gate's own code: ``perfsanity.results.gate.evaluate_records`` on in-memory
history records (change points off: they never change a verdict), and on a subset the full path
(``HistoryStore`` on a temp SQLite + ``gate.evaluate``), whose verdicts must agree. Change points
(``perfsanity.results.changepoint``, Otava, defaults) are measured as the slow signal on 90-point
series whose last k points are regressed.

Conditions: detection = a 5 % drop of one metric (throughput, or TTFT median) at one concurrency is
WARN (FAIL pre-merge) on the first regressed night; false alarm = any WARN (FAIL) among the 12 tests
of a job-night with no change. Also for history made of single runs, and for single-run jobs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# isort: off
from _common import machine_info, print_header  # noqa: E402  (first: runs under the project venv)
import numpy as np  # noqa: E402
# isort: on

from perfsanity.load.repeats import combine  # noqa: E402
from perfsanity.load.results_json import (  # noqa: E402
    ConcurrencyResult,
    LatencyStats,
    RunResult,
    flatten,
    repeat_metrics,
)
from perfsanity.results.changepoint import detect_change_points  # noqa: E402
from perfsanity.results.gate import (  # noqa: E402
    DEFAULT_GATED_METRICS,
    GateConfig,
    Verdict,
    evaluate,
    evaluate_records,
)
from perfsanity.results.gatestats import detection_power  # noqa: E402
from perfsanity.results.history import HistoryRecord, HistoryStore, MatchKeys, RunMeta  # noqa: E402
from perfsanity.spec.config import DEFAULT_REPEATS  # noqa: E402

LEVELS = {"output_token_throughput": 5000.0, "total_token_throughput": 10000.0, "ttft_median": 250.0,
          "ttft_p99": 450.0, "tpot_median": 12.0, "itl_median": 11.0}
CONCURRENCIES = (8, 64)
DAY0 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
HIST_JOBS = 30
NAME = "gate-power"


def keys(concurrency: int) -> MatchKeys:
    return MatchKeys(config_name=NAME, model="m", precision="fp8", gpu_type="CPU", backend="dynamo-mocker",
                     mode="e2e", num_ctx_servers=1, num_gen_servers=1, ctx_tp=1, ctx_pp=1, ctx_ep=1,
                     ctx_attention_dp=False, gen_tp=1, gen_pp=1, gen_ep=1, gen_attention_dp=False, isl=128,
                     osl=32, concurrency=concurrency, total_gpus=0)


def one_run(concurrency: int, values: dict[str, float]) -> ConcurrencyResult:
    def stats(lat: str) -> LatencyStats:
        return LatencyStats(median=values.get(f"{lat}_median"), p99=values.get(f"{lat}_p99"))

    return ConcurrencyResult(concurrency=concurrency, client="aiperf", requested=64, completed=64, failed=0,
                             output_token_throughput=values["output_token_throughput"],
                             total_token_throughput=values["total_token_throughput"],
                             ttft=stats("ttft"), tpot=stats("tpot"), itl=stats("itl"))


def job(rng: np.random.Generator, n: int, noise: float, factors: dict[tuple[int, str], float]) -> RunResult:
    """One job: per concurrency, the mean of n runs (each metric × its factor)."""
    results = []
    for c in CONCURRENCIES:
        runs = [one_run(c, {m: lvl * factors.get((c, m), 1.0) * (1 + noise * rng.standard_normal())
                            for m, lvl in LEVELS.items()}) for _ in range(n)]
        results.append(combine(runs))
    return RunResult(config_name=NAME, backend="dynamo-mocker", mode="e2e", total_gpus=0, results=tuple(results),
                     status="passed")


def history(rng: np.random.Generator, n: int, noise: float) -> tuple[list[RunResult], dict[str, list[HistoryRecord]]]:
    """HIST_JOBS post-merge jobs and their history records, by point label (as the gate reads them)."""
    jobs = [job(rng, n, noise, {}) for _ in range(HIST_JOBS)]
    records: dict[str, list[HistoryRecord]] = {}
    for d, j in enumerate(jobs):
        for res in j.results:
            records.setdefault(res.label, []).append(HistoryRecord(
                id=d, run_uid=str(d), keys=keys(res.concurrency), commit=f"c{d:04d}", branch="main", build_url="",
                job_id=str(d), timestamp=DAY0 + timedelta(days=d), post_merge=True,
                metrics=flatten(res) | repeat_metrics(res), valid=True, invalid_reason=""))
    return jobs, records


CFG = GateConfig(change_points=False)
NOW = DAY0 + timedelta(days=HIST_JOBS, hours=1)


def gate(run: RunResult, records: dict[str, list[HistoryRecord]], pre_merge: bool) -> dict[tuple[int, str], Verdict]:
    report = evaluate_records(run, records, config=CFG, pre_merge=pre_merge, now=NOW)
    return {(v.concurrency, v.metric): v.verdict for v in report.verdicts}


def rate(hits: int, n: int) -> dict:
    p = hits / n
    half = 1.96 * np.sqrt(max(p * (1 - p), 1e-12) / n)  # normal approx. 95 % interval
    return {"rate": round(p, 5), "ci95": round(half, 5), "hits": hits, "trials": n}


def simulate(rng: np.random.Generator, trials: int, *, n_hist: int, n_today: int, noise: float, drop: float,
             pre_merge: bool) -> dict:
    alarm = Verdict.FAIL if pre_merge else Verdict.WARN
    targets = {"output_token_throughput": 1 - drop, "ttft_median": 1 + drop}
    det = dict.fromkeys(targets, 0)
    fa = 0
    for _ in range(trials):
        _jobs, records = history(rng, n_hist, noise)
        for metric, factor in targets.items():
            verdicts = gate(job(rng, n_today, noise, {(64, metric): factor}), records, pre_merge)
            det[metric] += verdicts[(64, metric)] is alarm
        verdicts = gate(job(rng, n_today, noise, {}), records, pre_merge)
        fa += any(v is alarm for v in verdicts.values())
    return {"detection_first_night": {m: rate(h, trials) for m, h in det.items()},
            "false_alarms_per_job_night": rate(fa, trials)}


def full_path_agreement(rng: np.random.Generator, trials: int, noise: float, drop: float) -> dict:
    """gate.evaluate over a real SQLite HistoryStore vs evaluate_records in memory."""
    t0 = time.perf_counter()
    agree = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for t in range(trials):
            with HistoryStore(Path(tmp) / f"h{t}.sqlite") as store:
                jobs, records = history(rng, DEFAULT_REPEATS, noise)
                for d, j in enumerate(jobs):
                    store.add_run({c: keys(c) for c in CONCURRENCIES}, j,
                                  RunMeta(timestamp=DAY0 + timedelta(days=d), post_merge=True))
                today = job(rng, DEFAULT_REPEATS, noise, {(64, "output_token_throughput"): 1 - drop} if t % 2 else {})
                full = evaluate(today, config=CFG, history=store, keys={c: keys(c) for c in CONCURRENCIES}, now=NOW)
            mem = gate(today, records, pre_merge=False)
            for v in full.verdicts:
                total += 1
                agree += int(mem[(v.concurrency, v.metric)] is v.verdict)
    return {"agreeing": agree, "compared": total, "seconds": round(time.perf_counter() - t0, 1)}


def change_points(rng: np.random.Generator, trials: int, noise: float, drop: float) -> dict:
    out: dict = {}
    days = 90
    for metric, higher in (("output_token_throughput", True), ("ttft_median", False)):
        factor = (1 - drop) if higher else (1 + drop)
        row = {}
        for k in (1, 3, 7, 30):
            det = 0
            for _ in range(trials):
                x = 100 * (1 + noise * rng.standard_normal(days))
                x[days - k:] *= factor
                cps = detect_change_points([(DAY0 + timedelta(days=i), float(v)) for i, v in enumerate(x)],
                                           metric=metric)
                det += any(c.regression and abs(c.index - (days - k)) <= 3 for c in cps)
            row[f"detected_last_{k}_of_90_regressed"] = rate(det, trials)
        fa = 0
        for _ in range(trials):
            y = 100 * (1 + noise * rng.standard_normal(days))
            cps = detect_change_points([(DAY0 + timedelta(days=i), float(v)) for i, v in enumerate(y)], metric=metric)
            fa += any(c.regression for c in cps)
        row["false_alarms_per_90_point_series"] = rate(fa, trials)
        out[metric] = row
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=2000, help="job-nights per condition of the shipped rule")
    p.add_argument("--side-trials", type=int, default=300, help="per condition of the other scenarios")
    p.add_argument("--cp-trials", type=int, default=200, help="series per change-point condition (0: skip)")
    p.add_argument("--full-path-trials", type=int, default=6, help="trials through SQLite + gate.evaluate")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--noise", type=float, default=0.02)
    p.add_argument("--drop", type=float, default=0.05)
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable) instead of tables")
    args = p.parse_args(argv)
    command = "python3 benchmarks/gate_power.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if not args.json:
        print_header("Gate power: first-night detection and false alarms per job-night", command)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    sim = dict(noise=args.noise, drop=args.drop)
    n = DEFAULT_REPEATS
    family = len(DEFAULT_GATED_METRICS) * len(CONCURRENCIES)
    result: dict = {
        "command": command, "machine": machine_info(), "seed": args.seed, "noise": args.noise, "drop": args.drop,
        "family": {"metrics": list(DEFAULT_GATED_METRICS), "concurrencies": list(CONCURRENCIES), "size": family},
        "rule": {"repeats": n, "baseline_records": CFG.baseline_records, "alpha": CFG.alpha,
                 "post_merge_floor_pct": CFG.default_threshold.post_merge_pct,
                 "pre_merge_floor_pct": CFG.default_threshold.pre_merge_pct},
        "targets": {"detection_first_night": 0.95, "false_alarms_per_job_night": 0.01},
        "analytic_detection": round(detection_power(drop_pct=100 * args.drop, noise_pct=100 * args.noise, n=n,
                                                    m=HIST_JOBS * n, family=family, df=HIST_JOBS * n - 1), 4),
    }
    result["default_rule_post_merge"] = simulate(rng, args.trials, n_hist=n, n_today=n, pre_merge=False, **sim)
    result["default_rule_pre_merge"] = simulate(rng, args.side_trials, n_hist=n, n_today=n, pre_merge=True, **sim)
    result["history_of_single_runs_post_merge"] = simulate(rng, args.side_trials, n_hist=1, n_today=n,
                                                           pre_merge=False, **sim)
    result["single_run_jobs_post_merge"] = simulate(rng, args.side_trials, n_hist=1, n_today=1, pre_merge=False,
                                                    **sim)
    result["full_path"] = full_path_agreement(rng, args.full_path_trials, args.noise, args.drop)
    if args.cp_trials:
        result["change_points"] = change_points(rng, args.cp_trials, args.noise, args.drop)
    post = result["default_rule_post_merge"]
    result["targets_met"] = (min(r["rate"] for r in post["detection_first_night"].values()) >= 0.95
                             and post["false_alarms_per_job_night"]["rate"] <= 0.01)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0

    def fmt(r: dict) -> str:
        return f"{100 * r['rate']:5.1f} % (±{100 * r['ci95']:.1f}, {r['hits']}/{r['trials']})"

    print(f"rule: mean of {n} repeats vs the trailing mean of {CFG.baseline_records} jobs, threshold "
          f"max(floor, t·σ̂·√(1/n+1/m)), Holm at α = {CFG.alpha:g} over {family} tests per job-night\n")
    print("| condition | detected: throughput −5 % | detected: TTFT +5 % | false alarms per job-night |\n|---|---|---|---|")
    for label, key in (("default rule, post-merge (WARN)", "default_rule_post_merge"),
                       ("default rule, pre-merge (FAIL)", "default_rule_pre_merge"),
                       (f"history of single runs, {n}-repeat job", "history_of_single_runs_post_merge"),
                       ("single-run jobs (repeats: 1)", "single_run_jobs_post_merge")):
        r = result[key]
        d = r["detection_first_night"]
        print(f"| {label} | {fmt(d['output_token_throughput'])} | {fmt(d['ttft_median'])} | "
              f"{fmt(r['false_alarms_per_job_night'])} |")
    print(f"\nanalytic first-night detection (normal approximation): {100 * result['analytic_detection']:.1f} %")
    fp = result["full_path"]
    print(f"full path (HistoryStore on temp SQLite + gate.evaluate) agrees on {fp['agreeing']}/{fp['compared']} "
          f"verdicts ({fp['seconds']} s)")
    if "change_points" in result:
        print("\n| metric | change points (Otava) | rate |\n|---|---|---|")
        for metric, row in result["change_points"].items():
            for cond, r in row.items():
                print(f"| {metric} | {cond.replace('_', ' ')} | {fmt(r)} |")
    print(f"\ntargets met: {result['targets_met']} (total {result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
