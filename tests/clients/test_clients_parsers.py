"""Client command lines checked by the clients' own parsers (aiperf in its tool venv; sglang's
bench_serving in the dynamo-sglang venv, the one with transformers) or, for TensorRT-LLM's
benchmark_serving (no wheel here), against perfsanity/engines/facts/trtllm.yaml.

A tool venv that is not installed skips locally and fails under ``CI=true``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from clienttest_support import make_run, tool_python

from perfsanity.engines import facts
from perfsanity.load.aiperf import CLIENT as AIPERF
from perfsanity.load.sglang_bench import CLIENT as SGLANG_BENCH
from perfsanity.load.trtllm_bench import CLIENT as TRTLLM_BENCH

CHECK_SCRIPT = Path(__file__).resolve().parents[1] / "backends" / "engine_parser_check.py"
VARIANTS = {
    "default": {},
    "no-stream-no-warmup-dataset": {"streaming": False, "warmup_requests": 0, "tokenizer": None,
                                    "dataset_file": "prompts.jsonl", "random_seed": 42},
    # the BENCHMARK's pre-generated prompts (perfsanity.run.prompt_files): 16 requests + 2 warmup lines
    "pregenerated-prompts": {"dataset_file": "dataset-isl128-osl32-n18.jsonl"},
}


def run_for(variant: str, tmp_path: Path):
    """A ClientRun of ``variant``; a dataset file is created (aiperf checks that it exists)."""
    changes = dict(VARIANTS[variant])
    if changes.get("dataset_file"):
        path = tmp_path / changes["dataset_file"]
        path.write_text('{"text": "hello", "output_length": 32}\n')
        changes["dataset_file"] = str(path)
    return make_run(**changes)


def parse_in(tool: str, check: str, args: list[str]) -> dict:
    proc = subprocess.run([str(tool_python(tool)), str(CHECK_SCRIPT)], input=json.dumps({"check": check, "args": args}),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_aiperf_argv_parses(variant, tmp_path):
    argv = list(AIPERF.command(run_for(variant, tmp_path)).argv)
    result = parse_in("aiperf", "aiperf", argv[1:])
    assert result["ok"], result
    assert result["parsed"]["command"] == "profile"


def test_aiperf_parser_rejects_a_misspelling():
    argv = list(AIPERF.command(make_run()).argv)
    argv[argv.index("--concurrency")] = "--concurency"
    result = parse_in("aiperf", "aiperf", argv[1:])
    assert not result["ok"] and "--concurency" in result["error"], result


@pytest.mark.slow  # seconds each: a real engine/tool process or many subprocesses
@pytest.mark.parametrize("variant", VARIANTS)
def test_sglang_bench_serving_argv_parses(variant, tmp_path):
    argv = list(SGLANG_BENCH.command(run_for(variant, tmp_path)).argv)
    result = parse_in("dynamo-sglang", "sglang.bench_serving", argv[argv.index("sglang.bench_serving") + 1:])
    assert result["ok"], result
    assert result["parsed"]["max_concurrency"] == 4 and result["parsed"]["backend"] == "sglang-oai"


@pytest.mark.parametrize("variant", VARIANTS)
def test_trtllm_benchmark_serving_argv_in_facts(variant, tmp_path):
    bench = facts.load("trtllm")["benchmark_serving"]
    argv = list(TRTLLM_BENCH.command(run_for(variant, tmp_path)).argv)
    words = argv[argv.index(TRTLLM_BENCH.module) + 1:]
    unknown = [w for w in words if w.startswith("--") and w not in bench["options"]]
    assert not unknown, f"benchmark_serving@{bench['commit'][:12]} has no option {unknown}"
    assert words[words.index("--dataset-name") + 1] in bench["dataset_names"]
