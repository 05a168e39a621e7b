"""The shared store: one PostgreSQL database for a cluster of MTAs on several hosts.

Decisions: psycopg 3, imported here only, so tbes installs and imports without it (extra
``postgres``). Compare-and-swap is done by the database, not by a lock in one process: a
write reads its rows ``SELECT ... FOR UPDATE`` in (table, key) order, then writes with
``UPDATE ... WHERE version = %s`` or ``INSERT ... ON CONFLICT DO NOTHING`` and checks the
row count, all in one transaction, so writers on different hosts can never both win. The
schema's version lives in ``tbes_schema``; creating and migrating it is idempotent and
serialised by a transaction-scoped advisory lock, so any number of nodes may start at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tbes.errors import InvalidValueError, StoreConflictError, StoreError
from tbes.store._sql import SQLStore, migrate, raw_row, select_sql, write_sql
from tbes.store.protocol import RawRow, RowWrite, describe

if TYPE_CHECKING:
    import psycopg

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
)
"""The schema's migrations in order; the database's version is how many have been applied."""

# pg_advisory_xact_lock key that serialises schema migrations ("tbes" and 1).
_MIGRATION_LOCK = 0x74626573_00000001


class PostgresStore(SQLStore["psycopg.Connection[Any]"]):
    """A :class:`~tbes.store.StateStore` in the PostgreSQL database at ``dsn``.

    ``dsn`` is a libpq connection string or URI (``"host=db dbname=tbes user=tbes"``); put
    the tables in another schema with ``options=-csearch_path=...``. One connection per
    store object, guarded by a lock, serves all its threads; it is reopened after a
    failure and in a process that inherited the store across ``fork``. Opening creates or
    migrates the schema and refuses (StoreError) a database made by a newer tbes. A ``dsn``
    that is no ``str``, or a ``connect_timeout`` that is no int >= 0 (seconds; 0 waits
    forever), raises InvalidValueError.
    """

    _PARAM = "%s"

    def __init__(self, dsn: str, *, connect_timeout: int = 10) -> None:
        if not isinstance(dsn, str):
            raise InvalidValueError(f"dsn must be a str, got {dsn!r:.80}")
        if type(connect_timeout) is not int or connect_timeout < 0:
            raise InvalidValueError(
                f"connect_timeout must be an int >= 0 (seconds), got {connect_timeout!r}"
            )
        try:
            import psycopg  # noqa: F401  (fail early and clearly without the extra)
        except ImportError as exc:
            raise StoreError("PostgresStore needs psycopg 3: pip install 'tbes[postgres]'") from exc
        self.dsn = dsn
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = 0
        self._run(self._migrate)

    # ---- connection and transactions ------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        import psycopg

        conn = self._conn
        if conn is None or conn.closed or self._pid != os.getpid():
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=self._connect_timeout)
            self._conn, self._pid = conn, os.getpid()
        return conn

    def _run(self, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run ``work`` in one transaction with the lock held; map driver errors."""
        import psycopg
        from psycopg import errors

        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    return work(conn)
            except (errors.SerializationFailure, errors.DeadlockDetected) as exc:
                raise StoreConflictError(f"PostgreSQL store: {exc}") from exc
            except psycopg.Error as exc:
                if self._conn is not None and self._conn.broken:
                    self._conn = None  # reconnect on the next call
                raise StoreError(f"PostgreSQL store: {type(exc).__name__}: {exc}") from exc

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        migrate(conn, MIGRATIONS, param=self._PARAM, newer=_too_new)

    def schema_version(self) -> int:
        """How many of :data:`MIGRATIONS` the database has had applied."""
        row = self._run(lambda conn: conn.execute("SELECT version FROM tbes_schema").fetchone())
        assert row is not None  # written by _migrate when the store opened
        return int(row[0])

    # ---- rows ---------------------------------------------------------------------

    def _read(self, table: str, key: str) -> RawRow | None:
        conn = self._conn
        assert conn is not None  # only called inside _run
        return raw_row(
            conn.execute(select_sql(table, self._PARAM) + " FOR UPDATE", (key,)).fetchone()
        )

    def _read_row(self, table: str, key: str) -> RawRow | None:
        return self._run(lambda _: self._read(table, key))

    def _fetch_all(self, sql: str, args: tuple[str, ...]) -> list[Any]:
        return self._run(lambda conn: conn.execute(sql, args).fetchall())

    def _store(self, conn: psycopg.Connection[Any], row: RowWrite) -> None:
        """Write one planned row, letting the database check the version it expects."""
        sql, args = write_sql(row, self._PARAM)
        if row.expected is None:
            sql += " ON CONFLICT DO NOTHING"
        # Another host's insert may have committed since our read: then nothing was written.
        if conn.execute(sql, args).rowcount != 1:
            raise StoreConflictError(
                f"{describe(row.table, row.key)} was written by another writer"
            )


def _too_new(version: int) -> str:
    return (
        f"PostgreSQL database has tbes schema version {version}; this tbes knows up "
        f"to {len(MIGRATIONS)}: upgrade tbes to use it"
    )
