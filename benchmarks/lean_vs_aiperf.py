"""Cross-validation: the lean built-in client (``client: perfsanity``) against aiperf, on the same server.

    python3 benchmarks/lean_vs_aiperf.py [--concurrency 1 4 8] [--requests 24 ...] [--json]

Per concurrency, one law server (benchmarks/bench_server.py; TTFT = ``--ttft-base-ms`` whatever the
prompt, tokens ``--itl-ms`` apart) serves aiperf (the BENCHMARK role's exact command and parser) and
then the lean client (its exact command and parser), each with the same requests, ISL and OSL. For
each point it reports both clients' TTFT p50/p99, TPOT p50, ITL p50 and output tok/s, the lean
client's difference from aiperf, the start-up of each (process spawn → first request), and aiperf's
own validity mark (``perfsanity.load.validity.mark`` from its client_stats, its CPU and the node's busy
share while it ran, as the BENCHMARK role judges a point). ``agrees`` is true
when every compared metric is within ``--tolerance-pct`` (2 %) or aiperf marked the point
client_saturated (then aiperf, not the lean client, is the suspect).
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
from _common import (  # noqa: E402
    ROOT,
    bench_server,
    fmt,
    fmt_pct,
    load1,
    print_header,
    read_jsonl,
    rel_err,
    run_harness_aiperf,
    tiny_model,
)

sys.path.insert(0, str(ROOT))
from perfsanity.common.processes import NodeBusy, node_cores  # noqa: E402
from perfsanity.load.base import ClientRun  # noqa: E402
from perfsanity.load.perfsanity_client import CLIENT as LEAN  # noqa: E402
from perfsanity.load.validity import mark  # noqa: E402

METRICS = ("ttft_p50", "ttft_p99", "tpot_p50", "itl_p50", "tput")
#: compared within the tolerance; the tails (p99) are reported, not judged: one late wake-up moves them
JUDGED = ("ttft_p50", "tpot_p50", "itl_p50", "tput")


def figures(res) -> dict:
    return {"ttft_p50": res.ttft.median, "ttft_p99": res.ttft.p99, "tpot_p50": res.tpot.median,
            "itl_p50": res.itl.median, "tput": res.output_token_throughput}


def run_lean(url: str, *, concurrency: int, num_prompts: int, out_dir: Path, isl: int, osl: int) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    run = ClientRun(url=url, model_name="tiny", tokenizer=tiny_model(), concurrency=concurrency,
                    num_prompts=num_prompts, input_length=isl, output_length=osl, streaming=True,
                    request_timeout_s=120, random_seed=0, warmup_requests=0, dataset_file=None, out_dir=out_dir,
                    total_gpus=0)
    t0 = time.time()
    proc = subprocess.run(list(LEAN.command(run).argv), cwd=out_dir, capture_output=True, text=True, timeout=600)  # noqa: S603
    if proc.returncode != 0:
        return {"error": (proc.stdout + proc.stderr)[-800:]}
    return {"result": LEAN.parse(run), "spawned_at": t0}


def first_request_at(log: Path) -> float | None:
    recv = [r["recv_ns"] / 1e9 for r in read_jsonl(log) if r.get("recv_ns")]
    return min(recv) if recv else None


def point(conc: int, n_req: int, args, work: Path) -> dict:
    server_args = ["--ttft-base-ms", str(args.ttft_base_ms), "--ttft-per-char-ms", "0", "--itl-ms", str(args.itl_ms)]
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"concurrency": conc, "requests": n_req, "load_before": load1()}
    alog = work / f"truth-aiperf-c{conc}.jsonl"
    with bench_server(server_args, log=alog) as srv:
        t0 = time.time()
        busy = NodeBusy()
        oc = run_harness_aiperf(srv.url, concurrency=conc, num_prompts=n_req, out_dir=work / f"aiperf-c{conc}",
                                input_length=args.isl, output_length=args.osl, timeout_s=args.client_timeout)
        node_busy = busy.share()
    if oc.result is None:
        return out | {"error": f"aiperf: {oc.error or oc.exit_code}"}
    llog = work / f"truth-lean-c{conc}.jsonl"
    with bench_server(server_args, log=llog) as srv:
        lean = run_lean(srv.url, concurrency=conc, num_prompts=n_req, out_dir=work / f"lean-c{conc}", isl=args.isl,
                        osl=args.osl)
    if "error" in lean:
        return out | {"error": f"lean: {lean['error']}"}
    win = oc.window()
    stats = dict(oc.result.client_stats, node_busy_share=node_busy)  # as the BENCHMARK role judges it
    if win:
        stats["client_cores"] = oc.cpu.cpu_between(*win) / max(win[1] - win[0], 1e-9)
    judged = mark(oc.result.model_copy(update={"client_stats": stats}), node_cores=node_cores())
    a, b = figures(oc.result), figures(lean["result"])
    diff = {k: rel_err(b[k], a[k]) for k in METRICS}
    outside = [k for k in JUDGED if diff[k] is None or abs(diff[k]) > args.tolerance_pct]
    a_first, l_first = first_request_at(alog), first_request_at(llog)
    return out | {
        "aiperf": a, "lean": b, "lean_vs_aiperf_pct": diff, "outside_tolerance": outside,
        "aiperf_validity": judged.validity, "aiperf_evidence": list(judged.evidence),
        "agrees": not outside or judged.validity == "client_saturated",
        "startup_s": {"aiperf": (a_first - t0) if a_first else None,
                      "lean": (l_first - lean["spawned_at"]) if l_first else None},
        "load_after": load1(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--requests", type=int, nargs="*", help="requests per concurrency (default 24 × concurrency^0.5)")
    p.add_argument("--isl", type=int, default=128)
    p.add_argument("--osl", type=int, default=64)
    p.add_argument("--ttft-base-ms", type=float, default=50.0)
    p.add_argument("--itl-ms", type=float, default=20.0)
    p.add_argument("--tolerance-pct", type=float, default=2.0)
    p.add_argument("--client-timeout", type=float, default=300.0)
    p.add_argument("--out", type=Path, help="keep artifacts here (default: a temp dir)")
    p.add_argument("--json", action="store_true", help="print the points as one JSON object at the end")
    args = p.parse_args(argv)
    reqs = args.requests or [max(24, int(24 * c ** 0.5)) for c in args.concurrency]
    if len(reqs) != len(args.concurrency):
        p.error("--requests needs one value per --concurrency")
    header = print_header("lean client vs aiperf, same law server", " ".join(sys.argv[1:]))
    work = args.out or Path(tempfile.mkdtemp(prefix="lean-vs-aiperf-"))
    points = [point(c, n, args, work / f"c{c}") for c, n in zip(args.concurrency, reqs, strict=True)]
    print(f"{'conc':>4}  {'metric':<9} {'aiperf':>9} {'lean':>9} {'lean−aiperf':>11}")
    for pt in points:
        if "error" in pt:
            print(f"{pt['concurrency']:>4}  error: {pt['error']}")
            continue
        for k in METRICS:
            print(f"{pt['concurrency']:>4}  {k:<9} {fmt(pt['aiperf'][k]):>9} {fmt(pt['lean'][k]):>9} "
                  f"{fmt_pct(pt['lean_vs_aiperf_pct'][k]):>11}")
        su = pt["startup_s"]
        print(f"      aiperf {pt['aiperf_validity']}; start-up aiperf {fmt(su['aiperf'])} s, lean {fmt(su['lean'])} s; "
              f"agrees: {pt['agrees']} (load {pt['load_before']:.1f} → {pt['load_after']:.1f})")
    if args.json:
        print(json.dumps({"header": header, "tolerance_pct": args.tolerance_pct, "points": points}, default=str))
    return 0 if all("error" not in pt for pt in points) else 1


if __name__ == "__main__":
    sys.exit(main())
