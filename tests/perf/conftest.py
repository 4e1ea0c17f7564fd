"""The full suite (``scripts/test``) runs each local mocker job once: a perf case whose whole job a
dedicated end-to-end test already runs, and asserts more about, is deselected there. Run
``pytest tests/perf`` (or name a case) to run every case; inside a job nothing is deselected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: config → the test that runs the same job from the same shipped config
RUN_ELSEWHERE = {
    "mocker-ctx1-gen1": "tests/e2e/test_local_e2e.py",
    "mocker-ctx1-gen1-rate": "tests/e2e/test_benchmark_types_e2e.py",
    "mocker-ctx1-gen1-isl2": "tests/e2e/test_benchmark_types_e2e.py",
    "mocker-ctx1-gen1-accuracy": "tests/e2e/test_accuracy_profiling.py",
    "mocker-ctx1-gen1-profiling": "tests/e2e/test_accuracy_profiling.py",
    "mocker-ctx2-gen2-etcd-nats": "tests/slurm/test_dynamo_infra_slurm.py",
    "mocker-ctx2-gen2": "tests/unit/test_upstream_slurm.py",
}
HERE = Path(__file__).resolve().parent
_GONE = pytest.StashKey[list]()


def _asked_for_perf_cases(config) -> bool:  # noqa: ANN001 - pytest's Config
    for arg in config.args:
        path = Path(arg.split("::", 1)[0])
        path = path if path.is_absolute() else Path(config.invocation_params.dir) / path
        if path.resolve() == HERE or HERE in path.resolve().parents:
            return True
    return False


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DISAGG_SERVING_TYPE") or _asked_for_perf_cases(config):
        return
    keep, gone = [], []
    for item in items:
        case = getattr(getattr(item, "callspec", None), "params", {}).get("case")
        name = getattr(case, "config_name", None)
        if item.path.parent == HERE and name in RUN_ELSEWHERE and case.mode in ("e2e", None):
            gone.append(item)
        else:
            keep.append(item)
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = keep
        config.stash[_GONE] = [(item.callspec.params["case"].config_name) for item in gone]


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest hook signature
    gone = config.stash.get(_GONE, [])
    if gone:
        terminalreporter.section(f"deselected: {len(gone)} perf case(s) whose job another test runs")
        for name in gone:
            terminalreporter.write_line(f"  {name}: run by {RUN_ELSEWHERE[name]} (pytest tests/perf runs it here)")
