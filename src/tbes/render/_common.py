"""Formatting shared by the renderers and the ``tbes`` command: instants, stages, the
report's columns, and :func:`printable`, the one escape of foreign text.

Every renderer shows the same columns in the same words, so an administrator who reads the
text table recognises the CSV and the HTML page. Instants are shown in UTC, the time zone
the enforcement timeline is defined in.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Protocol

from tbes.report import ReportRow
from tbes.stages import Stage

NONE = "-"
"""What an empty cell shows."""


class Sink(Protocol):
    """Where a streaming renderer writes: anything with ``write(str)``, such as an open text
    file, :data:`sys.stdout` or an :class:`io.StringIO`."""

    def write(self, text: str, /) -> object:
        """Write ``text``."""
        ...


# Control characters (C0, DEL, C1), line and paragraph separators (str.splitlines() breaks
# on them), bidi controls (they reorder what follows on screen) and lone surrogates (no
# terminal can encode them): what must never reach a terminal, a table line or a cell raw.
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    r"""``text`` with every character that could act on a terminal or break a line shown
    as a visible escape: ``\n``, ``\r``, ``\t``, ``\x1b`` (other C0, DEL and C1 controls
    alike), ``\u202e`` (line separators, bidi controls, lone surrogates).

    Used on everything printed that comes from outside (mail headers, stored ids, files,
    the command line). Other text, and the backslash itself, is left as it is.
    """
    return _UNPRINTABLE.sub(_escape, text)


def is_printable(text: str) -> bool:
    """Whether :func:`printable` leaves ``text`` as it is (so does it for every part of it)."""
    return _UNPRINTABLE.search(text) is None


def instant(value: dt.datetime | None) -> str:
    """An instant as ``YYYY-MM-DD HH:MM`` in UTC, or :data:`NONE`."""
    if value is None:
        return NONE
    # isoformat pads the year to four digits (strftime's %Y does not, on glibc, before 1000).
    return _naive_utc(value).isoformat(" ", "minutes")


def day(value: dt.datetime) -> str:
    """An instant's UTC calendar day as ``YYYY-MM-DD``."""
    return _naive_utc(value).date().isoformat()


def _naive_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def minutes(stage: Stage) -> str:
    """What a stage does each hour: ``report only``, ``throttle 5``, ``throttle 30, block 5``."""
    parts = []
    if stage.throttle_minutes:
        parts.append(f"throttle {stage.throttle_minutes}")
    if stage.block_minutes:
        parts.append(f"block {stage.block_minutes}")
    if not parts:
        return "report only" if stage.report else "nothing"
    return ", ".join(parts) + " min/h"


def stage_cell(stage: Stage | None) -> str:
    """A stage as ``2: throttle 5 min/h``, or :data:`NONE` when nothing is enforced."""
    return NONE if stage is None else f"{stage.number}: {minutes(stage)}"


def next_stage_cell(row: ReportRow) -> str:
    """The next stage's minutes per hour, or :data:`NONE`."""
    if row.next_stage_throttle is None or row.next_stage_block is None:
        return NONE
    parts = []
    if row.next_stage_throttle:
        parts.append(f"throttle {row.next_stage_throttle}")
    if row.next_stage_block:
        parts.append(f"block {row.next_stage_block}")
    return (", ".join(parts) + " min/h") if parts else "report only"


def status_cell(row: ReportRow) -> str:
    """The status, with the operator's control when one applies: ``OUTDATED (monitor: would
    block 60 min/h)``."""
    if row.control is None:
        return row.status.value
    return f"{row.status.value} ({row.control})"


def build_cell(row: ReportRow) -> str:
    """The build's short form, or :data:`NONE`."""
    return NONE if row.build is None else str(row.build)


def product_cell(row: ReportRow) -> str:
    """The product's label (``Exchange 2016``), or :data:`NONE`."""
    return NONE if row.product is None else row.product.label


def recommended_cell(row: ReportRow) -> str:
    """The recommended builds, newest first, separated by spaces."""
    return " ".join(str(build) for build in row.recommended) or NONE


def stage_now_cell(row: ReportRow) -> str:
    """The stage in force, or ``paused until 2026-02-01 00:00`` while a pause holds it."""
    if row.paused_until is not None:
        return f"paused until {instant(row.paused_until)}"
    return stage_cell(row.stage)


HEADINGS: tuple[str, ...] = (
    "Tenant",
    "Server",
    "Build",
    "Product",
    "Status",
    "Stage",
    "First detected",
    "Throttling from",
    "Blocking from",
    "Fully blocked",
    "Next stage",
    "Next stage from",
    "Recommended",
)
"""The column headings of the text table (times are UTC). The table shows the newest
recommended build; the JSON and CSV reports list them all."""


def cells(row: ReportRow) -> tuple[str, ...]:
    """A row's cells, in the order of :data:`HEADINGS`."""
    return (
        row.tenant,
        row.server,
        build_cell(row),
        product_cell(row),
        status_cell(row),
        stage_now_cell(row),
        instant(row.first_detected),
        instant(row.throttle_enabled),
        instant(row.blocking_enabled),
        instant(row.full_block),
        next_stage_cell(row),
        instant(row.next_stage_start),
        NONE if not row.recommended else str(row.recommended[0]),
    )
