"""The lean built-in client (``benchmark.client: perfsanity``): :mod:`perfsanity.load.lean` (stdlib
only, run as a script) run by the harness's own interpreter, one process per client run, starting in ~0.1 s where aiperf 0.13 needs
4–5 s (benchmarks/RESULTS.md, orchestration). The default for configs whose backend needs no GPU (the
CPU lanes); aiperf stays the default for GPU configs. Its numbers are cross-validated against aiperf
on the same server (tests/clients/test_lean_vs_aiperf.py, benchmarks/lean_vs_aiperf.py).

Output: ``perfsanity_client.json`` (:data:`perfsanity.load.lean.SUMMARY_FILE`), parsed with
:class:`LeanSummary`; the health figures feed :func:`perfsanity.load.validity.mark` under the same
``client_stats`` keys as aiperf's.
"""

from __future__ import annotations

import sys

from pydantic import BaseModel, ConfigDict

from perfsanity.load import lean
from perfsanity.load.base import (
    ClientBase,
    ClientCommand,
    ClientRun,
    finite,
    per_gpu,
    read_json_object,
    validate,
)
from perfsanity.load.lean import SUMMARY_FILE
from perfsanity.load.results_json import ConcurrencyResult, LatencyStats


class LeanStats(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None

    def latency(self) -> LatencyStats:
        return LatencyStats(mean=finite(self.mean), median=finite(self.p50), p90=finite(self.p90),
                            p99=finite(self.p99))


class LeanSummary(BaseModel):
    """What :mod:`perfsanity.load.lean` writes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client: str
    concurrency: int
    requested: int
    first_request_unix: float | None
    completed: int
    failed: int
    errors: dict[str, int]
    input_tokens: int
    output_tokens: int
    duration_s: float
    request_throughput: float | None
    output_token_throughput: float | None
    total_token_throughput: float | None
    output_token_throughput_per_user: float | None
    ttft_ms: LeanStats
    tpot_ms: LeanStats
    itl_ms: LeanStats
    e2e_ms: LeanStats
    credit_to_start_ms: LeanStats
    credit_to_start_trimmed_mean_ms: float | None
    effective_concurrency: float | None
    chunks_per_request_p50: float | None
    output_tokens_per_request_p50: float | None


class PerfsanityClient(ClientBase):
    name = "perfsanity"
    tool = None  # the harness's interpreter: nothing to install

    def command(self, run: ClientRun) -> ClientCommand:
        argv = [sys.executable, lean.__file__, "--url", run.url, "--model", run.model_name,
                "--concurrency", str(run.concurrency), "--requests", str(run.num_prompts),
                "--input-tokens", str(run.input_length), "--output-tokens", str(run.output_length),
                "--timeout", str(run.request_timeout_s), "--seed", str(run.random_seed),
                "--warmup", str(run.warmup_requests), "--out", str(run.out_dir / SUMMARY_FILE)]
        if not run.streaming:
            argv.append("--no-stream")
        if run.tokenizer:
            argv += ["--tokenizer", run.tokenizer]
        return ClientCommand(argv=tuple(argv), tool=self.tool)

    def parse(self, run: ClientRun) -> ConcurrencyResult:
        path = run.out_dir / SUMMARY_FILE
        s = validate(LeanSummary, read_json_object(path), path)
        stats = {"credit_to_start_mean_ms": s.credit_to_start_ms.mean, "credit_to_start_p99_ms": s.credit_to_start_ms.p99,
                 "credit_to_start_trimmed_mean_ms": s.credit_to_start_trimmed_mean_ms,
                 "effective_concurrency": s.effective_concurrency, "chunks_per_request_p50": s.chunks_per_request_p50,
                 "output_tokens_per_request_p50": s.output_tokens_per_request_p50}
        return ConcurrencyResult(
            concurrency=run.concurrency, client=self.name, requested=run.num_prompts, completed=s.completed,
            failed=s.failed, input_tokens=s.input_tokens, output_tokens=s.output_tokens, duration_s=s.duration_s,
            request_throughput=finite(s.request_throughput), output_token_throughput=finite(s.output_token_throughput),
            total_token_throughput=finite(s.total_token_throughput),
            output_token_throughput_per_user=finite(s.output_token_throughput_per_user),
            output_token_throughput_per_gpu=per_gpu(finite(s.output_token_throughput), run.total_gpus),
            ttft=s.ttft_ms.latency(), tpot=s.tpot_ms.latency(), itl=s.itl_ms.latency(), e2e=s.e2e_ms.latency(),
            raw_path=str(path), client_stats={k: float(v) for k, v in stats.items() if finite(v) is not None},
        )


CLIENT = PerfsanityClient()
