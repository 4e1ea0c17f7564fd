"""Test-list lines of TensorRT-LLM's L0 flow → (kind, mode, config name), the job's bound and the line a
job runs.

Accepted ids (anything before ``test_e2e[`` and after ``]`` is ignored, except upstream's ``TIMEOUT (N)``
suffix, N in minutes, which becomes the job's bound)::

    perf/test_perf_sanity.py::test_e2e[disagg_upload-e2e-<config>]
    perf/test_perf_sanity.py::test_e2e[disagg_upload-gen_only-<config>]
    perf/test_perf_sanity.py::test_e2e[disagg_upload-gen_only_no_context-<config>]
    perf/test_perf_sanity.py::test_e2e[disagg_upload-<config>]        (mode from the config)
    perf/test_perf_sanity.py::test_e2e[aggr_upload-<config>]          (ours: test_configs/aggr/perf/<config>)
    perf/test_perf_sanity.py::test_e2e[aggr_upload-<cfg>-<server>]    (upstream: one server of aggregated/<cfg>)
    perf/test_perf_sanity.py::test_e2e[aggr_upload-ctx_only-<cfg>]    (upstream: ctx worker of disaggregated/<cfg>)

The prefixes without ``_upload`` (``disagg-``, ``aggr-``) are accepted too, as upstream does. For an
``aggr`` id the config name is everything after the prefix; which file it names (ours, or upstream's
``<cfg>`` + ``<server>``) is decided where configs are looked up (:mod:`perfsanity.plan.prepare`).

:func:`select_entry` picks the line a job runs the way TensorRT-LLM's ``submit.py`` does with
``--split-group N``: the N-th test line (1-indexed; 0 → the first), or, when the job's
``pytestCommand`` carries pytest-split's ``--splits``/``--group``, the one test pytest-split's
``least_duration`` algorithm puts in group N.
"""

from __future__ import annotations

import heapq
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from perfsanity.common.errors import ConfigError

MODES = ("e2e", "gen_only_no_context", "gen_only")
PREFIXES = {"disagg_upload": "disagg", "disagg": "disagg", "aggr_upload": "aggr", "aggr": "aggr"}
CTX_ONLY = "ctx_only"
_ID_RE = re.compile(r"test_e2e\[([^\]]+)\]")
_TIMEOUT_RE = re.compile(r"\bTIMEOUT\s*\(\s*(\d{1,6})\s*\)")
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")  # config file stems (as perfsanity.spec.config requires)


@dataclass(frozen=True)
class TestSelection:
    kind: str  # disagg | aggr
    mode: str | None  # None: the config's own benchmark.mode
    config_name: str

    def config_path(self, configs_root: Path) -> Path:
        return configs_root / self.kind / "perf" / f"{self.config_name}.yaml"

    @property
    def ctx_only_config(self) -> str | None:
        """``<cfg>`` of ``aggr_upload-ctx_only-<cfg>`` (a disaggregated config), else None."""
        if self.kind == "aggr" and self.config_name.startswith(CTX_ONLY + "-"):
            return self.config_name[len(CTX_ONLY) + 1:]
        return None

    @property
    def upstream_server(self) -> tuple[str, str | None]:
        """(``<cfg>``, ``<server>``) of ``aggr_upload-<cfg>-<server>`` read the upstream way: the config is
        the first ``-`` label (upstream's aggregated file names have no ``-``), the server the rest."""
        cfg, _, server = self.config_name.partition("-")
        return cfg, server or None


@dataclass(frozen=True)
class TestEntry:
    """One test line: what it selects, its ``TIMEOUT (N)`` in minutes (None: none) and where it is."""

    selection: TestSelection
    node_id: str  # the line without the TIMEOUT suffix (pytest-split's key)
    timeout_min: int | None
    source: str  # file:line

    @property
    def timeout_s(self) -> int | None:
        return None if self.timeout_min is None else self.timeout_min * 60


def parse_test_id(test_id: str, *, source: str = "test id") -> TestSelection:
    head, sep, rest = test_id.partition("-")
    kind = PREFIXES.get(head) if sep else None
    if kind is None:
        if test_id in PREFIXES:  # "disagg_upload" alone
            raise ConfigError(source, "", f"{test_id!r}: no config name")
        raise ConfigError(source, "", f"{test_id!r}: expected disagg_upload-… or aggr_upload-… "
                          "(or disagg-… / aggr-…)")
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
    if kind == "aggr" and rest == CTX_ONLY:
        raise ConfigError(source, "", f"{test_id!r}: no config name after ctx_only-")
    return TestSelection(kind, mode, rest)


def parse_test_entries(path: Path) -> list[TestEntry]:
    """Every test line of a test-list file (blank and ``#`` lines skipped), in order."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read test list: {exc}") from None
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _ID_RE.search(line)
        if not m:
            raise ConfigError(str(path), f"line {lineno}", f"{line!r} is not a test_e2e[...] test")
        where = f"{path}:{lineno}"
        t = _TIMEOUT_RE.search(line[m.end():])
        timeout = int(t.group(1)) if t else None
        if timeout == 0:
            raise ConfigError(str(path), f"line {lineno}", "TIMEOUT (0): the bound must be at least 1 minute")
        out.append(TestEntry(parse_test_id(m.group(1), source=where), line[: m.end()], timeout, where))
    if not out:
        raise ConfigError(str(path), "", "no test in the test list")
    return out


def parse_test_list(path: Path) -> list[TestSelection]:
    """Every test selected by a test-list file (blank and ``#`` lines skipped)."""
    return [e.selection for e in parse_test_entries(path)]


# ---- --split-group ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitArgs:
    """pytest-split's options as found in a ``pytestCommand``."""

    splits: int
    group: int
    algorithm: str
    durations_path: str | None


def pytest_command_of(prefix_text: str) -> str | None:
    """The value of the last ``[export] pytestCommand=...`` assignment in a script prefix, unquoted."""
    value = None
    for line in prefix_text.splitlines():
        m = re.match(r"^\s*(?:export\s+)?pytestCommand=(.*)$", line)
        if m:
            try:
                parts = shlex.split(m.group(1))
            except ValueError:
                continue
            value = " ".join(parts) if len(parts) != 1 else parts[0]
    return value


def split_args(pytest_command: str | None, *, source: str) -> SplitArgs | None:
    """``--splits``/``--group`` (with ``--splitting-algorithm`` and ``--durations-path``) or None."""
    if not pytest_command:
        return None
    try:
        argv = shlex.split(pytest_command)
    except ValueError as exc:
        raise ConfigError(source, "pytestCommand", f"cannot be split into arguments: {exc}") from None
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        for name in ("--splits", "--group", "--splitting-algorithm", "--durations-path"):
            if arg == name and i + 1 < len(argv):
                opts[name] = argv[i + 1]
                i += 1
            elif arg.startswith(name + "="):
                opts[name] = arg.split("=", 1)[1]
        i += 1
    if "--splits" not in opts or "--group" not in opts:
        return None
    try:
        splits, group = int(opts["--splits"]), int(opts["--group"])
    except ValueError:
        raise ConfigError(source, "pytestCommand", f"--splits {opts['--splits']!r} / --group {opts['--group']!r} "
                          "must be integers") from None
    if splits < 1 or not 1 <= group <= splits:
        raise ConfigError(source, "pytestCommand", f"--group {group} must be within 1..--splits {splits}")
    return SplitArgs(splits, group, opts.get("--splitting-algorithm", "duration_based_chunks"),
                     opts.get("--durations-path"))


def least_duration_groups(node_ids: Sequence[str], durations: dict[str, float], splits: int) -> list[list[str]]:
    """pytest-split's ``least_duration``: sort by node id, then (stably) by duration descending, and give
    each test to the group with the least total so far (ties: the lower group). A test with no recorded
    duration counts the average of the recorded ones (1 s when none is)."""
    known = [durations[n] for n in node_ids if n in durations]
    avg = sum(known) / len(known) if known else 1.0
    items = sorted(((n, durations.get(n, avg)) for n in sorted(node_ids)), key=lambda t: t[1], reverse=True)
    heap = [(0.0, g) for g in range(splits)]
    groups: list[list[str]] = [[] for _ in range(splits)]
    for node_id, duration in items:
        total, g = heapq.heappop(heap)
        groups[g].append(node_id)
        heapq.heappush(heap, (total + duration, g))
    return groups


def read_durations(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), "", f"cannot read test durations: {exc}") from None
    if isinstance(data, list):  # pytest-split's older [[node_id, seconds], ...] form
        data = dict(tuple(x) for x in data if isinstance(x, list) and len(x) == 2)
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", "test durations must be a JSON object {node id: seconds}")
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def select_entry(
    entries: Sequence[TestEntry],
    split_group: int,
    *,
    source: str,
    pytest_command: str | None = None,
    llm_src: Path | None = None,
) -> TestEntry:
    """The entry a job with ``--split-group split_group`` runs (see the module doc)."""
    if split_group < 0:
        raise ConfigError(None, "--split-group", f"{split_group} must be >= 0")
    split = split_args(pytest_command, source="script prefix") if split_group > 0 else None
    if split is None:
        if split_group == 0:
            return entries[0]
        if split_group > len(entries):
            raise ConfigError(source, "", f"--split-group {split_group} is beyond the {len(entries)} test(s) listed")
        return entries[split_group - 1]
    if split.algorithm != "least_duration":
        raise ConfigError(None, "pytestCommand", f"--splitting-algorithm {split.algorithm!r}: only least_duration "
                          "is reproduced (as TensorRT-LLM's submit.py requires)")
    if split.group != split_group:
        raise ConfigError(None, "--split-group", f"{split_group} differs from pytestCommand's --group {split.group}")
    durations: dict[str, float] = {}
    if llm_src is not None:
        defs = llm_src / "tests/integration/defs"
        if split.durations_path:
            given = Path(split.durations_path)
            path = given if given.is_file() else defs / given.name
        else:
            path = defs / ".test_durations"
        durations = read_durations(path)
    by_id = {e.node_id: e for e in entries}
    group = least_duration_groups(list(by_id), durations, split.splits)[split.group - 1]
    if len(group) != 1:
        raise ConfigError(source, "", f"pytest-split group {split.group} of {split.splits} holds {len(group)} tests "
                          f"({', '.join(group) or 'none'}); a job runs exactly one")
    return by_id[group[0]]
