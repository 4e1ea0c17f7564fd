"""sglang's ``python3 -m sglang.bench_serving`` as the benchmark client (runs from the engine's image: PATH).

Flags and output keys are those of sgl-project/sglang ``python/sglang/bench_serving.py``:

* ``--backend sglang-oai`` posts to ``<base-url>/v1/completions`` (``sglang`` would post to
  ``/generate``); ``--disable-stream`` turns streaming off; ``ignore_eos`` is on unless
  ``--disable-ignore-eos``.
* ``--dataset-name random-ids`` draws random token ids (no ShareGPT download); with a
  ``dataset_file`` we use ``--dataset-name random --dataset-path FILE`` (ShareGPT-format text cut to
  the lengths). ``--random-range-ratio 1`` makes every request exactly ``--random-input-len`` /
  ``--random-output-len`` (lengths are drawn from ``[len × ratio, len]``).
* ``--output-file`` is *appended* one JSON object per run; the parser reads the last line.
* There is no per-request timeout flag (the tool's aiohttp session allows 6 h); the role's
  ``timeouts.client_per_concurrency`` bounds the whole process.

Output keys read: ``completed``, ``total_input_tokens``, ``total_output_tokens``, ``duration``,
``request_throughput``, ``output_throughput``, ``total_throughput`` (newer versions), and
``{mean,median,p99}_{ttft,tpot,itl}_ms``, ``{mean,median}_e2e_latency_ms`` (``p90_*`` and
``p99_e2e_latency_ms`` where the version writes them). All latencies are already milliseconds.
The output has no failed count: failed = requested − completed.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field

from perfsanity.load.base import (
    ClientBase,
    ClientCommand,
    ClientOutputError,
    ClientRun,
    finite,
    per_gpu,
    stats,
    validate,
)
from perfsanity.load.results_json import ConcurrencyResult

RESULT_FILE = "result.jsonl"


class SglangResult(BaseModel):
    """One line of ``bench_serving --output-file`` (the ``result`` dict of ``benchmark()``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    backend: str | None = None
    max_concurrency: int | None = None
    duration: float = Field(ge=0)
    completed: int = Field(ge=0)
    total_input_tokens: int = Field(ge=0)
    total_output_tokens: int = Field(ge=0)
    request_throughput: float
    output_throughput: float
    total_throughput: float | None = None
    mean_ttft_ms: float
    median_ttft_ms: float
    p90_ttft_ms: float | None = None
    p99_ttft_ms: float
    mean_tpot_ms: float
    median_tpot_ms: float
    p90_tpot_ms: float | None = None
    p99_tpot_ms: float
    mean_itl_ms: float
    median_itl_ms: float
    p90_itl_ms: float | None = None
    p99_itl_ms: float
    mean_e2e_latency_ms: float
    median_e2e_latency_ms: float
    p90_e2e_latency_ms: float | None = None
    p99_e2e_latency_ms: float | None = None


class SglangBenchClient(ClientBase):
    name = "sglang-bench-serving"
    module = "sglang.bench_serving"

    def command(self, run: ClientRun) -> ClientCommand:
        argv: list[str] = [
            "python3", "-m", self.module,
            "--backend", "sglang-oai",
            "--base-url", run.url,
            "--model", run.model_name,
        ]
        if run.tokenizer:
            argv += ["--tokenizer", run.tokenizer]
        if run.dataset_file:
            argv += ["--dataset-name", "random", "--dataset-path", run.dataset_file]
        else:
            argv += ["--dataset-name", "random-ids"]
        argv += [
            "--random-input-len", str(run.input_length),
            "--random-output-len", str(run.output_length),
            "--random-range-ratio", "1",
            "--num-prompts", str(run.num_prompts),
            "--max-concurrency", str(run.concurrency),
            "--request-rate", "inf",
            "--seed", str(run.random_seed),
            "--warmup-requests", str(run.warmup_requests),
            "--disable-tqdm",
            "--output-file", str(run.out_dir / RESULT_FILE),
        ]
        if not run.streaming:
            argv.append("--disable-stream")
        return ClientCommand(argv=tuple(argv), tool=self.tool)

    def parse(self, run: ClientRun) -> ConcurrencyResult:
        path = run.out_dir / RESULT_FILE
        try:
            lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except FileNotFoundError:
            raise ClientOutputError(path, "file not found (the client wrote no result)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ClientOutputError(path, f"cannot read: {exc}") from None
        if not lines:
            raise ClientOutputError(path, "file is empty")
        try:
            data = json.loads(lines[-1])
        except json.JSONDecodeError as exc:
            raise ClientOutputError(path, f"last line is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ClientOutputError(path, f"last line must be a JSON object, got {type(data).__name__}")
        r = validate(SglangResult, data, path)
        out_tput = finite(r.output_throughput)
        return ConcurrencyResult(
            concurrency=run.concurrency,
            client=self.name,
            requested=run.num_prompts,
            completed=r.completed,
            failed=max(run.num_prompts - r.completed, 0),
            input_tokens=r.total_input_tokens,
            output_tokens=r.total_output_tokens,
            duration_s=finite(r.duration),
            request_throughput=finite(r.request_throughput),
            output_token_throughput=out_tput,
            total_token_throughput=finite(r.total_throughput),
            output_token_throughput_per_user=None,  # bench_serving does not report it
            output_token_throughput_per_gpu=per_gpu(out_tput, run.total_gpus),
            ttft=stats(r.mean_ttft_ms, r.median_ttft_ms, r.p90_ttft_ms, r.p99_ttft_ms),
            tpot=stats(r.mean_tpot_ms, r.median_tpot_ms, r.p90_tpot_ms, r.p99_tpot_ms),
            itl=stats(r.mean_itl_ms, r.median_itl_ms, r.p90_itl_ms, r.p99_itl_ms),
            e2e=stats(r.mean_e2e_latency_ms, r.median_e2e_latency_ms, r.p90_e2e_latency_ms, r.p99_e2e_latency_ms),
            raw_path=str(path),
        )


CLIENT = SglangBenchClient()
