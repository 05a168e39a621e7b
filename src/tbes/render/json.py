"""The report as JSON: a list of rows in the one serialised form of :mod:`tbes.serde`.

The JSON report is the same data :func:`tbes.serde.loads` reads back (``list[ReportRow]``),
so a report written by one tool can be loaded, compared or re-rendered by another.
Indented and with sorted keys, so two reports diff line by line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from tbes.report import ReportRow
from tbes.serde import converter

__all__ = ["render_json"]


def render_json(rows: Sequence[ReportRow]) -> str:
    """The rows as an indented JSON array, ending in a newline."""
    data = converter.unstructure(list(rows), list[ReportRow])
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
