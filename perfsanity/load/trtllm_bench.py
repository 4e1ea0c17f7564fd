"""TensorRT-LLM's ``python3 -m tensorrt_llm.serve.scripts.benchmark_serving`` as the benchmark client
(runs from the engine's image: PATH).

Flags and output keys are those of NVIDIA/TensorRT-LLM ``tensorrt_llm/serve/scripts/benchmark_serving.py``:

* ``--backend openai`` posts to ``<base-url>/v1/completions``; ``--non-streaming`` turns streaming
  off; ``--ignore-eos`` forces the full output length.
* ``--dataset-name random --random-ids`` draws random token ids (no ShareGPT download);
  ``--random-range-ratio 0`` makes every length exact (lengths are drawn from
  ``[len × (1 − r), len × (1 + r)]``). With a ``dataset_file``: ``--dataset-name trtllm_custom
  --dataset-path FILE``.
* ``--save-result --result-dir OUT --result-filename result.json`` writes one JSON object.
* Warm-up: the tool has only its single "initial test run" prompt; ``warmup_requests == 0`` turns it
  off with ``--no-test-input``. There is no per-request timeout flag.
* Percentile keys are ``p{P}_{metric}_ms`` for every metric in ``--percentile-metrics`` and every P
  in ``--metric-percentiles``; we ask for ``ttft,tpot,itl,e2el`` × ``50,90,99``.

Keys read: ``completed``, ``num_prompts``, ``total_input_tokens``, ``total_output_tokens``,
``duration``, ``request_throughput``, ``output_throughput``, ``total_token_throughput``,
``user_throughput``, ``{mean,median,p90,p99}_{ttft,tpot,itl,e2el}_ms``. Latencies are already ms.
Failed = ``num_prompts`` − ``completed`` (the tool prints, but does not save, its failed count).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from perfsanity.load.base import (
    ClientBase,
    ClientCommand,
    ClientOutputError,
    ClientRun,
    finite,
    per_gpu,
    read_json,
    stats,
    validate,
)
from perfsanity.load.results_json import ConcurrencyResult

RESULT_FILE = "result.json"
PERCENTILE_METRICS = "ttft,tpot,itl,e2el"
METRIC_PERCENTILES = "50,90,99"


class TrtllmResult(BaseModel):
    """The ``--save-result`` JSON (without ``--save-detailed``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    backend: str | None = None
    model_id: str | None = None
    num_prompts: int | None = Field(default=None, ge=0)
    max_concurrency: int | None = None
    duration: float = Field(ge=0)
    completed: int = Field(ge=0)
    total_input_tokens: int = Field(ge=0)
    total_output_tokens: int = Field(ge=0)
    request_throughput: float
    output_throughput: float
    total_token_throughput: float | None = None
    user_throughput: float | None = None
    mean_ttft_ms: float
    median_ttft_ms: float
    p90_ttft_ms: float | None = None
    p99_ttft_ms: float | None = None
    mean_tpot_ms: float
    median_tpot_ms: float
    p90_tpot_ms: float | None = None
    p99_tpot_ms: float | None = None
    mean_itl_ms: float
    median_itl_ms: float
    p90_itl_ms: float | None = None
    p99_itl_ms: float | None = None
    mean_e2el_ms: float | None = None
    median_e2el_ms: float | None = None
    p90_e2el_ms: float | None = None
    p99_e2el_ms: float | None = None


class TrtllmBenchClient(ClientBase):
    name = "trtllm-benchmark-serving"
    module = "tensorrt_llm.serve.scripts.benchmark_serving"

    def command(self, run: ClientRun) -> ClientCommand:
        argv: list[str] = [
            "python3", "-m", self.module,
            "--backend", "openai",
            "--base-url", run.url,
            "--model", run.model_name,
        ]
        if run.tokenizer:
            argv += ["--tokenizer", run.tokenizer]
        if run.dataset_file:
            argv += ["--dataset-name", "trtllm_custom", "--dataset-path", run.dataset_file]
        else:
            argv += [
                "--dataset-name", "random", "--random-ids",
                "--random-input-len", str(run.input_length),
                "--random-output-len", str(run.output_length),
                "--random-range-ratio", "0",
            ]
        argv += [
            "--num-prompts", str(run.num_prompts),
            "--max-concurrency", str(run.concurrency),
            "--ignore-eos",
            "--seed", str(run.random_seed),
            "--percentile-metrics", PERCENTILE_METRICS,
            "--metric-percentiles", METRIC_PERCENTILES,
            "--disable-tqdm",
        ]
        if not run.streaming:
            argv.append("--non-streaming")
        if run.warmup_requests == 0:
            argv.append("--no-test-input")
        argv += [
            "--save-result",
            "--result-dir", str(run.out_dir),
            "--result-filename", RESULT_FILE,
        ]
        return ClientCommand(argv=tuple(argv), tool=self.tool)

    def parse(self, run: ClientRun) -> ConcurrencyResult:
        path = run.out_dir / RESULT_FILE
        data = read_json(path)
        if not isinstance(data, dict):
            raise ClientOutputError(path, f"top level must be an object, got {type(data).__name__}")
        r = validate(TrtllmResult, data, path)
        sent = r.num_prompts if r.num_prompts is not None else run.num_prompts
        if r.completed > sent:
            raise ClientOutputError(path, f"completed={r.completed} exceeds num_prompts={sent}", "completed")
        out_tput = finite(r.output_throughput)
        return ConcurrencyResult(
            concurrency=run.concurrency,
            client=self.name,
            requested=run.num_prompts,
            completed=r.completed,
            failed=max(run.num_prompts - r.completed, sent - r.completed),
            input_tokens=r.total_input_tokens,
            output_tokens=r.total_output_tokens,
            duration_s=finite(r.duration),
            request_throughput=finite(r.request_throughput),
            output_token_throughput=out_tput,
            total_token_throughput=finite(r.total_token_throughput),
            output_token_throughput_per_user=finite(r.user_throughput),
            output_token_throughput_per_gpu=per_gpu(out_tput, run.total_gpus),
            ttft=stats(r.mean_ttft_ms, r.median_ttft_ms, r.p90_ttft_ms, r.p99_ttft_ms),
            tpot=stats(r.mean_tpot_ms, r.median_tpot_ms, r.p90_tpot_ms, r.p99_tpot_ms),
            itl=stats(r.mean_itl_ms, r.median_itl_ms, r.p90_itl_ms, r.p99_itl_ms),
            e2e=stats(r.mean_e2el_ms, r.median_e2el_ms, r.p90_e2el_ms, r.p99_e2el_ms),
            raw_path=str(path),
        )


CLIENT = TrtllmBenchClient()
