"""Test-list lines of TensorRT-LLM's L0 flow → (kind, mode, config name).

Accepted forms (anything before ``test_e2e[`` and after ``]`` — paths, ``TIMEOUT (120)`` — is ignored)::

    perf/test_perf_sanity.py::test_e2e[disagg_upload-e2e-<config>]
    perf/test_perf_sanity.py::test_e2e[disagg_upload-gen_only-<config>]
    perf/test_perf_sanity.py::test_e2e[disagg_upload-<config>]        (mode from the config)
    perf/test_perf_sanity.py::test_e2e[aggr_upload-<config>]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from perfsanity.common.errors import ConfigError

MODES = ("e2e", "gen_only_no_context", "gen_only")
_ID_RE = re.compile(r"test_e2e\[([^\]]+)\]")
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")  # config file stems (as perfsanity.spec.config requires)


@dataclass(frozen=True)
class TestSelection:
    kind: str  # disagg | aggr
    mode: str | None  # None: the config's own benchmark.mode
    config_name: str

    def config_path(self, configs_root: Path) -> Path:
        return configs_root / self.kind / "perf" / f"{self.config_name}.yaml"


def parse_test_id(test_id: str, *, source: str = "test id") -> TestSelection:
    if test_id.startswith("disagg_upload-"):
        kind, rest = "disagg", test_id[len("disagg_upload-"):]
    elif test_id.startswith("aggr_upload-"):
        kind, rest = "aggr", test_id[len("aggr_upload-"):]
    else:
        raise ConfigError(source, "", f"{test_id!r}: expected disagg_upload-… or aggr_upload-…")
    mode = None
    if kind == "disagg":
        for m in MODES:
            if rest.startswith(m + "-") and len(rest) > len(m) + 1:
                mode, rest = m, rest[len(m) + 1:]
                break
    if not rest:
        raise ConfigError(source, "", f"{test_id!r}: no config name")
    if not _NAME_RE.fullmatch(rest):
        raise ConfigError(source, "", f"{test_id!r}: config name {rest!r} must match [A-Za-z0-9._-]+")
    return TestSelection(kind, mode, rest)


def parse_test_list(path: Path) -> list[TestSelection]:
    """Every test selected by a test-list file (blank and ``#`` lines skipped)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read test list: {exc}") from None
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _ID_RE.search(line)
        if not m:
            raise ConfigError(str(path), f"line {lineno}", f"{line!r} is not a test_e2e[...] test")
        out.append(parse_test_id(m.group(1), source=f"{path}:{lineno}"))
    if not out:
        raise ConfigError(str(path), "", "no test in the test list")
    return out
