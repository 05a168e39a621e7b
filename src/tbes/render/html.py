"""The report as one self-contained HTML page: the table and an SVG timeline per server.

The page has no external assets and no script (inline CSS, inline SVG, an SVG pattern for
the hatching of paused time), so it can be mailed, archived or opened offline and looks the
same everywhere. Every server shares one time axis, so their timelines line up. Everything
that comes from data (server ids come from operators and from mail headers) is escaped.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Iterator, Mapping, Sequence

from tbes.compliance import Compliance
from tbes.render._common import (
    build_cell,
    day,
    instant,
    minutes,
    next_stage_cell,
    printable,
    product_cell,
    recommended_cell,
    stage_cell,
)
from tbes.report import END, ReportRow, Segment
from tbes.stages import DEFAULT_STAGE_TABLE, Stage, StageTable

__all__ = ["render_html"]

# Timeline geometry, in SVG user units (pixels at 100 % zoom).
_WIDTH = 1240
_LEFT = 12
_RIGHT = 12
_BAND_TOP = 24
_BAND_HEIGHT = 34
_AXIS_Y = _BAND_TOP + _BAND_HEIGHT + 6
_HEIGHT = _AXIS_Y + 24
_PAD = 0.015  # share of the time span left blank at each end
_FIRST = dt.datetime.min.replace(tzinfo=dt.UTC)  # the calendar's start

# Colours: report only is calm, throttling warms up, blocking turns red.
_REPORT = "#bcd7f2"
_THROTTLE = ("#fde68a", "#e98a1c")
_BLOCK = ("#f29c7a", "#c2372a")
_FULL_BLOCK = "#7f1d1d"
_NOT_ENFORCED = "#c9e7c9"
_NOT_APPLICABLE = "#e5e7eb"
_INK = "#111827"

_STATUS_CLASS = {
    Compliance.COMPLIANT: "ok",
    Compliance.OUTDATED: "warn",
    Compliance.UNSUPPORTED: "bad",
    Compliance.NOT_APPLICABLE: "na",
}


def render_html(
    rows: Sequence[ReportRow],
    timelines: Mapping[str, Sequence[Segment]],
    *,
    now: dt.datetime,
    title: str = "Exchange enforcement report",
    subtitle: str = "",
    stage_table: StageTable = DEFAULT_STAGE_TABLE,
) -> str:
    """A complete HTML document: the rows as a table, then a timeline per server.

    ``timelines`` maps a row's server id to its :func:`~tbes.report.forecast`; a server
    without one (never detected) is drawn as a single unenforced band. ``now`` is marked
    on every timeline as "today". ``stage_table`` scales the colours of the stages.
    """
    axis = _Axis.spanning(timelines.values(), now)
    palette = _Palette(stage_table)
    sections = "\n".join(
        _server_section(row, _svg(index, row, timelines.get(row.server, ()), axis, palette, now))
        for index, row in enumerate(rows)
    )
    return _PAGE.format(
        title=_esc(title),
        subtitle=_esc(subtitle or f"as of {instant(now)} UTC"),
        table=_table(rows),
        legend=_legend(palette),
        sections=sections or "<p>No servers.</p>",
    )


def _esc(value: object) -> str:
    # Control characters are no HTML text, and the page may be printed to a terminal.
    return html.escape(printable(str(value)), quote=True)


_TABLE_HEADINGS = (
    "Tenant",
    "Server",
    "Build",
    "Status",
    "Stage now",
    "First detected",
    "Throttling from",
    "Blocking from",
    "Fully blocked",
    "Next stage",
    "Paused until",
    "Recommended",
)


def _table(rows: Sequence[ReportRow]) -> str:
    head = "".join(f"<th>{_esc(heading)}</th>" for heading in _TABLE_HEADINGS)
    body = "\n".join(_table_row(row) for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _table_row(row: ReportRow) -> str:
    status = _STATUS_CLASS[row.status]
    control = "" if row.control is None else f"<small>{_esc(row.control)}</small>"
    following = next_stage_cell(row)
    if row.next_stage_start is not None:
        following = f"{_esc(following)}<small>from {_esc(instant(row.next_stage_start))}</small>"
    else:
        following = _esc(following)
    tds = (
        f"<td>{_esc(row.tenant)}</td>",
        f'<td class="server">{_esc(row.server)}</td>',
        f"<td>{_esc(build_cell(row))}<small>{_esc(product_cell(row))}</small></td>",
        f'<td><span class="badge {status}">{_esc(row.status.value)}</span>{control}</td>',
        _stage_td(row),
        *(
            f"<td>{_esc(instant(value))}</td>"
            for value in (
                row.first_detected,
                row.throttle_enabled,
                row.blocking_enabled,
                row.full_block,
            )
        ),
        f"<td>{following}</td>",
        f"<td>{_esc(instant(row.paused_until))}</td>",
        f"<td>{'<br>'.join(_esc(build) for build in recommended_cell(row).split())}</td>",
    )
    return "<tr>" + "".join(tds) + "</tr>"


def _stage_td(row: ReportRow) -> str:
    stage = row.stage
    if stage is None:
        return f"<td>{_esc(stage_cell(stage))}</td>"
    return f"<td>stage {stage.number}<small>{_esc(minutes(stage))}</small></td>"


class _Axis:
    """Maps instants to x positions; one axis is shared by every timeline on the page."""

    def __init__(self, start: dt.datetime, end: dt.datetime) -> None:
        self.start = start
        self.end = end
        self._span = (end - start).total_seconds()

    @classmethod
    def spanning(cls, timelines: Iterable[Sequence[Segment]], now: dt.datetime) -> _Axis:
        """An axis over every segment and ``now``, with a little room at both ends."""
        edges = [now]
        for timeline in timelines:
            edges.extend(edge for segment in timeline for edge in (segment.start, segment.end))
        lo, hi = min(edges), max(edges)
        span = max(hi - lo, dt.timedelta(days=30))
        pad = span * _PAD
        # Near the calendar's ends the room runs out: the axis stops there.
        first = _FIRST if lo - _FIRST < pad else lo - pad
        last = END if END - lo < span + pad else lo + span + pad
        return cls(first, last)

    def x(self, at: dt.datetime) -> float:
        """The x coordinate of ``at``, clamped to the drawing area."""
        share = (at - self.start).total_seconds() / self._span
        share = min(max(share, 0.0), 1.0)
        return round(_LEFT + share * (_WIDTH - _LEFT - _RIGHT), 2)

    def ticks(self) -> Iterator[tuple[dt.datetime, str]]:
        """Month starts inside the axis (every few months on long spans), with labels."""
        months = (self.end - self.start).days / 30
        step = 1 if months <= 14 else 3 if months <= 40 else 12
        at = dt.datetime(self.start.year, self.start.month, 1, tzinfo=dt.UTC)
        while at <= self.end:
            if at >= self.start and (at.month - 1) % step == 0:
                # The year in four digits: strftime's %Y drops leading zeros on glibc.
                year = f" {at.year:04d}" if at.month == 1 or step > 1 else ""
                yield at, at.strftime("%b") + year
            if at.year == dt.MAXYEAR and at.month == 12:
                return  # no month starts after December 9999
            at = dt.datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=dt.UTC)


class _Palette:
    """Fill colours of stages: the more minutes a stage throttles or blocks, the darker.

    Shades go by rank among the table's distinct minutes, not by the minutes themselves, so
    5 and 10 minutes look as different as 20 and 30.
    """

    def __init__(self, table: StageTable) -> None:
        self.table = table
        self._throttle = sorted({s.throttle_minutes for s in table if s.throttle_minutes})
        self._block = sorted({s.block_minutes for s in table if 0 < s.block_minutes < 60})

    def fill(self, stage: Stage | None) -> str:
        """The colour of a stage (``None``: not enforced)."""
        if stage is None:
            return _NOT_ENFORCED
        if stage.block_minutes >= 60:
            return _FULL_BLOCK
        if stage.block_minutes > 0:
            return _mix(*_BLOCK, _rank(stage.block_minutes, self._block))
        if stage.throttle_minutes > 0:
            return _mix(*_THROTTLE, _rank(stage.throttle_minutes, self._throttle))
        return _REPORT

    def ink(self, stage: Stage | None) -> str:
        """A text colour readable on the stage's fill."""
        dark = stage is not None and (
            stage.block_minutes >= 60 or _rank(stage.block_minutes, self._block) > 0.5
        )
        return "#ffffff" if dark else _INK


def _rank(value: int, values: Sequence[int]) -> float:
    """Where ``value`` stands among the sorted ``values``: 0 for the least, 1 for the most."""
    if value not in values:
        return 0.0
    return values.index(value) / (len(values) - 1) if len(values) > 1 else 1.0


def _mix(light: str, dark: str, share: float) -> str:
    """The colour ``share`` of the way from ``light`` to ``dark``."""
    share = min(max(share, 0.0), 1.0)
    a = [int(light[i : i + 2], 16) for i in (1, 3, 5)]
    b = [int(dark[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * share):02x}" for x, y in zip(a, b, strict=True))


def _server_section(row: ReportRow, svg: str) -> str:
    build = "" if row.build is None else f"{row.product.label if row.product else ''} {row.build}"
    heading = (
        f'<h3><span class="server">{_esc(row.server)}</span> '
        f'<span class="badge {_STATUS_CLASS[row.status]}">{_esc(row.status.value)}</span> '
        f'<span class="muted">{_esc(build.strip())}</span></h3>'
    )
    return f'<section class="timeline">\n{heading}\n{svg}\n</section>'


def _svg(
    index: int,
    row: ReportRow,
    timeline: Sequence[Segment],
    axis: _Axis,
    palette: _Palette,
    now: dt.datetime,
) -> str:
    hatch = f"hatch-{index}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="timeline of {_esc(row.server)}">',
        f"<defs>{_hatch_pattern(hatch)}</defs>",
        *(_bands(row, timeline, axis, palette, hatch)),
        *_axis_marks(axis),
        _today(axis, now),
        "</svg>",
    ]
    return "\n".join(parts)


def _hatch_pattern(ident: str) -> str:
    return (
        f'<pattern id="{ident}" patternUnits="userSpaceOnUse" width="8" height="8" '
        'patternTransform="rotate(45)">'
        '<rect width="8" height="8" fill="#ffffff" fill-opacity="0.35"/>'
        '<line x1="0" y1="0" x2="0" y2="8" stroke="#374151" stroke-width="3"/></pattern>'
    )


def _bands(
    row: ReportRow, timeline: Sequence[Segment], axis: _Axis, palette: _Palette, hatch: str
) -> Iterator[str]:
    top, height = _BAND_TOP, _BAND_HEIGHT
    if not timeline:
        fill = _NOT_APPLICABLE if row.status is Compliance.NOT_APPLICABLE else _NOT_ENFORCED
        label = "never enforced" if row.status is Compliance.NOT_APPLICABLE else "not enforced"
        x0, x1 = axis.x(axis.start), axis.x(axis.end)
        yield _rect(x0, top, x1 - x0, height, fill, f"{row.server}: {label}")
        yield _label((x0 + x1) / 2, label, _INK)
        return
    for segment in timeline:
        x0, x1 = axis.x(segment.start), axis.x(segment.end)
        if x1 - x0 <= 0:
            continue
        tip = _tooltip(segment)
        yield _rect(x0, top, x1 - x0, height, palette.fill(segment.stage), tip)
        if segment.paused:
            yield _rect(x0, top, x1 - x0, height, f"url(#{hatch})", tip)
        text = _band_text(segment, x1 - x0)
        if text:
            ink = _INK if segment.paused else palette.ink(segment.stage)
            yield _label((x0 + x1) / 2, text, ink, paused=segment.paused)
    yield (
        f'<rect x="{axis.x(timeline[0].start)}" y="{top}" '
        f'width="{axis.x(timeline[-1].end) - axis.x(timeline[0].start):.2f}" height="{height}" '
        'fill="none" stroke="#6b7280" stroke-width="1"/>'
    )


def _rect(x: float, y: float, width: float, height: float, fill: str, tip: str) -> str:
    return (
        f'<rect x="{x:.2f}" y="{y}" width="{width:.2f}" height="{height}" fill="{_esc(fill)}">'
        f"<title>{_esc(tip)}</title></rect>"
    )


def _label(x: float, text: str, ink: str, *, paused: bool = False) -> str:
    y = _BAND_TOP + _BAND_HEIGHT / 2 + 4
    style = (
        ' font-weight="600" paint-order="stroke" stroke="#ffffff" stroke-width="3"'
        if paused
        else ""
    )
    return (
        f'<text x="{x:.2f}" y="{y}" text-anchor="middle" font-size="12" fill="{ink}"{style}>'
        f"{_esc(text)}</text>"
    )


def _band_text(segment: Segment, width: float) -> str:
    """The longest label that fits the band: words, a stage number, or nothing."""
    if segment.paused:
        options = ["paused", "P"]
    elif segment.stage is None:
        options = ["compliant, not enforced", "compliant", "ok"]
    else:
        number = segment.stage.number
        options = [f"stage {number}: {minutes(segment.stage)}", f"stage {number}", str(number)]
    # About 6.5 units per character at font-size 12, plus a margin.
    return next((option for option in options if len(option) * 6.5 + 8 <= width), "")


def _tooltip(segment: Segment) -> str:
    span = f"{instant(segment.start)} to {instant(segment.end)} UTC"
    if segment.stage is None:
        return f"not enforced, {span}"
    what = f"stage {segment.stage.number}: {minutes(segment.stage)}"
    return f"{what}{', paused' if segment.paused else ''}, {span}"


def _axis_marks(axis: _Axis) -> Iterator[str]:
    yield (
        f'<line x1="{_LEFT}" y1="{_AXIS_Y}" x2="{_WIDTH - _RIGHT}" y2="{_AXIS_Y}" '
        'stroke="#9ca3af" stroke-width="1"/>'
    )
    for at, label in axis.ticks():
        x = axis.x(at)
        yield (
            f'<line x1="{x}" y1="{_AXIS_Y - 3}" x2="{x}" y2="{_AXIS_Y + 4}" stroke="#6b7280" '
            'stroke-width="1"/>'
        )
        anchor = "start" if x < _LEFT + 30 else "end" if x > _WIDTH - _RIGHT - 30 else "middle"
        yield (
            f'<text x="{x}" y="{_AXIS_Y + 17}" text-anchor="{anchor}" font-size="11" '
            f'fill="#4b5563">{_esc(label)}</text>'
        )


def _today(axis: _Axis, now: dt.datetime) -> str:
    x = axis.x(now)
    anchor = "end" if x > _WIDTH - 120 else "start" if x < 120 else "middle"
    return (
        f'<line x1="{x}" y1="{_BAND_TOP - 6}" x2="{x}" y2="{_AXIS_Y}" stroke="{_INK}" '
        'stroke-width="2"/>'
        f'<text x="{x}" y="{_BAND_TOP - 9}" text-anchor="{anchor}" font-size="11" '
        f'font-weight="600" fill="{_INK}">today {_esc(day(now))}</text>'
    )


def _legend(palette: _Palette) -> str:
    items = [
        (f"stage {stage.number}: {minutes(stage)}", palette.fill(stage), False)
        for stage in palette.table
    ]
    items.append(("paused", "#ffffff", True))
    items.append(("not enforced (compliant)", _NOT_ENFORCED, False))
    return "\n".join(_legend_item(label, fill, hatched) for label, fill, hatched in items)


def _legend_item(label: str, fill: str, hatched: bool) -> str:
    pattern = (
        f"<defs>{_hatch_pattern('hatch-legend')}</defs>"
        '<rect width="22" height="14" fill="url(#hatch-legend)" stroke="#6b7280"/>'
        if hatched
        else f'<rect width="22" height="14" fill="{fill}" stroke="#6b7280"/>'
    )
    return (
        '<span class="key"><svg xmlns="http://www.w3.org/2000/svg" width="22" height="14" '
        f'aria-hidden="true">{pattern}</svg>{_esc(label)}</span>'
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #111827; background: #ffffff; margin: 20px 24px; }}
h1 {{ font-size: 22px; margin: 0 0 2px; }}
h2 {{ font-size: 17px; margin: 28px 0 8px; }}
h3 {{ font-size: 14px; margin: 18px 0 4px; font-weight: 600; }}
.sub {{ color: #4b5563; margin: 0 0 18px; }}
table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ text-align: left; padding: 4px 6px; vertical-align: top; border-bottom: 1px solid #e5e7eb;
  white-space: nowrap; }}
th {{ background: #f3f4f6; font-weight: 600; }}
td small {{ display: block; color: #6b7280; font-size: 11px; }}
tbody tr:nth-child(even) {{ background: #f9fafb; }}
.server {{ font-family: ui-monospace, "DejaVu Sans Mono", monospace; }}
.badge {{ display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 11px;
  font-weight: 600; }}
.badge.ok {{ background: #dcfce7; color: #166534; }}
.badge.warn {{ background: #fef3c7; color: #92400e; }}
.badge.bad {{ background: #fee2e2; color: #991b1b; }}
.badge.na {{ background: #e5e7eb; color: #374151; }}
.muted {{ color: #6b7280; font-weight: normal; }}
.legend {{ display: flex; flex-wrap: wrap; gap: 6px 16px; font-size: 12px; }}
.key {{ display: inline-flex; align-items: center; gap: 6px; }}
section.timeline svg {{ display: block; max-width: 100%; height: auto; }}
footer {{ color: #6b7280; font-size: 12px; margin-top: 28px; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="sub">{subtitle}</p>
{table}
<h2>Timelines</h2>
<div class="legend">
{legend}
</div>
{sections}
<footer>Times are UTC. Generated by tbes.</footer>
</body>
</html>
"""
