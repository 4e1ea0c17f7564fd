"""Profiling command lines: the nsys prefix and the profiling env in every golden hold only what
perfsanity/engines/facts/profiling.yaml (read from upstream source, commits named there) accepts, and the
two profiled configs' goldens really carry them (tests/backends/test_golden.py pins their text)."""

from __future__ import annotations

import re

import pytest
from backendtest_support import GOLDEN_DIR, REPO, render_all, worker_context

from perfsanity.common.errors import ConfigError
from perfsanity.engines import facts, get_backend
from perfsanity.engines.base import SGLANG_PROFILER_ENDPOINTS
from perfsanity.plan.prepare import check_accuracy_and_profiling
from perfsanity.spec.config import load_config
from perfsanity.spec.topology import build_topology

PROFILING = facts.load("profiling")
TRTLLM_NSYS = REPO / "test_configs/disagg/perf/gb200-deepseek-r1-fp4_128k8k_ctx1_pp8_gen1_tep8_mtp3_nsys.yaml"
SGLANG_PROFILED = REPO / "test_configs/disagg/perf/gb200-glm-4.7-nvfp4_1k1k_sglang_1p1d_profiling.yaml"
GOLDENS = sorted(GOLDEN_DIR.glob("*/*.txt"))
PROFILE_ENV = re.compile(r"^(TLLM_PROFILE|TLLM_TORCH_PROFILE|TLLM_NVTX|NSYS_|SGLANG_TORCH_PROFILER)")


def _section(path, name: str) -> list[str]:
    lines = path.read_text().splitlines()
    start = lines.index(f"{name}:") + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return [line.strip().strip("'") for line in lines[start:end]]


def _nsys_words(argv: list[str]) -> list[str]:
    """The nsys prefix of an argv (up to the launcher or engine), [] when there is none."""
    if argv[:1] != ["nsys"]:
        return []
    end = next(i for i, w in enumerate(argv) if w in ("trtllm-llmapi-launch", "python3", "python"))
    return argv[:end]


@pytest.mark.parametrize("path", GOLDENS, ids=[f"{p.parent.name}/{p.stem}" for p in GOLDENS])
def test_golden_profiling_words_are_upstream_facts(path):
    argv = _section(path, "argv")
    words = _nsys_words(argv)
    if words:
        assert words[1] == PROFILING["nsys"]["subcommand"], path
        options = [w.split("=", 1)[0] for w in words[2:] if w.startswith("-")]
        unknown = sorted(set(options) - set(PROFILING["nsys"]["options"]))
        assert not unknown, f"{path}: nsys options {unknown} are not in facts/profiling.yaml"
        out = words[words.index("-o") + 1]
        assert "/profiles/" in out and out.endswith(".%q{SLURM_PROCID}"), f"{path}: nsys report {out}"
    env_names = [line.split("=", 1)[0] for line in _section(path, "env")]
    known = set(PROFILING["trtllm"]["env"]) | set(PROFILING["sglang"]["env"])
    unknown_env = sorted(n for n in env_names if PROFILE_ENV.match(n) and n not in known)
    assert not unknown_env, f"{path}: profiling variables {unknown_env} are not in facts/profiling.yaml"
    for line in _section(path, "env"):
        if line.startswith("TLLM_PROFILE_START_STOP="):
            assert re.match(PROFILING["trtllm"]["range_format"], line.split("=", 1)[1]), f"{path}: {line}"


def test_trtllm_nsys_golden_wraps_every_worker_with_the_iteration_window():
    config = load_config(TRTLLM_NSYS)
    rendered = render_all(config)

    def argv_of(text: str) -> list[str]:
        return [w.strip().strip("'") for w in text.split("argv:\n", 1)[1].split("env:\n", 1)[0].splitlines()]

    for role, window in (("CTX_0", "10-30"), ("GEN_0", "200-250")):  # ctx_/gen_profile_range
        text = rendered[f"{role}.txt"]
        argv = argv_of(text)
        assert argv[:2] == ["nsys", "profile"] and "cudaProfilerApi" in argv
        assert argv.index("trtllm-llmapi-launch") > argv.index("cudaProfilerApi")  # nsys wraps the launcher
        assert f"TLLM_PROFILE_START_STOP={window}" in text and "TLLM_PROFILE_RECORD_GC=1" in text
    assert "nsys" not in argv_of(rendered["DISAGG_SERVER.txt"])  # the router is not profiled


def test_sglang_profiled_golden_has_nsys_and_the_torch_profiler_dir():
    config = load_config(SGLANG_PROFILED)
    backend = get_backend("sglang")
    assert backend.profiler_endpoints == SGLANG_PROFILER_ENDPOINTS
    assert SGLANG_PROFILER_ENDPOINTS == (PROFILING["sglang"]["endpoints"]["start"],
                                         PROFILING["sglang"]["endpoints"]["stop"])
    for placement in build_topology(config).workers:
        spec = backend.worker(worker_context(config, placement))
        assert spec.argv[:2] == ("nsys", "profile")
        assert spec.env["SGLANG_TORCH_PROFILER_DIR"].endswith(f"/profiles/{placement.role}")
    assert config.profiling.windows == ("c512",)


def test_windows_need_a_backend_with_profiler_endpoints(make_config):
    config = make_config("trtllm", profiling={"torch_profiler": True, "windows": ["c8"]})
    with pytest.raises(ConfigError) as err:
        check_accuracy_and_profiling(config)
    assert "profiling.windows" in str(err.value) and "trtllm" in str(err.value)


@pytest.mark.parametrize(("profiling", "needle"), [
    ({"torch_profiler": True, "windows": ["c3"]}, "not in benchmark.concurrency_list"),
    ({"torch_profiler": True, "windows": ["8"]}, "c<concurrency>"),
    ({"windows": ["c1"]}, "needs profiling.torch_profiler"),
    ({"ctx_profile_range": "10..30"}, "ctx_profile_range"),
])
def test_bad_windows_are_config_errors(make_config, profiling, needle):
    with pytest.raises(ConfigError) as err:
        make_config("sglang", profiling=profiling)
    assert needle in str(err.value) and "profiling" in str(err.value)
