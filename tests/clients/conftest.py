"""Fixtures of the client tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from clienttest_support import make_run


@pytest.fixture
def staged(tmp_path: Path):
    """Copy a fixture file to ``tmp_path/<dest_name>``; return a ClientRun whose out_dir is tmp_path."""

    def stage(src: Path, dest_name: str, **changes):
        shutil.copyfile(src, tmp_path / dest_name)
        return make_run(out_dir=tmp_path, **changes)

    return stage
