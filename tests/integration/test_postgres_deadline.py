"""PostgresStore against a locked row and a stopped server: every check ends in time.

A row lock held by another transaction, and a server that answers nothing (SIGSTOP of the
postmaster and every backend), each make ``Enforcer.check`` fail open within the store's
deadline instead of hanging; a check of another server is not held up by a lock on the first;
and after SIGCONT the store works again with its rows intact. These tests stop their server,
so they run one of their own rather than the session's shared one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from integration.pg import PostgresServer
from tbes.catalog import Catalog
from tbes.decision import Action, Decision
from tbes.enforcer import FAIL_CLOSED_REPLY, Connection, Enforcer
from tbes.errors import InvalidValueError, StoreError
from tbes.policy import ConnectorKind, Policy
from tbes.state import ServerState
from tbes.store import PostgresStore, Versioned
from tbes.store._deadline import DEFAULT_CHECK_TIMEOUT, check_deadline

pytestmark = pytest.mark.service("postgresql")

DEADLINE = DEFAULT_CHECK_TIMEOUT
MARGIN = 2.0  # generous: the machine may be busy; a hang is what is being ruled out
TENANT = "fabrikam"
A, B = "ex01.fabrikam.example", "ex02.fabrikam.example"
DAY0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
OUTDATED_HOP = (
    "from EXMBX01.fabrikam.local (10.0.0.7) by {server} (192.0.2.10) with Microsoft SMTP "
    "Server (version=TLS1_2, cipher=TLS_AES_256) id 15.1.2507.39; Mon, 5 Jan 2026 09:00:00 +0000"
)
FAILED_OPEN = "the store failed, so the connection is accepted"


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


class _Clock:
    def __init__(self) -> None:
        self.now = DAY0

    def __call__(self) -> dt.datetime:
        return self.now


def _seen(state: ServerState, at: dt.datetime) -> ServerState:
    return attrs.evolve(state, last_seen=at)


def _enforcer(store: PostgresStore, clock: _Clock, *, fail_closed: bool = False) -> Enforcer:
    return Enforcer(store, Policy(), Catalog.default(), clock=clock, fail_closed=fail_closed)


def _check(enforcer: Enforcer, server_id: str) -> Decision:
    conn = Connection(server_id, TENANT, ConnectorKind.ON_PREMISES)
    return enforcer.check(conn, [OUTDATED_HOP.format(server=server_id)])


class _Call:
    """``work()`` run in a thread of its own, so a test can see it hang and not hang itself."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.elapsed = 0.0
        self._work = work
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            self.result = self._work()
        except BaseException as exc:
            self.error = exc
        self.elapsed = time.monotonic() - started

    def done_within(self, seconds: float) -> bool:
        self._thread.join(seconds)
        return not self._thread.is_alive()


@contextlib.contextmanager
def _row_locked(dsn: str, server_id: str, how: str) -> Iterator[None]:
    """Another transaction holds ``server_id``'s row lock until the block ends."""
    import psycopg

    with psycopg.connect(dsn) as conn:  # not autocommit: the transaction stays open
        if how == "select-for-update":
            conn.execute("SELECT 1 FROM tbes_servers WHERE server_id = %s FOR UPDATE", (server_id,))
        else:  # an updated row, not yet committed: written back unchanged
            conn.execute("UPDATE tbes_servers SET data = data WHERE server_id = %s", (server_id,))
        try:
            yield
        finally:
            conn.rollback()


def _lock_waiters(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).fetchone()
        assert row is not None
        return int(row[0])


def _wait_for_lock_waiter(dsn: str) -> None:
    for _ in range(200):
        if _lock_waiters(dsn):
            return
        time.sleep(0.05)
    raise AssertionError("the writer never waited for the row lock")


@pytest.mark.parametrize("how", ["select-for-update", "uncommitted-update"])
def test_a_locked_row_fails_the_check_open_within_the_deadline(
    own_server: PostgresServer, how: str
) -> None:
    dsn = own_server.fresh_dsn()
    store = PostgresStore(dsn)
    clock = _Clock()
    enforcer = _enforcer(store, clock)
    _check(enforcer, A)
    before = store.get(A)
    assert before is not None
    with _row_locked(dsn, A, how):
        # A plain read takes no lock: it is answered at once with the committed row.
        read = _Call(lambda: store.get(A))
        assert read.done_within(DEADLINE + MARGIN), "get() waited for another's row lock"
        assert read.result == before
        clock.now += dt.timedelta(days=1)  # last_seen lags a day: the check must write
        check = _Call(lambda: _check(enforcer, A))
        assert check.done_within(DEADLINE + MARGIN), "the check waited for the row lock"
        assert check.error is None
        assert check.elapsed < DEADLINE + MARGIN
        assert check.result.action is Action.ACCEPT
        assert FAILED_OPEN in check.result.reason
        assert "locked" in check.result.reason
    # The lock is gone: the same check now records, on top of the untouched row.
    decision = _check(enforcer, A)
    assert FAILED_OPEN not in decision.reason
    after = store.get(A)
    assert after is not None
    assert after.version == before.version + 1
    assert after.value.last_seen == clock.now
    store.close()


def test_a_locked_row_defers_within_the_deadline_when_failing_closed(
    own_server: PostgresServer,
) -> None:
    dsn = own_server.fresh_dsn()
    store = PostgresStore(dsn)
    clock = _Clock()
    enforcer = _enforcer(store, clock, fail_closed=True)
    _check(enforcer, A)
    with _row_locked(dsn, A, "select-for-update"):
        clock.now += dt.timedelta(days=1)
        check = _Call(lambda: _check(enforcer, A))
        assert check.done_within(DEADLINE + MARGIN)
        assert check.result.reply == FAIL_CLOSED_REPLY
    store.close()


def test_a_check_of_another_server_does_not_wait_for_a_lock_on_the_first(
    own_server: PostgresServer,
) -> None:
    dsn = own_server.fresh_dsn()
    store = PostgresStore(dsn, timeout=30.0)  # A's writer waits long: B must not wait with it
    clock = _Clock()
    enforcer = _enforcer(store, clock)
    _check(enforcer, A)
    before = store.get(A)
    assert before is not None
    with _row_locked(dsn, A, "select-for-update"):
        moved = _seen(before.value, DAY0 + dt.timedelta(hours=1))
        writer = _Call(lambda: store.put(moved, expected_version=before.version))
        _wait_for_lock_waiter(dsn)
        check = _Call(lambda: _check(enforcer, B))
        assert check.done_within(10.0), "the check of B waited for the lock on A"
        assert check.error is None
        assert FAILED_OPEN not in check.result.reason
        assert store.get(B) is not None  # B was recorded
        assert not writer.done_within(0)  # while A's writer still waits for its lock
    assert writer.done_within(30.0)
    assert writer.error is None
    assert store.get(A) == Versioned(moved, before.version + 1)
    store.close()


def test_the_check_deadline_caps_the_store_timeout(own_server: PostgresServer) -> None:
    dsn = own_server.fresh_dsn()
    store = PostgresStore(dsn, timeout=30.0)
    _check(_enforcer(store, _Clock()), A)
    stored = store.get(A)
    assert stored is not None

    def put_in_a_short_check() -> int:
        with check_deadline(0.5):
            later = _seen(stored.value, DAY0 + dt.timedelta(days=1))
            return store.put(later, expected_version=stored.version)

    with _row_locked(dsn, A, "select-for-update"):
        put = _Call(put_in_a_short_check)
        assert put.done_within(0.5 + MARGIN), "the store's own 30 s timeout was used"
        assert isinstance(put.error, StoreError)
    assert store.get(A) == stored  # the write that gave up left the row as it was
    store.close()


def test_a_stopped_server_fails_checks_open_in_time_and_the_store_recovers(
    own_server: PostgresServer,
) -> None:
    dsn = own_server.fresh_dsn()
    store = PostgresStore(dsn)
    clock = _Clock()
    enforcer = _enforcer(store, clock)
    _check(enforcer, A)
    before = store.get(A)
    assert before is not None
    clock.now += dt.timedelta(days=1)
    moved = _seen(before.value, clock.now)
    with own_server.frozen():
        # A's check is sent on the pooled connection and never answered; B's then finds no
        # connection (the pool cannot open one to a stopped server). Both fail open in time.
        for server_id in (A, B):
            check = _Call(lambda server_id=server_id: _check(enforcer, server_id))  # type: ignore[misc]
            assert check.done_within(DEADLINE + MARGIN), f"the check of {server_id} hung"
            assert check.error is None
            assert check.elapsed < DEADLINE + MARGIN
            assert FAILED_OPEN in check.result.reason
        put = _Call(lambda: store.put(moved, expected_version=before.version))
        assert put.done_within(DEADLINE + MARGIN)
        assert isinstance(put.error, StoreError)
    # Running again: the store answers (once the pool has reconnected) and nothing was torn.
    after = _eventually(lambda: store.get(A))
    assert after in (before, Versioned(moved, before.version + 1))
    assert store.get(B) is None  # B's first check never reached the database
    decision = _eventually(lambda: _check(enforcer, B))
    assert FAILED_OPEN not in decision.reason
    assert store.get(B) is not None
    assert after is not None
    assert store.put(_seen(moved, clock.now + dt.timedelta(days=2)), expected_version=after.version)
    store.close()


def _eventually(work: Callable[[], Any], within: float = 30.0) -> Any:
    """``work()``'s result once the pool has a connection again (it reconnects in the back).

    Only "no database connection" is waited out: a call failing any other way would have
    been handed a connection that timed out before, which must never be reused.
    """
    give_up = time.monotonic() + within
    while True:
        try:
            result = work()
        except StoreError as exc:
            if "no database connection" not in str(exc) or time.monotonic() > give_up:
                raise
        else:
            reason = result.reason if isinstance(result, Decision) else ""
            if "no database connection" not in reason or time.monotonic() > give_up:
                return result
        time.sleep(0.2)


def test_a_forked_child_uses_connections_of_its_own(own_server: PostgresServer) -> None:
    store = PostgresStore(own_server.fresh_dsn())
    _check(_enforcer(store, _Clock()), A)
    stored = store.get(A)
    assert stored is not None
    later = _seen(stored.value, DAY0 + dt.timedelta(days=1))

    def child() -> None:
        store.put(later, expected_version=stored.version)
        store.close()

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(30)
    assert process.exitcode == 0
    # The parent's pooled connection was not disturbed, and it sees the child's write.
    assert store.get(A) == Versioned(later, stored.version + 1)
    store.close()


@pytest.mark.parametrize("timeout", [0, -1, 0.0, float("nan"), float("inf"), "2", True, None])
def test_a_timeout_that_is_no_positive_number_is_refused(timeout: Any) -> None:
    with pytest.raises(InvalidValueError, match="timeout"):
        PostgresStore("host=127.0.0.1", timeout=timeout)


@pytest.mark.parametrize("pool_size", [0, -1, 1.5, True, None])
def test_a_pool_size_that_is_no_positive_int_is_refused(pool_size: Any) -> None:
    with pytest.raises(InvalidValueError, match="pool_size"):
        PostgresStore("host=127.0.0.1", pool_size=pool_size)


def test_a_dsn_that_does_not_parse_is_refused_without_showing_its_password() -> None:
    with pytest.raises(InvalidValueError, match="dsn") as raised:
        PostgresStore("postgresql://tbes:top secret@127.0.0.1/tbes")
    assert "secret" not in str(raised.value)
