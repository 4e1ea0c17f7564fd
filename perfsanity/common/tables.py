"""Plain-text tables for terminals and CI logs (colour only on a terminal, never in files)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TextIO


def use_color(out: TextIO) -> bool:
    return hasattr(out, "isatty") and out.isatty() and not os.environ.get("NO_COLOR")


def paint(text: str, code: str, on: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if on else text


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO, *,
                colors: Sequence[str | None] | None = None, right_from: int = 0) -> None:
    """Aligned plain-text table; ``colors`` (ANSI codes, per row) only when ``out`` is a terminal."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i >= right_from else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                              strict=True))]
        return "  ".join(parts).rstrip()

    print(line(headers), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    on = use_color(out)
    for n, row in enumerate(rows):
        text = line(row)
        code = colors[n] if colors else None
        print(paint(text, code, on) if code else text, file=out)


def num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.2f}"


