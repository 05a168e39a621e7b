"""One state per sending server behind a connector (SPEC section 10, "section 9 identity").

The connector rule's name is the transport identity; each Exchange server behind it is
``NAME/HOST``, the sender hop's ``by`` host. Expected stages come from the SPEC's default
stage table (stage 2 from day 30, one more every 10 days, 8 from day 90; throttle 5 minutes
in stage 2, block 5 minutes from stage 5, 60 in stage 8) and its window rule (offset = first
8 bytes of SHA-256 of the server id, big-endian, mod 60; position r = minute - offset mod 60).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import STORE_KINDS, make_store
from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.decision import Action, Decision
from tbes.enforcer import Connection, Enforcer
from tbes.events import Event, EventKind
from tbes.exemption import Exemption
from tbes.identity import OVERFLOW, Identity, belongs_to, connector_of, host_of, server_key
from tbes.ledger import Pause, PauseLedger
from tbes.notifiers import CallbackNotifier
from tbes.policy import DEFAULT_POLICY, ConnectorKind
from tbes.state import ServerState
from tbes.store import MemoryStore, SQLiteStore, StateStore
from tbes.version import ExchangeBuild

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
TENANT = "fabrikam"
EDGE = "fabrikam-edge"
OLD_HOST = "ex2013.fabrikam.example"
NEW_HOST = "exse.fabrikam.example"
OLD = "15.0.1497.48"  # Exchange 2013 CU23: unsupported
NEW = "15.2.2562.35"  # Exchange SE RTM, December 2025 SU: compliant in 2026
CATALOG = Catalog.default()


def hop(build: str, by: str) -> str:
    """A Received value written by an Exchange server ``by`` running ``build``."""
    return (
        f"from EXMBX01.fabrikam.local (10.0.0.7) by {by} (192.0.2.10) with Microsoft SMTP "
        f"Server id {build}; Mon, 5 Jan 2026 10:00:00 +0000"
    )


def offset(server_id: str) -> int:
    return int.from_bytes(hashlib.sha256(server_id.encode()).digest()[:8], "big") % 60


def at(day: int, server_id: str, r: int, hour: int = 10) -> dt.datetime:
    """``hour``:00 UTC ``day`` days after T0, moved to window position ``r`` of the server."""
    return (T0 + dt.timedelta(days=day)).replace(hour=hour, minute=(offset(server_id) + r) % 60)


def expected_stage(day: int) -> int:
    return 1 if day < 30 else min(8, 2 + (day - 30) // 10)


def connection(name: str = EDGE, identity: Identity = Identity.SERVER) -> Connection:
    return Connection(
        name, TENANT, ConnectorKind.ON_PREMISES, "192.0.2.10", connector=name, identity=identity
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    made = make_store(request, request.param, tmp_path / "tbes.db")
    yield made
    made.close()


def enforcer_on(store: StateStore, clock: Clock, events: list[Event], **kw: object) -> Enforcer:
    return Enforcer(
        store,
        DEFAULT_POLICY,
        CATALOG,
        clock=clock,
        notifier=CallbackNotifier(events.append),
        **kw,  # type: ignore[arg-type]
    )


def test_an_old_and_a_new_server_behind_one_connector_are_enforced_apart(
    store: StateStore,
) -> None:
    clock, events = Clock(), list[Event]()
    enforcer = enforcer_on(store, clock, events)
    conn = connection()
    old_id, new_id = f"{EDGE}/{OLD_HOST}", f"{EDGE}/{NEW_HOST}"
    for day in range(120):
        # The new server sends all day long, before and after the old one's two messages.
        for hour in (7, 9, 13, 17):
            clock.now = at(day, new_id, 0, hour)
            new = enforcer.check(conn, [hop(NEW, NEW_HOST.upper() + ".")])
            assert new.action is Action.ACCEPT, (day, hour, new)
            assert new.stage is None
        stage = expected_stage(day)
        clock.now = at(day, old_id, 0, 10)  # the first minute of its window
        first = enforcer.check(conn, [hop(OLD, OLD_HOST)])
        clock.now = at(day, old_id, 59, 11)  # the last minute of its window
        last = enforcer.check(conn, [hop(OLD, OLD_HOST)])
        assert first.stage is not None, day
        assert first.stage.number == stage, (day, first)
        if stage == 1:
            assert (first.action, last.action) == (Action.ACCEPT, Action.ACCEPT), day
        elif stage < 5:
            assert (first.action, last.action) == (Action.THROTTLE, Action.ACCEPT), day
        elif stage < 8:
            assert (first.action, last.action) == (Action.BLOCK, Action.ACCEPT), day
        else:
            assert (first.action, last.action) == (Action.BLOCK, Action.BLOCK), day
    assert {state.server_id for state in store.states()} == {old_id, new_id}
    old = store.get(old_id)
    assert old is not None
    assert old.value.first_detected == at(0, old_id, 0, 10)
    assert old.value.compliant_since is None
    new_state = store.get(new_id)
    assert new_state is not None
    assert new_state.value.first_detected is None
    assert new_state.value.status is Compliance.COMPLIANT
    kinds = [(event.server_id, event.kind) for event in events]
    assert all(server == old_id for server, _ in kinds)  # the new one was never detected
    assert EventKind.REMEDIATED not in {kind for _, kind in kinds}
    assert (old_id, EventKind.DETECTED) in kinds
    assert (old_id, EventKind.FULLY_BLOCKED) in kinds


def test_a_message_without_evidence_gets_the_most_severe_answer_of_the_active_servers(
    store: StateStore,
) -> None:
    clock, events = Clock(), list[Event]()
    enforcer = enforcer_on(store, clock, events)
    conn = connection()
    old_id, new_id = f"{EDGE}/{OLD_HOST}", f"{EDGE}/{NEW_HOST}"
    clock.now = at(0, old_id, 30)
    enforcer.check(conn, [hop(OLD, OLD_HOST)])
    for day in range(1, 95):
        clock.now = at(day, old_id, 30, hour=8)
        enforcer.check(conn, [hop(NEW, NEW_HOST)])
        enforcer.check(conn, [hop(OLD, OLD_HOST)])
    stripped = [
        "from relay.fabrikam.example (192.0.2.10) by mx.receiver.example with ESMTPS; "
        "Mon, 5 Jan 2026 10:00:00 +0000"
    ]
    clock.now = at(94, old_id, 0, hour=12)  # stage 8: the old server is blocked all hour
    assert enforcer.check(conn, []).action is Action.BLOCK
    assert enforcer.check(conn, stripped).action is Action.BLOCK
    # Postfix's RCPT check: the new server would be accepted, so nothing is certain.
    assert enforcer.check_envelope(conn).action is Action.ACCEPT
    # Nothing was recorded about an unknown sender.
    assert {state.server_id for state in store.states()} == {old_id, new_id}
    # The old server goes quiet; a month after its last message it stops counting.
    clock.now = at(94 + 31, old_id, 0, hour=12)
    assert enforcer.check(conn, []).action is Action.ACCEPT


def test_the_envelope_check_refuses_only_when_every_active_server_would_be(
    store: StateStore,
) -> None:
    clock, events = Clock(), list[Event]()
    enforcer = enforcer_on(store, clock, events)
    conn = connection()
    a_id, b_id = f"{EDGE}/a.fabrikam.example", f"{EDGE}/b.fabrikam.example"
    for day in range(0, 95, 5):
        clock.now = at(day, a_id, 0)
        enforcer.check(conn, [hop(OLD, "a.fabrikam.example")])
        enforcer.check(conn, [hop(OLD, "b.fabrikam.example")])
    clock.now = at(95, a_id, 0)  # both in stage 8: blocked all hour
    envelope = enforcer.check_envelope(conn)
    assert envelope.action is Action.BLOCK
    assert envelope.reply is not None
    assert envelope.reply.code == 550
    # Paused, one of them would be accepted: a refusal at RCPT is no longer certain, so its
    # mail is not refused before its headers are seen ...
    enforcer.pause(TENANT, b_id, 3)
    assert enforcer.check_envelope(conn).action is Action.ACCEPT
    assert enforcer.check(conn, [hop(OLD, "b.fabrikam.example")]).paused
    # ... while a message without headers still gets the other's answer: a paused server
    # shields nobody.
    assert enforcer.check(conn, []).action is Action.BLOCK


def test_servers_past_max_servers_share_the_overflow_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, events = Clock(), list[Event]()
    store = MemoryStore()
    enforcer = enforcer_on(store, clock, events, max_servers=2)
    conn = connection()
    with caplog.at_level(logging.WARNING, logger="tbes.enforcer"):
        for host in ("a.example", "b.example", "c.example", "d.example", "a.example"):
            enforcer.check(conn, [hop(OLD, host)])
    ids = {state.server_id for state in store.states()}
    assert ids == {f"{EDGE}/a.example", f"{EDGE}/b.example", f"{EDGE}/{OVERFLOW}"}
    warnings = [r for r in caplog.records if "max_servers" in r.getMessage()]
    assert len(warnings) == 1


def test_the_same_host_behind_two_connectors_is_two_servers() -> None:
    clock, events = Clock(), list[Event]()
    store = MemoryStore()
    enforcer = enforcer_on(store, clock, events)
    enforcer.check(connection("edge-a"), [hop(OLD, OLD_HOST)])
    enforcer.check(connection("edge-b"), [hop(OLD, OLD_HOST)])
    assert {s.server_id for s in store.states()} == {f"edge-a/{OLD_HOST}", f"edge-b/{OLD_HOST}"}


def test_connector_identity_keeps_one_state_per_connector() -> None:
    clock, events = Clock(), list[Event]()
    store = MemoryStore()
    enforcer = enforcer_on(store, clock, events)
    conn = connection(identity=Identity.CONNECTOR)
    enforcer.check(conn, [hop(OLD, OLD_HOST)])
    enforcer.check(conn, [hop(OLD, NEW_HOST)])
    assert [s.server_id for s in store.states()] == [EDGE]


def test_many_new_non_compliant_names_in_a_day_log_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, events = Clock(), list[Event]()
    enforcer = enforcer_on(MemoryStore(), clock, events)
    conn = connection()
    with caplog.at_level(logging.WARNING, logger="tbes.enforcer"):
        for number in range(10):
            enforcer.check(conn, [hop(OLD, f"ex{number}.fabrikam.example")])
        assert not [r for r in caplog.records if "new non-compliant" in r.getMessage()]
        for number in range(10, 15):
            enforcer.check(conn, [hop(OLD, f"ex{number}.fabrikam.example")])
    warnings = [r for r in caplog.records if "new non-compliant" in r.getMessage()]
    assert len(warnings) == 1
    assert EDGE in warnings[0].getMessage()


# ---- stores written before states were kept per server -------------------------------------


def _v1_store(path: Path, first: dt.datetime, pause_start: dt.date | None) -> None:
    """A store as today's API writes it: one state keyed by the connector's name."""
    store = SQLiteStore(path)
    state = ServerState(
        EDGE,
        TENANT,
        ExchangeBuild.parse(OLD),
        Compliance.UNSUPPORTED,
        first,
        first + dt.timedelta(days=95),
        None,
        notified_stage=8,
    )
    if pause_start is not None:
        ledger = PauseLedger(TENANT, 90).grant(EDGE, pause_start, 5, today=pause_start)
        store.put_ledger(ledger, expected_version=None)
        state = ServerState(
            EDGE, TENANT, state.build, state.status, first, state.last_seen, None,
            pauses=ledger.covering(EDGE), notified_stage=8,
        )  # fmt: skip
    store.put(state, expected_version=None)
    store.close()


def test_an_upgraded_store_frees_no_blocked_server(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    first = T0 - dt.timedelta(days=100)
    _v1_store(path, first, None)
    clock, events = Clock(), list[Event]()
    store = SQLiteStore(path)
    enforcer = enforcer_on(store, clock, events)
    conn = connection()
    old_id = f"{EDGE}/{OLD_HOST}"
    clock.now = at(0, old_id, 59)
    # The old server keeps the connector's episode: day 100, fully blocked.
    decision = enforcer.check(conn, [hop(OLD, OLD_HOST)])
    assert decision.action is Action.BLOCK
    assert decision.stage is not None
    assert decision.stage.number == 8
    stored = store.get(old_id)
    assert stored is not None
    assert stored.value.first_detected == first
    # A compliant server behind it starts no episode and is accepted.
    assert enforcer.check(conn, [hop(NEW, NEW_HOST)]).action is Action.ACCEPT
    # The old row still counts for messages without evidence until it goes stale.
    assert enforcer.check(conn, []).action is Action.BLOCK
    store.close()


def test_an_upgraded_store_keeps_the_connectors_pauses(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    first = T0 - dt.timedelta(days=100)
    _v1_store(path, first, T0.date())
    clock, events = Clock(), list[Event]()
    store = SQLiteStore(path)
    enforcer = enforcer_on(store, clock, events)
    conn = connection()
    old_id = f"{EDGE}/{OLD_HOST}"
    clock.now = at(0, old_id, 59)
    paused = enforcer.check(conn, [hop(OLD, OLD_HOST)])
    assert (paused.action, paused.paused) == (Action.ACCEPT, True)
    # After the pause (5 days) the server is blocked again, its clock moved by the pause.
    clock.now = at(6, old_id, 59)
    after = enforcer.check(conn, [hop(OLD, OLD_HOST)])
    assert after.action is Action.BLOCK
    stored = store.get(old_id)
    assert stored is not None
    assert stored.value.first_detected == first
    assert stored.value.pauses == (Pause(old_id, T0.date(), 5),)
    store.close()


def test_a_server_first_seen_compliant_inherits_nothing(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _v1_store(path, T0 - dt.timedelta(days=100), None)
    clock, events = Clock(), list[Event]()
    store = SQLiteStore(path)
    enforcer = enforcer_on(store, clock, events)
    enforcer.check(connection(), [hop(NEW, NEW_HOST)])
    stored = store.get(f"{EDGE}/{NEW_HOST}")
    assert stored is not None
    assert stored.value.first_detected is None
    store.close()


# ---- canonical ids ------------------------------------------------------------------------


@given(connector=st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), host=st.text())
def test_a_canonical_id_is_its_connector_and_a_safe_host(connector: str, host: str) -> None:
    key = server_key(connector, host)
    assert connector_of(key) == connector
    assert belongs_to(key, connector)
    part = host_of(key)
    assert part is not None
    assert part == OVERFLOW or (
        part == host.rstrip(".").lower() and part.isascii() and "/" not in part
    )
    assert all(c.isprintable() and not c.isspace() for c in key)


def test_host_names_are_lower_cased_without_the_trailing_dot() -> None:
    assert server_key("edge", "EX01.Fabrikam.Example.") == "edge/ex01.fabrikam.example"
    assert server_key("edge", None) == f"edge/{OVERFLOW}"
    assert server_key("edge", "~overflow") == f"edge/{OVERFLOW}"
    assert not belongs_to("edge-2/x", "edge")
    assert host_of("edge") is None


def test_a_decision_is_a_decision() -> None:
    # The envelope check refuses arguments of the wrong kind like check.
    enforcer = Enforcer(MemoryStore(), DEFAULT_POLICY, CATALOG)
    with pytest.raises(Exception, match="conn must be a Connection"):
        enforcer.check_envelope("edge")  # type: ignore[arg-type]
    assert isinstance(enforcer.check_envelope(connection()), Decision)


def test_a_pause_of_the_connector_level_id_reaches_the_servers_behind_it(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _v1_store(path, T0 - dt.timedelta(days=100), None)
    clock, events = Clock(), list[Event]()
    store = SQLiteStore(path)
    enforcer = enforcer_on(store, clock, events)
    conn = connection()
    old_id = f"{EDGE}/{OLD_HOST}"
    clock.now = at(0, old_id, 59)
    assert enforcer.check(conn, [hop(OLD, OLD_HOST)]).action is Action.BLOCK
    enforcer.pause(TENANT, EDGE, 3)  # the id an operator knew before the upgrade
    stored = store.get(old_id)
    assert stored is not None
    assert stored.value.pauses == (Pause(old_id, clock.now.date(), 3),)
    assert enforcer.check(conn, [hop(OLD, OLD_HOST)]).paused
    store.close()


def test_an_exempt_server_is_not_active_for_messages_without_evidence() -> None:
    clock, events = Clock(), list[Event]()
    store = MemoryStore()
    exempt = Exemption("migration partner", connector=EDGE, server=OLD_HOST)
    enforcer = enforcer_on(store, clock, events, exemptions=[exempt])
    plain = enforcer_on(store, clock, events)
    conn = connection()
    old_id = f"{EDGE}/{OLD_HOST}"
    for day in range(0, 95, 5):
        clock.now = at(day, old_id, 30)
        enforcer.check(conn, [hop(OLD, OLD_HOST)])
    clock.now = at(95, old_id, 0)  # stage 8 by its own clock without the exemption
    # Without the exemption the old server is active and blocks header-less mail ...
    assert plain.check(conn, []).action is Action.BLOCK
    assert plain.check_envelope(conn).action is Action.BLOCK
    # ... exempt, it is accepted and no longer decides for the servers it does not name.
    assert enforcer.check(conn, [hop(OLD, OLD_HOST)]).exempt
    assert enforcer.check(conn, []).action is Action.ACCEPT
    assert enforcer.check_envelope(conn).action is Action.ACCEPT


_BUILDS = (OLD, NEW, "15.1.2507.39", "15.1.2507.61", "16.0.0.0")


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 2),  # which server sends
            st.sampled_from(_BUILDS),  # the build it writes (upgrades and forgeries included)
            st.integers(0, 15 * 24 * 60),  # minutes since the previous message
        ),
        max_size=40,
    )
)
def test_each_server_behind_a_connector_is_stored_as_if_it_sent_alone(
    steps: list[tuple[int, str, int]],
) -> None:
    hosts = ("ex0.fabrikam.example", "ex1.fabrikam.example", "ex2.fabrikam.example")
    conn = connection()
    clock, events = Clock(), list[Event]()
    shared = MemoryStore()
    enforcer = enforcer_on(shared, clock, events)
    # The reference: each server alone behind the connector, in a store of its own.
    alone = [(Clock(), MemoryStore(), list[Event]()) for _ in hosts]
    references = [enforcer_on(store, own, told) for own, store, told in alone]
    now = T0
    for index, build, minutes in steps:
        now += dt.timedelta(minutes=minutes)
        clock.now = alone[index][0].now = now
        received = [hop(build, hosts[index])]
        assert enforcer.check(conn, received) == references[index].check(conn, received)
    for index, host in enumerate(hosts):
        server_id = f"{EDGE}/{host}"
        _, store, told = alone[index]
        assert shared.get(server_id) == store.get(server_id)
        assert [e for e in events if e.server_id == server_id] == told


def test_ending_the_pause_of_a_compliant_server_does_not_announce_enforcement() -> None:
    clock, events = Clock(), list[Event]()
    enforcer = enforcer_on(MemoryStore(), clock, events)
    conn = connection()
    new_id = f"{EDGE}/{NEW_HOST}"
    enforcer.check(conn, [hop(NEW, NEW_HOST)])
    enforcer.pause(TENANT, new_id, 5)
    enforcer.end_pause(TENANT, new_id)
    enforcer.pause_tenant(TENANT, 3)
    enforcer.unpause_tenant(TENANT)
    resumed = [event.detail for event in events if event.kind is EventKind.RESUMED]
    assert len(resumed) == 2
    assert all("enforcement resumes" not in detail for detail in resumed)
    assert all("not enforced" in detail for detail in resumed)
