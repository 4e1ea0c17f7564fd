"""perfsanity.common.redact: secrets masked in text and data, ordinary text untouched."""

from __future__ import annotations

import pytest

from perfsanity.common.redact import MASK, redact, redact_data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HF_TOKEN=hf_abcdefghijklmnopqrstu rest", "HF_TOKEN=*** rest"),
        ("export GITHUB_TOKEN=abc123", "export GITHUB_TOKEN=***"),
        ("AWS_SECRET_ACCESS_KEY=xyz", "AWS_SECRET_ACCESS_KEY=***"),
        ("API_KEY_ID=1", "API_KEY_ID=***"),
        ("DB_PASSWORD=hunter2 next", "DB_PASSWORD=*** next"),
        ('export HF_TOKEN="two words" next', "export HF_TOKEN=*** next"),
        ("A_KEY='x y' z", "A_KEY=*** z"),
        ("api_key: abc", "api_key: ***"),
        ("  password: p@ss word", "  password: ***"),
        ('{"password": "p", "user": "u"}', '{"password": "***", "user": "u"}'),
        ('{"hf_token":"v"}', '{"hf_token":"***"}'),
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ("authorization=token abc", "authorization=token ***"),
        ("postgresql://user:pw@db:5432/x", "postgresql://user:***@db:5432/x"),
        ("see https://u:p@h/x and http://h:8000/y", "see https://u:***@h/x and http://h:8000/y"),
        ("token hf_ABCDEFGHIJKLMNOPQRST here", f"token {MASK} here"),
        ("ghp_aaaaaaaaaaaaaaaaaaaaaaaaa", MASK),
        ("nvapi-abcdefghijklmnopqrstuvwx", MASK),
        ("key sk-abcdefghijklmnopqrstuvwxyz", f"key {MASK}"),
    ],
)
def test_secrets_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "max_num_tokens=512 max_tokens_in_buffer=4608",
        "tokenizer_path=/models/x tokenizer_mode=auto",
        "num_keys=3",
        "kv_cache_config: {free_gpu_memory_fraction: 0.8}",
        "INFO request 17 done: 1024 tokens in 0.5 s",
        "http://node0:8000/v1/completions",
        "UCX_TLS=rc,cuda_ipc NCCL_IB_HCA=mlx5",
        "hf_short is fine",
        "passwordless ssh is configured",
        "",
        "plain text with = signs a=b",
    ],
)
def test_normal_text_untouched(text: str) -> None:
    assert redact(text) == text


def test_redact_data_nested() -> None:
    data = {
        "environment": {"worker_env_var": "HF_TOKEN=abc TLLM_LOG_LEVEL=INFO", "model_path": "/m"},
        "hf_token": "abc",
        "api_key": "",
        "tokenizer_path": "/models/tok",
        "max_num_tokens": 512,
        "list": ["PASSWORD=x", 3, None, {"secret": "s"}],
        "tuple": ("DB_PASSWORD=y",),
    }
    assert redact_data(data) == {
        "environment": {"worker_env_var": "HF_TOKEN=*** TLLM_LOG_LEVEL=INFO", "model_path": "/m"},
        "hf_token": MASK,
        "api_key": "",
        "tokenizer_path": "/models/tok",
        "max_num_tokens": 512,
        "list": ["PASSWORD=***", 3, None, {"secret": MASK}],
        "tuple": ["DB_PASSWORD=***"],
    }


@pytest.mark.parametrize("text", ["kv-key-token-test: PASS (post-merge)", "monkey-token-bench: 3"])
def test_test_names_with_secret_words_untouched(text: str) -> None:
    assert redact(text) == text
