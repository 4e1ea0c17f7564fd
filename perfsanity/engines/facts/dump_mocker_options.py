"""Dump ``python -m dynamo.mocker``'s option strings as JSON (run in the ``dynamo`` tool venv; imports no
perfsanity).

``<venv>/bin/python perfsanity/engines/facts/dump_mocker_options.py`` prints
``{"version": "<ai-dynamo version>", "options": [...]}``: every option string of the parser that
``dynamo.mocker.args.parse_args`` builds. That function builds and parses in one call, so the parser is
taken at its ``parse_args`` (nothing is parsed, nothing starts). ``perfsanity/engines/facts/dynamo_mocker.json``
holds one entry per release, written from this output; tests/backends/test_engine_facts.py compares the two.
"""

import argparse
import importlib.metadata
import json
import sys


class _Built(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser built")
        self.parser = parser


def main() -> None:
    from dynamo.mocker import args as mocker_args

    def capture(self: argparse.ArgumentParser, *_args: object, **_kw: object) -> None:
        raise _Built(self)

    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    try:
        mocker_args.parse_args([])
    except _Built as built:
        parser = built.parser
    else:
        raise SystemExit("dynamo.mocker.args.parse_args did not build an argparse parser")
    options = sorted({s for action in parser._actions for s in action.option_strings})  # noqa: SLF001
    version = importlib.metadata.version("ai-dynamo")
    sys.stdout.write(json.dumps({"version": version, "abbrev": parser.allow_abbrev, "options": options}) + "\n")


if __name__ == "__main__":
    main()
