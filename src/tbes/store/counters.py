"""Rate-limit counters shared by processes: fixed windows counted in the store's database.

The self-check responder allows one reply per sender per interval and so many replies per
minute in all; several responder processes must share those counts, so they live beside
the enforcement state. Decisions: a counter is a row ``(key, expires, count)`` in its own
table ``tbes_counters``, created with ``CREATE TABLE IF NOT EXISTS`` on first use rather
than by a schema migration, because the counters are disposable (losing them only resets
the limits) and must not change the schema version that ``tbes store copy`` and older
readers check. :meth:`SQLiteCounters.take` checks and counts every limit of one reply in
one ``BEGIN IMMEDIATE`` transaction, so two processes can never both take the last slot;
expired rows are deleted in the same transaction. :class:`PostgresCounters` does the same
in PostgreSQL with row locks (``SELECT ... FOR UPDATE``, keys in order, so takes never wait
in a circle; expired rows of others are skipped while locked). :class:`MemoryCounters` is
the same for one process. Server rows and ledgers are never touched.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from tbes.errors import InvalidValueError, StoreError

__all__ = [
    "Counters",
    "Limit",
    "MemoryCounters",
    "PostgresCounters",
    "SQLiteCounters",
    "open_counters",
]

_TABLE = """CREATE TABLE IF NOT EXISTS tbes_counters (
    key TEXT PRIMARY KEY,
    expires REAL NOT NULL,
    count INTEGER NOT NULL
)"""


def _seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise InvalidValueError(f"{name} must be a number of seconds > 0, got {value!r:.80}")


def _positive_seconds(instance: object, attribute: attrs.Attribute[float], value: object) -> None:
    _seconds(attribute.name, value)


def _positive_count(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 1:
        raise InvalidValueError(f"{attribute.name} must be an int >= 1, got {value!r}")


def _key(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > 512:
        raise InvalidValueError(f"a counter key is a str of 1 to 512 characters, got {value!r:.80}")


@attrs.frozen
class Limit:
    """At most ``count`` takes of ``key`` in each window of ``seconds``."""

    key: str = attrs.field(validator=_key)
    count: int = attrs.field(validator=_positive_count)
    seconds: float = attrs.field(validator=_positive_seconds)


class Counters(Protocol):
    """Where the limits are counted."""

    def take(self, limits: Sequence[Limit], now: float) -> bool:
        """Count one use against every limit if all have room at ``now`` (Unix seconds).

        All or nothing: when one limit is full, nothing is counted and False is returned.
        """
        ...

    def close(self) -> None:
        """Release what the counters hold."""
        ...


def _decide(
    rows: dict[str, tuple[float, int]], limits: Sequence[Limit], now: float
) -> dict[str, tuple[float, int]] | None:
    """The rows after one take, or None if a limit is full; ``rows`` are the current ones."""
    updated = {}
    for limit in limits:
        expires, count = rows.get(limit.key, (0.0, 0))
        if expires <= now:  # the window is over (or never was): a new one starts now
            expires, count = now + limit.seconds, 0
        if count >= limit.count:
            return None
        updated[limit.key] = (expires, count + 1)
    return updated


class MemoryCounters:
    """:class:`Counters` in this process's memory."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def take(self, limits: Sequence[Limit], now: float) -> bool:
        """See :meth:`Counters.take`."""
        with self._lock:
            self._rows = {k: v for k, v in self._rows.items() if v[0] > now}
            updated = _decide(self._rows, limits, now)
            if updated is None:
                return False
            self._rows.update(updated)
            return True

    def close(self) -> None:
        """Nothing to release."""


class SQLiteCounters:
    """:class:`Counters` in the table ``tbes_counters`` of the SQLite file at ``path``.

    Usually the file of the :class:`~tbes.store.SQLiteStore`, so that every process sharing
    the state shares the counts. Every wait for another process is bounded by ``timeout``
    seconds; a failure raises :class:`~tbes.errors.StoreError`.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 2.0) -> None:
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise InvalidValueError(f"path must be a non-empty str or path, got {path!r:.80}")
        _seconds("timeout", timeout)
        self.path = Path(path)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # never across fork
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode = WAL")
            # Counts are disposable: a power cut may lose the last few, never corrupt the file.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(_TABLE)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def take(self, limits: Sequence[Limit], now: float) -> bool:
        """See :meth:`Counters.take`."""
        keys = [limit.key for limit in limits]
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute("DELETE FROM tbes_counters WHERE expires <= ?", (now,))
                    marks = ", ".join("?" * len(keys))
                    found = conn.execute(
                        f"SELECT key, expires, count FROM tbes_counters WHERE key IN ({marks})",
                        keys,
                    ).fetchall()
                    updated = _decide({k: (e, c) for k, e, c in found}, limits, now)
                    for key, (expires, count) in (updated or {}).items():
                        conn.execute(
                            "INSERT INTO tbes_counters (key, expires, count) VALUES (?, ?, ?) "
                            "ON CONFLICT (key) DO UPDATE SET expires = excluded.expires, "
                            "count = excluded.count",
                            (key, expires, count),
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite counters {self.path}: {exc}") from exc
        return updated is not None

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


_PG_TABLE = """CREATE TABLE IF NOT EXISTS tbes_counters (
    key text PRIMARY KEY,
    expires double precision NOT NULL,
    count integer NOT NULL
)"""
# Any constant: serialises CREATE TABLE IF NOT EXISTS, which races on a new database.
_PG_CREATE_LOCK = 0x7B35C0
_PG_TAKE = (
    "INSERT INTO tbes_counters (key, expires, count) VALUES (%s, 0, 0) ON CONFLICT DO NOTHING"
)


class PostgresCounters:
    """:class:`Counters` in the table ``tbes_counters`` of the PostgreSQL database ``dsn``.

    One connection per process (psycopg, extra ``postgres``), opened on first use. Every
    statement and lock wait is bounded by ``timeout`` seconds; a failure raises
    :class:`~tbes.errors.StoreError` (without the DSN) and the next take reconnects.
    """

    def __init__(self, dsn: str, *, timeout: float = 2.0) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise InvalidValueError("dsn must be a non-empty str")
        _seconds("timeout", timeout)
        self._dsn = dsn
        self._ms = int(timeout * 1000)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = 0

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._pid != os.getpid() or self._conn.closed:
            conn = psycopg.connect(self._dsn, connect_timeout=max(1, self._ms // 1000))
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_CREATE_LOCK,))
                conn.execute(_PG_TABLE)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def take(self, limits: Sequence[Limit], now: float) -> bool:
        """See :meth:`Counters.take`."""
        import psycopg

        keys = sorted({limit.key for limit in limits})
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = {self._ms}")
                    conn.execute(f"SET LOCAL statement_timeout = {self._ms}")
                    for key in keys:
                        conn.execute(_PG_TAKE, (key,))
                    found = conn.execute(
                        "SELECT key, expires, count FROM tbes_counters WHERE key = ANY(%s) "
                        "ORDER BY key FOR UPDATE",
                        (keys,),
                    ).fetchall()
                    updated = _decide({k: (e, c) for k, e, c in found}, limits, now)
                    for key, (expires, count) in (updated or {}).items():
                        conn.execute(
                            "UPDATE tbes_counters SET expires = %s, count = %s WHERE key = %s",
                            (expires, count, key),
                        )
                    conn.execute(
                        "DELETE FROM tbes_counters WHERE key IN (SELECT key FROM tbes_counters "
                        "WHERE expires <= %s FOR UPDATE SKIP LOCKED)",
                        (now,),
                    )
            except psycopg.Error as exc:
                self._drop()
                raise StoreError(f"PostgreSQL counters: {type(exc).__name__}") from None
        return updated is not None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            if self._pid == os.getpid():
                self._drop()
            self._conn = None


def open_counters(where: str | os.PathLike[str] | None) -> Counters:
    """The counters at ``where``: a ``postgresql://`` URL, a SQLite file, or None (memory)."""
    if where is None:
        return MemoryCounters()
    text = str(where)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresCounters(text)
    return SQLiteCounters(where)
