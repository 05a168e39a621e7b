"""Events (SPEC section 10, "section 9 events"): RELAPSED, what every event carries, its id."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tbes.adapters.config import parse_config
from tbes.catalog import Catalog
from tbes.compliance import Assessment, Compliance
from tbes.enforcer import Connection, Enforcer
from tbes.errors import InvalidValueError, NaiveDatetimeError
from tbes.events import (
    NOTICE_KINDS,
    Event,
    EventKind,
    advance_notices,
    announce,
    announcement,
    event_id,
)
from tbes.ledger import Pause
from tbes.notifiers import CallbackNotifier
from tbes.policy import DEFAULT_POLICY, ConnectorKind, Policy
from tbes.state import ServerState, observe
from tbes.store import MemoryStore
from tbes.version import ExchangeBuild, Product

T0 = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
OUTDATED = ExchangeBuild.parse("15.1.2507.39")
COMPLIANT = ExchangeBuild.parse("15.1.2507.61")
WINDOW = DEFAULT_POLICY.relapse_window  # 30 days


def seen(
    state: ServerState | None, build: ExchangeBuild, at: dt.datetime, policy: Policy
) -> tuple[ServerState, tuple[Event, ...]]:
    """One write, as the enforcer makes it: observe, announce, store what the announcement says."""
    status = Compliance.COMPLIANT if build == COMPLIANT else Compliance.OUTDATED
    observed = observe(
        state,
        server_id="EX01",
        tenant="contoso",
        assessment=Assessment(status, Product.EXCHANGE_2016, None, (), status.value),
        build=build,
        at=at,
        policy=policy,
    )
    told = announcement(state, observed, policy, at, connector="edge")
    return told.state, told.events


def remediated_on_day_40() -> ServerState:
    state, _ = seen(None, OUTDATED, T0, DEFAULT_POLICY)
    state, _ = seen(state, OUTDATED, T0 + 35 * DAY, DEFAULT_POLICY)
    state, events = seen(state, COMPLIANT, T0 + 40 * DAY, DEFAULT_POLICY)
    assert [e.kind for e in events] == [EventKind.REMEDIATED]
    return state


@pytest.mark.parametrize("after", [DAY, WINDOW - DAY, WINDOW])
def test_a_relapse_within_the_window_is_one_relapsed_and_no_detected(after: dt.timedelta) -> None:
    remediated = remediated_on_day_40()
    state, events = seen(remediated, OUTDATED, T0 + 40 * DAY + after, DEFAULT_POLICY)
    assert [e.kind for e in events].count(EventKind.RELAPSED) == 1
    assert EventKind.DETECTED not in [e.kind for e in events]
    relapsed = events[0]
    assert relapsed.kind is EventKind.RELAPSED
    assert relapsed.episode_start == T0  # the old episode resumes
    assert state.first_detected == T0
    assert state.in_episode
    # Told once: the same build a minute later is no news.
    _, again = seen(
        state, OUTDATED, T0 + 40 * DAY + after + dt.timedelta(minutes=1), DEFAULT_POLICY
    )
    assert again == ()


def test_a_relapse_after_the_window_is_a_new_detection() -> None:
    remediated = remediated_on_day_40()
    at = T0 + 40 * DAY + WINDOW + dt.timedelta(seconds=1)
    state, events = seen(remediated, OUTDATED, at, DEFAULT_POLICY)
    assert [(e.kind, e.stage) for e in events] == [(EventKind.DETECTED, 1)]
    assert events[0].episode_start == state.first_detected == at


def test_every_event_carries_tenant_connector_server_build_stage_and_next_change() -> None:
    state, detected = seen(None, OUTDATED, T0, DEFAULT_POLICY)
    (event,) = detected
    assert (event.tenant, event.connector, event.server_id) == ("contoso", "edge", "EX01")
    assert (event.build, event.stage) == (OUTDATED, 1)
    assert event.next_change == T0 + 30 * DAY  # stage 2 of the default table starts on day 30
    _, terminal = seen(state, OUTDATED, T0 + 95 * DAY, DEFAULT_POLICY)
    assert [(e.kind, e.stage, e.next_change) for e in terminal] == [
        (EventKind.STAGE_CHANGED, 8, None),  # the terminal stage never ends
        (EventKind.BLOCKING_STARTED, 8, None),
        (EventKind.FULLY_BLOCKED, 8, None),
    ]


def test_the_enforcer_names_the_connection_s_connector_and_pauses_delay_the_next_change() -> None:
    heard: list[Event] = []
    clock = [T0]
    enforcer = Enforcer(
        MemoryStore(),
        DEFAULT_POLICY,
        Catalog.default(),
        clock=lambda: clock[0],
        notifier=CallbackNotifier(heard.append),
    )
    conn = Connection("EX01", "contoso", ConnectorKind.ON_PREMISES, connector="fabrikam edge")
    hop = (
        "from mbx.fabrikam.local (10.0.0.7) by EX01 (192.0.2.10) with Microsoft SMTP Server "
        "(version=TLS1_2) id 15.1.2507.39; Mon, 5 Jan 2026 10:00:00 +0000"
    )
    enforcer.check(conn, [hop])
    enforcer.pause("contoso", "EX01", 10, start=dt.date(2026, 1, 6))  # wholly after T0
    detected, paused = heard
    assert (detected.kind, detected.connector) == (EventKind.DETECTED, "fabrikam edge")
    assert (paused.kind, paused.connector) == (EventKind.PAUSED, None)  # no connection
    assert detected.next_change is not None
    assert paused.next_change == detected.next_change + 10 * DAY  # the clock stands 10 days


def test_pause_events_of_a_server_behind_a_connector_name_its_connector() -> None:
    # Every event carries its connector (issue 15 item 5): a pause has no connection, but
    # the canonical id CONNECTOR/HOST says where the server sends from.
    heard: list[Event] = []
    enforcer = Enforcer(
        MemoryStore(),
        DEFAULT_POLICY,
        Catalog.default(),
        clock=lambda: T0,
        notifier=CallbackNotifier(heard.append),
    )
    server = "fabrikam-edge/ex01.fabrikam.example"
    conn = Connection(server, "contoso", ConnectorKind.ON_PREMISES, connector="fabrikam-edge")
    hop = (
        "from mbx.fabrikam.local (10.0.0.7) by ex01.fabrikam.example (192.0.2.10) with "
        "Microsoft SMTP Server (version=TLS1_2) id 15.1.2507.39; Mon, 5 Jan 2026 10:00:00 +0000"
    )
    enforcer.check(conn, [hop])
    enforcer.pause("contoso", server, 10, start=dt.date(2026, 1, 6))
    enforcer.end_pause("contoso", server)
    enforcer.pause_tenant("contoso", 5, start=dt.date(2026, 1, 6))
    enforcer.unpause_tenant("contoso")
    kinds = [EventKind.DETECTED, EventKind.PAUSED, EventKind.RESUMED]
    assert [e.kind for e in heard] == [*kinds, EventKind.PAUSED, EventKind.RESUMED]
    assert [e.connector for e in heard] == ["fabrikam-edge"] * 5
    assert all(e.tenant == "contoso" and e.server_id == server for e in heard)
    assert all(e.build == OUTDATED and e.stage == 1 for e in heard)
    assert all(e.next_change is not None for e in heard)


def test_a_configured_connector_rule_names_the_connection_s_connector() -> None:
    config = parse_config(
        '[[connector]]\nname = "fabrikam edge"\nkind = "on_premises"\ntenant = "fabrikam"\n'
        'networks = ["203.0.113.0/28"]\n'
    )
    matched = config.connection(peer_ip="203.0.113.5", peer_host=None, tls_subject=None)
    unmatched = config.connection(peer_ip="192.0.2.1", peer_host=None, tls_subject=None)
    assert matched.connector == "fabrikam edge"
    assert unmatched.connector is None


# ---- ids ------------------------------------------------------------------------------------

kinds = st.sampled_from(EventKind)
stages = st.none() | st.integers(1, 20)
starts = st.none() | st.datetimes(
    min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 1, 1), timezones=st.just(dt.UTC)
)
servers = st.text(min_size=1, max_size=20).filter(lambda text: _encodes(text))
occasions = st.text(max_size=20).filter(lambda text: _encodes(text))


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@given(server=servers, kind=kinds, start=starts, stage=stages, occasion=occasions)
def test_an_id_is_the_same_however_often_and_wherever_it_is_computed(
    server: str, kind: EventKind, start: dt.datetime | None, stage: int | None, occasion: str
) -> None:
    first = event_id(server, kind, start, stage, occasion)
    assert event_id(server, kind, start, stage, occasion) == first
    if start is not None:  # the same instant in another zone is the same episode
        shifted = start.astimezone(dt.timezone(dt.timedelta(hours=-5)))
        assert event_id(server, kind, shifted, stage, occasion) == first
    assert len(first) == 32
    assert set(first) <= set("0123456789abcdef")


@given(
    one=st.tuples(servers, kinds, starts, stages, occasions),
    other=st.tuples(servers, kinds, starts, stages, occasions),
)
def test_different_events_have_different_ids(
    one: tuple[str, EventKind, dt.datetime | None, int | None, str],
    other: tuple[str, EventKind, dt.datetime | None, int | None, str],
) -> None:
    assert (event_id(*one) == event_id(*other)) == (one == other)


@given(text=st.text(min_size=1, max_size=8).filter(_encodes))
def test_no_field_s_text_can_pass_for_another_s(text: str) -> None:
    # Joining with a plain separator would let "EX01" + "|x" pass for "EX01|" + "x".
    moved = event_id("EX01" + text, EventKind.DETECTED, None, None, "")
    assert moved != event_id("EX01", EventKind.DETECTED, None, None, text)


def test_an_announcement_computed_twice_gives_the_same_ids() -> None:
    remediated = remediated_on_day_40()
    observed = observe(
        remediated,
        server_id="EX01",
        tenant="contoso",
        assessment=Assessment(Compliance.OUTDATED, Product.EXCHANGE_2016, None, (), "old"),
        build=OUTDATED,
        at=T0 + 45 * DAY,
        policy=DEFAULT_POLICY,
    )
    # Two writers racing to store the same change compute the same events, ids included.
    first = announce(remediated, observed, DEFAULT_POLICY, T0 + 45 * DAY)
    second = announce(remediated, observed, DEFAULT_POLICY, T0 + 45 * DAY)
    assert first == second
    assert [e.id for e in first] == [e.id for e in second]


def test_an_event_s_default_id_is_its_event_id() -> None:
    event = Event(EventKind.PAUSED, "EX01", "contoso", T0, 2, None, "paused", episode_start=T0)
    assert event.id == event_id("EX01", EventKind.PAUSED, T0, 2)


# Values of the wrong type, hidden from mypy as a caller's bug would be.
BAD: Any = None
NUMBER: Any = 5
WRONG_ARGUMENTS: list[tuple[Callable[[], object], type[Exception], str]] = [
    (lambda: event_id("", EventKind.DETECTED, None, None), InvalidValueError, "server_id"),
    (lambda: event_id("EX01", BAD, None, None), InvalidValueError, "kind"),
    (lambda: event_id("EX01", EventKind.DETECTED, None, 0), InvalidValueError, "stage"),
    (
        lambda: event_id("EX01", EventKind.DETECTED, dt.datetime(2026, 1, 5), 1),
        NaiveDatetimeError,
        "episode_start",
    ),
    (lambda: event_id("EX01", EventKind.DETECTED, None, 1, BAD), InvalidValueError, "occasion"),
    (
        lambda: announcement(None, remediated_on_day_40(), DEFAULT_POLICY, T0, connector=NUMBER),
        InvalidValueError,
        "connector",
    ),
]


@pytest.mark.parametrize(("call", "error", "named"), WRONG_ARGUMENTS)
def test_wrong_arguments_are_named(
    call: Callable[[], object], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        call()


# ---- advance notices -----------------------------------------------------------------------


def _notices(state: ServerState | None, at: dt.datetime, **kwargs: Any) -> tuple[Event, ...]:
    new, events = seen(state, OUTDATED, at, DEFAULT_POLICY)
    notices = advance_notices(state, new, DEFAULT_POLICY, at, connector="edge", **kwargs)
    if not kwargs:  # the default lead: exactly what the announcement of the write gives
        assert notices == tuple(e for e in events if e.kind in NOTICE_KINDS)
    return notices


def test_a_notice_is_given_by_the_first_write_inside_its_window() -> None:
    state, _ = seen(None, OUTDATED, T0, DEFAULT_POLICY)  # throttling starts at T0 + 30 days
    assert _notices(state, T0 + 23 * DAY - dt.timedelta(minutes=1)) == ()
    state, _ = seen(state, OUTDATED, T0 + 22 * DAY, DEFAULT_POLICY)
    [notice] = _notices(state, T0 + 23 * DAY)
    assert (notice.kind, notice.stage, notice.next_change) == (
        EventKind.THROTTLING_SOON,
        2,
        T0 + 30 * DAY,
    )
    assert notice.id == event_id("EX01", EventKind.THROTTLING_SOON, T0, 2)
    assert notice.connector == "edge"
    # Seen inside the window already: told then, not again; nor once the stage started.
    inside, _ = seen(state, OUTDATED, T0 + 24 * DAY, DEFAULT_POLICY)
    assert _notices(inside, T0 + 25 * DAY) == ()
    assert _notices(state, T0 + 30 * DAY) == ()


def test_blocking_is_announced_a_week_ahead_too_and_the_lead_is_configurable() -> None:
    state, _ = seen(None, OUTDATED, T0, DEFAULT_POLICY)
    state, _ = seen(state, OUTDATED, T0 + 50 * DAY, DEFAULT_POLICY)
    [notice] = _notices(state, T0 + 53 * DAY)
    assert (notice.kind, notice.stage, notice.next_change) == (
        EventKind.BLOCKING_SOON,
        5,
        T0 + 60 * DAY,
    )
    assert _notices(state, T0 + 53 * DAY, notice=3 * DAY) == ()
    assert [n.kind for n in _notices(state, T0 + 57 * DAY, notice=3 * DAY)] == [
        EventKind.BLOCKING_SOON
    ]
    with pytest.raises(InvalidValueError, match="notice"):
        advance_notices(state, state, DEFAULT_POLICY, T0, notice=dt.timedelta(0))


def test_a_pause_moves_the_notice_with_the_start_it_delays() -> None:
    state, _ = seen(None, OUTDATED, T0, DEFAULT_POLICY)
    paused = attrs.evolve(state, pauses=(Pause("EX01", (T0 + 10 * DAY).date(), 10),))
    assert _notices(paused, T0 + 23 * DAY) == ()  # throttling now starts on day 40
    [notice] = _notices(paused, T0 + 33 * DAY)
    assert notice.next_change == T0 + 40 * DAY
    assert notice.id == event_id("EX01", EventKind.THROTTLING_SOON, T0, 2)  # the same event


def test_announcement_without_notices_gives_none() -> None:
    state, _ = seen(None, OUTDATED, T0, DEFAULT_POLICY)
    new, _ = seen(state, OUTDATED, T0 + 23 * DAY, DEFAULT_POLICY)
    told = announcement(state, new, DEFAULT_POLICY, T0 + 23 * DAY, notice=None)
    assert told.events == ()
