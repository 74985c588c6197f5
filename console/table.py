"""Plain text tables, as the admin commands print them."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence

#: The narrowest a wrapped last column gets, whatever the terminal's width.
MIN_WRAP_WIDTH = 40
#: The width assumed when the output is not a terminal (a pipe, a file).
FALLBACK_COLUMNS = 160


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, wrap_last: bool = False
) -> str:
    """A plain text table with aligned columns.

    With ``wrap_last`` the last column (an error message, say) is never cut: it is wrapped to
    the terminal's width, its further lines under its first.
    """
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    if wrap_last and len(headers) > 1:
        cells = _wrapped(cells)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _wrapped(cells: list[list[str]]) -> list[list[str]]:
    """The rows with their last cell wrapped into as many lines as it needs."""
    columns = len(cells[0])
    before = sum(max(len(row[i]) for row in cells) + 2 for i in range(columns - 1))
    terminal = shutil.get_terminal_size((FALLBACK_COLUMNS, 24)).columns
    width = max(MIN_WRAP_WIDTH, terminal - before)
    out = [cells[0]]
    for row in cells[1:]:
        pieces = textwrap.wrap(row[-1], width=width, break_on_hyphens=False) or [""]
        out.append([*row[:-1], pieces[0]])
        out += [[""] * (columns - 1) + [piece] for piece in pieces[1:]]
    return out
