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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tbes.errors import InvalidValueError, StoreError
from tbes.store._sql import SQLStore, migrate, raw_row, select_sql, write_sql
from tbes.store.protocol import RawRow, RowWrite, conflict

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


class SQLiteStore(SQLStore[sqlite3.Connection]):
    """A :class:`~tbes.store.StateStore` in the SQLite file at ``path`` (created if missing).

    ``timeout`` is how many seconds a write waits for another process's write lock before
    failing with :class:`~tbes.errors.StoreError`. Opening migrates an older schema forward
    and refuses (StoreError) a file made by a newer tbes. A ``path`` that is no ``str`` or
    path, or a ``timeout`` that is no number > 0, raises InvalidValueError.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise InvalidValueError(f"path must be a non-empty str or path, got {path!r:.80}")
        self.path = Path(path)
        self._timeout = _checked_timeout(timeout)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        with self._lock:
            self._guard(lambda: _transaction(self._connection(), self._migrate))

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

    def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction: all of it or none."""
        with self._lock:
            return self._guard(lambda: _transaction(self._connection(), work))

    def _migrate(self, conn: sqlite3.Connection) -> None:
        migrate(conn, MIGRATIONS, param=self._PARAM, newer=self._too_new)

    def _too_new(self, version: int) -> str:
        return (
            f"SQLite file {self.path} has schema version {version}; this tbes knows up to "
            f"{len(MIGRATIONS)}: upgrade tbes to open it"
        )

    def schema_version(self) -> int:
        """How many of :data:`MIGRATIONS` the file has had applied."""
        with self._lock:
            row = self._guard(
                lambda: self._connection().execute("SELECT version FROM tbes_schema").fetchone()
            )
        return int(row[0])

    # ---- rows ----------------------------------------------------------------------

    def _read(self, table: str, key: str) -> RawRow | None:
        return raw_row(
            self._connection().execute(select_sql(table, self._PARAM), (key,)).fetchone()
        )

    def _read_row(self, table: str, key: str) -> RawRow | None:
        with self._lock:
            return self._guard(lambda: self._read(table, key))

    def _fetch_all(self, sql: str, args: tuple[str, ...]) -> list[Any]:
        with self._lock:
            return self._guard(lambda: self._connection().execute(sql, args).fetchall())

    def _store(self, conn: sqlite3.Connection, row: RowWrite) -> None:
        """Write one planned row; the transaction's write lock makes the version check hold."""
        sql, args = write_sql(row, self._PARAM)
        if conn.execute(sql, args).rowcount != 1:  # cannot happen under the lock; never trust it
            raise conflict(row.table, row.key, row.expected, None)


def _checked_timeout(timeout: object) -> float:
    # Finite: an endless wait is a hang, and the busy timeout is set in whole milliseconds.
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidValueError(f"timeout must be a number of seconds, got {timeout!r:.80}")
    if not 0 < timeout < float("inf"):
        raise InvalidValueError(f"timeout must be finite and > 0 seconds, got {timeout!r}")
    return timeout


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
