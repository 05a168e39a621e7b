"""Bad input to the shell: a clear tbes error naming the argument, never a crash.

The rule of tests/test_bad_input.py, applied to the enforcer, its values and the stores: a
wrong-typed argument raises an error of the :mod:`tbes.errors` family whose message names
it, before any store is touched; the enforcer fails open only for store faults, never for a
caller's mistake. The tables are the audit's list; the property tests feed arbitrary
objects to every argument of every public entry point, on every store.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support import STORE_KINDS, make_store
from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.decision import Action
from tbes.enforcer import Connection, Enforcer
from tbes.errors import (
    InvalidBuildError,
    InvalidPauseError,
    InvalidValueError,
    NaiveDatetimeError,
    StoreError,
    TbesError,
)
from tbes.events import Event, EventKind
from tbes.ledger import PauseLedger
from tbes.notifiers import CallbackNotifier
from tbes.policy import DEFAULT_POLICY, ConnectorKind, Policy
from tbes.state import ServerState
from tbes.store import LedgerWrite, MemoryStore, PostgresStore, SQLiteStore, StateStore, StateWrite
from tbes.store._rows import load_state
from tbes.version import ExchangeBuild

UTC = dt.UTC
CATALOG = Catalog.default()
JAN5 = dt.datetime(2026, 1, 5, 10, tzinfo=UTC)
SERVER, TENANT = "ex01.contoso.com", "contoso"
BUILD = ExchangeBuild(15, 1, 2507, 6)
HOP = f"from a.example by {SERVER} with mapi id 15.1.2507.6; Mon, 5 Jan 2026 09:00 +0000"
CONN = Connection(SERVER, TENANT, ConnectorKind.ON_PREMISES)
PARTNER = Connection(SERVER, TENANT, ConnectorKind.PARTNER)
STATE = ServerState("mx-fed", TENANT, BUILD, Compliance.OUTDATED, JAN5, JAN5, None)
LEDGER = PauseLedger("tenant-fed")

Call = Callable[[], object]


def bad(value: object) -> Any:
    """``value``, typed Any: these calls pass wrong types on purpose."""
    return value


def enforcer(**changes: Any) -> Enforcer:
    """An enforcer on a fresh memory store at JAN5, with constructor ``changes``."""
    args: dict[str, Any] = {
        "store": MemoryStore(),
        "policy": DEFAULT_POLICY,
        "catalog": CATALOG,
        "clock": lambda: JAN5,
    }
    args.update(changes)
    return Enforcer(args.pop("store"), args.pop("policy"), args.pop("catalog"), **args)


def connection(**changes: Any) -> Connection:
    fields: dict[str, Any] = {"server_id": SERVER, "tenant": TENANT, "kind": CONN.kind}
    fields.update(changes)
    return Connection(**fields)


def event(**changes: Any) -> Event:
    fields: dict[str, Any] = {
        "kind": EventKind.DETECTED,
        "server_id": SERVER,
        "tenant": TENANT,
        "at": JAN5,
        "stage": 1,
        "build": BUILD,
        "detail": "",
    }
    fields.update(changes)
    return Event(**fields)


class Untouchable:
    """A store that fails the test if any of its methods is called."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was touched: {name}")


class Broken:
    """A store with every method, each failing as a broken back end does."""

    def _fail(self, *args: object, **kwargs: object) -> Any:
        raise OSError("disk on fire")

    get = put = get_ledger = put_ledger = put_many = states = close = _fail


# (call, expected error, a fragment of the message that names the argument or value)
CASES: list[tuple[str, Call, type[TbesError], str]] = [
    # Connection
    ("Connection(kind='x')", lambda: connection(kind="x"), InvalidValueError, "kind"),
    (
        "Connection(server_id=None)",
        lambda: connection(server_id=None),
        InvalidValueError,
        "server_id",
    ),
    ("Connection(tenant='')", lambda: connection(tenant=""), InvalidValueError, "tenant"),
    ("Connection(peer_ip=5)", lambda: connection(peer_ip=5), InvalidValueError, "peer_ip"),
    (
        "Connection(peer_host=b'')",
        lambda: connection(peer_host=b"x"),
        InvalidValueError,
        "peer_host",
    ),
    (
        "Connection(tls_subject=1.5)",
        lambda: connection(tls_subject=1.5),
        InvalidValueError,
        "tls_subject",
    ),
    # Event
    ("Event(stage='x')", lambda: event(stage="x"), InvalidValueError, "stage"),
    ("Event(stage=0)", lambda: event(stage=0), InvalidValueError, "stage"),
    ("Event(stage=True)", lambda: event(stage=True), InvalidValueError, "stage"),
    # As in ServerState: a wrong value where a build belongs is a build error.
    ("Event(build='y')", lambda: event(build="y"), InvalidBuildError, "build"),
    ("Event(kind='DETECTED')", lambda: event(kind="DETECTED"), InvalidValueError, "kind"),
    ("Event(server_id='')", lambda: event(server_id=""), InvalidValueError, "server_id"),
    ("Event(tenant=None)", lambda: event(tenant=None), InvalidValueError, "tenant"),
    ("Event(detail=None)", lambda: event(detail=None), InvalidValueError, "detail"),
    ("Event(at=date)", lambda: event(at=dt.date(2026, 1, 5)), InvalidValueError, "at must be"),
    ("Event(at=naive)", lambda: event(at=dt.datetime(2026, 1, 5)), NaiveDatetimeError, "at must"),
    # Enforcer.check
    ("check(None, ...)", lambda: enforcer().check(bad(None), [HOP]), InvalidValueError, "conn"),
    ("check(conn, None)", lambda: enforcer().check(CONN, bad(None)), InvalidValueError, "received"),
    ("check(conn, str)", lambda: enforcer().check(CONN, HOP), InvalidValueError, "received"),
    (
        "check(conn, generator)",
        lambda: enforcer().check(CONN, bad(iter([HOP]))),
        InvalidValueError,
        "received must be a sequence",
    ),
    (
        "check(conn, [None])",
        lambda: enforcer().check(CONN, [bad(None)]),
        InvalidValueError,
        "received",
    ),
    (
        "check(unenforced kind, None)",
        lambda: enforcer(store=Untouchable()).check(PARTNER, bad(None)),
        InvalidValueError,
        "received",
    ),
    (
        "check with a clock giving a date",
        lambda: enforcer(clock=lambda: dt.date(2026, 1, 5)).check(CONN, [HOP]),
        InvalidValueError,
        "clock",
    ),
    # Enforcer(...)
    ("Enforcer(store=None)", lambda: enforcer(store=None), InvalidValueError, "store"),
    ("Enforcer(store=object())", lambda: enforcer(store=object()), InvalidValueError, "store"),
    ("Enforcer(store=class)", lambda: enforcer(store=MemoryStore), InvalidValueError, "store"),
    ("Enforcer(policy=None)", lambda: enforcer(policy=None), InvalidValueError, "policy"),
    (
        "Enforcer(policy=unbound preset)",
        lambda: enforcer(policy=Policy.exchange_online_2026),
        InvalidValueError,
        "policy",
    ),
    ("Enforcer(catalog=None)", lambda: enforcer(catalog=None), InvalidValueError, "catalog"),
    ("Enforcer(clock=datetime)", lambda: enforcer(clock=JAN5), InvalidValueError, "clock"),
    ("Enforcer(notifier=print)", lambda: enforcer(notifier=print), InvalidValueError, "notifier"),
    (
        "Enforcer(fail_closed='no')",
        lambda: enforcer(fail_closed="no"),
        InvalidValueError,
        "fail_closed",
    ),
    (
        "Enforcer(own_hosts=[None])",
        lambda: enforcer(own_hosts=[None]),
        InvalidValueError,
        "own_hosts",
    ),
    ("Enforcer(own_hosts=5)", lambda: enforcer(own_hosts=5), InvalidValueError, "own_hosts"),
    ("Enforcer(retries=True)", lambda: enforcer(retries=True), InvalidValueError, "retries"),
    # Enforcer.pause / end_pause
    (
        "pause(tenant=None)",
        lambda: enforcer().pause(bad(None), SERVER, 3),
        InvalidPauseError,
        "tenant",
    ),
    (
        "pause(server_id='')",
        lambda: enforcer().pause(TENANT, "", 3),
        InvalidPauseError,
        "server_id",
    ),
    ("pause(days=0)", lambda: enforcer().pause(TENANT, SERVER, 0), InvalidPauseError, "days"),
    (
        "pause(days='3')",
        lambda: enforcer().pause(TENANT, SERVER, bad("3")),
        InvalidPauseError,
        "days",
    ),
    ("pause(days=True)", lambda: enforcer().pause(TENANT, SERVER, True), InvalidPauseError, "days"),
    (
        "pause(start=str)",
        lambda: enforcer().pause(TENANT, SERVER, 3, bad("2026-01-10")),
        InvalidPauseError,
        "start",
    ),
    (
        "pause(start=datetime)",
        lambda: enforcer().pause(TENANT, SERVER, 3, JAN5),
        InvalidPauseError,
        "start",
    ),
    (
        "end_pause(tenant=None)",
        lambda: enforcer().end_pause(bad(None), SERVER),
        InvalidPauseError,
        "tenant",
    ),
    (
        "end_pause(server_id=5)",
        lambda: enforcer().end_pause(TENANT, bad(5)),
        InvalidPauseError,
        "server_id",
    ),
    # store constructors: refused before any file or connection is opened
    ("SQLiteStore(None)", lambda: SQLiteStore(bad(None)), InvalidValueError, "path"),
    (
        "SQLiteStore(timeout=0)",
        lambda: SQLiteStore("x.db", timeout=0),
        InvalidValueError,
        "timeout",
    ),
    (
        "SQLiteStore(timeout='5')",
        lambda: SQLiteStore("x.db", timeout=bad("5")),
        InvalidValueError,
        "timeout",
    ),
    (
        "SQLiteStore(timeout=inf)",
        lambda: SQLiteStore("x.db", timeout=float("inf")),
        InvalidValueError,
        "timeout",
    ),
    ("PostgresStore(None)", lambda: PostgresStore(bad(None)), InvalidValueError, "dsn"),
    (
        "PostgresStore(connect_timeout=-1)",
        lambda: PostgresStore("host=127.0.0.1", connect_timeout=-1),
        InvalidValueError,
        "connect_timeout",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [pytest.param(call, error, fragment, id=name) for name, call, error, fragment in CASES],
)
def test_bad_input_to_the_shell_raises_a_tbes_error_naming_the_argument(
    call: Call,
    error: type[TbesError],
    fragment: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # a SQLiteStore wrongly opened would land here, not in the repo
    with pytest.raises(error) as caught:
        call()
    assert isinstance(caught.value, ValueError)  # every one: a TbesError and a ValueError
    assert fragment in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # refused before any file was made


def test_a_callers_mistake_raises_even_where_a_store_fault_fails_open() -> None:
    broken = enforcer(store=Broken())
    # The store fault: mail keeps flowing.
    assert broken.check(CONN, [HOP]).action is Action.ACCEPT
    # The caller's bug: refused, not hidden behind an accept.
    with pytest.raises(InvalidValueError, match="received"):
        broken.check(CONN, bad([HOP, 5]))
    with pytest.raises(InvalidValueError, match="conn"):
        broken.check(bad(SERVER), [HOP])


def test_bad_input_to_the_enforcer_never_touches_the_store() -> None:
    untouchable = enforcer(store=Untouchable())
    for call in (
        lambda: untouchable.check(CONN, bad(None)),
        lambda: untouchable.check(bad(None), [HOP]),
        lambda: untouchable.pause(TENANT, SERVER, 0),
        lambda: untouchable.pause(bad(None), SERVER, 3),
        lambda: untouchable.end_pause(TENANT, ""),
    ):
        with pytest.raises(InvalidValueError):
            call()


def test_an_unreadable_row_keeps_the_decode_error_as_its_cause() -> None:
    with pytest.raises(StoreError, match=r"server 'mx1'.*not valid JSON") as caught:
        load_state("mx1", 1, "{")
    assert isinstance(caught.value.__cause__, InvalidValueError)
    assert isinstance(caught.value.__cause__.__cause__, json.JSONDecodeError)


# ---- stores: the same refusals from all of them ------------------------------------------


@pytest.fixture(scope="module", params=STORE_KINDS)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StateStore]:
    """One store of each kind for this module (module scope: Hypothesis reuses it)."""
    made = make_store(request, request.param, tmp_path_factory.mktemp("shell") / "tbes.db")
    yield made
    made.close()


StoreCall = Callable[[StateStore], object]

STORE_CASES: list[tuple[str, StoreCall, str]] = [
    ("put(None)", lambda s: s.put(bad(None), expected_version=None), "state must be a ServerState"),
    (
        "put(expected_version='1')",
        lambda s: s.put(STATE, expected_version=bad("1")),
        "expected_version",
    ),
    ("put(expected_version=0)", lambda s: s.put(STATE, expected_version=0), "expected_version"),
    ("put_ledger(None)", lambda s: s.put_ledger(bad(None), expected_version=None), "ledger"),
    ("put_ledger(state)", lambda s: s.put_ledger(bad(STATE), expected_version=None), "ledger"),
    ("get(None)", lambda s: s.get(bad(None)), "server_id"),
    ("get('')", lambda s: s.get(""), "server_id"),
    ("get_ledger(5)", lambda s: s.get_ledger(bad(5)), "tenant"),
    ("states(tenant=5)", lambda s: s.states(tenant=bad(5)), "tenant"),
    ("states(tenant='')", lambda s: s.states(tenant=""), "tenant"),
    ("put_many([object()])", lambda s: s.put_many([bad(object())]), "writes"),
    ("put_many(None)", lambda s: s.put_many(bad(None)), "writes"),
    ("put_many(one write)", lambda s: s.put_many(bad(StateWrite(STATE, None))), "writes"),
    ("put_many('ab')", lambda s: s.put_many(bad("ab")), "writes"),
]


@pytest.mark.parametrize(
    ("call", "fragment"),
    [pytest.param(call, fragment, id=name) for name, call, fragment in STORE_CASES],
)
def test_every_store_refuses_bad_arguments_naming_them(
    store: StateStore, call: StoreCall, fragment: str
) -> None:
    # states() must refuse at the call, not when its iterator is first advanced.
    with pytest.raises(InvalidValueError) as caught:
        call(store)
    assert fragment in str(caught.value)


def test_a_batch_with_one_bad_write_stores_nothing(store: StateStore) -> None:
    good = ServerState("mx-batch", TENANT, BUILD, Compliance.OUTDATED, JAN5, JAN5, None)
    with pytest.raises(InvalidValueError, match="writes"):
        store.put_many([StateWrite(good, None), LedgerWrite(LEDGER, None), bad(None)])
    assert store.get("mx-batch") is None
    assert store.get_ledger(LEDGER.tenant) is None


# ---- every entry point, every argument: return or raise a TbesError -------------------------

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.floats(),
    st.dates(),
    st.datetimes(),
    st.datetimes(timezones=st.just(UTC)),
    st.lists(st.one_of(st.text(max_size=20), st.integers()), max_size=3),
)

Feed = Callable[[Any], object]  # Any: wrong types are the point

HEARD: list[Event] = []
FED = enforcer()  # one enforcer for all examples: what it stores only makes later calls richer

ENTRY_POINTS: dict[str, Feed] = {
    "Connection(server_id)": lambda x: connection(server_id=x),
    "Connection(tenant)": lambda x: connection(tenant=x),
    "Connection(kind)": lambda x: connection(kind=x),
    "Connection(peer_ip)": lambda x: connection(peer_ip=x),
    "Connection(peer_host)": lambda x: connection(peer_host=x),
    "Connection(tls_subject)": lambda x: connection(tls_subject=x),
    "Event(kind)": lambda x: event(kind=x),
    "Event(server_id)": lambda x: event(server_id=x),
    "Event(at)": lambda x: event(at=x),
    "Event(stage)": lambda x: event(stage=x),
    "Event(build)": lambda x: event(build=x),
    "Event(detail)": lambda x: event(detail=x),
    "Enforcer(store)": lambda x: enforcer(store=x),
    "Enforcer(policy)": lambda x: enforcer(policy=x),
    "Enforcer(catalog)": lambda x: enforcer(catalog=x),
    "Enforcer(clock)": lambda x: enforcer(clock=x),
    "Enforcer(clock())": lambda x: enforcer(clock=lambda: x).check(CONN, [HOP]),
    "Enforcer(retries)": lambda x: enforcer(retries=x),
    "Enforcer(notifier)": lambda x: enforcer(notifier=x),
    "Enforcer(fail_closed)": lambda x: enforcer(fail_closed=x),
    "Enforcer(own_hosts)": lambda x: enforcer(own_hosts=x),
    "check(conn)": lambda x: FED.check(x, [HOP]),
    "check(received)": lambda x: FED.check(CONN, x),
    "check(unenforced, received)": lambda x: FED.check(PARTNER, x),
    "pause(tenant)": lambda x: FED.pause(x, SERVER, 3),
    "pause(server_id)": lambda x: FED.pause(TENANT, x, 3),
    "pause(days)": lambda x: FED.pause(TENANT, "ex-days", x),
    "pause(start)": lambda x: FED.pause(TENANT, "ex-start", 1, x),
    "end_pause(tenant)": lambda x: FED.end_pause(x, SERVER),
    "end_pause(server_id)": lambda x: FED.end_pause(TENANT, x),
    "CallbackNotifier(event)": lambda x: CallbackNotifier(HEARD.append).notify(event(detail=x)),
}


@pytest.mark.parametrize("feed", list(ENTRY_POINTS.values()), ids=list(ENTRY_POINTS))
@given(value=anything)
def test_any_object_to_the_enforcer_gets_a_result_or_a_tbes_error(
    feed: Feed, value: object
) -> None:
    # TbesError is the one family callers catch; anything else escapes and fails the test.
    with contextlib.suppress(TbesError):
        feed(value)


StoreFeed = Callable[[StateStore, Any], object]

STORE_ENTRY_POINTS: dict[str, StoreFeed] = {
    "get": lambda s, x: s.get(x),
    "get_ledger": lambda s, x: s.get_ledger(x),
    "states(tenant)": lambda s, x: list(s.states(x)),
    "put(state)": lambda s, x: s.put(x, expected_version=None),
    "put(expected_version)": lambda s, x: s.put(STATE, expected_version=x),
    "put_ledger(ledger)": lambda s, x: s.put_ledger(x, expected_version=None),
    "put_ledger(expected_version)": lambda s, x: s.put_ledger(LEDGER, expected_version=x),
    "put_many(writes)": lambda s, x: s.put_many(x),
    "put_many([write])": lambda s, x: s.put_many([x]),
}


@pytest.mark.parametrize("feed", list(STORE_ENTRY_POINTS.values()), ids=list(STORE_ENTRY_POINTS))
@given(value=anything)
def test_any_object_to_a_store_gets_a_result_or_a_tbes_error(
    store: StateStore, feed: StoreFeed, value: object
) -> None:
    with contextlib.suppress(TbesError):
        feed(store, value)
