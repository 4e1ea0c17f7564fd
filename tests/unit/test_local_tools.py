"""--local builds the tool venvs this machine lacks before the job's clock starts (slurm.timeout bounds the
job, as an allocation would, not the machine's first-use set-up)."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfsanity.engines import tooling
from perfsanity.jobs import local
from perfsanity.plan.prepare import prepare_direct

REPO = Path(__file__).resolve().parents[2]
MOCKER = REPO / "test_configs/disagg/perf/mocker-ctx1-gen1.yaml"


class ToolEnvStub:
    version = "0"
    python = Path("/nonexistent/python")


def test_missing_tools_are_built_before_the_supervisor_starts(tmp_path, monkeypatch, capsys):
    job = prepare_direct(MOCKER, tmp_path / "job")
    events: list[str] = []
    built: set[str] = set()

    def ensure(name: str):
        events.append(f"build {name}")
        built.add(name)
        return ToolEnvStub()

    monkeypatch.setattr(tooling, "installed_tool", lambda name: ToolEnvStub() if name in built or name != "aiperf"
                        else None)
    monkeypatch.setattr(tooling, "ensure_tool", ensure)

    class Started(Exception):
        pass

    def supervise(*_a, **_k):
        events.append("supervise")
        raise Started

    monkeypatch.setattr(local, "supervise", supervise)
    with pytest.raises(Started):
        local.run_local(job)
    wanted = local.job_tools(job.config)
    assert "aiperf" in wanted and events == [*(f"build {t}" for t in wanted), "supervise"]
    out = capsys.readouterr().out
    assert "first use on this machine: building aiperf (not counted in slurm.timeout)" in out


def test_nothing_is_said_or_built_when_every_tool_is_ready(tmp_path, monkeypatch, capsys):
    job = prepare_direct(MOCKER, tmp_path / "job")
    monkeypatch.setattr(tooling, "installed_tool", lambda name: ToolEnvStub())
    monkeypatch.setattr(tooling, "ensure_tool", lambda name: pytest.fail(f"built {name}"))
    local.build_tools(job)
    assert "first use" not in capsys.readouterr().out
