"""Static HTML report of one job: run summary, gate table, throughput and latency/throughput plots, and
(with a history) the gated metrics' trends. One self-contained file, ``JOB_DIR/report.html``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from perfsanity.common.errors import ConfigError
from perfsanity.common.files import write_atomic
from perfsanity.common.redact import mask_url
from perfsanity.load.results_json import RunResult, flatten
from perfsanity.plan.jobmeta import JOB_META_FILE, JobMeta
from perfsanity.results.gate import GateConfig, GateReport, Verdict
from perfsanity.results.history import HistoryStore
from perfsanity.results.report.html import badge, esc, esc_free_text, fmt, gate_table, img, page, safe_link, table

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
) -> str:
    from perfsanity.results.report import plots  # matplotlib: only when rendering
    from perfsanity.results.report.trend import keys_summary, trend_panel

    generated_at = generated_at or datetime.now(UTC)
    parts = [f"<h1>{esc(run.config_name)}</h1>"]
    status_verdict = {"passed": Verdict.PASS, "failed": Verdict.FAIL}.get(run.status, Verdict.WARN)
    line = (f'<p class="meta">run {badge(status_verdict, run.status)}'
            + (f" · gate {badge(gate.verdict)} ({'pre-merge' if gate.pre_merge else 'post-merge'})"
               if gate else "")
            + f" · backend <b>{esc(run.backend)}</b> · mode <b>{esc(run.mode)}</b>"
            f" · <b>{esc(run.total_gpus)}</b> GPUs</p>")
    parts.append(line)
    if meta is not None:
        parts.append(f'<p class="meta">{esc(keys_summary(meta.match_keys(0)))}</p>')
        prov = []
        if meta.commit:
            prov.append(f"commit <b>{esc(meta.commit[:12])}</b>")
        if meta.branch:
            prov.append(f"branch <b>{esc(meta.branch)}</b>")
        if meta.job_id:
            prov.append(f"job <b>{esc(meta.job_id)}</b>")
        if meta.build_url:
            prov.append("build " + safe_link(mask_url(meta.build_url, keep_user=False)))
        if meta.timestamp:
            prov.append(f"at <b>{esc(meta.timestamp.isoformat(timespec='minutes'))}</b>")
        if prov:
            parts.append(f'<p class="meta">{" · ".join(prov)}</p>')
    if run.failures:
        items = "".join(f"<li><pre>{esc_free_text(f)}</pre></li>" for f in run.failures)
        parts.append(f"<h2>Failures</h2><ul>{items}</ul>")

    if gate is not None:
        parts.append("<h2>Regression gate</h2>")
        hist = f" against {esc(gate.history)}" if gate.history else ""
        parts.append(f'<p class="meta">{esc(gate.summary())}{hist}</p>')
        parts.append(gate_table(gate))

    parts.append("<h2>Results per concurrency</h2>")
    rows = []
    for r in sorted(run.results, key=lambda x: x.concurrency):
        flat = flatten(r)
        rows.append([esc(r.concurrency), esc(r.client), esc(f"{r.completed}/{r.requested}"), esc(r.failed)]
                    + [esc(fmt(flat.get(m))) for m, _ in SUMMARY_COLUMNS])
    if rows:
        parts.append(table(["concurrency", "client", "completed", "failed"] + [h for _, h in SUMMARY_COLUMNS],
                           rows, left=2))
    else:
        parts.append('<p class="muted">No results.</p>')

    figs = []
    png = plots.throughput_vs_concurrency(run.results, title=f"{run.config_name}: throughput vs concurrency")
    if png:
        figs.append(img(png, "throughput vs concurrency"))
    png = plots.latency_vs_throughput(run.results)
    if png:
        figs.append(img(png, "latency vs throughput"))
    if figs:
        parts.append(f'<h2>Plots</h2><div class="plots">{"".join(figs)}</div>')

    if history is not None and meta is not None and run.results:
        config = gate_config or GateConfig()
        now = meta.timestamp or generated_at
        parts.append("<h2>Trends</h2>")
        parts.append(f'<p class="meta">valid post-merge history, last {config.lookback_days} days, from '
                     f"{esc(history.masked_url)}; ★ marks this run</p>")
        for r in sorted(run.results, key=lambda x: x.concurrency):
            flat = flatten(r)
            keys = meta.match_keys(r.concurrency)
            figs = []
            for metric in config.metrics:
                today = (now, flat[metric]) if metric in flat else None
                panel = trend_panel(history, keys, metric, config=config, now=now, today=today)
                if panel.points or today:
                    figs.append(img(panel.png, f"{metric} trend at concurrency {r.concurrency}"))
            body = f'<div class="plots">{"".join(figs)}</div>' if figs else '<p class="muted">no history</p>'
            flagged = gate is not None and any(v.regression and v.concurrency == r.concurrency for v in gate.verdicts)
            opened = " open" if flagged else ""
            parts.append(f"<details{opened}><summary>concurrency {esc(r.concurrency)}"
                         f"{' · regression' if flagged else ''}</summary>{body}</details>")
    return page(f"perfsanity {run.config_name}", "\n".join(parts), generated_at)


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
    text = render_job_report(run, gate=gate, meta=meta, history=history, gate_config=gate_config)
    out = out or job_dir / REPORT_FILE
    write_atomic(out, text)
    return out
