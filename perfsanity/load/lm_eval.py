"""lm-eval (EleutherAI's LM Evaluation Harness, PyPI ``lm-eval``) as the accuracy step: the argv of one
run against the front door, and its results file parsed into :class:`AccuracyResult` objects.

Like the benchmark clients, :func:`command` does no I/O (golden-testable) and :func:`parse` only
reads files. The BENCHMARK role runs it after the perf points (:mod:`perfsanity.run.accuracy`).

Facts (lm-eval 0.4.13, the pinned ``lm-eval`` tool of :mod:`perfsanity.engines.tooling`; read from its
wheel and its docs/interface.md and docs/API_guide.md):

* ``lm-eval run --model local-completions --model_args k=v,...`` talks to an OpenAI-compatible
  ``base_url`` (the full ``/v1/completions`` URL; ``local-chat-completions`` takes
  ``/v1/chat/completions``). ``tokenizer_backend`` defaults to ``auto``, which probes the server and
  falls back to a Hugging Face tokenizer (needs ``transformers``, not installed in the tool venv);
  ``tokenizer_backend=None`` sends text prompts and needs no tokenizer, so only ``generate_until``
  tasks can run that way.
* ``--include_path DIR`` adds task YAMLs; a task with ``dataset_path: json`` and
  ``dataset_kwargs.data_files`` reads a local file through Hugging Face ``datasets``, which resolves a
  relative path against the working directory (the run's cwd is the task dir, so a task YAML names its
  data file relative to itself). ``HF_DATASETS_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` forbid downloads.
* ``--output_path DIR`` writes ``DIR/<model name, sanitized>/results_<timestamp>.json``, whose
  ``results.<task>`` maps ``"<metric>,<filter>"`` to the score and ``"<metric>_stderr,<filter>"`` to
  its standard error; ``n-samples.<task>.effective`` is the number of examples evaluated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from perfsanity.load.base import ClientCommand, ClientOutputError
from perfsanity.load.results_json import AccuracyResult
from perfsanity.spec.config import Accuracy

TOOL = "lm-eval"
#: the job-dir folder of the accuracy step: lm-eval's output and the HF datasets cache
OUT_DIR = "accuracy"
ENDPOINTS = {"local-completions": "/v1/completions", "local-chat-completions": "/v1/chat/completions"}
OFFLINE_ENV = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@dataclass(frozen=True)
class AccuracyRun:
    """One lm-eval invocation: every task of ``accuracy.tasks`` against one front door."""

    url: str  # front door base URL, no /v1 suffix
    model_name: str  # the served model name sent in requests
    out_dir: Path  # lm-eval's --output_path (absolute)
    task_dir: Path | None  # --include_path and the working directory (None: lm-eval's own tasks)


def model_args(accuracy: Accuracy, run: AccuracyRun) -> str:
    """``--model_args``: ours first (model, base_url, no tokenizer), then ``model_args_extra`` (which may
    override anything but model and base_url; the config check refuses those)."""
    args: dict[str, str] = {
        "model": run.model_name,
        "base_url": run.url.rstrip("/") + ENDPOINTS[accuracy.model],
        "tokenizer_backend": "None",
        "tokenized_requests": "False",
    }
    for item in filter(None, (p.strip() for p in accuracy.model_args_extra.split(","))):
        key, _, value = item.partition("=")
        args[key.strip()] = value.strip()
    return ",".join(f"{k}={v}" for k, v in args.items())


def command(accuracy: Accuracy, run: AccuracyRun) -> ClientCommand:
    """The lm-eval process (started in ``run.task_dir``, else in ``run.out_dir``)."""
    argv = ["lm-eval", "run", "--model", accuracy.model, "--tasks", accuracy.tasks,
            "--model_args", model_args(accuracy, run), "--output_path", str(run.out_dir), "--log_samples"]
    if run.task_dir is not None:
        argv += ["--include_path", str(run.task_dir)]
    if accuracy.limit is not None:
        argv += ["--limit", str(accuracy.limit)]
    env = {**OFFLINE_ENV, "HF_DATASETS_CACHE": str(run.out_dir / "hf-datasets-cache")}
    return ClientCommand(argv=tuple(argv), env_set=env, tool=TOOL)


def results_file(out_dir: Path) -> Path:
    """The newest ``results_*.json`` lm-eval wrote under ``out_dir``."""
    found = sorted(out_dir.glob("**/results_*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ClientOutputError(out_dir, "lm-eval wrote no results_*.json")
    return found[-1]


def _score(path: Path, task: str, values: Mapping[str, object], metric: str | None) -> tuple[str, float]:
    numbers = {k: v for k, v in values.items()
               if "," in k and "_stderr," not in k and isinstance(v, int | float) and not isinstance(v, bool)}
    if metric is None:
        if not numbers:
            raise ClientOutputError(path, f"task {task!r} has no metric value", f"results.{task}")
        metric = next(iter(numbers))
    if metric not in numbers:
        raise ClientOutputError(path, f"task {task!r} has no metric {metric!r} (accuracy.metric); it has "
                                f"{sorted(numbers) or 'none'}", f"results.{task}.{metric}")
    value = float(numbers[metric])  # type: ignore[arg-type]
    if not math.isfinite(value):
        raise ClientOutputError(path, f"task {task!r} metric {metric!r} is {value}", f"results.{task}.{metric}")
    return metric, value


def parse(accuracy: Accuracy, out_dir: Path) -> tuple[AccuracyResult, ...]:
    """One :class:`AccuracyResult` per task of ``accuracy.tasks``, with ``accuracy.threshold``."""
    path = results_file(out_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ClientOutputError(path, f"not readable JSON: {exc}") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        raise ClientOutputError(path, "missing or not a mapping", "results")
    samples = data.get("n-samples") if isinstance(data.get("n-samples"), dict) else {}
    out = []
    for task in accuracy.task_names:
        values = results.get(task)
        if not isinstance(values, dict):
            raise ClientOutputError(path, f"no results for task {task!r}", f"results.{task}")
        metric, score = _score(path, task, values, accuracy.metric)
        n = samples.get(task, {}).get("effective") if isinstance(samples.get(task), dict) else None
        out.append(AccuracyResult(task=task, metric=metric, score=score, threshold=accuracy.threshold,
                                  samples=n if isinstance(n, int) and n >= 0 else None, raw_path=str(path)))
    return tuple(out)
