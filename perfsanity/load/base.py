"""The benchmark-client interface: what the BENCHMARK role asks a load generator for.

A client turns one :class:`ClientRun` (one concurrency) into a :class:`ClientCommand` — argv plus the
environment changes of one process — and afterwards parses what that process wrote into
``run.out_dir`` into one typed :class:`~perfsanity.load.results_json.ConcurrencyResult`. Like backends, a client
does no I/O in ``command`` (golden-testable); ``parse`` only reads files.

Every client's output is parsed with a pydantic schema of the JSON it writes; a missing file, bad
JSON or a missing/ill-typed field is a :class:`ClientOutputError` naming the file and the field.

The two benchmark_serving tools (sglang, TensorRT-LLM) share one schema family, one argv head and one
result builder here (:class:`ServingBenchResult`, :func:`serving_result_model`,
:class:`ServingBenchClient`, :func:`serving_result`); their modules hold only what differs.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from perfsanity.common.errors import ConfigError, PerfsanityError
from perfsanity.load.results_json import ConcurrencyResult, LatencyStats


def check_benchmark_type(client: ClientBase, benchmark_type: str, *, source: str | None) -> None:
    """A ConfigError naming ``benchmark.client`` when ``client`` cannot measure ``benchmark_type``."""
    if benchmark_type not in client.benchmark_types:
        can = ", ".join(sorted(client.benchmark_types))
        raise ConfigError(source, "benchmark.client", f"{client.name} cannot run benchmark.type {benchmark_type} "
                          f"(it runs: {can}); use a client that can, e.g. aiperf")


class ClientOutputError(PerfsanityError):
    """A client's output file is missing or malformed; names the file and the missing/bad field."""

    exit_code = 6

    def __init__(self, path: Path | str, message: str, field_name: str | None = None) -> None:
        self.path = str(path)
        self.field_name = field_name
        self.message = message
        where = f"{path}: "
        key = f"field {field_name!r}: " if field_name else ""
        super().__init__(f"{where}{key}{message}")


@dataclass(frozen=True)
class ClientRun:
    """One client invocation: one concurrency against one front door."""

    url: str  # front door base URL, e.g. http://127.0.0.1:8000 (no /v1 suffix)
    model_name: str  # the served model name sent in requests
    tokenizer: str | None  # local tokenizer directory (None: the client resolves model_name itself)
    concurrency: int
    num_prompts: int
    input_length: int
    output_length: int
    streaming: bool
    request_timeout_s: float
    random_seed: int
    warmup_requests: int
    dataset_file: str | None
    out_dir: Path
    total_gpus: int
    request_rate: float | None = None  # requests/s (benchmark.type request_rate); None: as fast as concurrency allows
    arrival: str | None = None  # constant | poisson, with request_rate
    trace_file: str | None = None  # mooncake JSONL trace to replay on its own timestamps (benchmark.type trace)


@dataclass(frozen=True)
class ClientCommand:
    """One client process to start (in ``run.out_dir`` as working directory)."""

    argv: tuple[str, ...]
    env_set: Mapping[str, str] = field(default_factory=dict)  # added to the environment
    env_unset: tuple[str, ...] = ()  # removed from the environment (before env_set is applied)
    tool: str | None = None  # perfsanity.engines.tooling env whose interpreter/scripts run argv (None: PATH)


class BenchmarkClient(Protocol):
    """One load generator. Implementations are module-level ``CLIENT`` objects, instances of a
    :class:`ClientBase` subclass (which holds the default of every capability below)."""

    #: the ``benchmark.client`` value (a key of the registry and of ``perfsanity.spec.config.Client``)
    name: str
    #: the perfsanity.engines.tooling env this client runs from, installed on each node by the install
    #: step (None: the client is on PATH, e.g. in the engine's container)
    tool: str | None
    #: it reads the token-exact prompt files the BENCHMARK pre-generates while the servers start
    #: (perfsanity.run.prompt_files; the writer runs under this client's tool env)
    reads_prompt_files: bool

    def command(self, run: ClientRun) -> ClientCommand:
        """The process that benchmarks ``run`` and writes its results into ``run.out_dir``."""
        ...

    def parse(self, run: ClientRun) -> ConcurrencyResult:
        """Read what :meth:`command` wrote in ``run.out_dir``; raise ClientOutputError when it is unusable."""
        ...


class ClientBase(ABC):
    """The defaults of every :class:`BenchmarkClient` capability: no tool env (the client is on PATH),
    plain concurrency points only (``manual`` runs no client)."""

    name: ClassVar[str]
    tool: str | None = None
    #: the ``benchmark.type`` values this client can measure (perfsanity.spec.benchmark_types)
    benchmark_types: frozenset[str] = frozenset({"concurrency", "manual"})
    reads_prompt_files: bool = False

    @abstractmethod
    def command(self, run: ClientRun) -> ClientCommand: ...

    @abstractmethod
    def parse(self, run: ClientRun) -> ConcurrencyResult: ...


# ---------------------------------------------------------------------------------------
# Helpers shared by the client modules
# ---------------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)
S = TypeVar("S", bound="ServingBenchResult")


def read_text(path: Path) -> str:
    """The text of a client's output file; missing, unreadable or blank files are ClientOutputErrors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClientOutputError(path, "file not found (the client wrote no result)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientOutputError(path, f"cannot read: {exc}") from None
    if not text.strip():
        raise ClientOutputError(path, "file is empty")
    return text


def read_json(path: Path) -> Any:
    """Parsed JSON of ``path``; missing/unreadable/invalid files are ClientOutputErrors."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClientOutputError(path, f"invalid JSON: {exc}") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """:func:`read_json` of a file whose top level must be a JSON object."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ClientOutputError(path, f"top level must be an object, got {type(data).__name__}")
    return data


def validate(model: type[M], data: Any, path: Path, *, prefix: str = "") -> M:
    """``model.model_validate(data)``; the first validation error names the field (dotted path)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        loc = f"{prefix}{loc}" if loc else prefix.rstrip(".") or None
        if err["type"] == "missing":
            raise ClientOutputError(path, "is missing", loc) from None
        raise ClientOutputError(path, f"bad value {_short(err.get('input'))}: {err['msg']}", loc) from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def finite(value: float | None) -> float | None:
    """``value`` as float, or None when absent or NaN/inf (numpy writes NaN for empty samples)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def stats(mean: float | None, median: float | None, p90: float | None, p99: float | None) -> LatencyStats:
    return LatencyStats(mean=finite(mean), median=finite(median), p90=finite(p90), p99=finite(p99))


def per_gpu(output_throughput: float | None, total_gpus: int) -> float | None:
    """Output token throughput divided by the deployment's GPUs (None without GPUs or throughput)."""
    if output_throughput is None or total_gpus <= 0:
        return None
    return output_throughput / total_gpus


# ---------------------------------------------------------------------------------------
# The benchmark_serving family (sglang bench_serving, TensorRT-LLM benchmark_serving)
# ---------------------------------------------------------------------------------------
#
# Both tools descend from vLLM's benchmark_serving.py and save one flat JSON object with the same
# scalar keys and latency keys ``{mean,median,p90,p99}_{metric}_ms`` (already milliseconds). They
# differ only in which latency keys are always written, the e2e metric's name, the total-throughput
# key and whether a per-user throughput is saved.

STAT_PREFIXES = ("mean", "median", "p90", "p99")


class ServingBenchResult(BaseModel):
    """The scalar keys every benchmark_serving tool saves; subclasses add their latency keys
    (:func:`latency_fields`) and tool-specific keys."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    backend: str | None = None
    max_concurrency: int | None = None
    duration: float = Field(ge=0)
    completed: int = Field(ge=0)
    total_input_tokens: int = Field(ge=0)
    total_output_tokens: int = Field(ge=0)
    request_throughput: float
    output_throughput: float


def latency_fields(metric: str, *, required: tuple[str, ...] = ("mean", "median")) -> dict[str, Any]:
    """pydantic field definitions (for :func:`pydantic.create_model`) of ``{stat}_{metric}_ms`` for
    every stat of :data:`STAT_PREFIXES`: the ``required`` stats are floats the file must hold, the
    others are optional (None when the tool's version does not write them)."""
    return {f"{stat}_{metric}_ms": (float, ...) if stat in required else (float | None, None)
            for stat in STAT_PREFIXES}


def serving_result_model(
    name: str,
    base: type[S],
    *,
    doc: str,
    required: tuple[str, ...],
    e2e_metric: str,
    e2e_required: tuple[str, ...],
) -> type[S]:
    """The pydantic model of one tool's saved result: ``base`` (a :class:`ServingBenchResult` with the
    tool's own scalar keys) plus the latency keys of ``ttft``, ``tpot``, ``itl`` (``required`` stats
    always written) and of ``e2e_metric`` (``e2e_required`` stats always written)."""
    fields: dict[str, Any] = {}
    for metric in ("ttft", "tpot", "itl"):
        fields |= latency_fields(metric, required=required)
    fields |= latency_fields(e2e_metric, required=e2e_required)
    return create_model(name, __doc__=doc, __base__=base, **fields)


class ServingBenchClient(ClientBase):
    """A benchmark_serving tool run as ``python3 -m <module>`` from the engine's image (PATH)."""

    module: ClassVar[str]  # the tool's ``python3 -m`` module
    backend_flag: ClassVar[str]  # its ``--backend`` value that posts to ``<base-url>/v1/completions``
    file_dataset: ClassVar[str]  # its ``--dataset-name`` that reads a ``dataset_file`` (``--dataset-path``)

    @abstractmethod
    def synthetic_dataset_argv(self, run: ClientRun) -> list[str]:
        """The dataset flags of a run without a ``dataset_file`` (random token ids)."""

    def head_argv(self, run: ClientRun) -> list[str]:
        """The flags both tools spell alike, in this order: module, ``--backend``, front door, model,
        tokenizer, then the dataset (``file_dataset`` with the file, else the synthetic flags)."""
        argv = [
            "python3", "-m", self.module,
            "--backend", self.backend_flag,
            "--base-url", run.url,
            "--model", run.model_name,
        ]
        if run.tokenizer:
            argv += ["--tokenizer", run.tokenizer]
        if run.dataset_file:
            argv += ["--dataset-name", self.file_dataset, "--dataset-path", run.dataset_file]
        else:
            argv += self.synthetic_dataset_argv(run)
        return argv


def latency_stats(result: BaseModel, metric: str) -> LatencyStats:
    """The :class:`LatencyStats` of ``metric`` read from ``result``'s ``{stat}_{metric}_ms`` keys."""
    mean, median, p90, p99 = (getattr(result, f"{stat}_{metric}_ms") for stat in STAT_PREFIXES)
    return stats(mean, median, p90, p99)


def serving_result(
    client: str,
    run: ClientRun,
    path: Path,
    r: ServingBenchResult,
    *,
    failed: int,
    total_token_throughput: float | None,
    per_user: float | None,
    e2e_metric: str,
) -> ConcurrencyResult:
    """One :class:`ConcurrencyResult` from a benchmark_serving tool's saved result ``r`` (read from
    ``path``); the latency metrics ``ttft``/``tpot``/``itl`` and ``e2e_metric`` come from
    :func:`latency_stats`."""
    out_tput = finite(r.output_throughput)
    return ConcurrencyResult(
        concurrency=run.concurrency,
        client=client,
        requested=run.num_prompts,
        completed=r.completed,
        failed=failed,
        input_tokens=r.total_input_tokens,
        output_tokens=r.total_output_tokens,
        duration_s=finite(r.duration),
        request_throughput=finite(r.request_throughput),
        output_token_throughput=out_tput,
        total_token_throughput=finite(total_token_throughput),
        output_token_throughput_per_user=finite(per_user),
        output_token_throughput_per_gpu=per_gpu(out_tput, run.total_gpus),
        ttft=latency_stats(r, "ttft"),
        tpot=latency_stats(r, "tpot"),
        itl=latency_stats(r, "itl"),
        e2e=latency_stats(r, e2e_metric),
        raw_path=str(path),
    )
