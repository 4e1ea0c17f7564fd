"""``--dist loadgroup`` (scripts/test) really groups: the tests that use the local SLURM cluster run on
one worker (tests/conftest.py marks them), and so does a module with an ``xdist_group`` pytestmark.

pytest 9.2 with pytest-xdist 3.8 silently stopped grouping (pytest-xdist#1386): every test still
passed, on both workers at once. This runs a small project, with a copy of tests/conftest.py, under
the venv's own pytest and pytest-xdist.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
N = 6


def test_loadgroup_keeps_each_group_on_one_worker(tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slurm: uses the cluster\n")
    body = "import time\n\nimport pytest\n\n{mark}\n@pytest.mark.parametrize('i', range({n}))\ndef test_{name}(i):\n    time.sleep(0.05)\n"
    (tmp_path / "test_cluster.py").write_text(body.format(mark="@pytest.mark.slurm", n=N, name="cluster"))
    (tmp_path / "test_module_group.py").write_text(
        body.format(mark="pytestmark = pytest.mark.xdist_group('mod')\n", n=N, name="grouped"))
    (tmp_path / "test_free.py").write_text(body.format(mark="", n=4 * N, name="free"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p",
                           "no:cacheprovider"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    ran = re.findall(r"^\[(gw\d)\] .*PASSED (\S+)", proc.stdout, re.M)
    assert len(ran) == 6 * N, proc.stdout[-3000:]
    for name, group in (("test_cluster", "@slurm"), ("test_grouped", "@mod")):
        mine = [(gw, nodeid) for gw, nodeid in ran if f"::{name}[" in nodeid]
        assert len(mine) == N and all(nodeid.endswith(group) for _, nodeid in mine), mine
        assert len({gw for gw, _ in mine}) == 1, f"{name} ran on several workers: {mine}"
