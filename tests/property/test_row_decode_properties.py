"""The stores' lean decoder of server rows gives what the full decode (cattrs and the
state's checks) gives, on any state and on rows that are not quite what tbes writes.

The lean decoder (issue 16 part 2, the report of a million servers) only takes rows exactly
as tbes writes them and hands everything else to the full path; so a row decodes to the same
state, or is refused with the same StoreError naming it, whichever path reads it.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tbes.store._rows as rows
from tbes.compliance import Compliance
from tbes.errors import InvalidValueError, StoreError
from tbes.ledger import Pause
from tbes.serde import dumps, loads
from tbes.state import ServerState
from tbes.store import MemoryStore, StateWrite
from tbes.store.base import ROW_SCHEMA
from tbes.version import ExchangeBuild

INSTANTS = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),
    max_value=dt.datetime(2100, 1, 1),
    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=2))]),
)
IDS = st.sampled_from(["ex16.contoso.example", "edge/ex16.contoso.example", "édge/mx", "e"])


@st.composite
def states(draw: st.DrawFn) -> ServerState:
    server = draw(IDS)
    starts = draw(st.lists(st.dates(dt.date(2020, 1, 1), dt.date(2030, 1, 1)), max_size=3))
    return ServerState(
        server_id=server,
        tenant=draw(st.sampled_from(["contoso", "fabrikam", "tenañt", "t"])),
        build=draw(
            st.none()
            | st.builds(
                ExchangeBuild,
                st.integers(6, 16),
                st.integers(0, 30),
                st.integers(0, 3000),
                st.integers(0, 100),
            )
        ),
        status=draw(st.sampled_from(Compliance)),
        first_detected=draw(st.none() | INSTANTS),
        last_seen=draw(st.none() | INSTANTS),
        compliant_since=draw(st.none() | INSTANTS),
        pauses=tuple(Pause(server, start, draw(st.integers(1, 90))) for start in starts),
        notified_stage=draw(st.none() | st.integers(1, 12)),
    )


def full_decode(server_id: str, data: str) -> str:
    """What the full path makes of a row: the state as JSON (instants with their offset,
    which == on datetimes does not compare), or "refused"."""
    try:
        state = loads(data, ServerState)
    except InvalidValueError:
        return "refused"
    return dumps(state) if state.server_id == server_id else "refused"


def stored_decode(server_id: str, data: str) -> str:
    try:
        state = rows.load_state(server_id, ROW_SCHEMA, data)
    except StoreError as exc:
        error = str(exc)
    else:
        assert attrs.evolve(state) == state  # it passes the class's own checks
        return dumps(state)
    assert repr(server_id) in error  # the error names the row
    return "refused"


@given(states())
def test_a_row_tbes_wrote_decodes_to_the_state_it_was_made_from(state: ServerState) -> None:
    decoded = rows.load_state(state.server_id, ROW_SCHEMA, rows.dump_row(state))
    assert decoded == state
    assert attrs.astuple(decoded, recurse=False) == attrs.astuple(state, recurse=False)
    assert attrs.evolve(decoded) == decoded  # it passes the class's own checks


# A change to one key of a row: a value of another type, one out of range, or no key at all.
ODD_VALUES: st.SearchStrategy[Any] = st.sampled_from(
    [
        None,
        "",
        0,
        -1,
        1.5,
        True,
        [],
        {},
        "x",
        "2026-01-01T00:00:00",  # naive
        "2026-01-01T00:00:00+05:00",
        "2026-01-01T00:00:00Z",
        "15.1.2507.39",
        "OUTDATED",
        "not-a-build",
        [{"server_id": "ex16.contoso.example", "start": "2026-01-01", "days": 3}],
        [{"server_id": "other", "start": "2026-01-01", "days": 3}],
        [{"server_id": "ex16.contoso.example", "start": "2026-01-01", "days": 0}],
        [{"server_id": "ex16.contoso.example", "start": "2026-01-01", "days": 3, "x": 1}],
        "\ud800",
    ]
)
KEYS = st.sampled_from([field.name for field in attrs.fields(ServerState)] + ["extra"])


@given(states(), KEYS, ODD_VALUES | st.just("<drop>"))
def test_a_row_with_an_odd_value_decodes_or_is_refused_as_the_full_decode_does(
    state: ServerState, key: str, value: Any
) -> None:
    data: dict[str, Any] = json.loads(dumps(state))
    if value == "<drop>":
        data.pop(key, None)
    else:
        data[key] = value
    text = json.dumps(data)
    assert stored_decode(state.server_id, text) == full_decode(state.server_id, text)


@given(states(), st.sampled_from(["", "{", "[]", "null", '{"server_id": 1}', "[" * 5000]))
def test_text_that_is_no_row_is_refused_naming_the_row(state: ServerState, text: str) -> None:
    assert stored_decode(state.server_id, text) == "refused"


def test_the_lean_decoder_knows_every_field_of_the_state() -> None:
    # A field added to ServerState sends every row through the full path (correct, but the
    # report of a million servers slows several times): teach lean_row the new field.
    assert rows.LEAN_DECODER


def test_a_row_as_tbes_writes_it_is_read_without_the_full_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = ServerState(
        "edge/ex16.contoso.example",
        "contoso",
        ExchangeBuild.parse("15.1.2507.16"),
        Compliance.OUTDATED,
        dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
        dt.datetime(2024, 5, 10, tzinfo=dt.UTC),
        None,
        pauses=(Pause("edge/ex16.contoso.example", dt.date(2024, 4, 1), 5),),
    )
    store = MemoryStore()
    store.put_many([StateWrite(state, None)])

    def no_full_decode(*args: object) -> object:
        raise AssertionError("the full decode ran")

    monkeypatch.setattr(rows, "loads", no_full_decode)
    assert list(store.states()) == [state]
    # A row with an instant at another offset is the full path's (it converts to UTC).
    odd = json.loads(dumps(state))
    odd["last_seen"] = "2024-05-10T02:00:00+02:00"
    with pytest.raises(AssertionError, match="the full decode ran"):
        rows.load_state(state.server_id, ROW_SCHEMA, json.dumps(odd))


@given(states(), st.sampled_from([" ", "\n", "\t ", "\r\n"]), st.sampled_from(["", " ", "x", "{}"]))
def test_a_row_with_white_space_or_more_around_it_reads_as_json_loads_reads_it(
    state: ServerState, before: str, after: str
) -> None:
    # The lean decoder scans the value alone; json.loads allows white space around it.
    for text in (before + dumps(state), dumps(state) + after, before + dumps(state) + after):
        assert stored_decode(state.server_id, text) == full_decode(state.server_id, text)


@given(states(), st.sampled_from([2.0, True, "2", None]))
def test_a_schema_version_that_is_no_int_is_refused_whatever_the_row(
    state: ServerState, schema: object
) -> None:
    # 2.0 == 2: the lean decoder once read such a row, which the full path refuses.
    store = MemoryStore()
    store._rows["server"][state.server_id] = (1, schema, dumps(state))
    for read in (lambda: store.get(state.server_id), lambda: list(store.states())):
        with pytest.raises(StoreError, match="schema version"):
            read()
    with pytest.raises(StoreError, match="schema version"):
        rows.load_state(state.server_id, schema, dumps(state))
