#!/usr/bin/env python3
"""Entry point: validate a perf test config and write/run/submit its job. See ``--help``.

Thin wrapper; all logic is in :mod:`perfsanity.plan.prepare`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perfsanity.bootstrap import reexec  # noqa: E402  (stdlib only)

reexec()  # under the project venv (made from uv.lock on first use), never the interpreter that ran us

from perfsanity.cli.submit import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
