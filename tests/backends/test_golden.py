"""Golden files: every role's ServerSpec (argv, env, files) and the router's, for each GPU test config.

``PERFSANITY_UPDATE_GOLDEN=1 pytest tests/backends/test_golden.py`` rewrites them; review the diff.
"""

from __future__ import annotations

import pytest
from backendtest_support import GOLDEN_DIR, GPU_CONFIGS, check_golden, render_all

from perfsanity.spec.config import load_config


def test_configs_found():
    # a moved or renamed config directory must not silently turn this module into zero tests
    backends = {load_config(p).metadata.backend for p in GPU_CONFIGS}
    assert {"trtllm", "sglang", "dynamo-sglang"} <= backends
    assert any(load_config(p).kind == "aggr" for p in GPU_CONFIGS)


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=[p.stem for p in GPU_CONFIGS])
def test_golden(path):
    config = load_config(path)
    check_golden(GOLDEN_DIR / config.name, render_all(config))


def test_no_golden_dir_without_config():
    names = {p.stem for p in GPU_CONFIGS}
    stale = sorted(d.name for d in GOLDEN_DIR.iterdir() if d.is_dir() and d.name not in names)
    assert not stale, f"golden directories without a config: {stale}"
