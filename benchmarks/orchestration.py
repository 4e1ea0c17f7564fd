"""Orchestration overhead: job start → first benchmark request, minus the servers' own time to ready.

    python3 benchmarks/orchestration.py [--mode local slurm] [--runs 1] [--json]
    python3 benchmarks/orchestration.py --side-by-side [--runs 3] [--json]

Runs the CPU stand-in job (test_configs/disagg/perf/mocker-ctx1-gen1.yaml, one concurrency, one
round) through ``submit.py --local`` and/or ``submit.py --cluster local-slurm --submit --wait`` and
rebuilds its timeline from:

* a /proc tracer (every 20 ms: each new process's start time from /proc/<pid>/stat, its command line,
  when it disappeared) — spawn/exit of submit, install, each role's bash → pytest, each server, aiperf;
* ``rendezvous/<ROLE>.<rank>.started`` (role code entered), ``<ROLE>.addr`` (mtime = published,
  ``ready_s``), the servers' own logs (Dynamo's UTC timestamps: when each server was able to serve),
  aiperf's ``logs/aiperf.log`` and ``profile_export.jsonl`` (first request).

Overhead = (first request − submit start) − (slowest server's own spawn→ready). Also reported:
the servers' critical path as launched (the frontend is started only after the workers published).
Component micro-timings (interpreter, harness import, pytest collection) are measured too.

``--side-by-side``: the mocker 2 ctx + 2 gen job (test_configs/disagg/perf/mocker-ctx2-gen2.yaml, one
concurrency, one round) submitted in TensorRT-LLM's current submit.py form on the local SLURM, once
with our draft and once with upstream's (the behavioural stand-in tests/fixtures/trtllm_draft, which
starts upstream's srun steps with its 5 s pauses), alternating; submit.py start → first benchmark
request (aiperf's first ``request_start_ns``) for both, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CLK_TCK,
    ROOT,
    load1,
    print_header,
    read_jsonl,
    stop_tree,
    wait_for_low_load,
    wait_for_quiet,
)

CONFIG = "test_configs/disagg/perf/mocker-ctx1-gen1.yaml"
CLUSTER = "test_configs/clusters/local-slurm.yaml"
SETS = ["--set", "benchmark.concurrency_list=1", "--set", "benchmark.multi_round=1", "--set", "benchmark.repeats=1"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")


# ----------------------------------------------------------------------------------------- tracer


def _boot_offset() -> float:
    """wall-clock time of boot (float), so /proc starttime ticks convert to wall time."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


class ProcTracer:
    """Every ``period_s``: every process not seen before (start time, ppid, latest cmdline) and when
    each one born after the tracer started disappeared."""

    def __init__(self, period_s: float = 0.02) -> None:
        self.period = period_s
        self.procs: dict[int, dict] = {}
        self.t0 = time.time()
        self.boot = _boot_offset()
        self._old: set[int] = set(int(d) for d in os.listdir("/proc") if d.isdigit())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self, pid: int) -> dict | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return None
        rest = stat.rsplit(")", 1)[1].split()
        return {"pid": pid, "ppid": int(rest[1]), "start": self.boot + int(rest[19]) / CLK_TCK, "cmd": cmd,
                "seen": time.time(), "gone": None}

    def _run(self) -> None:
        while not self._stop.is_set():
            now_pids = set()
            for d in os.listdir("/proc"):
                if not d.isdigit():
                    continue
                pid = int(d)
                now_pids.add(pid)
                if pid in self._old:
                    continue
                rec = self.procs.get(pid)
                if rec is None:
                    rec = self._read(pid)
                    if rec is not None:
                        self.procs[pid] = rec
                elif rec["gone"] is None and rec.get("cmd_final") is None:
                    # exec() changes the command line (slurm_run.sh execs pytest): keep the latest
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                        if cmd.strip() and cmd.strip() != rec["cmd"]:
                            rec.setdefault("cmds", [rec["cmd"]]).append(cmd.strip())
                            rec["cmd"] = cmd.strip()
                    except OSError:
                        pass
            now = time.time()
            for pid, rec in self.procs.items():
                if rec["gone"] is None and pid not in now_pids:
                    rec["gone"] = now
            self._stop.wait(self.period)

    def start(self) -> ProcTracer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def find(self, pattern: str, *, within: set[int] | None = None) -> list[dict]:
        rx = re.compile(pattern)
        out = [r for r in self.procs.values() if any(rx.search(c) for c in r.get("cmds", [r["cmd"]]))]
        if within is not None:
            out = [r for r in out if r["pid"] in within]
        return sorted(out, key=lambda r: r["start"])

    def descendants(self, roots: list[int]) -> set[int]:
        kids: dict[int, list[int]] = {}
        for r in self.procs.values():
            kids.setdefault(r["ppid"], []).append(r["pid"])
        out, todo = set(), list(roots)
        while todo:
            p = todo.pop()
            if p in out:
                continue
            out.add(p)
            todo.extend(kids.get(p, ()))
        return out

    def ancestors(self, pid: int) -> list[int]:
        out = []
        while pid in self.procs:
            out.append(pid)
            pid = self.procs[pid]["ppid"]
        return out


# ------------------------------------------------------------------------------------- job dir data


def all_cmds(rec: dict) -> str:
    """Every command line a process had (exec and setproctitle change it), joined."""
    return " \n ".join(rec.get("cmds", [rec["cmd"]]))


def iso_ts(line: str) -> float | None:
    m = ISO.match(ANSI.sub("", line))
    if not m:
        return None
    return datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC).timestamp()


def first_match(path: Path, needle: str) -> float | None:
    try:
        for line in path.read_text(errors="replace").splitlines():
            if needle in line:
                ts = iso_ts(line)
                if ts is not None:
                    return ts
    except OSError:
        pass
    return None


def last_before(path: Path, needles: list[str], limit: float) -> float | None:
    """Latest timestamp among the first occurrences of ``needles`` (all must be present)."""
    found = []
    for n in needles:
        t = first_match(path, n)
        if t is None or t > limit:
            return None
        found.append(t)
    return max(found)


def aiperf_log_times(path: Path) -> dict[str, float]:
    marks = {"cli_start": "Starting AIPerf System", "tokenizer_prefetched": "tokenizer cached",
             "services_registered": "System state: initializing -> configuring",
             "tokenizer_configured": "Tokenizer(s) configured", "dataset_configured": "Dataset configured",
             "all_configured": "All services configured", "profiling_started": "AIPerf System is PROFILING"}
    out: dict[str, float] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        for key, needle in marks.items():
            if key not in out and needle in line:
                try:
                    out[key] = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + float("0" + line[19:23])
                except ValueError:
                    pass
    return out


def analyse(job: Path, tracer: ProcTracer, t_submit: float, stdout_lines: list[tuple[float, str]]) -> dict:
    rdv = job / "rendezvous"
    started = {}
    for f in rdv.glob("*.started"):
        d = json.loads(f.read_text())
        started[d["role"]] = d["time"]
    addrs = {}
    for f in rdv.glob("*.addr"):
        d = json.loads(f.read_text())
        addrs[d["role"]] = {"published": f.stat().st_mtime, "ready_s": d.get("ready_s")}
    records = [r for f in (job / "client" / "c1").glob("**/profile_export.jsonl") for r in read_jsonl(f)]
    first_req = min((r["metadata"]["request_start_ns"] for r in records), default=None)
    first_req = first_req / 1e9 if first_req else None
    # client: perfsanity (perfsanity/load/lean.py) writes the wall time of its first request
    lean = [json.loads(f.read_text()).get("first_request_unix") for f in (job / "client" / "c1").glob("**/perfsanity_client.json")]
    if first_req is None and any(lean):
        first_req = min(t for t in lean if t)

    jd = str(job)
    # our processes: everything whose command line names the job dir, their ancestors (up to the
    # submit process / slurmstepd) and all their descendants
    anchors = [r["pid"] for r in tracer.procs.values() if jd in all_cmds(r)]
    ours: set[int] = set(tracer.descendants(anchors))
    for a in anchors:
        ours.update(tracer.ancestors(a))
    ours = tracer.descendants(list(ours))

    def one(pattern: str) -> dict | None:
        found = tracer.find(pattern, within=ours)
        return found[0] if found else None

    tl: dict = {"submit_start": t_submit, "first_request": first_req}
    inst = one(r"perfsanity\.install")
    if inst:
        tl["install_spawn"], tl["install_exit"] = inst["start"], inst["gone"]
    # SLURM: the batch script is the parent of the install step's srun (tasks run under slurmstepd)
    srun_inst = one(r"srun .*--job-name=install")
    if srun_inst and srun_inst["ppid"] in tracer.procs:
        tl["batch_script_spawn"] = tracer.procs[srun_inst["ppid"]]["start"]
        tl["srun_install_spawn"] = srun_inst["start"]
    roles = {}
    for role in ("GEN_0", "CTX_0", "DISAGG_SERVER", "BENCHMARK"):
        pyt = one(rf"pytest .*junit-{role}-0\.xml")
        info: dict = {}
        if pyt:
            info["role_spawn"] = pyt["start"]  # bash slurm_run.sh → exec pytest: same pid
            info["role_exit"] = pyt["gone"]
            kids = tracer.descendants([pyt["pid"]]) - {pyt["pid"]}
            srv = [tracer.procs[k] for k in kids if re.search(r"dynamo\.(mocker|frontend)", all_cmds(tracer.procs[k]))]
            if srv:
                s = min(srv, key=lambda r: r["start"])
                info["server_spawn"] = s["start"]
            broker = [tracer.procs[k] for k in kids if "zmq" in all_cmds(tracer.procs[k]) and " -c " in all_cmds(tracer.procs[k])]
            if broker:
                info["broker_spawn"] = min(b["start"] for b in broker)
            aip = [tracer.procs[k] for k in kids
                   if re.search(r"aiperf profile|perfsanity/load/lean\.py", all_cmds(tracer.procs[k]))]
            if aip:
                info["aiperf_spawn"] = min(a["start"] for a in aip)  # its forked services share the cmdline
        if role in started:
            info["started"] = started[role]
        if role in addrs:
            info.update(addrs[role])
        log = job / "logs" / f"{role}.server.log"
        limit = info.get("published", 1e12)
        if role in ("GEN_0", "CTX_0"):
            info["self_ready"] = first_match(log, "Registered endpoint")
            info["health_bound"] = first_match(log, "system status server bound to")
        elif role == "DISAGG_SERVER":
            info["http_up"] = first_match(log, "Starting HTTP") or first_match(log, "http service")
            info["self_ready"] = last_before(log, ["Completions is ready", "Prefill router target activated"], 1e12)
            info["ping_received"] = first_match(log, "request received")
        roles[role] = info
        del limit
    tl["roles"] = roles
    bench = roles.get("BENCHMARK", {})
    if "aiperf_spawn" in bench:
        a_log = aiperf_log_times(job / "client" / "c1" / "logs" / "aiperf.log")
        tl["aiperf"] = a_log
    tl["stdout"] = [(round(t - t_submit, 3), s) for t, s in stdout_lines[:80]]
    tl["processes"] = [{"pid": p["pid"], "ppid": p["ppid"], "start": round(p["start"] - t_submit, 3),
                        "seen": round(p["seen"] - t_submit, 3),
                        "gone": None if p["gone"] is None else round(p["gone"] - t_submit, 3),
                        "cmd": all_cmds(p)[:300]} for p in sorted((tracer.procs[i] for i in ours), key=lambda r: r["start"])]
    return tl


def breakdown(tl: dict) -> dict:
    """Critical-path segments (seconds) and the headline overhead."""
    r = tl["roles"]
    t0 = tl["submit_start"]
    seg: list[tuple[str, float | None]] = []

    def d(a, b):
        return None if a is None or b is None else b - a

    workers = [x for x in ("GEN_0", "CTX_0") if x in r]
    fe, bm = r.get("DISAGG_SERVER", {}), r.get("BENCHMARK", {})
    own = {}
    for w in [*workers, "DISAGG_SERVER"]:
        own[w] = d(r[w].get("server_spawn"), r[w].get("self_ready"))
    slow_w = max(workers, key=lambda w: r[w].get("published") or 0)
    sw = r[slow_w]
    first_role = min((r[x].get("role_spawn") for x in r if r[x].get("role_spawn")), default=None)
    if "batch_script_spawn" in tl:
        seg.append(("submit.py → batch script starts (sbatch + SLURM scheduling)", d(t0, tl["batch_script_spawn"])))
        seg.append(("batch script → install step spawned (srun)", d(tl["batch_script_spawn"], tl.get("install_spawn"))))
    else:
        seg.append(("submit.py start → install step spawned (validate, job dir, launch.sh)", d(t0, tl.get("install_spawn"))))
    seg.append(("install step (python -m perfsanity.run.install: tools + tiny model check)",
                d(tl.get("install_spawn"), tl.get("install_exit"))))
    seg.append(("install exit → role processes spawned", d(tl.get("install_exit"), first_role)))
    seg.append((f"{slow_w}: spawn → role code entered (bash, pytest start + collection, imports, config)",
                d(sw.get("role_spawn"), sw.get("started"))))
    seg.append((f"{slow_w}: role code → server spawned (tool env, model, env)", d(sw.get("started"), sw.get("server_spawn"))))
    seg.append((f"{slow_w}: server's own spawn → ready [server time]", own.get(slow_w)))
    seg.append((f"{slow_w}: server ready → address published (port discovery + health polling)",
                d(sw.get("self_ready"), sw.get("published"))))
    seg.append(("DISAGG_SERVER: last worker published → frontend spawned (rendezvous poll, broker)",
                d(sw.get("published"), fe.get("server_spawn"))))
    seg.append(("DISAGG_SERVER: frontend's own spawn → ready [server time]", own.get("DISAGG_SERVER")))
    seg.append(("DISAGG_SERVER: frontend ready → address published", d(fe.get("self_ready"), fe.get("published"))))
    seg.append(("BENCHMARK: front door published → discovery + 1-token readiness check OK → client spawned",
                d(fe.get("published"), bm.get("aiperf_spawn"))))
    seg.append(("BENCHMARK: client spawn → first request (client start-up)", d(bm.get("aiperf_spawn"), tl.get("first_request"))))
    total = d(t0, tl.get("first_request"))
    slowest_server = max((v for v in own.values() if v is not None), default=None)
    critical_servers = (own.get(slow_w) or 0) + (own.get("DISAGG_SERVER") or 0)
    return {"segments": seg, "total": total, "own_ready": own, "slowest_server": slowest_server,
            "overhead": None if total is None or slowest_server is None else total - slowest_server,
            "critical_servers": critical_servers,
            "overhead_vs_critical": None if total is None else total - critical_servers}


# --------------------------------------------------------------------------------------------- runs


def run_job(mode: str, out: Path, timeout_s: float) -> dict:
    job = out / f"{mode}-{int(time.time())}"
    argv = [sys.executable, "submit.py", "--config", CONFIG, "--out", str(job), *SETS]
    argv += ["--local"] if mode == "local" else ["--cluster", CLUSTER, "--submit", "--wait"]
    tracer = ProcTracer().start()
    lines: list[tuple[float, str]] = []
    t_submit = time.time()
    # keep the benchmark's jobs out of the user's history store (sbatch exports this environment)
    env = dict(os.environ, PERFSANITY_HISTORY=str(out / "history.sqlite"))
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append((time.time(), line.rstrip()))

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        stop_tree(proc)
    th.join(5)
    time.sleep(0.3)
    tracer.stop()
    tl = analyse(job, tracer, t_submit, lines)
    tl["exit_code"] = proc.returncode
    tl["job_dir"] = str(job)
    tl["command"] = " ".join(shlex.quote(a) for a in argv)
    tl["wall_s"] = time.time() - t_submit
    return tl


def micro(repeats: int = 3) -> dict[str, float]:
    """Median wall time of the pieces every role pays before its own code runs."""
    tests = ROOT / "tests"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cases = {
        "python3 -c pass": ([sys.executable, "-c", "pass"], ROOT),
        "import perfsanity.run.roles + benchmark_role": (
            [sys.executable, "-c", "import perfsanity.run.roles, perfsanity.run.benchmark"], ROOT),
        "pytest --collect-only perf/test_perf_sanity.py": (
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
             "perf/test_perf_sanity.py"], tests),
        "ensure_tool(dynamo)+ensure_tool(aiperf)+ensure_tiny_model()": (
            [sys.executable, "-c", "from perfsanity.engines.tooling import ensure_tool; ensure_tool('dynamo'); "
             "ensure_tool('aiperf'); from perfsanity.engines.model_assets import ensure_tiny_model; ensure_tiny_model()"], ROOT),
        "python3 -m perfsanity.run.install --help": ([sys.executable, "-m", "perfsanity.run.install", "--help"], ROOT),
        "aiperf --version (venv CLI start)": (None, ROOT),
    }
    try:
        sys.path.insert(0, str(ROOT))
        from perfsanity.engines.tooling import ensure_tool

        aip = ensure_tool("aiperf")
        cases["aiperf --version (venv CLI start)"] = ([str(aip.bin_dir / "aiperf"), "--version"], ROOT)
        dyn = ensure_tool("dynamo")
        cases["dynamo venv: import dynamo.mocker"] = ([str(dyn.python), "-c", "import dynamo.mocker"], ROOT)
        cases["dynamo venv: import dynamo.frontend"] = ([str(dyn.python), "-c", "import dynamo.frontend"], ROOT)
    except Exception as exc:  # noqa: BLE001
        print(f"  (tool envs unavailable: {exc})")
    out = {}
    for name, (argv, cwd) in cases.items():
        if argv is None:
            continue
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return out


# ---------------------------------------------------------------- side by side: our draft vs upstream's

SIDE_TEST_ID = "disagg_upload-e2e-mocker-ctx2-gen2"
DRAFTS = {
    "ours": ROOT / "jenkins/scripts/perf/disaggregated/slurm_launch_draft.sh",
    # written from TensorRT-LLM's draft's recorded facts (docs/upstream/trtllm-l0-facts.md §2): its srun
    # steps, slices and 5 s pauses
    "upstream": ROOT / "tests/fixtures/trtllm_draft/slurm_launch_draft.sh",
}


# The local cluster's slurmd runs without PMIx, so an ``srun --mpi=pmix`` step cannot start there.
# Upstream's draft passes --mpi=pmix to its GEN/CTX steps (the mocker is no MPI program, the flag only
# picks the PMI plugin): for the stand-in, a PATH shim drops that one flag and runs the real srun.
SRUN_SHIM = """#!/bin/bash
args=()
for a in "$@"; do [[ $a == --mpi=pmix ]] || args+=("$a"); done
exec {srun} "${{args[@]}}"
"""


def srun_shim(out: Path) -> Path:
    real = shutil.which("srun")
    if real is None:
        raise SystemExit("no srun on PATH")
    d = out / "srun-shim"
    d.mkdir(parents=True, exist_ok=True)
    (d / "srun").write_text(SRUN_SHIM.format(srun=shlex.quote(real)))
    (d / "srun").chmod(0o755)
    return d


def first_request_s(job: Path) -> float | None:
    """Wall time of the first request aiperf sent (any concurrency), from its profile exports."""
    starts = [r["metadata"]["request_start_ns"] for f in job.glob("client/*/profile_export.jsonl")
              for r in read_jsonl(f) if r.get("metadata", {}).get("request_start_ns")]
    return min(starts) / 1e9 if starts else None


def run_l0_draft(draft: str, out: Path, timeout_s: float) -> dict:
    """The mocker 2 ctx + 2 gen job in upstream's submit.py form with ``draft``, sbatch'ed on the local
    SLURM: submit.py start → first benchmark request."""
    sys.path.insert(0, str(ROOT))
    from perfsanity.cli.jenkins import write_inputs
    from perfsanity.jobs.slurm import cancel, job_state, submit, wait_for_job

    ws = out / f"{draft}-{int(time.time() * 1000)}"
    ws.mkdir(parents=True)
    env = dict(os.environ, PERFSANITY_HISTORY=str(out / "history.sqlite"), PYTHONPATH=str(ROOT))
    for var in ("PERFSANITY_CLUSTER", "PERFSANITY_RUN_CI", "PERFSANITY_PRE_MERGE", "pytestCommand"):
        env.pop(var, None)
    if draft == "upstream":
        env["PATH"] = f"{srun_shim(out)}:{env['PATH']}"
    t0 = time.time()
    files = write_inputs(ws, SIDE_TEST_ID, partition=None, account=None, container_image=None,
                         container_mounts=None, cluster=str(ROOT / CLUSTER))
    scripts = ROOT / "jenkins/scripts"
    argv = [sys.executable, "submit.py", "--llm-src", str(ROOT), "--test-list", str(files["test_list"]),
            "--draft-launch-sh", str(DRAFTS[draft]), "--launch-sh", str(ws / "launch.sh"),
            "--run-sh", str(scripts / "slurm_run.sh"), "--install-sh", str(scripts / "slurm_install.sh"),
            "--script-prefix", str(files["script_prefix"]), "--srun-args", str(files["srun_args"]),
            "--split-group", "1", "--stage-name", "CPU-4_Nodes-Perf-Sanity-1", "--cluster-name", "local-slurm",
            *SETS]
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120)
    job_id = submit(ws / "launch.sh", workdir=ws, env=env)
    try:
        info = wait_for_job(job_id, timeout_s=timeout_s)
    except BaseException:
        cancel(job_id)
        raise
    first = first_request_s(ws)
    try:  # when the batch script started (scontrol prints local time): the queue wait is not the draft's
        started = datetime.fromisoformat(job_state(job_id).raw["StartTime"]).timestamp()
    except (KeyError, ValueError):
        started = None
    return {"draft": draft, "job_id": job_id, "state": info.state, "exit_code": info.exit_code, "job_dir": str(ws),
            "submit_to_first_request_s": None if first is None else first - t0,
            "start_to_first_request_s": None if first is None or started is None else first - started,
            "wall_s": time.time() - t0}


def side_by_side(runs: int, out: Path, timeout_s: float, quiet_wait_s: float) -> dict:
    """Alternate our draft and the upstream stand-in ``runs`` times each; medians and their ratio."""
    results: list[dict] = []
    for i in range(runs):
        for draft in DRAFTS:
            if quiet_wait_s > 0:
                wait_for_quiet(timeout_s=quiet_wait_s)
            r = run_l0_draft(draft, out, timeout_s)
            print(f"... {draft} run {i + 1}/{runs}: job {r['job_id']} {r['state']} exit {r['exit_code']}, "
                  f"submit → first request {fmt_s(r['submit_to_first_request_s']).strip()} s", flush=True)
            results.append(r)
    summary: dict[str, dict] = {}
    print("\n## side by side: mocker 2 ctx + 2 gen, upstream submit.py form, local SLURM (4 nodes)")
    for key, label in (("submit_to_first_request_s", "submit → first benchmark request"),
                       ("start_to_first_request_s", "job start → first benchmark request (no queue wait)")):
        med = {}
        for draft in DRAFTS:
            vals = [r[key] for r in results if r["draft"] == draft and r[key] is not None and r["exit_code"] == 0]
            med[draft] = statistics.median(vals) if vals else None
        ratio = med["ours"] / med["upstream"] if med["ours"] and med["upstream"] else None
        print(f"\n| draft | {label}, median s | runs |\n|---|---|---|")
        for draft in DRAFTS:
            vals = [r[key] for r in results if r["draft"] == draft]
            print(f"| {draft} | {fmt_s(med[draft])} | {', '.join(fmt_s(v).strip() for v in vals)} |")
        print(f"ratio ours / upstream = {'—' if ratio is None else f'{ratio:.2f}'} (target < 0.5)")
        summary[key] = {"median_s": med, "ratio": ratio}
    return {"runs": results, **summary}


def fmt_s(v: float | None) -> str:
    return "—" if v is None else f"{v:6.2f}"


def report(tl: dict, mode: str) -> dict:
    b = breakdown(tl)
    print(f"\n## {mode}: exit {tl['exit_code']}, job dir {tl['job_dir']}")
    print(f"command: {tl['command']}")
    print("| segment (critical path) | s |\n|---|---|")
    for name, v in b["segments"]:
        print(f"| {name} | {fmt_s(v)} |")
    print(f"| **total: submit → first benchmark request** | **{fmt_s(b['total'])}** |")
    own = ", ".join(f"{k} {fmt_s(v).strip()}" for k, v in b["own_ready"].items())
    print(f"\nservers' own spawn→ready: {own} s")
    print(f"overhead = total − slowest server = {fmt_s(b['total'])} − {fmt_s(b['slowest_server'])} = "
          f"**{fmt_s(b['overhead'])} s** (target ≤ 1 s)")
    print(f"overhead vs the servers' critical path as launched (slowest worker + frontend, sequential): "
          f"{fmt_s(b['overhead_vs_critical'])} s")
    r = tl["roles"]
    print("\nper role: spawn→role code, role code→server spawn, server ready→published, ready_s (from .addr):")
    for role, info in r.items():
        def dd(a, c, info=info):
            return fmt_s(None if info.get(a) is None or info.get(c) is None else info[c] - info[a]).strip()
        print(f"  {role:14s} {dd('role_spawn', 'started')} s, {dd('started', 'server_spawn')} s, "
              f"{dd('self_ready', 'published')} s, ready_s {info.get('ready_s')}")
    a = tl.get("aiperf") or {}
    sp = r.get("BENCHMARK", {}).get("aiperf_spawn")
    if a and sp:
        marks = sorted(a.items(), key=lambda kv: kv[1])
        print("aiperf start-up (s after spawn): " + ", ".join(f"{k} {v - sp:.2f}" for k, v in marks)
              + (f", first request {tl['first_request'] - sp:.2f}" if tl.get("first_request") else ""))
    bm = r.get("BENCHMARK", {})
    fe = r.get("DISAGG_SERVER", {})
    if bm.get("started") and fe.get("published"):
        print(f"BENCHMARK entered its code {fe['published'] - bm['started']:.2f} s before the front door was published "
              f"(it then waits); ping completion seen by the frontend "
              f"{(fe.get('ping_received') or 0) - fe['published']:.2f} s after publish")
    return b


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", nargs="+", choices=("local", "slurm"), default=["local", "slurm"])
    p.add_argument("--runs", type=int, default=3, help="jobs per mode")
    p.add_argument("--timeout", type=float, default=240.0, help="bound per job, s")
    p.add_argument("--no-micro", dest="micro", action="store_false")
    p.add_argument("--quiet-wait-s", type=float, default=60.0,
                   help="before each job wait up to this long until other processes use < 0.25 cores (0 = off)")
    p.add_argument("--wait-load-s", type=float, default=0.0)
    p.add_argument("--out", type=Path)
    p.add_argument("--side-by-side", action="store_true",
                   help="only: the mocker 2 ctx + 2 gen L0 job with our draft and with upstream's (stand-in), "
                   "--runs times each, on the local SLURM")
    p.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    p.add_argument("--client", choices=("aiperf", "perfsanity"),
                   help="benchmark.client for the measured jobs (default: the config's, aiperf)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="one more config override for the measured jobs (e.g. benchmark.pregenerate_dataset=false)")
    args = p.parse_args(argv)
    if args.client:
        SETS.extend(["--set", f"benchmark.client={args.client}"])
    for item in args.sets:
        SETS.extend(["--set", item])
    print_header("Orchestration overhead: submit → first benchmark request",
                 "python3 benchmarks/orchestration.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    wait_for_low_load(1.0, args.wait_load_s)
    out = args.out or Path(tempfile.mkdtemp(prefix="orchestration-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.side_by_side:
        result = side_by_side(args.runs, out, args.timeout, args.quiet_wait_s)
        (out / "side_by_side.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        if args.json:
            print(json.dumps(result, default=str))
        print(f"\nartifacts: {out}")
        return 0
    all_runs = []
    for mode in args.mode:
        if mode == "slurm":
            try:
                info = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
                if info.returncode != 0 or "idle" not in info.stdout and "mix" not in info.stdout:
                    print(f"\n## slurm: skipped (sinfo: {info.stdout.strip() or info.stderr.strip()}); "
                          "start it with scripts/local_slurm/start.sh")
                    continue
            except (OSError, subprocess.TimeoutExpired) as exc:
                print(f"\n## slurm: skipped ({exc})")
                continue
        for i in range(args.runs):
            quiet = wait_for_quiet(timeout_s=args.quiet_wait_s) if args.quiet_wait_s > 0 else None
            print(f"... {mode} job {i + 1}/{args.runs} (load {load1():.2f}; others "
                  f"{'?' if quiet is None else f'{quiet:.2f}'} cores before)", flush=True)
            tl = run_job(mode, out, args.timeout)
            tl["others_before"] = quiet
            tl["breakdown"] = report(tl, mode)
            tl["mode"] = mode
            all_runs.append(tl)
    for mode in args.mode:
        runs = [r for r in all_runs if r["mode"] == mode and r["breakdown"]["total"] is not None]
        if len(runs) < 2:
            continue
        print(f"\n## {mode}: median of {len(runs)} jobs")
        print("| segment (critical path) | median s | runs |\n|---|---|---|")
        names = [n for n, _ in runs[0]["breakdown"]["segments"]]
        for i, name in enumerate(names):
            vals = [r["breakdown"]["segments"][i][1] for r in runs if len(r["breakdown"]["segments"]) > i]
            vals = [v for v in vals if v is not None]
            med = statistics.median(vals) if vals else None
            print(f"| {name} | {fmt_s(med)} | {', '.join(f'{v:.2f}' for v in vals)} |")
        for key, label in (("total", "total: submit → first request"), ("slowest_server", "slowest server's own ready"),
                           ("overhead", "**overhead** (target ≤ 1 s)")):
            vals = [r["breakdown"][key] for r in runs if r["breakdown"][key] is not None]
            print(f"| {label} | {fmt_s(statistics.median(vals))} | {', '.join(f'{v:.2f}' for v in vals)} |")
    if args.micro:
        print("\n## component micro-timings (median of 3, warm caches)")
        for name, v in micro().items():
            print(f"  {name:60s} {v:6.2f} s")
    (out / "orchestration.json").write_text(json.dumps(all_runs, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(all_runs, default=str))
    print(f"\nartifacts: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
