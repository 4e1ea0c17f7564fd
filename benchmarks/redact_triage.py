"""Redaction and TERM-trap triage on a 100 MB log with pathological lines.

    python3 benchmarks/redact_triage.py [--mb 100] [--json]

Writes a job dir whose role logs total ``--mb`` MB: ordinary log lines mixed with lines built to make
backtracking regexes quadratic (36 KB runs of ``a.``, ``x``, ``A_KEY="``, ``https://``, spaces,
``"a":``, ``hf_``; 200 KB in one), plus planted secrets. Then measures

* ``redact()`` over every log, in 1 MiB line-aligned chunks (MB/s, and the slowest single chunk);
* ``python3 -m perfsanity.run.triage --job-dir DIR`` as the SLURM TERM trap runs it (wall time, the
  interpreter's start included), whose bound is 5 s (SLURM's KillWait is 30 s);

and checks that no planted secret survives in either output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_header  # noqa: E402  (first: runs under the project venv)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perfsanity.common.redact import redact  # noqa: E402

SECRET = "hf_" + "Z" * 32
PATHOLOGICAL = ["a." * 18_000, "x" * 36_000, 'A_KEY="' * 5_000, "https://" * 4_500, " " * 36_000 + "x",
                '"a":' * 9_000, "hf_" * 12_000, "PASS_" * 7_200, "a:" * 18_000, "a." * 100_000]
ROLES = ["GEN_0", "GEN_1", "CTX_0", "CTX_1", "DISAGG_SERVER", "BENCHMARK", "install"]


def write_logs(job: Path, total_mb: int) -> int:
    logs = job / "logs"
    logs.mkdir(parents=True)
    per_role = total_mb * 1_000_000 // len(ROLES)
    ordinary = "".join(f"2026-12-02T00:00:{i % 60:02d} INFO request {i} done: 32 tokens in 0.5 s\n" for i in range(200))
    written = 0
    for role in ROLES:
        with (logs / f"{role}.log").open("w") as fh:
            size = 0
            k = 0
            while size < per_role:
                block = ordinary + PATHOLOGICAL[k % len(PATHOLOGICAL)] + f"\nexport HF_TOKEN={SECRET}\n"
                fh.write(block)
                size += len(block)
                k += 1
            tail = "\n".join(PATHOLOGICAL[:6]) + f"\nDB_PASSWORD={SECRET}\n"  # what triage's tail reads
            fh.write(tail)
            written += size + len(tail)
    return written


def time_redact(job: Path) -> dict:
    chunk_times, total_bytes, leaked = [], 0, False
    for path in sorted((job / "logs").glob("*.log")):
        with path.open() as fh:
            while True:
                chunk = fh.read(1 << 20)
                if not chunk:
                    break
                chunk += fh.readline()  # line-aligned
                t0 = time.perf_counter()
                out = redact(chunk)
                chunk_times.append(time.perf_counter() - t0)
                total_bytes += len(chunk)
                leaked |= SECRET in out
    total = sum(chunk_times)
    return {"bytes": total_bytes, "seconds": round(total, 2), "mb_per_s": round(total_bytes / 1e6 / total, 1),
            "slowest_chunk_s": round(max(chunk_times), 3), "chunks": len(chunk_times), "secret_left": leaked}


def time_triage(job: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "perfsanity.run.triage", "--job-dir", str(job), "--reason",
                           "job received SIGTERM"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    wall = time.perf_counter() - t0
    report = (job / "report.json").read_text() if (job / "report.json").exists() else ""
    return {"exit_code": proc.returncode, "wall_s": round(wall, 2), "bound_s": 5, "within_bound": wall <= 5,
            "secret_left": SECRET in report or SECRET in proc.stdout}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=100, help="total size of the role logs, MB")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    info = print_header("redact and triage on pathological logs", " ".join(sys.argv))
    with tempfile.TemporaryDirectory(prefix="redact-bench-") as tmp:
        job = Path(tmp) / "job"
        size = write_logs(job, args.mb)
        redact_res = time_redact(job)
        triage_res = time_triage(job)
    result = {"machine": info, "log_bytes": size, "redact": redact_res, "triage": triage_res}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"logs: {size / 1e6:.0f} MB in {len(ROLES)} role logs")
        print(f"redact: {redact_res['seconds']} s = {redact_res['mb_per_s']} MB/s; slowest 1 MiB chunk "
              f"{redact_res['slowest_chunk_s']} s; secret left: {redact_res['secret_left']}")
        print(f"triage (TERM trap): {triage_res['wall_s']} s wall (bound 5 s); exit {triage_res['exit_code']}; "
              f"secret left: {triage_res['secret_left']}")
    ok = not redact_res["secret_left"] and not triage_res["secret_left"] and triage_res["within_bound"]
    return 0 if ok and triage_res["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
