"""The perf test every role runs: ``test_e2e[disagg_upload-<mode>-<config>]`` / ``[aggr_upload-<config>]``.

One case per config under ``test_configs/`` (and per mode for disaggregated configs).

* Inside a job (``DISAGG_SERVING_TYPE`` set, as srun or the local launcher sets it), the case runs that
  one role: ``GEN_i``, ``CTX_i``, ``SERVER_i``, ``DISAGG_SERVER`` or ``BENCHMARK``.
* Run directly by a developer (no ``DISAGG_SERVING_TYPE``), the case runs the whole test locally:
  every role as a local process, results in a job directory under ``out/``. GPU backends cannot run
  here and are skipped with the reason.
"""

from __future__ import annotations

import os

import pytest

from perfsanity.jobs.testcases import all_cases, run_case

CASES = all_cases()


@pytest.mark.parametrize("case", CASES)
def test_e2e(case, tmp_path_factory):
    run_case(case, os.environ, tmp_path_factory)
