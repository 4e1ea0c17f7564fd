"""Fixtures of the backend tests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from perfsanity.spec.config import Config, config_from_dict

BASE_DISAGG: dict[str, Any] = {
    "metadata": {"model_name": "tiny", "backend": "trtllm"},
    "hardware": {"gpus_per_node": 4, "num_ctx_servers": 1, "num_gen_servers": 1, "gpu_type": "GB200"},
    "environment": {"model_path": "/models/tiny"},
    "benchmark": {"concurrency_list": "8 16"},
    "worker_config": {
        "ctx": {"tensor_parallel_size": 1},
        "gen": {"tensor_parallel_size": 1},
    },
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture
def make_config() -> Callable[..., Config]:
    """``make_config(backend="sglang", benchmark={"mode": "gen_only"}, ...)``: a small disagg config
    (1 ctx + 1 gen server of 1 GPU each) with the given sections merged in."""

    def make(backend: str = "trtllm", *, name: str = "unit", kind: str = "disagg", **sections: Any) -> Config:
        raw = _merge(BASE_DISAGG, {"metadata": {"backend": backend}})
        if kind == "aggr":
            raw["worker_config"] = {"server": {"tensor_parallel_size": 1}}
        raw = _merge(raw, sections)
        return config_from_dict(raw, name=name, kind=kind)

    return make
