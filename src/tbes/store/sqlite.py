"""The embedded store: one SQLite file, shared safely by the processes of one host.

Decisions: the standard library's :mod:`sqlite3` only; WAL journal, so readers never wait
for the writer; every write is one ``BEGIN IMMEDIATE`` transaction that takes the write lock
before reading the rows it checks, so a compare-and-swap cannot interleave with another
process's (SQLite's file locks coordinate processes; a busy timeout waits for them). One
connection per store object, guarded by a lock, serves all its threads; a process that
inherits a store across ``fork`` opens its own connection on first use. The schema carries
its version in the table ``tbes_schema`` and is brought forward by an ordered list of
migrations when the file is opened.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from tbes.errors import StoreError
from tbes.ledger import PauseLedger
from tbes.state import ServerState
from tbes.store.protocol import (
    ROW_SCHEMA,
    LedgerWrite,
    RawRow,
    RowWrite,
    StateWrite,
    Versioned,
    Write,
    conflict,
    load_ledger,
    load_state,
    plan_writes,
)

__all__ = ["MIGRATIONS", "SQLiteStore"]

_T = TypeVar("_T")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the rows. Each carries its CAS version and the schema version of its JSON.
    (
        """CREATE TABLE tbes_servers (
            server_id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            version INTEGER NOT NULL,
            row_schema INTEGER NOT NULL,
            data TEXT NOT NULL
        )""",
        """CREATE TABLE tbes_ledgers (
            tenant TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            row_schema INTEGER NOT NULL,
            data TEXT NOT NULL
        )""",
    ),
    # 2: states(tenant) reads one tenant's servers without scanning the others.
    ("CREATE INDEX tbes_servers_by_tenant ON tbes_servers (tenant, server_id)",),
)
"""The schema's migrations in order; the database's version is how many have been applied."""

_TABLES = {"server": ("tbes_servers", "server_id"), "ledger": ("tbes_ledgers", "tenant")}


class SQLiteStore:
    """A :class:`~tbes.store.StateStore` in the SQLite file at ``path`` (created if missing).

    ``timeout`` is how many seconds a write waits for another process's write lock before
    failing with :class:`~tbes.errors.StoreError`. Opening migrates an older schema forward
    and refuses (StoreError) a file made by a newer tbes.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        with self._lock:
            self._guard(self._migrate)

    # ---- connection and transactions ------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross fork: the child opens its own (the parent's stays open).
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal" and str(self.path) != ":memory:":
                conn.close()
                raise StoreError(f"SQLite file {self.path} cannot use WAL (journal mode {mode})")
            conn.execute("PRAGMA synchronous = FULL")  # a commit survives a power cut
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _guard(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` with the lock held, turning sqlite3 errors into StoreError."""
        try:
            return work()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction: all of it or none."""
        with self._lock:
            return self._guard(lambda: _transaction(self._connection(), work))

    def _migrate(self) -> None:
        _transaction(self._connection(), self._apply_migrations)

    def _apply_migrations(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS tbes_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM tbes_schema").fetchone()
        if row is None:
            conn.execute("INSERT INTO tbes_schema (version) VALUES (0)")
        version = 0 if row is None else int(row[0])
        if version > len(MIGRATIONS):
            raise StoreError(
                f"SQLite file {self.path} has schema version {version}; this tbes knows up to "
                f"{len(MIGRATIONS)}: upgrade tbes to open it"
            )
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("UPDATE tbes_schema SET version = ?", (len(MIGRATIONS),))

    def schema_version(self) -> int:
        """How many of :data:`MIGRATIONS` the file has had applied."""
        with self._lock:
            row = self._guard(
                lambda: self._connection().execute("SELECT version FROM tbes_schema").fetchone()
            )
        return int(row[0])

    # ---- reads ----------------------------------------------------------------------

    def _read(self, table: str, key: str) -> RawRow | None:
        name, column = _TABLES[table]
        row = (
            self._connection()
            .execute(f"SELECT version, row_schema, data FROM {name} WHERE {column} = ?", (key,))
            .fetchone()
        )
        return None if row is None else (int(row[0]), row[1], row[2])

    def _read_locked(self, table: str, key: str) -> RawRow | None:
        with self._lock:
            return self._guard(lambda: self._read(table, key))

    def get(self, server_id: str) -> Versioned[ServerState] | None:
        """The stored state of ``server_id`` and its version, or ``None``."""
        row = self._read_locked("server", server_id)
        return None if row is None else Versioned(load_state(server_id, row[1], row[2]), row[0])

    def get_ledger(self, tenant: str) -> Versioned[PauseLedger] | None:
        """The stored pause ledger of ``tenant`` and its version, or ``None``."""
        row = self._read_locked("ledger", tenant)
        return None if row is None else Versioned(load_ledger(tenant, row[1], row[2]), row[0])

    def states(self, tenant: str | None = None) -> Iterator[ServerState]:
        """Every stored state, or those of ``tenant``, in order of server id."""
        query = "SELECT server_id, row_schema, data FROM tbes_servers"
        args: tuple[str, ...] = ()
        if tenant is not None:
            query, args = query + " WHERE tenant = ?", (tenant,)
        with self._lock:
            rows = self._guard(
                lambda: self._connection().execute(query + " ORDER BY server_id", args).fetchall()
            )
        for server_id, schema, data in rows:
            yield load_state(server_id, schema, data)

    # ---- writes ---------------------------------------------------------------------

    def put(self, state: ServerState, *, expected_version: int | None) -> int:
        """Store ``state`` by compare-and-swap; return its new version."""
        return self.put_many([StateWrite(state, expected_version)])[0]

    def put_ledger(self, ledger: PauseLedger, *, expected_version: int | None) -> int:
        """Store ``ledger`` by compare-and-swap; return its new version."""
        return self.put_many([LedgerWrite(ledger, expected_version)])[0]

    def put_many(self, writes: Sequence[Write]) -> tuple[int, ...]:
        """Apply compare-and-swap writes in one transaction; return their new versions."""

        def work(conn: sqlite3.Connection) -> tuple[int, ...]:
            planned = plan_writes(writes, self._read)
            for row in sorted(planned, key=lambda row: (row.table, row.key)):
                _store(conn, row)
            return tuple(row.version for row in planned)

        return self._write(work)

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run ``work`` between ``BEGIN IMMEDIATE`` and ``COMMIT``; roll back if it raises."""
    # IMMEDIATE takes the write lock first, so the rows a CAS reads cannot change under it.
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _store(conn: sqlite3.Connection, row: RowWrite) -> None:
    """Write one planned row; the transaction's write lock makes the version check hold."""
    if row.table == "server":
        if row.expected is None:
            sql = (
                "INSERT INTO tbes_servers (tenant, version, row_schema, data, server_id)"
                " VALUES (?, ?, ?, ?, ?)"
            )
            args: tuple[object, ...] = (row.tenant, row.version, ROW_SCHEMA, row.data, row.key)
        else:
            sql = (
                "UPDATE tbes_servers SET tenant = ?, version = ?, row_schema = ?, data = ?"
                " WHERE server_id = ? AND version = ?"
            )
            args = (row.tenant, row.version, ROW_SCHEMA, row.data, row.key, row.expected)
    elif row.expected is None:
        sql = "INSERT INTO tbes_ledgers (version, row_schema, data, tenant) VALUES (?, ?, ?, ?)"
        args = (row.version, ROW_SCHEMA, row.data, row.key)
    else:
        sql = (
            "UPDATE tbes_ledgers SET version = ?, row_schema = ?, data = ?"
            " WHERE tenant = ? AND version = ?"
        )
        args = (row.version, ROW_SCHEMA, row.data, row.key, row.expected)
    if conn.execute(sql, args).rowcount != 1:  # cannot happen under the lock; never trust it
        raise conflict(row.table, row.key, row.expected, None)
