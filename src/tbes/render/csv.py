"""The report as CSV (RFC 4180, via the standard library), for spreadsheets and scripts.

Machine-friendly values rather than the labels of the text table: builds in their short
form, instants in ISO 8601 with offset, the stage as its number with its minutes in their
own columns, recommended builds separated by spaces. Empty cells mean "none".

Cells are safe to open in a spreadsheet and to print: control characters show as escapes
(:func:`~tbes.render._common.printable`: a newline as ``\\n``, so every row is one line),
and a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a
leading ``'`` (OWASP's rule against formula injection), which changes that cell's text.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence

from tbes.render._common import Sink, printable
from tbes.report import ReportRow

__all__ = ["COLUMNS", "FORMULA_STARTS", "render_csv", "write_csv"]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a cell may not start with: a spreadsheet would read it as a formula."""

COLUMNS: tuple[str, ...] = (
    "server",
    "tenant",
    "build",
    "product",
    "status",
    "first_detected",
    "last_seen",
    "recommended",
    "throttle_enabled",
    "blocking_enabled",
    "full_block",
    "stage",
    "stage_throttle_minutes",
    "stage_block_minutes",
    "next_stage_throttle",
    "next_stage_block",
    "next_stage_start",
    "paused_until",
    "control",
)
"""The CSV header, in column order."""


def render_csv(rows: Sequence[ReportRow]) -> str:
    """The rows as CSV text with a header line (CRLF line ends, as RFC 4180 has them)."""
    out = io.StringIO()
    write_csv(rows, out)
    return out.getvalue()


def write_csv(rows: Iterable[ReportRow], out: Sink) -> None:
    """Write the rows to ``out`` as :func:`render_csv` renders them, each as it comes.

    Nothing is kept per row, so a report of any size takes constant memory. A file ``out``
    should be opened with ``newline=""``, or its line ends may be translated.
    """
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(_values(row))


def _values(row: ReportRow) -> tuple[str, ...]:
    stage = row.stage
    # Only the server id and the tenant are foreign text; every other cell is written by
    # tbes (numbers, builds, enum names, ISO instants) and can hold neither a control
    # character nor a formula's first character, so it skips the escape.
    return (
        _cell(row.server),
        _cell(row.tenant),
        _text(row.build),
        "" if row.product is None else row.product.value,
        row.status.value,
        _instant(row.first_detected),
        _instant(row.last_seen),
        " ".join(str(build) for build in row.recommended),
        _instant(row.throttle_enabled),
        _instant(row.blocking_enabled),
        _instant(row.full_block),
        _text(None if stage is None else stage.number),
        _text(None if stage is None else stage.throttle_minutes),
        _text(None if stage is None else stage.block_minutes),
        _text(row.next_stage_throttle),
        _text(row.next_stage_block),
        _instant(row.next_stage_start),
        _instant(row.paused_until),
        _text(row.control),
    )


def _cell(value: str) -> str:
    # The rule looks at the cell as given: a tab or CR shows escaped, but still gets its quote.
    text = printable(value)
    return "'" + text if value.startswith(FORMULA_STARTS) else text


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _instant(value: dt.datetime | None) -> str:
    return "" if value is None else value.isoformat()
