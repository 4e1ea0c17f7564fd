"""sglang bench_serving and TensorRT-LLM benchmark_serving: golden command lines and parsers on the
hand-written fixtures (see fixtures/README.md)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from clienttest_support import CLIENT_FIXTURES, make_run

from perfsanity.load import get_client
from perfsanity.load.base import ClientOutputError
from perfsanity.load.sglang_bench import CLIENT as SGLANG
from perfsanity.load.trtllm_bench import CLIENT as TRTLLM
from perfsanity.load.validity import check

SG = CLIENT_FIXTURES / "sglang"
TR = CLIENT_FIXTURES / "trtllm"


# ---------------------------------------------------------------- command lines

# (client, ClientRun changes, the exact command line): both run from the engine's image (tool None)
# and change no environment variable
COMMAND_GOLDENS = [
    pytest.param(SGLANG, {}, (
        "python3 -m sglang.bench_serving --backend sglang-oai --base-url http://127.0.0.1:8000 --model tiny "
        "--tokenizer /models/tiny --dataset-name random-ids --random-input-len 128 --random-output-len 32 "
        "--random-range-ratio 1 --num-prompts 16 --max-concurrency 4 --request-rate inf --seed 0 "
        "--warmup-requests 2 --disable-tqdm --output-file /jobs/j1/client/c4/result.jsonl"
    ), id="sglang"),
    pytest.param(SGLANG, {"dataset_file": "/data/sharegpt.json", "streaming": False, "tokenizer": None,
                          "warmup_requests": 0, "random_seed": 7}, (
        "python3 -m sglang.bench_serving --backend sglang-oai --base-url http://127.0.0.1:8000 --model tiny "
        "--dataset-name random --dataset-path /data/sharegpt.json --random-input-len 128 --random-output-len 32 "
        "--random-range-ratio 1 --num-prompts 16 --max-concurrency 4 --request-rate inf --seed 7 "
        "--warmup-requests 0 --disable-tqdm --output-file /jobs/j1/client/c4/result.jsonl --disable-stream"
    ), id="sglang-dataset-file-no-stream-no-tokenizer"),
    pytest.param(TRTLLM, {"concurrency": 8, "num_prompts": 32}, (
        "python3 -m tensorrt_llm.serve.scripts.benchmark_serving --backend openai "
        "--base-url http://127.0.0.1:8000 --model tiny --tokenizer /models/tiny --dataset-name random "
        "--random-ids --random-input-len 128 --random-output-len 32 --random-range-ratio 0 --num-prompts 32 "
        "--max-concurrency 8 --ignore-eos --seed 0 --percentile-metrics ttft,tpot,itl,e2el "
        "--metric-percentiles 50,90,99 --disable-tqdm --save-result --result-dir /jobs/j1/client/c4 "
        "--result-filename result.json"
    ), id="trtllm"),
]


@pytest.mark.parametrize("client,changes,expected", COMMAND_GOLDENS)
def test_command_golden(client, changes, expected):
    cmd = client.command(make_run(**changes))
    assert shlex.join(cmd.argv) == expected
    assert cmd.tool is None and dict(cmd.env_set) == {} and cmd.env_unset == ()


def test_trtllm_command_dataset_file_no_stream_no_warmup():
    cmd = TRTLLM.command(make_run(dataset_file="/data/custom.jsonl", streaming=False, warmup_requests=0))
    argv = list(cmd.argv)
    assert argv[argv.index("--dataset-name") + 1] == "trtllm_custom"
    assert argv[argv.index("--dataset-path") + 1] == "/data/custom.jsonl"
    assert "--random-ids" not in argv and "--random-input-len" not in argv
    assert "--non-streaming" in argv and "--no-test-input" in argv


# ---------------------------------------------------------------- sglang parser

def test_sglang_parse_old_version_line(staged):
    run = staged(SG / "c4_result.jsonl", "result.jsonl")
    r = SGLANG.parse(run)
    assert (r.concurrency, r.client, r.requested, r.completed, r.failed) == (4, "sglang-bench-serving", 16, 16, 0)
    assert (r.input_tokens, r.output_tokens) == (2048, 512)
    assert r.duration_s == pytest.approx(3.4127918)
    assert r.request_throughput == pytest.approx(16 / 3.4127918)
    assert r.output_token_throughput == pytest.approx(150.0238, rel=1e-5)
    assert r.output_token_throughput_per_gpu == pytest.approx(150.0238 / 2, rel=1e-5)
    assert r.total_token_throughput is None and r.output_token_throughput_per_user is None
    assert (r.ttft.mean, r.ttft.median, r.ttft.p90, r.ttft.p99) == (61.2874, 58.7719, None, 84.3306)
    assert (r.tpot.mean, r.tpot.median, r.tpot.p99) == (25.2043, 25.0981, 26.5518)
    assert (r.itl.mean, r.itl.median, r.itl.p99) == (25.2041, 24.8815, 33.9054)
    assert (r.e2e.mean, r.e2e.median, r.e2e.p99) == (842.6173, 838.9021, 889.1187)
    assert r.raw_path == str(run.out_dir / "result.jsonl")
    assert check(r, requested=16, max_failed_rate=0.0) == []


def test_sglang_parse_reads_last_appended_line(staged):
    r = SGLANG.parse(staged(SG / "two_runs_result.jsonl", "result.jsonl"))
    assert r.duration_s == 3.3
    assert r.total_token_throughput == pytest.approx(2560 / 3.3)
    assert (r.ttft.p90, r.tpot.p90, r.itl.p90, r.e2e.p90) == (77.5012, 26.0113, 28.4409, 871.2203)


def test_sglang_all_failed_is_parsed_then_rejected(staged):
    r = SGLANG.parse(staged(SG / "all_failed_result.jsonl", "result.jsonl"))
    assert (r.completed, r.failed, r.output_tokens) == (0, 16, 0)
    assert r.e2e.mean is None and r.e2e.p99 is None  # NaN in the file -> absent
    reasons = check(r, requested=16, max_failed_rate=0.5)
    assert any("zero output tokens" in x for x in reasons)
    assert any("16 of 16 requests failed" in x for x in reasons)
    assert any("only 0 of 16" in x for x in reasons)
    assert all(x.startswith("concurrency 4 (sglang-bench-serving)") for x in reasons)


# ---------------------------------------------------------------- trtllm parser

def test_trtllm_parse(staged):
    run = staged(TR / "c8_result.json", "result.json", concurrency=8, num_prompts=32, total_gpus=4)
    r = TRTLLM.parse(run)
    assert (r.concurrency, r.client, r.requested, r.completed, r.failed) == (8, "trtllm-benchmark-serving", 32, 30, 2)
    assert (r.input_tokens, r.output_tokens) == (3840, 960)
    assert r.duration_s == pytest.approx(5.0817342)
    assert r.output_token_throughput == pytest.approx(960 / 5.0817342)
    assert r.output_token_throughput_per_gpu == pytest.approx(960 / 5.0817342 / 4)
    assert r.total_token_throughput == pytest.approx(4800 / 5.0817342)
    assert r.output_token_throughput_per_user == 38.1207
    assert (r.ttft.mean, r.ttft.median, r.ttft.p90, r.ttft.p99) == (102.4418, 98.0036, 121.7734, 140.5521)
    assert (r.tpot.mean, r.tpot.median, r.tpot.p90, r.tpot.p99) == (23.3561, 23.2017, 24.6093, 25.8872)
    assert (r.itl.mean, r.itl.median, r.itl.p90, r.itl.p99) == (23.3549, 22.7701, 27.0319, 35.1164)
    assert (r.e2e.mean, r.e2e.median, r.e2e.p90, r.e2e.p99) == (826.4829, 819.3102, 866.0448, 902.7781)
    assert check(r, requested=32, max_failed_rate=0.1) == [
        "concurrency 8 (trtllm-benchmark-serving): only 30 of 32 requested requests completed"
    ]
    assert len(check(r, requested=32, max_failed_rate=0.0)) == 2


# ---------------------------------------------------------------- malformed output

def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("field", ["completed", "output_throughput", "mean_ttft_ms", "p99_itl_ms"])
def test_sglang_missing_field_names_file_and_field(tmp_path: Path, field: str):
    data = json.loads((SG / "c4_result.jsonl").read_text())
    del data[field]
    (tmp_path / "result.jsonl").write_text(json.dumps(data) + "\n")
    with pytest.raises(ClientOutputError) as exc:
        SGLANG.parse(make_run(out_dir=tmp_path))
    assert exc.value.field_name == field
    assert str(tmp_path / "result.jsonl") in str(exc.value) and field in str(exc.value)


def test_sglang_bad_type_and_bad_json(tmp_path: Path):
    data = json.loads((SG / "c4_result.jsonl").read_text())
    data["completed"] = "sixteen"
    (tmp_path / "result.jsonl").write_text(json.dumps(data) + "\n")
    with pytest.raises(ClientOutputError, match=r"field 'completed': bad value 'sixteen'"):
        SGLANG.parse(make_run(out_dir=tmp_path))
    (tmp_path / "result.jsonl").write_text('{"completed": 16,\n')
    with pytest.raises(ClientOutputError, match="not valid JSON"):
        SGLANG.parse(make_run(out_dir=tmp_path))
    (tmp_path / "result.jsonl").write_text("\n\n")
    with pytest.raises(ClientOutputError, match="empty"):
        SGLANG.parse(make_run(out_dir=tmp_path))


@pytest.mark.parametrize("client_name,file_name", [("sglang-bench-serving", "result.jsonl"),
                                                    ("trtllm-benchmark-serving", "result.json")])
def test_missing_output_file(tmp_path: Path, client_name: str, file_name: str):
    with pytest.raises(ClientOutputError) as exc:
        get_client(client_name).parse(make_run(out_dir=tmp_path))
    assert exc.value.path == str(tmp_path / file_name)
    assert "file not found" in str(exc.value)


@pytest.mark.parametrize("field", ["total_output_tokens", "mean_tpot_ms", "duration"])
def test_trtllm_missing_field(tmp_path: Path, field: str):
    data = json.loads((TR / "c8_result.json").read_text())
    del data[field]
    _write_json(tmp_path / "result.json", data)
    with pytest.raises(ClientOutputError) as exc:
        TRTLLM.parse(make_run(out_dir=tmp_path, num_prompts=32))
    assert exc.value.field_name == field
    assert str(tmp_path / "result.json") in str(exc.value)


def test_trtllm_rejects_non_object_and_impossible_counts(tmp_path: Path):
    _write_json(tmp_path / "result.json", [1, 2])
    with pytest.raises(ClientOutputError, match="top level must be an object"):
        TRTLLM.parse(make_run(out_dir=tmp_path))
    data = json.loads((TR / "c8_result.json").read_text())
    data["completed"] = 40
    _write_json(tmp_path / "result.json", data)
    with pytest.raises(ClientOutputError, match="completed=40 exceeds num_prompts=32"):
        TRTLLM.parse(make_run(out_dir=tmp_path, num_prompts=32))
    data["completed"] = -1
    _write_json(tmp_path / "result.json", data)
    with pytest.raises(ClientOutputError) as exc:
        TRTLLM.parse(make_run(out_dir=tmp_path, num_prompts=32))
    assert exc.value.field_name == "completed"
