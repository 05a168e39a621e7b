"""Renderers of the enforcement report: text table, JSON, CSV and a self-contained HTML page.

Each renderer is a pure function from report rows (and, for HTML, the servers' timelines)
to a string; writing it anywhere is the caller's business. :func:`render_report` goes from
server states to any of the formats in one call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from tbes.catalog import Catalog
from tbes.errors import InvalidValueError
from tbes.exemption import Exemption
from tbes.policy import Policy
from tbes.render.csv import render_csv
from tbes.render.html import render_html
from tbes.render.json import render_json
from tbes.render.text import render_text
from tbes.report import END, forecast, horizon, report_row
from tbes.state import ServerState

__all__ = ["FORMATS", "render_csv", "render_html", "render_json", "render_report", "render_text"]

FORMATS = ("table", "json", "csv", "html")
"""The formats :func:`render_report` knows: text table, JSON, CSV and HTML."""

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
    exemptions: Callable[[str], tuple[Exemption, ...]] = lambda server_id: (),
    monitors: Callable[[str], bool] = lambda server_id: False,
) -> str:
    """The report on ``states`` as of ``now`` in format ``fmt`` (one of :data:`FORMATS`).

    Rows come in order of tenant and server id. ``title`` and ``subtitle`` are used by the
    HTML page only. ``exemptions`` and ``monitors`` give, per server id, its exemptions and
    whether it is in monitor mode (the adapter configuration knows:
    :meth:`~tbes.adapters.config.AdapterConfig.exemptions_for`, ``monitors``). An unknown
    format raises :class:`ValueError` naming the valid ones.
    """
    if fmt not in FORMATS:
        raise InvalidValueError(
            f"unknown report format {fmt!r}: choose one of {', '.join(FORMATS)}"
        )
    ordered = sorted(states, key=lambda state: (state.tenant, state.server_id))
    held = {state.server_id: exemptions(state.server_id) for state in ordered}
    rows = [
        report_row(
            state,
            now,
            policy,
            catalog,
            exemptions=held[state.server_id],
            monitor=monitors(state.server_id),
        )
        for state in ordered
    ]
    if fmt == "table":
        return render_text(rows)
    if fmt == "json":
        return render_json(rows)
    if fmt == "csv":
        return render_csv(rows)
    last = max(
        (horizon(state, policy, now, exemptions=held[state.server_id]) for state in ordered),
        default=now,
    )
    # The tail stops at the calendar's end, as the forecasts do.
    until = END if last > END - _TAIL else last + _TAIL
    timelines = {
        state.server_id: forecast(state, policy, until=until, exemptions=held[state.server_id])
        for state in ordered
    }
    return render_html(
        rows, timelines, now=now, title=title, subtitle=subtitle, stage_table=policy.stage_table
    )
