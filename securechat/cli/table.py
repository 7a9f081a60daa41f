"""Tables that fit the terminal and never cut a value.

Into a file or a pipe, every column is as wide as its longest value: the
output is for scripts and greps, and nothing is truncated. On a terminal
narrower than the table, optional columns are left out first (they are in
`--json`), then each row becomes a block of `header: value` lines. Values
are made inert (see `securechat.cli.inert`) and printed as plain text.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from securechat.cli.inert import inert


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False  # right-aligned (numbers)
    optional: bool = False  # may be left out on a narrow terminal


GAP = "  "


def terminal_width(stream: TextIO) -> int | None:
    """The width of the terminal STREAM writes to, or None for a file or pipe."""
    try:
        if not stream.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    return shutil.get_terminal_size(fallback=(int(os.environ.get("COLUMNS", "80") or 80), 24)).columns


def render(columns: Sequence[Column], rows: Sequence[Sequence[str]], *, width: int | None) -> list[str]:
    """The table as lines: columns when they fit WIDTH (None: always), else blocks."""
    cells = [[inert(value) for value in row] for row in rows]
    keep = list(range(len(columns)))
    if width is not None:
        for index in [i for i, column in enumerate(columns) if column.optional]:
            if _width(columns, cells, keep) <= width:
                break
            keep.remove(index)
        if _width(columns, cells, keep) > width:
            return _blocks(columns, cells)
    sizes = {i: max([len(columns[i].header), *(len(row[i]) for row in cells)]) for i in keep}
    lines = [_line([(columns[i].header, sizes[i], columns[i].right) for i in keep])]
    lines += [_line([(row[i], sizes[i], columns[i].right) for i in keep]) for row in cells]
    return lines


def print_table(columns: Sequence[Column], rows: Sequence[Sequence[str]], *, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    for line in render(columns, rows, width=terminal_width(out)):
        out.write(line + "\n")


def _width(columns: Sequence[Column], cells: list[list[str]], keep: list[int]) -> int:
    sizes = [max([len(columns[i].header), *(len(row[i]) for row in cells)]) for i in keep]
    return sum(sizes) + len(GAP) * (len(sizes) - 1)


def _line(parts: list[tuple[str, int, bool]]) -> str:
    return GAP.join(value.rjust(size) if right else value.ljust(size) for value, size, right in parts).rstrip()


def _blocks(columns: Sequence[Column], cells: list[list[str]]) -> list[str]:
    label = max(len(column.header) for column in columns) + 1
    lines: list[str] = []
    for number, row in enumerate(cells):
        if number:
            lines.append("")
        lines += [f"{(column.header + ':').ljust(label)} {value}" for column, value in zip(columns, row, strict=True)]
    return lines
