"""No fixed port in any generated launch file or engine command/config: every golden is grepped.

A port may appear only as 0 / -1 (the engine binds an ephemeral one), as a ``${VAR}`` the role fills
at start (``ServerSpec.node_ports``), as one of the published worker addresses the router is given
(test inputs, ``backendtest_support.addresses``), or because the config sets it on purpose.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from backendtest_support import GOLDEN_DIR, GPU_CONFIGS, addresses

from perfsanity.spec.config import load_config

REPO = Path(__file__).resolve().parents[2]
LAUNCH_GOLDENS = sorted((REPO / "tests/unit/golden").glob("*.launch.sh")) + sorted(
    (REPO / "tests/unit/golden").glob("srun_*.txt"))
SPEC_GOLDENS = sorted(GOLDEN_DIR.glob("*/*.txt"))

HOST_PORT = re.compile(r"(?:\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9a-f:]+\]|[a-z][\w-]*\.[\w.-]+):(\d+)\b")
ASSIGNED = re.compile(r"\b[A-Z_]*PORT[A-Z_]*=(\d+)\b|\bport[\"']?\s*[:=]\s*(\d+)\b", re.IGNORECASE)


def ports_in(text: str) -> list[tuple[int, str]]:
    """(port, line) for every port-looking value in a golden, argv flags ``--*port N`` included."""
    found: list[tuple[int, str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# "):  # the golden's title names its test inputs
            continue
        for m in HOST_PORT.finditer(line):
            found.append((int(m.group(1)), line))
        for m in ASSIGNED.finditer(line):
            found.append((int(m.group(1) or m.group(2)), line))
        word = line.strip().strip("'")
        if re.fullmatch(r"--[\w-]*port", word) and i + 1 < len(lines):
            value = lines[i + 1].strip().strip("'")
            if value.isdigit():
                found.append((int(value), f"{word} {value}"))
    return found


def on_purpose(config_path: Path) -> set[int]:
    """Ports the config itself sets (any ``*port*`` key of its engine sections)."""
    config = load_config(config_path)
    out: set[int] = set()
    for kind in ("ctx", "gen", "server"):
        section = getattr(config.worker_config, kind)
        if section is None:
            continue

        def walk(obj: object, key: str = "") -> None:
            if isinstance(obj, dict):
                for k, v in obj.items():
                    walk(v, str(k))
            elif isinstance(obj, int) and not isinstance(obj, bool) and "port" in key:
                out.add(obj)

        walk(section.model_dump())
    return out


def test_the_grep_finds_fixed_ports():
    # the check below can fail: each form a fixed port took before is found
    text = "argv:\n  --dist-init-addr\n  10.0.0.3:20000\n  --disaggregation-bootstrap-port\n  8998\nenv:\n" \
           "  DYN_SYSTEM_PORT=8081\nport: 8081\n"
    assert sorted({p for p, _ in ports_in(text)}) == [8081, 8998, 20000]
    assert ports_in("  '10.0.0.3:${PERFSANITY_DIST_INIT_PORT}'\n  --port\n  0\nport: 0\n") == \
        [(0, "--port 0"), (0, "port: 0")]


@pytest.mark.parametrize("golden", SPEC_GOLDENS, ids=[f"{p.parent.name}/{p.name}" for p in SPEC_GOLDENS])
def test_engine_goldens_have_no_fixed_port(golden):
    (config_path,) = [p for p in GPU_CONFIGS if p.stem == golden.parent.name]
    config = load_config(config_path)
    ctx, gen = addresses(config)
    allowed = {0, *(a.port for a in (*ctx, *gen)), *on_purpose(config_path)}
    fixed = [(port, line) for port, line in ports_in(golden.read_text()) if port not in allowed]
    assert not fixed, f"{golden}: fixed ports {fixed}"


@pytest.mark.parametrize("golden", LAUNCH_GOLDENS, ids=[p.name for p in LAUNCH_GOLDENS])
def test_launch_goldens_have_no_fixed_port(golden):
    fixed = [(port, line) for port, line in ports_in(golden.read_text()) if port != 0]
    assert not fixed, f"{golden}: fixed ports {fixed}"


def test_every_golden_was_grepped():
    assert len(SPEC_GOLDENS) >= 10 and len(LAUNCH_GOLDENS) >= 3
