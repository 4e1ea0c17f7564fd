"""Sweep files → validated points → job dirs + manifest (dry-run; no SLURM)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from perfsanity.cli import submit as submit_mod
from perfsanity.common.errors import ConfigError
from perfsanity.jobs import sweep
from perfsanity.plan.launch import REPO_ROOT

BASE = "test_configs/disagg/perf/mocker-ctx1-gen1.yaml"  # relative to the repo

PRODUCT = f"""
base: {BASE}
mode: product
parameters:
  hardware.num_gen_servers: [1, 2]
  benchmark.concurrency_list: ["1 4", "8"]
  worker_config.gen.max_num_seqs: [64, 128]
  worker_config.*.max_num_batched_tokens: [2048]
"""


def _manifest(out: Path) -> dict:
    return json.loads((out / sweep.MANIFEST_FILE).read_text())


def _resolved(job_dir: Path) -> dict:
    return yaml.safe_load((job_dir / "config.resolved.yaml").read_text())


def test_product_dry_run_writes_8_job_dirs(write_sweep, tmp_path, capsys):
    out = tmp_path / "out"
    rc = submit_mod.main(["--sweep", str(write_sweep(PRODUCT)), "--out", str(out)])
    assert rc == 0
    manifest = _manifest(out)
    points = manifest["points"]
    assert len(points) == 8
    names = [p["name"] for p in points]
    assert len(set(names)) == 8
    assert all(set(n) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") for n in names)
    assert names[0] == "mocker-ctx1-gen1-ngen1-c1_4-gen.seqs64-tok2048"
    assert sorted(d.name for d in out.iterdir() if d.is_dir()) == sorted(names)
    assert manifest["mode"] == "product" and manifest["sweep_file"].endswith("sweep.yaml")
    assert manifest["base"] == str(REPO_ROOT / BASE)
    seen = set()
    for p in points:
        assert p["state"] == "pending" and p["job_id"] is None and p["attempts"] == []
        assert set(p["parameters"]) == {"hardware.num_gen_servers", "benchmark.concurrency_list",
                                        "worker_config.gen.max_num_seqs", "worker_config.*.max_num_batched_tokens"}
        seen.add(json.dumps(p["parameters"], sort_keys=True))
        job_dir = out / p["job_dir"]
        for f in ("launch.sh", "config.resolved.yaml", "job.json"):
            assert (job_dir / f).is_file()
        cfg = _resolved(job_dir)
        assert cfg["hardware"]["num_gen_servers"] == p["parameters"]["hardware.num_gen_servers"]
        assert cfg["worker_config"]["gen"]["max_num_seqs"] == p["parameters"]["worker_config.gen.max_num_seqs"]
        assert "max_num_seqs" not in cfg["worker_config"]["ctx"]
        # '*' reached every role of the base
        assert cfg["worker_config"]["ctx"]["max_num_batched_tokens"] == cfg["worker_config"]["gen"]["max_num_batched_tokens"] == 2048
        # the job re-reads its config at run time: launch.sh points at the point's own config file
        launch = (job_dir / "launch.sh").read_text()
        cfg_file = job_dir / "config" / "disagg" / "mocker-ctx1-gen1.yaml"
        assert f"PERFSANITY_CONFIG={cfg_file}" in launch
        assert "PERFSANITY_TEST_ID=disagg_upload-e2e-mocker-ctx1-gen1" in launch
        assert f"numGenServers={p['parameters']['hardware.num_gen_servers']}" in launch
    assert len(seen) == 8
    launches = [str(out / n / "launch.sh") for n in names]
    for path in launches:
        subprocess.run(["bash", "-n", path], check=True)
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", "-s", "bash", *launches], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout
    text = capsys.readouterr().out
    assert "8 points (product)" in text and names[-1] in text


def test_zip_mode_and_length_mismatch(write_sweep, tmp_path):
    path = write_sweep(f"""
base: {BASE}
mode: zip
parameters:
  hardware.num_gen_servers: [1, 2, 3]
  worker_config.gen.max_num_seqs: [16, 32, 64]
""")
    out = tmp_path / "zip"
    assert sweep.run_sweep(path, out) == 0
    points = _manifest(out)["points"]
    assert [(p["parameters"]["hardware.num_gen_servers"], p["parameters"]["worker_config.gen.max_num_seqs"])
            for p in points] == [(1, 16), (2, 32), (3, 64)]
    assert [_resolved(out / p["name"])["worker_config"]["gen"]["max_num_seqs"] for p in points] == [16, 32, 64]

    bad = write_sweep(f"""
base: {BASE}
mode: zip
parameters:
  hardware.num_gen_servers: [1, 2, 3]
  worker_config.gen.max_num_seqs: [16, 32]
""", "bad.yaml")
    with pytest.raises(ConfigError, match=r"equal length") as err:
        sweep.load_sweep(bad)
    assert err.value.file == str(bad) and "worker_config.gen.max_num_seqs" in err.value.key_path


GEN_BY_BATCH = "  hardware.num_gen_servers: [1, 2]\n  worker_config.gen.max_num_seqs: [64, 128]\n"


def point_names(write_sweep, parameters: str, name: str | None = None, file: str = "sweep.yaml") -> list[str]:
    """The point names of a sweep over BASE with these ``parameters:`` lines (and ``name:`` template)."""
    text = f"base: {BASE}\nparameters:\n{parameters}" + (f'name: "{name}"\n' if name else "")
    return [p.name for p in sweep.load_sweep(write_sweep(text, file)).points]


def test_name_template_and_collision_suffix(write_sweep, tmp_path):
    names = point_names(write_sweep, GEN_BY_BATCH, "{base}-gen{hardware.num_gen_servers}-bs{max_num_seqs}")
    assert names == ["mocker-ctx1-gen1-gen1-bs64", "mocker-ctx1-gen1-gen1-bs128",
                     "mocker-ctx1-gen1-gen2-bs64", "mocker-ctx1-gen1-gen2-bs128"]
    # a template that drops a varying key: colliding names get a short hash, the others stay clean
    names = point_names(write_sweep, GEN_BY_BATCH, "run gen={hardware.num_gen_servers}", "collide.yaml")
    assert len(set(names)) == 4
    assert all(n.startswith("run_gen_") and len(n.split("-")[-1]) == 6 for n in names)
    # default names: values that sanitize alike ('1 4' / '1,4') collide → hash suffix only on those
    names = point_names(write_sweep, '  benchmark.concurrency_list: ["1 4", "1,4", "8"]\n', file="conc.yaml")
    assert names[2] == "mocker-ctx1-gen1-c8"
    assert names[0] != names[1] and names[0].startswith("mocker-ctx1-gen1-c1_4-")
    bad = write_sweep(f"base: {BASE}\nparameters: {{hardware.num_gen_servers: [1]}}\nname: '{{nope}}'\n", "t.yaml")
    with pytest.raises(ConfigError, match=r"unknown placeholder \{nope\}"):
        sweep.load_sweep(bad)


def test_bad_point_exits_2_and_writes_nothing(write_sweep, tmp_path, capsys):
    path = write_sweep(f"""
base: {BASE}
parameters:
  hardware.num_gen_servers: [1, 2]
  worker_config.gen.tensor_parallel_size: [1, 2]
  worker_config.gen.moe_expert_parallel_size: [2]
""")
    out = tmp_path / "never"
    assert submit_mod.main(["--sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "worker_config.gen" in err
    assert "point 'mocker-ctx1-gen1-ngen1-gen.tp1-gen.ep2'" in err
    assert not out.exists()
    # a typo in a config key: the point and the key, with a hint
    path = write_sweep(f"base: {BASE}\nparameters:\n  hardware.num_gen_server: [3]\n", "typo.yaml")
    with pytest.raises(ConfigError, match=r"did you mean 'num_gen_servers'") as exc:
        sweep.run_sweep(path, out)
    assert exc.value.key_path == "hardware.num_gen_server" and "point 'mocker-ctx1-gen1-num_gen_server_3'" in str(exc.value)
    assert not out.exists()


@pytest.mark.parametrize(("text", "key", "match"), [
    (f"base: {BASE}\nparameter:\n  hardware.num_gen_servers: [1]\n", "parameter", "did you mean 'parameters'"),
    (f"base: {BASE}\nparameters:\n  hardware.num_gen_servers: 2\n", 'parameters["hardware.num_gen_servers"]',
     "must be a list"),
    (f"base: {BASE}\nparameters:\n  hardware.num_gen_servers: []\n", "parameters", "has no values"),
    (f"base: {BASE}\nmode: grid\nparameters:\n  hardware.num_gen_servers: [1]\n", "mode", "'product' or 'zip'"),
    (f"base: {BASE}\nparameters:\n  hardware.*.x: [1]\n", 'parameters["hardware.*.x"]', "only allowed as the role"),
    (f"base: {BASE}\nparameters:\n  name: [a]\n", 'parameters["name"]', "cannot be swept"),
    (f"base: {BASE}\nparameters:\n  worker_config.*.x: [1]\n  worker_config.gen.x: [2]\n",
     'parameters["worker_config.gen.x"]', "sets worker_config.gen.x"),
    (f"base: {BASE}\nparameters:\n  hardware.num_gen_servers: [1, 1]\n", 'parameters["hardware.num_gen_servers"]',
     "duplicate value"),
    ("base: nowhere.yaml\nparameters:\n  hardware.num_gen_servers: [1]\n", "base", "not found"),
    ("parameters:\n  hardware.num_gen_servers: [1]\n", "", "not a sweep"),
], ids=["typo", "scalar", "empty", "mode", "star", "reserved", "overlap", "dup", "no-base", "not-sweep"])
def test_sweep_file_errors_name_file_and_key(write_sweep, text, key, match):
    path = write_sweep(text)
    with pytest.raises(ConfigError, match=match) as exc:
        sweep.load_sweep(path)
    assert exc.value.file == str(path)
    assert exc.value.key_path == key


def test_sweep_block_inside_a_test_config(tmp_path):
    base = yaml.safe_load((REPO_ROOT / BASE).read_text())
    base["sweep"] = {"parameters": {"worker_config.*.max_num_batched_tokens": [1024, 2048]},
                     "name": "{base}-tok{max_num_batched_tokens}"}
    cfg = tmp_path / "disagg" / "perf" / "mine.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(yaml.safe_dump(base, sort_keys=False))
    out = tmp_path / "out"
    assert sweep.run_sweep(cfg, out) == 0
    names = [p["name"] for p in _manifest(out)["points"]]
    assert names == ["mine-tok1024", "mine-tok2048"]
    point_cfg = (out / "mine-tok2048" / "config" / "disagg" / "mine.yaml").read_text()
    assert "sweep:" not in point_cfg  # the block is not part of the job's config
    assert _resolved(out / "mine-tok2048")["worker_config"]["ctx"]["max_num_batched_tokens"] == 2048
    bad = dict(base, sweep={"base": "x.yaml", "parameters": {"hardware.num_gen_servers": [1]}})
    cfg.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="unknown key 'base'") as exc:
        sweep.load_sweep(cfg)
    assert exc.value.key_path == "sweep.base"


def test_set_and_mode_apply_to_every_point(write_sweep, tmp_path):
    path = write_sweep(f"base: {BASE}\nparameters:\n  hardware.num_gen_servers: [1, 2]\n")
    out = tmp_path / "o"
    rc = submit_mod.main(["--sweep", str(path), "--out", str(out), "--set", "benchmark.output_length=16",
                          "--mode", "gen_only"])
    assert rc == 0
    for p in _manifest(out)["points"]:
        cfg = _resolved(out / p["name"])
        assert cfg["benchmark"]["output_length"] == 16 and cfg["benchmark"]["mode"] == "gen_only"
        assert "disagg_upload-gen_only-mocker-ctx1-gen1" in (out / p["name"] / "launch.sh").read_text()
    with pytest.raises(ConfigError, match="also set on the command line"):
        sweep.load_sweep(path, fixed_overrides={"hardware.num_gen_servers": 3})


def test_rerun_with_other_values_is_refused(write_sweep, tmp_path):
    out = tmp_path / "o"
    assert sweep.run_sweep(write_sweep(f"base: {BASE}\nparameters:\n  hardware.num_gen_servers: [1]\n"), out) == 0
    assert sweep.run_sweep(write_sweep(f"base: {BASE}\nparameters:\n  hardware.num_gen_servers: [1]\n"), out) == 0
    with pytest.raises(ConfigError, match="holds a different sweep"):
        sweep.run_sweep(write_sweep(f"base: {BASE}\nparameters:\n  hardware.num_gen_servers: [2]\n"), out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("")
    with pytest.raises(ConfigError, match="not empty"):
        sweep.run_sweep(write_sweep(f"base: {BASE}\nparameters:\n  hardware.num_gen_servers: [1]\n"), other)
