"""The shared store: one PostgreSQL database for a cluster of MTAs on several hosts.

Decisions: psycopg 3 and psycopg_pool, imported here only, so tbes installs and imports
without them (extra ``postgres``). Compare-and-swap is done by the database, not by a lock
in one process: a write reads its rows ``SELECT ... FOR UPDATE`` in (table, key) order, then
writes with ``UPDATE ... WHERE version = %s`` or ``INSERT ... ON CONFLICT DO NOTHING`` and
checks the row count, all in one transaction, so writers on different hosts can never both
win. A plain read takes no lock, so it never waits for a writer.

Every call is bounded by the store's timeout, capped by what is left of the current check
(:func:`~tbes.store.base.remaining`): waiting for a pooled connection by the pool's
timeout, a row lock or a slow statement by ``lock_timeout`` / ``statement_timeout`` set for
the transaction, and a server that answers nothing at all (stopped, or its network gone) by a
watchdog thread that shuts the connection's socket at the deadline; TCP keepalives cannot
notice a stopped server, whose kernel still acknowledges. A connection that timed out or broke
is closed, never handed out again. The schema's version lives in ``tbes_schema``; creating
and migrating it is idempotent and serialised by a transaction-scoped advisory lock, so any
number of nodes may start at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tbes.errors import InvalidValueError, StoreConflictError, StoreError
from tbes.store._rows import describe
from tbes.store._sql import SQLStore, migrate, raw_row, select_sql, write_sql
from tbes.store.base import DEFAULT_CHECK_TIMEOUT, RawRow, RowWrite, remaining

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["MIGRATIONS", "PostgresStore"]

_T = TypeVar("_T")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the rows. Each carries its CAS version and the schema version of its JSON.
    (
        """CREATE TABLE tbes_servers (
            server_id text PRIMARY KEY,
            tenant text NOT NULL,
            version bigint NOT NULL,
            row_schema integer NOT NULL,
            data text NOT NULL
        )""",
        """CREATE TABLE tbes_ledgers (
            tenant text PRIMARY KEY,
            version bigint NOT NULL,
            row_schema integer NOT NULL,
            data text NOT NULL
        )""",
    ),
    # 2: states(tenant) reads one tenant's servers without scanning the others.
    ("CREATE INDEX tbes_servers_by_tenant ON tbes_servers (tenant, server_id)",),
    # 3: the discovered servers (docs/discovery.md). Collation "C" orders the peers
    # bytewise, as every other store evicts them.
    (
        """CREATE TABLE tbes_discovered (
            peer text COLLATE "C" PRIMARY KEY,
            last_seen bigint NOT NULL,
            data text NOT NULL
        )""",
        "CREATE INDEX tbes_discovered_by_last_seen ON tbes_discovered (last_seen, peer)",
    ),
    # 4: the outbox (docs/notifications.md): events waiting for delivery, in the order they
    # were stored, and per event and receiver the claims and the delivery.
    (
        """CREATE TABLE tbes_outbox (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id text NOT NULL UNIQUE,
            tenant text NOT NULL,
            at double precision NOT NULL,
            row_schema integer NOT NULL,
            data text NOT NULL
        )""",
        "CREATE INDEX tbes_outbox_by_at ON tbes_outbox (at)",
        """CREATE TABLE tbes_deliveries (
            event_id text NOT NULL,
            receiver text NOT NULL,
            attempts integer NOT NULL,
            due double precision,
            delivered double precision,
            PRIMARY KEY (event_id, receiver)
        )""",
    ),
)
"""The schema's migrations in order; the database's version is how many have been applied."""

# pg_advisory_xact_lock key that serialises schema migrations ("tbes" and 1).
_MIGRATION_LOCK = 0x74626573_00000001

# pg_advisory_xact_lock key that serialises merges of the discovered servers ("tbes", 3).
_DISCOVERY_LOCK = 0x74626573_00000003

# Creating or migrating the schema on opening is no check: it may build an index on a big
# table or wait for another node's migration, so it gets its own, longer bound.
_MIGRATE_TIMEOUT = 60.0

# The server's own timeouts fire this much (at most) before the watchdog's, so a lock wait
# ends as a clean error on a connection that stays usable, not as a dropped connection.
_SERVER_MARGIN = 0.1

_SET_TIMEOUTS = (
    "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)"
)

# Pools a child process inherited across fork: kept, never closed or collected there, since
# closing them would end the parent's sessions on the sockets both processes share.
_INHERITED: list[object] = []


class PostgresStore(SQLStore["psycopg.Connection[Any]"]):
    """A :class:`~tbes.store.StateStore` in the PostgreSQL database at ``dsn``.

    ``dsn`` is a libpq connection string or URI (``"host=db dbname=tbes user=tbes"``); put
    the tables in another schema with ``options=-csearch_path=...``. A pool of up to
    ``pool_size`` connections serves the store's threads, so concurrent calls do not wait for
    each other; a process that inherited the store across ``fork`` opens its own pool.

    Every wait of a call lasts at most ``timeout`` seconds (default 2.0), and inside an
    :class:`~tbes.enforcer.Enforcer` check at most what is left of the check, for a
    connection, a row lock, or an answer; then it raises :class:`~tbes.errors.StoreError`.
    ``connect_timeout`` (seconds, 0 waits forever) bounds each connection attempt, made in
    the background by the pool. Opening creates or migrates the schema and refuses
    (StoreError) a database made by a newer tbes. A ``dsn`` that is no ``str`` or does not
    parse, a ``timeout`` that is no finite number > 0, a ``connect_timeout`` that is no
    int >= 0, or a ``pool_size`` that is no int >= 1 raises InvalidValueError.
    """

    _PARAM = "%s"

    def __init__(
        self,
        dsn: str,
        *,
        timeout: float = DEFAULT_CHECK_TIMEOUT,
        connect_timeout: int = 10,
        pool_size: int = 10,
    ) -> None:
        if not isinstance(dsn, str):
            raise InvalidValueError(f"dsn must be a str, got {dsn!r:.80}")
        if type(timeout) not in (int, float) or not math.isfinite(timeout) or timeout <= 0:
            raise InvalidValueError(f"timeout must be a number > 0 (seconds), got {timeout!r:.80}")
        if type(connect_timeout) is not int or connect_timeout < 0:
            raise InvalidValueError(
                f"connect_timeout must be an int >= 0 (seconds), got {connect_timeout!r:.80}"
            )
        if type(pool_size) is not int or pool_size < 1:
            raise InvalidValueError(f"pool_size must be an int >= 1, got {pool_size!r:.80}")
        try:
            import psycopg
            import psycopg_pool  # noqa: F401  (fail early and clearly without the extra)
        except ImportError as exc:
            raise StoreError(
                "PostgresStore needs psycopg 3 and psycopg_pool: pip install 'tbes[postgres]'"
            ) from exc
        try:
            password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
        except psycopg.Error:
            # libpq's parse error quotes the offending text, which may be the password.
            raise InvalidValueError(
                "dsn is not a libpq connection string or URI (its text is not shown: "
                "it may hold a password)"
            ) from None
        self.dsn = dsn
        self._password = str(password) if password else None
        self._timeout = float(timeout)
        self._connect_timeout = connect_timeout
        self._pool_size = pool_size
        self._lock = threading.Lock()  # guards (re)making the pool, not the calls
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pid = 0
        self._open_and_migrate()

    # ---- connections ----------------------------------------------------------------

    def _open_and_migrate(self) -> None:
        """Create or migrate the schema on a connection of its own, then start the pool."""
        import psycopg

        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=self._connect_timeout)
        except psycopg.Error as exc:
            raise self._error(exc, _MIGRATE_TIMEOUT, fired=False) from exc
        try:
            self._transaction(conn, self._migrate, _MIGRATE_TIMEOUT, write=True)
        finally:
            conn.close()
        self._pool_here()

    def _pool_here(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
        """This process's pool, made on first use in it (a pool must not cross fork)."""
        pool = self._pool
        if pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    if self._pool is not None:
                        _INHERITED.append(self._pool)
                    self._pool, self._pid = self._new_pool(), os.getpid()
                pool = self._pool
        return pool

    def _new_pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
        import psycopg
        import psycopg_pool

        return psycopg_pool.ConnectionPool(
            self.dsn,
            connection_class=psycopg.Connection,
            kwargs={"autocommit": True, "connect_timeout": self._connect_timeout},
            min_size=1,
            max_size=self._pool_size,
            open=True,
            configure=self._configure,
            name="tbes",
            num_workers=2,
        )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # A session-wide bound, so a read the watchdog gave up on stops on the server too.
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (_ms(self._timeout),))

    def _run(self, work: Callable[[psycopg.Connection[Any]], _T], *, write: bool = True) -> _T:
        """Run ``work`` on a pooled connection (in one transaction if ``write``), in time."""
        import psycopg_pool

        seconds = remaining(self._timeout)
        if seconds <= 0:
            raise StoreError("PostgreSQL store: the check's time ran out before the query")
        started = time.monotonic()
        pool = self._pool_here()
        try:
            conn = pool.getconn(timeout=seconds)
        except psycopg_pool.PoolTimeout as exc:
            raise StoreError(
                f"PostgreSQL store: no database connection within {seconds:.2f} s"
            ) from exc
        except psycopg_pool.PoolClosed as exc:  # only if closed by another thread meanwhile
            raise StoreError("PostgreSQL store: the store was closed") from exc
        try:
            left = seconds - (time.monotonic() - started)
            return self._transaction(conn, work, left, write=write)
        finally:
            pool.putconn(conn)  # the pool discards it if _transaction closed it

    def _transaction(
        self,
        conn: psycopg.Connection[Any],
        work: Callable[[psycopg.Connection[Any]], _T],
        seconds: float,
        *,
        write: bool,
    ) -> _T:
        """Run ``work`` on ``conn`` within ``seconds``; close ``conn`` if it timed out or broke."""
        import psycopg
        from psycopg import errors

        _WATCHDOG.arm(conn, seconds)
        fired = False
        try:
            try:
                if not write:
                    return work(conn)
                with conn.transaction():
                    # A lock wait ends first, so its error says what happened.
                    margin = min(_SERVER_MARGIN, seconds / 4)
                    conn.execute(_SET_TIMEOUTS, (_ms(seconds - margin), _ms(seconds - margin / 2)))
                    return work(conn)
            finally:
                fired = _WATCHDOG.disarm(conn)
                if fired or conn.broken:
                    conn.close()
        except (errors.SerializationFailure, errors.DeadlockDetected) as exc:
            raise StoreConflictError(f"PostgreSQL store: {self._scrub(str(exc))}") from exc
        except psycopg.Error as exc:
            raise self._error(exc, seconds, fired=fired) from exc

    def _error(self, exc: Exception, seconds: float, *, fired: bool) -> StoreError:
        """A StoreError saying what went wrong, without the DSN's password."""
        from psycopg import errors

        if fired:
            what = f"no answer from the database within {seconds:.2f} s; connection dropped"
        elif isinstance(exc, errors.LockNotAvailable):
            what = f"a row stayed locked by another transaction for {seconds:.2f} s"
        elif isinstance(exc, errors.QueryCanceled):
            what = f"the statement did not finish within {seconds:.2f} s"
        else:
            what = f"{type(exc).__name__}: {self._scrub(str(exc))}"
        return StoreError(f"PostgreSQL store: {what}")

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        migrate(conn, MIGRATIONS, param=self._PARAM, newer=_too_new)

    def _lock_discovered(self, conn: psycopg.Connection[Any]) -> None:
        # Nodes merging the same peer at once would each add to the count they read.
        self._exec(conn, "SELECT pg_advisory_xact_lock(%s)", (_DISCOVERY_LOCK,))

    def schema_version(self) -> int:
        """How many of :data:`MIGRATIONS` the database has had applied."""
        row = self._run(
            lambda conn: conn.execute("SELECT version FROM tbes_schema").fetchone(), write=False
        )
        assert row is not None  # written by _migrate when the store opened
        return int(row[0])

    def close(self) -> None:
        """Close this process's pool and its connections (a later call opens a new pool)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.close(timeout=self._timeout)
        elif pool is not None:
            _INHERITED.append(pool)  # the parent's: left for it to close

    # ---- rows ---------------------------------------------------------------------

    def _read_row(self, table: str, key: str) -> RawRow | None:
        # No lock: a plain read sees the last committed row and never waits for a writer.
        sql = select_sql(table, self._PARAM)
        row = self._run(lambda conn: self._exec(conn, sql, (key,)).fetchone(), write=False)
        return raw_row(row)

    def _fetch_all(self, sql: str, args: tuple[str, ...]) -> list[Any]:
        return self._run(lambda conn: self._exec(conn, sql, args).fetchall(), write=False)

    def _exec(
        self, conn: psycopg.Connection[Any], sql: str, args: tuple[object, ...]
    ) -> psycopg.Cursor[Any]:
        """Run one statement of a call, giving the watchdog a fresh ``remaining(timeout)``.

        Every wait is bounded, not the whole call: a long batch outside a check may take
        as long as its statements need, while inside a check the check's deadline holds.
        """
        seconds = remaining(self._timeout)
        if seconds <= 0:
            raise StoreError("PostgreSQL store: the check's time ran out")
        _WATCHDOG.extend(conn, seconds)
        return conn.execute(sql, args)

    def _read(self, conn: psycopg.Connection[Any], table: str, key: str) -> RawRow | None:
        """The row a write will check, locked until the write's transaction ends."""
        sql = select_sql(table, self._PARAM) + " FOR UPDATE"
        return raw_row(self._exec(conn, sql, (key,)).fetchone())

    def _store(self, conn: psycopg.Connection[Any], row: RowWrite) -> None:
        """Write one planned row, letting the database check the version it expects."""
        sql, args = write_sql(row, self._PARAM)
        if row.expected is None:
            sql += " ON CONFLICT DO NOTHING"
        # Another host's insert may have committed since our read: then nothing was written.
        if self._exec(conn, sql, args).rowcount != 1:
            raise StoreConflictError(
                f"{describe(row.table, row.key)} was written by another writer"
            )


def _ms(seconds: float) -> str:
    """A PostgreSQL timeout setting in whole milliseconds, at least 1 (0 would mean none)."""
    return str(max(1, int(seconds * 1000)))


def _too_new(version: int) -> str:
    return (
        f"PostgreSQL database has tbes schema version {version}; this tbes knows up "
        f"to {len(MIGRATIONS)}: upgrade tbes to use it"
    )


class _Watchdog:
    """Shuts the socket of a connection whose time ran out, waking the thread blocked on it.

    A stopped server answers nothing and its kernel still acknowledges our packets, so
    neither the server's timeouts nor TCP's notice; psycopg has no client-side timeout
    for a query already sent. One thread per process serves every store: a call arms it
    with its connection and deadline and disarms it when done, both under one lock, so a
    connection is never shut after it went back to its pool.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[psycopg.Connection[Any], float] = {}  # connection -> deadline
        self._wake_at = math.inf  # when the thread will next look, if it is running
        self._thread: threading.Thread | None = None

    def arm(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        """Shut ``conn`` unless :meth:`disarm` is called within ``seconds``."""
        deadline = time.monotonic() + seconds
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="tbes-pg-watchdog")
                self._thread.daemon = True
                self._thread.start()
            self._armed[conn] = deadline
            if deadline < self._wake_at:  # otherwise it wakes early enough anyway
                self._cond.notify()

    def extend(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        """Give an armed ``conn`` at least ``seconds`` from now (no-op once it was shut)."""
        deadline = time.monotonic() + seconds
        with self._cond:
            if conn in self._armed and self._armed[conn] < deadline:
                self._armed[conn] = deadline  # later than before: no need to wake the thread

    def disarm(self, conn: psycopg.Connection[Any]) -> bool:
        """Stop watching ``conn``; True if its time had run out and it was shut."""
        with self._cond:
            return self._armed.pop(conn, None) is None

    def _loop(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for conn, deadline in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[conn]
                        _shut(conn)
                self._wake_at = min(self._armed.values(), default=math.inf)
                self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)


def _shut(conn: psycopg.Connection[Any]) -> None:
    """Shut ``conn``'s socket both ways; a thread waiting on it then reads end-of-file."""
    import psycopg

    try:
        dup = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except (psycopg.Error, OSError):  # already closed: nothing left to wake
        return
    with dup, contextlib.suppress(OSError):  # not connected any more: nothing to wake
        dup.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()


def _new_watchdog() -> None:
    # The child of a fork has no watchdog thread and may hold a copy of a taken lock.
    global _WATCHDOG
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_new_watchdog)
