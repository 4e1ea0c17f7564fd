"""The lean built-in client (``client: perfsanity``): its real process against a local OpenAI-style
server on 127.0.0.1 (the fake one, and the law server of benchmarks/), parsed, judged; its output
file's errors; the config rule it brings."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clienttest_support import make_run
from fake_openai import FakeOpenAI

from perfsanity.common.errors import ConfigError
from perfsanity.load.base import ClientOutputError
from perfsanity.load.lean import SUMMARY_FILE, make_prompts
from perfsanity.load.perfsanity_client import CLIENT
from perfsanity.load.validity import check, mark
from perfsanity.spec.config import load_config

ROOT = Path(__file__).resolve().parents[2]
ISL, OSL, N, CONC, WARMUP = 32, 16, 12, 3, 1


def _run(cmd_argv: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd_argv), cwd=cwd, capture_output=True, text=True, timeout=60)  # noqa: S603


def test_the_command_runs_the_stdlib_script_with_this_interpreter(tmp_path):
    cmd = CLIENT.command(make_run(out_dir=tmp_path))
    assert cmd.argv[0] == sys.executable and cmd.argv[1].endswith("perfsanity/load/lean.py")
    words = cmd.argv[2:]
    flags = dict(zip(words[::2], words[1::2], strict=False))
    assert flags == {"--url": "http://127.0.0.1:8000", "--model": "tiny", "--concurrency": "4", "--requests": "16",
                     "--input-tokens": "128", "--output-tokens": "32", "--timeout": "600.0", "--seed": "0",
                     "--warmup": "2", "--out": str(tmp_path / SUMMARY_FILE), "--tokenizer": "/models/tiny"}
    assert "--no-stream" in CLIENT.command(make_run(out_dir=tmp_path, streaming=False)).argv
    assert cmd.tool is None and not cmd.env_set and not cmd.env_unset


def test_prompts_are_exactly_the_input_length_in_token_ids_and_seeded():
    a, b = make_prompts(3, ISL, 500, seed=7), make_prompts(3, ISL, 500, seed=7)
    assert a == b and all(len(p) == ISL and all(125 <= t < 500 for t in p) for p in a)
    assert make_prompts(3, ISL, 500, seed=8) != a


def test_against_a_local_server_every_request_is_counted_and_timed(tmp_path):
    with FakeOpenAI(prompt_tokens=ISL, first_token_delay_s=0.02, token_delay_s=0.003) as srv:
        run = make_run(url=srv.url, tokenizer=None, concurrency=CONC, num_prompts=N, input_length=ISL,
                       output_length=OSL, request_timeout_s=30.0, warmup_requests=WARMUP, out_dir=tmp_path)
        started = time.monotonic()
        proc = _run(CLIENT.command(run).argv, tmp_path)
        took = time.monotonic() - started
        bodies = list(srv.requests)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(bodies) == N + WARMUP
    assert {(b["max_tokens"], b["min_tokens"], b["ignore_eos"], b["stream"]) for b in bodies} == {(OSL, OSL, True, True)}
    assert all(len(b["prompt"]) == ISL and all(isinstance(t, int) for t in b["prompt"]) for b in bodies)
    assert all(b["stream_options"] == {"include_usage": True} for b in bodies)

    r = CLIENT.parse(run)
    assert (r.client, r.requested, r.completed, r.failed) == ("perfsanity", N, N, 0)
    assert (r.input_tokens, r.output_tokens) == (N * ISL, N * OSL)  # the server's usage
    assert r.ttft.mean >= 20.0  # the server waits 20 ms before the first chunk
    assert 3.0 <= r.tpot.mean < 50.0 and 3.0 <= r.itl.median < 50.0  # 3 ms between chunks
    assert r.ttft.median <= r.ttft.p99 and r.e2e.mean > r.ttft.mean
    assert r.output_token_throughput == pytest.approx(N * OSL / r.duration_s)
    assert r.client_stats["chunks_per_request_p50"] == OSL == r.client_stats["output_tokens_per_request_p50"]
    assert 0 < r.client_stats["effective_concurrency"] <= CONC + 1e-6
    assert r.client_stats["credit_to_start_trimmed_mean_ms"] >= 0
    assert check(mark(r), requested=N) == []
    # 12 requests of ~70 ms at concurrency 3 take ~0.3 s: the rest is start-up (a loaded box gets slack)
    assert took < 10, f"the client took {took:.1f}s"


def test_a_server_that_refuses_every_request_fails_the_run_and_counts_them(tmp_path):
    with FakeOpenAI(prompt_tokens=ISL) as srv:
        run = make_run(url=srv.url + "/nothing-here", tokenizer=None, concurrency=2, num_prompts=4, input_length=ISL,
                       output_length=OSL, warmup_requests=0, out_dir=tmp_path, request_timeout_s=10.0)
        srv.server_close()  # nothing listens any more: every connect is refused
        proc = _run(CLIENT.command(run).argv, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    r = CLIENT.parse(run)
    assert (r.completed, r.failed) == (0, 4)
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    # a connect queued on the listening socket as it closed is reset rather than refused
    assert sum(summary["errors"].values()) == 4, summary["errors"]
    assert all(e.startswith(("ConnectionRefusedError", "ConnectionResetError")) for e in summary["errors"]), summary
    assert any("completed" in reason for reason in check(r, requested=4))


def test_a_missing_or_malformed_summary_names_the_file_and_field(tmp_path):
    run = make_run(out_dir=tmp_path)
    with pytest.raises(ClientOutputError, match=SUMMARY_FILE):
        CLIENT.parse(run)
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({"client": "perfsanity", "completed": "many"}))
    with pytest.raises(ClientOutputError, match="completed|concurrency"):
        CLIENT.parse(run)


def test_the_lean_client_reads_no_dataset_file(tmp_path):
    src = (ROOT / "test_configs/disagg/perf/mocker-ctx1-gen1.yaml").read_text()
    cfg = tmp_path / "lean.yaml"
    cfg.write_text(src.replace("  client: aiperf\n", "  client: perfsanity\n  dataset_file: /data/prompts.jsonl\n"))
    with pytest.raises(ConfigError, match="dataset_file"):
        load_config(cfg)
    cfg.write_text(src.replace("  client: aiperf\n", "  client: perfsanity\n"))
    assert load_config(cfg).benchmark.client == "perfsanity"


def test_unset_client_is_the_lean_one_on_cpu_lanes_and_aiperf_on_gpu_configs(tmp_path):
    from perfsanity.run.job import client_name

    def unset(rel: str, extra: str = "") -> Path:
        text = (ROOT / rel).read_text()
        lines = [ln for ln in text.splitlines() if not ln.strip().startswith("client:")]
        out = tmp_path / Path(rel).name
        out.write_text("\n".join(lines).replace("benchmark:\n", f"benchmark:\n{extra}", 1) + "\n")
        return out

    assert client_name(load_config(unset("test_configs/disagg/perf/mocker-ctx1-gen1.yaml"))) == "perfsanity"
    with_dataset = unset("test_configs/disagg/perf/mocker-ctx1-gen1.yaml", "  dataset_file: /data/p.jsonl\n")
    assert client_name(load_config(with_dataset)) == "aiperf"  # the lean client reads no dataset
    gpu = unset("test_configs/disagg/perf/gb200-qwen3-235b-fp8_1k1k_dynamo-sglang_1p1d.yaml")
    assert client_name(load_config(gpu)) == "aiperf"
    assert client_name(load_config(ROOT / "test_configs/disagg/perf/mocker-ctx1-gen1.yaml")) == "aiperf"  # as set
