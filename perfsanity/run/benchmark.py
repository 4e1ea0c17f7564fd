"""The BENCHMARK role: start writing the job's prompt files (:mod:`perfsanity.run.prompt_files`), wait
for the front door, check it serves, run the client ``benchmark.repeats``
times per concurrency (their mean is the concurrency's result, each repeat kept inside it), keep
every finished result, and always write the status file that stops the servers. Around the
``profiling.windows`` points it drives the engine's torch profiler (:mod:`perfsanity.run.profiler_hooks`);
after the last point, with ``accuracy.enable_accuracy_test``, it runs lm-eval against the same front door
(:mod:`perfsanity.run.accuracy`). Both are recorded in ``results.json``.

It writes ``results.json`` (after every concurrency, and once more at the end with the validity
failures and the status) and ``rendezvous/benchmark.status`` (the clients keep their own output and
the prompt files in ``client/``, lm-eval its output in ``accuracy/``), and nothing else: no gate, no history,
no junit, no report — those are the submit side's (:mod:`perfsanity.results.pipeline`), so a compute
node needs no history-database credentials. Its exit code means only "valid measurement".
"""

from __future__ import annotations

import json
import shlex
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from perfsanity.common.errors import PerfsanityError, WaitTimeout
from perfsanity.common.files import write_atomic
from perfsanity.common.processes import NodeBusy, ProcessSet, TreeCpu, node_cores
from perfsanity.common.waits import wait_until
from perfsanity.load import get_client
from perfsanity.load.base import ClientRun, check_benchmark_type
from perfsanity.load.repeats import combine
from perfsanity.load.results_json import ConcurrencyResult, ProfilerCall, RunResult
from perfsanity.load.summary import format_table
from perfsanity.load.validity import check as validity_check
from perfsanity.load.validity import cores_needed, mark
from perfsanity.run import profiler_hooks
from perfsanity.run.accuracy import run_accuracy
from perfsanity.run.job import Job, client_model_name, client_name, model_path, resolve_argv
from perfsanity.run.prompt_files import PromptFiles
from perfsanity.spec.benchmark_types import Point, default_label, points
from perfsanity.spec.config import DEFAULT_REPEATS


def front_door_roles(job: Job) -> list[str]:
    """DISAGG_SERVER for disaggregated jobs; SERVER_0 for aggregated ones."""
    routers = [p.role for p in job.topology.of_kind("router")]
    return routers or [p.role for p in job.topology.of_kind("server")][:1]


def completion_ok(url: str, model: str, timeout_s: float = 10.0) -> tuple[bool, str]:
    """One 1-token completion; health endpoints alone race with model registration."""
    body = json.dumps({"model": model, "prompt": "ping", "max_tokens": 1, "stream": False}).encode()
    req = urllib.request.Request(f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - our own server
            return resp.status == 200, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(exc)


def wait_ready(job: Job, url: str, model: str) -> None:
    last = {"seen": "no answer yet"}

    def check() -> bool:
        job.rendezvous.raise_if_failed()
        ok, seen = completion_ok(url, model)
        last["seen"] = seen
        return ok

    wait_until(check, timeout_s=job.config.timeouts.router_ready, poll_s=0.1, max_poll_s=1.0,
               what=f"a 1-token completion from {url} (model {model!r}) to return 200",
               on_timeout=lambda: f"last answer: {last['seen']}")


#: how the discovery check names a worker kind
KIND_NAMES = {"ctx": "prefill (CTX)", "gen": "decode (GEN)", "server": "aggregated (SERVER)"}


def discovery_shortfall(expected: Counter[str], listed: Mapping[str, int], url: str) -> str | None:
    """None when ``listed`` has at least ``expected`` instances of every kind; else what is missing."""
    short = [f"{listed.get(kind, 0)} of {n} {KIND_NAMES.get(kind, kind)} workers"
             for kind, n in expected.items() if listed.get(kind, 0) < n]
    return f"{url} lists {', '.join(short)}" if short else None


def wait_discovered(job: Job, door: str) -> None:
    """Until every router behind ``door`` lists each expected worker (backends whose router discovers
    workers itself: ``Backend.discovery_path``); a router given the workers' addresses is skipped."""
    path = job.backend.discovery_path
    if not path:
        return
    counts = Counter(p.kind for p in job.topology.workers)
    expected = Counter({k: counts[k] for k in sorted(counts, key=list(KIND_NAMES).index)})
    urls = [f"http://{b}{path}" for b in job.rendezvous.backends(door)]
    last = {u: "no answer yet" for u in urls}

    def check() -> bool:
        job.rendezvous.raise_if_failed()
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=2.0) as resp:  # noqa: S310 - our own server
                    listed = job.backend.discovered_workers(resp.read())
            except urllib.error.HTTPError as exc:
                last[url] = f"{url}: HTTP {exc.code}"
                continue
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last[url] = f"{url}: {exc}"
                continue
            shortfall = discovery_shortfall(expected, listed, url)
            last[url] = shortfall or "complete"
        return all(v == "complete" for v in last.values())

    wanted = ", ".join(f"{n} {KIND_NAMES.get(k, k)}" for k, n in expected.items())
    wait_until(check, timeout_s=job.config.timeouts.router_ready, poll_s=0.05, max_poll_s=0.2,
               what=f"{door} to discover every worker ({wanted} on {', '.join(urls)})",
               on_timeout=lambda: "; ".join(v for v in last.values() if v != "complete"))
    job.log(f"{door} lists every worker ({wanted})")


def wait_whole_path(job: Job) -> str:
    """Block until every worker and the front door have published, until the router(s) list every
    worker (where the router discovers them itself), then until a 1-token completion through the front
    door returns 200; returns the front door's URL. Routers that discover workers themselves (Dynamo)
    start before the workers, so the door alone is not the whole path."""
    cfg = job.config
    door = front_door_roles(job)
    needed = list(dict.fromkeys([*(p.role for p in job.topology.workers), *door]))
    job.log(f"waiting for {', '.join(needed)}")
    addrs = job.rendezvous.wait_for(needed, timeout_s=cfg.timeouts.server_ready + cfg.timeouts.router_ready,
                                    waiter=job.role)
    url = addrs[door[0]].url
    wait_discovered(job, door[0])
    wait_ready(job, url, client_model_name(job))
    return url


def run_one(job: Job, run: ClientRun, client_name: str, tag: str = "", label: str = "") -> ConcurrencyResult:
    """One client run of the point ``label`` (default ``c<concurrency>``); ``tag`` (e.g. ``-r2``) names
    the repeat in the log file."""
    label = label or default_label(run.concurrency)
    client = get_client(client_name)
    cmd = client.command(run)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(job.environ)
    for name in cmd.env_unset:
        env.pop(name, None)
    env.update(cmd.env_set)
    argv = resolve_argv(tuple(cmd.argv), cmd.tool)
    log = job.job_dir / "logs" / f"client-{label}{tag}.log"
    limit = job.config.timeouts.client_per_concurrency
    job.log(f"{point_text(label, run.concurrency)}: {run.num_prompts} requests; {' '.join(argv)}")
    started_at = time.time()
    with ProcessSet() as procs:
        proc = procs.start(f"{client_name} {label}", argv, env=env, log_path=log, cwd=run.out_dir)
        cpu, busy = TreeCpu(proc.pid), NodeBusy()

        def finished() -> bool:
            job.rendezvous.raise_if_failed()
            cpu.sample()
            return proc.poll() is not None

        try:
            wait_until(finished, timeout_s=limit, poll_s=0.2, max_poll_s=1.0,
                       what=f"{client_name} at {point_text(label, run.concurrency)} to finish "
                       f"(timeouts.client_per_concurrency)")
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc} (log {log})\n--- last lines of the client log ---\n{proc.tail(20)}") from None
        if proc.poll() != 0:
            # first line = the failure as recorded in results.json / junit; the tail follows
            raise PerfsanityError(f"{client_name} at {point_text(label, run.concurrency)} exited with code "
                                  f"{proc.poll()} (log {log})\n--- last lines of the client log ---\n{proc.tail(30)}")
    result = client.parse(run)
    tree, busiest = cpu.cores()
    stats = {**result.client_stats, "client_cores": round(tree, 3), "client_busiest_process_cores": round(busiest, 3),
             "node_busy_share": round(busy.share(), 3)}
    return mark(result.model_copy(update={"client_stats": stats, "started_at": started_at, "ended_at": time.time()}),
                node_cores=node_cores())


def another_repeat_fits(done: int, spent_s: float, budget_s: float, *, pinned: int | None) -> bool:
    """With ``benchmark.repeats`` unset (``pinned`` None): does one more repeat, as long as the mean so
    far, still end within ``budget_s`` of the concurrency's start? A pinned count always runs."""
    if pinned is not None or done == 0:
        return True
    return spent_s * (done + 1) / done <= budget_s


def point_text(label: str, concurrency: int) -> str:
    """``concurrency 8`` for a plain concurrency point (as before benchmark types), else ``point rps2.c8``."""
    return f"concurrency {concurrency}" if label == default_label(concurrency) else f"point {label}"


def point_fields(point: Point) -> dict[str, object]:
    """What a result says about the point it measured (:data:`~perfsanity.load.results_json.POINT_FIELDS`);
    a plain concurrency point keeps the results.json of before benchmark types."""
    if point.benchmark_type == "concurrency" and point.label == default_label(point.concurrency):
        return {}
    own_lengths = point.benchmark_type != "trace"
    return {"point": point.label, "benchmark_type": point.benchmark_type, "request_rate": point.request_rate,
            "arrival": point.arrival, "isl": point.input_length if own_lengths else None,
            "osl": point.output_length if own_lengths else None}


def client_run(job: Job, url: str, model: str, tokenizer: str, point: Point, out_dir: Path,
               prompt_file: str | None = None) -> ClientRun:
    """One client run of ``point``. ``prompt_file``: the point's pre-generated prompts
    (:mod:`perfsanity.run.prompt_files`), read as the dataset file; None: ``benchmark.dataset_file`` or
    the client's synthetic prompts."""
    bench = job.config.benchmark
    return ClientRun(
        url=url, model_name=model, tokenizer=tokenizer, concurrency=point.concurrency,
        num_prompts=point.num_prompts, input_length=point.input_length,
        output_length=point.output_length, streaming=bench.streaming,
        request_timeout_s=bench.request_timeout_s, random_seed=bench.random_seed,
        warmup_requests=bench.warmup_requests, dataset_file=bench.dataset_file or prompt_file,
        out_dir=out_dir, total_gpus=job.topology.total_gpus,
        request_rate=point.request_rate, arrival=point.arrival, trace_file=point.trace_file,
    )


def run_repeats(job: Job, url: str, model: str, tokenizer: str, point: Point,
                prompt_file: str | None = None) -> tuple[ConcurrencyResult, list[str]]:
    """Every repeat of one point (``benchmark.repeats``; unset: up to DEFAULT_REPEATS, stopping
    before a repeat that would end past ``timeouts.client_per_concurrency``), combined into their mean.
    A repeat that fails the validity check ends the concurrency: its reasons are returned.
    ``prompt_file``: as in :func:`client_run`."""
    bench = job.config.benchmark
    wanted = bench.repeats or DEFAULT_REPEATS
    budget = job.config.timeouts.client_per_concurrency
    repeats: list[ConcurrencyResult] = []
    problems: list[str] = []
    started = time.monotonic()
    label = point.label
    for i in range(wanted):
        out_dir = job.job_dir / "client" / label
        run = client_run(job, url, model, tokenizer, point, out_dir / f"r{i}" if wanted > 1 else out_dir, prompt_file)
        one = run_one(job, run, client_name(job.config), tag=f"-r{i}" if wanted > 1 else "", label=label)
        repeats.append(one.model_copy(update=point_fields(point)))
        problems = validity_check(repeats[-1], requested=run.num_prompts, max_failed_rate=bench.max_failed_rate,
                                  streaming=bench.streaming)
        if problems:
            break
        spent = time.monotonic() - started
        if len(repeats) < wanted and not another_repeat_fits(len(repeats), spent, budget, pinned=bench.repeats):
            job.log(f"{point_text(label, point.concurrency)}: {len(repeats)} of {wanted} repeats; another would end past "
                    f"timeouts.client_per_concurrency ({budget} s; {spent:.0f} s so far)")
            break
    if wanted > 1:
        job.log(f"{point_text(label, point.concurrency)}: mean of {len(repeats)} repeat(s)")
    return combine(repeats), problems


def say_saturation(job: Job, results: list[ConcurrencyResult]) -> None:
    """Job summary of the client_saturated points: the evidence, and the cores the client would need."""
    saturated = [r for r in results if r.validity == "client_saturated"]
    cores = node_cores()
    for r in saturated:
        need = cores_needed(r)
        need_text = f"; measuring it needs ~{need} client cores (this node has {cores})" if need else ""
        job.log(f"{point_text(r.label, r.concurrency)}: client_saturated, not gated or baselined: "
                f"{'; '.join(r.evidence)}{need_text}")
    if results and len(saturated) == len(results):
        job.log(f"every point ({', '.join(r.label for r in results)}) is client_saturated: these "
                f"numbers measure the client on {cores} core(s), not the server; nothing will be gated or baselined")


ENDPOINT_FILE = "endpoint.json"
ENV_LAUNCHER_PID = "PERFSANITY_LAUNCHER_PID"  # set by the local launcher: the process to signal to stop


def stop_hint(environ: Mapping[str, str]) -> dict[str, object]:
    """How to end a manual job: ``scancel`` of its SLURM job, or SIGTERM to the local launcher."""
    pid = environ.get(ENV_LAUNCHER_PID, "")
    if pid.isdigit():
        return {"pid": int(pid), "command": f"kill -TERM {pid}"}
    job_id = environ.get("SLURM_JOB_ID")
    if job_id:
        return {"slurm_job_id": job_id, "command": f"scancel {shlex.quote(job_id)}"}
    return {"command": "Ctrl-C in the terminal that started the job"}


def run_manual(job: Job) -> None:
    """benchmark.type manual: once the whole path serves, write ``endpoint.json`` (URL, model, how to
    stop) and stay up until the launcher stops the job (a signal, or the time limit ``slurm.timeout``)."""
    cfg = job.config
    url = wait_whole_path(job)
    model = client_model_name(job)
    endpoint = {"url": url, "completions_url": f"{url}/v1/completions", "model": model,
                "job_dir": str(job.job_dir), "stop": stop_hint(job.environ)}
    write_atomic(job.job_dir / ENDPOINT_FILE, json.dumps(endpoint, indent=2) + "\n")
    RunResult(config_name=cfg.name, backend=cfg.metadata.backend, mode=cfg.benchmark.mode,
              total_gpus=job.topology.total_gpus, status="passed").write(job.job_dir / "results.json")
    job.log(f"manual job: {url} serves {model!r}; stop it with: {endpoint['stop']['command']} "
            f"(written to {job.job_dir / ENDPOINT_FILE})")
    print(json.dumps(endpoint), flush=True)

    def stopped() -> bool:
        job.rendezvous.raise_if_failed()  # a server that dies ends the job as a failure
        return job.rendezvous.status() is not None  # the launcher's "stopped" status

    try:
        wait_until(stopped, timeout_s=cfg.slurm.timeout, poll_s=0.5, max_poll_s=2.0,
                   what="the user to stop the manual job (endpoint.json names how)")
    except WaitTimeout:
        job.log(f"manual job: slurm.timeout={cfg.slurm.timeout}s reached; stopping")


def run_benchmark(job: Job) -> None:
    cfg = job.config
    check_benchmark_type(get_client(client_name(cfg)), cfg.benchmark.type, source=cfg.source)
    if cfg.benchmark.type == "manual":
        run_manual(job)
        return
    bench = cfg.benchmark
    rdv = job.rendezvous
    results: list[ConcurrencyResult] = []
    failures: list[str] = []
    calls: list[ProfilerCall] = []
    status = "failed"
    run_result = RunResult(config_name=cfg.name, backend=cfg.metadata.backend, mode=bench.mode,
                           total_gpus=job.topology.total_gpus)
    t_start = time.monotonic()
    try:
        tokenizer = model_path(job)
        with ProcessSet() as procs:
            prompts = PromptFiles(job, procs, tokenizer)  # written while the servers start
            url = wait_whole_path(job)
            model = client_model_name(job)
            ready_s = time.monotonic() - t_start
            job.log(f"{url} serves {model!r} ({ready_s:.1f}s after the benchmark started)")
            prompts.collect()
        for point in points(bench, source=cfg.source):
            try:
                with profiler_hooks.window(job, point.concurrency, calls):
                    result, problems = run_repeats(job, url, model, tokenizer, point, prompts.for_point(point))
            finally:
                run_result = run_result.model_copy(update={"profiler_calls": tuple(calls)})
            results.append(result)
            failures.extend(problems)
            run_result = run_result.model_copy(update={"results": tuple(results), "failures": tuple(failures)})
            run_result.write(job.job_dir / "results.json")
            print(format_table(results), flush=True)
        say_saturation(job, results)
        if cfg.accuracy.enable_accuracy_test:
            run_result = run_result.model_copy(update={"accuracy": run_accuracy(job, url, model)})
        status = "failed" if failures else "passed"
    except (PerfsanityError, KeyboardInterrupt) as exc:
        msg = str(exc) if not isinstance(exc, KeyboardInterrupt) else "interrupted (SIGTERM/SIGINT)"
        failures.append(msg.splitlines()[0] if msg else type(exc).__name__)  # RoleFailed: "ROLE: message"
        raise
    finally:
        run_result = run_result.model_copy(update={"results": tuple(results), "failures": tuple(failures),
                                                   "status": status})
        run_result.write(job.job_dir / "results.json")
        rdv.write_status(status, failures=failures, elapsed_s=round(time.monotonic() - t_start, 3))
    if failures:
        raise PerfsanityError("benchmark results failed the validity gate: " + "; ".join(failures))
