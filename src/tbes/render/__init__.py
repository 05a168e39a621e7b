"""Renderers of the enforcement report: text table, JSON, CSV and a self-contained HTML page.

Each renderer is a pure function from report rows (and, for HTML, the servers' timelines)
to a string; writing it anywhere is the caller's business. :func:`render_report` goes from
server states to any of the formats in one call.

Decision: a report of a million servers must not hold a million rows. :func:`write_report`
streams: the text table, JSON and CSV are written to a file-like object row by row as the
states come from an iterator (``write_text``, ``write_json``, ``write_csv``), in constant
memory. Only the HTML page is built whole, because its shared time axis spans every
server's timeline.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Iterable

from tbes.catalog import Catalog
from tbes.errors import InvalidValueError
from tbes.exemption import Exemption
from tbes.policy import Policy
from tbes.render._common import Sink
from tbes.render.csv import render_csv, write_csv, write_csv_values
from tbes.render.html import render_html
from tbes.render.json import render_json, write_json
from tbes.render.text import PAGE, render_text, write_text
from tbes.report import END, forecast, horizon, report_rows, report_values
from tbes.state import ServerState

__all__ = [
    "FORMATS",
    "STREAMED",
    "Sink",
    "render_csv",
    "render_html",
    "render_json",
    "render_report",
    "render_text",
    "write_csv",
    "write_json",
    "write_report",
    "write_text",
]

FORMATS = ("table", "json", "csv", "html")
"""The formats :func:`render_report` knows: text table, JSON, CSV and HTML."""

STREAMED = ("table", "json", "csv")
"""The formats :func:`write_report` writes row by row, in constant memory."""

# Room after the last change on the HTML timelines, so the terminal stage shows as a band.
_TAIL = dt.timedelta(days=14)


def render_report(
    states: Iterable[ServerState],
    fmt: str,
    *,
    now: dt.datetime,
    policy: Policy,
    catalog: Catalog,
    title: str = "Exchange enforcement report",
    subtitle: str = "",
    exemptions: Callable[[str], tuple[Exemption, ...]] | None = None,
    monitors: Callable[[str], bool] | None = None,
) -> str:
    """The report on ``states`` as of ``now`` in format ``fmt`` (one of :data:`FORMATS`).

    Rows come in order of tenant and server id. ``title`` and ``subtitle`` are used by the
    HTML page only. ``exemptions`` and ``monitors`` give, per server id, its exemptions and
    whether it is in monitor mode (the adapter configuration knows:
    :meth:`~tbes.adapters.config.AdapterConfig.exemptions_for`, ``monitors``); ``None``,
    the default, for none. An unknown
    format raises :class:`ValueError` naming the valid ones.
    """
    _require_format(fmt)
    out = io.StringIO()
    ordered = sorted(states, key=lambda state: (state.tenant, state.server_id))
    write_report(
        ordered,
        fmt,
        out,
        now=now,
        policy=policy,
        catalog=catalog,
        title=title,
        subtitle=subtitle,
        widths_from=len(ordered),
        exemptions=exemptions,
        monitors=monitors,
    )
    return out.getvalue()


def write_report(
    states: Iterable[ServerState],
    fmt: str,
    out: Sink,
    *,
    now: dt.datetime,
    policy: Policy,
    catalog: Catalog,
    title: str = "Exchange enforcement report",
    subtitle: str = "",
    widths_from: int = PAGE,
    exemptions: Callable[[str], tuple[Exemption, ...]] | None = None,
    monitors: Callable[[str], bool] | None = None,
) -> None:
    """Write the report on ``states`` as of ``now`` in format ``fmt`` to ``out``.

    Rows come in the order of ``states``. For the formats in :data:`STREAMED` each row is
    written as its state is read, and nothing is kept per row: ``states`` may be a
    store's iterator over any number of servers. The table's columns are sized by its
    first ``widths_from`` rows (see :func:`~tbes.render.text.write_text`). The HTML page
    reads every state first (its time axis spans them all) and is written at the end.
    ``title`` and ``subtitle`` are used by the HTML page only; ``exemptions`` and
    ``monitors`` as for :func:`render_report`. An error raised by ``states`` propagates,
    with the rows before it already written.
    """
    _require_format(fmt)
    # Checks the arguments, for HTML too.
    rows = report_rows(states, now, policy, catalog, exemptions=exemptions, monitors=monitors)
    if fmt == "table":
        write_text(rows, out, widths_from=widths_from)
    elif fmt == "json":
        write_json(rows, out)
    elif fmt == "csv":
        # The format of the largest reports: the rows' fields, no ReportRow per row.
        write_csv_values(report_values(states, now, policy, catalog, exemptions, monitors), out)
    else:
        out.write(_html(list(states), now, policy, catalog, title, subtitle, exemptions, monitors))


def _require_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InvalidValueError(
            f"unknown report format {fmt!r}: choose one of {', '.join(FORMATS)}"
        )


def _html(
    states: list[ServerState],
    now: dt.datetime,
    policy: Policy,
    catalog: Catalog,
    title: str,
    subtitle: str,
    exemptions: Callable[[str], tuple[Exemption, ...]] | None,
    monitors: Callable[[str], bool] | None,
) -> str:
    rows = list(report_rows(states, now, policy, catalog, exemptions=exemptions, monitors=monitors))
    held = {
        state.server_id: () if exemptions is None else exemptions(state.server_id)
        for state in states
    }
    last = max(
        (horizon(state, policy, now, exemptions=held[state.server_id]) for state in states),
        default=now,
    )
    # The tail stops at the calendar's end, as the forecasts do.
    until = END if last > END - _TAIL else last + _TAIL
    timelines = {
        state.server_id: forecast(state, policy, until=until, exemptions=held[state.server_id])
        for state in states
    }
    return render_html(
        rows, timelines, now=now, title=title, subtitle=subtitle, stage_table=policy.stage_table
    )
