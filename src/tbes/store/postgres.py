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
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tbes.errors import StoreConflictError, StoreError
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
    describe,
    load_ledger,
    load_state,
    plan_writes,
)

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

_SELECT = {
    "server": "SELECT version, row_schema, data FROM tbes_servers WHERE server_id = %s FOR UPDATE",
    "ledger": "SELECT version, row_schema, data FROM tbes_ledgers WHERE tenant = %s FOR UPDATE",
}
_INSERT = {
    "server": (
        "INSERT INTO tbes_servers (tenant, version, row_schema, data, server_id)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
    ),
    "ledger": (
        "INSERT INTO tbes_ledgers (version, row_schema, data, tenant)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
    ),
}
_UPDATE = {
    "server": (
        "UPDATE tbes_servers SET tenant = %s, version = %s, row_schema = %s, data = %s"
        " WHERE server_id = %s AND version = %s"
    ),
    "ledger": (
        "UPDATE tbes_ledgers SET version = %s, row_schema = %s, data = %s"
        " WHERE tenant = %s AND version = %s"
    ),
}


class PostgresStore:
    """A :class:`~tbes.store.StateStore` in the PostgreSQL database at ``dsn``.

    ``dsn`` is a libpq connection string or URI (``"host=db dbname=tbes user=tbes"``); put
    the tables in another schema with ``options=-csearch_path=...``. One connection per
    store object, guarded by a lock, serves all its threads; it is reopened after a
    failure and in a process that inherited the store across ``fork``. Opening creates or
    migrates the schema and refuses (StoreError) a database made by a newer tbes.
    """

    def __init__(self, dsn: str, *, connect_timeout: int = 10) -> None:
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
        conn.execute("CREATE TABLE IF NOT EXISTS tbes_schema (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM tbes_schema").fetchone()
        if row is None:
            conn.execute("INSERT INTO tbes_schema (version) VALUES (0)")
        version = 0 if row is None else int(row[0])
        if version > len(MIGRATIONS):
            raise StoreError(
                f"PostgreSQL database has tbes schema version {version}; this tbes knows up "
                f"to {len(MIGRATIONS)}: upgrade tbes to use it"
            )
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("UPDATE tbes_schema SET version = %s", (len(MIGRATIONS),))

    def schema_version(self) -> int:
        """How many of :data:`MIGRATIONS` the database has had applied."""
        row = self._run(lambda conn: conn.execute("SELECT version FROM tbes_schema").fetchone())
        assert row is not None  # written by _migrate when the store opened
        return int(row[0])

    # ---- reads ----------------------------------------------------------------------

    def _read(self, table: str, key: str) -> RawRow | None:
        conn = self._conn
        assert conn is not None  # only called inside _run
        row = conn.execute(_SELECT[table], (key,)).fetchone()
        return None if row is None else (int(row[0]), row[1], row[2])

    def get(self, server_id: str) -> Versioned[ServerState] | None:
        """The stored state of ``server_id`` and its version, or ``None``."""
        row = self._run(lambda _: self._read("server", server_id))
        return None if row is None else Versioned(load_state(server_id, row[1], row[2]), row[0])

    def get_ledger(self, tenant: str) -> Versioned[PauseLedger] | None:
        """The stored pause ledger of ``tenant`` and its version, or ``None``."""
        row = self._run(lambda _: self._read("ledger", tenant))
        return None if row is None else Versioned(load_ledger(tenant, row[1], row[2]), row[0])

    def states(self, tenant: str | None = None) -> Iterator[ServerState]:
        """Every stored state, or those of ``tenant``, in order of server id."""

        def fetch(conn: psycopg.Connection[Any]) -> list[Any]:
            if tenant is None:
                query = "SELECT server_id, row_schema, data FROM tbes_servers ORDER BY server_id"
                return conn.execute(query).fetchall()
            query = (
                "SELECT server_id, row_schema, data FROM tbes_servers"
                " WHERE tenant = %s ORDER BY server_id"
            )
            return conn.execute(query, (tenant,)).fetchall()

        for server_id, schema, data in self._run(fetch):
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

        def work(conn: psycopg.Connection[Any]) -> tuple[int, ...]:
            planned = plan_writes(writes, self._read)
            # Rows are written in (table, key) order too, so batches never wait in a circle.
            for row in sorted(planned, key=lambda row: (row.table, row.key)):
                _store(conn, row)
            return tuple(row.version for row in planned)

        return self._run(work)

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _store(conn: psycopg.Connection[Any], row: RowWrite) -> None:
    """Write one planned row, letting the database check the version it expects."""
    if row.expected is None:
        sql = _INSERT[row.table]
        head: tuple[object, ...] = (row.tenant,) if row.table == "server" else ()
        args = (*head, row.version, ROW_SCHEMA, row.data, row.key)
    else:
        sql = _UPDATE[row.table]
        head = (row.tenant,) if row.table == "server" else ()
        args = (*head, row.version, ROW_SCHEMA, row.data, row.key, row.expected)
    # Another host's insert may have committed since our read: then nothing was written.
    if conn.execute(sql, args).rowcount != 1:
        raise StoreConflictError(f"{describe(row.table, row.key)} was written by another writer")
