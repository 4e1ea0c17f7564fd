"""Read a job directory (or a sweep directory of them): status with headline figures, and role logs.

A job dir holds ``launch.sh``, ``config.resolved.yaml``, ``job.json``, ``jobid.json`` (once
submitted), ``logs/<ROLE>.log`` (+ ``logs/<ROLE>.server.log``), ``slurm-<id>.out``, ``results.json``,
``junit.xml``, ``report.json``; a sweep dir holds ``sweep_manifest.json`` and one job dir per point.

* :func:`status` → one :class:`JobStatus` per job: SLURM state (asked live when a job id is known and
  SLURM answers; every call is bounded and the first failure stops further calls; otherwise the
  recorded state), verdict, best output tok/s, TTFT/ITL p50 at the highest concurrency, failed role.
* :func:`logs` → the roles and their log files, or the redacted tail of one role's logs.
* :func:`register` adds ``status DIR`` and ``logs DIR [ROLE] [-n N]`` to an argparse subparsers object.

Nothing here writes to the directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perfsanity.common.cliutil import positive_int, run_main, subcommand
from perfsanity.common.errors import ConfigError
from perfsanity.common.processes import tail
from perfsanity.common.tables import render_table as format_table
from perfsanity.run.benchmark import ENDPOINT_FILE
from perfsanity.run.supervisor import STOPPED_BY_USER

MANIFEST_FILE = "sweep_manifest.json"
DEFAULT_LINES = 40
_ACTIVE_HINT = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SUBMITTED")


@dataclass(frozen=True)
class JobStatus:
    """What one job dir says about its job. Latencies in ms, throughput in tokens/s."""

    name: str
    job_dir: Path
    job_id: str | None = None
    state: str = "not-submitted"  # SLURM state, or pending / submit-failed / not-submitted / local
    state_source: str = "recorded"  # "slurm" (asked now) | "recorded" (job files / manifest)
    exit_code: int | None = None
    verdict: str | None = None  # passed | failed | incomplete (results.json), infra-failure, no-results
    best_output_tps: float | None = None  # best output_token_throughput over the concurrencies
    best_output_tps_concurrency: int | None = None
    max_concurrency: int | None = None
    ttft_p50_ms: float | None = None  # at max_concurrency
    itl_p50_ms: float | None = None  # at max_concurrency
    failed_role: str | None = None
    error_signature: str | None = None
    reason: str = ""  # report.json's reason (what the triage saw), e.g. "install step failed …"
    attempts: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    endpoint: dict[str, Any] | None = None  # a manual job's endpoint.json: url, model, how to stop

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["job_dir"] = str(self.job_dir)
        return data


# ------------------------------------------------------------------------------------------ reading


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_sweep_dir(path: Path) -> bool:
    return (path / MANIFEST_FILE).is_file()


def is_job_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("job.json", "jobid.json", "results.json", "launch.sh"))


class _SlurmProbe:
    """Live job states: each call bounded by the SLURM client timeout; after one failure to reach
    SLURM (not installed, controller down, timeout) no further calls are made."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.error: str | None = None

    def state(self, job_id: str) -> Any:
        if not self.enabled or self.error is not None or not job_id.isdigit():
            return None
        import perfsanity.jobs.slurm as slurm_jobs

        try:
            return slurm_jobs.job_state(job_id)
        except slurm_jobs.JobNotFound:
            return None
        except slurm_jobs.SlurmError as exc:
            self.error = str(exc)
            return None


def _headline(results: dict[str, Any] | None) -> dict[str, Any]:
    if not results:
        return {}
    rows = [r for r in results.get("results") or [] if isinstance(r, dict) and isinstance(r.get("concurrency"), int)]
    out: dict[str, Any] = {"verdict": results.get("status")}
    with_tps = [r for r in rows if isinstance(r.get("output_token_throughput"), (int, float))]
    if with_tps:
        best = max(with_tps, key=lambda r: r["output_token_throughput"])
        out["best_output_tps"] = float(best["output_token_throughput"])
        out["best_output_tps_concurrency"] = best["concurrency"]
    if rows:
        top = max(rows, key=lambda r: r["concurrency"])
        out["max_concurrency"] = top["concurrency"]
        out["ttft_p50_ms"] = (top.get("ttft") or {}).get("median")
        out["itl_p50_ms"] = (top.get("itl") or {}).get("median")
    return out


def _verdict(state: str, exit_code: int | None, has_results_verdict: bool) -> str | None:
    from perfsanity.jobs.slurm import INFRASTRUCTURE_FAILURE_STATES, TERMINAL_STATES

    if has_results_verdict:
        return None  # keep results.json's
    if state in TERMINAL_STATES:
        if state in INFRASTRUCTURE_FAILURE_STATES:
            return "infra-failure"
        if state == "COMPLETED" and exit_code in (0, None):
            return "no-results"
        return "failed"
    if state in ("FAILED", "submit-failed"):
        return "failed"
    return None


def job_status(job_dir: Path, *, name: str | None = None, record: dict[str, Any] | None = None,
               probe: _SlurmProbe | None = None) -> JobStatus:
    """Status of one job dir; ``record`` is its sweep-manifest entry, if any."""
    probe = probe or _SlurmProbe(enabled=True)
    record = record or {}
    jobid = _read_json(job_dir / "jobid.json") or {}
    job = _read_json(job_dir / "job.json") or {}
    report = _read_json(job_dir / "report.json") or {}
    endpoint = _read_json(job_dir / ENDPOINT_FILE)
    results_path = job_dir / "results.json"
    results = _read_json(results_path)
    note = ""
    if results_path.exists() and results is None:
        note = "results.json unreadable"

    job_id = record.get("job_id") or jobid.get("job_id")
    job_id = str(job_id) if job_id is not None else None
    if record:
        state = str(record.get("state") or "pending")
        exit_code = record.get("exit_code")
        if record.get("note"):
            note = "; ".join(x for x in (note, str(record["note"])) if x)
        if record.get("error"):
            note = "; ".join(x for x in (note, str(record["error"])) if x)
    elif jobid:
        state = str(jobid.get("state") or "SUBMITTED")
        exit_code = jobid.get("exit_code")
    elif results is not None or report:
        state, exit_code = "local", None
    else:
        state, exit_code = ("not-submitted" if job else "unknown"), None
    source = "recorded"
    if job_id and (state in _ACTIVE_HINT or state in ("SUBMITTED", "UNKNOWN")):
        info = probe.state(job_id)
        if info is not None:
            state, exit_code, source = info.state, info.exit_code, "slurm"

    head = _headline(results)
    verdict = head.pop("verdict", None)
    if verdict is None:
        verdict = _verdict(state, exit_code, False)
    attempts = record.get("attempts")
    return JobStatus(
        name=name or job_dir.name,
        job_dir=job_dir,
        job_id=job_id,
        state=state,
        state_source=source,
        exit_code=exit_code if isinstance(exit_code, int) else None,
        verdict=verdict,
        failed_role=report.get("failed_role"),
        error_signature=report.get("error_signature"),
        reason=str(report.get("reason") or ""),
        attempts=len(attempts) if isinstance(attempts, list) else (1 if jobid else 0),
        parameters=dict(record.get("parameters") or {}),
        note=note,
        endpoint=endpoint,
        **head,
    )


def status(path: Path | str, *, live: bool = True) -> list[JobStatus]:
    """Status of a job dir (one entry) or of every point of a sweep dir (manifest order).

    ``live``: ask SLURM for jobs that were not finished when last recorded (bounded; see
    :class:`_SlurmProbe`). Raises :class:`ConfigError` if ``path`` is neither kind of directory.
    """
    path = Path(path)
    probe = _SlurmProbe(enabled=live)
    if is_sweep_dir(path):
        from perfsanity.jobs.sweep import read_manifest

        manifest = read_manifest(path)
        out = []
        for p in manifest["points"]:
            job_dir = Path(p.get("job_dir") or p["name"])
            job_dir = job_dir if job_dir.is_absolute() else path / job_dir
            out.append(job_status(job_dir, name=p["name"], record=p, probe=probe))
        return out
    if is_job_dir(path):
        return [job_status(path, probe=probe)]
    raise ConfigError(str(path), "", f"not a job directory (no job.json/jobid.json/results.json) "
                                     f"nor a sweep directory (no {MANIFEST_FILE})")


# ------------------------------------------------------------------------------------------ tables


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def endpoint_line(endpoint: dict[str, Any]) -> str:
    """``endpoint URL (model M); stop: CMD`` of a manual job's endpoint.json."""
    stop = endpoint.get("stop")
    command = stop.get("command") if isinstance(stop, dict) else None
    return (f"endpoint {endpoint.get('url', '?')} (model {endpoint.get('model', '?')!r})"
            + (f"; stop: {command}" if command else ""))


def format_status(statuses: Sequence[JobStatus]) -> str:
    """Plain table: name, job, state, verdict, best out tok/s, TTFT/ITL p50 at the top concurrency."""
    show_tries = any(s.attempts > 1 for s in statuses)
    headers = ["NAME", "JOB", "STATE", "VERDICT", "OUT TOK/S", "TTFT P50 MS", "ITL P50 MS", "@CONC", "FAILED ROLE"]
    if show_tries:
        headers.append("TRIES")
    rows = []
    for s in statuses:
        state = s.state + ("" if s.exit_code in (None, 0) else f" ({s.exit_code})")
        row = [
            s.name, s.job_id or "-", state, s.verdict or "-",
            _num(s.best_output_tps), _num(s.ttft_p50_ms), _num(s.itl_p50_ms, 2),
            str(s.max_concurrency) if s.max_concurrency is not None else "-",
            s.failed_role or "-",
        ]
        if show_tries:
            row.append(str(s.attempts))
        rows.append(row)
    text = format_table(headers, rows)
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.state] = counts.get(s.state, 0) + 1
    text += f"\n{len(statuses)} job(s): " + ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
    notes = [f"{s.name}: {s.note}" for s in statuses if s.note]
    notes += [f"{s.name}: {s.reason}" for s in statuses
              if s.reason and (s.verdict not in (None, "passed") or s.reason.startswith(STOPPED_BY_USER))]
    notes += [f"{s.name}: {endpoint_line(s.endpoint)}" for s in statuses if s.endpoint]
    if notes:
        text += "\n" + "\n".join(notes)
    return text


# -------------------------------------------------------------------------------------------- logs


def role_log_files(job_dir: Path) -> dict[str, list[Path]]:
    """Role → its log files: ``logs/<ROLE>.log``, ``logs/<ROLE>.server.log``, … and ``slurm``
    (the batch script's ``slurm-<id>.out``)."""
    roles: dict[str, list[Path]] = {}
    logs_dir = job_dir / "logs"
    if logs_dir.is_dir():
        for path in sorted(logs_dir.iterdir()):
            if path.is_file() and path.suffix in (".log", ".out", ".txt"):
                roles.setdefault(path.name.split(".", 1)[0], []).append(path)
    for path in sorted(job_dir.glob("slurm-*.out")):
        roles.setdefault("slurm", []).append(path)
    for files in roles.values():  # main log first, then the others
        files.sort(key=lambda p: (p.name.count("."), p.name))
    return roles


def _size(path: Path) -> str:
    try:
        n = path.stat().st_size
    except OSError:
        return "?"
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _job_logs(job_dir: Path, role: str | None, lines: int) -> str:
    roles = role_log_files(job_dir)
    if role is None:
        if not roles:
            return f"{job_dir}: no logs yet"
        rows = [[r, ", ".join(f"{p.relative_to(job_dir)} ({_size(p)})" for p in files)] for r, files in roles.items()]
        return format_table(["ROLE", "LOG FILES"], rows)
    files = _match_role(roles, role)
    if files is None:
        known = ", ".join(roles) or "none yet"
        raise ConfigError(str(job_dir), "", f"no logs for role {role!r}; roles with logs: {known}")
    parts = []
    for path in files:
        parts.append(f"==> {path.relative_to(job_dir)} <==")
        parts.append(tail(path, lines) or "(empty)")
    return "\n".join(parts)


def _match_role(roles: dict[str, list[Path]], role: str) -> list[Path] | None:
    for name, files in roles.items():
        if name.lower() == role.lower():
            return files
    for files in roles.values():  # a file name such as GEN_0.server.log
        for path in files:
            if path.name == role:
                return [path]
    return None


def logs(path: Path | str, role: str | None = None, lines: int = DEFAULT_LINES) -> str:
    """List the roles of a job dir with their log files, or the redacted tail (``lines`` lines per
    file) of one role's logs. For a sweep dir: the same for every point."""
    path = Path(path)
    if lines < 1:
        raise ConfigError(None, "-n", f"must be >= 1, got {lines}")
    if is_sweep_dir(path):
        from perfsanity.jobs.sweep import read_manifest

        out = []
        for p in read_manifest(path)["points"]:
            job_dir = Path(p.get("job_dir") or p["name"])
            job_dir = job_dir if job_dir.is_absolute() else path / job_dir
            out.append(f"=== {p['name']} ({p.get('state')}) ===")
            try:
                out.append(_job_logs(job_dir, role, lines))
            except ConfigError as exc:
                out.append(exc.message)
        return "\n".join(out)
    if not path.is_dir():
        raise ConfigError(str(path), "", "not a directory")
    if not is_job_dir(path) and not (path / "logs").is_dir():
        raise ConfigError(str(path), "", f"not a job directory nor a sweep directory (no {MANIFEST_FILE})")
    return _job_logs(path, role, lines)


# --------------------------------------------------------------------------------------------- CLI


def cmd_status(args: argparse.Namespace) -> int:
    statuses = status(args.path, live=not args.no_slurm)
    if args.json:
        print(json.dumps([s.to_dict() for s in statuses], indent=2, default=str))
    else:
        print(format_status(statuses))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    print(logs(args.path, args.role, args.lines))
    return 0


def register(subparsers: Any) -> None:
    """Add ``status`` and ``logs`` to an argparse subparsers object (handlers in ``func``)."""
    p = subcommand(
        subparsers, "status", cmd_status,
        help="state and headline figures of a job dir or of every point of a sweep dir",
        description="Show each job's SLURM state (asked live when possible, else as recorded), verdict, "
                    "best output tok/s, TTFT/ITL p50 at the highest concurrency and the failed role.",
    )
    p.add_argument("path", metavar="DIR", help="job directory or sweep directory")
    p.add_argument("--no-slurm", action="store_true", help="do not ask SLURM; show the recorded state")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lg = subcommand(
        subparsers, "logs", cmd_logs,
        help="list a job's roles and log files, or tail one role's logs",
        description="Without ROLE: the roles of DIR with their log files. With ROLE (GEN_0, CTX_1, "
                    "DISAGG_SERVER, BENCHMARK, install, slurm, or a file name): the last lines of its "
                    "logs, secrets redacted. For a sweep dir, every point.",
    )
    lg.add_argument("path", metavar="DIR", help="job directory or sweep directory")
    lg.add_argument("role", metavar="ROLE", nargs="?", help="role whose logs to tail")
    lg.add_argument("-n", "--lines", type=positive_int, default=DEFAULT_LINES, help=f"lines per file (default {DEFAULT_LINES})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m perfsanity.jobs.jobdir", description="Job and sweep directories.")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
