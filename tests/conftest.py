"""Shared pytest set-up: make the repo importable when pytest runs from tests/ (as slurm_run.sh does)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest hook signature
    """What was skipped and why, grouped by reason (one line per reason, most frequent first)."""
    reports = terminalreporter.stats.get("skipped", [])
    if not reports:
        return
    reasons: dict[str, int] = {}
    for report in reports:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    terminalreporter.section(f"skip summary: {len(reports)} skipped")
    for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        terminalreporter.write_line(f"{count:5d}  {reason}")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):  # noqa: ARG001 - pytest hook signature
    """Under pytest-xdist (``--dist loadgroup``, as scripts/test runs it) every test that uses the local
    SLURM cluster runs on one worker: some of them take nodes DOWN or need every node idle."""
    for item in items:
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.xdist_group("slurm"))


def pytest_configure(config):
    # registered by pytest-xdist when it is installed; declared here so --strict-markers accepts it without
    config.addinivalue_line("markers", "xdist_group(name): run on the same pytest-xdist worker as its group")
