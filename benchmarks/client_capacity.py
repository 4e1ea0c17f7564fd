"""Client capacity: how many streamed tokens/s the benchmark client sustains per CPU core, side by
side with the other clients that can run here, and at what load it becomes the bottleneck.

    python3 benchmarks/client_capacity.py [--burst-concurrency 128] [--paced-concurrency 32 128 256]

Two servers (benchmarks/bench_server.py, SCHED_FIFO: it stands in for other hardware, but shares
the 2 cores):

* **burst** (``--zero-delay``): tokens as fast as possible. Events pile up in the socket, so the
  client reads many SSE events per recv — an upper bound of its per-token cost.
* **paced** (the law: TTFT 20 ms, ITL 20 ms): one token per stream every 20 ms, i.e. one small read
  per token as with a real server; offered load = concurrency / ITL tokens/s. The client is the
  bottleneck where delivered tokens/s falls below what the server would have sent for the client's
  own request timing, and where its ITL percentiles leave the law.

Per run: tokens/s delivered (server-counted tokens of completed requests over the client's
benchmark window), the client's CPU in that window summed over its process tree (/proc), and tokens
per CPU-second (= tokens/s one fully used core sustains). aiperf runs the harness's own command
(perfsanity.load.aiperf) as is ("default": aiperf picks max(1, int(0.75·cores) − 1) workers, 1 on
a 2-core box) and with ``--workers-max N`` (wN) and ``--request-rate R`` (+rateR: a cap far above the
achievable rate; it only stops aiperf's timing manager from busy-polling for free slots).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    BENCH,
    ServerHandle,
    SystemCpu,
    TreeCpuSampler,
    bench_server,
    fmt,
    load1,
    pct,
    print_header,
    read_jsonl,
    run_harness_aiperf,
    wait_for_low_load,
    wait_for_quiet,
)

PACED = ["--ttft-base-ms", "20", "--ttft-per-char-ms", "0", "--itl-ms", "20", "--realtime"]
BURST = ["--zero-delay", "--realtime"]
ITL_MS = 20.0


def variant_argv(variant: str) -> list[str]:
    extra: list[str] = []
    for part in variant.split("+"):
        if part.startswith("w"):
            extra += ["--workers-max", part[1:]]
        elif part.startswith("rate"):
            extra += ["--request-rate", part[4:]]
    return extra


def truth(log: Path, ids: set[str] | None) -> dict:
    recs = [r for r in read_jsonl(log) if r.get("complete") and (ids is None or r["request_id"] in ids)]
    late = [x / 1e3 for r in recs for x in r["late_us"]]
    return {"tokens": sum(r["n"] for r in recs), "late_p99_ms": pct(late, 99) if late else None}


@dataclass
class Measured:
    """One client run against a bench server: the server, its CPU sampler (stopped on exit), the
    1-minute load before, and the machine's CPU over the run (``SystemCpu.since()``, set on exit)."""

    srv: ServerHandle
    srv_cpu: TreeCpuSampler
    load_before: float
    machine: dict = field(default_factory=dict)


@contextmanager
def measured_server(kind: str, log: Path, args) -> Iterator[Measured]:
    """Wait for a quiet machine (``--quiet-wait-s``), start the ``kind`` (burst | paced) bench server
    logging to ``log``, and sample its CPU and the machine's for the body of the ``with``."""
    if args.quiet_wait_s > 0:
        wait_for_quiet(timeout_s=args.quiet_wait_s)
    load0 = load1()
    with bench_server(BURST if kind == "burst" else PACED, log=log) as srv:
        m = Measured(srv, TreeCpuSampler(srv.proc.pid).start(), load0)
        sys_cpu = SystemCpu()
        yield m
        m.machine = sys_cpu.since()
        m.srv_cpu.stop()


def run_aiperf(kind: str, conc: int, n_req: int, variant: str, osl: int, args, work: Path) -> dict:
    tag = f"{kind}-aiperf-c{conc}-{variant}"
    log = work / f"truth-{tag}.jsonl"
    with measured_server(kind, log, args) as m:
        oc = run_harness_aiperf(m.srv.url, concurrency=conc, num_prompts=n_req, out_dir=work / tag,
                                input_length=args.isl, output_length=osl, extra_argv=variant_argv(variant),
                                timeout_s=args.client_timeout)
    load0, machine, srv_cpu = m.load_before, m.machine, m.srv_cpu
    other = max(0.0, machine["busy_cores"] - (oc.cpu.total + srv_cpu.total) / machine["wall_s"])  # ±0.3 (ticks)
    out = {"kind": kind, "client": f"aiperf {variant}", "concurrency": conc, "requests": n_req, "load_before": load0,
           "load_after": load1(), "argv": " ".join(shlex.quote(a) for a in oc.argv), "wall_s": oc.wall_s,
           "cpu_total_s": oc.cpu.total, "procs": oc.cpu.max_procs, "other_cores": other,
           "steal_cores": machine["steal_cores"]}
    win = oc.window()
    if oc.result is None or win is None:
        out["error"] = oc.error or f"exit {oc.exit_code}"
        return out
    ids = {r["metadata"]["x_request_id"] for r in oc.records if not r.get("error")}
    t = truth(log, ids)
    dur = win[1] - win[0]
    cpu = oc.cpu.cpu_between(*win)
    out.update({"completed": oc.result.completed, "failed": oc.result.failed, "tokens": t["tokens"], "window_s": dur,
                "tok_s": t["tokens"] / dur, "reported_tok_s": oc.result.output_token_throughput, "cpu_s": cpu,
                "cores_used": cpu / dur, "tok_per_cpu_s": t["tokens"] / cpu if cpu > 0 else None,
                "server_cores": srv_cpu.cpu_between(*win) / dur, "server_late_p99_ms": t["late_p99_ms"],
                "itl_p50_ms": oc.result.itl.median, "itl_p99_ms": oc.result.itl.p99,
                "ttft_p50_ms": oc.result.ttft.median, "ttft_p99_ms": oc.result.ttft.p99})
    return out


def run_ref(kind: str, conc: int, n_req: int, osl: int, args, work: Path) -> dict:
    log = work / f"truth-{kind}-ref-c{conc}.jsonl"
    with measured_server(kind, log, args) as m:
        t0 = time.time()
        proc = subprocess.run([sys.executable, str(BENCH / "ref_client.py"), "--url", m.srv.url, "--concurrency",
                               str(conc), "--requests", str(n_req), "--prompt-chars", "512",
                               "--max-tokens", str(osl)], capture_output=True, text=True, timeout=args.client_timeout)
        t1 = time.time()
    load0, machine, srv_cpu = m.load_before, m.machine, m.srv_cpu
    out = {"kind": kind, "client": "reference asyncio", "concurrency": conc, "requests": n_req, "load_before": load0,
           "load_after": load1(), "wall_s": t1 - t0, "procs": 1, "steal_cores": machine["steal_cores"]}
    if proc.returncode != 0:
        out["error"] = proc.stderr[-500:] or proc.stdout[-500:]
        return out
    r = json.loads(proc.stdout)
    t = truth(log, None)
    out.update({"completed": r["completed"], "failed": r["failed"], "tokens": t["tokens"], "window_s": r["duration_s"],
                "tok_s": t["tokens"] / r["duration_s"], "reported_tok_s": r["output_token_throughput"],
                "cpu_s": r["cpu_s"], "cores_used": r["cpu_s"] / r["wall_s"],
                "tok_per_cpu_s": t["tokens"] / r["cpu_s"] if r["cpu_s"] else None,
                "server_cores": srv_cpu.cpu_between(t0, t1) / (t1 - t0), "cpu_total_s": r["cpu_s"],
                "other_cores": max(0.0, machine["busy_cores"] - (r["cpu_s"] + srv_cpu.total) / machine["wall_s"]),
                "server_late_p99_ms": t["late_p99_ms"], "itl_p50_ms": r["itl_ms"]["p50"], "itl_p99_ms": r["itl_ms"]["p99"],
                "ttft_p50_ms": r["ttft_ms"]["p50"], "ttft_p99_ms": r["ttft_ms"]["p99"]})
    return out


def print_rows(rows: list[dict], paced: bool) -> None:
    hdr = ["client", "conc", "ok/req", "tok/s delivered"]
    if paced:
        hdr += ["offered tok/s", "TTFT p50/p99 ms (law 20)", "ITL p50/p99 ms (law 20)"]
    hdr += ["client cores", "tok per client CPU-s", "server cores", "wall s (CPU s)", "others / steal cores"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---" for _ in hdr) + "|")
    for r in rows:
        if "error" in r:
            print(f"| {r['client']} | {r['concurrency']} | FAILED: {r['error'].strip().splitlines()[0][:140]} |")
            continue
        cells = [r["client"], str(r["concurrency"]), f"{r['completed']}/{r['requests']}", f"{r['tok_s']:.0f}"]
        if paced:
            cells += [f"{r['concurrency'] * 1000 / ITL_MS:.0f}", f"{fmt(r['ttft_p50_ms'], 1)}/{fmt(r['ttft_p99_ms'], 1)}",
                      f"{fmt(r['itl_p50_ms'], 2)}/{fmt(r['itl_p99_ms'], 2)}"]
        cells += [f"{r['cores_used']:.2f}", fmt(r["tok_per_cpu_s"], 0), f"{r['server_cores']:.2f}",
                  f"{r['wall_s']:.1f} ({r['cpu_total_s']:.1f})", f"{r['other_cores']:.2f} / {r['steal_cores']:.2f}"]
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--burst-concurrency", type=int, nargs="*", default=[128])
    p.add_argument("--paced-concurrency", type=int, nargs="*", default=[32, 128, 256])
    p.add_argument("--variants", nargs="+", default=["default", "w2", "w2+rate5000"],
                   help="aiperf variants: default (the harness's command) | wN (--workers-max N) | +rateR")
    p.add_argument("--paced-variants", nargs="+", default=["default", "w2+rate5000"])
    p.add_argument("--burst-tokens", type=int, default=400000, help="burst: requests = tokens / osl")
    p.add_argument("--burst-osl", type=int, default=256)
    p.add_argument("--paced-osl", type=int, default=64)
    p.add_argument("--paced-rounds", type=int, default=3, help="paced: requests = rounds × concurrency")
    p.add_argument("--isl", type=int, default=128)
    p.add_argument("--client-timeout", type=float, default=240.0)
    p.add_argument("--wait-load-s", type=float, default=0.0)
    p.add_argument("--quiet-wait-s", type=float, default=60.0,
                   help="before each run wait up to this long until other processes use < 0.25 cores (0 = off)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    print_header("Client capacity: streamed tokens/s per core",
                 "python3 benchmarks/client_capacity.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    wait_for_low_load(1.0, args.wait_load_s)
    print("Other clients: sglang bench_serving cannot run here (`import sglang.bench_serving` runs sglang/__init__, "
          "which imports torch; torch 2.14.1's PyPI wheel depends on the CUDA 13 runtime wheels — no CPU wheel "
          "on PyPI); TensorRT-LLM benchmark_serving needs tensorrt_llm (CUDA). Baseline: the in-repo reference "
          "asyncio client (benchmarks/ref_client.py, one process).\n", flush=True)
    work = args.out or Path(tempfile.mkdtemp(prefix="capacity-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    burst, paced = [], []
    for conc in args.burst_concurrency:
        n = max(2 * conc, -(-args.burst_tokens // args.burst_osl))
        for v in args.variants:
            print(f"... burst: aiperf {v} c{conc} ({n} requests × {args.burst_osl} tokens)", flush=True)
            burst.append(run_aiperf("burst", conc, n, v, args.burst_osl, args, work))
        print(f"... burst: reference client c{conc}", flush=True)
        burst.append(run_ref("burst", conc, n, args.burst_osl, args, work))
    for conc in args.paced_concurrency:
        n = args.paced_rounds * conc
        for v in args.paced_variants:
            print(f"... paced: aiperf {v} c{conc} ({n} requests × {args.paced_osl} tokens)", flush=True)
            paced.append(run_aiperf("paced", conc, n, v, args.paced_osl, args, work))
        print(f"... paced: reference client c{conc}", flush=True)
        paced.append(run_ref("paced", conc, n, args.paced_osl, args, work))
    (work / "capacity.json").write_text(json.dumps(burst + paced, indent=2) + "\n")
    print(f"\n(total {time.monotonic() - t0:.0f} s; artifacts in {work})")
    if burst:
        print(f"\n## burst server (zero delay), ISL {args.isl}, OSL {args.burst_osl}")
        print_rows(burst, paced=False)
    if paced:
        print(f"\n## paced server (TTFT 20 ms, ITL 20 ms), ISL {args.isl}, OSL {args.paced_osl}, "
              f"{args.paced_rounds} rounds")
        print_rows(paced, paced=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
