"""Small filesystem helpers: the one atomic write of the tree, and reading a JSON artifact.

:func:`write_atomic` is how every artifact (job files, results.json, gate.json, junit, reports,
markers) is written: readers see either the old file or the whole new one, never a torn write.
The temp file sits in the same directory (so the rename never crosses a filesystem), has a name no
other writer uses (pid + random suffix, created exclusively), gets the umask's permissions unless
``mode`` is given, and is removed if anything fails before the rename.

:func:`read_json` reads a JSON artifact; a missing or unreadable file is one
:class:`~perfsanity.common.errors.ConfigError` naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from perfsanity.common.errors import ConfigError


def write_atomic(path: Path, data: str | bytes, *, mode: int | None = None) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` via a temp file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    try:
        with tmp.open("xb") as fh:
            fh.write(payload)
        if mode is not None:
            tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_json(path: Path, *, missing: str = "file not found") -> Any:
    """The parsed JSON of ``path``; :class:`ConfigError` (``missing`` when the file is absent) otherwise."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), "", missing) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(str(path), "", f"not readable JSON: {exc}") from None
