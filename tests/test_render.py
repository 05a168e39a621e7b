"""The renderers: text table, JSON, CSV and the self-contained HTML page."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from html.parser import HTMLParser

import pytest

from report_support import fabrikam_state
from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.policy import Policy
from tbes.render import (
    FORMATS,
    render_csv,
    render_html,
    render_json,
    render_report,
    render_text,
)
from tbes.render._common import printable
from tbes.report import ReportRow, forecast, report_row
from tbes.serde import loads
from tbes.state import ServerState

UTC = dt.UTC
POLICY = Policy()
CATALOG = Catalog.default()
NOW = dt.datetime(2026, 1, 15, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script>&"'


def server(
    server_id: str,
    build: str,
    first: dt.datetime | None,
    *pauses: tuple[dt.date, int],
    status: Compliance = Compliance.OUTDATED,
) -> ServerState:
    return fabrikam_state(server_id, build, first, pauses, status=status, last_seen=NOW)


EX16 = server(
    "ex16.fabrikam.example",
    "15.1.2507.39",
    dt.datetime(2026, 1, 1, tzinfo=UTC),
    (dt.date(2026, 1, 10), 10),
)
EX19 = server("ex19.fabrikam.example", "15.2.1748.39", None, status=Compliance.COMPLIANT)
STATES = [EX16, EX19]


def rows() -> list[ReportRow]:
    return [report_row(state, NOW, POLICY, CATALOG) for state in STATES]


# ---- text -----------------------------------------------------------------------------------


def test_text_table_has_a_heading_a_rule_and_one_line_per_server() -> None:
    lines = render_text(rows()).splitlines()
    assert lines[0].split()[:3] == ["Tenant", "Server", "Build"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len(lines) == 4
    assert lines[2].split()[:2] == ["fabrikam", "ex16.fabrikam.example"]
    assert lines[3].split()[:2] == ["fabrikam", "ex19.fabrikam.example"]


def test_text_table_aligns_columns_under_their_headings() -> None:
    lines = render_text(rows()).splitlines()
    column = lines[0].index("Throttling from")
    # Paused 10 days from 10 Jan, so throttling starts on 10 Feb instead of 31 Jan.
    assert lines[2][column:].startswith("2026-02-10 00:00")
    assert lines[3][column:].startswith("-")


def test_text_table_shows_stage_status_and_pause() -> None:
    heading, _, line, compliant = render_text(rows()).splitlines()
    assert "OUTDATED" in line
    # Paused from 10 Jan for 10 days: the stage column says so instead of stage 1.
    stage = heading.index("Stage")
    assert line[stage:].startswith("paused until 2026-01-20 00:00  ")
    assert "throttle 5 min/h" in line  # the next stage
    assert compliant[stage:].startswith("-  ")


def test_text_table_shows_a_newline_in_a_server_id_as_an_escape_not_a_new_row() -> None:
    forged = server("ex16.fabrikam.example\nforged.example  EX 1", "15.1.2507.39", NOW)
    lines = render_text([report_row(forged, NOW, POLICY, CATALOG)]).splitlines()
    assert len(lines) == 3
    forged_id = "ex16.fabrikam.example\\nforged.example  EX 1"
    assert lines[2].startswith(f"fabrikam  {forged_id}  15.1.2507.39")


def test_text_table_shows_escape_sequences_as_visible_escapes() -> None:
    hostile = server("ex\x1b[2J\x9b1m\x7f.example", "15.1.2507.39", NOW)
    text = render_text([report_row(hostile, NOW, POLICY, CATALOG)])
    assert "ex\\x1b[2J\\x9b1m\\x7f.example" in text
    assert not any(char in text for char in "\x1b\x9b\x7f")


# ---- csv ------------------------------------------------------------------------------------


def test_csv_has_a_header_and_machine_readable_values() -> None:
    records = list(csv.DictReader(io.StringIO(render_csv(rows()), newline="")))
    assert len(records) == 2
    first = records[0]
    assert first["server"] == first["ServerFQDN"] == "ex16.fabrikam.example"
    assert first["connector"] == "ex16.fabrikam.example"  # a connector-level id
    assert first["Build"] == "15.1.2507.39"
    assert first["ExchangeServer"] == "ExchangeServer2016"
    assert first["status"] == "OUTDATED"
    assert first["FirstDetectedDate"] == "2026-01-01T00:00:00+00:00"
    assert first["ThrottleEnabledDate"] == "2026-02-10T00:00:00+00:00"
    assert first["BlockingEnabledDate"] == "2026-03-12T00:00:00+00:00"
    assert first["fully_blocked"] == "2026-04-11T00:00:00+00:00"
    assert (first["stage"], first["stage_throttle_minutes"], first["stage_block_minutes"]) == (
        "1",
        "0",
        "0",
    )
    # Stage 2 (throttle 5 min/h) starts once 30 unpaused days have passed: 10 Feb.
    assert (first["NextStageThrottleRate"], first["NextStageBlockRate"]) == ("5", "0")
    assert first["NextStageStartDate"] == "2026-02-10T00:00:00+00:00"
    assert first["paused_until"] == "2026-01-20T00:00:00+00:00"
    assert first["last_seen"] == "2026-01-15T00:00:00+00:00"
    # Policy() holds 2016 CU23 to the Oct 2025 SU; in January 2026 it is the line's only
    # public build at or above it (Dec 2025 SU and later went to ESU customers only).
    assert first["RecommendedBuildVersions"] == "15.1.2507.61 15.01.2507.061"
    assert records[1]["stage"] == ""
    assert records[1]["ThrottleEnabledDate"] == ""


def test_csv_header_is_microsofts_field_names_then_tbes_own() -> None:
    header = render_csv([]).splitlines()[0]
    assert header == (
        "ServerFQDN,Build,ExchangeServer,FirstDetectedDate,RecommendedBuildVersions,"
        "ThrottleEnabledDate,BlockingEnabledDate,NextStageThrottleRate,NextStageBlockRate,"
        "NextStageStartDate,tenant,connector,server,status,stage,stage_throttle_minutes,"
        "stage_block_minutes,paused_until,fully_blocked,last_seen,control"
    )


def test_csv_splits_a_canonical_id_into_server_fqdn_and_connector() -> None:
    state = server("edge-1/ex16.fabrikam.example", "15.1.2507.39", NOW)
    (record,) = csv.DictReader(io.StringIO(render_csv([report_row(state, NOW, POLICY, CATALOG)])))
    assert record["ServerFQDN"] == "ex16.fabrikam.example"
    assert record["connector"] == "edge-1"
    assert record["server"] == "edge-1/ex16.fabrikam.example"


def test_csv_escapes_a_formula_in_the_host_part_of_a_server_id_in_every_column() -> None:
    state = server("=cmd/=HYPERLINK(1)", "15.1.2507.39", NOW)
    (record,) = csv.DictReader(io.StringIO(render_csv([report_row(state, NOW, POLICY, CATALOG)])))
    assert record["ServerFQDN"] == "'=HYPERLINK(1)"
    assert record["connector"] == "'=cmd"
    assert record["server"] == "'=cmd/=HYPERLINK(1)"


def test_csv_quotes_values_with_commas_and_quotes() -> None:
    state = server('odd,"name"', "15.1.2507.39", NOW)
    text = render_csv([report_row(state, NOW, POLICY, CATALOG)])
    assert '"odd,""name"""' in text
    (record,) = csv.DictReader(io.StringIO(text, newline=""))
    assert record["server"] == record["ServerFQDN"] == 'odd,"name"'


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_cells_that_a_spreadsheet_would_read_as_a_formula_get_a_leading_quote(
    start: str,
) -> None:
    state = server(f"{start}HYPERLINK(1)", "15.1.2507.39", NOW)
    text = render_csv([report_row(state, NOW, POLICY, CATALOG)])
    (record,) = csv.DictReader(io.StringIO(text, newline=""))
    shown = {"\t": "\\t", "\r": "\\r"}.get(start, start)
    assert record["server"] == f"'{shown}HYPERLINK(1)"


def test_csv_shows_a_newline_in_a_server_id_as_an_escape_in_one_line() -> None:
    state = server("ex16.example\nforged,row", "15.1.2507.39", NOW)
    text = render_csv([report_row(state, NOW, POLICY, CATALOG)])
    assert len(text.split("\r\n")) == 3  # header, the row, and the empty rest
    (record,) = csv.DictReader(io.StringIO(text, newline=""))
    assert record["server"] == "ex16.example\\nforged,row"
    assert record["tenant"] == "fabrikam"


# ---- json -----------------------------------------------------------------------------------


def test_json_report_reads_back_into_the_same_rows() -> None:
    original = rows()
    assert loads(render_json(original), list[ReportRow]) == original


def test_json_report_uses_the_serde_forms() -> None:
    text = render_json(rows())
    assert '"Build": "15.1.2507.39"' in text
    assert '"ThrottleEnabledDate": "2026-02-10T00:00:00+00:00"' in text
    assert '"status": "OUTDATED"' in text


def test_json_rows_have_microsofts_keys_then_tbes_own_in_a_fixed_order() -> None:
    first, second = json.loads(render_json(rows()))
    expected = [
        "ServerFQDN",
        "Build",
        "ExchangeServer",
        "FirstDetectedDate",
        "RecommendedBuildVersions",
        "ThrottleEnabledDate",
        "BlockingEnabledDate",
        "NextStageThrottleRate",
        "NextStageBlockRate",
        "NextStageStartDate",
        "tenant",
        "connector",
        "server",
        "status",
        "stage",
        "paused_until",
        "fully_blocked",
        "last_seen",
        "control",
    ]
    assert list(first) == list(second) == expected
    assert first["RecommendedBuildVersions"] == ["15.1.2507.61", "15.01.2507.061"]
    assert (first["NextStageThrottleRate"], first["NextStageBlockRate"]) == (5, 0)
    assert first["stage"]["number"] == 1
    assert first["ExchangeServer"] == "ExchangeServer2016"
    assert second["ExchangeServer"] == "ExchangeServer2019"
    assert second["stage"] is None
    assert second["FirstDetectedDate"] is None


# ---- html -----------------------------------------------------------------------------------


class _Tags(HTMLParser):
    """Collects start tags and attributes, and checks that elements nest properly."""

    VOID = frozenset({"meta", "br", "link", "img", "input", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.open, f"</{tag}> closes nothing"
        assert self.open[-1] == tag, f"</{tag}> closes <{self.open[-1]}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page(states: list[ServerState] = STATES) -> str:
    until = dt.datetime(2026, 5, 1, tzinfo=UTC)
    return render_html(
        [report_row(state, NOW, POLICY, CATALOG) for state in states],
        {state.server_id: forecast(state, POLICY, until=until) for state in states},
        now=NOW,
        subtitle="tenant fabrikam",
    )


def parsed(text: str) -> _Tags:
    tags = _Tags()
    tags.feed(text)
    tags.close()
    assert tags.open == []
    return tags


def test_html_page_is_well_formed_with_a_table_row_and_a_timeline_per_server() -> None:
    tags = parsed(page())
    names = [tag for tag, _ in tags.tags]
    assert names.count("tr") == 1 + len(STATES)
    timelines = [a for tag, a in tags.tags if tag == "svg" and a.get("role") == "img"]
    assert [a["aria-label"] for a in timelines] == [
        "timeline of ex16.fabrikam.example",
        "timeline of ex19.fabrikam.example",
    ]


def test_html_page_needs_nothing_from_outside() -> None:
    tags = parsed(page())
    names = {tag for tag, _ in tags.tags}
    assert not names & {"script", "link", "img", "iframe", "object"}
    for _, attributes in tags.tags:
        for name, value in attributes.items():
            if name in {"src", "href"} or (value and "url(" in value):
                assert value is not None
                assert value.startswith("url(#"), (name, value)
    # The only URL is the SVG namespace name, which is never fetched.
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page()))
    assert urls == {"http://www.w3.org/2000/svg"}


def test_html_page_hatches_paused_time_with_an_svg_pattern() -> None:
    tags = parsed(page())
    patterns = {a["id"] for tag, a in tags.tags if tag == "pattern"}
    hatched = {a["fill"] for tag, a in tags.tags if tag == "rect" and "url(" in (a["fill"] or "")}
    assert hatched
    assert {fill.removeprefix("url(#").removesuffix(")") for fill in hatched if fill} <= patterns


def test_html_page_marks_today_and_labels_the_axis_with_dates() -> None:
    text = " ".join(parsed(page()).text)
    assert text.count("today 2026-01-15") == len(STATES)
    for month in ("Jan 2026", "Feb", "Mar", "Apr"):
        assert month in text


def test_html_page_colours_stages_by_what_they_do() -> None:
    tags = parsed(page())
    fills = {
        a["fill"] for tag, a in tags.tags if tag == "rect" and (a.get("fill") or "").startswith("#")
    }
    # Report only, throttling, blocking, full block and "not enforced" are all distinct.
    assert len(fills) >= 8


def test_html_page_escapes_everything_that_comes_from_data() -> None:
    hostile = server(HOSTILE, "15.1.2507.39", NOW)
    text = page([hostile])
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;" in text
    tags = parsed(text)
    assert HOSTILE in "".join(tags.text)
    assert not any(tag == "script" for tag, _ in tags.tags)


def test_html_page_shows_control_characters_as_visible_escapes() -> None:
    text = page([server("ex\x1b[2J\x9b.example", "15.1.2507.39", NOW)])
    assert "ex\\x1b[2J\\x9b.example" in text
    assert "\x1b" not in text
    assert "\x9b" not in text


def test_html_title_and_subtitle_are_escaped_too() -> None:
    text = render_html([], {}, now=NOW, title="<b>t</b>", subtitle="<i>s</i>")
    assert "<b>t</b>" not in text
    assert "&lt;b&gt;t&lt;/b&gt;" in text
    assert "&lt;i&gt;s&lt;/i&gt;" in text
    assert "No servers." in text


# ---- render_report --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_render_report_renders_states_in_every_format(fmt: str) -> None:
    text = render_report(STATES, fmt, now=NOW, policy=POLICY, catalog=CATALOG)
    assert "ex16.fabrikam.example" in text
    assert "ex19.fabrikam.example" in text


def test_render_report_orders_rows_by_tenant_and_server() -> None:
    text = render_report(list(reversed(STATES)), "csv", now=NOW, policy=POLICY, catalog=CATALOG)
    servers = [r["server"] for r in csv.DictReader(io.StringIO(text, newline=""))]
    assert servers == ["ex16.fabrikam.example", "ex19.fabrikam.example"]


def test_render_report_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="'pdf'"):
        render_report(STATES, "pdf", now=NOW, policy=POLICY, catalog=CATALOG)


# ---- the calendar's ends --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "now", "label"),
    [
        (dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(1, 1, 15, tzinfo=UTC), "Jan 0001"),
        (
            dt.datetime(9999, 12, 1, tzinfo=UTC),
            dt.datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
            "today 9999-12-31",
        ),
    ],
)
def test_html_page_near_the_calendars_ends_draws_its_axis_there(
    first: dt.datetime, now: dt.datetime, label: str
) -> None:
    text = render_report(
        [server("ex16.fabrikam.example", "15.1.2507.39", first)],
        "html",
        now=now,
        policy=POLICY,
        catalog=CATALOG,
    )
    assert label in text


# ---- the escape of foreign text ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x00\x1b[31m\x7f", "\\x00\\x1b[31m\\x7f"),
        ("\x85\x9b", "\\x85\\x9b"),  # C1 controls: NEL and CSI
        ("a\u2028b\u202ec\u2066", "a\\u2028b\\u202ec\\u2066"),  # line sep., bidi controls
        ("\udcff", "\\udcff"),  # a lone surrogate, as surrogateescape leaves them
        ("münchen.example [x] \\x1b", "münchen.example [x] \\x1b"),  # left as it is
    ],
)
def test_printable_shows_what_could_act_on_a_terminal_as_visible_escapes(
    text: str, shown: str
) -> None:
    assert printable(text) == shown
