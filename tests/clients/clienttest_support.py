"""Shared helpers for the client tests: a ClientRun factory, the fixture directories, and a tool
venv's interpreter (skip when it is not installed, fail under CI=true)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from perfsanity.engines import tooling
from perfsanity.load.base import ClientRun

HERE = Path(__file__).resolve().parent
CLIENT_FIXTURES = HERE / "fixtures"
AIPERF_FIXTURES = HERE.parent / "fixtures" / "aiperf"

BASE_RUN = ClientRun(
    url="http://127.0.0.1:8000",
    model_name="tiny",
    tokenizer="/models/tiny",
    concurrency=4,
    num_prompts=16,
    input_length=128,
    output_length=32,
    streaming=True,
    request_timeout_s=600.0,
    random_seed=0,
    warmup_requests=2,
    dataset_file=None,
    out_dir=Path("/jobs/j1/client/c4"),
    total_gpus=2,
)


def make_run(**changes) -> ClientRun:
    return dataclasses.replace(BASE_RUN, **changes)


def tool_python(tool: str) -> Path:
    """The interpreter of tool venv ``tool``; skips the test when the venv is not installed and fails it
    under ``CI=true``, naming the install command."""
    env = tooling.installed_tool(tool)
    if env is None:
        message = f"tool venv {tool!r} not installed; run: python3 -m perfsanity.engines.tooling install {tool}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return env.python
