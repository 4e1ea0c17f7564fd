"""Gate one job dir against its history and pinned baselines, then record it: gate.json, the gate
junit, history records (and the optional upload). The submit side's results pipeline
(:func:`perfsanity.results.pipeline.finalize`) calls :func:`gate_job`; so does ``perfsanity gate DIR``.

Recording is idempotent: ``history_records.json`` names the history a job dir was recorded in, and a
second call for the same history records (and uploads) nothing. Concurrent calls are settled by the
history DB itself: the job's run id (``job_meta.json``) is a unique key, so exactly one records.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from perfsanity.common.errors import ConfigError, PerfsanityError
from perfsanity.common.files import write_atomic
from perfsanity.common.tables import num, print_table

GATE_JUNIT_FILE = "gate_junit.xml"
RECORDED_FILE = "history_records.json"


def open_store(url: str | None, *, must_exist: bool) -> Any:
    from perfsanity.results.history import HistoryStore, default_history_url

    location = url or default_history_url()
    if must_exist and "://" not in location and not Path(location).expanduser().exists():
        raise PerfsanityError(f"no history database at {location} (set --history or $PERFSANITY_HISTORY)")
    return HistoryStore(location)


def gate_job(
    job_dir: Path,
    *,
    pre_merge: bool = False,
    history: str | None = None,
    no_history: bool = False,
    baselines_file: Path | None = None,
    junit: Path | None = None,
    record: bool = True,
    upload: bool = True,
    post_merge: bool | None = None,
    out: TextIO | None = None,
    run: Any = None,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """Gate one job dir: write gate.json and the gate junit, record the run in history; return the
    GateReport. ``post_merge`` (default: not ``pre_merge``) marks the records as baseline material.
    ``run`` (default: JOB_DIR/results.json) is what is gated and recorded; ``environ`` (default
    ``os.environ``) names the baselines file and the upload target."""
    from perfsanity.results.gate import (
        DEFAULT_BASELINES_FILE,
        ENV_BASELINES,
        BaselinesFile,
        GateConfig,
        evaluate,
        resolve_gate_config,
    )
    from perfsanity.results.history import JOB_META_FILE, JobMeta, keys_for_run
    from perfsanity.results.junit import write_junit
    from perfsanity.results.report.job import GATE_FILE, RESULTS_FILE, read_results

    out = out or sys.stdout
    env = os.environ if environ is None else environ
    if no_history and history:
        raise ConfigError(None, "--history", "cannot be combined with --no-history")
    run = read_results(job_dir / RESULTS_FILE) if run is None else run
    meta_path = job_dir / JOB_META_FILE
    if not meta_path.exists() and not no_history:
        raise ConfigError(str(meta_path), "", "file not found: it carries the match keys that select the "
                          "history (written by the launcher); use --no-history to gate on pinned baselines only")
    meta = JobMeta.read(meta_path) if meta_path.exists() else None
    section = GateConfig.from_section(meta.gate, file=str(meta_path)) if meta and meta.gate else None
    if baselines_file is not None:
        baselines = BaselinesFile.load(baselines_file)
    elif env.get(ENV_BASELINES):
        baselines = BaselinesFile.load(Path(env[ENV_BASELINES]))
    else:
        default = Path(DEFAULT_BASELINES_FILE)
        baselines = BaselinesFile.load(default) if default.exists() else None
    config = resolve_gate_config(run.config_name, section=section, baselines=baselines)
    now = meta.timestamp if meta and meta.timestamp else datetime.now(UTC)
    keys = keys_for_run(meta, run) if meta else None
    store = None if no_history else open_store(history, must_exist=False)
    try:
        report = evaluate(run, config=config, pre_merge=pre_merge, history=store, keys=keys, now=now)
        report.write(job_dir / GATE_FILE)
        junit_path = write_junit(junit or job_dir / GATE_JUNIT_FILE, config_name=run.config_name, report=report)
        print_gate(report, out)
        print(f"wrote {job_dir / GATE_FILE} and {junit_path}", file=out)
        if store is not None and meta is not None and record:
            record_run(store, job_dir, run, meta, report, post_merge=(not pre_merge) if post_merge is None
                       else post_merge, upload=upload, environ=env, out=out)
    finally:
        if store is not None:
            store.close()
    return report


def record_run(store: Any, job_dir: Path, run: Any, meta: Any, report: Any, *, post_merge: bool,
               upload: bool, environ: Mapping[str, str] | None = None, out: TextIO | None = None) -> None:
    """Add the run to ``store`` (once per history: ``history_records.json``), with its gate verdicts,
    then upload the new records when ``upload`` and an upload target is configured in ``environ``."""
    from perfsanity.results.history import AlreadyRecorded, keys_for_run
    from perfsanity.results.upload import config_from_env, upload_records

    marker = job_dir / RECORDED_FILE
    if marker.exists():
        try:
            previous = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            previous = {}
        if previous.get("history") == store.masked_url:
            print(f"already recorded in {store.masked_url} (records {previous.get('ids')}); not adding again",
                  file=out)
            return
    try:  # one transaction keyed by the job's run id: of two concurrent gates, one records
        ids = store.add_run(keys_for_run(meta, run), run, meta.run_meta(post_merge=post_merge))
    except AlreadyRecorded as exc:
        print(f"already recorded in {store.masked_url} (records {exc.ids}); not adding again", file=out)
        return
    by_point = report.by_point()
    for rid, res in zip(ids, run.results, strict=True):
        verdicts = {m: v.verdict.value for m, v in by_point.get(res.label, {}).items()}
        if verdicts:
            store.set_gate_verdicts(rid, verdicts)
    write_atomic(marker, json.dumps({"history": store.masked_url, "ids": ids}) + "\n")
    print(f"recorded {len(ids)} record(s) in {store.masked_url}", file=out)
    target = config_from_env(os.environ if environ is None else environ) if upload else None
    if target is not None:
        records = [store.get(i) for i in ids]
        try:
            n = upload_records(records, target)
            print(f"uploaded {n} document(s) to {target.display_url}", file=out)
        except PerfsanityError as exc:  # the gate verdict stands; the upload is best effort
            print(f"perfsanity: warning: {exc}", file=sys.stderr)


def print_gate(report: Any, out: TextIO) -> None:
    rows, colors = [], []
    color_of = {"WARN": "33", "FAIL": "31", "PASS": "32"}
    for v in sorted(report.verdicts, key=lambda x: (x.concurrency, x.label, x.metric)):
        delta = "-" if v.delta_pct is None else f"{v.delta_pct:+.1f}%"
        rows.append([v.label, v.metric, num(v.value), num(v.baseline), v.baseline_source, delta,
                     f"{v.threshold_pct:g}%", v.verdict.value])
        colors.append(color_of.get(v.verdict.value))
    print(report.summary(), file=out)
    if rows:
        print_table(["point", "metric", "value", "baseline", "source", "delta", "threshold", "verdict"], rows, out,
                    colors=colors, right_from=2)


