"""Command line: ``perfsanity`` / ``python -m perfsanity``."""

from perfsanity.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
