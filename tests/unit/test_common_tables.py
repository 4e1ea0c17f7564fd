"""perfsanity.common.tables: one rich-based renderer; plain text off a terminal, colour per row on one."""

from __future__ import annotations

import io
import re

import pytest

from perfsanity.common.tables import print_table, render_table
from perfsanity.jobs.jobdir import format_table as jobdir_table
from perfsanity.load.results_json import ConcurrencyResult, LatencyStats
from perfsanity.load.summary import HEADERS, format_table


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_plain_text_layout_header_rule_rows():
    text = render_table(["name", "out tok/s", "note"], [["a", "1.5", "[red]not markup[/red]"], ["bbbb", "1234.0", ""]],
                        right_from=1)
    lines = text.splitlines()
    assert _cells(lines[0]) == ["name", "out tok/s", "note"]
    assert set(lines[1]) <= {"-", " "} and lines[1].startswith("----")
    assert _cells(lines[2]) == ["a", "1.5", "[red]not markup[/red]"]
    assert _cells(lines[3]) == ["bbbb", "1234.0"]
    assert lines[2].index("1.5") + 3 == lines[3].index("1234.0") + 6  # numbers right-aligned
    assert "\x1b" not in text and all(line == line.rstrip() for line in lines)


def test_colour_only_on_a_terminal_and_not_with_no_color(monkeypatch):
    rows, colors = [["1", "WORSE"], ["2", "ok"]], ["31", None]
    plain = io.StringIO()
    print_table(["conc", "verdict"], rows, plain, colors=colors, right_from=1)
    assert "\x1b" not in plain.getvalue() and "WORSE" in plain.getvalue()
    tty = _Tty()
    monkeypatch.delenv("NO_COLOR", raising=False)
    print_table(["conc", "verdict"], rows, tty, colors=colors, right_from=1)
    red, other = tty.getvalue().splitlines()[2:4]
    assert "\x1b[31m" in red and "\x1b" not in other
    monkeypatch.setenv("NO_COLOR", "1")
    tty = _Tty()
    print_table(["conc", "verdict"], rows, tty, colors=colors, right_from=1)
    assert "\x1b" not in tty.getvalue()


def test_results_summary_keeps_its_columns():
    results = [ConcurrencyResult(concurrency=c, client="aiperf", requested=2 * c, completed=2 * c, failed=0,
                                 output_token_throughput=100.0 * c, output_token_throughput_per_user=50.0,
                                 ttft=LatencyStats(median=12.5, p99=30.0), tpot=LatencyStats(median=1.25),
                                 itl=LatencyStats(median=1.5), e2e=LatencyStats(median=99.0)) for c in (1, 16)]
    lines = format_table(results).splitlines()
    assert tuple(_cells(lines[0])) == HEADERS
    rows = {int(cells[0]): dict(zip(HEADERS, cells, strict=True)) for cells in map(_cells, lines[2:])}
    assert rows[16]["done/req"] == "32/32" and rows[16]["out tok/s"] == "1600.0" and rows[1]["TPOT p50 ms"] == "1.25"
    assert rows[1]["E2E p50 ms"] == "99.0" and rows[16]["fail"] == "0"


@pytest.mark.parametrize("render", [jobdir_table, render_table])
def test_left_aligned_by_default(render):
    lines = render(["ROLE", "LOG FILES"], [["GEN_0", "logs/GEN_0.log (1 KiB)"], ["slurm", "slurm-1.out"]]).splitlines()
    assert lines[2].startswith("GEN_0  logs/GEN_0.log") and lines[3].startswith("slurm  slurm-1.out")
