"""The report as CSV (RFC 4180, as the standard library's writer writes it), for
spreadsheets and scripts.

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

Decision: the lines are joined here rather than by :func:`csv.writer`, which costs more
than the rest of a row in a report of a million servers. Only foreign text (the server id's
parts, the tenant, an exemption's reason) can hold a comma or a quote, so only those cells
are quoted, as the standard library's ``excel`` dialect quotes them (a field with a comma,
a quote or a line break goes in quotes, its quotes doubled); a property test holds every
line to what :func:`csv.writer` writes for the same cells.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import io
import operator
import re
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from tbes.compliance import Compliance
from tbes.render._common import Sink, printable
from tbes.report import ROW_FIELDS, WIRE_FIELDS, ReportRow, build_versions, exchange_server
from tbes.stages import Stage
from tbes.version import ExchangeBuild

__all__ = ["COLUMNS", "FORMULA_STARTS", "render_csv", "write_csv", "write_csv_values"]

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
    write_csv_values(map(_values_of, rows), out)


def write_csv_values(values: Iterable[tuple[Any, ...]], out: Sink) -> None:
    """:func:`write_csv` of rows given as their fields in :data:`~tbes.report.ROW_FIELDS`
    order (what :func:`~tbes.report.report_values` makes: no :class:`ReportRow` per row).
    """
    out.write(_HEADER)
    # One write per line, each as its row comes; consumed by the deque, which keeps nothing,
    # so the loop runs in C rather than as a Python loop (a report of a million rows).
    collections.deque(map(out.write, map(_Lines().line, values)), maxlen=0)


_HEADER = ",".join(COLUMNS) + "\r\n"
_NEEDS_QUOTES = re.compile('[,"\r\n]')

# A server id whose cells (its host, its connector, itself) are written as they stand: ASCII
# letters, digits, '.', '_' and '-' in each of at most two parts (split at the first '/',
# as tbes.identity splits an id), neither starting with '-' (FORMULA_STARTS). Any other id
# (a comma, a quote, a control character, a formula's first character) goes through _cell.
_PLAIN_ID = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*(?:/[A-Za-z0-9._][A-Za-z0-9._-]*)?")
_UTC = dt.UTC


_KEPT = 4096
"""How many builds, recommendations, tenants, days and times of day one report remembers."""


class _Lines:
    """A row's CSV line, with the cells that repeat from row to row (builds,
    recommendations, tenants, instants) worked out once per report: a store has few of each.
    Builds and recommendations are remembered by identity (the report's rows share those
    objects), with the object kept beside its text so that an identity is never reused
    meanwhile; instants in UTC by their day and their time of day."""

    __slots__ = ("_builds", "_days", "_recommended", "_tenants", "_times")

    def __init__(self) -> None:
        self._builds: dict[int, tuple[ExchangeBuild, str, str]] = {}
        self._recommended: dict[int, tuple[tuple[ExchangeBuild, ...], str]] = {}
        self._tenants: dict[str, str] = {}
        self._days: dict[dt.date, str] = {}
        self._times: dict[dt.time, str] = {}

    def _instant(self, value: dt.datetime) -> str:
        """``value.isoformat()``, for less: an instant in UTC is written as its day's text and
        its time of day's, each worked out once per report (a report's instants fall on few
        days, and a server's milestones lie whole days from its first detection, at its time
        of day), where ``isoformat`` formats every field of every instant anew."""
        if value.tzinfo is not _UTC:  # equal instants at other offsets have other texts
            return value.isoformat()
        day, time = value.date(), value.time()  # time(): the fields, fold aside, no zone
        days, times = self._days, self._times
        day_text = days.get(day)
        if day_text is None:
            day_text = day.isoformat() + "T"
            _remember(days, day, day_text)
        time_text = times.get(time)
        if time_text is None:
            time_text = time.isoformat() + "+00:00"
            _remember(times, time, time_text)
        return day_text + time_text

    def line(self, fields: tuple[Any, ...]) -> str:
        (
            server,
            tenant,
            build,
            _,  # the product: the CSV names the build's own
            status,
            first,
            last,
            recommended,
            throttle,
            block,
            full,
            stage,
            rate,
            blocked,
            following,
            paused,
            control,
        ) = fields
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
        tenant_cell = self._tenants.get(tenant)
        if tenant_cell is None:
            tenant_cell = _cell(tenant)
            _remember(self._tenants, tenant, tenant_cell)
        # Only the server id's parts, the tenant and the control are foreign text; every
        # other cell is written by tbes (numbers, builds, enum names, ISO instants) and can
        # hold neither a control character nor a formula's first character, nor a comma.
        # Written out rather than by helpers: this runs for every row of the largest reports.
        connector, slash, host = server.partition("/")  # as tbes.identity splits an id
        fqdn = host if slash else server
        if _PLAIN_ID.fullmatch(server) is not None:
            fqdn_cell, connector_cell, server_cell = fqdn, connector, server
        else:
            fqdn_cell, connector_cell, server_cell = _cell(fqdn), _cell(connector), _cell(server)
        instant = self._instant
        return (
            ",".join(
                (
                    fqdn_cell,
                    build_text,
                    product,
                    "" if first is None else instant(first),
                    listed[1],
                    "" if throttle is None else instant(throttle),
                    "" if block is None else instant(block),
                    "" if rate is None else str(rate),
                    "" if blocked is None else str(blocked),
                    "" if following is None else instant(following),
                    tenant_cell,
                    connector_cell,
                    server_cell,
                    _STATUS[id(status)],
                    _NO_STAGE if stage is None else _stage_cells(stage),  # three cells
                    "" if paused is None else instant(paused),
                    "" if full is None else instant(full),
                    "" if last is None else instant(last),
                    "" if control is None else _cell(control),  # names an operator's reason
                )
            )
            + "\r\n"
        )


# A row's fields, read in one call.
_values_of = operator.attrgetter(*ROW_FIELDS)
# By identity (one object per member): an Enum's hash is Python code, run per row.
_STATUS = {id(status): status.value for status in Compliance}
_NO_STAGE = ",,"


@functools.lru_cache(maxsize=64)
def _stage_cells(stage: Stage) -> str:
    """The stage's three cells, joined: numbers, which need no quotes."""
    return f"{stage.number},{stage.throttle_minutes},{stage.block_minutes}"


def _remember(memo: dict[_K, _V], key: _K, value: _V) -> None:
    if len(memo) >= _KEPT:  # bounded: a report of forged builds must not grow it
        memo.clear()
    memo[key] = value


def _cell(value: str) -> str:
    """A cell of foreign text: escaped, the formula rule, then the CSV quotes."""
    # The rule looks at the cell as given: a tab or CR shows escaped, but still gets its quote.
    text = printable(value)
    if value.startswith(FORMULA_STARTS):
        text = "'" + text
    return '"' + text.replace('"', '""') + '"' if _NEEDS_QUOTES.search(text) else text
