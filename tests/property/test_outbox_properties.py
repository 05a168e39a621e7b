"""The outbox of every store behaves like a simple model under enqueue, claim, mark and crash.

A Hypothesis state machine drives a store's outbox and a plain model with the same random
batches (some lost to a compare-and-swap conflict, whose events must not be enqueued),
claims for two receivers, deliveries, retries, clock moves, crashes (the store is closed
and opened again: a SQL store keeps everything, claims included) and pruning. After every
step a claim must return exactly the events the model says are due, oldest first. It runs
on the memory and SQLite stores, and on PostgreSQL with fewer examples.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from integration.pg import PostgresServer
from tbes.compliance import Compliance
from tbes.errors import StoreConflictError
from tbes.events import Event, EventKind
from tbes.state import ServerState
from tbes.store import (
    EventWrite,
    MemoryStore,
    PostgresStore,
    RowStore,
    SQLiteStore,
    StateWrite,
    Write,
)

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
RECEIVERS = ("hook", "mail")
LEASE = dt.timedelta(seconds=60)
# Events of various ages (for pruning) and kinds; each has its own deterministic id.
EVENTS = tuple(
    Event(
        kind,
        f"mx{n}",
        "contoso",
        T0 - dt.timedelta(days=age),
        1,
        None,
        f"event {n}",
    )
    for n, (kind, age) in enumerate(
        [
            (EventKind.DETECTED, 0),
            (EventKind.STAGE_CHANGED, 2),
            (EventKind.THROTTLING_SOON, 10),
            (EventKind.BLOCKING_SOON, 40),
            (EventKind.REMEDIATED, 1),
            (EventKind.PAUSED, 20),
        ]
    )
)
STATE = ServerState("mx0", "contoso", None, Compliance.NOT_APPLICABLE, None, None, None)


class OutboxMachine(RuleBasedStateMachine):
    new_store: Callable[[], Callable[[], RowStore]]

    def __init__(self) -> None:
        super().__init__()
        self.open_store = self.new_store()
        self.store = self.open_store()
        self.now = T0
        self.version: int | None = None  # the stored version of STATE's row
        self.enqueued: list[str] = []  # event ids, oldest first
        # (receiver, event id) -> [attempts, due instant or None, delivered?]
        self.records: dict[tuple[str, str], list[object]] = {}

    def teardown(self) -> None:
        self.store.close()

    @initialize()
    def start(self) -> None:
        self.version = self.store.put(STATE, expected_version=None)

    @rule(
        events=st.lists(st.sampled_from(EVENTS), max_size=3, unique_by=lambda e: e.id),
        conflict=st.booleans(),
    )
    def enqueue(self, events: list[Event], conflict: bool) -> None:
        expected = (self.version or 0) + 5 if conflict else self.version
        writes: list[Write] = [StateWrite(STATE, expected), *(EventWrite(e) for e in events)]
        if conflict:  # the batch is lost whole: its events are not in the outbox
            with pytest.raises(StoreConflictError):
                self.store.put_many(writes)
            return
        versions = self.store.put_many(writes)
        self.version = versions[0]
        assert versions[1:] == (1,) * len(events)
        for event in events:
            if event.id not in self.enqueued:
                self.enqueued.append(event.id)

    def _due(self, receiver: str) -> list[str]:
        due = []
        for event_id in self.enqueued:
            record = self.records.get((receiver, event_id))
            if record is None or (not record[2] and record[1] <= self.now):  # type: ignore[operator]
                due.append(event_id)
        return due

    @rule(receiver=st.sampled_from(RECEIVERS), limit=st.integers(1, 4))
    def claim(self, receiver: str, limit: int) -> None:
        want = self._due(receiver)[:limit]
        got = self.store.claim_events(receiver, self.now, lease=LEASE, limit=limit)
        assert [p.event.id for p in got] == want
        for pending in got:
            record = self.records.setdefault((receiver, pending.event.id), [0, None, False])
            record[0] = int(record[0]) + 1  # type: ignore[call-overload]
            record[1] = self.now + LEASE
            assert pending.attempts == record[0]
            assert pending.event == next(e for e in EVENTS if e.id == pending.event.id)

    @rule(receiver=st.sampled_from(RECEIVERS), data=st.data())
    def deliver(self, receiver: str, data: st.DataObject) -> None:
        claimed = sorted(k[1] for k in self.records if k[0] == receiver)
        if not claimed:
            return
        event_id = data.draw(st.sampled_from(claimed))
        self.store.mark_delivered(receiver, event_id, self.now)
        self.records[(receiver, event_id)][2] = True

    @rule(receiver=st.sampled_from(RECEIVERS), data=st.data(), wait=st.integers(0, 300))
    def fail(self, receiver: str, data: st.DataObject, wait: int) -> None:
        claimed = sorted(k[1] for k in self.records if k[0] == receiver)
        if not claimed:
            return
        event_id = data.draw(st.sampled_from(claimed))
        at = self.now + dt.timedelta(seconds=wait)
        self.store.retry_later(receiver, event_id, at)
        record = self.records[(receiver, event_id)]
        if not record[2]:  # a delivered event stays delivered
            record[1] = at

    @rule(seconds=st.integers(1, 200))
    def advance(self, seconds: int) -> None:
        self.now += dt.timedelta(seconds=seconds)

    @rule()
    def crash(self) -> None:
        # The sender dies: its claims stay in the store until their lease runs out.
        if isinstance(self.store, MemoryStore):
            return  # a memory store does not outlive its process: nothing to reopen
        self.store.close()
        self.store = self.open_store()

    @rule(
        keep=st.integers(0, 30),
        expire=st.integers(0, 60),
        receivers=st.sets(st.sampled_from(RECEIVERS)),
    )
    def prune(self, keep: int, expire: int, receivers: set[str]) -> None:
        gone = self.store.prune_outbox(
            self.now,
            keep=dt.timedelta(days=keep),
            expire=dt.timedelta(days=expire),
            receivers=sorted(receivers),
        )
        by_id = {e.id: e for e in EVENTS}
        dropped = [
            event_id
            for event_id in self.enqueued
            if by_id[event_id].at < self.now - dt.timedelta(days=expire)
            or (
                by_id[event_id].at < self.now - dt.timedelta(days=keep)
                and all(self.records.get((r, event_id), [0, None, False])[2] for r in receivers)
            )
        ]
        assert gone == len(dropped)
        for event_id in dropped:
            self.enqueued.remove(event_id)
            for receiver in RECEIVERS:
                self.records.pop((receiver, event_id), None)


def _run(new_store: Callable[[], Callable[[], RowStore]], *, most: int) -> None:
    """Run the machine; ``new_store()`` makes one example's store and returns its opener."""
    machine = type("Machine", (OutboxMachine,), {"new_store": staticmethod(new_store)})
    current = settings()
    capped = settings(current, stateful_step_count=25, max_examples=min(current.max_examples, most))
    run_state_machine_as_test(machine, settings=capped)


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tbes-outbox-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_memory_outbox_behaves_like_the_model() -> None:
    def new_store() -> Callable[[], RowStore]:
        store = MemoryStore()
        return lambda: store

    _run(new_store, most=100)


def test_sqlite_outbox_behaves_like_the_model_across_crashes(tmp_dir: Path) -> None:
    files = iter(range(1_000_000))

    def new_store() -> Callable[[], RowStore]:
        path = tmp_dir / f"{next(files)}.db"
        return lambda: SQLiteStore(path)

    _run(new_store, most=40)


def test_postgres_outbox_behaves_like_the_model_across_crashes(pg_server: PostgresServer) -> None:
    def new_store() -> Callable[[], RowStore]:
        dsn = pg_server.fresh_dsn()
        return lambda: PostgresStore(dsn)

    _run(new_store, most=15)
