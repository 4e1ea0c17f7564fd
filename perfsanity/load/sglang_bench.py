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

from perfsanity.load.base import (
    ClientCommand,
    ClientOutputError,
    ClientRun,
    ServingBenchClient,
    ServingBenchResult,
    read_text,
    serving_result,
    serving_result_model,
    validate,
)
from perfsanity.load.results_json import ConcurrencyResult

RESULT_FILE = "result.jsonl"
ALWAYS_WRITTEN = ("mean", "median", "p99")  # latency stats of ttft/tpot/itl every version writes


class _SglangScalars(ServingBenchResult):
    total_throughput: float | None = None  # newer versions only


SglangResult = serving_result_model(
    "SglangResult",
    _SglangScalars,
    doc="One line of ``bench_serving --output-file`` (the ``result`` dict of ``benchmark()``).",
    required=ALWAYS_WRITTEN,
    e2e_metric="e2e_latency",
    e2e_required=("mean", "median"),
)


class SglangBenchClient(ServingBenchClient):
    name = "sglang-bench-serving"
    backend_flag = "sglang-oai"
    module = "sglang.bench_serving"

    file_dataset = "random"  # ShareGPT-format text cut to the lengths

    def synthetic_dataset_argv(self, run: ClientRun) -> list[str]:
        return ["--dataset-name", "random-ids"]

    def command(self, run: ClientRun) -> ClientCommand:
        argv = self.head_argv(run)
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
        lines = [ln for ln in read_text(path).splitlines() if ln.strip()]
        try:
            data = json.loads(lines[-1])
        except json.JSONDecodeError as exc:
            raise ClientOutputError(path, f"last line is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ClientOutputError(path, f"last line must be a JSON object, got {type(data).__name__}")
        r = validate(SglangResult, data, path)
        return serving_result(
            self.name, run, path, r,
            failed=max(run.num_prompts - r.completed, 0),
            total_token_throughput=r.total_throughput,
            per_user=None,  # bench_serving does not report it
            e2e_metric="e2e_latency",
        )


CLIENT = SglangBenchClient()
