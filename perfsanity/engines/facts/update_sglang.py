"""Refresh ``sglang.json`` from the real parsers: ``python -m perfsanity.engines.facts.update_sglang``.

Runs ``dump_sglang_options.py`` in each tool venv that carries an sglang release (installing it if
needed) and rewrites that release's entry; the history and default are kept as written.
"""

from __future__ import annotations

import json
import subprocess
import sys

from perfsanity.common.files import write_atomic
from perfsanity.engines import tooling
from perfsanity.engines.facts import FACTS_DIR, facts_path, load

#: tool venv -> what its sglang release is called in the facts' sources
TOOL_VENVS = ("sglang", "dynamo-sglang")
DUMP = FACTS_DIR / "dump_sglang_options.py"


def dump(tool: str) -> dict:
    env = tooling.ensure_tool(tool)
    proc = subprocess.run([str(env.python), str(DUMP)], capture_output=True, text=True, timeout=300, check=True,
                          stdin=subprocess.DEVNULL)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    data = json.loads(json.dumps(load("sglang")))
    for tool in TOOL_VENVS:
        got = dump(tool)
        spec = tooling.TOOLS[tool]
        data["releases"][got["version"]] = {
            "source": f"PyPI sglang=={got['version']}, dumped by dump_sglang_options.py in the perfsanity "
                      f"{tool!r} tool venv ({spec.dist}=={spec.version})",
            "options": got["options"]}
    write_atomic(facts_path("sglang"), json.dumps(data, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
