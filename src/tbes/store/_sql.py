"""What the two SQL stores (SQLite and PostgreSQL) share: tables, statements, CAS, migrations.

Decisions: both keep the same two tables (``tbes_servers``, ``tbes_ledgers``) and the same
``tbes_schema`` version row, so the statements that read and write them are built here once
from the driver's placeholder (``?`` or ``%s``); each back end adds only what is its own (row
locks, ``ON CONFLICT``, how a transaction is opened and which error a lost race raises).
A batch is planned by :meth:`~tbes.store.base.RowStore._plan` inside the transaction, with
the back end's own locked read, and written in (table, key) order in both, so concurrent
batches never wait for each other in a circle.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from tbes.discovery import DiscoveredServer
from tbes.errors import StoreError
from tbes.store._discovered import plan
from tbes.store.base import ROW_SCHEMA, RawRow, RowStore, RowWrite
from tbes.store.protocol import Write

__all__ = [
    "Connection",
    "SQLStore",
    "migrate",
    "raw_row",
    "select_sql",
    "states_sql",
    "write_sql",
]

_T = TypeVar("_T")

STATES_PAGE = 1000
"""Rows per read in :meth:`SQLStore.states`."""

# table -> (SQL table, key column, the other columns a write sets, in argument order)
_TABLES = {
    "server": ("tbes_servers", "server_id", ("tenant", "version", "row_schema", "data")),
    "ledger": ("tbes_ledgers", "tenant", ("version", "row_schema", "data")),
}


_DISCOVERED_ROWS = "SELECT peer, data FROM tbes_discovered"
# The outbox's statements, written with "?" and given the driver's placeholder when run.
_INSERT_EVENT = (
    "INSERT INTO tbes_outbox (event_id, tenant, at, row_schema, data) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (event_id) DO NOTHING"
)
_CLAIMABLE = (
    "SELECT o.event_id, o.row_schema, o.data FROM tbes_outbox o "
    "LEFT JOIN tbes_deliveries d ON d.event_id = o.event_id AND d.receiver = ? "
    "WHERE d.event_id IS NULL OR (d.delivered IS NULL AND d.due <= ?) "
    "ORDER BY o.seq LIMIT ?"
)
_CLAIM = (
    "INSERT INTO tbes_deliveries (event_id, receiver, attempts, due, delivered) "
    "VALUES (?, ?, 1, ?, NULL) ON CONFLICT (event_id, receiver) DO UPDATE "
    "SET attempts = tbes_deliveries.attempts + 1, due = excluded.due "
    "WHERE tbes_deliveries.delivered IS NULL AND tbes_deliveries.due <= ? "
    "RETURNING attempts"
)
_MARK = (
    "UPDATE tbes_deliveries SET due = ?, delivered = ? "
    "WHERE event_id = ? AND receiver = ? AND delivered IS NULL"
)


def _event_args(row: RowWrite) -> tuple[object, ...]:
    return (row.key, row.tenant, row.at if row.at is not None else 0.0, ROW_SCHEMA, row.data)


class _Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The part of a DB-API connection (sqlite3, psycopg) the SQL stores use."""

    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> _Cursor:
        """Run one statement with ``args`` bound to its placeholders."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


_C = TypeVar("_C", bound=Connection)


def select_sql(table: str, param: str) -> str:
    """The statement reading ``(version, row_schema, data)`` of one row of ``table`` by key."""
    name, column, _ = _TABLES[table]
    return f"SELECT version, row_schema, data FROM {name} WHERE {column} = {param}"


def raw_row(row: Sequence[Any] | None) -> RawRow | None:
    """A fetched ``(version, row_schema, data)`` row as a :data:`RawRow`, or ``None``."""
    # The version is not converted here: a bad one is the row's fault, refused when decoded.
    return None if row is None else (row[0], row[1], row[2])


def states_sql(tenant: str | None, param: str, after: str) -> tuple[str, tuple[str, ...]]:
    """The query for the next page of stored states (of ``tenant``) by server id after ``after``.

    Keyset pagination on the primary key: each page is one index range scan, however far in.
    """
    query = (
        f"SELECT server_id, version, row_schema, data FROM tbes_servers WHERE server_id > {param}"
    )
    args: tuple[str, ...] = (after,)
    if tenant is not None:
        query, args = query + f" AND tenant = {param}", (after, tenant)
    return query + f" ORDER BY server_id LIMIT {STATES_PAGE}", args


def write_sql(row: RowWrite, param: str) -> tuple[str, tuple[object, ...]]:
    """The ``INSERT`` (no row expected) or version-checked ``UPDATE`` for ``row``, and its args."""
    name, column, columns = _TABLES[row.table]
    values = (row.version, ROW_SCHEMA, row.data)
    args = ((row.tenant, *values) if row.table == "server" else values) + (row.key,)
    if row.expected is None:
        marks = ", ".join([param] * len(args))
        return f"INSERT INTO {name} ({', '.join(columns)}, {column}) VALUES ({marks})", args
    sets = ", ".join(f"{each} = {param}" for each in columns)
    sql = f"UPDATE {name} SET {sets} WHERE {column} = {param} AND version = {param}"
    return sql, (*args, row.expected)


def migrate(
    conn: Connection,
    migrations: Sequence[Sequence[str]],
    *,
    param: str,
    newer: Callable[[int], str],
) -> None:
    """Bring the schema forward to ``len(migrations)``, inside the caller's transaction.

    A database at a higher version than this tbes knows raises StoreError with ``newer(version)``.
    """
    conn.execute("CREATE TABLE IF NOT EXISTS tbes_schema (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM tbes_schema").fetchone()
    if row is None:
        conn.execute("INSERT INTO tbes_schema (version) VALUES (0)")
    version = 0 if row is None else int(row[0])
    if version > len(migrations):
        raise StoreError(newer(version))
    for statements in migrations[version:]:
        for statement in statements:
            conn.execute(statement)
    conn.execute(f"UPDATE tbes_schema SET version = {param}", (len(migrations),))


class SQLStore(RowStore, Generic[_C]):
    """A store on one SQL connection per process, guarded by a lock for its threads.

    A subclass sets ``_lock``, ``_conn`` and ``_pid`` and implements :meth:`_run` (one
    transaction), :meth:`_read` (one row, inside it), :meth:`_store` (one planned row,
    inside it), :meth:`_read_row` and :meth:`_fetch_all` (reads outside a write).
    Arguments are checked by :class:`~tbes.store.base.RowStore` before any of these runs.
    """

    _PARAM: ClassVar[str] = "?"  # the driver's placeholder; "%s" for psycopg
    _lock: threading.Lock
    _conn: _C | None
    _pid: int

    def _run(self, work: Callable[[_C], _T]) -> _T:
        """Run ``work`` in one write transaction with the lock held: all of it or none."""
        raise NotImplementedError

    def _read(self, conn: _C, table: str, key: str) -> RawRow | None:
        """The row of ``key`` in ``table`` on ``conn`` in :meth:`_run`, unchanged till commit."""
        raise NotImplementedError

    def _store(self, conn: _C, row: RowWrite) -> None:
        """Write one planned row inside :meth:`_run`, checking the version it expects."""
        raise NotImplementedError

    def _fetch_all(self, sql: str, args: tuple[str, ...]) -> list[Any]:
        """Every row ``sql`` selects."""
        raise NotImplementedError

    def _server_rows(self, tenant: str | None) -> Iterator[tuple[str, RawRow]]:
        # A page at a time, so memory stays flat however many servers there are and the
        # lock is not held while the caller works; each page is consistent, the whole
        # iteration is not one snapshot.
        after = ""  # ids are non-empty, so every id sorts after ""
        while True:
            rows = self._fetch_all(*states_sql(tenant, self._PARAM, after))
            for server_id, version, schema, data in rows:
                yield server_id, (version, schema, data)
            if len(rows) < STATES_PAGE:
                return
            after = rows[-1][0]

    def _ledger_rows(self) -> list[tuple[str, RawRow]]:
        sql = "SELECT tenant, version, row_schema, data FROM tbes_ledgers ORDER BY tenant"
        return [(tenant, (v, schema, data)) for tenant, v, schema, data in self._fetch_all(sql, ())]

    def _delete_row(self, server_id: str, version: int) -> bool:
        p = self._PARAM
        sql = f"DELETE FROM tbes_servers WHERE server_id = {p} AND version = {p}"
        return bool(self._run(lambda conn: conn.execute(sql, (server_id, version)).rowcount == 1))

    # ---- discovered servers ----------------------------------------------------------------

    def _exec(self, conn: _C, sql: str, args: tuple[object, ...]) -> _Cursor:
        """Run one statement inside :meth:`_run`; a back end may bound each statement's wait."""
        return conn.execute(sql, args)

    def _lock_discovered(self, conn: _C) -> None:
        """Inside :meth:`_run`: serialise merges of the discovered table (a no-op if the
        transaction already excludes other writers)."""

    def _record_discovered(self, records: tuple[DiscoveredServer, ...], max_servers: int) -> None:
        p = self._PARAM
        read = f"SELECT data FROM tbes_discovered WHERE peer = {p}"
        upsert = (
            f"INSERT INTO tbes_discovered (peer, last_seen, data) VALUES ({p}, {p}, {p}) "
            "ON CONFLICT (peer) DO UPDATE SET last_seen = excluded.last_seen, data = excluded.data"
        )
        oldest = (
            "DELETE FROM tbes_discovered WHERE peer IN (SELECT peer FROM tbes_discovered "
            f"ORDER BY last_seen, peer LIMIT {p})"
        )

        def work(conn: _C) -> None:
            self._lock_discovered(conn)

            def stored(peer: str) -> str | None:
                row = self._exec(conn, read, (peer,)).fetchone()
                return None if row is None else str(row[0])

            for row in plan(records, stored):
                self._exec(conn, upsert, row)
            count = int(self._exec(conn, "SELECT count(*) FROM tbes_discovered", ()).fetchone()[0])
            if count > max_servers:
                self._exec(conn, oldest, (count - max_servers,))

        self._run(work)

    def _discovered_rows(self) -> list[tuple[object, object]]:
        return [(peer, data) for peer, data in self._fetch_all(_DISCOVERED_ROWS, ())]

    def _apply(self, writes: tuple[Write, ...]) -> tuple[int, ...]:
        """Apply checked compare-and-swap writes in one transaction; return their versions."""

        def work(conn: _C) -> tuple[int, ...]:
            planned = self._plan(writes, functools.partial(self._read, conn))
            # Rows are written in (table, key) order too, so batches never wait in a circle.
            rows = [row for row in planned if row.table != "outbox"]
            for row in sorted(rows, key=lambda row: (row.table, row.key)):
                self._store(conn, row)
            # Events last, in the order given (the outbox is delivered in it); the rows
            # locked above already keep two batches announcing one event apart.
            insert = _INSERT_EVENT.replace("?", self._PARAM)
            for row in planned:
                if row.table == "outbox":
                    self._exec(conn, insert, _event_args(row))
            return tuple(row.version for row in planned)

        return self._run(work)

    # ---- the outbox (docs/notifications.md) -------------------------------------------

    supports_outbox = True

    def _claim_rows(
        self, receiver: str, now: float, until: float, limit: int
    ) -> list[tuple[str, object, object, int]]:
        select = _CLAIMABLE.replace("?", self._PARAM)
        claim = _CLAIM.replace("?", self._PARAM)

        def work(conn: _C) -> list[tuple[str, object, object, int]]:
            claimed = []
            for event_id, schema, data in self._exec(
                conn, select, (receiver, now, limit)
            ).fetchall():
                # The claim holds only if no other sender claimed the row meanwhile.
                row = self._exec(conn, claim, (event_id, receiver, until, now)).fetchone()
                if row is not None:
                    claimed.append((event_id, schema, data, int(row[0])))
            return claimed

        return self._run(work)

    def _mark_row(
        self, receiver: str, event_id: str, delivered: float | None, due: float | None
    ) -> None:
        sql = _MARK.replace("?", self._PARAM)
        self._run(lambda conn: self._exec(conn, sql, (due, delivered, event_id, receiver)))

    def _prune_rows(
        self, delivered_before: float, expire_before: float, receivers: tuple[str, ...]
    ) -> int:
        p = self._PARAM
        if receivers:
            names = ", ".join([p] * len(receivers))
            done = (
                f"(SELECT COUNT(*) FROM tbes_deliveries d WHERE d.event_id = o.event_id "
                f"AND d.delivered IS NOT NULL AND d.receiver IN ({names})) = {len(receivers)}"
            )
        else:
            done = "1 = 1"
        delete = f"DELETE FROM tbes_outbox AS o WHERE o.at < {p} OR (o.at < {p} AND {done})"
        orphans = (
            "DELETE FROM tbes_deliveries WHERE NOT EXISTS "
            "(SELECT 1 FROM tbes_outbox o WHERE o.event_id = tbes_deliveries.event_id)"
        )

        def work(conn: _C) -> int:
            args = (expire_before, delivered_before, *receivers)
            gone = int(self._exec(conn, delete, args).rowcount)
            self._exec(conn, orphans, ())
            return gone

        return self._run(work)

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
