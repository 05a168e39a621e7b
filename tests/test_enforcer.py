"""Example-based tests of the Enforcer: checks, pauses, failure handling and notifications.

Expected stages and windows are worked out from the SPEC's default stage table (stage 2 from
day 30, 5 from day 60, 8 from day 90) and its window rule (offset = first 8 bytes of
SHA-256 of the server id, big-endian, mod 60; r = (minute - offset) mod 60; r < block
blocks, r < block + throttle throttles).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tbes.baseline import Baseline
from tbes.catalog import Catalog
from tbes.compliance import Compliance, assess
from tbes.decision import Action, Decision, decide
from tbes.enforcer import FAIL_CLOSED_REPLY, Connection, Enforcer, utc_now
from tbes.errors import (
    InvalidValueError,
    NaiveDatetimeError,
    PauseInPastError,
    QuotaExceededError,
    StoreConflictError,
    StoreError,
)
from tbes.events import NOTICE_KINDS, Event, EventKind
from tbes.ledger import Pause, PauseLedger
from tbes.notifiers import CallbackNotifier, LoggingNotifier, Notifier
from tbes.policy import DEFAULT_POLICY, ConnectorKind, Policy
from tbes.serde import dumps, loads
from tbes.state import ServerState
from tbes.store import MemoryStore, Versioned, Write
from tbes.version import ExchangeBuild

UTC = dt.UTC
SERVER = "ex01.fabrikam.example"
TENANT = "fabrikam"
T0 = dt.datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # first detection in most tests
OUTDATED = "15.1.2507.39"  # Exchange 2016 CU23 below the October 2025 SU (15.1.2507.61)
COMPLIANT = "15.1.2507.61"
OFFSET = int.from_bytes(hashlib.sha256(SERVER.encode()).digest()[:8], "big") % 60

THROTTLE_450 = (
    "450 4.7.230 Connecting Exchange server version is out-of-date; connection to Exchange "
    "Online throttled for 30 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange."
)
BLOCK_550 = (
    "550 5.7.230 Connecting Exchange server version is out-of-date; connection to Exchange "
    "Online blocked for 60 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange."
)


def hop(build: str, by: str = SERVER) -> str:
    """A Received value written by an Exchange server ``by`` running ``build``."""
    return (
        f"from EXMBX01.fabrikam.local (10.0.0.7) by {by} (192.0.2.10) with Microsoft SMTP "
        f"Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id {build}; "
        "Mon, 5 Jan 2026 10:00:00 +0000"
    )


def when(day: int, r: int = 45) -> dt.datetime:
    """11:00 UTC ``day`` days after T0 (so later than T0's 10:00), at window position ``r``."""
    return (T0 + dt.timedelta(days=day, hours=1)).replace(minute=(OFFSET + r) % 60)


def stage_of(decision: Decision) -> int | None:
    return None if decision.stage is None else decision.stage.number


class Clock:
    """A settable clock."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


CATALOG = Catalog.default()


@pytest.fixture
def catalog() -> Catalog:
    return CATALOG


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def enforcer(store: MemoryStore, catalog: Catalog, clock: Clock, events: list[Event]) -> Enforcer:
    return Enforcer(
        store, DEFAULT_POLICY, catalog, clock=clock, notifier=CallbackNotifier(events.append)
    )


def conn(kind: ConnectorKind = ConnectorKind.ON_PREMISES, server_id: str = SERVER) -> Connection:
    return Connection(server_id, TENANT, kind, peer_ip="192.0.2.10", peer_host=SERVER)


def check_on(enforcer: Enforcer, clock: Clock, day: int, build: str = OUTDATED) -> Decision:
    """Move the clock to ``when(day)`` and check a message from the server on ``build``."""
    clock.now = when(day)
    return enforcer.check(conn(), [hop(build)])


def kinds(events: Sequence[Event]) -> list[tuple[EventKind, int | None]]:
    return [(event.kind, event.stage) for event in events]


class UntouchableStore:
    """A store that fails the test if anything touches it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was touched: {name}")


class BrokenStore:
    """A store whose every call fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def fail(*args: object, **kwargs: object) -> Any:
            raise self.error

        return fail


class RacingStore:
    """A MemoryStore wrapper where another writer gets in before the first ``races`` writes."""

    def __init__(self, inner: MemoryStore, races: int, rival: Any) -> None:
        self.inner, self.races, self.rival = inner, races, rival
        self.attempts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _race(self) -> None:
        self.attempts += 1
        if self.races > 0:
            self.races -= 1
            self.rival(self.inner)

    def put(self, state: ServerState, *, expected_version: int | None) -> int:
        self._race()
        return self.inner.put(state, expected_version=expected_version)

    def put_many(self, writes: Sequence[Write]) -> tuple[int, ...]:
        self._race()
        return self.inner.put_many(writes)


# ---- connectors and identity ----------------------------------------------------------


@pytest.mark.parametrize("kind", [ConnectorKind.PARTNER, ConnectorKind.INTERNET])
def test_connections_of_unenforced_kinds_are_accepted_without_touching_the_store(
    catalog: Catalog, kind: ConnectorKind
) -> None:
    store: Any = UntouchableStore()
    enforcer = Enforcer(store, DEFAULT_POLICY, catalog, clock=Clock(when(95, 0)))
    decision = enforcer.check(conn(kind), [hop("8.3.83.6")])
    assert decision.action is Action.ACCEPT
    assert (decision.stage, decision.reply, decision.report) == (None, None, False)


def test_a_policy_can_enforce_partner_connectors(store: MemoryStore, catalog: Catalog) -> None:
    policy = Policy(connectors={ConnectorKind.PARTNER})
    enforcer = Enforcer(store, policy, catalog, clock=Clock())
    enforcer.check(conn(ConnectorKind.PARTNER), [hop(OUTDATED)])
    assert store.get(SERVER) is not None


def test_first_outdated_message_starts_an_episode_under_the_connections_server_id(
    enforcer: Enforcer, store: MemoryStore
) -> None:
    decision = enforcer.check(conn(), [hop(OUTDATED, by="some-other-name.example")])
    assert decision.action is Action.ACCEPT
    assert decision.stage is not None
    assert decision.stage.number == 1
    assert decision.report is True
    stored = store.get(SERVER)
    assert stored is not None
    assert stored.value.first_detected == T0
    assert stored.value.build == ExchangeBuild.parse(OUTDATED)
    assert stored.value.status is Compliance.OUTDATED
    assert store.get("some-other-name.example") is None


def test_enforcement_follows_the_stage_table_over_the_days(
    enforcer: Enforcer, clock: Clock
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    expected = [
        (29, 0, Action.ACCEPT, 1),  # stage 1 reports only
        (30, 0, Action.THROTTLE, 2),  # stage 2: 5 throttle minutes from the offset
        (30, 5, Action.ACCEPT, 2),
        (60, 4, Action.BLOCK, 5),  # stage 5: 5 block minutes, then 30 throttle minutes
        (60, 5, Action.THROTTLE, 5),
        (60, 34, Action.THROTTLE, 5),
        (60, 35, Action.ACCEPT, 5),
        (89, 59, Action.ACCEPT, 7),  # stage 7: 20 block + 30 throttle, 10 accepted
        (90, 59, Action.BLOCK, 8),  # stage 8 blocks every minute
    ]
    for day, r, action, stage in expected:
        clock.now = when(day, r)
        decision = enforcer.check(conn(), [hop(OUTDATED)])
        assert (decision.action, decision.stage and decision.stage.number) == (action, stage), (
            day,
            r,
        )


def test_replies_are_the_specs_reply_lines(enforcer: Enforcer, clock: Clock) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    clock.now = when(70, 20)  # stage 6: block 10, throttle 30 -> r=20 throttles
    assert str(enforcer.check(conn(), [hop(OUTDATED)]).reply) == THROTTLE_450
    clock.now = when(95, 20)
    assert str(enforcer.check(conn(), [hop(OUTDATED)]).reply) == BLOCK_550


def test_a_compliant_server_is_recorded_without_an_episode(
    enforcer: Enforcer, store: MemoryStore
) -> None:
    decision = enforcer.check(conn(), [hop(COMPLIANT)])
    assert (decision.action, decision.stage) == (Action.ACCEPT, None)
    stored = store.get(SERVER)
    assert stored is not None
    assert stored.value.first_detected is None
    assert stored.value.status is Compliance.COMPLIANT


# ---- no evidence -------------------------------------------------------------------------


def test_a_replaced_policy_or_catalog_is_never_answered_from_an_old_verdict(
    enforcer: Enforcer, store: MemoryStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[ExchangeBuild] = []

    def counting_assess(build: ExchangeBuild, **kwargs: Any) -> Any:
        calls.append(build)
        return assess(build, **kwargs)

    monkeypatch.setattr("tbes.enforcer.assess", counting_assess)
    enforcer.check(conn(), [hop(OUTDATED)])
    enforcer.check(conn(), [hop(OUTDATED)])
    assert len(calls) == 1  # one verdict per build while policy and catalog stay
    assert store.get(SERVER).value.status is Compliance.OUTDATED  # type: ignore[union-attr]
    # Under the 2023 baseline Exchange 2016 has no minimum build: the same build complies.
    enforcer.policy = attrs.evolve(DEFAULT_POLICY, baseline=Baseline.exchange_online_2023())
    clock.now = T0 + dt.timedelta(hours=1)
    enforcer.check(conn(), [hop(OUTDATED)])
    assert len(calls) == 2
    assert store.get(SERVER).value.status is Compliance.COMPLIANT  # type: ignore[union-attr]
    enforcer.catalog = Catalog(CATALOG.releases, CATALOG.as_of)  # equal, another object
    enforcer.check(conn(), [hop(OUTDATED)])
    assert len(calls) == 3


def test_forged_builds_cannot_grow_the_verdict_cache_without_bound(
    enforcer: Enforcer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    verdicts = enforcer._verdicts  # the cache itself: its size is the behaviour under test
    for patch in range(3_000):
        enforcer.check(conn(server_id=f"ex{patch}.fabrikam.example"), [hop(f"15.1.2507.{patch}")])
        sizes.append(len(verdicts))
    assert max(sizes) <= 1_024
    assert sizes[-1] >= 1  # still caching after being cleared


def test_stripping_headers_never_evades_enforcement(
    enforcer: Enforcer, store: MemoryStore, clock: Clock
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    before = store.get(SERVER)
    clock.now = when(95, 30)
    for received in ([], ["from relay.example by mx.example with ESMTP; Mon, 5 Jan 2026"]):
        decision = enforcer.check(conn(), received)
        assert decision.action is Action.BLOCK
        assert str(decision.reply) == BLOCK_550
    after = store.get(SERVER)
    assert before is not None
    assert after is not None
    # Only the notification marker moved (stage 8 was announced); the episode is as it was.
    assert after.value == attrs.evolve(before.value, notified_stage=8)


def test_no_evidence_and_no_record_accepts_and_stores_nothing(
    enforcer: Enforcer, store: MemoryStore
) -> None:
    decision = enforcer.check(conn(), [])
    assert (decision.action, decision.stage, decision.reply) == (Action.ACCEPT, None, None)
    assert store.get(SERVER) is None
    assert list(store.states()) == []


def test_a_forged_future_build_neither_remediates_nor_changes_the_episode(
    enforcer: Enforcer, store: MemoryStore, clock: Clock
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    clock.now = when(95, 30)
    decision = enforcer.check(conn(), [hop("16.0.0.0")])
    assert decision.action is Action.BLOCK
    stored = store.get(SERVER)
    assert stored is not None
    assert stored.value.first_detected == T0
    assert stored.value.compliant_since is None


# ---- store faults ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [StoreError("disk on fire"), RuntimeError("driver bug")],
    ids=["StoreError", "foreign exception"],
)
def test_a_store_fault_fails_open_with_a_warning(
    catalog: Catalog, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    store: Any = BrokenStore(error)
    enforcer = Enforcer(store, DEFAULT_POLICY, catalog, clock=Clock())
    with caplog.at_level(logging.WARNING, logger="tbes.enforcer"):
        for received in ([hop(OUTDATED)], []):
            decision = enforcer.check(conn(), received)
            assert (decision.action, decision.reply) == (Action.ACCEPT, None)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert SERVER in warnings[0].getMessage()
    assert str(error) in warnings[0].getMessage()


def test_a_store_fault_defers_with_451_when_failing_closed(catalog: Catalog) -> None:
    store: Any = BrokenStore(StoreError("disk on fire"))
    enforcer = Enforcer(store, DEFAULT_POLICY, catalog, clock=Clock(), fail_closed=True)
    decision = enforcer.check(conn(), [hop(OUTDATED)])
    assert decision.action is Action.THROTTLE
    assert decision.reply == FAIL_CLOSED_REPLY
    assert str(decision.reply) == (
        "451 4.3.0 Temporary failure checking the sending Exchange server; try again later"
    )


def test_an_unreadable_row_fails_open_and_is_never_overwritten(
    store: MemoryStore, catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    store._rows["server"][SERVER] = (4, 1, "{corrupt")
    enforcer = Enforcer(store, DEFAULT_POLICY, catalog, clock=Clock(when(95)))
    with caplog.at_level(logging.WARNING, logger="tbes.enforcer"):
        decision = enforcer.check(conn(), [hop(OUTDATED)])
    assert decision.action is Action.ACCEPT
    assert store._rows["server"][SERVER] == (4, 1, "{corrupt")
    assert f"server '{SERVER}'" in caplog.text


def test_an_unreadable_row_fails_closed_when_asked(store: MemoryStore, catalog: Catalog) -> None:
    store._rows["server"][SERVER] = (4, 7, "{}")
    enforcer = Enforcer(store, DEFAULT_POLICY, catalog, clock=Clock(), fail_closed=True)
    assert enforcer.check(conn(), []).reply == FAIL_CLOSED_REPLY
    assert store._rows["server"][SERVER] == (4, 7, "{}")


def test_a_lost_race_is_retried_on_fresh_state(catalog: Catalog, events: list[Event]) -> None:
    inner = MemoryStore()

    def rival(store: MemoryStore) -> None:
        # Another node records the same server first, in the same episode.
        other = Enforcer(store, DEFAULT_POLICY, catalog, clock=Clock(T0 - dt.timedelta(hours=1)))
        other.check(conn(), [hop(OUTDATED)])

    racing = RacingStore(inner, races=1, rival=rival)
    store: Any = racing
    enforcer = Enforcer(
        store, DEFAULT_POLICY, catalog, clock=Clock(), notifier=CallbackNotifier(events.append)
    )
    decision = enforcer.check(conn(), [hop(OUTDATED)])
    assert racing.attempts == 2
    stored = inner.get(SERVER)
    assert stored is not None
    assert stored.version == 2  # the rival's write, then ours on top of it
    assert stored.value.first_detected == T0 - dt.timedelta(hours=1)
    assert stored.value.last_seen == T0
    assert decision.stage is not None
    assert decision.stage.number == 1
    assert events == []  # the rival's write detected the episode; ours announced nothing


def test_endless_races_give_up_after_the_retries_and_still_decide(
    catalog: Catalog, caplog: pytest.LogCaptureFixture, events: list[Event]
) -> None:
    inner = MemoryStore()
    bump = iter(range(1, 100))

    def rival(store: MemoryStore) -> None:
        # Another node keeps writing the row just before us.
        seen = T0 - dt.timedelta(minutes=next(bump))
        got = store.get(SERVER)
        state = ServerState(SERVER, TENANT, None, Compliance.NOT_APPLICABLE, None, seen, None)
        store.put(state, expected_version=None if got is None else got.version)

    racing = RacingStore(inner, races=100, rival=rival)
    store: Any = racing
    enforcer = Enforcer(
        store,
        DEFAULT_POLICY,
        catalog,
        clock=Clock(),
        retries=2,
        notifier=CallbackNotifier(events.append),
    )
    with caplog.at_level(logging.WARNING, logger="tbes.enforcer"):
        decision = enforcer.check(conn(), [hop(OUTDATED)])
    assert racing.attempts == 3
    assert decision.stage is not None
    assert decision.stage.number == 1
    assert "lost 3 compare-and-swap races" in caplog.text
    assert events == []


# ---- pauses ------------------------------------------------------------------------------


def test_pause_charges_the_ledger_and_pauses_the_server_in_one_write(
    enforcer: Enforcer, store: MemoryStore, clock: Clock, events: list[Event]
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    clock.now = when(95, 10)
    ledger = enforcer.pause(TENANT, SERVER, 3)
    today = clock.now.date()
    assert ledger.pauses == (Pause(SERVER, today, 3),)
    assert store.get_ledger(TENANT) == Versioned(ledger, 1)
    stored = store.get(SERVER)
    assert stored is not None
    assert stored.value.pauses == (Pause(SERVER, today, 3),)
    assert kinds(events) == [(EventKind.DETECTED, 1), (EventKind.PAUSED, 8)]
    assert (
        events[-1].detail
        == f"enforcement paused for 3 days, {today} to {today + dt.timedelta(days=2)}; "
        "3 of 90 pause days used in 2026"
    )
    decision = enforcer.check(conn(), [hop(OUTDATED)])
    assert (decision.action, decision.paused) == (Action.ACCEPT, True)


def test_a_paused_day_does_not_count_towards_the_stages(enforcer: Enforcer, clock: Clock) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    clock.now = when(10)
    enforcer.pause(TENANT, SERVER, 5)  # days 10..14 (from the calendar day of when(10))
    clock.now = when(34, 0)
    assert stage_of(enforcer.check(conn(), [hop(OUTDATED)])) == 1
    clock.now = when(36, 0)
    assert stage_of(enforcer.check(conn(), [hop(OUTDATED)])) == 2


def test_pause_errors_propagate_and_change_nothing(
    enforcer: Enforcer, store: MemoryStore, clock: Clock
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    enforcer.pause(TENANT, SERVER, 80)
    with pytest.raises(QuotaExceededError, match="2026"):
        enforcer.pause(TENANT, SERVER, 11, start=T0.date() + dt.timedelta(days=100))
    with pytest.raises(PauseInPastError):
        enforcer.pause(TENANT, SERVER, 1, start=T0.date() - dt.timedelta(days=1))
    ledger = store.get_ledger(TENANT)
    assert ledger is not None
    assert ledger.version == 1
    assert ledger.value.used(2026) == 80


def test_a_pause_uses_the_policys_quota_for_a_new_ledger(
    store: MemoryStore, catalog: Catalog
) -> None:
    enforcer = Enforcer(store, Policy(pause_quota_days=10), catalog, clock=Clock())
    with pytest.raises(QuotaExceededError):
        enforcer.pause(TENANT, SERVER, 11, force=True)
    assert enforcer.pause(TENANT, SERVER, 10, force=True).remaining(2026) == 0


def test_a_server_can_be_paused_before_it_is_first_seen_when_forced(
    enforcer: Enforcer, store: MemoryStore, clock: Clock
) -> None:
    enforcer.pause(TENANT, SERVER, 2, force=True)
    stored = store.get(SERVER)
    assert stored is not None
    assert (stored.value.build, stored.value.first_detected) == (None, None)
    decision = enforcer.check(conn(), [hop(OUTDATED)])
    assert decision.paused is True
    after = store.get(SERVER)
    assert after is not None
    assert after.value.pauses == (Pause(SERVER, T0.date(), 2),)


def test_end_pause_returns_unused_days_and_resumes_at_midnight(
    enforcer: Enforcer, store: MemoryStore, clock: Clock, events: list[Event]
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    enforcer.pause(TENANT, SERVER, 10)
    clock.now = T0 + dt.timedelta(days=2)
    ledger = enforcer.end_pause(TENANT, SERVER)
    assert ledger.pauses == (Pause(SERVER, T0.date(), 3),)  # today stays paused
    assert ledger.used(2026) == 3
    stored = store.get(SERVER)
    assert stored is not None
    assert stored.value.pauses == ledger.pauses
    assert kinds(events)[-1] == (EventKind.RESUMED, 1)
    assert events[-1].detail == "pause ended early; enforcement resumes on 2026-01-08"


def test_end_pause_with_nothing_to_end_writes_nothing(
    enforcer: Enforcer, store: MemoryStore, events: list[Event]
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    events.clear()
    assert enforcer.end_pause(TENANT, SERVER) == PauseLedger(TENANT)
    assert store.get_ledger(TENANT) is None
    assert events == []


def test_a_pause_retries_a_lost_race_and_keeps_both_writes(catalog: Catalog) -> None:
    inner = MemoryStore()

    def rival(store: MemoryStore) -> None:
        Enforcer(store, DEFAULT_POLICY, catalog, clock=Clock()).pause(TENANT, "ex02", 4, force=True)

    racing = RacingStore(inner, races=1, rival=rival)
    store: Any = racing
    ledger = Enforcer(store, DEFAULT_POLICY, catalog, clock=Clock()).pause(
        TENANT, SERVER, 3, force=True
    )
    assert ledger.used(2026) == 7
    assert inner.get_ledger(TENANT) == Versioned(ledger, 2)


def test_a_pause_that_keeps_losing_raises_store_conflict(catalog: Catalog) -> None:
    def rival(store: MemoryStore) -> None:
        got = store.get_ledger(TENANT)
        ledger = PauseLedger(TENANT, 90 + (got.version if got else 0))
        store.put_ledger(ledger, expected_version=None if got is None else got.version)

    store: Any = RacingStore(MemoryStore(), races=100, rival=rival)
    with pytest.raises(StoreConflictError, match="lost 2 compare-and-swap races"):
        Enforcer(store, DEFAULT_POLICY, catalog, clock=Clock(), retries=1).pause(
            TENANT, SERVER, 3, force=True
        )


class CountedReads(Sequence[str]):
    """Received values that count how often they are read through."""

    def __init__(self, values: list[str]) -> None:
        self.values = values
        self.reads = 0

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: Any) -> Any:
        return self.values[index]

    def __iter__(self) -> Iterator[str]:
        self.reads += 1
        return iter(self.values)


@pytest.mark.parametrize("kind", [ConnectorKind.ON_PREMISES, ConnectorKind.PARTNER])
def test_each_message_s_received_values_are_checked_once(
    enforcer: Enforcer, kind: ConnectorKind
) -> None:
    # Checked at the boundary once, not by the enforcer and again by the sender finder.
    received = CountedReads([hop(OUTDATED)])
    enforcer.check(conn(kind), received)
    assert received.reads == 1
    with pytest.raises(InvalidValueError, match="received must hold only str values"):
        enforcer.check(conn(kind), CountedReads([hop(OUTDATED), None]))  # type: ignore[list-item]


# ---- notifications ---------------------------------------------------------------------


def test_each_stage_is_announced_once_as_the_days_pass(
    enforcer: Enforcer, clock: Clock, events: list[Event]
) -> None:
    for day in range(0, 100):
        for r in (0, 30):
            clock.now = when(day, r)
            enforcer.check(conn(), [hop(OUTDATED)])
    assert kinds(events) == [
        (EventKind.DETECTED, 1),
        (EventKind.THROTTLING_SOON, 2),  # advance notices: once, seven days ahead
        (EventKind.STAGE_CHANGED, 2),
        (EventKind.STAGE_CHANGED, 3),
        (EventKind.STAGE_CHANGED, 4),
        (EventKind.BLOCKING_SOON, 5),
        (EventKind.STAGE_CHANGED, 5),
        (EventKind.BLOCKING_STARTED, 5),
        (EventKind.STAGE_CHANGED, 6),
        (EventKind.STAGE_CHANGED, 7),
        (EventKind.STAGE_CHANGED, 8),
        (EventKind.FULLY_BLOCKED, 8),
    ]
    assert all((e.server_id, e.tenant) == (SERVER, TENANT) for e in events)
    assert all(e.build == ExchangeBuild.parse(OUTDATED) for e in events)
    assert (events[1].at, events[1].next_change) == (when(23, 0), when(30, 0))
    assert (events[5].at, events[5].next_change) == (when(53, 0), when(60, 0))
    assert events[2].at == when(30, 0)


def test_a_silent_server_jumping_stages_gets_every_threshold_event(
    enforcer: Enforcer, clock: Clock, events: list[Event]
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    check_on(enforcer, clock, 95)
    assert kinds(events) == [
        (EventKind.DETECTED, 1),
        (EventKind.STAGE_CHANGED, 8),
        (EventKind.BLOCKING_STARTED, 8),
        (EventKind.FULLY_BLOCKED, 8),
    ]


def test_a_relapse_within_the_window_is_announced_once_as_relapsed_not_detected(
    enforcer: Enforcer, clock: Clock, events: list[Event]
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    check_on(enforcer, clock, 35)
    check_on(enforcer, clock, 36, COMPLIANT)
    check_on(enforcer, clock, 45)  # within the 30-day relapse window: the old episode resumes
    check_on(enforcer, clock, 45)  # the same build again: nothing new
    check_on(enforcer, clock, 46, COMPLIANT)  # people heard of the relapse: this is news again
    assert kinds(events) == [
        (EventKind.DETECTED, 1),
        (EventKind.STAGE_CHANGED, 2),
        (EventKind.REMEDIATED, None),
        (EventKind.RELAPSED, 3),  # names the stage the episode resumes in: no STAGE_CHANGED
        (EventKind.REMEDIATED, None),
    ]
    relapsed = events[3]
    assert "relapse window" in relapsed.detail
    assert relapsed.build == ExchangeBuild.parse(OUTDATED)
    assert relapsed.episode_start == events[0].episode_start == T0  # the same episode
    assert relapsed.next_change == T0 + dt.timedelta(days=50)  # stage 4 starts on day 50
    assert events[2].build == events[4].build == ExchangeBuild.parse(COMPLIANT)
    assert events[2].id != events[4].id  # two remediations of one episode: two events


def test_a_new_episode_after_the_relapse_window_starts_announcing_afresh(
    enforcer: Enforcer, clock: Clock, events: list[Event]
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    check_on(enforcer, clock, 35)
    check_on(enforcer, clock, 36, COMPLIANT)
    check_on(enforcer, clock, 80)  # 44 days after remediation: past the 30-day window
    check_on(enforcer, clock, 111)
    assert kinds(events) == [
        (EventKind.DETECTED, 1),
        (EventKind.STAGE_CHANGED, 2),
        (EventKind.REMEDIATED, None),
        (EventKind.DETECTED, 1),
        (EventKind.STAGE_CHANGED, 2),
    ]
    assert "episode started" in events[3].detail
    assert events[3].at == events[3].episode_start == when(80)
    assert events[0].id != events[3].id  # two episodes, two detections


def test_stripped_headers_after_detection_still_announce_each_threshold_once(
    enforcer: Enforcer, store: MemoryStore, clock: Clock, events: list[Event]
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    before = store.get(SERVER)
    assert before is not None
    heard = [kinds(events)]
    events.clear()
    for day in (35, 65, 95, 96):
        clock.now = when(day)
        enforcer.check(conn(), [])
        heard.append(kinds(events))
        events.clear()
    assert heard == [
        [(EventKind.DETECTED, 1)],
        [(EventKind.STAGE_CHANGED, 2)],
        [(EventKind.STAGE_CHANGED, 5), (EventKind.BLOCKING_STARTED, 5)],
        [(EventKind.STAGE_CHANGED, 8), (EventKind.FULLY_BLOCKED, 8)],
        [],
    ]
    after = store.get(SERVER)
    assert after is not None
    assert after.value.notified_stage == 8
    # The episode is exactly as the one message with headers left it: only the marker moved.
    assert attrs.evolve(after.value, notified_stage=1) == before.value
    assert after.version == before.version + 3  # one marker write per announcement


def test_a_stripped_message_that_loses_the_race_does_not_repeat_the_winners_announcement(
    catalog: Catalog, events: list[Event]
) -> None:
    inner = MemoryStore()
    Enforcer(inner, DEFAULT_POLICY, catalog, clock=Clock()).check(conn(), [hop(OUTDATED)])
    rival_heard: list[Event] = []

    def rival(store: MemoryStore) -> None:
        # Another node sees a stripped message of the same server at the same moment.
        other = Enforcer(
            store,
            DEFAULT_POLICY,
            catalog,
            clock=Clock(when(65)),
            notifier=CallbackNotifier(rival_heard.append),
        )
        other.check(conn(), [])

    racing = RacingStore(inner, races=1, rival=rival)
    store: Any = racing
    enforcer = Enforcer(
        store,
        DEFAULT_POLICY,
        catalog,
        clock=Clock(when(65)),
        notifier=CallbackNotifier(events.append),
    )
    decision = enforcer.check(conn(), [])
    assert racing.attempts == 1  # lost once; the re-read found the stage already announced
    assert stage_of(decision) == 5
    assert kinds(rival_heard) == [(EventKind.STAGE_CHANGED, 5), (EventKind.BLOCKING_STARTED, 5)]
    assert events == []
    stored = inner.get(SERVER)
    assert stored is not None
    assert (stored.version, stored.value.notified_stage) == (2, 5)


def test_a_stripped_message_is_not_announced_for_a_server_of_another_tenant(
    enforcer: Enforcer, store: MemoryStore, clock: Clock, events: list[Event]
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    before = store.get(SERVER)
    clock.now = when(65)
    stranger = Connection(SERVER, "tailspin", ConnectorKind.ON_PREMISES)
    assert stage_of(enforcer.check(stranger, [])) == 5  # still decided on the record
    assert store.get(SERVER) == before
    assert kinds(events) == [(EventKind.DETECTED, 1)]


def test_alternating_compliant_and_outdated_within_the_window_is_one_episode_detected_once(
    enforcer: Enforcer, store: MemoryStore, clock: Clock, events: list[Event]
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    for day in range(1, 25):  # every relapse comes a day after the remediation: one episode
        check_on(enforcer, clock, day, COMPLIANT if day % 2 else OUTDATED)
    # Each remediation and each relapse is news to the administrators; the detection is not.
    assert (
        kinds(events)
        == [(EventKind.DETECTED, 1)]
        + [
            (EventKind.REMEDIATED, None),
            (EventKind.RELAPSED, 1),
        ]
        * 12
    )
    assert len({event.id for event in events}) == len(events)
    assert {event.episode_start for event in events} == {T0}
    stored = store.get(SERVER)
    assert stored is not None
    assert (stored.value.first_detected, stored.value.compliant_since) == (T0, None)


def test_a_relapse_at_a_stage_already_announced_is_relapsed_and_the_next_stage_is_announced(
    enforcer: Enforcer, store: MemoryStore, clock: Clock, events: list[Event]
) -> None:
    enforcer.check(conn(), [hop(OUTDATED)])
    check_on(enforcer, clock, 31)  # stage 2 announced
    check_on(enforcer, clock, 32, COMPLIANT)
    decision = check_on(enforcer, clock, 33)
    assert stage_of(decision) == 2  # enforcement resumed, in the same episode
    assert kinds(events) == [
        (EventKind.DETECTED, 1),
        (EventKind.STAGE_CHANGED, 2),
        (EventKind.REMEDIATED, None),
        (EventKind.RELAPSED, 2),
    ]
    events.clear()
    clock.now = when(41)
    enforcer.check(conn(), [])  # stage 3 reached: news, even without headers
    check_on(enforcer, clock, 42, COMPLIANT)  # and the remediation after it is news again
    assert kinds(events) == [(EventKind.STAGE_CHANGED, 3), (EventKind.REMEDIATED, None)]
    stored = store.get(SERVER)
    assert stored is not None
    assert stored.value.first_detected == T0


def test_two_nodes_sharing_a_store_announce_each_change_once(
    store: MemoryStore, catalog: Catalog
) -> None:
    heard: list[Event] = []
    clocks = [Clock(), Clock()]
    nodes = [
        Enforcer(store, DEFAULT_POLICY, catalog, clock=c, notifier=CallbackNotifier(heard.append))
        for c in clocks
    ]
    for day in range(0, 100, 3):
        for n, node in enumerate(nodes):
            clocks[n].now = when(day, n)
            node.check(conn(), [hop(OUTDATED)])
    assert sorted(kinds(heard), key=str) == sorted(
        [(EventKind.DETECTED, 1)]
        + [(EventKind.STAGE_CHANGED, s) for s in range(2, 9)]
        + [(EventKind.BLOCKING_STARTED, 5), (EventKind.FULLY_BLOCKED, 8)]
        + [(EventKind.THROTTLING_SOON, 2), (EventKind.BLOCKING_SOON, 5)],
        key=str,
    )


def test_a_node_with_a_slow_clock_never_announces_a_lower_stage(
    store: MemoryStore, catalog: Catalog, events: list[Event]
) -> None:
    notifier = CallbackNotifier(events.append)
    ahead = Enforcer(store, DEFAULT_POLICY, catalog, clock=Clock(), notifier=notifier)
    ahead.check(conn(), [hop(OUTDATED)])
    ahead._clock = Clock(when(45))
    ahead.check(conn(), [hop(OUTDATED)])
    behind = Enforcer(store, DEFAULT_POLICY, catalog, clock=Clock(when(31)), notifier=notifier)
    behind.check(conn(), [hop("15.1.2507.35")])  # another outdated build: a real write
    stored = store.get(SERVER)
    assert stored is not None
    assert (stored.value.build, stored.value.notified_stage) == (ExchangeBuild(15, 1, 2507, 35), 3)
    assert kinds(events) == [(EventKind.DETECTED, 1), (EventKind.STAGE_CHANGED, 3)]


def test_a_failing_notifier_never_stops_mail(
    store: MemoryStore, catalog: Catalog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Event] = []

    def explode(event: Event) -> None:
        calls.append(event)
        raise RuntimeError("SMTP relay for alerts is down")

    enforcer = Enforcer(
        store, DEFAULT_POLICY, catalog, clock=clock, notifier=CallbackNotifier(explode)
    )
    with caplog.at_level(logging.WARNING, logger="tbes.enforcer"):
        decision = enforcer.check(conn(), [hop(OUTDATED)])
    assert decision.stage is not None
    assert decision.stage.number == 1
    assert [e.kind for e in calls] == [EventKind.DETECTED]
    assert "notifier failed" in caplog.text
    stored = store.get(SERVER)
    assert stored is not None
    assert stored.value.notified_stage == 1
    enforcer.check(conn(), [hop(OUTDATED)])
    assert len(calls) == 1


def test_logging_notifier_writes_one_line_per_event(caplog: pytest.LogCaptureFixture) -> None:
    event = Event(
        EventKind.FULLY_BLOCKED, SERVER, TENANT, T0, 8, ExchangeBuild.parse(OUTDATED), "x"
    )
    with caplog.at_level(logging.INFO, logger="tbes.events"):
        LoggingNotifier().notify(event)
    assert caplog.messages == [
        f"FULLY_BLOCKED id={event.id} server={SERVER} tenant={TENANT} connector=- stage=8 "
        f"build={OUTDATED} at=2026-01-05T10:00:00+00:00 next=-: x"
    ]


def test_logging_notifier_escapes_text_from_outside(caplog: pytest.LogCaptureFixture) -> None:
    # Ids and connector names come from connections and configuration: a forged line break
    # or terminal escape must not reach the log as such.
    event = Event(
        EventKind.DETECTED,
        "ex01\nFAKE server=evil\x1b[2J",
        "fabrikam\r\n",
        T0,
        1,
        None,
        "build 15.1.2507.39 is outdated\u202e",
        connector="edge\n",
        next_change=T0 + dt.timedelta(days=30),
    )
    with caplog.at_level(logging.INFO, logger="tbes.events"):
        LoggingNotifier().notify(event)
    (line,) = caplog.messages
    assert not {"\n", "\r", "\x1b", "\u202e"} & set(line)
    assert "server=ex01\\nFAKE server=evil\\x1b[2J " in line
    assert "connector=edge\\n " in line
    assert "next=2026-02-04T10:00:00+00:00:" in line


def test_shipped_notifiers_satisfy_the_protocol() -> None:
    assert isinstance(LoggingNotifier(), Notifier)
    assert isinstance(CallbackNotifier(print), Notifier)


# ---- values and the clock ----------------------------------------------------------------


def test_utc_now_is_an_aware_utc_instant() -> None:
    before = dt.datetime.now(UTC)
    now = utc_now()
    assert now.tzinfo is UTC
    assert before <= now <= dt.datetime.now(UTC)


def test_a_naive_clock_is_refused(store: MemoryStore, catalog: Catalog) -> None:
    enforcer = Enforcer(store, DEFAULT_POLICY, catalog, clock=lambda: dt.datetime(2026, 1, 5))
    with pytest.raises(NaiveDatetimeError):
        enforcer.check(conn(), [hop(OUTDATED)])


def test_events_normalise_instants_to_utc_and_refuse_naive_ones() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    event = Event(
        EventKind.DETECTED, SERVER, TENANT, dt.datetime(2026, 1, 5, 12, tzinfo=plus2), 1, None, ""
    )
    assert event.at == T0
    assert event.at.utcoffset() == dt.timedelta(0)
    with pytest.raises(NaiveDatetimeError):
        Event(EventKind.DETECTED, SERVER, TENANT, dt.datetime(2026, 1, 5), 1, None, "")


@pytest.mark.parametrize(
    "fields",
    [
        ("", TENANT, ConnectorKind.ON_PREMISES),
        (SERVER, "", ConnectorKind.ON_PREMISES),
        (SERVER, TENANT, "ON_PREMISES"),
    ],
)
def test_connection_refuses_empty_ids_and_unknown_kinds(fields: tuple[Any, ...]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Connection(*fields)


def test_negative_retries_are_refused(store: MemoryStore, catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="retries"):
        Enforcer(store, DEFAULT_POLICY, catalog, retries=-1)


def test_connections_and_events_round_trip_through_serde() -> None:
    connection = Connection(SERVER, TENANT, ConnectorKind.PARTNER, "192.0.2.1", None, "CN=ex01")
    assert loads(dumps(connection), Connection) == connection
    event = Event(EventKind.PAUSED, SERVER, TENANT, T0, 3, ExchangeBuild.parse(OUTDATED), "x")
    assert loads(dumps(event), Event) == event


# ---- properties over random histories ----------------------------------------------------

# One step of a history: which of two nodes, how far its clock moves, what the message says.
_MESSAGES = {
    "outdated": [OUTDATED],
    "unsupported": ["15.0.1497.48"],
    "compliant": [COMPLIANT],
    "forged": ["16.0.0.0"],
    "stripped": [],
}
_steps = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.integers(0, 20 * 24 * 60),  # minutes the node's clock moves on
        st.sampled_from(sorted(_MESSAGES)),
    ),
    max_size=25,
)


Step = tuple[Versioned[ServerState] | None, Versioned[ServerState] | None, list[Event]]


def _replay(
    steps: list[tuple[int, int, str]], store: MemoryStore, catalog: Catalog, *, skew: bool = True
) -> list[Step]:
    """Two nodes check messages from one server, sharing ``store``: with their own clocks
    (``skew``), or with one clock that only moves forward.

    Returns, for each check, the stored state before and after it and the events it sent.
    """
    heard: list[Event] = []
    shared = Clock()
    clocks = [Clock(), Clock()] if skew else [shared, shared]
    nodes = [
        Enforcer(store, DEFAULT_POLICY, catalog, clock=c, notifier=CallbackNotifier(heard.append))
        for c in clocks
    ]
    history: list[Step] = []
    for node, minutes, message in steps:
        clocks[node].now += dt.timedelta(minutes=minutes)
        before = store.get(SERVER)
        nodes[node].check(conn(), [hop(build) for build in _MESSAGES[message]])
        history.append((before, store.get(SERVER), list(heard)))
        heard.clear()
    return history


def _block_minutes(stage: int) -> int:
    return DEFAULT_POLICY.stage_table.stages[stage - 1].block_minutes


# Node 0's clock has told stage 2; node 1's, behind, sees a relapse a week before stage 2:
# no advance notice of a stage people have already heard of.
@example(
    steps=[
        (0, 0, "outdated"),
        (0, 14400, "forged"),
        (0, 28800, "stripped"),
        (1, 4320, "compliant"),
        (1, 28800, "outdated"),
    ],
    skew=True,
)
@given(steps=_steps, skew=st.booleans())
def test_announcements_tell_each_episode_once_and_never_repeat_a_stage(
    steps: list[tuple[int, int, str]], skew: bool
) -> None:
    # ``running`` is what people were last told: enforcement runs (DETECTED or a stage) or it
    # stopped (REMEDIATED); ``last`` is the stage they last heard of in this episode.
    # REMEDIATED and RELAPSED alternate; no stage and no DETECTED is ever told twice.
    running, last, blocking, full = False, 0, False, False
    for before, after, events in _replay(steps, MemoryStore(), CATALOG, skew=skew):
        old = None if before is None else before.value
        new = None if after is None else after.value
        starts = (
            new is not None
            and new.in_episode
            and (old is None or old.first_detected != new.first_detected)
        )
        assert [e.kind for e in events].count(EventKind.DETECTED) == (1 if starts else 0)
        for event in events:
            kind, stage = event.kind, event.stage
            if kind is EventKind.DETECTED:
                assert not running
                running, last, blocking, full = True, stage or 0, False, False
            elif kind is EventKind.REMEDIATED:
                assert running  # at most once until people hear of enforcement again
                running = False
            elif kind is EventKind.RELAPSED:
                assert stage is not None
                assert not running  # only after a REMEDIATED
                running, last = True, max(last, stage)
            elif kind is EventKind.STAGE_CHANGED:
                assert stage is not None
                assert stage > last
                running, last = True, stage
            elif kind in NOTICE_KINDS:  # an advance notice: of a stage still ahead
                assert running
                assert stage is not None
                assert stage > last
            elif kind is EventKind.BLOCKING_STARTED:
                assert running
                assert stage == last
                assert not blocking
                blocking = True
            else:
                assert kind is EventKind.FULLY_BLOCKED
                assert running
                assert stage == last
                assert not full
                full = True
        if running:  # every threshold of the stage people last heard of was announced
            assert blocking == (_block_minutes(last) > 0)
            assert full == (_block_minutes(last) >= 60)
        if new is not None and new.first_detected is not None and not skew:
            # The marker is what people were last told (docs/storage.md, "Events").
            assert new.in_episode == running
            assert new.notified_stage == (last or None)


@given(steps=_steps, later=st.integers(0, 200 * 24 * 60))
def test_a_stripped_message_is_decided_by_the_stored_state_and_changes_only_the_marker(
    steps: list[tuple[int, int, str]], later: int
) -> None:
    store = MemoryStore()
    _replay(steps, store, CATALOG)
    before = store.get(SERVER)
    now = T0 + dt.timedelta(minutes=later)
    heard: list[Event] = []
    enforcer = Enforcer(
        store, DEFAULT_POLICY, CATALOG, clock=Clock(now), notifier=CallbackNotifier(heard.append)
    )
    decision = enforcer.check(conn(), [])
    after = store.get(SERVER)
    if before is None:
        assert after is None
        assert (decision.action, decision.stage) == (Action.ACCEPT, None)
        return
    assert after is not None
    assert decision == decide(before.value, now, DEFAULT_POLICY)
    # The server's assessment and episode are untouched; the marker moves only to announce.
    assert after.value == attrs.evolve(before.value, notified_stage=after.value.notified_stage)
    assert (after != before) == bool(heard)
    assert {e.kind for e in heard} <= {
        EventKind.STAGE_CHANGED,
        EventKind.BLOCKING_STARTED,
        EventKind.FULLY_BLOCKED,
        *NOTICE_KINDS,  # told in the write that moves the marker
    }
