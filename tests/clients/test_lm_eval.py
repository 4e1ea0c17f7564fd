"""The accuracy client (perfsanity.load.lm_eval): its argv, its parser on real lm-eval output
(tests/fixtures/lm_eval), the config checks of the ``accuracy`` section, and, slow, a real lm-eval run
of the shipped task against a local server that answers every question right."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from perfsanity.common.errors import ConfigError
from perfsanity.engines.tooling import ensure_tool
from perfsanity.load import lm_eval
from perfsanity.load.base import ClientOutputError
from perfsanity.spec.config import Accuracy, config_from_dict
from perfsanity.spec.loader import read_yaml

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests/fixtures/lm_eval"
TASK_DIR = REPO / "test_configs/accuracy"
ACCURACY_CONFIG = REPO / "test_configs/disagg/perf/mocker-ctx1-gen1-accuracy.yaml"


def _acc(**kw) -> Accuracy:
    return Accuracy(enable_accuracy_test=True, tasks="tiny_arith", **kw)


def _run(tmp_path: Path, task_dir: Path | None = TASK_DIR) -> lm_eval.AccuracyRun:
    return lm_eval.AccuracyRun(url="http://127.0.0.1:8000/", model_name="tiny-mocker", out_dir=tmp_path / "acc",
                               task_dir=task_dir)


def test_command_points_lm_eval_at_the_front_door_offline(tmp_path):
    acc = _acc(model_args_extra="num_concurrent=4,tokenized_requests=True,timeout=60", limit=3)
    cmd = lm_eval.command(acc, _run(tmp_path))
    assert cmd.tool == "lm-eval"
    assert cmd.argv == (
        "lm-eval", "run", "--model", "local-completions", "--tasks", "tiny_arith", "--model_args",
        "model=tiny-mocker,base_url=http://127.0.0.1:8000/v1/completions,tokenizer_backend=None,"
        "tokenized_requests=True,num_concurrent=4,timeout=60",  # extras override ours, keep our order
        "--output_path", str(tmp_path / "acc"), "--log_samples", "--include_path", str(TASK_DIR), "--limit", "3")
    assert cmd.env_set == {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                           "HF_DATASETS_CACHE": str(tmp_path / "acc" / "hf-datasets-cache")}


def test_chat_model_uses_the_chat_endpoint_and_no_include_path(tmp_path):
    cmd = lm_eval.command(_acc(model="local-chat-completions"), _run(tmp_path, task_dir=None))
    assert "base_url=http://127.0.0.1:8000/v1/chat/completions" in cmd.argv[cmd.argv.index("--model_args") + 1]
    assert "--include_path" not in cmd.argv and "--limit" not in cmd.argv


@pytest.mark.parametrize(("fixture", "score"), [("mocker", 0.0), ("exact", 1.0)])
def test_parse_real_results(fixture, score):
    (r,) = lm_eval.parse(_acc(threshold=0.5), FIXTURES / fixture)
    assert (r.task, r.metric, r.score, r.threshold, r.samples, r.error) == \
        ("tiny_arith", "exact_match,strip", score, 0.5, 8, None)
    assert r.passed is (score >= 0.5)
    assert Path(r.raw_path).parent == FIXTURES / fixture
    assert ("<" if score < 0.5 else ">=") + " threshold 0.5" in r.verdict_text()


def test_parse_without_threshold_records_and_passes():
    (r,) = lm_eval.parse(_acc(), FIXTURES / "mocker")  # metric unset: the task's first non-stderr metric
    assert (r.metric, r.score, r.passed) == ("exact_match,strip", 0.0, True)
    assert "not judged" in r.verdict_text()


def _copy(tmp_path: Path, edit) -> Path:
    src = next((FIXTURES / "exact").glob("results_*.json"))
    data = json.loads(src.read_text())
    edit(data)
    out = tmp_path / "out" / "tiny-mocker"
    out.mkdir(parents=True)
    (out / src.name).write_text(json.dumps(data))
    return tmp_path / "out"


@pytest.mark.parametrize(("edit", "field", "needle"), [
    (lambda d: d["results"].pop("tiny_arith"), "results.tiny_arith", "no results for task"),
    (lambda d: d["results"]["tiny_arith"].pop("exact_match,strip"), "results.tiny_arith.exact_match,strip",
     "no metric 'exact_match,strip'"),
    (lambda d: d.pop("results"), "results", "missing"),
])
def test_parse_errors_name_file_and_field(tmp_path, edit, field, needle):
    out = _copy(tmp_path, edit)
    with pytest.raises(ClientOutputError) as err:
        lm_eval.parse(_acc(metric="exact_match,strip"), out)
    assert err.value.field_name == field and needle in str(err.value) and "results_" in err.value.path


def test_parse_without_a_results_file(tmp_path):
    with pytest.raises(ClientOutputError, match="wrote no results"):
        lm_eval.parse(_acc(), tmp_path)


@pytest.mark.parametrize(("section", "needle"), [
    ({"tasks": "tiny arith"}, "lm-eval task names"),
    ({"model_args_extra": "base_url=http://elsewhere"}, "other than base_url/model"),
    ({"model_args_extra": "num_concurrent"}, "key=value"),
    ({"threshold": 1.5}, "threshold"),
    ({"model": "hf"}, "accuracy.model"),
])
def test_accuracy_section_errors(section, needle):
    raw = read_yaml(ACCURACY_CONFIG)
    raw["accuracy"] = {**raw["accuracy"], **section}
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw, name="mocker-ctx1-gen1-accuracy", kind="disagg", source=str(ACCURACY_CONFIG))
    assert needle in str(err.value) and "accuracy" in str(err.value)


def _answer(prompt: str) -> str:
    a, op, b = re.findall(r"What is (-?\d+) ([-+*]) (-?\d+)\?", prompt)[-1]
    value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
    return f" {value}\n"


@pytest.mark.slow
def test_real_lm_eval_scores_the_shipped_task_offline(tmp_path):
    """lm-eval itself, on the shipped task, against a local server: every answer right → score 1.0; the
    dataset is read from the repo (offline), and the requests carry the served model name."""
    tool = ensure_tool("lm-eval")  # CI installs it; a missing tool is a failure, not a skip
    acc = _acc(metric="exact_match,strip", threshold=1.0)
    with FakeOpenAI(prompt_tokens=8, token_delay_s=0.0, answer=_answer) as srv:
        run = lm_eval.AccuracyRun(url=srv.url, model_name="tiny-mocker", out_dir=tmp_path / "acc", task_dir=TASK_DIR)
        cmd = lm_eval.command(acc, run)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "OPENAI"))}
        env.update(cmd.env_set)
        argv = [str(tool.bin_dir / cmd.argv[0]), *cmd.argv[1:]]
        proc = subprocess.run(argv, cwd=TASK_DIR, env=env, capture_output=True, text=True, timeout=600,  # noqa: S603
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert len(srv.requests) == 8 and {r["model"] for r in srv.requests} == {"tiny-mocker"}
    (r,) = lm_eval.parse(acc, tmp_path / "acc")
    assert (r.score, r.samples, r.passed) == (1.0, 8, True), r
    shutil.rmtree(tmp_path / "acc" / "hf-datasets-cache", ignore_errors=True)
