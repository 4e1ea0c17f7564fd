"""Slow: the real aiperf 0.13.0 (perfsanity.engines.tooling venv) against a local fake OpenAI server.

Exercises the whole client path the BENCHMARK role takes: command → env changes → resolve the
tool's entry point → run → parse → validity. Needs the aiperf tool venv and the tiny tokenizer
(both are installed/generated on first use, ~1–2 min; later runs take ~15 s).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from clienttest_support import make_run
from fake_openai import FakeOpenAI

from perfsanity.load.aiperf import CLIENT as AIPERF
from perfsanity.load.validity import check
from perfsanity.run.job import resolve_argv

ISL, OSL, N, CONC, WARMUP = 32, 16, 12, 3, 1


@pytest.mark.slow
def test_aiperf_against_fake_server(tmp_path: Path):
    from perfsanity.engines.model_assets import ensure_tiny_model

    tokenizer = ensure_tiny_model()
    with FakeOpenAI(prompt_tokens=ISL, first_token_delay_s=0.02, token_delay_s=0.003) as srv:
        run = make_run(url=srv.url, tokenizer=str(tokenizer), concurrency=CONC, num_prompts=N, input_length=ISL,
                       output_length=OSL, request_timeout_s=30.0, warmup_requests=WARMUP, out_dir=tmp_path,
                       total_gpus=2)
        cmd = AIPERF.command(run)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # as on the cluster
        for name in cmd.env_unset:
            env.pop(name, None)
        env.update(cmd.env_set)
        proc = subprocess.run(resolve_argv(cmd.argv, cmd.tool), env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        bodies = list(srv.requests)

    assert len(bodies) == N + WARMUP
    assert {(b["max_tokens"], b["min_tokens"], b["ignore_eos"], b["stream"]) for b in bodies} == {(OSL, OSL, True, True)}

    r = AIPERF.parse(run)
    assert (r.requested, r.completed, r.failed) == (N, N, 0)
    assert (r.input_tokens, r.output_tokens) == (N * ISL, N * OSL)  # server-reported usage
    assert r.ttft.mean >= 20.0  # the server waits 20 ms before the first chunk
    assert 3.0 <= r.tpot.mean < 50.0 and 3.0 <= r.itl.median < 50.0  # 3 ms between chunks
    assert r.e2e.mean > r.ttft.mean
    assert r.output_token_throughput_per_gpu == pytest.approx(r.output_token_throughput / 2)
    assert check(r, requested=N) == []


@pytest.mark.slow
def test_aiperf_reads_the_pregenerated_prompt_file(tmp_path: Path):
    """The BENCHMARK's prompt file (perfsanity.load.prompt_file, written by the real writer): aiperf sends
    its lines in order, warmup first, each as the prompt with its output_length as max_tokens."""
    from perfsanity.engines.model_assets import ensure_tiny_model
    from perfsanity.load.prompt_file import count_lines, file_for, spec, writer_argv

    tokenizer = str(ensure_tiny_model())
    shape = file_for(ISL, OSL, N, WARMUP)
    path = tmp_path / shape.name
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec(tokenizer, 0, {shape: path})))
    writer = subprocess.run(resolve_argv(writer_argv(spec_path), "aiperf"), capture_output=True, text=True, timeout=120)
    assert writer.returncode == 0, writer.stderr[-3000:]
    assert count_lines(path) == N + WARMUP
    prompts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]

    with FakeOpenAI(prompt_tokens=ISL, first_token_delay_s=0.02, token_delay_s=0.003) as srv:
        run = make_run(url=srv.url, tokenizer=tokenizer, concurrency=CONC, num_prompts=N, input_length=ISL,
                       output_length=OSL, request_timeout_s=30.0, warmup_requests=WARMUP, out_dir=tmp_path / "out",
                       total_gpus=2, dataset_file=str(path))
        cmd = AIPERF.command(run)
        assert "--synthetic-input-tokens-mean" not in cmd.argv
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        for name in cmd.env_unset:
            env.pop(name, None)
        run.out_dir.mkdir()
        proc = subprocess.run(resolve_argv(cmd.argv, cmd.tool), env=env, cwd=run.out_dir, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        bodies = list(srv.requests)

    sent = [b["prompt"] for b in bodies]
    assert sorted(sent) == sorted(prompts), "aiperf sent other prompts than the file's lines"
    assert sent[0] == prompts[0]  # the warmup request takes the first line
    assert {(b["max_tokens"], b["min_tokens"]) for b in bodies} == {(OSL, OSL)}
    r = AIPERF.parse(run)
    assert (r.requested, r.completed, r.failed, r.output_tokens) == (N, N, 0, N * OSL)
    assert check(r, requested=N) == []
