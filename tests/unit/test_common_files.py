"""perfsanity.common.files.write_atomic: the one atomic write (text or bytes, mode, no temp left behind)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from perfsanity.common.files import write_atomic


def test_text_and_bytes_replace_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.json"
    write_atomic(path, "first\n")
    assert path.read_text() == "first\n"
    write_atomic(path, b"<?xml version='1.0'?>\n<x/>")
    assert path.read_bytes() == b"<?xml version='1.0'?>\n<x/>"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]  # no temp file left


def test_mode_is_applied_and_default_follows_the_umask(tmp_path: Path) -> None:
    script = tmp_path / "launch.sh"
    write_atomic(script, "#!/bin/bash\n", mode=0o755)
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    plain = tmp_path / "plain.txt"
    old = os.umask(0o022)
    try:
        write_atomic(plain, "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_atomic(path, "old")
    with pytest.raises(TypeError):
        write_atomic(path, 42)  # type: ignore[arg-type]
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
