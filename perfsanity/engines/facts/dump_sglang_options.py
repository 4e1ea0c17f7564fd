"""Dump SGLang's server option strings as JSON (run in an engine venv; imports no perfsanity).

``<venv>/bin/python perfsanity/engines/facts/dump_sglang_options.py`` prints
``{"version": "<sglang version>", "options": [...]}``: every option string of the parser that
``sglang serve`` / ``python -m sglang.launch_server`` builds (``ServerArgs.add_cli_args``), hidden ones
included, since argparse matches those too. ``perfsanity/engines/facts/sglang.json`` holds one entry per
release, written from this output; tests/backends/test_engine_facts.py compares the two.
"""

import argparse
import contextlib
import importlib.metadata
import io
import json
import sys


def main() -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # sglang logs on import
        from sglang.srt.server_args import ServerArgs

        parser = argparse.ArgumentParser(prog="sglang serve")
        ServerArgs.add_cli_args(parser)
    options = sorted({s for action in parser._actions for s in action.option_strings})  # noqa: SLF001
    sys.stdout.write(json.dumps({"version": importlib.metadata.version("sglang"), "options": options}) + "\n")


if __name__ == "__main__":
    main()
