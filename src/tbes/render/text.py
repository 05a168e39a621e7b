"""The report as a plain-text table, for terminals, mail and log files.

Plain text with aligned columns rather than box drawing, so the table survives any font,
``grep`` and being pasted into a ticket. Times are UTC. Every cell goes through
:func:`~tbes.render._common.printable`, so a control character in a server id shows as an
escape (a newline as ``\\n``) and each row stays one line.

:func:`write_text` streams: it sizes the columns by the headings and a first page of rows
(:data:`PAGE`), writes those, then every further row as it comes, at the same widths. A
later cell wider than its column is written whole and pushes the rest of its own line to
the right; no cell is ever cut.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Sequence

from tbes.errors import InvalidValueError
from tbes.render._common import HEADINGS, Sink, cells, printable
from tbes.report import ReportRow

__all__ = ["PAGE", "render_text", "write_text"]

PAGE = 1000
"""How many rows :func:`write_text` reads, by default, to size the columns."""

_GAP = "  "


def render_text(rows: Sequence[ReportRow]) -> str:
    """The rows as an aligned text table with a heading line, ending in a newline.

    Every row counts for the column widths.
    """
    out = io.StringIO()
    write_text(rows, out, widths_from=len(rows))
    return out.getvalue()


def write_text(rows: Iterable[ReportRow], out: Sink, *, widths_from: int = PAGE) -> None:
    """Write the rows to ``out`` as a text table, each row (past the first page) as it comes.

    The columns are as wide as the headings and the widest cells of the first
    ``widths_from`` rows, which are held until they are written; nothing is kept for the
    rows after them, so a table of any size takes constant memory. With every row in the
    first page the output is :func:`render_text`'s.
    """
    if type(widths_from) is not int or widths_from < 0:
        raise InvalidValueError(f"widths_from must be an int >= 0, got {widths_from!r:.80}")
    remaining = iter(rows)
    page = [_cells(row) for row in itertools.islice(remaining, widths_from)]
    widths = [
        max(len(line[column]) for line in (HEADINGS, *page)) for column in range(len(HEADINGS))
    ]
    out.write(_line(HEADINGS, widths) + "\n" + _GAP.join("-" * width for width in widths) + "\n")
    for line in page:
        out.write(_line(line, widths) + "\n")
    del page  # the first page is not kept while the rest streams
    for row in remaining:
        out.write(_line(_cells(row), widths) + "\n")


def _cells(row: ReportRow) -> tuple[str, ...]:
    return tuple(map(printable, cells(row)))


def _line(values: Sequence[str], widths: Sequence[int]) -> str:
    return _GAP.join(
        value.ljust(width) for value, width in zip(values, widths, strict=True)
    ).rstrip()
