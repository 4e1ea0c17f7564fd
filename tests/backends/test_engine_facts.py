"""Submit-time engine checks from the shipped facts (perfsanity/engines/facts): a misspelled or
release-dependent engine key is exit 2 at --dry-run, naming key, engine and release; the trtllm argv
follows the release's capability table; sglang.json matches the real parser in its tool venv."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from backendtest_support import REPO, tool_env, worker_context

from perfsanity.common.errors import ConfigError
from perfsanity.engines import facts, get_backend
from perfsanity.engines import trtllm as tb
from perfsanity.spec.topology import build_topology

GLM_SGLANG = REPO / "test_configs/disagg/perf/gb200-glm-4.7-nvfp4_1k1k_sglang_4p2d.yaml"
TRTLLM_DSR1 = REPO / "test_configs/disagg/perf/gb200-deepseek-r1-fp4_1k1k_ctx2_dep4_gen1_dep16_mtp3.yaml"


def _gen(config_fn, backend, **gen):
    return config_fn(backend, worker_config={"gen": {"tensor_parallel_size": 1, **gen}})


def test_trtllm_misspelled_key_names_key_engine_release(make_config):
    config = _gen(make_config, "trtllm", max_batch_sise=8)
    with pytest.raises(ConfigError) as err:
        tb.BACKEND.validate(config, "c.yaml")
    text = str(err.value)
    assert "worker_config.gen.max_batch_sise" in text and "TensorRT-LLM" in text
    assert facts.load("trtllm")["default_release"] in text and "did you mean 'max_batch_size'" in text
    assert err.value.exit_code == 2


def test_trtllm_opt_out_for_newer_keys(make_config):
    config = make_config("trtllm", metadata={"engine_keys_unchecked": ["brand_new_knob"]},
                         worker_config={"gen": {"tensor_parallel_size": 1, "brand_new_knob": 1}})
    tb.BACKEND.validate(config, "c.yaml")


def test_trtllm_unknown_release_is_refused(make_config):
    config = make_config("trtllm", metadata={"engine_version": "9.9.9"})
    with pytest.raises(ConfigError, match="no TensorRT-LLM facts for release '9.9.9'"):
        tb.BACKEND.validate(config, "c.yaml")


@pytest.mark.parametrize(("release", "port", "report", "config_flag"), [
    ("main@7af5c6c2", "0", True, "--config"),
    ("main@00209af1", "8000", False, "--config"),         # no --report_addr, asserts port > 0
    ("main@4c05a74", "0", False, "--extra_llm_api_options"),  # no --config alias
])
def test_trtllm_argv_follows_release_capabilities(make_config, release, port, report, config_flag):
    config = make_config("trtllm", metadata={"engine_version": release})
    placement = build_topology(config).role("CTX_0")
    spec = tb.BACKEND.worker(worker_context(config, placement))
    argv = list(spec.argv)
    expected = port if port == "0" else str(int(port) + placement.gpu_offset)  # servers sharing a node differ
    assert argv[argv.index("--port") + 1] == expected and spec.port == int(expected)
    assert ("--report_addr" in argv) is report
    assert config_flag in argv
    tb.BACKEND.validate(config, "c.yaml")  # what it generates for that release, the release accepts


def test_sglang_misspelled_key(make_config):
    config = _gen(make_config, "sglang", mem_fraction_statc=0.8)
    with pytest.raises(ConfigError) as err:
        get_backend("sglang").validate(config, "c.yaml")
    text = str(err.value)
    assert "worker_config.gen.mem_fraction_statc" in text and "sglang 0.5.23" in text
    assert "mem_fraction_static" in text


def test_ambiguous_key_says_which_versions_accept_it(make_config):
    config = _gen(make_config, "sglang", cuda_graph_max_bs=128)
    with pytest.raises(ConfigError) as err:
        get_backend("sglang").validate(config, "c.yaml")
    text = str(err.value)
    assert "ambiguous in sglang 0.5.23" in text and "<= 0.5.13" in text and "0.5.14-0.5.19" in text


def test_dry_run_exit_2_before_sbatch(tmp_path):
    text = GLM_SGLANG.read_text().replace("mem_fraction_static: 0.88", "mem_fraction_statc: 0.88")
    assert "mem_fraction_statc" in text
    bad = tmp_path / "disagg" / "perf" / GLM_SGLANG.name
    bad.parent.mkdir(parents=True)
    bad.write_text(text)
    proc = subprocess.run([sys.executable, str(REPO / "submit.py"), "--config", str(bad), "--dry-run",
                           "--out", str(tmp_path / "job")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "mem_fraction_statc" in proc.stderr and "sglang 0.5.23" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "job" / "launch.sh").exists()


def test_shipped_configs_pass_validation():
    for path in sorted(REPO.glob("test_configs/*/perf/*.yaml")):
        from perfsanity.spec.config import load_config

        config = load_config(path)
        get_backend(config.metadata.backend).validate(config, str(path))


def dump_options(tool: str, script: str) -> dict:
    """What facts/``script`` prints in tool venv ``tool`` (skipped, or failed under CI=true, without it)."""
    proc = subprocess.run([str(tool_env(tool).python), str(facts.FACTS_DIR / script)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # seconds each: a real engine/tool process or many subprocesses
@pytest.mark.parametrize("tool", ["sglang", "dynamo-sglang"])
def test_sglang_facts_match_the_real_parser(tool):
    """sglang.json's entry for the venv's release is exactly what the real parser defines."""
    got = dump_options(tool, "dump_sglang_options.py")
    shipped = facts.load("sglang")["releases"].get(got["version"])
    assert shipped is not None, f"sglang.json has no entry for {got['version']} (python -m perfsanity.engines.facts.update_sglang)"
    assert shipped["options"] == got["options"], "sglang.json is stale: python -m perfsanity.engines.facts.update_sglang"


def test_report_addr_file_is_where_the_role_reads_the_port(make_config, tmp_path):
    config = make_config("trtllm")
    spec = tb.BACKEND.worker(worker_context(config, build_topology(config).role("CTX_0"), tmp_path))
    argv = list(spec.argv)
    assert spec.addr_file == argv[argv.index("--report_addr") + 1]
    assert spec.published_ports() == []  # not written yet: the role falls back to the socket scan
    addr = tmp_path / "engine" / "CTX_0.addr"
    addr.parent.mkdir(parents=True, exist_ok=True)
    addr.write_text("node-1:43123\n")  # TensorRT-LLM's format: host:port, newline
    assert spec.published_ports() == [43123]
    addr.write_text("[::1]:8001\n")
    assert spec.published_ports() == [8001]
    old = make_config("trtllm", metadata={"engine_version": "main@00209af1"})
    assert tb.BACKEND.worker(worker_context(old, build_topology(old).role("CTX_0"))).addr_file is None


# ---- dynamo.mocker ----------------------------------------------------------------------------


def test_mocker_misspelled_key_names_key_engine_release(make_config):
    config = make_config("dynamo-mocker", worker_config={"gen": {"tensor_parallel_size": 1, "speedup_ratoi": 2.0}})
    with pytest.raises(ConfigError) as err:
        get_backend("dynamo-mocker").validate(config, "c.yaml")
    text = str(err.value)
    release = facts.load("dynamo_mocker")["default_release"]
    assert "worker_config.gen.speedup_ratoi" in text and f"dynamo.mocker {release}" in text, text
    assert "did you mean 'speedup_ratio'" in text and err.value.exit_code == 2


def test_mocker_refuses_flags_the_backend_writes(make_config):
    config = make_config("dynamo-mocker", worker_config={"ctx": {"tensor_parallel_size": 1, "model_name": "x"}})
    with pytest.raises(ConfigError, match=r"worker_config\.ctx\.model_name: --model-name is set by perfsanity"):
        get_backend("dynamo-mocker").validate(config, "c.yaml")


def test_mocker_known_keys_and_unchecked_keys_pass(make_config):
    config = make_config("dynamo-mocker", metadata={"engine_keys_unchecked": ["brand_new_knob"]},
                         worker_config={"gen": {"tensor_parallel_size": 1, "speedup_ratio": 2.0, "max_num_seqs": 8,
                                                "brand_new_knob": 1}})
    get_backend("dynamo-mocker").validate(config, "c.yaml")


def test_mocker_dry_run_refuses_what_dynamo_mocker_rejects(tmp_path):
    """The shipped mocker config with one misspelled engine key: exit 2 at --dry-run, one line, no files."""
    import yaml

    raw = yaml.safe_load((REPO / "test_configs/disagg/perf/mocker-ctx1-gen1.yaml").read_text())
    raw["worker_config"]["ctx"]["block_sise"] = 64
    cfg = tmp_path / "mocker-typo.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "submit.py"), "--config", str(cfg), "--out", str(out),
                           "--dry-run"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(cfg) in lines[0] and "worker_config.ctx.block_sise" in lines[0] and "'block_size'" in lines[0]
    assert not out.exists()


def test_mocker_facts_match_the_real_parser():
    """dynamo_mocker.json's entry for the dynamo venv's release is exactly what dynamo.mocker's parser defines,
    and it is the release the project pins."""
    got = dump_options("dynamo", "dump_mocker_options.py")
    data = facts.load("dynamo_mocker")
    assert data["default_release"] == got["version"], "dynamo_mocker.json's default is not the pinned dynamo"
    shipped = data["releases"].get(got["version"])
    assert shipped is not None, f"dynamo_mocker.json has no entry for ai-dynamo {got['version']}"
    assert shipped["options"] == got["options"] and shipped["allow_abbrev"] == got["abbrev"], \
        "dynamo_mocker.json is stale: rerun perfsanity/engines/facts/dump_mocker_options.py in the dynamo venv"
