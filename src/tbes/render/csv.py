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
import io
from collections.abc import Iterable, Sequence
from typing import TypeVar

from tbes.render._common import Sink, is_printable, printable
from tbes.report import WIRE_FIELDS, ReportRow, build_versions, exchange_server
from tbes.version import ExchangeBuild

__all__ = ["COLUMNS", "FORMULA_STARTS", "render_csv", "write_csv"]

_K = TypeVar("_K")
_V = TypeVar("_V")

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
    values = _Values().of
    for row in rows:
        writer.writerow(values(row))


_KEPT = 4096
"""How many builds, recommendations and tenants one report remembers the cells of."""


class _Values:
    """A row's cells, with those that repeat from row to row (builds, recommendations,
    tenants) worked out once per report: a store has few of each. Builds and
    recommendations are remembered by identity (the report's rows share those objects),
    with the object kept beside its text so that an identity is never reused meanwhile."""

    __slots__ = ("_builds", "_recommended", "_tenants")

    def __init__(self) -> None:
        self._builds: dict[int, tuple[ExchangeBuild, str, str]] = {}
        self._recommended: dict[int, tuple[tuple[ExchangeBuild, ...], str]] = {}
        self._tenants: dict[str, str] = {}

    def of(self, row: ReportRow) -> tuple[str, ...]:
        build, stage, recommended = row.build, row.stage, row.recommended
        if build is None:
            build_text = product = ""
        else:
            known = self._builds.get(id(build))
            if known is None or known[0] is not build:
                known = (build, str(build), exchange_server(build.product))
                _remember(self._builds, id(build), known)
            _, build_text, product = known
        listed = self._recommended.get(id(recommended))
        if listed is None or listed[0] is not recommended:
            listed = (recommended, " ".join(build_versions(recommended)))
            _remember(self._recommended, id(recommended), listed)
        tenant = self._tenants.get(row.tenant)
        if tenant is None:
            tenant = _cell(row.tenant)
            _remember(self._tenants, row.tenant, tenant)
        # Only the server id's parts, the tenant and the control are foreign text; every
        # other cell is written by tbes (numbers, builds, enum names, ISO instants) and can
        # hold neither a control character nor a formula's first character. Written out
        # rather than by helpers: this runs for every row of the largest reports.
        server = row.server
        connector, slash, host = server.partition("/")  # as tbes.identity splits an id
        cell = _quoted if is_printable(server) else _cell  # its parts need no escape either
        first, throttle, block = row.first_detected, row.throttle_enabled, row.blocking_enabled
        following, paused, full = row.next_stage_start, row.paused_until, row.full_block
        last, rate, blocked = row.last_seen, row.next_stage_throttle, row.next_stage_block
        return (
            cell(host if slash else server),
            build_text,
            product,
            "" if first is None else first.isoformat(),
            listed[1],
            "" if throttle is None else throttle.isoformat(),
            "" if block is None else block.isoformat(),
            "" if rate is None else str(rate),
            "" if blocked is None else str(blocked),
            "" if following is None else following.isoformat(),
            tenant,
            cell(connector),
            cell(server),
            row.status.value,
            "" if stage is None else str(stage.number),
            "" if stage is None else str(stage.throttle_minutes),
            "" if stage is None else str(stage.block_minutes),
            "" if paused is None else paused.isoformat(),
            "" if full is None else full.isoformat(),
            "" if last is None else last.isoformat(),
            "" if row.control is None else _cell(row.control),  # names an operator's reason
        )


def _remember(memo: dict[_K, _V], key: _K, value: _V) -> None:
    if len(memo) >= _KEPT:  # bounded: a report of forged builds must not grow it
        memo.clear()
    memo[key] = value


def _quoted(text: str) -> str:
    """A cell of printable text: only the formula rule applies."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _cell(value: str) -> str:
    # The rule looks at the cell as given: a tab or CR shows escaped, but still gets its quote.
    text = printable(value)
    return "'" + text if value.startswith(FORMULA_STARTS) else text
