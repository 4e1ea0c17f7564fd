"""The benchmark-client interface: what the BENCHMARK role asks a load generator for.

A client turns one :class:`ClientRun` (one concurrency) into a :class:`ClientCommand` — argv plus the
environment changes of one process — and afterwards parses what that process wrote into
``run.out_dir`` into one typed :class:`~perfsanity.load.results_json.ConcurrencyResult`. Like backends, a client
does no I/O in ``command`` (golden-testable); ``parse`` only reads files.

Every client's output is parsed with a pydantic schema of the JSON it writes; a missing file, bad
JSON or a missing/ill-typed field is a :class:`ClientOutputError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from perfsanity.common.errors import PerfsanityError
from perfsanity.load.results_json import ConcurrencyResult, LatencyStats


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

    def command(self, run: ClientRun) -> ClientCommand:
        """The process that benchmarks ``run`` and writes its results into ``run.out_dir``."""
        ...

    def parse(self, run: ClientRun) -> ConcurrencyResult:
        """Read what :meth:`command` wrote in ``run.out_dir``; raise ClientOutputError when it is unusable."""
        ...


class ClientBase(ABC):
    """The defaults of every :class:`BenchmarkClient` capability: no tool env (the client is on PATH)."""

    name: ClassVar[str]
    tool: str | None = None

    @abstractmethod
    def command(self, run: ClientRun) -> ClientCommand: ...

    @abstractmethod
    def parse(self, run: ClientRun) -> ConcurrencyResult: ...


# ---------------------------------------------------------------------------------------
# Helpers shared by the client modules
# ---------------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def read_json(path: Path) -> Any:
    """Parsed JSON of ``path``; missing/unreadable/invalid files are ClientOutputErrors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClientOutputError(path, "file not found (the client wrote no result)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientOutputError(path, f"cannot read: {exc}") from None
    if not text.strip():
        raise ClientOutputError(path, "file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClientOutputError(path, f"invalid JSON: {exc}") from None


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
