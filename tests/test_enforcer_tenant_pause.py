"""Tenant-wide pauses through the Enforcer: every server, new ones too, one charge per day."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbes.catalog import Catalog
from tbes.decision import Action, Decision, decide
from tbes.enforcer import Connection, Enforcer
from tbes.errors import (
    InvalidPauseError,
    PauseConflictError,
    PauseInPastError,
    QuotaExceededError,
    UnseenServerError,
)
from tbes.events import Event, EventKind
from tbes.ledger import Pause, PauseLedger, TenantPause
from tbes.notifiers import CallbackNotifier
from tbes.policy import DEFAULT_POLICY, ConnectorKind, Policy
from tbes.state import ServerState
from tbes.store import MemoryStore, SQLiteStore, StateStore, Write

UTC = dt.UTC
TENANT = "fabrikam"
EX01, EX02, EX03 = "ex01.fabrikam.example", "ex02.fabrikam.example", "ex03.fabrikam.example"
OTHER = "ex01.contoso.example"
T0 = dt.datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
TODAY = T0.date()
OUTDATED = "15.1.2507.39"  # Exchange 2016 CU23 below the October 2025 SU
CATALOG = Catalog.default()


def hop(server: str, build: str = OUTDATED) -> str:
    return (
        f"from EXMBX01.fabrikam.local (10.0.0.7) by {server} (192.0.2.10) with Microsoft SMTP "
        f"Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id {build}; "
        "Mon, 5 Jan 2026 10:00:00 +0000"
    )


def conn(server: str, tenant: str = TENANT) -> Connection:
    return Connection(server, tenant, ConnectorKind.ON_PREMISES, peer_ip="192.0.2.10")


class Clock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    made: StateStore = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "db")
    yield made
    made.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def enforcer(store: StateStore, clock: Clock, events: list[Event]) -> Enforcer:
    return Enforcer(
        store, DEFAULT_POLICY, CATALOG, clock=clock, notifier=CallbackNotifier(events.append)
    )


def check(enforcer: Enforcer, server: str, tenant: str = TENANT) -> Decision:
    return enforcer.check(conn(server, tenant), [hop(server)])


def stored_pauses(store: StateStore, server: str) -> tuple[Pause, ...]:
    got = store.get(server)
    assert got is not None
    return got.value.pauses


def ledger_of(store: StateStore) -> PauseLedger:
    got = store.get_ledger(TENANT)
    assert got is not None
    return got.value


# ---- granting ----------------------------------------------------------------------------


def test_a_tenant_pause_pauses_every_stored_server_for_one_charge_per_day(
    enforcer: Enforcer, store: StateStore, events: list[Event]
) -> None:
    for server in (EX01, EX02, EX03):
        check(enforcer, server)
    check(enforcer, OTHER, tenant="contoso")
    events.clear()
    ledger = enforcer.pause_tenant(TENANT, 10)
    assert ledger.tenant_pauses == (TenantPause(TODAY, 10),)
    assert ledger.used(2026) == 10  # not 30
    assert ledger_of(store) == ledger
    for server in (EX01, EX02, EX03):
        assert stored_pauses(store, server) == (Pause(server, TODAY, 10),)
        decision = check(enforcer, server)
        assert (decision.action, decision.paused) == (Action.ACCEPT, True)
    assert stored_pauses(store, OTHER) == ()  # another tenant's server is not touched
    assert sorted((e.kind, e.server_id) for e in events) == [
        (EventKind.PAUSED, EX01),
        (EventKind.PAUSED, EX02),
        (EventKind.PAUSED, EX03),
    ]
    assert events[0].detail == (
        f"enforcement of every server of tenant {TENANT} paused for 10 days, "
        "2026-01-05 to 2026-01-14; 10 of 90 pause days used in 2026"
    )


def test_a_server_first_seen_during_a_tenant_pause_is_paused(
    enforcer: Enforcer, store: StateStore, clock: Clock
) -> None:
    enforcer.pause_tenant(TENANT, 10, start=TODAY + dt.timedelta(days=1))
    clock.now = T0 + dt.timedelta(days=3)
    decision = check(enforcer, EX01)
    assert (decision.action, decision.paused) == (Action.ACCEPT, True)
    assert stored_pauses(store, EX01) == (Pause(EX01, TODAY + dt.timedelta(days=1), 10),)
    assert ledger_of(store).used(2026) == 10


def test_a_tenant_pause_freezes_the_clock_as_a_server_pause_does(tmp_path: Path) -> None:
    # Two identical histories, one paused per server and one per tenant, decide alike.
    decisions: dict[str, list[Decision]] = {}
    for kind in ("server", "tenant"):
        clock = Clock()
        enforcer = Enforcer(MemoryStore(), DEFAULT_POLICY, CATALOG, clock=clock)
        check(enforcer, EX01)
        clock.now = T0 + dt.timedelta(days=20)
        if kind == "server":
            enforcer.pause(TENANT, EX01, 15)
        else:
            enforcer.pause_tenant(TENANT, 15)
        decisions[kind] = []
        for day in (21, 34, 35, 36, 44, 45, 46, 50):
            clock.now = T0 + dt.timedelta(days=day, minutes=7)
            decisions[kind].append(check(enforcer, EX01))
    assert decisions["tenant"] == decisions["server"]
    # Stage 2 starts at day 30 of the clock; the 15 paused calendar days (25 January to
    # 8 February) move it to day 45 after detection.
    stages = [d.stage.number if d.stage else None for d in decisions["tenant"]]
    assert stages == [1, 1, 1, 1, 1, 2, 2, 2]
    assert [d.paused for d in decisions["tenant"]] == [True, True, False, False, False] + [
        False
    ] * 3


def test_a_tenant_pause_extends_the_running_one_and_charges_only_new_days(
    enforcer: Enforcer, store: StateStore, clock: Clock
) -> None:
    check(enforcer, EX01)
    enforcer.pause_tenant(TENANT, 10)
    clock.now = T0 + dt.timedelta(days=5)
    ledger = enforcer.pause_tenant(TENANT, 10)  # from the 10th: 5 new days
    assert ledger.tenant_pauses == (TenantPause(TODAY, 15),)
    assert ledger.used(2026) == 15
    assert stored_pauses(store, EX01) == (Pause(EX01, TODAY, 15),)


def test_a_tenant_pause_over_server_pauses_refunds_their_days(
    enforcer: Enforcer, store: StateStore
) -> None:
    for server in (EX01, EX02):
        check(enforcer, server)
        enforcer.pause(TENANT, server, 10)
    assert ledger_of(store).used(2026) == 20
    ledger = enforcer.pause_tenant(TENANT, 10)
    assert (ledger.used(2026), ledger.remaining(2026)) == (10, 80)
    assert ledger.pauses == ()
    for server in (EX01, EX02):
        assert stored_pauses(store, server) == (Pause(server, TODAY, 10),)


def test_a_server_pause_inside_a_tenant_pause_is_refused_and_writes_nothing(
    enforcer: Enforcer, store: StateStore
) -> None:
    check(enforcer, EX01)
    enforcer.pause_tenant(TENANT, 10)
    before = store.get_ledger(TENANT)
    with pytest.raises(PauseConflictError, match="tenant pause of fabrikam"):
        enforcer.pause(TENANT, EX01, 3, start=TODAY + dt.timedelta(days=2))
    assert store.get_ledger(TENANT) == before


def test_a_refused_tenant_pause_writes_nothing(enforcer: Enforcer, store: StateStore) -> None:
    check(enforcer, EX01)
    enforcer.pause(TENANT, EX01, 85)
    with pytest.raises(QuotaExceededError, match="2026"):
        enforcer.pause_tenant(TENANT, 10, start=TODAY + dt.timedelta(days=100))
    with pytest.raises(PauseInPastError):
        enforcer.pause_tenant(TENANT, 1, start=TODAY - dt.timedelta(days=1))
    got = store.get_ledger(TENANT)
    assert got is not None
    assert got.version == 1
    assert got.value.tenant_pauses == ()


# ---- ending ------------------------------------------------------------------------------


def test_unpause_tenant_returns_the_unused_days_and_resumes_every_server(
    enforcer: Enforcer, store: StateStore, clock: Clock, events: list[Event]
) -> None:
    for server in (EX01, EX02):
        check(enforcer, server)
    enforcer.pause_tenant(TENANT, 10)
    clock.now = T0 + dt.timedelta(days=2)
    events.clear()
    ledger = enforcer.unpause_tenant(TENANT)
    assert ledger.tenant_pauses == (TenantPause(TODAY, 3),)  # today stays paused
    assert ledger.used(2026) == 3
    for server in (EX01, EX02):
        assert stored_pauses(store, server) == (Pause(server, TODAY, 3),)
    assert sorted((e.kind, e.server_id) for e in events) == [
        (EventKind.RESUMED, EX01),
        (EventKind.RESUMED, EX02),
    ]
    assert events[0].detail == (
        "tenant pause of fabrikam ended early; enforcement resumes on 2026-01-08"
    )
    clock.now = T0 + dt.timedelta(days=3)
    assert check(enforcer, EX01).paused is False


def test_unpause_tenant_with_nothing_to_end_writes_nothing(
    enforcer: Enforcer, store: StateStore, events: list[Event]
) -> None:
    check(enforcer, EX01)
    events.clear()
    assert enforcer.unpause_tenant(TENANT) == PauseLedger(TENANT)
    assert store.get_ledger(TENANT) is None
    assert events == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: e.pause_tenant("", 3), "tenant must be a non-empty str"),
        (lambda e: e.pause_tenant(TENANT, 0), "days must be an int >= 1"),
        (lambda e: e.pause_tenant(TENANT, 3, start=T0), "start must be a date"),
        (lambda e: e.unpause_tenant(None), "tenant must be a non-empty str"),
    ],
)
def test_bad_tenant_pause_arguments_are_refused_naming_them(
    enforcer: Enforcer, store: StateStore, call: Any, message: str
) -> None:
    with pytest.raises(InvalidPauseError, match=message):
        call(enforcer)
    assert store.get_ledger(TENANT) is None


# ---- races: a server stored while a tenant pause is granted -------------------------------


class InterposingStore:
    """A MemoryStore wrapper that runs ``rival`` once, just before the first ``method`` call."""

    def __init__(self, inner: MemoryStore, method: str, rival: Any) -> None:
        self.inner, self.method, self.rival = inner, method, rival

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _maybe_race(self, name: str) -> None:
        if name == self.method and self.rival is not None:
            rival, self.rival = self.rival, None
            rival(self.inner)

    def put(self, state: ServerState, *, expected_version: int | None) -> int:
        self._maybe_race("put")
        return self.inner.put(state, expected_version=expected_version)

    def put_many(self, writes: Sequence[Write]) -> tuple[int, ...]:
        self._maybe_race("put_many")
        return self.inner.put_many(writes)


def test_a_server_stored_between_listing_and_granting_still_gets_the_tenant_pause() -> None:
    inner = MemoryStore()

    def first_message(store: MemoryStore) -> None:
        check(Enforcer(store, DEFAULT_POLICY, CATALOG, clock=Clock()), EX02)

    seeded = Enforcer(inner, DEFAULT_POLICY, CATALOG, clock=Clock())
    check(seeded, EX01)
    store: Any = InterposingStore(inner, "put_many", first_message)
    Enforcer(store, DEFAULT_POLICY, CATALOG, clock=Clock()).pause_tenant(TENANT, 5)
    for server in (EX01, EX02):
        assert stored_pauses(inner, server) == (Pause(server, TODAY, 5),)


def test_a_tenant_pause_granted_while_a_new_server_is_stored_reaches_it() -> None:
    inner = MemoryStore()

    def grant(store: MemoryStore) -> None:
        Enforcer(store, DEFAULT_POLICY, CATALOG, clock=Clock()).pause_tenant(TENANT, 5)

    # The check reads the (absent) ledger, then the grant lists states and writes, then the
    # check stores the new server: only the check can notice, by re-reading the ledger.
    store: Any = InterposingStore(inner, "put", grant)
    check(Enforcer(store, DEFAULT_POLICY, CATALOG, clock=Clock()), EX01)
    assert stored_pauses(inner, EX01) == (Pause(EX01, TODAY, 5),)
    clock = Clock(T0 + dt.timedelta(hours=1))
    assert check(Enforcer(inner, DEFAULT_POLICY, CATALOG, clock=clock), EX01).paused is True


def test_a_server_moving_into_a_paused_tenant_gets_its_tenant_pause(
    enforcer: Enforcer, store: StateStore
) -> None:
    check(enforcer, EX01, tenant="contoso")
    enforcer.pause_tenant(TENANT, 10)
    assert stored_pauses(store, EX01) == ()  # still contoso's when the pause was granted
    decision = check(enforcer, EX01)  # the connection now says fabrikam
    assert decision.paused is True
    assert stored_pauses(store, EX01) == (Pause(EX01, TODAY, 10),)


# ---- a property: states always hold what the ledger covers ---------------------------------

SERVERS = (EX01, EX02, EX03)


@settings(max_examples=60)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("check"), st.sampled_from(SERVERS)),
            st.tuples(
                st.just("pause"), st.sampled_from(SERVERS), st.integers(0, 20), st.integers(1, 15)
            ),
            st.tuples(st.just("pause_tenant"), st.integers(0, 20), st.integers(1, 15)),
            st.tuples(st.just("end_pause"), st.sampled_from(SERVERS)),
            st.tuples(st.just("unpause_tenant")),
            st.tuples(st.just("advance"), st.integers(1, 10)),
        ),
        max_size=25,
    )
)
def test_every_stored_state_holds_exactly_the_pauses_its_ledger_covers(
    steps: list[tuple[Any, ...]],
) -> None:
    store = MemoryStore()
    clock = Clock()
    enforcer = Enforcer(store, Policy(pause_quota_days=40), CATALOG, clock=clock)
    for step in steps:
        name, *args = step
        with contextlib.suppress(QuotaExceededError, PauseConflictError, UnseenServerError):
            if name == "check":
                check(enforcer, args[0])
            elif name == "pause":
                start = clock.now.date() + dt.timedelta(days=args[1])
                enforcer.pause(TENANT, args[0], args[2], start=start)
            elif name == "pause_tenant":
                enforcer.pause_tenant(
                    TENANT, args[1], start=clock.now.date() + dt.timedelta(days=args[0])
                )
            elif name == "end_pause":
                enforcer.end_pause(TENANT, args[0])
            elif name == "unpause_tenant":
                enforcer.unpause_tenant(TENANT)
            else:
                clock.now += dt.timedelta(days=args[0])
        got = store.get_ledger(TENANT)
        ledger = PauseLedger(TENANT, 40) if got is None else got.value
        for state in store.states(TENANT):
            assert sorted(state.pauses, key=lambda p: (p.start, p.days)) == sorted(
                ledger.covering(state.server_id), key=lambda p: (p.start, p.days)
            )
            noon = dt.datetime.combine(clock.now.date(), dt.time(12), tzinfo=UTC)
            assert decide(state, noon).paused is ledger.paused_at(state.server_id, noon)
