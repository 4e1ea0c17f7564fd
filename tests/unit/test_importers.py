"""``perfsanity import srtctl|dynamo-sweep`` as real subprocesses on the shipped examples: the output is
golden-tested, accepted by ``submit.py --dry-run`` (same points as the source's cartesian product; same
topology as the source's resources), unmapped keys are printed by path, and bad input is one stderr
line naming file and field, with nothing written.

``PERFSANITY_UPDATE_GOLDEN=1 pytest tests/unit/test_importers.py`` rewrites the goldens; review the diff.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from perfsanity.spec.config import load_config
from perfsanity.spec.topology import build_topology

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples/import"
SRTCTL = EXAMPLES / "srtctl-dsr1-fp8-1p4d.yaml"
DYNAMO = EXAMPLES / "dynamo-sweep-dsr1-1p4d.yaml"
GOLDEN = Path(__file__).parent / "golden/import"
DYNAMO_ARGS = ["--gpus-per-node", "4", "--model-name", "deepseek-ai/DeepSeek-R1"]


def run(*args: object, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def perfsanity(*args: object) -> subprocess.CompletedProcess[str]:
    return run("-m", "perfsanity", *args)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PERFSANITY_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"no golden {path}; run with PERFSANITY_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden"


@pytest.fixture(scope="module")
def srtctl_out(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("srtctl") / "disagg" / "dsr1-fp8-1p4d.yaml"
    return perfsanity("import", "srtctl", SRTCTL, "-o", out), out


@pytest.fixture(scope="module")
def dynamo_out(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("dynamo") / "disagg" / "dynamo-sweep-dsr1-1p4d.yaml"
    return perfsanity("import", "dynamo-sweep", DYNAMO, "-o", out, *DYNAMO_ARGS), out


def test_srtctl_golden_and_unmapped(srtctl_out) -> None:
    proc, out = srtctl_out
    assert proc.returncode == 0, proc.stderr
    check_golden("srtctl-dsr1-fp8-1p4d.yaml", out.read_text())
    lines = proc.stdout.splitlines()
    assert lines[0] == f"wrote {out}"
    unmapped = [ln.strip().split(":")[0] for ln in lines[lines.index("not mapped (6):") + 1:]]
    assert unmapped == ["frontend.args", "backend.kv_events_config", "health_check",
                        "backend.sglang_config.prefill.disaggregation-mode",
                        "backend.sglang_config.decode.disaggregation-mode",
                        "backend.sglang_config.decode.cuda-graph-max-bs"]


def test_srtctl_topology_equals_source_and_dry_run_accepts(srtctl_out, tmp_path) -> None:
    proc, out = srtctl_out
    assert proc.returncode == 0, proc.stderr
    src = yaml.safe_load(SRTCTL.read_text())["resources"]
    topo = build_topology(load_config(out))
    assert len(topo.of_kind("ctx")) == src["prefill_workers"]
    assert len(topo.of_kind("gen")) == src["decode_workers"]
    assert topo.total_nodes == src["prefill_nodes"] + src["decode_nodes"]
    assert topo.total_gpus == (src["prefill_nodes"] + src["decode_nodes"]) * src["gpus_per_node"]
    dry = run("submit.py", "--config", out, "--out", tmp_path / "job", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"nodes: {topo.total_nodes}   GPUs: {topo.total_gpus} ({src['gpus_per_node']} per node)" in dry.stdout
    assert (tmp_path / "job" / "launch.sh").is_file()


def test_dynamo_sweep_golden(dynamo_out) -> None:
    proc, out = dynamo_out
    assert proc.returncode == 0, proc.stderr
    check_golden("dynamo-sweep-dsr1-1p4d.yaml", out.read_text())
    assert "not mapped: nothing" in proc.stdout


def test_dynamo_sweep_points_equal_source_product(dynamo_out, tmp_path) -> None:
    proc, out = dynamo_out
    assert proc.returncode == 0, proc.stderr
    source = yaml.safe_load(DYNAMO.read_text())
    product = math.prod(len(v) if isinstance(v, list) else 1 for sec in source.values() for v in sec.values())
    assert product == 8
    dry = run("submit.py", "--sweep", out, "--out", tmp_path / "sweep", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    manifest = json.loads((tmp_path / "sweep" / "sweep_manifest.json").read_text())
    points = manifest["points"]
    assert len(points) == product
    # every source combination is one point, and its GPUs per prefill worker follow prefill_nodes × 4
    seen = {(p["overrides"]["worker_config.ctx.tensor_parallel_size"], p["overrides"]["worker_config.ctx.mem_fraction_static"],
             p["overrides"]["worker_config.gen.max_running_requests"]) for p in points}
    assert seen == {(n * 4, m, r) for n in source["slurm"]["prefill_nodes"] for m in source["sglang"]["mem-fraction-static"]
                    for r in source["sglang"]["max-running-requests"]}


def test_dynamo_sweep_unmapped_printed(tmp_path) -> None:
    src = tmp_path / "sw.yaml"
    src.write_text("slurm:\n  prefill_nodes: [1]\n  decode_nodes: [1]\n  prefill_workers: 1\n  decode_workers: 1\n"
                   "  time_limit: ['01:00:00']\n"
                   "sglang:\n  mem-fraction-static: [0.8, 0.9]\n  port: [30000]\n")
    out = tmp_path / "disagg" / "sw.yaml"
    proc = perfsanity("import", "dynamo-sweep", src, "-o", out, "--gpus-per-node", "4")
    assert proc.returncode == 0, proc.stderr
    assert "not mapped (2):" in proc.stdout
    assert "  slurm.time_limit: not a sweep parameter of Dynamo's job script" in proc.stdout
    assert "  sglang.port: set by the harness from the topology" in proc.stdout
    assert "sweep: 2 points" in proc.stdout
    assert "#   sglang.port: set by the harness from the topology" in out.read_text()


BAD_SRTCTL = [
    ("resources:\n  prefill_workers: two\n", "name", "is required"),
    ("name: x\nresources:\n  prefill_nodes: 1\n  prefill_workers: two\n  decode_nodes: 1\n  decode_workers: 1\n",
     "resources.prefill_workers", "bad value 'two'"),
    ("name: x\nresources:\n  prefill_nodes: 1\n  prefill_workers: 1\n  decode_nodes: 1\n  decode_workers: 1\n"
     "backend:\n  sglang_config:\n    prefill:\n      tensor-parallel-size: 8\n",
     "backend.sglang_config.prefill.tensor-parallel-size", "not the 4 GPUs per worker"),
    ("name: x\nresources:\n  agg_nodes: 1\nbackend:\n  type: trtllm\n", "backend.type", "only sglang"),
    ("name: x\nresources:\n  prefill_nodes: 1\n  prefill_workers: 3\n  decode_nodes: 1\n  decode_workers: 1\n",
     "resources.prefill_workers", "do not split evenly"),
    ("name: x\nmodel: [a]\n", "model", "must be a mapping"),
    ("name: x\n  bad: [\n", "", "invalid YAML"),
]
BAD_DYNAMO = [
    ("slurm:\n  prefill_nodes: [1]\nbenchmark:\n  isl: [1]\n", "benchmark", "unknown section"),
    ("slurm:\n  prefill_nodes: [3]\n  prefill_workers: [2]\n  decode_nodes: [1]\n  decode_workers: [1]\n",
     "slurm.prefill_nodes", "not divisible"),
    ("slurm:\n  prefill_nodes: [1]\n  decode_nodes: [1]\n  prefill_workers: [1]\n", "slurm.decode_workers",
     "is required in disaggregated mode"),
    ("slurm: {prefill_nodes: 1, decode_nodes: 1, prefill_workers: 1, decode_workers: 1}\n"
     "sglang:\n  no-such-flag: [1, 2]\n", "sglang.no-such-flag", "points would collapse"),
    ("slurm:\n  agg_nodes: [1]\n  prefill_nodes: [1]\n", "slurm.agg_nodes", "use one mode"),
    ("slurm:\n  prefill_nodes: []\n", "slurm.prefill_nodes", "has no values"),
    ("sglang:\n  mem-fraction-static: [0.8]\n", "slurm", "needs prefill_nodes"),
]


@pytest.mark.parametrize(("tool", "text", "key", "words"),
                         [("srtctl", *c) for c in BAD_SRTCTL] + [("dynamo-sweep", *c) for c in BAD_DYNAMO])
def test_bad_input_one_line_names_file_and_field(tmp_path, tool, text, key, words) -> None:
    src = tmp_path / "in.yaml"
    src.write_text(text)
    out = tmp_path / "o" / "disagg" / "x.yaml"
    proc = perfsanity("import", tool, src, "-o", out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    prefix = f"perfsanity: error: {src}: " + (f"{key}: " if key else "")
    assert lines[0].startswith(prefix), lines[0]
    assert words in lines[0]
    assert not (tmp_path / "o").exists()


def test_output_kind_must_match_place(tmp_path) -> None:
    proc = perfsanity("import", "srtctl", SRTCTL, "-o", tmp_path / "aggr" / "x.yaml")
    assert proc.returncode == 2
    assert proc.stderr.startswith("perfsanity: error: -o: ") and "disagg config" in proc.stderr
    assert not (tmp_path / "aggr").exists()


def test_unwritable_output_is_one_line(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = perfsanity("import", "srtctl", SRTCTL, "-o", blocker / "disagg" / "x.yaml")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("perfsanity: error: -o: cannot write ") and len(proc.stderr.splitlines()) == 1


def test_aggregated_srtctl_goes_under_aggr(tmp_path) -> None:
    src = tmp_path / "agg.yaml"
    src.write_text("name: agg-job\nmodel: {path: /models/m, container: /c.sqsh, precision: bf16}\n"
                   "resources: {gpu_type: h100, gpus_per_node: 8, agg_nodes: 2, agg_workers: 4}\n"
                   "backend:\n  sglang_config:\n    aggregated: {tensor-parallel-size: 4}\n"
                   "benchmark: {type: sa-bench, isl: 1024, osl: 128, concurrencies: [8, 16]}\n")
    env_out = tmp_path / "o"
    proc = subprocess.run([sys.executable, "-m", "perfsanity", "import", "srtctl", str(src)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO), "PERFSANITY_OUT": str(env_out)},
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    out = env_out / "import" / "aggr" / "agg-job.yaml"
    assert proc.stdout.splitlines()[0] == f"wrote {out}"
    topo = build_topology(load_config(out))
    assert len(topo.of_kind("server")) == 4 and topo.total_gpus == 16 and topo.total_nodes == 2


def test_dynamo_sweep_aggregated(tmp_path) -> None:
    src = tmp_path / "agg-sweep.yaml"
    src.write_text("slurm:\n  agg_nodes: [2]\n  agg_workers: [1, 2]\nsglang:\n  context-length: [4096]\n")
    out = tmp_path / "aggr" / "agg-sweep.yaml"
    proc = perfsanity("import", "dynamo-sweep", src, "-o", out)
    assert proc.returncode == 0, proc.stderr
    dry = run("submit.py", "--sweep", out, "--out", tmp_path / "sweep", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    points = json.loads((tmp_path / "sweep" / "sweep_manifest.json").read_text())["points"]
    # 2 nodes × 8 GPUs (Dynamo's default) as one worker of 16 GPUs, or two of 8
    assert [(p["overrides"]["hardware.num_servers"], p["overrides"]["worker_config.server.tensor_parallel_size"])
            for p in points] == [(1, 16), (2, 8)]
