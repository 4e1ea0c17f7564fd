"""The one table renderer of the tree (:mod:`rich`): aligned columns for terminals, CI logs and files.

* :func:`render_table` returns the table as text: a header line, a rule of dashes, one line per row;
  columns are separated by two spaces, so a cell with single spaces (``out tok/s``) stays one cell for
  anything that splits on runs of two or more. Cells are plain text (never markup), lines carry no
  trailing blanks, and there are no control codes unless ``color`` is asked for.
* :func:`print_table` writes it to a stream, colouring whole rows (``styles``) only when the stream is
  a terminal and ``NO_COLOR`` is unset; CI logs and files always get plain text.
* Columns from ``right_from`` on are right-aligned (numbers); the ones before it are left-aligned.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from typing import TextIO

from rich.box import Box
from rich.console import Console
from rich.table import Table

# only the rule under the header: "-" across each column, a blank where columns meet
_RULE_UNDER_HEADER = Box("    \n    \n -  \n    \n    \n    \n    \n    \n")
# row styles may also be given as the ANSI SGR codes callers used before rich
_SGR_STYLES = {"31": "red", "32": "green", "33": "yellow", "90": "bright_black"}


def use_color(out: TextIO) -> bool:
    return bool(getattr(out, "isatty", None) and out.isatty()) and not os.environ.get("NO_COLOR")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right_from: int | None = None,
                 styles: Sequence[str | None] | None = None, color: bool = False) -> str:
    """The table as text (see the module docstring); ``styles`` are rich styles per row, used only
    with ``color``; ``right_from=None`` left-aligns every column."""
    right_from = len(headers) if right_from is None else right_from
    table = Table(box=_RULE_UNDER_HEADER, show_edge=False, padding=(0, 1), pad_edge=False, collapse_padding=True,
                  header_style="", highlight=False)
    for i, head in enumerate(headers):
        table.add_column(head, justify="right" if i >= right_from else "left", no_wrap=True)
    for n, row in enumerate(rows):
        style = styles[n] if color and styles else None
        table.add_row(*row, style=_SGR_STYLES.get(style, style) if style else None)
    buf = io.StringIO()
    console = Console(file=buf, width=1_000_000, force_terminal=color, no_color=not color,
                      color_system="standard" if color else None, markup=False, emoji=False, highlight=False,
                      soft_wrap=False)
    console.print(table)
    lines = buf.getvalue().splitlines()
    return "\n".join(lines if color else [line.rstrip() for line in lines])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO, *,
                colors: Sequence[str | None] | None = None, right_from: int = 0) -> None:
    """Print :func:`render_table` to ``out``; ``colors`` (per row) only when ``out`` is a terminal."""
    print(render_table(headers, rows, right_from=right_from, styles=colors, color=use_color(out)), file=out)


def num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.2f}"
