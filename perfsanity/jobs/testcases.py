"""The cases of ``tests/perf/test_perf_sanity.py::test_e2e``, and what one case does when run.

Ids: ``disagg_upload-e2e-<config>`` and ``disagg_upload-gen_only-<config>`` for every disaggregated
config, ``aggr_upload-<config>`` for every aggregated one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from perfsanity import engines
from perfsanity.common.errors import PerfsanityError
from perfsanity.plan.launch import REPO_ROOT
from perfsanity.spec.config import Metadata
from perfsanity.spec.testlist import parse_test_id

CONFIGS_ROOT = REPO_ROOT / "test_configs"
LOCAL_MODES = ("e2e",)


def runs_locally(backend: str | None) -> bool:
    """A backend that needs no GPU (``Backend.needs_gpu``): its cases run on this machine."""
    return backend in engines.names() and not engines.get_backend(backend).needs_gpu


@dataclass(frozen=True)
class Case:
    test_id: str
    kind: str
    mode: str | None
    config_path: Path

    @property
    def config_name(self) -> str:
        return self.config_path.stem


def all_cases(root: Path = CONFIGS_ROOT, environ: Mapping[str, str] | None = None) -> list:
    """One pytest param per (config, mode); local-runnable cases are marked slow.

    Inside a job whose config lives outside ``test_configs/`` (``--set`` overrides, sweep points, a
    user's own file), the job's own case is added from ``$PERFSANITY_CONFIG``.
    """
    import os

    env = os.environ if environ is None else environ
    job_id, job_config = env.get("PERFSANITY_TEST_ID"), env.get("PERFSANITY_CONFIG")
    if env.get("DISAGG_SERVING_TYPE") and job_id and job_config:
        # a role inside a job runs one case: don't read every config to collect the others
        sel = parse_test_id(job_id)
        return [pytest.param(Case(job_id, sel.kind, sel.mode, Path(job_config)), id=job_id)]
    cases = []
    for kind, modes in (("disagg", ("e2e", "gen_only")), ("aggr", (None,))):
        for path in sorted((root / kind / "perf").glob("*.yaml")):
            for mode in modes:
                prefix = f"{kind}_upload-" + (f"{mode}-" if mode else "")
                case = Case(prefix + path.stem, kind, mode, path)
                marks = [pytest.mark.slow] if runs_locally(_backend_of(path)) else []
                cases.append(pytest.param(case, id=case.test_id, marks=marks))
    if job_id and job_config and job_id not in {c.values[0].test_id for c in cases}:
        sel = parse_test_id(job_id)
        cases.append(pytest.param(Case(job_id, sel.kind, sel.mode, Path(job_config)), id=job_id))
    return cases


def _backend_of(path: Path) -> str | None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
        return (data.get("metadata") or {}).get("backend", Metadata.model_fields["backend"].default)
    except (OSError, yaml.YAMLError):
        return None


def run_case(case: Case, environ: Mapping[str, str], tmp_path_factory) -> None:  # noqa: ANN001
    """Run one role (inside a job) or the whole job locally (developer run)."""
    role = environ.get("DISAGG_SERVING_TYPE")
    if role:
        want = environ.get("PERFSANITY_TEST_ID")
        if want != case.test_id:
            pytest.skip(f"this job runs {want}, not {case.test_id}")
        from perfsanity.run.job import job_from_env
        from perfsanity.run.roles import run_role

        try:
            run_role(job_from_env(environ))
        except PerfsanityError as exc:
            pytest.fail(f"{role}: {exc}", pytrace=False)
        except KeyboardInterrupt:
            pytest.fail(f"{role}: interrupted (SIGTERM)", pytrace=False)
        return
    _run_locally(case)


def _run_locally(case: Case) -> None:
    from perfsanity.jobs.local import run_local
    from perfsanity.plan.prepare import prepare_direct
    from perfsanity.spec.config import load_config

    sel = parse_test_id(case.test_id)
    config = load_config(case.config_path)
    backend = config.metadata.backend
    if not runs_locally(backend):
        pytest.skip(f"backend {backend} needs GPUs; run it on a cluster with "
                    f"`python3 submit.py --config {case.config_path.relative_to(REPO_ROOT)} --submit`")
    if (sel.mode or config.benchmark.mode) not in LOCAL_MODES:
        pytest.skip(f"mode {sel.mode} is not supported by {backend} (no gen-only benchmark in the mocker)")
    if config.benchmark.type == "manual":
        pytest.skip(f"benchmark.type manual serves until it is stopped, so it has no verdict to test here; run "
                    f"`python3 submit.py --config {case.config_path.relative_to(REPO_ROOT)} --local` "
                    "(tests/e2e/test_benchmark_types_e2e.py drives it and stops it)")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = REPO_ROOT / "out" / f"pytest-{case.config_name}-{stamp}"
    job = prepare_direct(case.config_path, out, mode=sel.mode)
    job.write()
    print(job.summary())
    verdict = run_local(job)
    if verdict != 0:
        report = out / "report.json"
        pytest.fail(f"{case.test_id} failed (exit code {verdict}); see {out} ({report})", pytrace=False)
