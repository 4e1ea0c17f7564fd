"""Test configs: one YAML per test, loaded, merged with cluster defaults and validated into a frozen
:class:`Config`.

Sections and keys follow TensorRT-LLM's public perf-sanity configs (``metadata``, ``slurm``,
``hardware``, ``environment``, ``worker_config.ctx/gen``, ``benchmark``, ``accuracy``, ``profiling``)
plus two of ours: ``timeouts`` (every wait's bound) and ``gate`` (regression thresholds).

Harness-owned sections reject unknown keys (a typo such as ``concurency_list`` is an error, with a
"did you mean" hint). Engine sections (``worker_config.*``) pass through verbatim; only the parallelism
keys there are typed, because the topology is computed from them.

Every error is a :class:`~perfsanity.common.errors.ConfigError` naming the file, the key path, the bad value
and what is allowed.
"""

from __future__ import annotations

import difflib
import re
import shlex
import types
import typing
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from perfsanity.common.errors import ConfigError
from perfsanity.spec import upstream
from perfsanity.spec.benchmark_types import DEFAULT_TYPE, Arrival, BenchmarkType
from perfsanity.spec.benchmark_types import check as check_benchmark
from perfsanity.spec.envvars import EnvAssignment, parse_env_string, to_string
from perfsanity.spec.infra import Frontend, Infra
from perfsanity.spec.loader import read_yaml
from perfsanity.spec.preflight import Preflight

#: ``metadata.backend`` values: the keys of ``perfsanity.engines``' registry, which this layer cannot import
#: (tests/backends/test_conformance.py fails when the two differ)
Backend = Literal["trtllm", "sglang", "dynamo-sglang", "dynamo-mocker"]
Mode = Literal["e2e", "gen_only", "gen_only_no_context"]
#: ``benchmark.client`` values: the keys of ``perfsanity.load``'s registry (same conformance test)
Client = Literal["aiperf", "sglang-bench-serving", "trtllm-benchmark-serving", "perfsanity"]
Kind = Literal["disagg", "aggr"]

MAX_TIMEOUT_S = 7 * 24 * 3600
#: repeats per concurrency when ``benchmark.repeats`` is not set: the smallest n that detects a 5 % drop
#: at 2 % run-to-run noise on the first night with ≥ 95 % chance while keeping false alarms ≤ 1 % per
#: job-night over 6 metrics × 2 concurrencies (docs/gate.md; tests/gate/test_gatestats.py checks it)
DEFAULT_REPEATS = 5
_JOB_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d{1,3})(?::(\d{2}))?(?::(\d{2}))?$")


def _types_of(annotation: Any) -> set[Any]:
    args = typing.get_args(annotation)
    return set(args) if args and typing.get_origin(annotation) in (typing.Union, types.UnionType) else {annotation}


def _control_chars(text: str) -> str | None:
    """The first control character of ``text`` (NUL, newline, ESC, ...) as an escape, else None."""
    for ch in text:
        if unicodedata.category(ch) == "Cc":
            return repr(ch)[1:-1]
    return None


def check_scalar(annotation: Any, value: Any) -> Any:
    """Strict scalars of a harness-owned field: a boolean is no number (``true`` is not 1) and a number
    no boolean, and a string holds no control character (strings reach command lines and launch.sh)."""
    kinds = _types_of(annotation)
    if isinstance(value, bool):
        if kinds & {int, float} and bool not in kinds:
            raise ValueError("must be a number, not a boolean")
    elif isinstance(value, (int, float)) and bool in kinds and not kinds & {int, float}:
        raise ValueError("must be true or false, not a number")
    elif isinstance(value, str) and (bad := _control_chars(value)) is not None:
        raise ValueError(f"contains the control character {bad}")
    return value


class _Strict(BaseModel):
    """Harness-owned section: frozen, unknown keys are errors, scalars are strict (:func:`check_scalar`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalar(cls, v: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        return v if field is None else check_scalar(field.annotation, v)


def _env_field(value: Any) -> tuple[EnvAssignment, ...]:
    if value is None:
        return ()
    if isinstance(value, tuple) and all(isinstance(v, EnvAssignment) for v in value):
        return value
    if isinstance(value, Mapping):
        value = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in value.items())
    if not isinstance(value, str):
        raise ValueError("must be a string of NAME=value pairs (or a mapping)")
    return parse_env_string(value)


class Metadata(_Strict):
    model_name: str = Field(min_length=1)
    precision: str | None = None
    model_dir_name: str | None = None
    supported_gpus: tuple[str, ...] = ()
    benchmark_type: str | None = None
    backend: Backend = "trtllm"
    script_file: str | None = None  # accepted for compatibility with public configs; unused
    # engine release the config targets (perfsanity/engines/facts picks what it accepts), and engine
    # keys newer than those facts, passed through unchecked
    engine_version: str | None = None
    engine_keys_unchecked: tuple[str, ...] = ()


def job_time_seconds(text: str) -> int:
    """Seconds in a SLURM time string: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM[:SS]``."""
    m = _JOB_TIME_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a SLURM time (HH:MM:SS, MM, or D-HH:MM:SS)")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        return int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    if c is not None:  # HH:MM:SS
        return int(a) * 3600 + int(b) * 60 + int(c)
    if b is not None:  # MM:SS
        return int(a) * 60 + int(b)
    return int(a) * 60  # MM


class Slurm(_Strict):
    partition: str | None = None
    account: str | None = None
    job_time: str = "01:00:00"
    job_name: str = "perfsanity"
    extra_args: str = ""
    timeout: int = Field(default=3600, ge=60, le=MAX_TIMEOUT_S, description="whole-job bound, seconds")
    numa_bind: bool = False
    container_image: str | None = None
    container_mounts: str | None = None
    mpi: str | None = Field(default=None, description="srun --mpi value for worker steps, e.g. pmix")
    script_file: str | None = None  # compatibility; unused

    @field_validator("job_time")
    @classmethod
    def _job_time(cls, v: str) -> str:
        job_time_seconds(v)
        return v

    @field_validator("extra_args")
    @classmethod
    def _extra_args(cls, v: str) -> str:
        try:
            shlex.split(v)
        except ValueError as exc:
            raise ValueError(f"cannot be split into arguments: {exc}") from None
        return v

    @property
    def extra_args_list(self) -> tuple[str, ...]:
        return tuple(shlex.split(self.extra_args))


class Hardware(_Strict):
    gpus_per_node: int = Field(default=4, ge=1, le=64)
    num_ctx_servers: int = Field(default=1, ge=0, le=1024)
    num_gen_servers: int = Field(default=1, ge=0, le=1024)
    num_servers: int = Field(default=1, ge=1, le=1024, description="aggregated configs only")
    gpu_type: str | None = None
    pack: bool | None = Field(
        default=None,
        description="pack servers smaller than a node onto shared nodes (perfsanity.spec.topology); "
        "unset: packed in direct mode, upstream's one-node-set-per-server rule in L0 mode",
    )


ENV_FIELDS = ("worker_env_var", "ctx_worker_env_var", "gen_worker_env_var", "server_env_var", "benchmark_env_var")


class Environment(_Strict):
    worker_env_var: tuple[EnvAssignment, ...] = ()
    ctx_worker_env_var: tuple[EnvAssignment, ...] = ()
    gen_worker_env_var: tuple[EnvAssignment, ...] = ()
    server_env_var: tuple[EnvAssignment, ...] = ()
    benchmark_env_var: tuple[EnvAssignment, ...] = ()
    model_path: str | None = None
    work_dir: str | None = None
    # accepted for compatibility with public configs (slurm.container_* take precedence)
    container_image: str | None = None
    container_mount: str | None = None
    trtllm_repo: str | None = None
    build_wheel: bool = False
    #: wheels the per-node install step installs for the job's servers (perfsanity.run.wheels)
    wheels: tuple[str, ...] = ()

    @field_validator(
        "worker_env_var",
        "ctx_worker_env_var",
        "gen_worker_env_var",
        "server_env_var",
        "benchmark_env_var",
        mode="before",
    )
    @classmethod
    def _env(cls, v: Any) -> tuple[EnvAssignment, ...]:
        return _env_field(v)


class WorkerConfig(BaseModel):
    """Engine-native settings of one server role, passed to the engine verbatim.

    Only the parallelism keys are typed (the topology is computed from them); every other key goes
    through untouched, so any engine option can be used without a harness change.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    tensor_parallel_size: int = Field(default=1, ge=1, le=4096)
    pipeline_parallel_size: int = Field(default=1, ge=1, le=4096)
    context_parallel_size: int = Field(default=1, ge=1, le=4096)
    moe_expert_parallel_size: int | None = Field(default=None, ge=1, le=4096)
    enable_attention_dp: bool = False

    @field_validator("tensor_parallel_size", "pipeline_parallel_size", "context_parallel_size",
                     "moe_expert_parallel_size", "enable_attention_dp", mode="before")
    @classmethod
    def _strict_scalar(cls, v: Any, info: ValidationInfo) -> Any:
        return check_scalar(cls.model_fields[info.field_name or ""].annotation, v)

    @model_validator(mode="before")
    @classmethod
    def _no_control_chars(cls, data: Any) -> Any:
        # engine options reach the engines' command lines and config files
        if isinstance(data, Mapping):
            bad = _first_control_char(data)
            if bad is not None:
                raise ValueError(f"{bad[0]} contains the control character {bad[1]}")
        return data

    @property
    def gpus(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.context_parallel_size

    def engine_options(self) -> dict[str, Any]:
        """All keys as written in the YAML (typed and pass-through), without defaults filled in."""
        return self.model_dump(exclude_unset=True)

    @model_validator(mode="after")
    def _moe(self) -> WorkerConfig:
        ep = self.moe_expert_parallel_size
        if ep is not None and ep > self.gpus:
            raise ValueError(
                f"moe_expert_parallel_size={ep} exceeds the server's GPUs "
                f"(tensor×pipeline×context = {self.gpus})"
            )
        return self


class WorkerConfigs(_Strict):
    ctx: WorkerConfig | None = None
    gen: WorkerConfig | None = None
    server: WorkerConfig | None = Field(default=None, description="aggregated configs only")


def _first_control_char(data: Any, path: str = "") -> tuple[str, str] | None:
    """(key path, escaped character) of the first string with a control character inside ``data``."""
    items = data.items() if isinstance(data, Mapping) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for k, v in items:
        where = f"{path}.{k}" if path else str(k)
        found = (_control_chars(v) if isinstance(v, str) else None) or (
            _control_chars(k) if isinstance(k, str) else None)
        if found is not None:
            return _short(where, 60) if len(where) > 60 else where, found
        sub = _first_control_char(v, where)
        if sub is not None:
            return sub
    return None


def _concurrency_list(value: Any) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise ValueError("must be integers such as '1 8 64' or [1, 8, 64]")
    if isinstance(value, int):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError("must be integers such as '1 8 64' or [1, 8, 64]")
    out: list[int] = []
    for item in items:
        if isinstance(item, bool):
            raise ValueError(f"{item!r} is not a positive integer")
        try:
            n = int(item)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(float('inf'))
            raise ValueError(f"{_short(item)} is not a positive integer") from None
        if isinstance(item, float) and item != n:
            raise ValueError(f"{item!r} is not a positive integer")
        if n < 1 or n > 1_000_000:
            raise ValueError(f"{_short(n)} is out of range 1..1000000")
        out.append(n)
    if not out:
        raise ValueError("needs at least one concurrency")
    if len(set(out)) != len(out):
        raise ValueError(f"has duplicates: {out}")
    return tuple(out)


class Benchmark(_Strict):
    mode: Mode = "e2e"
    type: BenchmarkType = Field(default=DEFAULT_TYPE, description="perfsanity.spec.benchmark_types")
    concurrency_list: tuple[int, ...] = (1,)
    request_rates: tuple[float, ...] = Field(default=(), description="requests/s, one point each (type request_rate)")
    arrival: Arrival = "constant"
    isl_osl: tuple[tuple[int, int], ...] = Field(default=(), description="[[isl, osl], ...]: one point per pair")
    trace_file: str | None = Field(default=None, description="mooncake JSONL trace (type trace)")
    input_length: int = Field(default=1024, ge=1, le=10_000_000)
    output_length: int = Field(default=1024, ge=1, le=10_000_000)
    multi_round: int = Field(default=1, ge=1, le=10_000)
    repeats: int | None = Field(default=None, ge=1, le=100, description="runs per concurrency; unset: "
                                "DEFAULT_REPEATS, stopping early when the next would pass timeouts.client_per_concurrency")
    benchmark_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    streaming: bool = True
    dataset_file: str | None = None
    client: Client | None = Field(default=None, description="unset: the lean built-in client 'perfsanity' where "
                                  "the backend needs no GPU (CPU lanes) and no dataset_file is given, else aiperf")
    max_failed_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="fraction of requests")
    request_timeout_s: float = Field(default=600.0, gt=0, le=MAX_TIMEOUT_S)
    warmup_requests: int = Field(default=0, ge=0, le=100_000)
    random_seed: int = 0
    pregenerate_dataset: bool = Field(default=True, description="aiperf's concurrency/request_rate points read "
                                      "token-exact prompts written once per job while the servers start "
                                      "(perfsanity.run.prompt_files); no effect with a dataset_file or another client")
    use_nv_sa_benchmark: bool = False  # compatibility; unused

    @field_validator("concurrency_list", mode="before")
    @classmethod
    def _conc(cls, v: Any) -> tuple[int, ...]:
        return _concurrency_list(v)

    @model_validator(mode="after")
    def _lean_client_has_no_dataset(self) -> Benchmark:
        if self.client == "perfsanity" and self.dataset_file:
            raise ValueError("client 'perfsanity' sends synthetic token-id prompts and reads no dataset_file; "
                             "use client: aiperf for a dataset")
        return self

    @field_validator("request_rates")
    @classmethod
    def _rates(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        for rate in v:
            if not (0 < rate <= 1_000_000):
                raise ValueError(f"{rate!r} is not a rate in (0, 1000000] requests/s")
        if len(set(v)) != len(v):
            raise ValueError("lists a rate twice")
        return v

    @field_validator("isl_osl", mode="before")
    @classmethod
    def _pair_shape(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            for item in v:
                if not isinstance(item, (list, tuple)) or len(item) != 2:
                    raise ValueError(f"{item!r}: each entry must be a pair [isl, osl], e.g. [[1024, 1024], [8192, 1024]]")
        return v

    @field_validator("isl_osl")
    @classmethod
    def _pairs(cls, v: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        for isl, osl in v:
            if not (1 <= isl <= 10_000_000 and 1 <= osl <= 10_000_000):
                raise ValueError(f"[{isl}, {osl}]: input and output lengths must be in [1, 10000000]")
        if len(set(v)) != len(v):
            raise ValueError("lists a pair twice")
        return v

    def num_prompts(self, concurrency: int) -> int:
        """Requests sent at one concurrency: concurrency × multi_round."""
        return concurrency * self.multi_round


_LM_EVAL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_WINDOW_RE = re.compile(r"^c([1-9][0-9]*)$")


class Accuracy(_Strict):
    """lm-eval after the perf run (perfsanity.load.lm_eval). ``enable_accuracy_test``, ``model``,
    ``tasks``, ``model_args_extra`` and ``env_var`` are upstream's names; the rest are ours."""

    enable_accuracy_test: bool = False
    model: Literal["local-completions", "local-chat-completions"] = "local-completions"
    tasks: str = "gsm8k"
    model_args_extra: str = ""
    env_var: tuple[EnvAssignment, ...] = ()
    #: a folder of lm-eval task YAMLs (lm-eval's ``--include_path``), repo-relative or absolute; the
    #: datasets they name must be local files (nothing is downloaded at run time)
    task_dir: str | None = None
    #: pass when the score is >= this (a fraction, 0..1); unset: the score is recorded, not judged
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    #: which of lm-eval's result keys is the score, as lm-eval names it (``<metric>,<filter>``, e.g.
    #: ``exact_match,none``); unset: the task's first non-stderr metric
    metric: str | None = None
    limit: int | None = Field(default=None, ge=1, le=1_000_000, description="examples per task (lm-eval --limit)")
    timeout_s: int = Field(default=1800, ge=1, le=MAX_TIMEOUT_S, description="bound of the whole lm-eval run")

    @field_validator("env_var", mode="before")
    @classmethod
    def _env(cls, v: Any) -> tuple[EnvAssignment, ...]:
        return _env_field(v)

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: str) -> str:
        names = [t.strip() for t in v.split(",")]
        if not all(names) or not all(_LM_EVAL_NAME.match(t) for t in names):
            raise ValueError(f"must be comma-separated lm-eval task names (letters, digits, _ . -), got {v!r}")
        return ",".join(names)

    @field_validator("model_args_extra")
    @classmethod
    def _model_args(cls, v: str) -> str:
        for item in filter(None, (p.strip() for p in v.split(","))):
            key = item.split("=", 1)[0]
            if "=" not in item or key in ("base_url", "model"):
                raise ValueError(f"must be key=value pairs other than base_url/model (the harness sets those), "
                                 f"got {item!r}")
        return v

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(self.tasks.split(","))


class Profiling(_Strict):
    nsys_on: bool = False
    nsys_args: str = "-t cuda,nvtx,python-gil -c cudaProfilerApi --cuda-graph-trace node"
    torch_profiler: bool = False
    profile_start_iter: int = Field(default=10, ge=0)
    profile_stop_iter: int = Field(default=20, ge=0)
    #: TensorRT-LLM's per-kind TLLM_PROFILE_START_STOP ("10-30"; upstream's names in
    #: examples/disaggregated/slurm/benchmark/config.yaml); unset: profile_start_iter-profile_stop_iter
    ctx_profile_range: str | None = Field(default=None, pattern=r"^[0-9]+-[0-9]+$")
    gen_profile_range: str | None = Field(default=None, pattern=r"^[0-9]+-[0-9]+$")
    #: benchmark points (``c<concurrency>``) over which the BENCHMARK drives the engine's torch
    #: profiler through its HTTP endpoints (SGLang's /start_profile and /stop_profile)
    windows: tuple[str, ...] = ()

    @field_validator("windows", mode="before")
    @classmethod
    def _windows(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.split()
        return v

    @field_validator("windows")
    @classmethod
    def _window_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [w for w in v if not _WINDOW_RE.match(w)]
        if bad:
            raise ValueError(f"each window is a benchmark point c<concurrency> (e.g. c8), got {bad}")
        return v

    @model_validator(mode="after")
    def _range(self) -> Profiling:
        if self.profile_stop_iter < self.profile_start_iter:
            raise ValueError("profile_stop_iter must be >= profile_start_iter")
        if self.windows and not self.torch_profiler:
            raise ValueError("profiling.windows needs profiling.torch_profiler: true")
        return self

    def window_concurrencies(self) -> tuple[int, ...]:
        return tuple(int(w[1:]) for w in self.windows)


class Timeouts(_Strict):
    """Bounds of each phase in seconds; each is also capped by ``slurm.timeout``."""

    install: int = Field(default=1800, ge=1, le=MAX_TIMEOUT_S)
    server_ready: int = Field(default=1800, ge=1, le=MAX_TIMEOUT_S)
    router_ready: int = Field(default=600, ge=1, le=MAX_TIMEOUT_S)
    client_per_concurrency: int = Field(default=3600, ge=1, le=MAX_TIMEOUT_S)
    shutdown: int = Field(default=60, ge=1, le=3600)


class Config(_Strict):
    """One validated test config (frozen). ``name`` and ``kind`` come from the file's name and place."""

    name: str
    kind: Kind = "disagg"
    source: str | None = None
    metadata: Metadata
    slurm: Slurm = Slurm()
    hardware: Hardware = Hardware()
    environment: Environment = Environment()
    worker_config: WorkerConfigs = WorkerConfigs()
    benchmark: Benchmark = Benchmark()
    accuracy: Accuracy = Accuracy()
    profiling: Profiling = Profiling()
    timeouts: Timeouts = Timeouts()
    preflight: Preflight = Preflight()
    infra: Infra = Infra()  # perfsanity.spec.infra
    frontend: Frontend = Frontend()
    gate: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None  # a sweep block (perfsanity.jobs.sweep); ignored when running one job
    cache_transceiver_precheck: dict[str, Any] | None = None  # upstream's precheck settings; accepted, unused
    # keys whose value was a ``<...>`` placeholder and that nothing filled: key -> placeholder
    _placeholders: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _profile_windows(self) -> Config:
        missing = [f"c{c}" for c in self.profiling.window_concurrencies() if c not in self.benchmark.concurrency_list]
        if missing:
            raise ValueError(f"profiling.windows {missing} are not in benchmark.concurrency_list "
                             f"{list(self.benchmark.concurrency_list)}")
        return self

    @model_validator(mode="after")
    def _roles(self) -> Config:
        hw, wc, mode = self.hardware, self.worker_config, self.benchmark.mode
        check_benchmark(self.benchmark)
        if self.kind == "aggr":
            if wc.server is None:
                raise ValueError("worker_config.server is required for an aggregated config")
            return self
        if hw.num_gen_servers < 1:
            raise ValueError("hardware.num_gen_servers must be >= 1 for a disaggregated config")
        if wc.gen is None:
            raise ValueError("worker_config.gen is required for a disaggregated config")
        if mode != "gen_only_no_context":
            if hw.num_ctx_servers < 1:
                raise ValueError(f"hardware.num_ctx_servers must be >= 1 in mode {mode!r}")
            if wc.ctx is None:
                raise ValueError(f"worker_config.ctx is required in mode {mode!r}")
        return self

    # ---- derived values -------------------------------------------------------------
    @property
    def unset_placeholders(self) -> dict[str, str]:
        """Keys that held a ``<...>`` placeholder in the file and are still unset (key -> placeholder)."""
        return dict(self._placeholders)

    def require(self, key: str) -> None:
        """Raise the placeholder error if ``key`` (dotted) was a placeholder nothing filled."""
        if key in self._placeholders:
            raise upstream.placeholder_error(self.source, key, self._placeholders[key])

    @property
    def container_image(self) -> str | None:
        return self.slurm.container_image or self.environment.container_image

    @property
    def container_mounts(self) -> str | None:
        return self.slurm.container_mounts or self.environment.container_mount

    @property
    def num_ctx_servers(self) -> int:
        return 0 if self.benchmark.mode == "gen_only_no_context" else self.hardware.num_ctx_servers

    @property
    def job_time_s(self) -> int:
        return job_time_seconds(self.slurm.job_time)

    def test_id(self, mode: str | None = None) -> str:
        """The pytest id: ``disagg_upload-<mode>-<name>`` or ``aggr_upload-<name>``."""
        if self.kind == "aggr":
            return f"aggr_upload-{self.name}"
        return f"disagg_upload-{mode or self.benchmark.mode}-{self.name}"

    def resolved_dict(self) -> dict[str, Any]:
        """Plain data for ``config.resolved.yaml`` (env strings rendered back to ``K=V`` form)."""
        data = self.model_dump(mode="python", exclude={"source"})
        if data.get("cache_transceiver_precheck") is None:
            data.pop("cache_transceiver_precheck", None)
        if data["hardware"].get("pack") is None:
            data["hardware"].pop("pack", None)
        # env settings by field (an empty one too, and never an engine option that merely looks alike)
        for key in ENV_FIELDS:
            data["environment"][key] = to_string(getattr(self.environment, key))
        data["accuracy"]["env_var"] = to_string(self.accuracy.env_var)

        def fix(obj: Any) -> Any:
            if isinstance(obj, dict):
                return {k: fix(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [fix(x) for x in obj]
            return obj

        return fix(data)


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def kind_of(path: Path) -> Kind:
    """``aggr`` for files under an ``aggr/`` (ours) or ``aggregated/`` (TensorRT-LLM's) directory, else
    ``disagg``."""
    return "aggr" if "aggr" in path.parts or "aggregated" in path.parts else "disagg"


def load_config(
    path: Path | str,
    *,
    cluster: ClusterDefaultsLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    server: str | None = None,
) -> Config:
    """Load, merge and validate one test config.

    Precedence, lowest first: built-in defaults < cluster defaults file < test YAML < ``overrides``
    (dotted keys such as ``{"benchmark.concurrency_list": "1 8"}``, used by sweeps and the CLI).

    A file in TensorRT-LLM's aggregated format (``server_configs``) is one test case per server:
    ``server`` names it (it may be left out when the file has one server); the case is named
    ``<file stem>-<server>`` (see :mod:`perfsanity.spec.upstream`).
    """
    path = Path(path)
    raw = read_yaml(path)
    name, kind = path.stem, kind_of(path)
    if upstream.is_aggregated(raw):
        name, raw = upstream.aggregated_case(raw, server, config=path.stem, source=str(path))
        kind = "aggr"
    elif server is not None:
        raise ConfigError(str(path), "server_configs", f"is missing, so there is no server {server!r} to select")
    return config_from_dict(raw, name=name, kind=kind, source=str(path), cluster=cluster, overrides=overrides)


def config_from_dict(
    raw: Mapping[str, Any],
    *,
    name: str,
    kind: Kind = "disagg",
    source: str | None = None,
    cluster: ClusterDefaultsLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Validate an already-read mapping (see :func:`load_config` for precedence)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "", f"top level must be a mapping, got {type(raw).__name__}")
    for key in ("name", "kind", "source"):
        if key in raw:
            raise ConfigError(source, key, "is derived from the file name and place; remove it")
    if upstream.is_aggregated(raw):
        raise ConfigError(source, "server_configs", "is TensorRT-LLM's aggregated format: load the file with "
                          "load_config (one test case per server)")
    # "<...>" means "not set": cluster defaults and overrides fill it like an absent key
    data, placeholders = upstream.strip_placeholders(upstream.normalize(raw))
    if overrides:
        data = apply_overrides(data, overrides, source=source)
    if cluster is not None:
        try:
            data = cluster.apply(data)
        except ValueError as exc:  # an environment value such as an int too long to turn into text
            raise ConfigError(source, "environment", f"cannot merge the cluster's env into it: {exc}") from None
    if not _valid_name(name):
        raise ConfigError(source, "", f"config name {name!r} must match [A-Za-z0-9._-]+")
    data.update(name=name, kind=kind, source=source)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, source, data) from None
    config._placeholders = {k: v for k, v in placeholders.items() if _lookup(data, tuple(k.split("."))) is None}
    return config


class ClusterDefaultsLike:
    """Protocol-ish base: anything with ``apply(raw) -> raw`` (see :mod:`perfsanity.spec.cluster`)."""

    def apply(self, raw: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError


def _valid_name(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9._-]+", name))


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any], *, source: str | None) -> dict[str, Any]:
    """Set dotted keys (``worker_config.gen.max_batch_size``) in a deep copy of ``data``."""
    out = _deep_copy(data)
    for dotted, value in overrides.items():
        if dotted in ("name", "kind", "source"):
            raise ConfigError(source, dotted, "is derived from the file name and place; it cannot be set")
        parts = dotted.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(source, ".".join(parts[: i + 1]), f"is not a section; cannot set {dotted}")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model at ``loc`` (for 'did you mean' hints)."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        model = _first_model(ann)
        if model is None:
            return []
    fields = getattr(model, "model_fields", {})
    return [k for k in fields if k not in ("name", "kind", "source")]


def _first_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    node = data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _short(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except ValueError:  # e.g. an int with more digits than sys.get_int_max_str_digits()
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_text(part: Any) -> str:
    """One key-path component as one line of text (a key such as 'a\\nb' or 'a.b' is shown repr'd)."""
    if isinstance(part, str) and part and part.isprintable() and "." not in part and len(part) <= 80:
        return part
    return _short(part)


def _config_error(exc: ValidationError, source: str | None, data: Mapping[str, Any]) -> ConfigError:
    """First pydantic error → one ConfigError line: file, key path, bad value, what is allowed."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"])
    key_path = ".".join(_key_text(p) for p in loc)
    etype = err["type"]
    if etype == "extra_forbidden":
        allowed = _allowed_keys(loc)
        bad = str(loc[-1])
        hint = difflib.get_close_matches(bad, allowed, n=1)
        msg = f"unknown key {_short(bad)}"
        if hint:
            msg += f" (did you mean {hint[0]!r}?)"
        if allowed:
            msg += f"; allowed keys: {', '.join(allowed)}"
        return ConfigError(source, key_path, msg)
    if etype == "missing":
        return ConfigError(source, key_path, "is required but missing")
    value = _lookup(data, loc) if loc else None
    text = str(err.get("msg", "invalid value"))
    text = " ".join(text.removeprefix("Value error, ").splitlines())
    if loc:
        return ConfigError(source, key_path, f"bad value {_short(value)}: {text}")
    # model-level checks start their message with the key path they are about
    first, _, rest = text.partition(" ")
    if re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", first) and rest:
        return ConfigError(source, first, rest)
    return ConfigError(source, "", text)
