"""Triage: what failed and the evidence, gathered from a job dir into ``report.json`` and stdout.

Called by the supervisor (perfsanity.run.supervisor) when it ends a job itself (a role failed first,
allocation, install, deadline, SIGTERM from scancel or the time limit), by the results pipeline and the
local executor's summary, and from the command line. Everything it writes is redacted.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from perfsanity.common.files import write_atomic
from perfsanity.common.processes import tail
from perfsanity.common.redact import redact_data
from perfsanity.run.rendezvous import Rendezvous

_SIGNATURES = [
    (re.compile(r"CUDA out of memory|OutOfMemoryError", re.I), "oom"),
    (re.compile(r"Address already in use", re.I), "port-in-use"),
    (re.compile(r"Traceback \(most recent call last\)"), "python-exception"),
    (re.compile(r"NCCL (?:error|WARN)", re.I), "nccl"),
    (re.compile(r"waited [\d.]+s for", re.I), "timeout"),
    (re.compile(r"exited with code|died with exit code", re.I), "process-exit"),
]


def role_logs(job_dir: Path) -> dict[str, Path]:
    """role name -> its main log (logs/<ROLE>.log), plus server logs."""
    logs = {}
    for path in sorted((job_dir / "logs").glob("*.log")):
        logs[path.stem] = path
    return logs


def error_signature(text: str) -> str | None:
    for pattern, name in _SIGNATURES:
        if pattern.search(text):
            return name
    return None


def triage(job_dir: Path, *, reason: str = "", lines: int = 30) -> dict:
    """Collect failures, signatures and redacted log tails; write ``report.json``; return it."""
    rdv = Rendezvous(job_dir / "rendezvous")
    failures = rdv.failures()
    status = rdv.status()
    tails = {name: tail(path, lines) for name, path in role_logs(job_dir).items()}
    # no role reported a failure, but the benchmark's status did (router never served, client died)
    bench_failures = [str(f) for f in ((status or {}).get("failures") or [])]
    failed_role = failures[0]["role"] if failures else ("BENCHMARK" if bench_failures else None)
    evidence = (failures[0].get("log_tail", "") if failures else "") or (tails.get(failed_role or "", ""))
    report = {
        "reason": reason,
        "failed_role": failed_role,
        "failures": failures,
        "benchmark_status": status,
        "error_signature": error_signature((failures[0]["message"] + "\n" + evidence) if failures
                                           else "\n".join([reason, *bench_failures])),
        "log_tails": tails,
    }
    report = redact_data(report)  # .failed/benchmark.status may be written by anyone: redact all
    write_atomic(job_dir / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def format_report(report: dict, *, max_roles: int = 12) -> str:
    out = [f"=== perfsanity triage: {report.get('reason') or 'job summary'}"]
    for f in report.get("failures", []):
        out.append(f"FAILED {f['role']}: {f['message']}")
    for name, text in list(report.get("log_tails", {}).items())[:max_roles]:
        if text:
            out.append(f"--- last lines of {name} ---\n{text}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perfsanity.run.triage", description="Summarise a failed job dir.")
    p.add_argument("--job-dir", required=True, type=Path)
    p.add_argument("--reason", default="")
    p.add_argument("--lines", type=int, default=30)
    args = p.parse_args(argv)
    report = triage(args.job_dir, reason=args.reason, lines=args.lines)
    print(format_report(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
