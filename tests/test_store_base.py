"""RowStore, the public base of every store: the example custom store, fault wrapping, deadline.

The contract itself runs against the documented example in tests/test_store_contract.py;
here: what the base class adds for a custom store built on it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from custom_store_doc import example_source, example_store_class
from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.decision import Action
from tbes.enforcer import FAIL_CLOSED_REPLY, Connection, Enforcer
from tbes.errors import StoreConflictError, StoreError
from tbes.ledger import PauseLedger
from tbes.policy import DEFAULT_POLICY, ConnectorKind
from tbes.state import ServerState
from tbes.store import LedgerWrite, RowStore, StateStore, StateWrite
from tbes.store.base import DEFAULT_CHECK_TIMEOUT, RawRow, UnreadableRow, remaining
from tbes.version import ExchangeBuild

T0 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
SERVER = "mx1.contoso.com"
# A Received value written by the outdated Exchange 2016 server that is connecting.
HOP = (
    f"from EXMBX01.contoso.local (10.0.0.7) by {SERVER} (192.0.2.10) with Microsoft SMTP "
    "Server (version=TLS1_2) id 15.1.2507.39; Mon, 2 Mar 2026 09:30:00 +0000"
)
CONN = Connection(SERVER, "contoso", ConnectorKind.ON_PREMISES, peer_ip="192.0.2.10")


def state(server_id: str = SERVER) -> ServerState:
    return ServerState(
        server_id=server_id,
        tenant="contoso",
        build=ExchangeBuild(15, 1, 2507, 39),
        status=Compliance.OUTDATED,
        first_detected=T0,
        last_seen=T0,
        compliant_since=None,
    )


def test_the_documented_store_is_under_40_lines() -> None:
    assert len(example_source().splitlines()) < 40


def test_the_documented_store_is_a_state_store_with_entries() -> None:
    store = example_store_class()()
    assert isinstance(store, StateStore)
    store.put(state(), expected_version=None)
    assert list(store.entries()) == [state()]
    with store:  # RowStore gives every store close() and the context manager
        pass


# ---- foreign exceptions of a primitive become StoreError -------------------------------


def failing(error: Exception, primitive: str) -> Any:
    """The documented store, with ``primitive`` raising ``error``."""
    base = example_store_class()

    def fail(self: Any, *args: object) -> Any:
        raise error

    store = type("FailingStore", (base,), {primitive: fail})()
    # A row to find, written before the primitive fails (writes fail only if _apply does).
    if primitive != "_apply":
        base._apply(
            store, (StateWrite(state(), None), LedgerWrite(PauseLedger("contoso", 5), None))
        )
    return store


CALLS: list[tuple[str, str, Callable[[Any], object]]] = [
    ("get", "_read_row", lambda store: store.get(SERVER)),
    ("get_ledger", "_read_row", lambda store: store.get_ledger("contoso")),
    ("put", "_apply", lambda store: store.put(state(), expected_version=None)),
    (
        "put_ledger",
        "_apply",
        lambda store: store.put_ledger(PauseLedger("contoso", 5), expected_version=None),
    ),
    ("put_many", "_apply", lambda store: store.put_many([StateWrite(state(), None)])),
    ("states", "_server_rows", lambda store: list(store.states())),
    ("entries", "_server_rows", lambda store: list(store.entries("contoso"))),
]


@pytest.mark.parametrize(
    ("primitive", "call"), [row[1:] for row in CALLS], ids=[row[0] for row in CALLS]
)
@pytest.mark.parametrize(
    "error",
    [OSError(5, "Input/output error"), KeyError("rows"), RuntimeError("bug"), ValueError("x")],
    ids=["OSError", "KeyError", "RuntimeError", "ValueError"],
)
def test_a_foreign_exception_of_a_primitive_is_a_store_error_with_its_cause(
    primitive: str, call: Callable[[Any], object], error: Exception
) -> None:
    store = failing(error, primitive)
    with pytest.raises(StoreError, match="store FailingStore failed") as raised:
        call(store)
    assert raised.value.__cause__ is error
    assert repr(error) in str(raised.value)


def test_a_listing_primitive_failing_midway_is_a_store_error() -> None:
    class HalfListing(RowStore):
        def _server_rows(self, tenant: str | None) -> Iterator[tuple[str, RawRow]]:
            yield "a", (1, 1, "{}")
            raise ConnectionResetError("peer went away")

    with pytest.raises(StoreError, match="ConnectionResetError") as raised:
        list(HalfListing().entries())
    assert isinstance(raised.value.__cause__, ConnectionResetError)


@pytest.mark.parametrize(
    "error",
    [StoreError("disk full"), StoreConflictError("another writer")],
    ids=["StoreError", "StoreConflictError"],
)
@pytest.mark.parametrize(
    ("primitive", "call"), [row[1:] for row in CALLS], ids=[row[0] for row in CALLS]
)
def test_the_contracts_own_errors_pass_unchanged(
    primitive: str, call: Callable[[Any], object], error: Exception
) -> None:
    store = failing(error, primitive)
    with pytest.raises(type(error)) as raised:
        call(store)
    assert raised.value is error


@pytest.mark.parametrize(
    "bad",
    [None, 3, "1 2 {}", (1, 2), (1, 2, "{}", 4), {"version": 1}],
    ids=["None", "int", "str", "pair", "four", "dict"],
)
def test_a_row_not_shaped_version_schema_data_is_a_store_error_naming_it(bad: object) -> None:
    class Misshapen(RowStore):
        def _read_row(self, table: str, key: str) -> RawRow | None:
            return bad if table == "server" else None  # type: ignore[return-value]

        def _server_rows(self, tenant: str | None) -> Iterator[tuple[str, RawRow]]:
            yield SERVER, bad  # type: ignore[misc]

        def _ledger_rows(self) -> list[tuple[str, RawRow]]:
            return [("fabrikam", bad)]  # type: ignore[list-item]

    store = Misshapen()
    calls: list[Callable[[], object]] = [
        lambda: list(store.states()),
        lambda: list(store.ledgers()),
    ]
    if bad is not None:  # a missing row reads as None
        calls.append(lambda: store.get(SERVER))
    for call in calls:
        with pytest.raises(StoreError, match=r"is not \(version, schema, data\)"):
            call()
    (entry,) = store.entries()
    assert isinstance(entry, UnreadableRow)
    assert entry.server_id == SERVER
    assert "is not (version, schema, data)" in entry.error


def test_a_missing_primitive_is_a_store_error_not_a_crash() -> None:
    class Unfinished(RowStore):
        pass

    for call in (lambda: Unfinished().get(SERVER), lambda: list(Unfinished().states())):
        with pytest.raises(StoreError) as raised:
            call()
        assert isinstance(raised.value.__cause__, NotImplementedError)


# ---- in an Enforcer: fail open (or closed), the row untouched ------------------------------


@pytest.mark.parametrize("primitive", ["_read_row", "_apply"])
def test_an_enforcer_fails_open_on_a_custom_stores_io_error(
    primitive: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = failing(OSError(5, "Input/output error"), primitive)
    enforcer = Enforcer(store, DEFAULT_POLICY, Catalog.default(), clock=lambda: T0)
    with caplog.at_level(logging.WARNING, logger="tbes.enforcer"):
        decision = enforcer.check(CONN, [HOP])
    assert (decision.action, decision.reply) == (Action.ACCEPT, None)
    assert "store failed" in caplog.text
    assert "Input/output error" in caplog.text
    closed = Enforcer(store, DEFAULT_POLICY, Catalog.default(), clock=lambda: T0, fail_closed=True)
    assert closed.check(CONN, [HOP]).reply == FAIL_CLOSED_REPLY


# ---- the per-check deadline, as a custom store sees it ------------------------------------


def test_remaining_is_the_checks_time_inside_a_check_and_the_default_outside() -> None:
    seen: list[float] = []
    base = example_store_class()

    def read_row(self: Any, table: str, key: str) -> RawRow | None:
        seen.append(remaining(30.0))
        return base._read_row(self, table, key)

    store = type("TimedStore", (base,), {"_read_row": read_row})()
    assert store.get(SERVER) is None
    assert seen == [30.0]  # outside a check: the store's own bound
    enforcer = Enforcer(
        store, DEFAULT_POLICY, Catalog.default(), clock=lambda: T0, check_timeout=0.5
    )
    enforcer.check(CONN, [HOP])
    assert len(seen) >= 2
    assert all(0 <= left <= 0.5 for left in seen[1:])
    assert store.get(SERVER) is not None  # the check went through the store and wrote
    assert 0 < DEFAULT_CHECK_TIMEOUT < 10  # within Sendmail's 10 s read timeout
