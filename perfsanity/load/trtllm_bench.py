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

from pydantic import Field

from perfsanity.load.base import (
    ClientCommand,
    ClientOutputError,
    ClientRun,
    ServingBenchClient,
    ServingBenchResult,
    read_json_object,
    serving_result,
    serving_result_model,
    validate,
)
from perfsanity.load.results_json import ConcurrencyResult

RESULT_FILE = "result.json"
PERCENTILE_METRICS = "ttft,tpot,itl,e2el"
METRIC_PERCENTILES = "50,90,99"


class _TrtllmScalars(ServingBenchResult):
    model_id: str | None = None
    num_prompts: int | None = Field(default=None, ge=0)
    total_token_throughput: float | None = None
    user_throughput: float | None = None


TrtllmResult = serving_result_model(
    "TrtllmResult",
    _TrtllmScalars,
    doc="The ``--save-result`` JSON (without ``--save-detailed``).",
    required=("mean", "median"),
    e2e_metric="e2el",
    e2e_required=(),
)


class TrtllmBenchClient(ServingBenchClient):
    name = "trtllm-benchmark-serving"
    backend_flag = "openai"
    module = "tensorrt_llm.serve.scripts.benchmark_serving"

    file_dataset = "trtllm_custom"

    def synthetic_dataset_argv(self, run: ClientRun) -> list[str]:
        return [
            "--dataset-name", "random", "--random-ids",
            "--random-input-len", str(run.input_length),
            "--random-output-len", str(run.output_length),
            "--random-range-ratio", "0",
        ]

    def command(self, run: ClientRun) -> ClientCommand:
        argv = self.head_argv(run)
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
        r = validate(TrtllmResult, read_json_object(path), path)
        sent = r.num_prompts if r.num_prompts is not None else run.num_prompts
        if r.completed > sent:
            raise ClientOutputError(path, f"completed={r.completed} exceeds num_prompts={sent}", "completed")
        return serving_result(
            self.name, run, path, r,
            failed=max(run.num_prompts - r.completed, sent - r.completed),
            total_token_throughput=r.total_token_throughput,
            per_user=r.user_throughput,
            e2e_metric="e2el",
        )


CLIENT = TrtllmBenchClient()
