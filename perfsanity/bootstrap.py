"""First-use set-up of the harness's own Python dependencies (stdlib only: runs before they exist).

``submit.py`` and the test runner call :func:`ensure_requirements` first. When an import the harness
needs is missing it runs ``pip install -r requirements.txt`` for this interpreter, printing what it
does; a second run finds everything and does nothing.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO_ROOT / "requirements.txt"
REQUIREMENTS_NODEPS = REPO_ROOT / "requirements-nodeps.txt"
# import name -> why it is needed (one line each; checked without importing the modules)
NEEDED = ("pydantic", "yaml", "sqlalchemy", "psycopg", "matplotlib", "junitparser", "numpy", "scipy", "otava",
          "alembic", "tenacity", "filelock", "psutil", "rich", "jinja2", "hypothesis", "pytest_timeout")
INSTALL_TIMEOUT_S = 900


def missing_modules() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def ensure_requirements(*, quiet: bool = False) -> None:
    missing = missing_modules()
    if not missing:
        return
    print(
        f"[perfsanity] first use: installing Python requirements ({', '.join(missing)} missing) "
        f"from {REQUIREMENTS.name} for {sys.executable}",
        file=sys.stderr,
        flush=True,
    )
    base = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"] + (["-q"] if quiet else [])
    try:
        subprocess.run([*base, "-r", str(REQUIREMENTS)], check=True, timeout=INSTALL_TIMEOUT_S)
        subprocess.run([*base, "--no-deps", "-r", str(REQUIREMENTS_NODEPS)], check=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        sys.exit(f"error: pip install -r {REQUIREMENTS} did not finish within {INSTALL_TIMEOUT_S}s")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"error: pip install -r {REQUIREMENTS} failed with exit code {exc.returncode}")
    importlib.invalidate_caches()
    still = missing_modules()
    if still:
        sys.exit(f"error: after installing {REQUIREMENTS.name}, still missing: {', '.join(still)}")
