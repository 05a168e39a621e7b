"""Every store behaves like a dict of versioned rows under random compare-and-swap traffic.

A Hypothesis state machine drives a store and a plain model (key -> (version, value)) with
the same random puts, ledger puts, batches and reads, with expected versions that are
right, stale, ahead or wrongly ``None``; after every step the store must read exactly as the
model says. It runs on the memory and SQLite stores, and on PostgreSQL with fewer examples.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from custom_store_doc import example_store_class
from integration.pg import PostgresServer
from tbes.compliance import Compliance
from tbes.errors import StoreConflictError, StoreError
from tbes.ledger import Pause, PauseLedger
from tbes.serde import dumps
from tbes.state import ServerState
from tbes.store import (
    LedgerWrite,
    MemoryStore,
    PostgresStore,
    SQLiteStore,
    StateStore,
    StateWrite,
    UnreadableRow,
    Write,
)
from tbes.version import ExchangeBuild

SERVERS = ("mx1", "mx2", "mx3")
TENANTS = ("contoso", "fabrikam")

# How the expected version of a write relates to the stored one.
HOW = st.sampled_from(["right", "right", "right", "stale", "ahead", "none"])


_T1 = dt.datetime(2026, 2, 1, 8, 30, tzinfo=dt.UTC)
_INSTANTS = st.sampled_from([None, _T1, _T1 + dt.timedelta(days=40, seconds=7)])


def _pauses(server_id: str) -> st.SearchStrategy[tuple[Pause, ...]]:
    return st.sampled_from(
        [
            (),
            (Pause(server_id, dt.date(2026, 3, 1), 5),),
            (Pause(server_id, dt.date(2026, 12, 30), 9),),
        ]
    )


# Cheap, small values: the machine is about versions and conflicts, not value variety
# (the serde round trip of every value class has its own properties).
server_states: st.SearchStrategy[ServerState] = st.sampled_from(SERVERS).flatmap(
    lambda server_id: st.builds(
        ServerState,
        server_id=st.just(server_id),
        tenant=st.sampled_from(TENANTS),
        build=st.sampled_from(
            [None, ExchangeBuild(15, 1, 2507, 39), ExchangeBuild(15, 2, 2562, 17)]
        ),
        status=st.sampled_from(Compliance),
        first_detected=_INSTANTS,
        last_seen=_INSTANTS,
        compliant_since=_INSTANTS,
        pauses=_pauses(server_id),
        notified_stage=st.sampled_from([None, 1, 8]),
    )
)

ledgers: st.SearchStrategy[PauseLedger] = st.builds(
    PauseLedger,
    st.sampled_from(TENANTS),
    st.sampled_from([30, 90]),
    st.sampled_from(
        [(), (Pause("mx1", dt.date(2026, 3, 1), 5), Pause("mx2", dt.date(2026, 3, 3), 20))]
    ),
)


Model = dict[tuple[str, str], tuple[int, ServerState | PauseLedger]]


def _key(value: ServerState | PauseLedger) -> tuple[str, str]:
    if isinstance(value, ServerState):
        return ("server", value.server_id)
    return ("ledger", value.tenant)


def _expected(model: Model, key: tuple[str, str], how: str) -> int | None:
    current = model.get(key)
    version = None if current is None else current[0]
    if how == "right":
        return version
    if how == "stale":
        return None if version is None else version - 1 or None
    if how == "ahead":
        return (version or 0) + 1
    return None


class StoreMachine(RuleBasedStateMachine):
    """A store against a dict model."""

    open_store: Callable[[], StateStore] = staticmethod(MemoryStore)  # replaced per backend

    def __init__(self) -> None:
        super().__init__()
        self.store = type(self).open_store()
        self.model: Model = {}

    def teardown(self) -> None:
        self.store.close()

    def _apply(self, writes: list[tuple[ServerState | PauseLedger, int | None]]) -> None:
        """Send a batch to the store; the model changes only if every write is current."""
        batch: list[Write] = [
            StateWrite(value, expected)
            if isinstance(value, ServerState)
            else LedgerWrite(value, expected)
            for value, expected in writes
        ]
        current = [self.model.get(_key(value), (None,))[0] for value, _ in writes]
        wins = all(expected == now for (_, expected), now in zip(writes, current, strict=True))
        if not wins:
            with pytest.raises(StoreConflictError):
                self.store.put_many(batch)
            return
        versions = self.store.put_many(batch)
        assert versions == tuple((now or 0) + 1 for now in current)
        for (value, _), version in zip(writes, versions, strict=True):
            self.model[_key(value)] = (version, value)

    @initialize()
    def start_empty(self) -> None:
        assert list(self.store.states()) == []

    @rule(state=server_states, how=HOW)
    def put(self, state: ServerState, how: str) -> None:
        expected = _expected(self.model, _key(state), how)
        current = self.model.get(_key(state))
        if expected == (None if current is None else current[0]):
            version = self.store.put(state, expected_version=expected)
            assert version == (expected or 0) + 1
            self.model[_key(state)] = (version, state)
        else:
            with pytest.raises(StoreConflictError):
                self.store.put(state, expected_version=expected)

    @rule(ledger=ledgers, how=HOW)
    def put_ledger(self, ledger: PauseLedger, how: str) -> None:
        expected = _expected(self.model, _key(ledger), how)
        current = self.model.get(_key(ledger))
        if expected == (None if current is None else current[0]):
            assert self.store.put_ledger(ledger, expected_version=expected) == (expected or 0) + 1
            self.model[_key(ledger)] = ((expected or 0) + 1, ledger)
        else:
            with pytest.raises(StoreConflictError):
                self.store.put_ledger(ledger, expected_version=expected)

    @rule(
        values=st.lists(server_states | ledgers, max_size=4, unique_by=_key),
        hows=st.lists(HOW, min_size=4, max_size=4),
    )
    def put_many(self, values: list[ServerState | PauseLedger], hows: list[str]) -> None:
        self._apply(
            [
                (value, _expected(self.model, _key(value), how))
                for value, how in zip(values, hows, strict=False)
            ]
        )

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def read_one(self, data: st.DataObject) -> None:
        table, key = data.draw(st.sampled_from(sorted(self.model)))
        version, value = self.model[(table, key)]
        got = self.store.get(key) if table == "server" else self.store.get_ledger(key)
        assert got is not None
        assert (got.version, got.value) == (version, value)

    @invariant()
    def reads_match_the_model(self) -> None:
        for server_id in SERVERS:
            got = self.store.get(server_id)
            want = self.model.get(("server", server_id))
            assert (None if got is None else (got.version, got.value)) == want
        for tenant in TENANTS:
            got_ledger = self.store.get_ledger(tenant)
            want = self.model.get(("ledger", tenant))
            assert (None if got_ledger is None else (got_ledger.version, got_ledger.value)) == want

    @invariant()
    def listings_match_the_model(self) -> None:
        servers = [v for (table, _), (_, v) in sorted(self.model.items()) if table == "server"]
        assert list(self.store.states()) == servers
        for tenant in TENANTS:
            mine = [s for s in servers if isinstance(s, ServerState) and s.tenant == tenant]
            assert list(self.store.states(tenant)) == mine


def _run(open_store: Callable[[], StateStore], *, most: int) -> None:
    """Run the machine on ``open_store``'s stores, with at most ``most`` examples.

    The caps keep the ci profile's 400 examples from costing minutes: a step of a database
    store commits a transaction, and each example opens a fresh database.
    """
    machine = type("Machine", (StoreMachine,), {"open_store": staticmethod(open_store)})
    current = settings()
    capped = settings(current, stateful_step_count=10, max_examples=min(current.max_examples, most))
    run_state_machine_as_test(machine, settings=capped)


@pytest.fixture(scope="module")
def tmp_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tbes-store-prop-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_memory_store_behaves_like_a_dict() -> None:
    _run(MemoryStore, most=100)


def test_the_documented_custom_store_behaves_like_a_dict() -> None:
    _run(cast(Callable[[], StateStore], example_store_class()), most=60)


def test_sqlite_store_behaves_like_a_dict(tmp_dir: Path) -> None:
    files = iter(range(1_000_000))
    _run(lambda: SQLiteStore(tmp_dir / f"{next(files)}.db"), most=60)


@pytest.mark.service("postgresql")
def test_postgres_store_behaves_like_a_dict(pg_server: PostgresServer) -> None:
    _run(lambda: PostgresStore(pg_server.fresh_dsn()), most=30)


# ---- unreadable rows: refused by every method, listed in place by entries() ----------------

# A stored version no tbes writes: not an int, or an int below 1.
bad_versions = st.one_of(
    st.integers(max_value=0),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.none(),
)


@given(server=server_states, version=bad_versions, expected=st.none() | st.integers(1, 5))
def test_a_bad_version_makes_a_row_unreadable_to_every_method(
    server: ServerState, version: object, expected: int | None
) -> None:
    store = MemoryStore()
    row = (version, 1, dumps(server))
    store._rows["server"][server.server_id] = row
    store._tenants[server.server_id] = server.tenant
    calls: list[Callable[[], object]] = [
        lambda: store.get(server.server_id),
        lambda: list(store.states()),
        lambda: list(store.states(server.tenant)),
        lambda: store.put(server, expected_version=expected),
        lambda: store.put_many([StateWrite(server, expected)]),
    ]
    for call in calls:
        with pytest.raises(StoreError, match=repr(server.server_id)) as raised:
            call()
        assert not isinstance(raised.value, StoreConflictError)
    assert store._rows["server"][server.server_id] == row


@given(
    rows=st.dictionaries(
        st.sampled_from([f"mx{i}" for i in range(8)]),
        st.sampled_from(["readable", "bad version", "bad json", "other schema"]),
        max_size=8,
    )
)
def test_entries_lists_every_row_in_order_and_marks_exactly_the_unreadable(
    rows: dict[str, str],
) -> None:
    store = MemoryStore()
    readable = {}
    for server_id, kind in rows.items():
        value = ServerState(server_id, "contoso", None, Compliance.NOT_APPLICABLE, None, _T1, None)
        raw = {
            "readable": (1, 1, dumps(value)),
            "bad version": (0, 1, dumps(value)),
            "bad json": (1, 1, "{"),
            "other schema": (1, 99, dumps(value)),
        }[kind]
        store._rows["server"][server_id] = raw
        store._tenants[server_id] = "contoso"
        if kind == "readable":
            readable[server_id] = value
    entries = list(store.entries())
    assert [entry.server_id for entry in entries] == sorted(rows)
    for entry in entries:
        if entry.server_id in readable:
            assert entry == readable[entry.server_id]
        else:
            assert isinstance(entry, UnreadableRow)
            assert repr(entry.server_id) in entry.error
    if len(readable) == len(rows):
        assert list(store.states()) == entries
    else:
        with pytest.raises(StoreError):
            list(store.states())
