"""Static HTML report of one job: run summary, gate table, throughput and latency/throughput plots, and
(with a history) the gated metrics' trends. One self-contained file, ``JOB_DIR/report.html``, rendered
from ``templates/job.html.j2`` (this module gathers the data; the template holds the markup)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from perfsanity.common.errors import ConfigError
from perfsanity.common.files import write_atomic
from perfsanity.common.redact import mask_url
from perfsanity.engines.base import PROFILES_DIR
from perfsanity.load.results_json import RunResult, flatten, point_order
from perfsanity.plan.jobmeta import JOB_META_FILE, JobMeta
from perfsanity.results.gate import GateConfig, GateReport, Verdict
from perfsanity.results.history import HistoryStore
from perfsanity.results.report.html import fmt, gate_verdicts, render
from perfsanity.run.monitors import read_cpu_csv, read_gpu_csv

#: (node, [(time, a %, b %)]) as the monitors logged it
Series = tuple[str, Sequence[tuple[float, float, float]]]

RESULTS_FILE = "results.json"
GATE_FILE = "gate.json"
REPORT_FILE = "report.html"

SUMMARY_COLUMNS = (
    ("output_token_throughput", "out tok/s"),
    ("total_token_throughput", "total tok/s"),
    ("output_token_throughput_per_gpu", "out tok/s/GPU"),
    ("output_token_throughput_per_user", "out tok/s/user"),
    ("ttft_median", "TTFT p50 ms"),
    ("ttft_p99", "TTFT p99 ms"),
    ("tpot_median", "TPOT p50 ms"),
    ("itl_median", "ITL p50 ms"),
    ("e2e_median", "E2E p50 ms"),
)


def read_results(path: Path) -> RunResult:
    """``results.json`` → :class:`RunResult`; unreadable or invalid files are a :class:`ConfigError`."""
    try:
        return RunResult.read(path)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found (is this a job directory?)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(str(path), loc, err["msg"]) from None
        raise ConfigError(str(path), "", f"not readable JSON: {exc}") from None


def render_job_report(
    run: RunResult,
    *,
    gate: GateReport | None = None,
    meta: JobMeta | None = None,
    history: HistoryStore | None = None,
    gate_config: GateConfig | None = None,
    generated_at: datetime | None = None,
    node_series: Sequence[Series] = (),
    gpu_series: Sequence[Series] = (),
    gpu_notes: Sequence[str] = (),
    profiles: Sequence[tuple[str, str]] = (),
) -> str:
    """``profiles``: (path under profiles/, size) of each profiler output (nsys reports, torch traces)."""
    from perfsanity.results.report import plots  # matplotlib: only when rendering
    from perfsanity.results.report.trend import keys_summary, trend_panel

    generated_at = generated_at or datetime.now(UTC)
    results = sorted(run.results, key=point_order)
    result_rows = []
    for r in results:
        flat = flatten(r)
        validity = r.validity + "".join(f"; {k} invalid: {why}" for k, why in sorted(r.invalid_metrics.items()))
        if r.evidence:
            validity += " (" + "; ".join(r.evidence) + ")"
        result_rows.append([r.label, r.benchmark_type, r.concurrency, r.client, f"{r.completed}/{r.requested}", r.failed]
                           + [fmt(flat.get(m)) for m, _ in SUMMARY_COLUMNS] + [max(len(r.repeats), 1), validity])
    figs = []
    png = plots.throughput_vs_concurrency(run.results, title=f"{run.config_name}: throughput vs concurrency")
    if png:
        figs.append((png, "throughput vs concurrency"))
    png = plots.latency_vs_throughput(run.results)
    if png:
        figs.append((png, "latency vs throughput"))
    windows = [(r.concurrency, r.started_at, r.ended_at) for r in results if r.started_at and r.ended_at]
    png = plots.node_usage(node_series, windows, title="worker nodes: CPU and memory, benchmark windows shaded")
    if png:
        figs.append((png, "worker nodes: CPU and memory during the benchmark"))
    png = plots.node_usage(gpu_series, windows, title="worker GPUs: utilisation and memory, benchmark windows shaded",
                           labels=("GPU util %", "GPU memory %"))
    if png:
        figs.append((png, "worker GPUs: utilisation and memory during the benchmark"))

    trends = None
    config = gate_config or GateConfig()
    if history is not None and meta is not None and run.results:
        now = meta.timestamp or generated_at
        trends = []
        for r in results:
            flat = flatten(r)
            keys = meta.keys_for(r)
            trend_figs = []
            for metric in config.metrics:
                today = (now, flat[metric]) if metric in flat else None
                panel = trend_panel(history, keys, metric, config=config, now=now, today=today)
                if panel.points or today:
                    trend_figs.append((panel.png, f"{metric} trend at {r.label}"))
            flagged = gate is not None and any(v.regression and v.label == r.label for v in gate.verdicts)
            trends.append({"label": r.label, "figs": trend_figs, "flagged": flagged})

    return render(
        "job.html.j2",
        title=f"perfsanity {run.config_name}",
        generated_at=generated_at,
        run=run,
        status_verdict={"passed": Verdict.PASS, "failed": Verdict.FAIL}.get(run.status, Verdict.WARN),
        gate=gate,
        gate_verdicts=gate_verdicts(gate) if gate is not None else [],
        meta=meta,
        keys_line=keys_summary(meta.match_keys(0)) if meta is not None else "",
        build_url=mask_url(meta.build_url, keep_user=False) if meta is not None else "",
        result_headers=["point", "type", "concurrency", "client", "completed", "failed"] + [h for _, h in SUMMARY_COLUMNS]
        + ["runs", "validity"],
        result_rows=result_rows,
        plots=figs,
        gpu_notes=gpu_notes,
        accuracy_rows=[[a.task, a.metric or "-", fmt(a.score), fmt(a.threshold), a.samples if a.samples is not None
                        else "-", ("PASS" if a.passed else "FAIL") + ("" if a.error is None else f": {a.error}")]
                       for a in run.accuracy],
        profiler_rows=[[c.window, c.action, c.role, c.url, _clock(c.sent_at), _clock(c.answered_at),
                        c.status if c.status is not None else "no answer", c.answer] for c in run.profiler_calls],
        profiles=profiles,
        trends=trends,
        lookback_days=config.lookback_days,
        history_url=history.masked_url if history is not None else "",
    )


def read_monitors(logs: Path) -> tuple[list[Series], list[Series], list[str]]:
    """The per-node monitor logs (:mod:`perfsanity.run.monitors`): CPU/memory series by node, GPU series
    by node, and a line per node on its GPU log (samples, or the node's reason for having none)."""
    series = [(p.name.removesuffix(".cpu.csv"), read_cpu_csv(p)) for p in sorted(logs.glob("*.cpu.csv"))]
    gpus, notes = [], []
    for node, _ in series:
        gpu, note = logs / f"{node}.gpu.csv", logs / f"{node}.gpu.txt"
        if gpu.is_file():
            rows = read_gpu_csv(gpu)
            gpus.append((node, rows))
            notes.append(f"{node}: GPU log {gpu.name}, {len(rows)} samples")
        elif note.is_file():
            notes.append(f"{node}: {note.read_text().strip()}")
    return series, gpus, notes


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3]


def list_profiles(job_dir: Path) -> list[tuple[str, str]]:
    """Every file under ``JOB_DIR/profiles/`` (nsys reports, torch traces) as (relative path, size)."""
    root = job_dir / PROFILES_DIR
    if not root.is_dir():
        return []
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return [(str(p.relative_to(root)), _size(p.stat().st_size)) for p in files]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n} {unit}"
        n //= 1024
    return f"{n} GiB"


def write_job_report(
    job_dir: Path,
    *,
    history: HistoryStore | None = None,
    out: Path | None = None,
    gate_config: GateConfig | None = None,
) -> Path:
    """Read ``JOB_DIR/results.json`` (+ ``job_meta.json``, ``gate.json`` when present), write the report."""
    if not job_dir.is_dir():
        raise ConfigError(str(job_dir), "", "not a directory")
    run = read_results(job_dir / RESULTS_FILE)
    meta = JobMeta.read(job_dir / JOB_META_FILE) if (job_dir / JOB_META_FILE).exists() else None
    gate = GateReport.read(job_dir / GATE_FILE) if (job_dir / GATE_FILE).exists() else None
    if gate_config is None and meta is not None and meta.gate is not None:
        gate_config = GateConfig.from_section(meta.gate, file=str(job_dir / JOB_META_FILE))
    series, gpus, notes = read_monitors(job_dir / "logs")
    text = render_job_report(run, gate=gate, meta=meta, history=history, gate_config=gate_config,
                             node_series=series, gpu_series=gpus, gpu_notes=notes, profiles=list_profiles(job_dir))
    out = out or job_dir / REPORT_FILE
    write_atomic(out, text)
    return out
