"""The embedded store: one SQLite file, shared safely by the processes of one host.

Decisions: the standard library's :mod:`sqlite3` only; WAL journal, so readers never wait
for the writer. Each store object has two connections, one for writes and one for reads,
each guarded by its own lock: a write waiting for another process's write lock holds only
the write connection, and reads in this process go on meanwhile. Every write is one
``BEGIN IMMEDIATE`` transaction that takes the write lock before reading the rows it checks,
so a compare-and-swap cannot interleave with another process's (SQLite's file locks
coordinate processes). Every wait, for a lock of this process or a busy file, is bounded by
the store's ``timeout`` capped by what is left of the running check
(:func:`~tbes.store.base.remaining`), so a stalled writer elsewhere fails the check open
in time. A process that inherits a store across ``fork`` opens its own connections on first
use. The schema carries its version in the table ``tbes_schema`` and is brought forward by
an ordered list of migrations when the file is opened for writing; ``read_only`` opens never
write (not even the journal mode) and refuse a file that is not a tbes database.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from tbes.errors import InvalidValueError, StoreError
from tbes.store._rows import conflict
from tbes.store._sql import SQLStore, migrate, raw_row, select_sql, write_sql
from tbes.store.base import DEFAULT_CHECK_TIMEOUT, RawRow, RowWrite, remaining

__all__ = ["FILE_CHECK_INTERVAL", "MIGRATIONS", "SQLiteStore"]

_T = TypeVar("_T")
_log = logging.getLogger(__name__)

_UNSET = object()
_BUSY_STEP_MS = 50

FILE_CHECK_INTERVAL = 5.0
"""Seconds between checks that the file at the store's path is still the one it opened."""

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
    # 3: the discovered servers (docs/discovery.md), the oldest found by the index.
    (
        """CREATE TABLE tbes_discovered (
            peer TEXT PRIMARY KEY,
            last_seen INTEGER NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX tbes_discovered_by_last_seen ON tbes_discovered (last_seen, peer)",
    ),
    # 4: the outbox (docs/notifications.md): events waiting for delivery, in the order they
    # were stored, and per event and receiver the claims and the delivery.
    (
        """CREATE TABLE tbes_outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL,
            at REAL NOT NULL,
            row_schema INTEGER NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX tbes_outbox_by_at ON tbes_outbox (at)",
        """CREATE TABLE tbes_deliveries (
            event_id TEXT NOT NULL,
            receiver TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            due REAL,
            delivered REAL,
            PRIMARY KEY (event_id, receiver)
        )""",
    ),
)
"""The schema's migrations in order; the database's version is how many have been applied."""


class SQLiteStore(SQLStore[sqlite3.Connection]):
    """A :class:`~tbes.store.StateStore` in the SQLite file at ``path`` (created if missing).

    ``timeout`` (seconds, default :data:`~tbes.store.base.DEFAULT_CHECK_TIMEOUT`) bounds
    every wait: for another process's write lock, and for another thread of this process;
    inside a check it is capped by what is left of the check's deadline. Past it the call
    raises :class:`~tbes.errors.StoreError`. Reads never wait for a writer.

    Opening migrates an older schema forward and refuses (StoreError) a file made by a
    newer tbes. With ``read_only=True`` the file is opened read-only (SQLite ``mode=ro``):
    it must exist and be a tbes database (else StoreError), nothing is ever written to it
    or beside it that SQLite can avoid, and every write raises StoreError; it works on a
    read-only file in a read-only directory too. Every ``file_check_interval`` seconds (at
    most, on use) the store checks that ``path`` is still the file it opened, and logs an
    ERROR if it was deleted or replaced. A ``path`` that is no ``str`` or path, or a
    ``timeout`` or ``file_check_interval`` that is no number > 0, raises InvalidValueError.
    """

    in_process: ClassVar[bool] = True
    """Calls wait on nothing outside the process but the file and its lock, within
    ``timeout`` (see :class:`~tbes.adapters.postfix_policy.PolicyLimits`)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = DEFAULT_CHECK_TIMEOUT,
        read_only: bool = False,
        file_check_interval: float = FILE_CHECK_INTERVAL,
    ) -> None:
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise InvalidValueError(f"path must be a non-empty str or path, got {path!r:.80}")
        if type(read_only) is not bool:
            raise InvalidValueError(f"read_only must be a bool, got {read_only!r:.80}")
        self.path = Path(path)
        self.read_only = read_only
        self._timeout = _checked_seconds("timeout", timeout)
        self._check_interval = _checked_seconds("file_check_interval", file_check_interval)
        self._lock = threading.Lock()  # the write connection
        self._read_lock = threading.Lock()  # the read connection
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._reader: sqlite3.Connection | None = None
        self._reader_pid = 0
        self._busy: dict[int, int] = {}  # id(connection) -> busy timeout last set, in ms
        self._watch_lock = threading.Lock()
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self._reported: object = _UNSET  # the last changed identity logged (None: deleted)
        self._next_check = 0.0
        if read_only:
            self._reading(self._check_tbes)
        else:
            self._run(self._migrate)

    # ---- connections, waits and transactions ------------------------------------------

    def _open(self, *, read: bool) -> sqlite3.Connection:
        if self.read_only:
            conn = self._open_read_only()
        else:
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            if not read:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal" and str(self.path) != ":memory:":
                    conn.close()
                    raise StoreError(
                        f"SQLite file {self.path} cannot use WAL (journal mode {mode})"
                    )
                conn.execute("PRAGMA synchronous = FULL")  # a commit survives a power cut
        # connect() set the busy timeout to ``timeout``: record it (the id may be reused).
        self._busy[id(conn)] = int(self._timeout * 1000)
        if self._identity is None:
            self._identity = _identity(self.path)
        return conn

    def _open_read_only(self) -> sqlite3.Connection:
        uri = self.path.absolute().as_uri()
        conn = _connect_uri(f"{uri}?mode=ro", self._timeout)
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return conn
        except sqlite3.Error as exc:
            conn.close()
            # A WAL file opened read-only needs its -shm and -wal files, which a read-only
            # directory cannot give it. With no write-ahead log to read the main file holds
            # every commit: read it as immutable. A log that is there must not be ignored.
            name = getattr(exc, "sqlite_errorname", "")
            if not name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
                raise
            if not self.path.is_file():
                raise StoreError(f"SQLite file {self.path} does not exist") from exc
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise StoreError(
                    f"SQLite file {self.path} cannot be read read-only: its write-ahead log "
                    f"{wal.name} has commits, and its -shm file cannot be made here"
                ) from exc
        return _connect_uri(f"{uri}?mode=ro&immutable=1", self._timeout)

    def _bounded(self, conn: sqlite3.Connection, wait: float) -> sqlite3.Connection:
        """``conn`` with its busy timeout set to at most ``wait`` seconds."""
        # Rounded down to a step, so that consecutive checks (each starting with about the
        # same time left) find it already set: setting it compiles a statement.
        ms = int(wait * 1000) // _BUSY_STEP_MS * _BUSY_STEP_MS
        if self._busy.get(id(conn)) != ms:
            conn.execute(f"PRAGMA busy_timeout = {ms}")
            self._busy[id(conn)] = ms
        return conn

    def _held(self, lock: threading.Lock, what: str) -> float:
        """Take ``lock`` within the time left; return the seconds still left, else StoreError."""
        if not lock.acquire(timeout=remaining(self._timeout)):
            raise StoreError(
                f"SQLite store {self.path}: timed out waiting for another thread's {what}"
            )
        return remaining(self._timeout)

    def _guard(self, work: Callable[[], _T]) -> _T:
        """Run ``work``, turning sqlite3 and file system errors into StoreError."""
        try:
            return work()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction: all of it or none."""
        if self.read_only:
            raise StoreError(f"SQLite store {self.path} is open read-only: it is not written")
        self._watch()
        wait = self._held(self._lock, "write")
        try:

            def transaction() -> _T:
                if self._conn is None or self._pid != os.getpid():
                    # A connection must not cross fork: the child opens its own.
                    self._conn, self._pid = self._open(read=False), os.getpid()
                return _transaction(self._bounded(self._conn, wait), work)

            return self._guard(transaction)
        finally:
            self._lock.release()

    def _reading(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` on the read connection: in WAL mode it never waits for a writer."""
        self._watch()
        wait = self._held(self._read_lock, "read")
        try:

            def read() -> _T:
                if self._reader is None or self._reader_pid != os.getpid():
                    self._reader, self._reader_pid = self._open(read=True), os.getpid()
                return work(self._bounded(self._reader, wait))

            return self._guard(read)
        finally:
            self._read_lock.release()

    def _watch(self) -> None:
        """Log an ERROR if the file at ``path`` is no longer the one this store opened."""
        # Cheap: one clock read per call, one stat per interval, one thread at a time.
        if time.monotonic() < self._next_check or not self._watch_lock.acquire(blocking=False):
            return
        try:
            self._next_check = time.monotonic() + self._check_interval
            opened = self._identity
            now = _identity(self.path)
            if opened is None or now == opened or now == self._reported:
                return
            self._reported = now
            happened = "deleted" if now is None else "replaced by another file"
            _log.error(
                "tbes: SQLite file %s was %s while this process had it open; the store still "
                "reads and writes the old file, which no other process sees: restart the process",
                self.path,
                happened,
            )
        finally:
            self._watch_lock.release()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        migrate(conn, MIGRATIONS, param=self._PARAM, newer=self._too_new)

    def _check_tbes(self, conn: sqlite3.Connection) -> None:
        """Refuse a file that is not a tbes database, or one of a newer tbes."""
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tbes_schema'"
        ).fetchone()
        row = None if found is None else conn.execute("SELECT version FROM tbes_schema").fetchone()
        if row is None or type(row[0]) is not int or row[0] < 1:
            raise StoreError(f"SQLite file {self.path} is not a tbes database")
        if row[0] > len(MIGRATIONS):
            raise StoreError(self._too_new(row[0]))

    def _too_new(self, version: int) -> str:
        return (
            f"SQLite file {self.path} has schema version {version}; this tbes knows up to "
            f"{len(MIGRATIONS)}: upgrade tbes to open it"
        )

    def schema_version(self) -> int:
        """How many of :data:`MIGRATIONS` the file has had applied."""
        row = self._reading(lambda conn: conn.execute("SELECT version FROM tbes_schema").fetchone())
        return int(row[0])

    # ---- rows ----------------------------------------------------------------------

    def _read(self, conn: sqlite3.Connection, table: str, key: str) -> RawRow | None:
        """Inside :meth:`_run`: the row of ``key``, on the write connection."""
        return raw_row(conn.execute(select_sql(table, self._PARAM), (key,)).fetchone())

    def _read_row(self, table: str, key: str) -> RawRow | None:
        sql = select_sql(table, self._PARAM)
        return self._reading(lambda conn: raw_row(conn.execute(sql, (key,)).fetchone()))

    def _fetch_all(self, sql: str, args: tuple[str, ...]) -> list[Any]:
        return self._reading(lambda conn: conn.execute(sql, args).fetchall())

    def _discovered_rows(self) -> list[tuple[object, object]]:
        # A file of an older schema opened read-only has no table yet: nothing discovered.
        def rows(conn: sqlite3.Connection) -> list[tuple[object, object]]:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tbes_discovered'"
            ).fetchone()
            if found is None:
                return []
            sql = "SELECT peer, data FROM tbes_discovered"
            return [(peer, data) for peer, data in conn.execute(sql)]

        return self._reading(rows)

    def _store(self, conn: sqlite3.Connection, row: RowWrite) -> None:
        """Write one planned row; the transaction's write lock makes the version check hold."""
        sql, args = write_sql(row, self._PARAM)
        if conn.execute(sql, args).rowcount != 1:  # cannot happen under the lock; never trust it
            raise conflict(row.table, row.key, row.expected, None)

    def close(self) -> None:
        """Close this process's connections."""
        for lock, name in ((self._lock, "_conn"), (self._read_lock, "_reader")):
            with lock:
                conn: sqlite3.Connection | None = getattr(self, name)
                owner = self._pid if name == "_conn" else self._reader_pid
                if conn is not None and owner == os.getpid():
                    self._busy.pop(id(conn), None)
                    conn.close()
                setattr(self, name, None)


def _checked_seconds(name: str, value: object) -> float:
    # Finite: an endless wait is a hang, and the busy timeout is set in whole milliseconds.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValueError(f"{name} must be a number of seconds, got {value!r:.80}")
    if not 0 < value < float("inf"):
        raise InvalidValueError(f"{name} must be finite and > 0 seconds, got {value!r}")
    return value


def _connect_uri(uri: str, timeout: float) -> sqlite3.Connection:
    return sqlite3.connect(
        uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
    )


def _identity(path: Path) -> tuple[int, int] | None:
    """The file at ``path`` as ``(st_dev, st_ino)``, or ``None`` if there is none."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


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
