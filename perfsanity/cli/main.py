"""The ``perfsanity`` command. One ``_add_<name>`` (parser) and one ``cmd_<name>`` (action) per subcommand;
:func:`build_parser` wires them, so more subcommands (``status``, ``logs``, …) slot in the same way.

Every user error is a :class:`~perfsanity.common.errors.PerfsanityError`: :func:`main` prints it as one line
(``perfsanity: error: …``) and exits with its ``exit_code`` — never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from perfsanity.common.cliutil import positive_float, positive_int, run_main, subcommand
from perfsanity.common.errors import ConfigError
from perfsanity.common.tables import num, print_table
from perfsanity.results.gating import GATE_JUNIT_FILE, gate_job, open_store

HISTORY_HELP = (
    "history database: a SQLite path or a SQLAlchemy URL such as postgresql+psycopg://user@host/db "
    "(default: $PERFSANITY_HISTORY, else ~/.cache/perfsanity/history.sqlite)"
)

Handler = Callable[[argparse.Namespace], int]


# ------------------------------------------------------------------------------------------ helpers


def _results_path(arg: str) -> Path:
    path = Path(arg)
    if path.is_dir():
        path = path / "results.json"
    return path


def _job_dir(arg: str) -> Path:
    path = Path(arg)
    if not path.is_dir():
        raise ConfigError(arg, "", "not a job directory (expected a directory with results.json)")
    return path


# ------------------------------------------------------------------------------------------- report


def _add_report(sub: Any) -> None:
    p = subcommand(
        sub, "report", cmd_report,
        help="write JOB_DIR/report.html (results, gate table, plots, trends)",
        description="Render a self-contained HTML report of one job from JOB_DIR/results.json "
        "(plus job_meta.json and gate.json when present). With --history, add the gated metrics' trends.",
    )
    p.add_argument("job_dir", metavar="JOB_DIR", help="job directory containing results.json")
    p.add_argument("--history", metavar="URL", help="add trend plots from this history. " + HISTORY_HELP)
    p.add_argument("--trends", action="store_true",
                   help="add trend plots from the default history ($PERFSANITY_HISTORY or ~/.cache/…)")
    p.add_argument("--out", type=Path, help="output file (default: JOB_DIR/report.html)")


def cmd_report(args: argparse.Namespace) -> int:
    from perfsanity.results.report.job import write_job_report

    job_dir = _job_dir(args.job_dir)
    store = open_store(args.history, must_exist=True) if (args.history or args.trends) else None
    try:
        out = write_job_report(job_dir, history=store, out=args.out)
    finally:
        if store is not None:
            store.close()
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------------------ history


SHORT_NAMES = {
    "output_token_throughput": "out_tok/s",
    "total_token_throughput": "tot_tok/s",
    "ttft_median": "ttft_p50",
    "ttft_p99": "ttft_p99",
    "tpot_median": "tpot_p50",
    "itl_median": "itl_p50",
}


def _add_history(sub: Any) -> None:
    p = subcommand(
        sub, "history", cmd_history,
        help="list stored runs (one line per run and concurrency)",
        description="List perf history records, oldest first. Invalid records are hidden unless --all.",
    )
    p.add_argument("--config", metavar="NAME", help="only this config")
    p.add_argument("--metric", metavar="M", action="append",
                   help="metric column(s) to show, e.g. ttft_p99 (repeatable; default: the gated metrics)")
    p.add_argument("--since", type=positive_float, default=30.0, metavar="DAYS",
                   help="only the last DAYS days (default: 30)")
    p.add_argument("--concurrency", type=positive_int, metavar="C", help="only this concurrency")
    p.add_argument("--post-merge", action="store_true", help="only post-merge records")
    p.add_argument("--all", action="store_true", help="include records marked invalid")
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the newest N records")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--history", metavar="URL", help=HISTORY_HELP)


def _metrics(args: argparse.Namespace) -> tuple[str, ...]:
    """``--metric`` values (default: the gated metrics); an unknown one is a ConfigError listing the known."""
    from perfsanity.results.gate import DEFAULT_GATED_METRICS, KNOWN_METRICS

    metrics = tuple(args.metric or DEFAULT_GATED_METRICS)
    for m in metrics:
        if m not in KNOWN_METRICS:
            raise ConfigError(None, "--metric", f"unknown metric {m!r}; known: {', '.join(sorted(KNOWN_METRICS))}")
    return metrics


def cmd_history(args: argparse.Namespace) -> int:
    metrics = _metrics(args)
    filters: dict[str, Any] = {}
    if args.config:
        filters["config_name"] = args.config
    if args.concurrency:
        filters["concurrency"] = args.concurrency
    with open_store(args.history, must_exist=True) as store:
        records = store.query(filters, since=timedelta(days=args.since), valid_only=not args.all,
                              post_merge_only=args.post_merge, limit=args.limit)
    out = sys.stdout
    if args.json:
        for r in records:
            print(json.dumps({
                "id": r.id, "timestamp": r.timestamp.isoformat(), **r.keys.as_dict(), "commit": r.commit,
                "branch": r.branch, "job_id": r.job_id, "post_merge": r.post_merge, "valid": r.valid,
                "invalid_reason": r.invalid_reason, "gate": dict(r.gate_verdicts),
                "metrics": {m: r.metrics.get(m) for m in metrics},
            }), file=out)
        return 0
    if not records:
        where = f" for config {args.config!r}" if args.config else ""
        print(f"no records{where} in the last {args.since:g} days", file=out)
        return 0
    show_config = not args.config
    headers = ["id", "time (UTC)"] + (["config"] if show_config else []) + [
        "conc", "commit", "branch", "kind", "valid"] + [SHORT_NAMES.get(m, m) for m in metrics]
    rows, colors = [], []
    for r in records:
        valid = "yes" if r.valid else f"no: {r.invalid_reason[:30]}"
        regress = [m for m, v in r.gate_verdicts.items() if v in ("WARN", "FAIL")]
        rows.append([str(r.id), r.timestamp.strftime("%Y-%m-%d %H:%M")] + ([r.keys.config_name] if show_config
                                                                            else [])
                    + [str(r.keys.concurrency) if r.keys.point == f"c{r.keys.concurrency}" else r.keys.point,
                       r.commit[:10], r.branch[:20],
                       "post" if r.post_merge else "pre", valid]
                    + [num(r.metrics.get(m)) for m in metrics])
        colors.append("red" if regress else ("bright_black" if not r.valid else None))
    print_table(headers, rows, out, colors=colors, right_from=len(headers) - len(metrics))
    return 0


def _add_invalidate(sub: Any) -> None:
    p = subcommand(
        sub, "invalidate", cmd_invalidate,
        help="mark history records invalid so they never feed a baseline",
        description="Mark records invalid (kept, shown with `history --all`, excluded from baselines).",
    )
    p.add_argument("record_ids", metavar="RECORD_ID", type=positive_int, nargs="+",
                   help="record id(s) from `perfsanity history`")
    p.add_argument("--reason", required=True, help="why, e.g. 'node gb200-17 had a bad NIC'")
    p.add_argument("--history", metavar="URL", help=HISTORY_HELP)


def cmd_invalidate(args: argparse.Namespace) -> int:
    with open_store(args.history, must_exist=True) as store:
        for rid in args.record_ids:
            store.mark_invalid(rid, args.reason)
            print(f"record {rid}: invalid ({args.reason})")
    return 0


# ------------------------------------------------------------------------------------------ compare


def _add_compare(sub: Any) -> None:
    p = subcommand(
        sub, "compare", cmd_compare,
        help="per-metric deltas between two runs (B relative to A)",
        description="Compare two results.json files (or job directories): for each concurrency present in "
        "both, the change of each metric from A to B, marked better/WORSE by the metric's direction.",
    )
    p.add_argument("a", metavar="A", help="baseline run: results.json or a job directory")
    p.add_argument("b", metavar="B", help="candidate run: results.json or a job directory")
    p.add_argument("--metric", metavar="M", action="append",
                   help="metric(s) to compare (repeatable; default: the gated metrics)")
    p.add_argument("--threshold", type=positive_float, default=5.0, metavar="PCT",
                   help="changes beyond PCT %% in the bad direction are flagged WORSE (default: 5)")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 5 when any metric is WORSE beyond --threshold")


def cmd_compare(args: argparse.Namespace) -> int:
    from perfsanity.load.results_json import flatten, higher_is_better, point_order
    from perfsanity.results.gate import GateFailed
    from perfsanity.results.report.job import read_results

    metrics = _metrics(args)
    run_a, run_b = read_results(_results_path(args.a)), read_results(_results_path(args.b))
    by_a = {r.label: flatten(r) for r in run_a.results}
    by_b = {r.label: flatten(r) for r in run_b.results}
    # a plain concurrency point shows as its concurrency (as before benchmark types), others by label
    shown = {r.label: r.label if r.point else str(r.concurrency) for r in (*run_b.results, *run_a.results)}
    order = {r.label: point_order(r) for r in (*run_b.results, *run_a.results)}
    out = sys.stdout
    print(f"A: {run_a.config_name} ({args.a})\nB: {run_b.config_name} ({args.b})", file=out)
    if run_a.config_name != run_b.config_name:
        print("note: the two runs have different config names", file=out)
    common = sorted(set(by_a) & set(by_b), key=order.__getitem__)
    only = sorted(set(by_a) ^ set(by_b), key=order.__getitem__)
    if only:
        print(f"note: concurrencies in only one run (skipped): {', '.join(shown[p] for p in only)}", file=out)
    rows, colors, worse = [], [], 0
    for c in common:
        for m in metrics:
            va, vb = by_a[c].get(m), by_b[c].get(m)
            if va is None or vb is None or va == 0:
                rows.append([shown[c], m, num(va), num(vb), "-", ""])
                colors.append(None)
                continue
            delta = (vb - va) / abs(va) * 100.0
            bad = -delta if higher_is_better(m) else delta
            if bad > args.threshold:
                mark, color = "WORSE", "red"
                worse += 1
            elif bad < -args.threshold:
                mark, color = "better", "green"
            else:
                mark, color = "~", None
            arrow = "higher is better" if higher_is_better(m) else "lower is better"
            rows.append([shown[c], m, num(va), num(vb), f"{delta:+.1f}%", f"{mark} ({arrow})"])
            colors.append(color)
    if not rows:
        print("nothing to compare: no concurrency in common", file=out)
        return 0
    print_table(["conc", "metric", "A", "B", "delta", "verdict"], rows, out, colors=colors, right_from=2)
    print(f"{worse} metric(s) worse than {args.threshold:g}%", file=out)
    if worse and args.fail_on_regression:
        raise GateFailed(f"{worse} metric(s) regressed beyond {args.threshold:g}% from A to B")
    return 0


# ----------------------------------------------------------------------------------------- baseline


def _add_baseline(sub: Any) -> None:
    p = sub.add_parser(
        "baseline", help="pin or show baselines in the baselines YAML file",
        description="Pinned baselines override the history baseline for a config's metric.",
    )
    bsub = p.add_subparsers(dest="baseline_cmd", metavar="{pin,show}", required=True)
    pin = subcommand(bsub, "pin", cmd_baseline_pin, help="pin a metric's baseline for a config",
                          description="Pin METRIC of config NAME to VALUE (for one concurrency, or all).")
    pin.add_argument("--config", required=True, metavar="NAME", help="config name, as in results.json")
    pin.add_argument("--metric", required=True, metavar="M", help="flat metric name, e.g. output_token_throughput")
    pin.add_argument("--value", required=True, type=positive_float, metavar="V",
                     help="baseline value (tokens/s for throughputs, ms for latencies)")
    pin.add_argument("--concurrency", type=positive_int, metavar="C",
                     help="pin only this concurrency (default: every concurrency)")
    pin.add_argument("--file", type=Path, metavar="FILE",
                     help="baselines YAML (default: $PERFSANITY_BASELINES, else ./baselines.yaml)")
    show = subcommand(bsub, "show", cmd_baseline_show, help="print the pinned baselines")
    show.add_argument("--config", metavar="NAME", help="only this config")
    show.add_argument("--file", type=Path, metavar="FILE",
                      help="baselines YAML (default: $PERFSANITY_BASELINES, else ./baselines.yaml)")


def cmd_baseline_pin(args: argparse.Namespace) -> int:
    from perfsanity.results.gate import BaselinesFile, default_baselines_path

    path = args.file or default_baselines_path()
    data = BaselinesFile.load(path, missing_ok=True)
    data.pin(args.config, args.metric, args.value, args.concurrency)
    data.save(path)
    scope = f"concurrency {args.concurrency}" if args.concurrency else "all concurrencies"
    print(f"pinned {args.config} {args.metric} = {args.value:g} ({scope}) in {path}")
    return 0


def cmd_baseline_show(args: argparse.Namespace) -> int:
    from perfsanity.results.gate import BaselinesFile, default_baselines_path

    path = args.file or default_baselines_path()
    data = BaselinesFile.load(path)
    rows = []
    for name, cfg in sorted(data.configs.items()):
        if args.config and name != args.config:
            continue
        for metric, pinned in sorted(cfg.baselines.items()):
            if isinstance(pinned, dict):
                rows += [[name, metric, str(c), num(v)] for c, v in sorted(pinned.items())]
            else:
                rows.append([name, metric, "all", num(pinned)])
    if not rows:
        print(f"no pinned baselines in {path}")
        return 0
    print_table(["config", "metric", "concurrency", "value"], rows, sys.stdout, right_from=2)
    return 0


# --------------------------------------------------------------------------------------------- gate


def _add_gate(sub: Any) -> None:
    p = subcommand(
        sub, "gate", cmd_gate,
        help="run the regression gate on a job; writes gate.json and junit",
        description="Compare each gated metric of JOB_DIR/results.json with its baseline (pinned, else "
        "from history) and write JOB_DIR/gate.json and JOB_DIR/gate_junit.xml. Post-merge (default): a "
        "regression beyond 5% is a WARN (recorded, exit 0). --pre-merge: beyond 10% is a FAIL (exit 5). "
        "The run is then added to the history (unless --no-record) and uploaded to OpenSearch when "
        "$PERFSANITY_OPENSEARCH_URL is set (unless --no-upload).",
    )
    p.add_argument("job_dir", metavar="JOB_DIR", help="job directory with results.json and job_meta.json")
    p.add_argument("--pre-merge", action="store_true",
                   help="pre-merge thresholds (default 10%%) and FAIL instead of WARN")
    p.add_argument("--history", metavar="URL", help=HISTORY_HELP)
    p.add_argument("--no-history", action="store_true",
                   help="use pinned baselines only (job_meta.json becomes optional; nothing is recorded)")
    p.add_argument("--baselines", type=Path, metavar="FILE",
                   help="pinned baselines YAML (default: $PERFSANITY_BASELINES, else ./baselines.yaml if present)")
    p.add_argument("--junit", type=Path, metavar="FILE", help=f"junit output (default: JOB_DIR/{GATE_JUNIT_FILE})")
    p.add_argument("--no-record", action="store_true", help="do not add this run to the history")
    p.add_argument("--no-upload", action="store_true", help="do not upload to OpenSearch even if configured")


def cmd_gate(args: argparse.Namespace) -> int:
    from perfsanity.results.gate import GateFailed, Verdict

    report = gate_job(_job_dir(args.job_dir), pre_merge=args.pre_merge, history=args.history,
                      no_history=args.no_history, baselines_file=args.baselines, junit=args.junit,
                      record=not args.no_record, upload=not args.no_upload)
    if report.verdict is Verdict.FAIL:
        names = ", ".join(v.name for v in report.regressions)
        raise GateFailed(f"perf regression (pre-merge): {names}")
    return 0


# ------------------------------------------------------------------------------------------ collect


def _add_collect(sub: Any) -> None:
    p = subcommand(
        sub, "collect", cmd_collect,
        help="run the results pipeline of a job that has ended (gate, junit, report, history)",
        description="For a job submitted without --wait (or to redo it): once the job has ended, record it in "
        "the history, gate it, and write JOB_DIR/junit.xml, gate.json, report.html and report.json. Running it "
        "again never records twice. Exits with the job's verdict combined with the gate's.",
    )
    p.add_argument("job_dir", metavar="JOB_DIR", help="job directory (as written by submit.py)")


def cmd_collect(args: argparse.Namespace) -> int:
    from perfsanity.jobs.submit import collect_job

    return collect_job(_job_dir(args.job_dir))


# -------------------------------------------------------------------------------------------- trend


def _add_trend(sub: Any) -> None:
    p = subcommand(
        sub, "trend", cmd_trend,
        help="write the nightly trend report of a config (HTML)",
        description="Plot each gated metric over the lookback window for every concurrency of a config, with "
        "the baseline band and detected change points.",
    )
    p.add_argument("--config", required=True, metavar="NAME", help="config name")
    p.add_argument("--metric", metavar="M", action="append", help="metric(s) to plot (default: the gated ones)")
    p.add_argument("--since", type=positive_int, metavar="DAYS", help="lookback window (default: 90)")
    p.add_argument("--baselines", type=Path, metavar="FILE", help="pinned baselines YAML to draw")
    p.add_argument("--out", type=Path, metavar="FILE", help="output file (default: ./trend_<config>.html)")
    p.add_argument("--history", metavar="URL", help=HISTORY_HELP)


def cmd_trend(args: argparse.Namespace) -> int:
    from perfsanity.results.gate import KNOWN_METRICS, BaselinesFile, GateConfig, resolve_gate_config
    from perfsanity.results.report.trend import write_trend_report

    for m in args.metric or ():
        if m not in KNOWN_METRICS:
            raise ConfigError(None, "--metric", f"unknown metric {m!r}")
    baselines = BaselinesFile.load(args.baselines) if args.baselines else None
    config = resolve_gate_config(args.config, baselines=baselines)
    if args.since:
        if args.since > 3650:
            raise ConfigError(None, "--since", f"must be at most 3650 days, got {args.since}")
        config = config.merged_with(GateConfig(lookback_days=args.since,
                                               min_history_days=min(config.min_history_days, args.since)))
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", args.config).strip("._") or "config"
    out = args.out or Path(f"trend_{safe}.html")
    with open_store(args.history, must_exist=True) as store:
        write_trend_report(store, args.config, out, config=config, metrics=args.metric)
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------------------- import


def _add_import(sub: Any) -> None:
    p = sub.add_parser(
        "import", help="write a perfsanity config from an srtctl job or a Dynamo sweep file",
        description="Translate another tool's file into an equivalent perfsanity test config (or a config with "
        "a sweep: block), checked as submit.py --dry-run checks it, and print every source key that did not map "
        "(docs/import.md).",
    )
    isub = p.add_subparsers(dest="import_cmd", metavar="{srtctl,dynamo-sweep}", required=True)
    out_help = ("output YAML; its place gives the kind (a directory named 'aggr' for aggregated jobs). "
                "Default: $PERFSANITY_OUT (else out)/import/<disagg|aggr>/<name>.yaml")
    s = subcommand(isub, "srtctl", cmd_import_srtctl, help="an srtctl job YAML (srt-slurm) -> one test config")
    s.add_argument("file", metavar="FILE", help="srtctl job YAML")
    s.add_argument("-o", "--out", metavar="OUT", help=out_help)
    d = subcommand(isub, "dynamo-sweep", cmd_import_dynamo_sweep,
                   help="a Dynamo SGLang SLURM sweep file -> a test config with a sweep: block")
    d.add_argument("file", metavar="FILE", help="Dynamo sweep YAML (slurm: and sglang: lists)")
    d.add_argument("-o", "--out", metavar="OUT", help=out_help)
    d.add_argument("--gpus-per-node", type=positive_int, default=8, metavar="N",
                   help="GPUs per node (not in the sweep file; default 8, Dynamo's default)")
    d.add_argument("--model-name", metavar="NAME", help="metadata.model_name (default: the file's stem)")
    d.add_argument("--model-path", metavar="PATH", help="environment.model_path (default: unset)")


def _print_import(result: Any, tool: str) -> int:
    from perfsanity.jobs.importers import format_report, write

    write(result, tool)
    print("\n".join(format_report(result)))
    return 0


def cmd_import_srtctl(args: argparse.Namespace) -> int:
    from perfsanity.jobs.importers.srtctl import TOOL, import_srtctl

    return _print_import(import_srtctl(args.file, args.out), TOOL)


def cmd_import_dynamo_sweep(args: argparse.Namespace) -> int:
    from perfsanity.jobs.importers.dynamo_sweep import TOOL, import_dynamo_sweep

    return _print_import(import_dynamo_sweep(args.file, args.out, gpus_per_node=args.gpus_per_node,
                                             model_name=args.model_name, model_path=args.model_path), TOOL)


# ---------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfsanity",
        description="Disaggregated LLM serving perf tests: reports, perf history and the regression gate.",
    )
    parser.add_argument("--version", action="version", version="perfsanity")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from perfsanity.jobs import jobdir

    for add in (jobdir.register, _add_report, _add_history, _add_compare, _add_baseline, _add_gate, _add_collect,
                _add_trend, _add_invalidate, _add_import):
        add(sub)
    parser.subparsers = sub  # type: ignore[attr-defined]  # for code that adds more subcommands
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_main(lambda: args.func(args), prefix="perfsanity: ")
