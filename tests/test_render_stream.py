"""The streaming report: rows are written as the states come, and a failure keeps them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator

import pytest

from report_support import fabrikam_state
from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.errors import InvalidValueError, StoreError
from tbes.policy import Policy
from tbes.render import STREAMED, render_report, write_report
from tbes.state import ServerState

UTC = dt.UTC
POLICY = Policy()
CATALOG = Catalog.default()
NOW = dt.datetime(2026, 3, 15, tzinfo=UTC)
BUILDS = ("15.1.2507.39", "15.2.1748.39", "15.0.1497.48")


def states(count: int) -> list[ServerState]:
    """``count`` servers with a few builds and detection days, in server-id order."""
    return [
        fabrikam_state(
            f"ex{index:04d}.fabrikam.example",
            BUILDS[index % len(BUILDS)],
            None if index % 5 == 0 else dt.datetime(2026, 1, 1 + index % 28, tzinfo=UTC),
            [(dt.date(2026, 2, 1), 3)] if index % 4 == 0 else [],
            status=Compliance.COMPLIANT if index % 5 == 0 else Compliance.OUTDATED,
        )
        for index in range(count)
    ]


def failing_after(count: int, sink: io.StringIO, seen: list[str]) -> Iterator[ServerState]:
    """``count`` states, then a store failure; records what the sink held at each step."""
    for state in states(count):
        seen.append(sink.getvalue())
        yield state
    seen.append(sink.getvalue())
    raise StoreError("the store went away")


@pytest.mark.parametrize("fmt", STREAMED)
def test_rows_read_before_a_failure_are_already_written(fmt: str) -> None:
    sink = io.StringIO()
    seen: list[str] = []
    with pytest.raises(StoreError, match="went away"):
        write_report(
            failing_after(5, sink, seen),
            fmt,
            sink,
            now=NOW,
            policy=POLICY,
            catalog=CATALOG,
            widths_from=2,
        )
    text = sink.getvalue()
    # Every one of the five servers is in the sink although the iterator never ended.
    for index in range(5):
        assert f"ex{index:04d}.fabrikam.example" in text
    if fmt == "csv":
        assert len(list(csv.reader(io.StringIO(text, newline="")))) == 1 + 5
    if fmt == "table":
        assert len(text.splitlines()) == 2 + 5
    if fmt == "json":
        assert text.startswith("[\n")
        assert text.count('"server": ') == 5


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_row_is_written_before_the_next_state_is_read(fmt: str) -> None:
    sink = io.StringIO()
    seen: list[str] = []
    write_report(
        _exhausting(failing_after(4, sink, seen)),
        fmt,
        sink,
        now=NOW,
        policy=POLICY,
        catalog=CATALOG,
    )
    # When state k+1 is asked for, row k is in the sink: nothing waits for the end.
    for index in range(1, 5):
        assert f"ex{index - 1:04d}.fabrikam.example" in seen[index]
        assert f"ex{index:04d}.fabrikam.example" not in seen[index]


def _exhausting(states: Iterator[ServerState]) -> Iterator[ServerState]:
    """The states, stopping at the failure (so the report completes)."""
    try:
        yield from states
    except StoreError:
        return


def test_the_table_holds_only_its_first_page_before_writing() -> None:
    sink = io.StringIO()
    seen: list[str] = []
    write_report(
        _exhausting(failing_after(6, sink, seen)),
        "table",
        sink,
        now=NOW,
        policy=POLICY,
        catalog=CATALOG,
        widths_from=3,
    )
    # seen[k] is the sink as state k is asked for: the first page (three rows) is read
    # before the first line, and is out before the fourth state is read.
    assert seen[:3] == ["", "", ""]
    assert "ex0002.fabrikam.example" in seen[3]
    assert "ex0003.fabrikam.example" not in seen[3]
    assert "ex0003.fabrikam.example" in seen[4]


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "html"])
def test_streamed_report_of_ordered_states_is_render_reports(fmt: str) -> None:
    ordered = states(40)
    sink = io.StringIO()
    write_report(
        iter(ordered),
        fmt,
        sink,
        now=NOW,
        policy=POLICY,
        catalog=CATALOG,
        widths_from=len(ordered),
    )
    assert sink.getvalue() == render_report(
        reversed(ordered), fmt, now=NOW, policy=POLICY, catalog=CATALOG
    )


def test_streamed_json_report_is_one_valid_document() -> None:
    sink = io.StringIO()
    write_report(iter(states(7)), "json", sink, now=NOW, policy=POLICY, catalog=CATALOG)
    data = json.loads(sink.getvalue())
    assert [row["server"] for row in data] == [f"ex{i:04d}.fabrikam.example" for i in range(7)]


def test_an_empty_report_is_a_valid_document_in_every_streamed_format() -> None:
    for fmt in STREAMED:
        sink = io.StringIO()
        write_report(iter(()), fmt, sink, now=NOW, policy=POLICY, catalog=CATALOG)
        assert sink.getvalue() == render_report([], fmt, now=NOW, policy=POLICY, catalog=CATALOG)
    sink = io.StringIO()
    write_report(iter(()), "json", sink, now=NOW, policy=POLICY, catalog=CATALOG)
    assert json.loads(sink.getvalue()) == []


def test_write_report_refuses_an_unknown_format_before_reading() -> None:
    sink = io.StringIO()
    with pytest.raises(InvalidValueError, match="unknown report format"):
        write_report(iter(states(2)), "xml", sink, now=NOW, policy=POLICY, catalog=CATALOG)
    assert sink.getvalue() == ""


def test_table_page_size_must_be_a_count() -> None:
    with pytest.raises(InvalidValueError, match="widths_from"):
        write_report(
            iter(states(2)),
            "table",
            io.StringIO(),
            now=NOW,
            policy=POLICY,
            catalog=CATALOG,
            widths_from=-1,
        )
