"""The report as CSV (RFC 4180, via the standard library), for spreadsheets and scripts.

The columns are the JSON report's keys (:data:`~tbes.report.WIRE_FIELDS`: Microsoft's
field names, then tbes's own), with the stage as its number and its minutes in two
columns of their own. Machine-friendly values rather than the labels of the text table:
builds in their short form, instants in ISO 8601 with offset, the recommended builds
separated by spaces, each in its short and then its long form as Microsoft lists them.
Empty cells mean "none".

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
from tbes.report import WIRE_FIELDS, ReportRow, build_versions, exchange_server

__all__ = ["COLUMNS", "FORMULA_STARTS", "render_csv", "write_csv"]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a cell may not start with: a spreadsheet would read it as a formula."""

_STAGE = WIRE_FIELDS.index("stage") + 1

COLUMNS: tuple[str, ...] = (
    *WIRE_FIELDS[:_STAGE],
    "stage_throttle_minutes",
    "stage_block_minutes",
    *WIRE_FIELDS[_STAGE:],
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
    # Only the server id's parts and the tenant are foreign text; every other cell is
    # written by tbes (numbers, builds, enum names, ISO instants) and can hold neither a
    # control character nor a formula's first character, so it skips the escape.
    return (
        _cell(row.server_fqdn),
        _text(row.build),
        "" if row.product is None else exchange_server(row.product),
        _instant(row.first_detected),
        " ".join(build_versions(row.recommended)),
        _instant(row.throttle_enabled),
        _instant(row.blocking_enabled),
        _text(row.next_stage_throttle),
        _text(row.next_stage_block),
        _instant(row.next_stage_start),
        _cell(row.tenant),
        _cell(row.connector),
        _cell(row.server),
        row.status.value,
        _text(None if stage is None else stage.number),
        _text(None if stage is None else stage.throttle_minutes),
        _text(None if stage is None else stage.block_minutes),
        _instant(row.paused_until),
        _instant(row.full_block),
        _instant(row.last_seen),
        "" if row.control is None else _cell(row.control),  # names an operator's reason
    )


def _cell(value: str) -> str:
    # The rule looks at the cell as given: a tab or CR shows escaped, but still gets its quote.
    text = printable(value)
    return "'" + text if value.startswith(FORMULA_STARTS) else text


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _instant(value: dt.datetime | None) -> str:
    return "" if value is None else value.isoformat()
