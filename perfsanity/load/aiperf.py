"""aiperf (``aiperf profile``, pinned 0.13.0 in :mod:`perfsanity.engines.tooling`) as the benchmark client.

Command: every flag below was checked against ``aiperf profile --help`` of aiperf 0.13.0.
Output: ``<artifact-dir>/profile_export_aiperf.json`` (aiperf ``JsonExportData``, schema 1.4): one
object per metric tag ``{unit, avg, p1…p99, min, max, std, count, sum}`` plus ``error_summary``,
``was_cancelled``, ``is_complete``. Latency metrics are exported in their display unit (``ms``;
``benchmark_duration`` in ``sec``); the parser converts whatever time unit a metric states.

Metric mapping (definitions from aiperf's ``aiperf/metrics/types/*.py``):

* ``time_to_first_token`` → ``ttft``; ``request_latency`` → ``e2e``.
* ``inter_token_latency`` → ``tpot``: aiperf computes it per request as
  ``(request_latency − TTFT) / (output_sequence_length − 1)``, which is exactly the TPOT of
  sglang ``bench_serving`` and TensorRT-LLM ``benchmark_serving``.
* ``inter_chunk_latency`` → ``itl``: the gaps between consecutive streamed chunks of every request,
  pooled — the ITL definition of sglang/TensorRT-LLM.
* ``request_count`` (successful requests) → ``completed``; ``error_request_count`` (or the sum of
  ``error_summary`` counts) → ``failed``; ``total_isl``/``total_osl`` → token totals.
* ``credit_to_start_latency`` (time a request waited inside aiperf between being allowed and being
  sent), ``effective_concurrency``, ``http_req_chunks_received`` and ``output_sequence_length`` per
  request → ``client_stats``, the evidence of :func:`perfsanity.load.validity.mark`.

When no request succeeds aiperf writes no summary at all, only ``profile_export.jsonl`` (one record
per request with its ``error``): that is a ClientOutputError whose message counts those errors.
A summary with ``was_cancelled`` true or ``is_complete`` false is one too (a degraded run).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from perfsanity.common.processes import node_cores
from perfsanity.load.base import (
    ClientBase,
    ClientCommand,
    ClientOutputError,
    ClientRun,
    finite,
    per_gpu,
    read_json_object,
    validate,
)
from perfsanity.load.results_json import ConcurrencyResult, LatencyStats

SUMMARY_FILE = "profile_export_aiperf.json"
RECORDS_FILE = "profile_export.jsonl"
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")

_TIME_UNITS_TO_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "sec": 1e3, "s": 1e3}


SPIN_FREE_REQUEST_RATE = 10000
REQUESTS_PER_WORKER = 64  # concurrent streams one aiperf worker process keeps up with (measured)


def workers_for(concurrency: int, cores: int | None = None) -> int:
    """aiperf worker processes for a concurrency: one per 64 streams, at most one per core."""
    cores = cores or node_cores()
    return max(1, min(cores, -(-concurrency // REQUESTS_PER_WORKER)))


class AiperfMetric(BaseModel):
    """One metric of ``profile_export_aiperf.json`` (aiperf ``JsonMetricResult``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    unit: str
    avg: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None
    std: float | None = None
    count: int | None = None
    sum: float | None = None


class AiperfErrorDetails(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    code: int | None = None
    type: str | None = None
    message: str


class AiperfErrorCount(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    error_details: AiperfErrorDetails
    count: int


class AiperfSummary(BaseModel):
    """The fields of ``profile_export_aiperf.json`` perfsanity reads (everything else is ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    aiperf_version: str | None = None
    request_count: AiperfMetric | None = None
    error_request_count: AiperfMetric | None = None
    request_throughput: AiperfMetric | None = None
    output_token_throughput: AiperfMetric | None = None
    total_token_throughput: AiperfMetric | None = None
    output_token_throughput_per_user: AiperfMetric | None = None
    time_to_first_token: AiperfMetric | None = None
    inter_token_latency: AiperfMetric | None = None
    inter_chunk_latency: AiperfMetric | None = None
    request_latency: AiperfMetric | None = None
    benchmark_duration: AiperfMetric | None = None
    total_isl: AiperfMetric | None = None
    total_osl: AiperfMetric | None = None
    total_output_tokens: AiperfMetric | None = None
    credit_to_start_latency: AiperfMetric | None = None
    effective_concurrency: AiperfMetric | None = None
    http_req_chunks_received: AiperfMetric | None = None
    output_sequence_length: AiperfMetric | None = None
    error_summary: list[AiperfErrorCount] | None = None
    was_cancelled: bool | None = None
    is_complete: bool | None = None
    incomplete_reason: str | None = None


class AiperfRecordMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    benchmark_phase: str | None = None


class AiperfRecordError(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str | None = None
    message: str = ""


class AiperfRecord(BaseModel):
    """One line of ``profile_export.jsonl`` (aiperf ``MetricRecordInfo``): only what diagnostics need."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    metadata: AiperfRecordMetadata
    error: AiperfRecordError | None = None


def load_argv(run: ClientRun) -> list[str]:
    """How the point's requests are sent: the trace's own timestamps (``mooncake_trace`` replays on
    them: aiperf's fixed-schedule promotion), a rate with its arrival pattern and at most
    ``concurrency`` in flight, or as fast as ``concurrency`` allows."""
    workers = ["--workers-max", str(workers_for(run.concurrency))]
    if run.trace_file:
        return ["--concurrency", str(run.concurrency), *workers]
    if run.request_rate is not None:
        return ["--concurrency", str(run.concurrency), "--request-count", str(run.num_prompts),
                "--request-rate", _num(run.request_rate), "--arrival-pattern", run.arrival or "constant", *workers]
    return [
        "--concurrency", str(run.concurrency),
        "--request-count", str(run.num_prompts),
        # In pure concurrency mode aiperf 0.13's timing process busy-polls for a free slot and
        # burns a whole core, starving its own workers' timestamps (benchmarks/RESULTS.md: ITL p99
        # +15 % at c1). A rate far above any reachable one makes it wait instead; concurrency
        # still caps the load.
        "--request-rate", str(SPIN_FREE_REQUEST_RATE),
        *workers,
    ]


def dataset_argv(run: ClientRun) -> list[str]:
    """What the point's requests hold: the trace's lines (each names its own input and output length),
    the dataset file's prompts (``benchmark.dataset_file``, or the BENCHMARK's pre-generated prompt file:
    :mod:`perfsanity.load.prompt_file`), or synthetic prompts of ``input_length`` tokens."""
    if run.trace_file:
        return ["--input-file", run.trace_file, "--custom-dataset-type", "mooncake_trace",
                "--extra-inputs", "ignore_eos:true"]
    if run.dataset_file:
        # The prompts are the file's text, but aiperf 0.13 still builds a synthetic prompt generator
        # at start-up, and its default corpus (sonnet) is tokenized whole: seconds per run on a busy
        # node. The random corpus skips that, and single-turn lines never use the generator's content.
        head = ["--input-file", run.dataset_file, "--custom-dataset-type", "single-turn", "--prompt-corpus", "random"]
    else:
        head = ["--synthetic-input-tokens-mean", str(run.input_length), "--synthetic-input-tokens-stddev", "0"]
    return [
        *head,
        "--output-tokens-mean", str(run.output_length),
        "--output-tokens-stddev", "0",
        # both: ignore_eos for engines that honour it, min_tokens for those that prefer it
        # (aiperf's own OSL-mismatch hint names both; the Dynamo frontend accepts both)
        "--extra-inputs", "ignore_eos:true",
        "--extra-inputs", f"min_tokens:{run.output_length}",
    ]


class AiperfClient(ClientBase):
    name = "aiperf"
    tool = "aiperf"
    benchmark_types = frozenset({"concurrency", "request_rate", "trace", "manual"})
    reads_prompt_files = True  # --input-file single-turn: the job's pre-generated prompts

    def command(self, run: ClientRun) -> ClientCommand:
        argv: list[str] = [
            "aiperf", "profile",
            "--model", run.model_name,
            "--url", run.url,
            "--endpoint-type", "completions",
        ]
        if run.streaming:
            argv.append("--streaming")
        argv += load_argv(run)
        argv += dataset_argv(run)
        if run.tokenizer:
            argv += ["--tokenizer", run.tokenizer]
        argv += [
            "--use-server-token-count",
            "--random-seed", str(run.random_seed),
            "--request-timeout-seconds", _num(run.request_timeout_s),
        ]
        if run.warmup_requests > 0:
            argv += ["--warmup-request-count", str(run.warmup_requests)]
        argv += [
            "--ui", "none",
            "--no-gpu-telemetry",
            "--artifact-dir", str(run.out_dir),
        ]
        # aiperf sends a local tokenizer path through the hub resolver when the offline switches are
        # set and fails; without them it loads the directory with no network access.
        unset = OFFLINE_VARS if run.tokenizer else ()
        return ClientCommand(argv=tuple(argv), env_unset=unset, tool=self.tool)

    def parse(self, run: ClientRun) -> ConcurrencyResult:
        path = run.out_dir / SUMMARY_FILE
        if not path.exists():
            # aiperf writes no summary when no request succeeded; its per-record file says why
            raise ClientOutputError(path, "file not found (aiperf wrote no summary)"
                                    + records_diagnosis(run.out_dir / RECORDS_FILE))
        s = validate(AiperfSummary, read_json_object(path), path)
        if s.was_cancelled:
            raise ClientOutputError(path, "aiperf reports the run was cancelled", "was_cancelled")
        if s.is_complete is False:
            why = s.incomplete_reason or "no reason given"
            raise ClientOutputError(path, f"aiperf reports an incomplete run: {why}", "is_complete")

        failed = _count(path, "error_request_count", s.error_request_count)
        if failed is None:
            failed = sum(e.count for e in s.error_summary or ())
        completed = _count(path, "request_count", s.request_count)
        if completed is None:
            if failed == 0:
                raise ClientOutputError(path, "is missing and no failed requests are recorded either",
                                        "request_count")
            completed = 0  # every request failed: aiperf has no successful record to count

        out_tput = _rate(path, "output_token_throughput", s.output_token_throughput, "tokens/sec")
        output_tokens = _count(path, "total_osl", s.total_osl)
        if output_tokens is None:
            output_tokens = _count(path, "total_output_tokens", s.total_output_tokens)
        return ConcurrencyResult(
            concurrency=run.concurrency,
            client=self.name,
            requested=run.num_prompts,
            completed=completed,
            failed=failed,
            input_tokens=_count(path, "total_isl", s.total_isl),
            output_tokens=output_tokens,
            duration_s=_seconds(path, "benchmark_duration", s.benchmark_duration),
            request_throughput=_rate(path, "request_throughput", s.request_throughput, "requests/sec"),
            output_token_throughput=out_tput,
            total_token_throughput=_rate(path, "total_token_throughput", s.total_token_throughput, "tokens/sec"),
            output_token_throughput_per_user=_rate(
                path, "output_token_throughput_per_user", s.output_token_throughput_per_user, "tokens/sec/user"),
            output_token_throughput_per_gpu=per_gpu(out_tput, run.total_gpus),
            ttft=_latency(path, "time_to_first_token", s.time_to_first_token),
            tpot=_latency(path, "inter_token_latency", s.inter_token_latency),
            itl=_latency(path, "inter_chunk_latency", s.inter_chunk_latency),
            e2e=_latency(path, "request_latency", s.request_latency),
            raw_path=str(path),
            client_stats=_client_stats(path, s),
        )


def _client_stats(path: Path, s: AiperfSummary) -> dict[str, float]:
    """The client's own health figures, for the saturation check (:mod:`perfsanity.load.validity`)."""
    out: dict[str, float] = {}
    cts = s.credit_to_start_latency
    if cts is not None:
        lat = _latency(path, "credit_to_start_latency", cts)
        for key, value in (("credit_to_start_mean_ms", lat.mean), ("credit_to_start_p99_ms", lat.p99)):
            if value is not None:
                out[key] = value
        total, worst, count = finite(cts.sum), finite(cts.max), cts.count
        if total is not None and worst is not None and count is not None and count >= 3:
            # the mean without the single worst request: the first one also pays connection set-up
            out["credit_to_start_trimmed_mean_ms"] = (total - worst) / (count - 1) * _to_ms_factor(
                path, "credit_to_start_latency", cts)
    for key, metric, stat in (("effective_concurrency", s.effective_concurrency, "avg"),
                              ("chunks_per_request_p50", s.http_req_chunks_received, "p50"),
                              ("output_tokens_per_request_p50", s.output_sequence_length, "p50")):
        value = finite(getattr(metric, stat)) if metric is not None else None
        if value is not None:
            out[key] = float(value)
    return out


def records_diagnosis(path: Path) -> str:
    """``; <file> holds N profiling records, M failed: <type: message> ×k`` — or "" when unusable."""
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        records = [AiperfRecord.model_validate_json(ln) for ln in lines]
    except (OSError, UnicodeDecodeError, ValidationError):
        return ""
    profiling = [r for r in records if r.metadata.benchmark_phase in (None, "profiling")]
    errors = Counter(f"{r.error.type or 'error'}: {r.error.message}" for r in profiling if r.error is not None)
    text = f"; {path} holds {len(profiling)} profiling records, {sum(errors.values())} failed"
    if errors:
        top, count = errors.most_common(1)[0]
        text += f" (most common: {top[:200]} ×{count})"
    return text


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _to_ms_factor(path: Path, name: str, metric: AiperfMetric) -> float:
    try:
        return _TIME_UNITS_TO_MS[metric.unit]
    except KeyError:
        raise ClientOutputError(path, f"unknown time unit {metric.unit!r} (expected one of "
                                f"{', '.join(_TIME_UNITS_TO_MS)})", f"{name}.unit") from None


def _latency(path: Path, name: str, metric: AiperfMetric | None) -> LatencyStats:
    if metric is None:
        return LatencyStats()
    k = _to_ms_factor(path, name, metric)

    def ms(v: float | None) -> float | None:
        v = finite(v)
        return None if v is None else v * k

    return LatencyStats(mean=ms(metric.avg), median=ms(metric.p50), p90=ms(metric.p90), p99=ms(metric.p99))


def _seconds(path: Path, name: str, metric: AiperfMetric | None) -> float | None:
    if metric is None:
        return None
    value = finite(metric.avg)
    return None if value is None else value * _to_ms_factor(path, name, metric) / 1e3


def _rate(path: Path, name: str, metric: AiperfMetric | None, unit: str) -> float | None:
    if metric is None:
        return None
    if metric.unit != unit:
        raise ClientOutputError(path, f"unit {metric.unit!r}, expected {unit!r}", f"{name}.unit")
    return finite(metric.avg)


def _count(path: Path, name: str, metric: AiperfMetric | None) -> int | None:
    if metric is None:
        return None
    value = finite(metric.avg)
    if value is None:
        return None
    if value < 0 or not float(value).is_integer():
        raise ClientOutputError(path, f"bad count {value!r}: must be a non-negative integer", f"{name}.avg")
    return int(value)


CLIENT = AiperfClient()
