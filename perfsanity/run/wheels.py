"""``environment.wheels``: wheels installed for this job's servers only (srtctl's ``--use-dynamo-whls``).

The install step runs ``pip install --no-deps --target <job>/wheels/site <wheels>`` with the
interpreter the servers run (the container's ``python3``, or the backend's tool venv), bounded by
``timeouts.install`` and logged to ``logs/install.wheels.log``. Nothing outside the job dir changes:
shared tool venvs stay as they are, and every server process of the job gets the target first on
``PYTHONPATH``, so ``python3 -m <module>`` imports the wheel's code. The job dir is shared by the
nodes, so one node installs (under a file lock) and the others find its marker.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from perfsanity.common.errors import PerfsanityError
from perfsanity.common.files import write_atomic
from perfsanity.plan.prepare import check_wheels
from perfsanity.spec.config import Config

SITE = Path("wheels") / "site"
MARKER = Path("wheels") / "installed.json"


def site_dir(job_dir: Path) -> Path:
    return job_dir / SITE


def _fingerprint(wheels: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for wheel in wheels:
        h.update(wheel.encode() + b"\0" + Path(wheel).read_bytes())
    return h.hexdigest()[:16]


def install_wheels(config: Config, job_dir: Path, python: str) -> Path | None:
    """Install ``environment.wheels`` into the job's site dir once; returns it (None: no wheels)."""
    wheels = config.environment.wheels
    if not wheels:
        return None
    check_wheels(config)
    site, marker = site_dir(job_dir), job_dir / MARKER
    log = job_dir / "logs" / "install.wheels.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    site.parent.mkdir(parents=True, exist_ok=True)
    want = {"wheels": list(wheels), "fingerprint": _fingerprint(wheels)}
    bound = config.timeouts.install
    from filelock import FileLock, Timeout  # lazy: only jobs with environment.wheels pay its import

    try:
        with FileLock(str(site.parent / "install.lock"), timeout=bound):
            try:
                if json.loads(marker.read_text()) == want:
                    print(f"[install] wheels already installed in {site}", flush=True)
                    return site
            except (OSError, ValueError):
                pass
            argv = [_pip_python(python), "-m", "pip", "install", "--no-deps", "--no-input", "--disable-pip-version-check",
                    "--upgrade", "--target", str(site), *wheels]
            print(f"[install] wheels: {' '.join(argv)} (log {log})", flush=True)
            with log.open("ab") as out:
                try:
                    proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,  # noqa: S603
                                          timeout=bound, check=False)
                except subprocess.TimeoutExpired:
                    raise PerfsanityError(f"installing environment.wheels took more than {bound}s "
                                          f"(timeouts.install); log {log}") from None
            if proc.returncode != 0:
                raise PerfsanityError(f"installing environment.wheels failed (pip exit {proc.returncode}); log {log}")
            write_atomic(marker, json.dumps(want) + "\n")
    except Timeout:
        raise PerfsanityError(f"waited {bound}s (timeouts.install) for another node installing the wheels "
                              f"({site.parent / 'install.lock'})") from None
    return site


def pythonpath(config: Config, job_dir: Path, current: str | None) -> str | None:
    """``PYTHONPATH`` for a server of the job: the wheels' site dir first when there are wheels."""
    if not config.environment.wheels:
        return current
    return str(site_dir(job_dir)) + (f":{current}" if current else "")


def _pip_python(python: str) -> str:
    """``python``, or its base interpreter when it has no pip (venvs made by uv have none). Either way
    pip only writes into ``--target`` (the job's own wheels dir), never into an interpreter."""
    try:
        probe = subprocess.run([python, "-m", "pip", "--version"], capture_output=True,  # noqa: S603
                               timeout=60, check=False)
        if probe.returncode == 0:
            return python
        base = subprocess.run([python, "-c", "import sys; print(sys._base_executable)"],  # noqa: S603
                              capture_output=True, text=True, timeout=60, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return python
    return base or python
