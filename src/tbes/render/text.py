"""The report as a plain-text table, for terminals, mail and log files.

Plain text with aligned columns rather than box drawing, so the table survives any font,
``grep`` and being pasted into a ticket. Times are UTC. Every cell goes through
:func:`~tbes.render._common.printable`, so a control character in a server id shows as an
escape (a newline as ``\\n``) and each row stays one line.
"""

from __future__ import annotations

from collections.abc import Sequence

from tbes.render._common import HEADINGS, cells, printable
from tbes.report import ReportRow

__all__ = ["render_text"]

_GAP = "  "


def render_text(rows: Sequence[ReportRow]) -> str:
    """The rows as an aligned text table with a heading line, ending in a newline."""
    table = [HEADINGS, *(tuple(map(printable, cells(row))) for row in rows)]
    widths = [max(len(line[column]) for line in table) for column in range(len(HEADINGS))]
    lines = [_line(line, widths) for line in table]
    lines.insert(1, _GAP.join("-" * width for width in widths))
    return "\n".join(lines) + "\n"


def _line(values: Sequence[str], widths: Sequence[int]) -> str:
    return _GAP.join(
        value.ljust(width) for value, width in zip(values, widths, strict=True)
    ).rstrip()
