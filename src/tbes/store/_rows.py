"""Rows as the stores keep them: encoding, decoding, argument checks and the CAS plan of a batch.

Decision: every store, shipped or custom, encodes, decodes, checks and refuses rows through
these functions (by way of :class:`tbes.store.base.RowStore`), so that all of them read and
refuse alike: a wrong-typed argument raises :class:`~tbes.errors.InvalidValueError` naming
it, and a row that cannot be read raises :class:`~tbes.errors.StoreError` naming its key,
and is never overwritten. Private: a custom store reaches them through ``RowStore``, and
the few types its primitives speak in (:data:`RawRow`, :class:`RowWrite`,
:data:`ROW_SCHEMA`) are re-exported by :mod:`tbes.store.base`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs

from tbes._slots import slot_filler
from tbes.compliance import Compliance
from tbes.errors import InvalidValueError, StoreConflictError, StoreError, TbesError
from tbes.events import Event
from tbes.ledger import Pause, PauseLedger
from tbes.serde import dumps, loads
from tbes.state import ServerState
from tbes.store.protocol import EventWrite, LedgerWrite, StateWrite, Versioned, Write
from tbes.version import ExchangeBuild

__all__ = [
    "READ_SCHEMAS",
    "ROW_SCHEMA",
    "RawRow",
    "RowWrite",
    "check_key",
    "check_row",
    "check_writes",
    "conflict",
    "describe",
    "dump_row",
    "lean_row",
    "load_event",
    "load_ledger",
    "load_row",
    "load_state",
    "plan_writes",
    "row_key",
    "row_state",
    "stored_version",
]

ROW_SCHEMA = 2
"""Schema version of the JSON rows this tbes writes.

2 since states are kept per sending server behind a connector (``NAME/HOST``). The JSON is
the same as 1's, which this tbes still reads (:data:`READ_SCHEMAS`): a server row at 1 was
written before, so it is a connector-level state (keyed by the connector's name), which the
enforcer reads as such: it keeps deciding header-less mail until stale, and a server first
seen non-compliant behind that connector inherits its open episode and pauses. An older
tbes refuses rows at 2 as unreadable (never overwriting them) rather than misreading a
server's state as its connector's.
"""

READ_SCHEMAS = frozenset({1, ROW_SCHEMA})
"""The row schema versions this tbes reads."""

_T = TypeVar("_T")

RawRow = tuple[object, object, object]
"""A stored row as a back end holds it: ``(version, schema, data)``, none of them trusted."""


@attrs.frozen
class RowWrite:
    """A checked write, ready for a back end: which row, its new version and its JSON."""

    table: str  # "server", "ledger" or "outbox"
    key: str  # the server id, the tenant or the event id
    tenant: str  # the tenant the row belongs to (for a ledger, its key)
    expected: int | None  # the version the row must still have (None: must not exist)
    version: int  # the version the write gives it
    data: str  # the JSON text, at row schema ROW_SCHEMA
    # An outbox row only: the event's instant in seconds since the epoch (for pruning).
    # Outbox rows are inserted unless their event id is there already: no version check.
    at: float | None = None


def row_key(write: Write) -> tuple[str, str]:
    """The table and key a write goes to: ``("server", id)`` or ``("ledger", tenant)``."""
    if isinstance(write, StateWrite):
        return ("server", write.state.server_id)
    if isinstance(write, EventWrite):
        return ("outbox", write.event.id)
    return ("ledger", write.ledger.tenant)


def describe(table: str, key: str) -> str:
    """Name a row for a message: ``server 'x'`` or ``ledger of tenant 'y'``."""
    if table == "outbox":
        return f"event {key!r}"
    return f"server {key!r}" if table == "server" else f"ledger of tenant {key!r}"


def conflict(table: str, key: str, expected: int | None, found: int | None) -> StoreConflictError:
    """The error for a lost compare-and-swap, saying what was expected and what was found."""
    want = "no row" if expected is None else f"version {expected}"
    have = "no row" if found is None else f"version {found}"
    return StoreConflictError(f"{describe(table, key)}: expected {want}, found {have}")


def check_key(name: str, value: object) -> str:
    """``value`` if it is a non-empty ``str`` (a server id or tenant), else InvalidValueError."""
    if not isinstance(value, str) or not value:
        raise InvalidValueError(f"{name} must be a non-empty str, got {value!r:.80}")
    return value


def check_writes(writes: object) -> tuple[Write, ...]:
    """``writes`` as a tuple if it is a sequence of writes, else InvalidValueError naming it."""
    # A bare str is a sequence too, but never one of writes.
    if isinstance(writes, str | bytes) or not isinstance(writes, Sequence):
        raise InvalidValueError(
            f"writes must be a sequence of StateWrite, LedgerWrite and EventWrite, "
            f"got {writes!r:.80}"
        )
    for write in writes:
        if not isinstance(write, StateWrite | LedgerWrite | EventWrite):
            raise InvalidValueError(
                "writes must hold only StateWrite, LedgerWrite and EventWrite values, "
                f"got {write!r:.80}"
            )
    return tuple(writes)


def dump_row(value: ServerState | PauseLedger) -> str:
    """The JSON text stored for ``value``; its row schema is :data:`ROW_SCHEMA`."""
    return dumps(value)


def _load(table: str, key: str, schema: object, data: object, cls: type[_T]) -> _T:
    where = describe(table, key)
    if type(schema) is not int or schema not in READ_SCHEMAS:
        readable = " and ".join(map(str, sorted(READ_SCHEMAS)))
        raise StoreError(
            f"stored row of the {where} has schema version {schema!r}; this tbes reads "
            f"versions {readable} (a newer tbes may have written it)"
        )
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data).decode("utf-8", errors="replace")
    if not isinstance(data, str):
        raise StoreError(f"stored row of the {where} is not text but {type(data).__name__}")
    try:
        return loads(data, cls)
    except TbesError as exc:  # InvalidValueError (bad JSON, no such value) or a value's own
        raise StoreError(f"stored row of the {where} does not decode: {exc}") from exc


def stored_version(table: str, key: str, version: object) -> int:
    """A stored row's CAS version if it is an int >= 1, else StoreError naming the row.

    A version written behind tbes's back (0, negative, text, a real) makes the row unreadable:
    the store cannot say which version a compare-and-swap must expect.
    """
    if type(version) is not int or version < 1:
        raise StoreError(
            f"stored row of the {describe(table, key)} has version {version!r:.40}; "
            "a version is an int >= 1"
        )
    return version


def load_state(server_id: str, schema: object, data: object) -> ServerState:
    """Decode the stored row of ``server_id``; :class:`~tbes.errors.StoreError` if unreadable.

    Unreadable means: a schema version this tbes does not read, text that is not JSON, JSON
    that does not decode to a :class:`~tbes.state.ServerState`, or a state of another server.
    """
    lean = lean_row(server_id, 1, schema, data)
    if lean is not None:
        return lean
    state = _load("server", server_id, schema, data, ServerState)
    if state.server_id != server_id:
        raise StoreError(f"stored row of the server {server_id!r} holds server {state.server_id!r}")
    return state


def load_ledger(tenant: str, schema: object, data: object) -> PauseLedger:
    """Decode the stored ledger row of ``tenant``, like :func:`load_state`."""
    ledger = _load("ledger", tenant, schema, data, PauseLedger)
    if ledger.tenant != tenant:
        raise StoreError(
            f"stored row of the ledger of tenant {tenant!r} holds tenant {ledger.tenant!r}"
        )
    return ledger


def load_event(event_id: str, schema: object, data: object) -> Event:
    """Decode the stored outbox row of ``event_id``, like :func:`load_state`."""
    event = _load("outbox", event_id, schema, data, Event)
    if event.id != event_id:
        raise StoreError(f"stored row of the event {event_id!r} holds event {event.id!r}")
    return event


def load_row(server_id: str, row: RawRow) -> Versioned[ServerState]:
    """Decode a whole stored server row, version included; StoreError if unreadable."""
    row = raw_row("server", server_id, row)
    version = stored_version("server", server_id, row[0])
    return Versioned(load_state(server_id, row[1], row[2]), version)


def raw_row(table: str, key: str, row: object) -> RawRow:
    """``row`` as a store's primitive gave it, if it is ``(version, schema, data)``.

    A custom store's primitive that gives anything else (a bug of that store) is a
    :class:`~tbes.errors.StoreError` naming the row, not a ``TypeError`` from unpacking it.
    """
    if type(row) is tuple and len(row) == 3:
        return row
    if isinstance(row, list) and len(row) == 3:
        return (row[0], row[1], row[2])
    raise StoreError(f"the {table} row of {key!r} is not (version, schema, data) but {row!r:.80}")


def row_state(server_id: str, row: RawRow) -> ServerState:
    """The state of a whole stored server row, its version checked as :func:`load_row` checks
    it (for a scan, which has no use for the version)."""
    version, schema, data = raw_row("server", server_id, row)
    lean = lean_row(server_id, version, schema, data)
    if lean is not None:
        return lean
    stored_version("server", server_id, version)
    return load_state(server_id, schema, data)


def check_row(table: str, key: str, row: RawRow) -> int:
    """The version of a stored row; :class:`~tbes.errors.StoreError` if it cannot be read."""
    row = raw_row(table, key, row)
    version = stored_version(table, key, row[0])
    if table == "server":
        load_state(key, row[1], row[2])
    else:
        load_ledger(key, row[1], row[2])
    return version


def plan_writes(
    writes: Sequence[Write], read: Callable[[str, str], RawRow | None]
) -> list[RowWrite]:
    """Check a batch against the stored rows and return the writes to make, in input order.

    ``read(table, key)`` returns the stored row (in a transaction that keeps it from
    changing, e.g. ``SELECT ... FOR UPDATE``) or ``None``. Rows are read in (table, key)
    order, so that concurrent batches lock rows in the same order and cannot deadlock. An
    unreadable row raises :class:`~tbes.errors.StoreError` whatever version was expected
    (it is never overwritten); a row at another version raises
    :class:`~tbes.errors.StoreConflictError`; two writes of one row raise StoreError;
    ``writes`` that are not a sequence of writes raise InvalidValueError (:func:`check_writes`).
    """
    writes = check_writes(writes)
    keys = [row_key(write) for write in writes]
    if len(set(keys)) != len(keys):
        twice = next(key for key in keys if keys.count(key) > 1)
        raise StoreError(f"put_many got two writes of the {describe(*twice)}")
    planned: dict[int, RowWrite] = {}
    for index in sorted(range(len(writes)), key=keys.__getitem__):
        write, (table, key) = writes[index], keys[index]
        if isinstance(write, EventWrite):  # inserted unless there: nothing to read or check
            event = write.event
            at = event.at.timestamp()
            planned[index] = RowWrite(table, key, event.tenant, None, 1, dumps(event), at)
            continue
        raw = read(table, key)
        found = None if raw is None else check_row(table, key, raw)
        if found != write.expected_version:
            raise conflict(table, key, write.expected_version, found)
        if isinstance(write, StateWrite):
            tenant, data = write.state.tenant, dump_row(write.state)
        else:
            tenant, data = write.ledger.tenant, dump_row(write.ledger)
        planned[index] = RowWrite(table, key, tenant, found, (found or 0) + 1, data)
    return [planned[index] for index in range(len(writes))]


# ---- the lean decoder of server rows -------------------------------------------------------
#
# Decision: reading a row through cattrs and ServerState's checks costs several times the JSON
# parse itself, and a report reads every row. Rows are nearly always what tbes itself wrote,
# so lean_row decodes exactly those: every key present and no other, ids and the tenant
# as plain non-empty text, instants in UTC, a known status, a build that parses, pauses that
# Pause itself accepts. Whatever it does not recognise it hands back (None) to the full path,
# which decodes or refuses the row as before; so it changes the cost of a read, never its
# answer (a property test holds the two equal on any state, and on rows that are not).

_STATE_FIELDS = (
    "server_id",
    "tenant",
    "build",
    "status",
    "first_detected",
    "last_seen",
    "compliant_since",
    "pauses",
    "notified_stage",
)
LEAN_DECODER = tuple(field.name for field in attrs.fields(ServerState)) == _STATE_FIELDS
"""Whether server rows are read by the lean decoder: only while ServerState's fields are the
ones it knows (a new field sends every row through the full path until it learns it)."""

_STATE_COUNT = len(_STATE_FIELDS)
_make_state = slot_filler(ServerState)
_STATUS = {member.value: member for member in Compliance}
_BUILDS: dict[str, ExchangeBuild] = {}
_BUILDS_KEPT = 1024  # a store has few builds; a forged one each row must not grow this
_PAUSE_KEYS = frozenset(("server_id", "start", "days"))
_UTC = dt.UTC
_fromisoformat = dt.datetime.fromisoformat
# json.loads is this scanner behind two Python calls and two regular-expression matches for
# the white space around the value; tbes writes none, and a row with some (or anything after
# the value) goes to the full path, which json.loads reads or refuses as ever.
# (typeshed does not list the decoder's scan_once, set in its __init__.)
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
# Instants by their text, in UTC only: most rows share a few last_seen values, and one object
# per instant lets the report's writers remember its text by value at the cost of its hash.
_INSTANTS: dict[str, dt.datetime] = {}
_INSTANTS_KEPT = 4096


def lean_row(server_id: str, version: object, schema: object, data: object) -> ServerState | None:
    """The state of a stored server row when it is a row as tbes writes it (a version >= 1,
    :data:`ROW_SCHEMA`, the JSON text :func:`dump_row` makes); else ``None``, and
    :func:`row_state` or :func:`load_state` reads or refuses the row."""
    # type(): 2.0 == 2, but the full path refuses a schema version that is not an int.
    if (
        type(version) is not int
        or version < 1
        or type(schema) is not int
        or schema != ROW_SCHEMA
        or type(data) is not str
    ):
        return None
    try:
        row, end = _scan(data, 0)
        # Nine keys, and each of the nine read below (KeyError otherwise): the same keys.
        if end != len(data) or type(row) is not dict or len(row) != _STATE_COUNT:
            return None
        tenant, notified = row["tenant"], row["notified_stage"]
        status = _STATUS.get(row["status"])
        if (
            row["server_id"] != server_id
            or not server_id.isascii()  # other ids, and every other tenant, are checked by
            or type(tenant) is not str  # the full path
            or not tenant
            or not tenant.isascii()
            or status is None
            or not (notified is None or (type(notified) is int and notified >= 1))
        ):
            return None
        first, last, since = row["first_detected"], row["last_seen"], row["compliant_since"]
        # A text that is no str fails the lookup as unhashable or in _instant.
        if first is not None:
            first = _INSTANTS.get(first) or _instant(first)
        if last is not None:
            last = _INSTANTS.get(last) or _instant(last)
        if since is not None:
            since = _INSTANTS.get(since) or _instant(since)
        pauses, build = row["pauses"], row["build"]
        if build is not None:  # a text that is no str fails here, as unhashable, or in _build
            build = _BUILDS.get(build) or _build(build)
        return _make_state(
            server_id=server_id,
            tenant=tenant,
            build=build,
            status=status,
            first_detected=first,
            last_seen=last,
            compliant_since=since,
            pauses=() if pauses == [] else _pauses(server_id, pauses),
            notified_stage=notified,
        )
    except (TbesError, ValueError, TypeError, KeyError, RecursionError, StopIteration):
        return None  # StopIteration: the scanner found no value where the text starts


def _instant(text: str) -> dt.datetime:
    """The instant ``text`` stands for, if in UTC; ValueError otherwise (an offset other
    than UTC's is converted by the full path); TypeError if it is no str."""
    instant = _fromisoformat(text)
    if instant.tzinfo is not _UTC:
        raise ValueError(text)
    if len(_INSTANTS) >= _INSTANTS_KEPT:  # bounded: every row may hold instants of its own
        _INSTANTS.clear()
    _INSTANTS[text] = instant
    return instant


def _build(text: str) -> ExchangeBuild:
    """The build ``text`` names, parsed once per text."""
    build = ExchangeBuild.parse(text)
    if len(_BUILDS) >= _BUILDS_KEPT:
        _BUILDS.clear()
    _BUILDS[text] = build
    return build


def _pauses(server_id: str, items: Any) -> tuple[Pause, ...]:
    if type(items) is not list:
        raise TypeError(items)
    if not items:
        return ()
    pauses = []
    for item in items:
        if type(item) is not dict or item.keys() != _PAUSE_KEYS or item["server_id"] != server_id:
            raise TypeError(item)
        pauses.append(Pause(server_id, dt.date.fromisoformat(item["start"]), item["days"]))
    # ServerState keeps its pauses in one order.
    return tuple(sorted(pauses, key=lambda pause: (pause.start, pause.days)))
