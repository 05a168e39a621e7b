"""The StateStore contract, proven once for every store: memory, SQLite and PostgreSQL.

Each test runs against all three, and against the custom store docs/custom-store.md builds
on RowStore (its code taken from the page). The PostgreSQL run starts a real server (and is
skipped, or failed under TBES_REQUIRE_INTEGRATION=1, when PostgreSQL is not installed). A backend
helper reads and writes raw rows behind the store's back, to plant unreadable rows and to
check that a refused write left them exactly as they were.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import attrs
import pytest

from custom_store_doc import example_store_class
from integration.pg import PostgresServer
from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.decision import Action
from tbes.enforcer import Connection, Enforcer
from tbes.errors import StoreConflictError, StoreError
from tbes.ledger import Pause, PauseLedger
from tbes.policy import DEFAULT_POLICY, ConnectorKind
from tbes.serde import dumps, loads
from tbes.state import ServerState
from tbes.store import (
    LedgerWrite,
    MemoryStore,
    PostgresStore,
    RowStore,
    SQLiteStore,
    StateStore,
    StateWrite,
    UnreadableRow,
    Versioned,
)
from tbes.version import ExchangeBuild

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=UTC)

RawRow = tuple[object, int, str]


def state(
    server_id: str = "mx1.contoso.com", tenant: str = "contoso", **changes: Any
) -> ServerState:
    """An outdated Exchange 2016 server seen at T0, with ``changes`` applied."""
    base = ServerState(
        server_id=server_id,
        tenant=tenant,
        build=ExchangeBuild(15, 1, 2507, 39),
        status=Compliance.OUTDATED,
        first_detected=T0,
        last_seen=T0,
        compliant_since=None,
    )
    return attrs.evolve(base, **changes)


def ledger(tenant: str = "contoso", **changes: Any) -> PauseLedger:
    """A tenant's ledger with one 5-day pause, with ``changes`` applied."""
    base = PauseLedger(tenant, 90, (Pause("mx1.contoso.com", dt.date(2026, 3, 10), 5),))
    return attrs.evolve(base, **changes)


# ---- backends ----------------------------------------------------------------------------


class Backend:
    """One kind of store, plus raw access to its rows behind its back."""

    name = ""
    # Versions no tbes writes, but which the backend's column can hold (planted behind its back).
    bad_versions: tuple[object, ...] = (0, -5, "abc", 2.5, True)

    def open(self) -> StateStore:
        """A store object over this backend's storage (a new one each call, if it persists)."""
        raise NotImplementedError

    def raw(self, table: str, key: str) -> RawRow | None:
        """The stored ``(version, row_schema, data)`` of a row, read behind the store's back."""
        raise NotImplementedError

    def plant(self, table: str, key: str, version: object, schema: int, data: str) -> None:
        """Write a row behind the store's back (``tenant`` of a server row: ``contoso``)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close whatever the backend opened."""


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self) -> None:
        self.store = MemoryStore()

    def open(self) -> StateStore:
        return self.store

    def raw(self, table: str, key: str) -> RawRow | None:
        row = self.store._rows[table].get(key)
        return None if row is None else (row[0], int(str(row[1])), str(row[2]))

    def plant(self, table: str, key: str, version: object, schema: int, data: str) -> None:
        self.store._rows[table][key] = (version, schema, data)
        if table == "server":
            self.store._tenants[key] = "contoso"


class CustomBackend(Backend):
    """The ``DictStore`` of docs/custom-store.md: rows in ``_rows[table, key]``."""

    name = "custom-store.md"

    def __init__(self) -> None:
        self.store: Any = example_store_class()()

    def open(self) -> StateStore:
        return cast(StateStore, self.store)

    def raw(self, table: str, key: str) -> RawRow | None:
        row = self.store._rows.get((table, key))
        return None if row is None else (row[0], row[1], row[2])

    def plant(self, table: str, key: str, version: object, schema: int, data: str) -> None:
        self.store._rows[table, key] = (version, schema, data, "contoso")


_SQL_TABLES = {"server": ("tbes_servers", "server_id"), "ledger": ("tbes_ledgers", "tenant")}


class SQLiteBackend(Backend):
    name = "sqlite"
    bad_versions = (0, -5, "abc", 2.5)  # SQLite stores True as 1

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stores: list[SQLiteStore] = []

    def open(self) -> StateStore:
        store = SQLiteStore(self.path)
        self.stores.append(store)
        return store

    def raw(self, table: str, key: str) -> RawRow | None:
        name, column = _SQL_TABLES[table]
        with sqlite3.connect(self.path) as conn:
            row = conn.execute(
                f"SELECT version, row_schema, data FROM {name} WHERE {column} = ?", (key,)
            ).fetchone()
        conn.close()
        return None if row is None else (row[0], row[1], row[2])

    def plant(self, table: str, key: str, version: object, schema: int, data: str) -> None:
        self.open()  # make sure the schema exists
        name, column = _SQL_TABLES[table]
        extra = ("tenant, ", "'contoso', ") if table == "server" else ("", "")
        with sqlite3.connect(self.path) as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO {name} ({extra[0]}{column}, version, row_schema, data)"
                f" VALUES ({extra[1]}?, ?, ?, ?)",
                (key, version, schema, data),
            )
        conn.close()

    def close(self) -> None:
        for store in self.stores:
            store.close()


class PostgresBackend(Backend):
    name = "postgres"
    bad_versions = (0, -5)  # a bigint column holds no text or real

    def __init__(self, server: PostgresServer) -> None:
        self.dsn = server.fresh_dsn()
        self.stores: list[PostgresStore] = []

    def open(self) -> StateStore:
        store = PostgresStore(self.dsn)
        self.stores.append(store)
        return store

    def _execute(self, sql: str, args: tuple[object, ...]) -> Any:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(sql.encode(), args)
            return cursor.fetchone() if cursor.description else None

    def raw(self, table: str, key: str) -> RawRow | None:
        name, column = _SQL_TABLES[table]
        row = self._execute(
            f"SELECT version, row_schema, data FROM {name} WHERE {column} = %s", (key,)
        )
        return None if row is None else (row[0], row[1], row[2])

    def plant(self, table: str, key: str, version: object, schema: int, data: str) -> None:
        self.open()
        name, column = _SQL_TABLES[table]
        extra = ("tenant, ", "'contoso', ") if table == "server" else ("", "")
        self._execute(
            f"INSERT INTO {name} ({extra[0]}{column}, version, row_schema, data)"
            f" VALUES ({extra[1]}%s, %s, %s, %s) ON CONFLICT ({column}) DO UPDATE SET"
            " version = EXCLUDED.version, row_schema = EXCLUDED.row_schema, data = EXCLUDED.data",
            (key, version, schema, data),
        )

    def close(self) -> None:
        for store in self.stores:
            store.close()


POSTGRES = pytest.param("postgres", marks=pytest.mark.service("postgresql"))


def _make_backend(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Backend:
    if kind == "memory":
        return MemoryBackend()
    if kind == "custom":
        return CustomBackend()
    if kind == "sqlite":
        return SQLiteBackend(tmp_path / "tbes.db")
    return PostgresBackend(request.getfixturevalue("pg_server"))


@pytest.fixture(params=["memory", "custom", "sqlite", POSTGRES])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Every store kind."""
    made = _make_backend(request, request.param, tmp_path)
    yield made
    made.close()


@pytest.fixture(params=["sqlite", POSTGRES])
def persistent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The stores whose rows outlive the store object."""
    made = _make_backend(request, request.param, tmp_path)
    yield made
    made.close()


@pytest.fixture
def store(backend: Backend) -> StateStore:
    return backend.open()


# ---- compare-and-swap on server states -----------------------------------------------------


def test_unknown_server_and_tenant_read_as_none(store: StateStore) -> None:
    assert store.get("nobody.example") is None
    assert store.get_ledger("nobody") is None
    assert list(store.states()) == []


def test_stores_satisfy_the_protocol(store: StateStore) -> None:
    assert isinstance(store, StateStore)


def test_first_put_creates_version_1_and_reads_back_equal(store: StateStore) -> None:
    value = state(pauses=(Pause("mx1.contoso.com", dt.date(2026, 4, 1), 3),), notified_stage=2)
    assert store.put(value, expected_version=None) == 1
    assert store.get("mx1.contoso.com") == Versioned(value, 1)


def test_each_successful_put_adds_one_to_the_version(store: StateStore) -> None:
    version = store.put(state(), expected_version=None)
    for minutes in range(1, 4):
        newer = state(last_seen=T0 + dt.timedelta(minutes=minutes))
        assert store.put(newer, expected_version=version) == version + 1
        version += 1
    assert store.get("mx1.contoso.com") == Versioned(
        state(last_seen=T0 + dt.timedelta(minutes=3)), 4
    )


def test_put_expecting_no_row_conflicts_with_an_existing_row(store: StateStore) -> None:
    store.put(state(), expected_version=None)
    with pytest.raises(StoreConflictError, match=r"mx1\.contoso\.com.*expected no row.*version 1"):
        store.put(state(status=Compliance.COMPLIANT), expected_version=None)
    assert store.get("mx1.contoso.com") == Versioned(state(), 1)


def test_put_expecting_a_version_conflicts_when_the_row_is_missing(store: StateStore) -> None:
    with pytest.raises(StoreConflictError, match="expected version 1, found no row"):
        store.put(state(), expected_version=1)
    assert store.get("mx1.contoso.com") is None


def test_put_with_a_stale_version_loses_and_changes_nothing(store: StateStore) -> None:
    store.put(state(), expected_version=None)
    winner = state(last_seen=T0 + dt.timedelta(hours=1))
    store.put(winner, expected_version=1)
    with pytest.raises(StoreConflictError, match="expected version 1, found version 2"):
        store.put(state(last_seen=T0 + dt.timedelta(hours=2)), expected_version=1)
    assert store.get("mx1.contoso.com") == Versioned(winner, 2)


def test_instants_come_back_in_utc(store: StateStore) -> None:
    vienna = dt.timezone(dt.timedelta(hours=1))
    store.put(state(last_seen=dt.datetime(2026, 3, 2, 11, 0, tzinfo=vienna)), expected_version=None)
    got = store.get("mx1.contoso.com")
    assert got is not None
    assert got.value.last_seen == dt.datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert got.value.last_seen.utcoffset() == dt.timedelta(0)


# ---- ledgers -----------------------------------------------------------------------------


def test_ledger_cas_follows_the_same_rules(store: StateStore) -> None:
    assert store.put_ledger(ledger(), expected_version=None) == 1
    with pytest.raises(StoreConflictError, match="ledger of tenant 'contoso'"):
        store.put_ledger(ledger(quota_days=10), expected_version=None)
    assert store.put_ledger(ledger(quota_days=80), expected_version=1) == 2
    with pytest.raises(StoreConflictError, match="expected version 1, found version 2"):
        store.put_ledger(ledger(quota_days=70), expected_version=1)
    with pytest.raises(StoreConflictError, match="expected version 1, found no row"):
        store.put_ledger(ledger("fabrikam"), expected_version=1)
    assert store.get_ledger("contoso") == Versioned(ledger(quota_days=80), 2)
    assert store.get_ledger("fabrikam") is None


def test_ledger_and_server_versions_are_independent(store: StateStore) -> None:
    store.put(state(), expected_version=None)
    store.put(state(notified_stage=1), expected_version=1)
    assert store.put_ledger(ledger(), expected_version=None) == 1


# ---- listing ---------------------------------------------------------------------------


def test_states_lists_all_servers_in_id_order_or_one_tenants(store: StateStore) -> None:
    for server_id, tenant in [("mx3", "contoso"), ("mx1", "fabrikam"), ("mx2", "contoso")]:
        store.put(state(server_id, tenant), expected_version=None)
    assert [s.server_id for s in store.states()] == ["mx1", "mx2", "mx3"]
    assert [s.server_id for s in store.states("contoso")] == ["mx2", "mx3"]
    assert [s.server_id for s in store.states(tenant="fabrikam")] == ["mx1"]
    assert list(store.states("nobody")) == []


def test_states_reads_past_page_boundaries_while_the_caller_writes(store: StateStore) -> None:
    # More rows than one page of the SQL stores (1,000), in two tenants; the caller writes
    # between rows, which must neither block nor make a row appear twice.
    count = 2_345
    store.put_many(
        [
            StateWrite(state(f"mx{i:05d}", ("contoso", "fabrikam")[i % 2]), None)
            for i in range(count)
        ]
    )
    seen: list[str] = []
    for listed in store.states():
        seen.append(listed.server_id)
        if len(seen) == 1_500:  # a row already listed changes, a new one appears further on
            store.put(state("mx00010", notified_stage=1), expected_version=1)
            store.put(state("mx99999"), expected_version=None)
    assert seen == sorted(set(seen))
    # The new row may or may not be listed (the iteration need not be one snapshot).
    assert [i for i in seen if i != "mx99999"] == [f"mx{i:05d}" for i in range(count)]
    fabrikam = [listed.server_id for listed in store.states("fabrikam")]
    assert fabrikam == [f"mx{i:05d}" for i in range(1, count, 2)]


def test_a_server_moved_to_another_tenant_is_listed_there(store: StateStore) -> None:
    store.put(state("mx1", "contoso"), expected_version=None)
    store.put(state("mx1", "fabrikam"), expected_version=1)
    assert list(store.states("contoso")) == []
    assert list(store.states("fabrikam")) == [state("mx1", "fabrikam")]


# ---- atomic batches --------------------------------------------------------------------


def test_put_many_writes_every_row_and_returns_versions_in_order(store: StateStore) -> None:
    store.put_ledger(ledger(), expected_version=None)
    versions = store.put_many(
        [
            StateWrite(state("mx2"), None),
            LedgerWrite(ledger(quota_days=60), 1),
            StateWrite(state("mx1"), None),
        ]
    )
    assert versions == (1, 2, 1)
    assert store.get_ledger("contoso") == Versioned(ledger(quota_days=60), 2)
    assert store.get("mx1") == Versioned(state("mx1"), 1)
    assert store.get("mx2") == Versioned(state("mx2"), 1)


def test_put_many_with_one_lost_race_writes_nothing(store: StateStore) -> None:
    store.put_ledger(ledger(), expected_version=None)
    store.put(state("mx1"), expected_version=None)
    with pytest.raises(StoreConflictError, match="'mx1'"):
        store.put_many(
            [
                LedgerWrite(ledger(quota_days=10), 1),  # would succeed
                StateWrite(state("mx0"), None),  # would succeed
                StateWrite(state("mx1", notified_stage=3), None),  # exists: loses
            ]
        )
    assert store.get_ledger("contoso") == Versioned(ledger(), 1)
    assert store.get("mx0") is None
    assert store.get("mx1") == Versioned(state("mx1"), 1)


def test_put_many_refuses_two_writes_of_one_row(store: StateStore) -> None:
    with pytest.raises(StoreError, match="two writes of the server 'mx1'"):
        store.put_many([StateWrite(state("mx1"), None), StateWrite(state("mx1"), None)])
    assert store.get("mx1") is None


def test_put_many_of_nothing_is_a_no_op(store: StateStore) -> None:
    assert store.put_many([]) == ()


def test_concurrent_threads_lose_no_update(store: StateStore) -> None:
    store.put_ledger(PauseLedger("contoso", 0), expected_version=None)
    conflicts = []

    def add_one_day_of_quota(times: int) -> None:
        for _ in range(times):
            while True:
                got = store.get_ledger("contoso")
                assert got is not None
                bumped = attrs.evolve(got.value, quota_days=got.value.quota_days + 1)
                try:
                    store.put_ledger(bumped, expected_version=got.version)
                    break
                except StoreConflictError:
                    conflicts.append(1)

    threads = [threading.Thread(target=add_one_day_of_quota, args=(25,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = store.get_ledger("contoso")
    assert final is not None
    assert (final.value.quota_days, final.version) == (100, 101)


# ---- unreadable rows --------------------------------------------------------------------

_OTHER_SERVER = dumps(state("mx9.contoso.com"))

# (what is wrong, schema, data, what the error says)
UNREADABLE_SERVER_ROWS = [
    ("truncated JSON", 1, dumps(state())[:40], "not valid JSON"),
    ("unknown schema version", 99, dumps(state()), "schema version 99"),
    ("JSON that is no state", 1, '{"server_id": "mx1.contoso.com"}', "does not decode"),
    ("invalid build", 1, dumps(state()).replace("15.1.2507.39", "15.x"), "does not decode"),
    ("another server's state", 1, _OTHER_SERVER, "holds server 'mx9.contoso.com'"),
]


@pytest.mark.parametrize(
    ("schema", "data", "message"),
    [row[1:] for row in UNREADABLE_SERVER_ROWS],
    ids=[row[0] for row in UNREADABLE_SERVER_ROWS],
)
def test_unreadable_server_row_raises_store_error_naming_the_server(
    backend: Backend, schema: int, data: str, message: str
) -> None:
    backend.plant("server", "mx1.contoso.com", 3, schema, data)
    store = backend.open()
    with pytest.raises(StoreError, match=r"server 'mx1\.contoso\.com'") as raised:
        store.get("mx1.contoso.com")
    assert message in str(raised.value)
    assert not isinstance(raised.value, StoreConflictError)
    with pytest.raises(StoreError, match=r"server 'mx1\.contoso\.com'"):
        list(store.states())


def test_a_row_changed_behind_the_stores_back_is_read_afresh(backend: Backend) -> None:
    # The store reuses the state it last decoded for a server while the row's text stays
    # the same; any other text, even at the same version, is decoded (or refused) anew.
    store = backend.open()
    store.put(state(), expected_version=None)
    assert store.get("mx1.contoso.com") == Versioned(state(), 1)
    changed = state(notified_stage=2)
    backend.plant("server", "mx1.contoso.com", 1, 1, dumps(changed))
    assert store.get("mx1.contoso.com") == Versioned(changed, 1)
    for _, schema, data, message in UNREADABLE_SERVER_ROWS:
        backend.plant("server", "mx1.contoso.com", 1, schema, data)
        with pytest.raises(StoreError, match=message):
            store.get("mx1.contoso.com")
        backend.plant("server", "mx1.contoso.com", 1, 1, dumps(changed))
        assert store.get("mx1.contoso.com") == Versioned(changed, 1)


def test_the_decoded_states_kept_are_bounded(store: StateStore) -> None:
    # Reading many servers once each (a sweep) must not keep every decoded state.
    store.put_many([StateWrite(state(f"mx{i:05d}"), None) for i in range(5_000)])
    for i in range(5_000):
        assert store.get(f"mx{i:05d}") == Versioned(state(f"mx{i:05d}"), 1)
    assert len(store._decoded_rows) <= 4_096  # type: ignore[attr-defined]


@pytest.mark.parametrize("expected_version", [None, 1, 3, 4])
@pytest.mark.parametrize(
    ("schema", "data"),
    [row[1:3] for row in UNREADABLE_SERVER_ROWS],
    ids=[row[0] for row in UNREADABLE_SERVER_ROWS],
)
def test_unreadable_server_row_is_never_overwritten(
    backend: Backend, schema: int, data: str, expected_version: int | None
) -> None:
    backend.plant("server", "mx1.contoso.com", 3, schema, data)
    store = backend.open()
    with pytest.raises(StoreError, match=r"server 'mx1\.contoso\.com'") as raised:
        store.put(state(), expected_version=expected_version)
    assert not isinstance(raised.value, StoreConflictError)
    with pytest.raises(StoreError):
        store.put_many([StateWrite(state("mx0"), None), StateWrite(state(), expected_version)])
    assert backend.raw("server", "mx1.contoso.com") == (3, schema, data)
    assert store.get("mx0") is None


@pytest.mark.parametrize(
    ("schema", "data"),
    [
        (1, "{"),
        (99, dumps(ledger())),
        (1, '{"tenant": "contoso", "quota_days": -5, "pauses": []}'),
        (1, dumps(ledger("fabrikam"))),
    ],
    ids=["bad JSON", "unknown schema", "invalid quota", "another tenant's ledger"],
)
def test_unreadable_ledger_row_raises_and_is_never_overwritten(
    backend: Backend, schema: int, data: str
) -> None:
    backend.plant("ledger", "contoso", 2, schema, data)
    store = backend.open()
    with pytest.raises(StoreError, match="ledger of tenant 'contoso'"):
        store.get_ledger("contoso")
    for expected in (None, 1, 2):
        with pytest.raises(StoreError, match="ledger of tenant 'contoso'") as raised:
            store.put_ledger(ledger(), expected_version=expected)
        assert not isinstance(raised.value, StoreConflictError)
    with pytest.raises(StoreError, match="ledger of tenant 'contoso'"):
        store.put_many([StateWrite(state(), None), LedgerWrite(ledger(), 2)])
    assert backend.raw("ledger", "contoso") == (2, schema, data)
    assert store.get("mx1.contoso.com") is None


def _versions_of(backend: Backend) -> Iterator[object]:
    for version in backend.bad_versions:
        backend.plant("server", "mx1.contoso.com", version, 1, dumps(state()))
        backend.plant("ledger", "contoso", version, 1, dumps(ledger()))
        yield version


def test_a_row_with_a_bad_version_is_unreadable_to_every_method(backend: Backend) -> None:
    # A version written behind tbes's back (0, negative, text) is the row's fault: every
    # method raises StoreError naming the row, never InvalidValueError or a conflict.
    store = backend.open()
    server, tenant = r"server 'mx1\.contoso\.com'", "ledger of tenant 'contoso'"
    for version in _versions_of(backend):
        with pytest.raises(StoreError, match=server) as raised:
            store.get("mx1.contoso.com")
        assert "version" in str(raised.value)
        with pytest.raises(StoreError, match=tenant):
            store.get_ledger("contoso")
        with pytest.raises(StoreError, match=server):
            list(store.states())
        with pytest.raises(StoreError, match=server):
            list(store.states("contoso"))
        for expected in (None, 1, 3):
            with pytest.raises(StoreError, match=server) as raised:
                store.put(state(), expected_version=expected)
            assert not isinstance(raised.value, StoreConflictError)
            with pytest.raises(StoreError, match=server) as raised:
                store.put_many([StateWrite(state("mx0"), None), StateWrite(state(), expected)])
            assert not isinstance(raised.value, StoreConflictError)
            with pytest.raises(StoreError, match=tenant) as raised:
                store.put_ledger(ledger(), expected_version=expected)
            assert not isinstance(raised.value, StoreConflictError)
        # Never overwritten, and nothing else of a refused batch written.
        assert backend.raw("server", "mx1.contoso.com") == (version, 1, dumps(state()))
        assert backend.raw("ledger", "contoso") == (version, 1, dumps(ledger()))
        assert store.get("mx0") is None


def test_a_row_with_a_bad_version_fails_a_check_open(backend: Backend) -> None:
    store = backend.open()
    enforcer = Enforcer(store, DEFAULT_POLICY, Catalog.default(), clock=lambda: T0)
    conn = Connection("mx1.contoso.com", "contoso", ConnectorKind.ON_PREMISES)
    for version in _versions_of(backend):
        decision = enforcer.check(conn, [])
        assert (decision.action, decision.reply) == (Action.ACCEPT, None)
        assert backend.raw("server", "mx1.contoso.com") == (version, 1, dumps(state()))


def test_entries_lists_every_row_and_marks_the_unreadable_ones(backend: Backend) -> None:
    # states() ends at an unreadable row; entries() shows it in its place and goes on.
    # entries() is RowStore's, not the protocol's (a protocol-only store need not have it).
    store = cast(RowStore, backend.open())
    store.put_many([StateWrite(state("a"), None), StateWrite(state("c"), None)])
    backend.plant("server", "b", 1, 1, "not json")
    backend.plant("server", "d", 0, 1, dumps(state("d")))
    entries = list(store.entries())
    assert [getattr(e, "server_id", None) for e in entries] == ["a", "b", "c", "d"]
    assert (entries[0], entries[2]) == (state("a"), state("c"))
    bad = [e for e in entries if isinstance(e, UnreadableRow)]
    assert [e.server_id for e in bad] == ["b", "d"]
    assert "server 'b'" in bad[0].error
    assert "does not decode" in bad[0].error
    assert "server 'd'" in bad[1].error
    assert "version 0" in bad[1].error
    listed = [getattr(e, "server_id", None) for e in store.entries("contoso")]
    assert listed == ["a", "b", "c", "d"]
    assert list(store.entries("nobody")) == []
    with pytest.raises(StoreError, match="server 'b'"):
        list(store.states())


def test_a_readable_row_next_to_an_unreadable_one_still_reads(backend: Backend) -> None:
    backend.plant("server", "bad", 1, 1, "not json")
    store = backend.open()
    store.put(state("good"), expected_version=None)
    assert store.get("good") == Versioned(state("good"), 1)


# ---- persistence ------------------------------------------------------------------------


def test_rows_outlive_the_store_object(persistent: Backend) -> None:
    first = persistent.open()
    first.put(state(), expected_version=None)
    first.put_ledger(ledger(), expected_version=None)
    first.close()
    second = persistent.open()
    assert second.get("mx1.contoso.com") == Versioned(state(), 1)
    assert second.get_ledger("contoso") == Versioned(ledger(), 1)
    assert second.put(state(notified_stage=1), expected_version=1) == 2


def test_two_store_objects_on_one_database_see_each_others_writes(persistent: Backend) -> None:
    one, two = persistent.open(), persistent.open()
    one.put(state(), expected_version=None)
    assert two.get("mx1.contoso.com") == Versioned(state(), 1)
    with pytest.raises(StoreConflictError):
        two.put(state(), expected_version=None)
    two.put(state(notified_stage=1), expected_version=1)
    with pytest.raises(StoreConflictError, match="expected version 1, found version 2"):
        one.put(state(notified_stage=2), expected_version=1)


def test_rows_carry_the_row_schema_version(persistent: Backend) -> None:
    persistent.open().put(state(), expected_version=None)
    raw = persistent.raw("server", "mx1.contoso.com")
    assert raw is not None
    version, schema, data = raw
    # 2: rows written since states are kept per server behind a connector.
    assert (version, schema) == (1, 2)
    assert data == dumps(state())


# ---- schema migrations ---------------------------------------------------------------------

# The first schema, written out by hand as an older tbes left it: no tenant index.
_V1_SCHEMA = [
    "CREATE TABLE tbes_schema (version INTEGER NOT NULL)",
    "INSERT INTO tbes_schema (version) VALUES (1)",
    "CREATE TABLE tbes_servers (server_id TEXT PRIMARY KEY, tenant TEXT NOT NULL,"
    " version INTEGER NOT NULL, row_schema INTEGER NOT NULL, data TEXT NOT NULL)",
    "CREATE TABLE tbes_ledgers (tenant TEXT PRIMARY KEY, version INTEGER NOT NULL,"
    " row_schema INTEGER NOT NULL, data TEXT NOT NULL)",
]


def _sql(backend: Backend) -> Callable[[str], list[tuple[Any, ...]]]:
    """Run one statement on the backend's database behind any store; return its rows."""
    if isinstance(backend, SQLiteBackend):

        def run_sqlite(statement: str) -> list[tuple[Any, ...]]:
            conn = sqlite3.connect(backend.path, isolation_level=None)
            try:
                return conn.execute(statement).fetchall()
            finally:
                conn.close()

        return run_sqlite
    assert isinstance(backend, PostgresBackend)

    def run_pg(statement: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(backend.dsn, autocommit=True) as conn:
            cur = conn.execute(statement.encode())
            return cur.fetchall() if cur.description else []

    return run_pg


def _has_tenant_index(backend: Backend) -> bool:
    run = _sql(backend)
    if isinstance(backend, SQLiteBackend):
        rows = run("SELECT name FROM sqlite_master WHERE type = 'index'")
    else:
        rows = run(
            "SELECT indexname FROM pg_indexes"
            " WHERE schemaname = current_schema() AND tablename = 'tbes_servers'"
        )
    return ("tbes_servers_by_tenant",) in rows


def _has_discovered(backend: Backend) -> bool:
    """Migration 3: the discovered servers (empty)."""
    return _sql(backend)("SELECT COUNT(*) FROM tbes_discovered") == [(0,)]


def _has_outbox(backend: Backend) -> bool:
    """Migration 4: the outbox and its deliveries (empty)."""
    run = _sql(backend)
    tables = ("tbes_outbox", "tbes_deliveries")
    return all(run(f"SELECT COUNT(*) FROM {table}") == [(0,)] for table in tables)


def test_opening_an_empty_database_creates_the_latest_schema(persistent: Backend) -> None:
    persistent.open()
    assert _sql(persistent)("SELECT version FROM tbes_schema") == [(4,)]
    assert _has_tenant_index(persistent)
    assert _has_discovered(persistent)
    assert _has_outbox(persistent)


def test_opening_a_version_1_database_migrates_it_and_keeps_its_rows(persistent: Backend) -> None:
    run = _sql(persistent)
    for statement in _V1_SCHEMA:
        run(statement)
    run(
        "INSERT INTO tbes_servers (server_id, tenant, version, row_schema, data) VALUES "
        f"('mx1.contoso.com', 'contoso', 7, 1, '{dumps(state())}')"
    )
    assert not _has_tenant_index(persistent)
    store = persistent.open()
    assert run("SELECT version FROM tbes_schema") == [(4,)]
    assert _has_tenant_index(persistent)
    assert _has_outbox(persistent)
    assert store.get("mx1.contoso.com") == Versioned(state(), 7)
    assert [s.server_id for s in store.states("contoso")] == ["mx1.contoso.com"]


def test_opening_twice_migrates_once(persistent: Backend) -> None:
    persistent.open().put(state(), expected_version=None)
    persistent.open()
    assert _sql(persistent)("SELECT version FROM tbes_schema") == [(4,)]
    assert persistent.open().get("mx1.contoso.com") == Versioned(state(), 1)


def test_a_database_from_a_newer_tbes_is_refused_untouched(persistent: Backend) -> None:
    persistent.open()
    run = _sql(persistent)
    run("UPDATE tbes_schema SET version = 9")
    with pytest.raises(StoreError, match=r"schema version 9.*upgrade tbes"):
        persistent.open()
    assert run("SELECT version FROM tbes_schema") == [(9,)]


def test_sqlite_store_uses_wal(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "wal.db").close()
    conn = sqlite3.connect(tmp_path / "wal.db")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_sqlite_store_on_an_unwritable_path_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="missing-dir"):
        SQLiteStore(tmp_path / "missing-dir" / "tbes.db")


def test_postgres_store_on_an_unreachable_server_raises_store_error() -> None:
    with pytest.raises(StoreError, match="PostgreSQL store"):
        PostgresStore("host=127.0.0.1 port=1 dbname=nothing connect_timeout=2")


def test_store_values_round_trip_through_serde() -> None:
    versioned = Versioned(state(notified_stage=4), 7)
    assert loads(dumps(versioned), Versioned[ServerState]) == versioned
    assert loads(dumps(StateWrite(state(), None)), StateWrite) == StateWrite(state(), None)
    assert loads(dumps(LedgerWrite(ledger(), 3)), LedgerWrite) == LedgerWrite(ledger(), 3)


@pytest.mark.parametrize("version", [0, -1, True, 1.0])
def test_versions_start_at_one(version: Any) -> None:
    with pytest.raises(ValueError, match="version"):
        Versioned(state(), version)
    with pytest.raises(ValueError, match="expected_version"):
        StateWrite(state(), version)


def test_postgres_store_without_psycopg_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    with pytest.raises(StoreError, match=r"pip install 'tbes\[postgres\]'"):
        PostgresStore("host=127.0.0.1 dbname=tbes")
