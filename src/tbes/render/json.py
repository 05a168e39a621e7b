"""The report as JSON: a list of rows in the one serialised form of :mod:`tbes.serde`.

Each row is an object with the keys of :data:`~tbes.report.WIRE_FIELDS`, in that order:
Microsoft's field names (``ServerFQDN``, ``Build``, ``RecommendedBuildVersions`` ...) and
then tbes's own (``tenant``, ``connector``, ``server``, ``status`` ...). The JSON report is
the same data :func:`tbes.serde.loads` reads back (``list[ReportRow]``), so a report
written by one tool can be loaded, compared or re-rendered by another. Indented, keys in a
fixed order, so two reports diff line by line. Non-ASCII text stays as it is, except what
could act on a terminal (see :func:`dumps`).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from tbes.render._common import Sink
from tbes.report import ReportRow
from tbes.serde import converter

__all__ = ["dumps", "render_json", "write_json"]

# One level of dumps()' indentation: a row of the streamed array is shifted by it.
_INDENT = "  "
# JSON escapes C0 controls itself; DEL, C1 controls (\x9b acts as ESC [ on some terminals),
# line separators and lone surrogates it writes raw unless everything non-ASCII is escaped.
_RAW = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def dumps(data: Any, *, sort_keys: bool = True) -> str:
    """``data`` as indented JSON (keys sorted unless ``sort_keys`` is false), safe to print
    on a terminal.

    Non-ASCII text is kept readable; characters that JSON leaves raw but that could act on a
    terminal are written as ``\\uXXXX`` escapes, which every JSON reader reads back as the
    same characters.
    """
    text = json.dumps(data, indent=2, sort_keys=sort_keys, ensure_ascii=False)
    # Such characters only occur inside strings, where an escape means the same.
    return _RAW.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def render_json(rows: Sequence[ReportRow]) -> str:
    """The rows as an indented JSON array, ending in a newline."""
    out = io.StringIO()
    write_json(rows, out)
    return out.getvalue()


def write_json(rows: Iterable[ReportRow], out: Sink) -> None:
    """Write the rows to ``out`` as :func:`render_json` renders them, each as it comes.

    The output is one JSON array, the same text as ``dumps`` of the whole list (keys in the
    order of :data:`~tbes.report.WIRE_FIELDS`): each row is rendered alone and indented one
    level, so nothing is kept per row.
    """
    opening = "[\n"
    for row in rows:
        text = dumps(converter.unstructure(row, ReportRow), sort_keys=False)
        # JSON escapes a newline inside a string, so every raw one here is a line break.
        out.write(opening + _INDENT + text.replace("\n", "\n" + _INDENT))
        opening = ",\n"
    # json.dumps writes an empty list as [] on one line.
    out.write("[]\n" if opening == "[\n" else "\n]\n")
