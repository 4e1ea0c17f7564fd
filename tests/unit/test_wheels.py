"""``environment.wheels``: checked at submit (one-line errors naming the entry), installed once per job by
the install step with the servers' interpreter into the job dir, and first on the servers' PYTHONPATH."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from perfsanity.run import wheels
from perfsanity.spec.config import load_config

MOCKER = Path(__file__).resolve().parents[2] / "test_configs/disagg/perf/mocker-ctx1-gen1.yaml"


def build_wheel(directory: Path, name: str = "psprobe", version: str = "1.0") -> Path:
    """A real (pure-Python) wheel: a package, METADATA, WHEEL and a RECORD with hashes."""
    files = {
        f"{name}/__init__.py": f'VERSION = "{version}"\n',
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                             "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    out = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return out


def _config_with(tmp_path: Path, wheel_list: list[str]) -> Path:
    raw = yaml.safe_load(MOCKER.read_text())
    raw.setdefault("environment", {})["wheels"] = wheel_list
    path = tmp_path / "disagg" / "perf" / "with-wheels.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("entry,needle", [
    ("/nonexistent/dir/x-1.0-py3-none-any.whl", "file not found"),
    ("relative/x-1.0-py3-none-any.whl", "must be an absolute path"),
    ("/etc/hostname", "not a .whl file"),
])
def test_bad_wheel_entries_are_one_line_errors(h, tmp_path, entry, needle):
    config = _config_with(tmp_path, [entry])
    out = tmp_path / "out"
    res = h.run_submit(["--config", config, "--out", out, "--dry-run"])
    h.assert_one_line_error(res, str(config), "environment.wheels[0]", needle)
    h.assert_nothing_written(out)


@pytest.mark.slow
def test_wheels_installed_once_into_the_job_and_importable_by_servers(tmp_path):
    wheel = build_wheel(tmp_path)
    config = load_config(_config_with(tmp_path, [str(wheel)]))
    job_dir = tmp_path / "job"
    site = wheels.install_wheels(config, job_dir, sys.executable)
    assert site == job_dir / "wheels" / "site" and (site / "psprobe" / "__init__.py").is_file()
    assert json.loads((job_dir / "wheels" / "installed.json").read_text())["wheels"] == [str(wheel)]
    log = (job_dir / "logs" / "install.wheels.log").read_text()
    assert "Successfully installed psprobe-1.0" in log
    # a second node finds the marker and does not install again
    assert wheels.install_wheels(config, job_dir, sys.executable) == site
    assert (job_dir / "logs" / "install.wheels.log").read_text() == log
    # a server process of the job imports the wheel's code
    path = wheels.pythonpath(config, job_dir, os.environ.get("PYTHONPATH"))
    assert path.split(":")[0] == str(site)
    proc = subprocess.run([sys.executable, "-c", "import psprobe; print(psprobe.VERSION, psprobe.__file__)"],
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0 and proc.stdout.startswith(f"1.0 {site}"), proc.stderr


@pytest.mark.slow
def test_broken_wheel_fails_the_install_naming_the_log(tmp_path):
    bad = tmp_path / "broken-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    config = load_config(_config_with(tmp_path, [str(bad)]))
    with pytest.raises(wheels.PerfsanityError, match="installing environment.wheels failed .*install.wheels.log"):
        wheels.install_wheels(config, tmp_path / "job", sys.executable)
    assert not (tmp_path / "job" / "wheels" / "installed.json").exists()


def test_no_wheels_leaves_pythonpath_alone(tmp_path):
    config = load_config(MOCKER)
    assert wheels.install_wheels(config, tmp_path, sys.executable) is None
    assert wheels.pythonpath(config, tmp_path, "/x") == "/x" and wheels.pythonpath(config, tmp_path, None) is None
