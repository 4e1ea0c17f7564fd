"""What every command-line entry point of the tree shares.

* :func:`run_main` runs a command body and turns the outcome into an exit status: a
  :class:`~perfsanity.common.errors.PerfsanityError` becomes one line on stderr (``<prefix>error: …``,
  never a traceback) and its ``exit_code``; Ctrl-C prints the ``interrupted`` note and gives 130; a
  closed pipe (``… | head``) gives 0.
* :func:`positive_int` / :func:`positive_float` are argparse ``type=`` checks with one-line messages.
* :func:`subcommand` adds one sub-command whose handler is ``args.func`` (how every ``perfsanity``
  sub-command is dispatched).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any


def run_main(body: Callable[[], int | None], *, prefix: str = "", interrupted: str = "interrupted") -> int:
    """``body()``'s exit status (None → 0), with the error handling described above."""
    from perfsanity.common.errors import PerfsanityError

    try:
        return int(body() or 0)
    except PerfsanityError as exc:
        print(f"{prefix}error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prefix}{interrupted}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def subcommand(
    subparsers: Any, name: str, func: Callable[[argparse.Namespace], int], **kwargs: Any
) -> argparse.ArgumentParser:
    """``subparsers.add_parser(name, **kwargs)`` whose parsed arguments carry ``func`` (the handler)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, **kwargs)
    parser.set_defaults(func=func)
    return parser
