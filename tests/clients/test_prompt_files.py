"""Pre-generated prompt files. The writer (perfsanity.load.prompt_file): which files a job's points
need, and the files themselves, written by the real writer under the aiperf venv's interpreter with the
tiny tokenizer: every prompt exactly ISL tokens long, one line per request, the same bytes for the same
seed. The BENCHMARK's side (perfsanity.run.prompt_files): which jobs get them, the writer started in
the background and collected, the aiperf argv of a point that reads one, and the fall-back to aiperf's
synthetic prompts (one log line, no crash) when the writer fails or runs past its bound."""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
from pathlib import Path

import pytest
from clienttest_support import tool_python

from perfsanity.common.processes import ProcessSet
from perfsanity.load import prompt_file
from perfsanity.load.aiperf import CLIENT as AIPERF
from perfsanity.load.prompt_file import PromptFile, count_lines, needed, spec, writer_argv
from perfsanity.run import prompt_files
from perfsanity.run.benchmark import client_run
from perfsanity.run.job import Job
from perfsanity.run.prompt_files import PromptFiles, wanted
from perfsanity.spec.benchmark_types import points
from perfsanity.spec.config import Benchmark, load_config
from perfsanity.spec.topology import build_topology

# counts the tokens of each line's text the way aiperf counts its synthetic prompts
COUNT_TOKENS = """
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
rows = [json.loads(line) for line in open(sys.argv[2], encoding="utf-8") if line.strip()]
print(json.dumps([len(tok.encode(r["text"], add_special_tokens=False)) for r in rows]))
"""


def test_one_file_per_shape_with_the_warmup_lines():
    bench = Benchmark(type="request_rate", request_rates=(1, 2), concurrency_list="1 8", multi_round=4,
                      isl_osl=((128, 32), (512, 64)), warmup_requests=2)
    files = needed(points(bench), bench.warmup_requests)
    # two rates share each (isl, osl, requests) file: 2 pairs × 2 concurrencies
    assert files == (PromptFile(128, 32, 6), PromptFile(128, 32, 34), PromptFile(512, 64, 6), PromptFile(512, 64, 34))
    assert files[0].name == "dataset-isl128-osl32-n6.jsonl"


def test_a_trace_point_needs_no_file(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps({"timestamp": 0, "input_length": 8, "output_length": 4}) + "\n")
    bench = Benchmark(type="trace", trace_file=str(trace))
    assert needed(points(bench), 0) == ()


def _write(tmp_path: Path, seed: int, shapes: list[PromptFile]) -> dict[PromptFile, Path]:
    from perfsanity.engines.model_assets import ensure_tiny_model

    python = tool_python("aiperf")
    out = tmp_path / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    files = {f: out / f.name for f in shapes}
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec(str(ensure_tiny_model()), seed, files)))
    argv = [str(python), *writer_argv(spec_path)[1:]]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == len(shapes)
    return files


SHAPES = [PromptFile(1, 4, 3), PromptFile(37, 8, 5), PromptFile(128, 32, 18), PromptFile(128, 32, 4)]


@pytest.mark.slow  # four files written and re-tokenized in the aiperf venv (~15 s)
def test_prompts_are_token_exact_one_line_per_request_and_seeded(tmp_path):
    from perfsanity.engines.model_assets import ensure_tiny_model

    first = _write(tmp_path, 0, SHAPES)
    python = tool_python("aiperf")
    texts: list[str] = []
    for f, path in first.items():
        assert count_lines(path) == f.lines
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert {tuple(sorted(r)) for r in rows} == {("output_length", "text")}
        assert {r["output_length"] for r in rows} == {f.osl}
        counted = subprocess.run([str(python), "-c", COUNT_TOKENS, str(ensure_tiny_model()), str(path)],
                                 capture_output=True, text=True, timeout=120, env=dict(os.environ, TRANSFORMERS_VERBOSITY="error"))
        assert counted.returncode == 0, counted.stderr[-3000:]
        assert json.loads(counted.stdout) == [f.isl] * f.lines, path
        texts += [r["text"] for r in rows]
    assert len(set(texts)) == len(texts), "a prompt repeats within or across files"

    again = _write(tmp_path / "again", 0, SHAPES)
    assert all(again[f].read_bytes() == first[f].read_bytes() for f in SHAPES)
    other = _write(tmp_path, 1, SHAPES[2:3])
    assert other[SHAPES[2]].read_bytes() != first[SHAPES[2]].read_bytes()


def test_the_writer_fails_on_a_missing_tokenizer(tmp_path):
    python = tool_python("aiperf")
    spec_path = tmp_path / "spec.json"
    target = tmp_path / "out.jsonl"
    spec_path.write_text(json.dumps(spec(str(tmp_path / "no-such-model"), 0, {PromptFile(8, 4, 2): target})))
    proc = subprocess.run([str(python), *writer_argv(spec_path)[1:]], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and not target.exists()


def test_the_writer_needs_exactly_one_spec():
    assert prompt_file.main([]) == 2


@pytest.mark.parametrize("isl", [0, -3])
def test_no_text_of_a_length_below_one(isl):
    class OneTokenPerChar:
        def decode(self, ids, skip_special_tokens=True):
            return "a" * max(1, len(ids))

        def encode(self, text, add_special_tokens=False):
            return [7] * len(text)

    with pytest.raises(ValueError, match=f"exactly {isl} tokens"):
        prompt_file.exact_text(OneTokenPerChar(), [5], isl, random.Random(0), 1, 10)


# ---------------------------------------------------------------- the BENCHMARK role's side

ROOT = Path(__file__).resolve().parents[2]
MOCKER = ROOT / "test_configs/disagg/perf/mocker-ctx1-gen1.yaml"  # aiperf, c1 and c8, 8 requests each


def _job(tmp_path: Path, **bench) -> Job:
    config = load_config(MOCKER)
    if bench:
        config = config.model_copy(update={"benchmark": config.benchmark.model_copy(update=bench)})
    return Job(config, build_topology(config), tmp_path / "job", "BENCHMARK", {}, None)


def test_an_aiperf_job_wants_one_file_per_point_shape(tmp_path):
    assert wanted(_job(tmp_path)) == (PromptFile(128, 32, 8), PromptFile(128, 32, 64))
    assert wanted(_job(tmp_path, warmup_requests=3)) == (PromptFile(128, 32, 11), PromptFile(128, 32, 67))


@pytest.mark.parametrize("bench", [{"pregenerate_dataset": False}, {"dataset_file": "/data/prompts.jsonl"},
                                   {"client": "perfsanity"}, {"client": "sglang-bench-serving"}])
def test_no_files_when_off_a_dataset_is_given_or_another_client_runs(tmp_path, bench):
    assert wanted(_job(tmp_path, **bench)) == ()


def test_the_option_is_documented_and_defaults_on():
    config = load_config(MOCKER)
    assert config.benchmark.pregenerate_dataset is True
    assert "benchmark.pregenerate_dataset" in (ROOT / "docs/benchmark-types.md").read_text()


def _tiny() -> str:
    from perfsanity.engines.model_assets import ensure_tiny_model

    return str(ensure_tiny_model())


def test_the_files_are_written_in_the_background_and_each_point_reads_its_own(tmp_path, capsys):
    tool_python("aiperf")
    job = _job(tmp_path)
    with ProcessSet() as procs:
        pf = PromptFiles(job, procs, _tiny())
        assert pf.proc is not None  # started, not waited for: the role now waits for the servers
        ready = pf.collect()
    c1, c8 = points(job.config.benchmark)
    assert ready == {PromptFile(128, 32, 8): str(job.job_dir / "client/dataset-isl128-osl32-n8.jsonl"),
                     PromptFile(128, 32, 64): str(job.job_dir / "client/dataset-isl128-osl32-n64.jsonl")}
    assert pf.for_point(c8) == str(job.job_dir / "client/dataset-isl128-osl32-n64.jsonl")
    log = capsys.readouterr().out
    assert "prompt files: writing dataset-isl128-osl32-n8.jsonl, dataset-isl128-osl32-n64.jsonl" in log
    assert "prompt files: 2 ready, written in" in log

    run = client_run(job, "http://127.0.0.1:8000", "tiny", "/models/tiny", c8, tmp_path / "c8", pf.for_point(c8))
    argv = shlex.join(AIPERF.command(run).argv)
    assert f"--input-file {job.job_dir}/client/dataset-isl128-osl32-n64.jsonl --custom-dataset-type single-turn " \
           "--prompt-corpus random --output-tokens-mean 32 --output-tokens-stddev 0 --extra-inputs ignore_eos:true " \
           "--extra-inputs min_tokens:32 " in argv
    assert "--synthetic-input-tokens-mean" not in argv and "--request-count 64 " in argv


def test_a_failed_writer_falls_back_to_synthetic_prompts_in_one_line(tmp_path, capsys):
    tool_python("aiperf")
    job = _job(tmp_path)
    with ProcessSet() as procs:
        pf = PromptFiles(job, procs, str(tmp_path / "no-such-model"))
        assert pf.collect() == {}
    c1, _ = points(job.config.benchmark)
    assert pf.for_point(c1) is None
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "synthetic prompts instead" in ln]
    assert len(lines) == 1 and "the writer exited with code 1" in lines[0] and prompt_files.LOG_NAME in lines[0]
    run = client_run(job, "http://127.0.0.1:8000", "tiny", "/models/tiny", c1, tmp_path / "c1", pf.for_point(c1))
    assert "--synthetic-input-tokens-mean 128" in shlex.join(AIPERF.command(run).argv)


def test_a_writer_past_its_bound_is_stopped_and_falls_back(tmp_path, capsys, monkeypatch):
    tool_python("aiperf")
    monkeypatch.setattr(prompt_files, "TIMEOUT_S", 0.2)
    job = _job(tmp_path)
    with ProcessSet() as procs:
        pf = PromptFiles(job, procs, _tiny())
        assert pf.collect() == {}
        assert pf.proc is not None and pf.proc.poll() is not None  # stopped, not left running
    out = capsys.readouterr().out
    assert "the writer was not done 0.2s after its start and was stopped" in out and "synthetic prompts instead" in out
