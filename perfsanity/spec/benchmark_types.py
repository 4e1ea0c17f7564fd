"""Benchmark types: what ``benchmark.type`` means, as a list of measurement points.

One point is one client run (repeated ``benchmark.repeats`` times) with a stable label that names it
everywhere: ``results.json``, the history match key, junit test names and report.html.

* ``concurrency`` (default): one point per ``concurrency_list`` entry, labelled ``c8``.
* ``request_rate``: one point per ``request_rates`` × ``concurrency_list`` entry, requests sent at the
  rate with ``arrival`` (``constant`` or ``poisson``: aiperf's ``--arrival-pattern``) and at most that
  many in flight; labelled ``rps2.c8`` (``rps0p5.c8`` for 0.5 requests/s).
* ``isl_osl: [[1024, 1024], [8192, 1024]]`` (any type but trace and manual): one point per pair per
  entry above, the pair replacing ``input_length``/``output_length``; labelled ``isl8192_osl1024.c8``
  (``isl8192_osl1024.rps2.c8``).
* ``trace``: one replay of ``trace_file``, a mooncake-format JSONL trace (one request per line:
  ``timestamp`` in ms, ``input_length``, ``output_length``, optional ``hash_ids`` of 512-token blocks,
  one size per hash id, as aiperf's loader requires); labelled
  ``trace.<file stem>``. A relative ``trace_file`` is relative to the repository root.
* ``manual``: no points; the servers stay up for the user (see :mod:`perfsanity.run.benchmark`).

Bad input is a :class:`~perfsanity.common.errors.ConfigError` naming the file and the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from perfsanity.common.errors import ConfigError
from perfsanity.spec.loader import read_text

#: a :class:`perfsanity.spec.config.Benchmark` (not imported: spec.config imports this module)
Benchmark = Any
BenchmarkType = Literal["concurrency", "request_rate", "trace", "manual"]
Arrival = Literal["constant", "poisson"]
DEFAULT_TYPE: BenchmarkType = "concurrency"
REPO_ROOT = Path(__file__).resolve().parents[2]
TRACE_FIELDS = ("timestamp", "input_length", "output_length")
MAX_TRACE_REQUESTS = 100_000
MOONCAKE_BLOCK = 512  # tokens per hash id: aiperf 0.13.0's mooncake_trace default (aiperf profile --help)


@dataclass(frozen=True)
class Point:
    """One measurement point of a job."""

    label: str
    benchmark_type: BenchmarkType
    concurrency: int
    num_prompts: int
    input_length: int
    output_length: int
    request_rate: float | None = None
    arrival: Arrival | None = None
    trace_file: str | None = None  # absolute path of a mooncake trace (type trace)


def rate_text(rate: float) -> str:
    """``2`` for 2.0, ``0p5`` for 0.5: a rate as it appears in a label (no dot, dots separate parts)."""
    text = str(int(rate)) if float(rate).is_integer() else repr(float(rate))
    return text.replace(".", "p")


def default_label(concurrency: int) -> str:
    """The label of a plain concurrency point (and of every result written before benchmark types)."""
    return f"c{concurrency}"


def check(bench: Benchmark) -> None:
    """Cross-field rules of ``benchmark``; raises ValueError whose message starts with the key path."""
    if bench.type == "request_rate" and not bench.request_rates:
        raise ValueError("benchmark.request_rates is required with benchmark.type request_rate, e.g. [1, 2]")
    if bench.type != "request_rate" and bench.request_rates:
        raise ValueError(f"benchmark.request_rates applies to benchmark.type request_rate, not {bench.type}")
    if bench.type == "trace" and not bench.trace_file:
        raise ValueError("benchmark.trace_file is required with benchmark.type trace (a mooncake JSONL trace)")
    if bench.type != "trace" and bench.trace_file:
        raise ValueError(f"benchmark.trace_file applies to benchmark.type trace, not {bench.type}")
    if bench.type in ("trace", "manual") and bench.isl_osl:
        raise ValueError(f"benchmark.isl_osl does not apply to benchmark.type {bench.type}")


def trace_path(trace_file: str) -> Path:
    path = Path(trace_file)
    return path if path.is_absolute() else REPO_ROOT / path


def trace_requests(path: Path, *, source: str | None = None) -> int:
    """Requests in a mooncake trace; a missing file or a bad line is a ConfigError naming it."""
    try:
        text = read_text(path)
    except ConfigError as exc:
        raise ConfigError(source, "benchmark.trace_file", f"{path}: {exc.message}") from None
    count = 0
    block_sizes: dict[int, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(source, "benchmark.trace_file", f"{where}: invalid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise ConfigError(source, "benchmark.trace_file", f"{where}: must be a JSON object")
        for name in TRACE_FIELDS:
            value = record.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(source, "benchmark.trace_file",
                                  f"{where}: field {name!r} must be an integer >= 0, got {value!r}")
        hashes = record.get("hash_ids", [])
        if not isinstance(hashes, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in hashes):
            raise ConfigError(source, "benchmark.trace_file", f"{where}: field 'hash_ids' must be a list of integers")
        _check_blocks(record["input_length"], hashes, block_sizes, where=where, source=source)
        count += 1
        if count > MAX_TRACE_REQUESTS:
            raise ConfigError(source, "benchmark.trace_file", f"{path}: more than {MAX_TRACE_REQUESTS} requests")
    if count == 0:
        raise ConfigError(source, "benchmark.trace_file", f"{path}: holds no request")
    return count


def _check_blocks(input_length: int, hashes: list[int], sizes: dict[int, int], *, where: str,
                  source: str | None) -> None:
    """aiperf rebuilds a prompt from ``hash_ids``: every block but the last is MOONCAKE_BLOCK tokens, the
    last holds the rest, and one hash id is always one block of one size."""
    if not hashes:
        return
    last = input_length - (len(hashes) - 1) * MOONCAKE_BLOCK
    if not 0 < last <= MOONCAKE_BLOCK:
        raise ConfigError(source, "benchmark.trace_file",
                          f"{where}: input_length {input_length} does not fit {len(hashes)} hash_ids of "
                          f"{MOONCAKE_BLOCK}-token blocks (aiperf's mooncake_trace block size)")
    for i, h in enumerate(hashes):
        size = last if i == len(hashes) - 1 else MOONCAKE_BLOCK
        if sizes.setdefault(h, size) != size:
            raise ConfigError(source, "benchmark.trace_file",
                              f"{where}: hash id {h} is a block of {size} tokens here and of {sizes[h]} before; "
                              "a hash id must always be one block of one size")


def points(bench: Benchmark, *, source: str | None = None) -> tuple[Point, ...]:
    """Every measurement point of ``bench``, in run order (``source`` names the config in errors)."""
    if bench.type == "manual":
        return ()
    if bench.type == "trace":
        assert bench.trace_file is not None  # check()
        path = trace_path(bench.trace_file)
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", path.name.removesuffix(".jsonl"))
        return (Point(label=f"trace.{stem}", benchmark_type="trace", concurrency=bench.concurrency_list[0],
                      num_prompts=trace_requests(path, source=source), input_length=bench.input_length,
                      output_length=bench.output_length, trace_file=str(path)),)
    pairs: list[tuple[int, int, str]] = (
        [(i, o, f"isl{i}_osl{o}.") for i, o in bench.isl_osl] if bench.isl_osl
        else [(bench.input_length, bench.output_length, "")])
    rates: list[float | None] = list(bench.request_rates) if bench.type == "request_rate" else [None]
    out: list[Point] = []
    for isl, osl, prefix in pairs:
        for rate in rates:
            for conc in bench.concurrency_list:
                rate_part = f"rps{rate_text(rate)}." if rate is not None else ""
                out.append(Point(
                    label=f"{prefix}{rate_part}{default_label(conc)}", benchmark_type=bench.type,
                    concurrency=conc, num_prompts=bench.num_prompts(conc), input_length=isl, output_length=osl,
                    request_rate=rate, arrival=bench.arrival if rate is not None else None))
    return tuple(out)
