"""Formatting shared by the renderers: instants, stages and the report's columns.

Every renderer shows the same columns in the same words, so an administrator who reads the
text table recognises the CSV and the HTML page. Instants are shown in UTC, the time zone
the enforcement timeline is defined in.
"""

from __future__ import annotations

import datetime as dt

from tbes.report import ReportRow
from tbes.stages import Stage

NONE = "-"
"""What an empty cell shows."""


def instant(value: dt.datetime | None) -> str:
    """An instant as ``YYYY-MM-DD HH:MM`` in UTC, or :data:`NONE`."""
    if value is None:
        return NONE
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")


def day(value: dt.datetime) -> str:
    """An instant's UTC calendar day as ``YYYY-MM-DD``."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d")


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


def build_cell(row: ReportRow) -> str:
    """The build's short form, or :data:`NONE`."""
    return NONE if row.build is None else str(row.build)


def product_cell(row: ReportRow) -> str:
    """The product's label (``Exchange 2016``), or :data:`NONE`."""
    return NONE if row.product is None else row.product.label


def recommended_cell(row: ReportRow) -> str:
    """The recommended builds, newest first, separated by spaces."""
    return " ".join(str(build) for build in row.recommended) or NONE


HEADINGS: tuple[str, ...] = (
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
    "Paused until",
    "Recommended",
)
"""The column headings of the human-readable reports (times are UTC)."""


def cells(row: ReportRow) -> tuple[str, ...]:
    """A row's cells, in the order of :data:`HEADINGS`."""
    return (
        row.server,
        build_cell(row),
        product_cell(row),
        row.status.value,
        stage_cell(row.stage),
        instant(row.first_detected),
        instant(row.throttle_enabled),
        instant(row.blocking_enabled),
        instant(row.full_block),
        next_stage_cell(row),
        instant(row.next_stage_start),
        instant(row.paused_until),
        recommended_cell(row),
    )
