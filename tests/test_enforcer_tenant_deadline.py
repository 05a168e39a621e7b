"""Issue 13 (items 5 and the per-check deadline): a tenant never freezes a server's state,
a pause of a server never seen needs ``force``, and a check ends at its deadline.

Stages are worked out from the SPEC's default stage table (stage 2 from day 30, 5 from
day 60, 8 from day 90, fully blocked) and its window rule (offset = first 8 bytes of
SHA-256 of the server id, big-endian, mod 60; r = (minute - offset) mod 60; r < block
blocks). Paused UTC days do not count towards the stages (SPEC section 5).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbes.catalog import Catalog
from tbes.decision import Action
from tbes.enforcer import FAIL_CLOSED_REPLY, Connection, Enforcer
from tbes.errors import InvalidPauseError, InvalidValueError, StoreConflictError, UnseenServerError
from tbes.events import Event, EventKind
from tbes.ledger import Pause
from tbes.notifiers import CallbackNotifier
from tbes.policy import DEFAULT_POLICY, ConnectorKind
from tbes.state import ServerState
from tbes.store import MemoryStore, Write
from tbes.store._deadline import remaining

UTC = dt.UTC
SERVER = "ex01.fabrikam.example"
T0 = dt.datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
OUTDATED = "15.1.2507.39"  # Exchange 2016 CU23 below the October 2025 SU
COMPLIANT = "15.1.2507.61"
OFFSET = int.from_bytes(hashlib.sha256(SERVER.encode()).digest()[:8], "big") % 60
CATALOG = Catalog.default()


def hop(build: str) -> str:
    return (
        f"from EXMBX01.fabrikam.local (10.0.0.7) by {SERVER} (192.0.2.10) with Microsoft SMTP "
        f"Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id {build}; "
        "Mon, 5 Jan 2026 10:00:00 +0000"
    )


def when(day: int, r: int = 0) -> dt.datetime:
    """11:00 UTC ``day`` days after T0, at window position ``r`` (0: inside any block)."""
    return (T0 + dt.timedelta(days=day, hours=1)).replace(minute=(OFFSET + r) % 60)


def conn(tenant: str) -> Connection:
    return Connection(SERVER, tenant, ConnectorKind.ON_PREMISES, peer_ip="192.0.2.10")


class Clock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def enforcer_with(store: Any, events: list[Event], clock: Clock, **kwargs: Any) -> Enforcer:
    notifier = CallbackNotifier(events.append)
    return Enforcer(store, DEFAULT_POLICY, CATALOG, clock=clock, notifier=notifier, **kwargs)


# ---- item 5: a pause of a server never seen ---------------------------------------------


def test_a_pause_of_a_server_never_seen_is_refused_and_charges_nothing() -> None:
    store = MemoryStore()
    events: list[Event] = []
    enforcer = enforcer_with(store, events, Clock())
    with pytest.raises(UnseenServerError, match=f"no server {SERVER} has been seen") as caught:
        enforcer.pause("Fabrikam", SERVER, 3)
    assert isinstance(caught.value, InvalidPauseError)
    assert "Fabrikam" in str(caught.value)
    assert store.get(SERVER) is None
    assert store.get_ledger("Fabrikam") is None
    assert events == []


@pytest.mark.parametrize("force", [1, "yes", None])
def test_force_must_be_a_bool(force: object) -> None:
    enforcer = enforcer_with(MemoryStore(), [], Clock())
    with pytest.raises(InvalidPauseError, match="force must be a bool"):
        enforcer.pause("fabrikam", SERVER, 3, force=force)  # type: ignore[arg-type]


def test_a_mis_cased_forced_pause_does_not_exempt_the_server_from_150_days_of_enforcement() -> None:
    store, clock = MemoryStore(), Clock()
    events: list[Event] = []
    enforcer = enforcer_with(store, events, clock)
    enforcer.pause("Fabrikam", SERVER, 3, force=True)  # Jan 5-7; the real tenant is fabrikam
    decisions = {}
    for day in range(0, 151):
        clock.now = when(day)
        decisions[day] = enforcer.check(conn("fabrikam"), [hop(OUTDATED)])
    stored = store.get(SERVER)
    assert stored is not None
    assert stored.value.tenant == "fabrikam"
    assert stored.value.first_detected == when(0)  # the first message, despite the pause
    # Days 0-2 are paused; then stage 1 (reported only) until 30 unpaused days have passed.
    assert all(decisions[day].paused for day in (0, 1, 2))
    assert decisions[20].action is Action.ACCEPT
    assert decisions[20].stage is not None
    assert decisions[20].stage.number == 1
    # 90 + 3 paused days later: stage 8, blocked every minute of the hour.
    assert decisions[94].stage is not None
    assert decisions[94].stage.number == 8
    assert decisions[150].action is Action.BLOCK
    assert decisions[150].reply is not None
    assert decisions[150].reply.code == 550
    assert EventKind.FULLY_BLOCKED in [event.kind for event in events]
    assert {event.tenant for event in events if event.kind is not EventKind.PAUSED} == {"fabrikam"}
    # The pause stays charged to the ledger it was granted from.
    ledger = store.get_ledger("Fabrikam")
    assert ledger is not None
    assert ledger.value.pauses == (Pause(SERVER, T0.date(), 3),)
    assert store.get_ledger("fabrikam") is None


# ---- item 5: the tenant follows the connection ------------------------------------------


def test_a_blocked_server_of_a_renamed_tenant_remediates_and_is_accepted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = MemoryStore(), Clock()
    events: list[Event] = []
    enforcer = enforcer_with(store, events, clock)
    enforcer.check(conn("fabrikam"), [hop(OUTDATED)])
    clock.now = when(40)
    enforcer.pause("fabrikam", SERVER, 2)
    clock.now = when(95)
    assert enforcer.check(conn("fabrikam"), [hop(OUTDATED)]).action is Action.BLOCK
    renamed = conn("fabrikam-corp")
    clock.now = when(96)
    with caplog.at_level(logging.WARNING, logger="tbes.enforcer"):
        still = enforcer.check(renamed, [hop(OUTDATED)])
    assert still.action is Action.BLOCK  # the episode continues under the new tenant
    assert "moves from tenant fabrikam to fabrikam-corp" in caplog.text
    moved = store.get(SERVER)
    assert moved is not None
    assert (moved.value.tenant, moved.value.first_detected) == ("fabrikam-corp", T0)
    assert moved.value.pauses == (Pause(SERVER, when(40).date(), 2),)
    clock.now = when(97)
    remediated = enforcer.check(renamed, [hop(COMPLIANT)])
    assert (remediated.action, remediated.reply) == (Action.ACCEPT, None)
    clock.now = when(98)
    assert enforcer.check(renamed, [hop(COMPLIANT)]).action is Action.ACCEPT
    stored = store.get(SERVER)
    assert stored is not None
    assert stored.value.tenant == "fabrikam-corp"
    assert stored.value.compliant_since == when(97)
    assert events[-1].kind is EventKind.REMEDIATED
    assert events[-1].tenant == "fabrikam-corp"
    # Granted pauses stay charged where they were: the old tenant's ledger is untouched.
    old_ledger = store.get_ledger("fabrikam")
    assert old_ledger is not None
    assert old_ledger.value.used(2026) == 2
    assert store.get_ledger("fabrikam-corp") is None


@settings(max_examples=50, deadline=None)
@given(
    tenants=st.lists(st.sampled_from(["fabrikam", "Fabrikam", "contoso"]), min_size=1, max_size=8),
    builds=st.lists(st.sampled_from([OUTDATED, COMPLIANT]), min_size=8, max_size=8),
)
def test_the_tenant_changes_who_owns_the_server_never_how_it_is_enforced(
    tenants: list[str], builds: list[str]
) -> None:
    """Whatever tenants its connections name, a server is decided as if they named one."""
    moving, steady = MemoryStore(), MemoryStore()
    clock = Clock()
    by_moving = enforcer_with(moving, [], clock)
    by_steady = enforcer_with(steady, [], clock)
    for day, (tenant, build) in enumerate(zip(tenants, builds, strict=False)):
        clock.now = when(day * 13)
        assert by_moving.check(conn(tenant), [hop(build)]) == by_steady.check(
            conn("fabrikam"), [hop(build)]
        )
    moved, kept = moving.get(SERVER), steady.get(SERVER)
    assert moved is not None
    assert kept is not None
    assert moved.value.tenant == tenants[-1]
    assert (moved.value.first_detected, moved.value.compliant_since) == (
        kept.value.first_detected,
        kept.value.compliant_since,
    )


def test_a_stripped_message_from_another_tenant_records_nothing() -> None:
    store, clock = MemoryStore(), Clock()
    events: list[Event] = []
    enforcer = enforcer_with(store, events, clock)
    enforcer.check(conn("fabrikam"), [hop(OUTDATED)])
    before = store.get(SERVER)
    clock.now = when(95)
    assert enforcer.check(conn("contoso"), []).action is Action.BLOCK
    assert store.get(SERVER) == before


# ---- the per-check deadline -------------------------------------------------------------


class ConflictingStore:
    """A MemoryStore whose state writes always lose a race, each after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.inner = MemoryStore()
        self.delay = delay
        self.attempts = 0
        self.budgets: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, server_id: str) -> Any:
        self.budgets.append(remaining(1000.0))
        return self.inner.get(server_id)

    def put(self, state: ServerState, *, expected_version: int | None) -> int:
        self.attempts += 1
        time.sleep(self.delay)
        raise StoreConflictError("another writer got there first")

    def put_many(self, writes: Sequence[Write]) -> tuple[int, ...]:
        raise AssertionError("not used by check")


@pytest.mark.parametrize("fail_closed", [False, True])
def test_a_check_whose_writes_always_conflict_fails_at_its_deadline(
    fail_closed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    store = ConflictingStore(delay=0.02)
    enforcer = enforcer_with(
        store, [], Clock(), retries=10**9, check_timeout=0.3, fail_closed=fail_closed
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tbes.enforcer"):
        decision = enforcer.check(conn("fabrikam"), [hop(OUTDATED)])
    assert time.monotonic() - started < 0.3 + 1.5
    assert 1 <= store.attempts < 10**9
    assert "deadline of 0.3 s passed" in caplog.text
    if fail_closed:
        assert (decision.action, decision.reply) == (Action.THROTTLE, FAIL_CLOSED_REPLY)
    else:
        assert (decision.action, decision.reply) == (Action.ACCEPT, None)
        assert "the store failed" in decision.reason
    assert store.inner.get(SERVER) is None  # nothing half-written


def test_the_store_sees_the_checks_budget_and_nothing_outside_a_check() -> None:
    store = ConflictingStore(delay=0.0)
    enforcer = enforcer_with(store, [], Clock(), retries=0, check_timeout=0.5)
    enforcer.check(conn("fabrikam"), [hop(OUTDATED)])
    assert len(store.budgets) == 1
    assert 0.0 < store.budgets[0] <= 0.5
    assert remaining(1000.0) == 1000.0  # the budget closes with the check


def test_the_default_budget_is_two_seconds() -> None:
    store = ConflictingStore(delay=0.0)
    enforcer_with(store, [], Clock(), retries=0).check(conn("fabrikam"), [hop(OUTDATED)])
    assert 1.0 < store.budgets[0] <= 2.0


@pytest.mark.parametrize("bad", [0, -1, 0.0, math.nan, math.inf, True, "2", None])
def test_check_timeout_must_be_a_finite_positive_number(bad: object) -> None:
    with pytest.raises(InvalidValueError, match="check_timeout"):
        Enforcer(MemoryStore(), DEFAULT_POLICY, CATALOG, check_timeout=bad)  # type: ignore[arg-type]
