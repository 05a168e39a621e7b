"""Several OS processes share one store: no lost update, no over-spent quota, one event each.

Four spawned processes act as four MTA nodes of one tenant. Each walks the same 140 days
checking messages from the same three outdated servers, and on every step tries to grant
a one-day pause of one of them from the tenant's quota (the days collide on purpose).
Afterwards the quota is spent exactly, every granted pause is in the ledger and in its
server's state, and each notification was sent by exactly one process.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from integration.pg import PostgresServer
from tbes.catalog import Catalog
from tbes.enforcer import Connection, Enforcer
from tbes.errors import PauseConflictError, QuotaExceededError, StoreConflictError
from tbes.events import NOTICE_KINDS, Event, EventKind
from tbes.notifiers import CallbackNotifier
from tbes.policy import ConnectorKind, Policy
from tbes.state import ServerState
from tbes.store import PostgresStore, SQLiteStore, StateStore, Write

PROCESSES = 4
QUOTA = 24
TENANT = "fabrikam"
SERVERS = ("ex01.fabrikam.example", "ex02.fabrikam.example", "ex03.fabrikam.example")
DAY0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
DAYS = range(0, 140, 3)  # pauses start at most 4 days after a step: all within 2026
OUTDATED_HOP = (
    "from EXMBX01.fabrikam.local (10.0.0.7) by {server} (192.0.2.10) with Microsoft SMTP "
    "Server (version=TLS1_2, cipher=TLS_AES_256) id 15.1.2507.39; Mon, 5 Jan 2026 09:00:00 +0000"
)


class _Clock:
    def __init__(self) -> None:
        self.now = DAY0

    def __call__(self) -> dt.datetime:
        return self.now


class _CountingStore:
    """Counts the compare-and-swap races a process lost (each one was retried)."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.conflicts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, state: ServerState, *, expected_version: int | None) -> int:
        try:
            return self.inner.put(state, expected_version=expected_version)
        except StoreConflictError:
            self.conflicts += 1
            raise

    def put_many(self, writes: Sequence[Write]) -> tuple[int, ...]:
        try:
            return self.inner.put_many(writes)
        except StoreConflictError:
            self.conflicts += 1
            raise


def _open(kind: str, where: str) -> StateStore:
    return SQLiteStore(where) if kind == "sqlite" else PostgresStore(where)


def _node(kind: str, where: str, index: int, start: Any, results: Any) -> None:
    """One MTA node: check every server at each step, and try to grant one pause."""
    store = _CountingStore(_open(kind, where))
    events: list[Event] = []
    clock = _Clock()
    policy = Policy(pause_quota_days=QUOTA)
    enforcer = Enforcer(
        store,
        policy,
        Catalog.default(),
        clock=clock,
        retries=100,
        notifier=CallbackNotifier(events.append),
    )
    granted: list[tuple[str, str]] = []
    surfaced = 0
    quota_left = True
    start.wait()
    for step, day in enumerate(DAYS):
        clock.now = DAY0 + dt.timedelta(days=day, minutes=index)
        for server in SERVERS:
            conn = Connection(server, TENANT, ConnectorKind.ON_PREMISES)
            enforcer.check(conn, [OUTDATED_HOP.format(server=server)])
        if not quota_left:
            continue
        server = SERVERS[(step + index) % len(SERVERS)]
        first = clock.now.date() + dt.timedelta(days=(step * 7 + index) % 5)
        try:
            enforcer.pause(TENANT, server, 1, start=first)
            granted.append((server, first.isoformat()))
        except PauseConflictError:
            pass  # another node paused that server on that day first
        except QuotaExceededError:
            quota_left = False
        except StoreConflictError:
            surfaced += 1
    store.close()
    results.put(
        {
            "granted": granted,
            "events": [(e.kind.value, e.server_id, e.stage) for e in events],
            "surfaced": surfaced,
            "conflicts": store.conflicts,
            "quota_left": quota_left,
        }
    )


def _run_nodes(kind: str, where: str) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    nodes = [
        ctx.Process(target=_node, args=(kind, where, index, start, results))
        for index in range(PROCESSES)
    ]
    for node in nodes:
        node.start()
    try:
        outcome = [results.get(timeout=120) for _ in nodes]
    finally:
        for node in nodes:
            node.join(timeout=30)
            if node.is_alive():
                node.kill()
    assert [node.exitcode for node in nodes] == [0] * PROCESSES
    return outcome


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.service("postgresql"))]
)
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, where) of a store every process opens for itself."""
    if request.param == "sqlite":
        return ("sqlite", str(tmp_path / "shared.db"))
    server: PostgresServer = request.getfixturevalue("pg_server")
    return ("postgres", server.fresh_dsn())


def test_processes_sharing_a_store_spend_the_quota_exactly_and_announce_once(
    shared_store: tuple[str, str],
) -> None:
    kind, where = shared_store
    outcome = _run_nodes(kind, where)
    store = _open(kind, where)

    # The quota ran out for everyone, and exactly the quota was granted: no over-spend.
    assert not any(node["quota_left"] for node in outcome)
    granted = [tuple(pause) for node in outcome for pause in node["granted"]]
    assert len(granted) == QUOTA
    ledger = store.get_ledger(TENANT)
    assert ledger is not None
    assert ledger.value.used(2026) == QUOTA
    # No lost update: every grant a process saw succeed is in the ledger, once.
    assert sorted(granted) == sorted(
        (p.server_id, p.start.isoformat()) for p in ledger.value.pauses
    )
    assert all(p.days == 1 for p in ledger.value.pauses)
    # Ledger and states were written together: each state holds its server's pauses.
    for server in SERVERS:
        stored = store.get(server)
        assert stored is not None
        assert stored.value.pauses == ledger.value.pauses_for(server)
    # The processes really raced (and every lost race was retried or surfaced).
    assert sum(node["conflicts"] for node in outcome) > 0

    # Each change was announced by exactly one process.
    heard = Counter(
        (kind_, server, stage) for node in outcome for kind_, server, stage in node["events"]
    )
    for server in SERVERS:
        pauses = Counter(k for k, s, _ in heard.elements() if s == server and k == "PAUSED")
        assert pauses["PAUSED"] == len(ledger.value.pauses_for(server))
        once = {
            (EventKind.DETECTED.value, 1),
            *((EventKind.STAGE_CHANGED.value, stage) for stage in range(2, 9)),
            (EventKind.BLOCKING_STARTED.value, 5),
            (EventKind.FULLY_BLOCKED.value, 8),
        }
        notices = {k.value for k in NOTICE_KINDS}
        got = {
            (k, stage): n
            for (k, s, stage), n in heard.items()
            if s == server and k != "PAUSED" and k not in notices
        }
        assert got == dict.fromkeys(once, 1), server
        # An advance notice is given again only when a pause moved the start it announces,
        # and then as the same event (one episode, one stage: one id).
        told = {(k, stage) for (k, s, stage) in heard if s == server and k in notices}
        assert told <= {(EventKind.THROTTLING_SOON.value, 2), (EventKind.BLOCKING_SOON.value, 5)}
    store.close()
