"""The discovered-servers table in every store: merged, bounded, oldest dropped first.

A Hypothesis state machine floods each store (memory, SQLite, PostgreSQL) with batches of
sightings from a few peers and many forged names, and compares the table with a model: a
dict merged by :func:`tbes.discovery.merge` and cut by :func:`tbes.discovery.evicted`. The
table never holds more than ``max_servers``. Also: the schema migration of an older SQLite
file, an older file read read-only, an unreadable row, and a custom store without the
table's primitives.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from custom_store_doc import example_store_class
from tbes.compliance import Compliance
from tbes.discovery import DiscoveredServer, evicted, merge, sighting
from tbes.errors import InvalidValueError, StoreError
from tbes.store import MemoryStore, PostgresStore, RowStore, SQLiteStore
from tbes.store.sqlite import MIGRATIONS
from tbes.version import ExchangeBuild

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
MAX = 4
POSTGRES = pytest.param("postgres", marks=pytest.mark.service("postgresql"))

_peers = st.sampled_from([f"203.0.113.{n}" for n in range(1, 8)] + ["2001:db8::1", "2001:db8::a"])
# Forged names: anything a header or DNS can carry, control characters and all.
_names = st.one_of(st.none(), st.text(min_size=1, max_size=40), st.just("x" * 400))
_sightings = st.builds(
    lambda peer, name, host, build, status, minutes: sighting(
        peer_ip=peer,
        verified_name=name,
        sender_host=host,
        build=build,
        status=status,
        at=T0 + dt.timedelta(minutes=minutes),
    ),
    _peers,
    _names,
    _names,
    st.sampled_from([ExchangeBuild.parse("15.0.1497.2"), ExchangeBuild.parse("15.1.2507.39")]),
    st.sampled_from([Compliance.UNSUPPORTED, Compliance.OUTDATED]),
    st.integers(0, 6),  # few instants: ties in last_seen are common
)


@pytest.fixture(params=["memory", "sqlite", POSTGRES])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], RowStore]]:
    """Opens an empty store of one kind (emptied again on every call)."""
    opened: list[RowStore] = []
    if request.param == "memory":

        def make() -> RowStore:
            return MemoryStore()

    elif request.param == "sqlite":
        folder = Path(tempfile.mkdtemp(dir=tmp_path))

        def make() -> RowStore:
            path = Path(tempfile.mkdtemp(dir=folder)) / "tbes.db"
            store = SQLiteStore(path)
            opened.append(store)
            return store

    else:
        dsn = request.getfixturevalue("pg_server").fresh_dsn()

        def make() -> RowStore:
            store = PostgresStore(dsn)
            opened.append(store)
            store._run(lambda conn: conn.execute("DELETE FROM tbes_discovered"))
            return store

    yield make
    for store in opened:
        store.close()


def _model_record(
    model: dict[str, DiscoveredServer], batch: list[DiscoveredServer], bound: int
) -> None:
    """What a store must do with a batch: merge it per peer, merge that in, drop the oldest."""
    folded: dict[str, DiscoveredServer] = {}
    for each in batch:
        folded[each.peer_ip] = merge(folded.get(each.peer_ip), each)
    for peer, record in folded.items():
        model[peer] = merge(model.get(peer), record)
    for peer in evicted(model.values(), bound):
        del model[peer]


def test_the_table_matches_a_model_and_stays_within_its_bound(
    opener: Callable[[], RowStore],
) -> None:
    class Flood(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.store = opener()
            self.model: dict[str, DiscoveredServer] = {}

        @rule(batch=st.lists(_sightings, max_size=12))
        def record(self, batch: list[DiscoveredServer]) -> None:
            self.store.record_discovered(batch, max_servers=MAX)
            _model_record(self.model, batch, MAX)

        @rule(bound=st.integers(1, MAX))
        def shrink(self, bound: int) -> None:
            # A lower max_servers in the configuration takes effect at the next write.
            batch = [
                sighting(
                    peer_ip="198.51.100.1",
                    verified_name=None,
                    sender_host=None,
                    build=ExchangeBuild.parse("15.0.1497.2"),
                    status=Compliance.UNSUPPORTED,
                    at=T0 + dt.timedelta(minutes=7),
                )
            ]
            self.store.record_discovered(batch, max_servers=bound)
            _model_record(self.model, batch, bound)

        @invariant()
        def same_as_the_model(self) -> None:
            found = self.store.discovered()
            assert len(found) <= MAX
            assert {each.peer_ip: each for each in found} == self.model
            # Listed newest first, then by address.
            assert found == sorted(
                found, key=lambda each: (-each.last_seen.timestamp(), each.peer_ip)
            )

        def teardown(self) -> None:
            if isinstance(self.store, SQLiteStore | PostgresStore):
                self.store.close()

    Flood.TestCase.settings = settings(max_examples=40, stateful_step_count=12, deadline=None)
    Flood.TestCase().runTest()


def test_server_rows_and_ledgers_are_untouched(opener: Callable[[], RowStore]) -> None:
    store = opener()
    store.record_discovered(
        [
            sighting(
                peer_ip="203.0.113.5",
                verified_name=None,
                sender_host=None,
                build=ExchangeBuild.parse("15.0.1497.2"),
                status=Compliance.UNSUPPORTED,
                at=T0,
            )
        ],
        max_servers=1,
    )
    assert list(store.states()) == []
    assert list(store.ledgers()) == []
    store.record_discovered([], max_servers=1)
    assert len(store.discovered()) == 1


def test_bad_arguments_are_refused_before_the_store_is_touched(
    opener: Callable[[], RowStore],
) -> None:
    store = opener()
    for records, bound in (([], 0), ([], True), ("abc", 3), ([object()], 3), ({}, 3)):
        with pytest.raises(InvalidValueError):
            store.record_discovered(records, max_servers=bound)  # type: ignore[arg-type]
    assert store.discovered() == []


@pytest.mark.parametrize("kind", ["sqlite", POSTGRES])
def test_writers_sharing_a_store_lose_no_message(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Two processes' queues (two store objects) merging the same peers at once: each merge
    # reads, adds and writes under the table's lock, so every message is counted.
    if kind == "sqlite":
        stores: list[RowStore] = [SQLiteStore(tmp_path / "t.db") for _ in range(2)]
    else:
        dsn = request.getfixturevalue("pg_server").fresh_dsn()
        stores = [PostgresStore(dsn) for _ in range(2)]
    peers = ["203.0.113.5", "203.0.113.6"]

    def write(store: RowStore) -> None:
        for minute in range(25):
            batch = [
                sighting(
                    peer_ip=peer,
                    verified_name=None,
                    sender_host=None,
                    build=ExchangeBuild.parse("15.0.1497.2"),
                    status=Compliance.UNSUPPORTED,
                    at=T0 + dt.timedelta(minutes=minute),
                )
                for peer in peers
            ]
            store.record_discovered(batch, max_servers=10)

    threads = [threading.Thread(target=write, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    found = stores[0].discovered()
    for store in stores:
        store.close()
    assert sorted((each.peer_ip, each.messages) for each in found) == [(p, 50) for p in peers]


# ---- SQLite: migration, read-only, unreadable rows -------------------------------------------


def _older_file(path: Path) -> None:
    """A file of schema version 2, as tbes made it before discovery."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE tbes_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO tbes_schema (version) VALUES (2)")
        for migration in MIGRATIONS[:2]:
            for statement in migration:
                conn.execute(statement)
    conn.close()


def test_an_older_sqlite_file_is_migrated_and_read_read_only_before_that(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _older_file(path)
    reader = SQLiteStore(path, read_only=True)
    assert reader.discovered() == []  # no table yet: nothing discovered, no error
    reader.close()
    store = SQLiteStore(path)
    assert store.schema_version() == len(MIGRATIONS) == 4
    record = sighting(
        peer_ip="203.0.113.5",
        verified_name="mail.fabrikam.example",
        sender_host=None,
        build=ExchangeBuild.parse("15.0.1497.2"),
        status=Compliance.UNSUPPORTED,
        at=T0,
    )
    store.record_discovered([record], max_servers=10)
    store.close()
    reader = SQLiteStore(path, read_only=True)
    assert reader.discovered() == [record]
    reader.close()


def test_an_unreadable_row_is_named_when_listed_and_replaced_when_seen_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO tbes_discovered VALUES ('203.0.113.5', 0, '{')")
    conn.close()
    with pytest.raises(StoreError, match=r"203\.0\.113\.5"):
        store.discovered()
    record = sighting(
        peer_ip="203.0.113.5",
        verified_name=None,
        sender_host=None,
        build=ExchangeBuild.parse("15.0.1497.2"),
        status=Compliance.UNSUPPORTED,
        at=T0,
    )
    store.record_discovered([record], max_servers=10)
    assert store.discovered() == [record]
    store.close()


def test_a_custom_store_without_the_primitives_says_so() -> None:
    custom: Any = example_store_class()()
    record = sighting(
        peer_ip="203.0.113.5",
        verified_name=None,
        sender_host=None,
        build=ExchangeBuild.parse("15.0.1497.2"),
        status=Compliance.UNSUPPORTED,
        at=T0,
    )
    with pytest.raises(StoreError, match=r"keeps no discovered servers.*_record_discovered"):
        custom.record_discovered([record], max_servers=10)
    with pytest.raises(StoreError, match=r"keeps no discovered servers.*_discovered_rows"):
        custom.discovered()
