"""Properties of the text table and the CSV over arbitrary text in server ids and tenants:
one line (one CSV record) per server, no raw control character, no formula-like cell; and
the streaming writers give the same text as the whole-list renderers."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import attrs
from hypothesis import given
from hypothesis import strategies as st

from tbes.compliance import Compliance
from tbes.render import (
    render_csv,
    render_html,
    render_json,
    render_text,
    write_csv,
    write_json,
    write_text,
)
from tbes.render._common import printable
from tbes.render.csv import COLUMNS
from tbes.render.json import dumps
from tbes.report import ReportRow
from tbes.serde import converter, loads
from tbes.version import ExchangeBuild

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
RAW_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
FIRST = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

# Any text, with the characters that break lines, act on terminals or start formulas common.
texts = st.text(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from("=+-@\t\r\n\x1b\x9b\x7f\u2028\u202e,\"'[]"),
    ),
    min_size=1,
    max_size=20,
)


def row(server: str, tenant: str, control: str | None = None) -> ReportRow:
    return ReportRow(
        server=server,
        tenant=tenant,
        build=ExchangeBuild(15, 1, 2507, 39),
        product=ExchangeBuild(15, 1, 2507, 39).product,
        status=Compliance.OUTDATED,
        first_detected=FIRST,
        last_seen=FIRST,
        recommended=(ExchangeBuild(15, 1, 2507, 61),),
        throttle_enabled=None,
        blocking_enabled=None,
        full_block=None,
        stage=None,
        next_stage_throttle=None,
        next_stage_block=None,
        next_stage_start=None,
        paused_until=None,
        control=control,
    )


# Server ids with a connector part too, as CONNECTOR/HOST.
server_ids = texts | st.builds(lambda c, h: f"{c}/{h}", texts, texts)
rows = st.lists(st.builds(row, server_ids, texts, st.none() | texts), max_size=5)


@given(rows)
def test_csv_lines_are_what_the_standard_librarys_writer_writes_for_the_same_cells(
    report: list[ReportRow],
) -> None:
    text = render_csv(report)
    records = list(csv.reader(io.StringIO(text, newline="")))
    assert [len(record) for record in records] == [len(COLUMNS)] * (1 + len(report))
    for record, source in zip(records[1:], report, strict=True):
        # The foreign cells read back as they were given, escaped and quoted for a formula.
        for column, value in (("server", source.server), ("tenant", source.tenant)):
            shown = printable(value)
            assert record[COLUMNS.index(column)] == (
                "'" + shown if value.startswith(FORMULA_STARTS) else shown
            )
    reference = io.StringIO()
    csv.writer(reference).writerows(records)
    assert text == reference.getvalue()


@given(rows)
def test_csv_has_one_record_and_one_line_per_server_and_no_formula_cell(
    report: list[ReportRow],
) -> None:
    text = render_csv(report)
    records = list(csv.reader(io.StringIO(text, newline="")))
    assert len(records) == 1 + len(report)
    assert all(len(record) == len(COLUMNS) for record in records)
    # Each record is one physical line: no quoted line break inside a cell.
    assert len(text.split("\r\n")) == 2 + len(report)
    assert RAW_CONTROL.search(text.replace("\r\n", "")) is None
    for record in records[1:]:
        for cell in record:
            assert not cell.startswith(FORMULA_STARTS), cell
            assert RAW_CONTROL.search(cell) is None, cell
    for record, source in zip(records[1:], report, strict=True):
        # A cell is the server id itself unless that needed an escape or a leading quote.
        if RAW_CONTROL.search(source.server) is None and not source.server.startswith(
            FORMULA_STARTS
        ):
            assert record[COLUMNS.index("server")] == source.server


@given(rows)
def test_text_table_has_one_line_per_server_and_no_raw_control_character(
    report: list[ReportRow],
) -> None:
    text = render_text(report)
    assert len(text.splitlines()) == 2 + len(report)
    assert RAW_CONTROL.search(text.replace("\n", "")) is None


@given(rows)
def test_html_page_has_no_raw_control_character(report: list[ReportRow]) -> None:
    page = render_html(report, {}, now=FIRST)
    assert RAW_CONTROL.search(page.replace("\n", "")) is None


@given(rows)
def test_json_reads_back_as_the_same_rows_and_writes_no_raw_control_character(
    report: list[ReportRow],
) -> None:
    text = render_json(report)
    assert loads(text, list[ReportRow]) == report
    assert RAW_CONTROL.search(text.replace("\n", "")) is None


class Recorder:
    """A sink that keeps each write apart, to see what was written when."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    @property
    def text(self) -> str:
        return "".join(self.writes)


@given(rows)
def test_streamed_json_is_the_whole_list_dumped_as_one_document(report: list[ReportRow]) -> None:
    sink = Recorder()
    write_json(iter(report), sink)
    # The reference is json.dumps of the whole list at once, as the report was made before
    # it streamed.
    whole = converter.unstructure(report, list[ReportRow])
    assert sink.text == dumps(whole, sort_keys=False) + "\n"
    assert sink.text == render_json(report)
    assert len(sink.writes) == len(report) + 1  # one write per row, one to close the array


@given(rows)
def test_streamed_csv_is_the_whole_list_rendered(report: list[ReportRow]) -> None:
    sink = Recorder()
    write_csv(iter(report), sink)
    assert sink.text == render_csv(report)
    assert len(sink.writes) == 1 + len(report)  # the header, then one write per row


@given(rows, st.integers(0, 6))
def test_streamed_text_table_keeps_every_cell_and_one_line_per_row(
    report: list[ReportRow], widths_from: int
) -> None:
    sink = Recorder()
    write_text(iter(report), sink, widths_from=widths_from)
    if widths_from >= len(report):
        assert sink.text == render_text(report)
    lines = sink.text.splitlines()
    assert len(lines) == 2 + len(report)
    whole = render_text(report).splitlines()
    assert set(lines[1]) <= {"-", " "}  # the rule under the headings
    for streamed, aligned in zip(lines[:1] + lines[2:], whole[:1] + whole[2:], strict=True):
        # The same cells in the same order; only the padding between them may differ.
        assert streamed.split() == aligned.split()


# Ids of the characters the CSV writer passes through unescaped, '/' and '-' included.
plain_ids = st.text(st.sampled_from("ab.Z9_-/"), min_size=1, max_size=12)


@given(st.lists(st.builds(row, plain_ids | server_ids, texts), max_size=5))
def test_every_cell_of_a_server_id_reads_back_escaped_and_guarded_against_formulas(
    report: list[ReportRow],
) -> None:
    # The writer passes plain ids through as they stand and sends others through the escape;
    # either way, each of the id's three cells is what the escape and the formula rule make.
    records = list(csv.reader(io.StringIO(render_csv(report), newline="")))
    for record, source in zip(records[1:], report, strict=True):
        for column, value in (
            ("ServerFQDN", source.server_fqdn),
            ("connector", source.connector),
            ("server", source.server),
        ):
            shown = printable(value)
            assert record[COLUMNS.index(column)] == (
                "'" + shown if value.startswith(FORMULA_STARTS) else shown
            )


OFFSETS = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=2)), dt.timezone.min])


@given(st.lists(st.tuples(st.integers(0, 3), OFFSETS), min_size=1, max_size=8))
def test_each_instant_is_written_at_its_own_offset_however_often_it_recurs(
    instants: list[tuple[int, dt.tzinfo]],
) -> None:
    # Equal instants at different offsets are equal datetimes; the writer remembers texts of
    # instants, and must not give one the text of another.
    times = [(FIRST + dt.timedelta(hours=hours)).astimezone(zone) for hours, zone in instants]
    report = [attrs.evolve(row("s", "t"), first_detected=at, last_seen=at) for at in times]
    records = list(csv.reader(io.StringIO(render_csv(report), newline="")))
    for record, at in zip(records[1:], times, strict=True):
        assert record[COLUMNS.index("FirstDetectedDate")] == at.isoformat()
        assert record[COLUMNS.index("last_seen")] == at.isoformat()


UTC_INSTANTS = st.datetimes(
    min_value=dt.datetime(1, 1, 1),
    max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
    timezones=st.just(dt.UTC),
) | st.builds(  # days and times of day that recur, in other pairs
    dt.datetime.combine,
    st.sampled_from([dt.date(1, 1, 1), dt.date(2026, 11, 3), dt.date(9999, 12, 31)]),
    st.sampled_from([dt.time(0, 0), dt.time(9, 17, 31, 250000), dt.time(23, 59, 59, 1)]),
    st.just(dt.UTC),
)


@given(st.lists(st.lists(UTC_INSTANTS, min_size=7, max_size=7), min_size=1, max_size=6))
def test_every_instant_in_utc_is_written_as_isoformat_writes_it(
    instants: list[list[dt.datetime]],
) -> None:
    # The writer puts an instant in UTC together from its day's and its time of day's texts
    # (remembered across rows); the cell must be isoformat's, microseconds or none, any year.
    report = [
        attrs.evolve(
            row("s", "t"),
            first_detected=first,
            last_seen=last,
            throttle_enabled=throttle,
            blocking_enabled=block,
            full_block=full,
            next_stage_start=following,
            paused_until=paused,
        )
        for first, last, throttle, block, full, following, paused in instants
    ]
    records = list(csv.reader(io.StringIO(render_csv(report), newline="")))
    columns = (
        *("FirstDetectedDate", "last_seen", "ThrottleEnabledDate", "BlockingEnabledDate"),
        *("fully_blocked", "NextStageStartDate", "paused_until"),
    )
    for record, times in zip(records[1:], instants, strict=True):
        for column, at in zip(columns, times, strict=True):
            assert record[COLUMNS.index(column)] == at.isoformat()
