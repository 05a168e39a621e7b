"""The storage contract: versioned rows of server states and pause ledgers, written by CAS.

Every writer follows read, compute, compare-and-swap: a ``put`` names the version it read
(``None``: "must not exist yet") and fails with :class:`~tbes.errors.StoreConflictError`
if another writer got there first, so several MTA processes or nodes can share a store
without locks held across the computation. :meth:`StateStore.put_many` writes several rows
all-or-nothing (a pause changes the tenant's ledger and the server's state together).

Rows are stored as JSON made by :mod:`tbes.serde` plus a row-schema version. The helpers
here (:func:`check_key`, :func:`check_writes`, :func:`dump_row`, :func:`load_state`,
:func:`load_ledger`, :func:`plan_writes`) are shared by every store, so that all of them
read, check and refuse alike: a wrong-typed argument raises
:class:`~tbes.errors.InvalidValueError` naming it, and a row that cannot be read raises
:class:`~tbes.errors.StoreError` naming its key, and is never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar, runtime_checkable

import attrs

from tbes.errors import InvalidValueError, StoreConflictError, StoreError, TbesError
from tbes.ledger import PauseLedger
from tbes.serde import dumps, loads
from tbes.state import ServerState

__all__ = [
    "ROW_SCHEMA",
    "LedgerWrite",
    "RawRow",
    "RowWrite",
    "StateStore",
    "StateWrite",
    "UnreadableRow",
    "Versioned",
    "Write",
    "check_key",
    "check_row",
    "check_writes",
    "conflict",
    "describe",
    "dump_row",
    "load_ledger",
    "load_row",
    "load_state",
    "plan_writes",
    "row_key",
    "stored_version",
]

ROW_SCHEMA = 1
"""Schema version of the JSON rows this tbes writes and reads."""

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


def _check_version(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 1:
        raise InvalidValueError(f"a stored version is an int >= 1, got {value!r}")


@attrs.frozen
class Versioned(Generic[_T_co]):
    """A stored value and its version, which every successful write of its row increases."""

    value: _T_co
    version: int = attrs.field(validator=_check_version)


def _check_expected(
    instance: object, attribute: attrs.Attribute[int | None], value: object
) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise InvalidValueError(f"expected_version is None or an int >= 1, got {value!r}")


def _check_state(instance: object, attribute: attrs.Attribute[ServerState], value: object) -> None:
    if not isinstance(value, ServerState):
        raise InvalidValueError(f"state must be a ServerState, got {value!r:.80}")


def _check_ledger(instance: object, attribute: attrs.Attribute[PauseLedger], value: object) -> None:
    if not isinstance(value, PauseLedger):
        raise InvalidValueError(f"ledger must be a PauseLedger, got {value!r:.80}")


@attrs.frozen
class StateWrite:
    """One server state to write in :meth:`StateStore.put_many`, with the version read."""

    state: ServerState = attrs.field(validator=_check_state)
    expected_version: int | None = attrs.field(validator=_check_expected)


@attrs.frozen
class LedgerWrite:
    """One pause ledger to write in :meth:`StateStore.put_many`, with the version read."""

    ledger: PauseLedger = attrs.field(validator=_check_ledger)
    expected_version: int | None = attrs.field(validator=_check_expected)


Write = StateWrite | LedgerWrite
"""A row to write in a batch: a server state or a tenant's ledger."""


@attrs.frozen
class UnreadableRow:
    """A stored server row that cannot be read, as a listing that goes on past it shows it.

    ``error`` says why (the :class:`~tbes.errors.StoreError` that reading it raises).
    """

    server_id: str
    error: str


@runtime_checkable
class StateStore(Protocol):
    """Where server states and pause ledgers live, written by compare-and-swap.

    Versions start at 1 and every successful write of a row adds 1. Every method may raise
    :class:`~tbes.errors.StoreError` for a failing back end or an unreadable row (naming
    the server or tenant); an unreadable row is never overwritten. An argument of the wrong
    type (an id that is no non-empty ``str``, a value that is no state or ledger, a version
    that is no int >= 1) raises :class:`~tbes.errors.InvalidValueError` naming it, before
    the back end is touched.
    """

    def get(self, server_id: str) -> Versioned[ServerState] | None:
        """The stored state of ``server_id`` and its version, or ``None`` if there is none."""
        ...

    def put(self, state: ServerState, *, expected_version: int | None) -> int:
        """Store ``state`` if its row is still at ``expected_version``; return the new version.

        ``expected_version=None`` means the row must not exist yet. A row at another
        version (or a missing row when one was expected, or an existing one when none was)
        raises :class:`~tbes.errors.StoreConflictError` and changes nothing.
        """
        ...

    def get_ledger(self, tenant: str) -> Versioned[PauseLedger] | None:
        """The stored pause ledger of ``tenant`` and its version, or ``None``."""
        ...

    def put_ledger(self, ledger: PauseLedger, *, expected_version: int | None) -> int:
        """Store ``ledger`` by compare-and-swap, exactly like :meth:`put`."""
        ...

    def put_many(self, writes: Sequence[Write]) -> tuple[int, ...]:
        """Apply several compare-and-swap writes all-or-nothing; return their new versions.

        Either every write's row is at its expected version and all are stored in one
        transaction, or nothing changes and :class:`~tbes.errors.StoreConflictError` (or
        :class:`~tbes.errors.StoreError`) names the first row that failed. Two writes of
        the same row in one batch raise :class:`~tbes.errors.StoreError`.
        """
        ...

    def states(self, tenant: str | None = None) -> Iterator[ServerState]:
        """Every stored server state, or those of one ``tenant``, in order of server id.

        The iteration need not be one snapshot: the SQL stores read a page at a time, so
        a row written meanwhile may or may not be seen, but no row is seen twice.
        """
        ...

    def close(self) -> None:
        """Release connections and files; the store is not used afterwards."""
        ...


# ---- rows: the helpers every store shares, so that all of them read and refuse alike ----

RawRow = tuple[object, object, object]
"""A stored row as a back end holds it: ``(version, schema, data)``, none of them trusted."""


@attrs.frozen
class RowWrite:
    """A checked write, ready for a back end: which row, its new version and its JSON."""

    table: str  # "server" or "ledger"
    key: str  # the server id or the tenant
    tenant: str  # the tenant the row belongs to (for a ledger, its key)
    expected: int | None  # the version the row must still have (None: must not exist)
    version: int  # the version the write gives it
    data: str  # the JSON text, at row schema ROW_SCHEMA


def row_key(write: Write) -> tuple[str, str]:
    """The table and key a write goes to: ``("server", id)`` or ``("ledger", tenant)``."""
    if isinstance(write, StateWrite):
        return ("server", write.state.server_id)
    return ("ledger", write.ledger.tenant)


def describe(table: str, key: str) -> str:
    """Name a row for a message: ``server 'x'`` or ``ledger of tenant 'y'``."""
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
            f"writes must be a sequence of StateWrite and LedgerWrite, got {writes!r:.80}"
        )
    for write in writes:
        if not isinstance(write, StateWrite | LedgerWrite):
            raise InvalidValueError(
                f"writes must hold only StateWrite and LedgerWrite values, got {write!r:.80}"
            )
    return tuple(writes)


def dump_row(value: ServerState | PauseLedger) -> str:
    """The JSON text stored for ``value``; its row schema is :data:`ROW_SCHEMA`."""
    return dumps(value)


def _load(table: str, key: str, schema: object, data: object, cls: type[_T]) -> _T:
    where = describe(table, key)
    if schema != ROW_SCHEMA:
        raise StoreError(
            f"stored row of the {where} has schema version {schema!r}; this tbes reads "
            f"version {ROW_SCHEMA} (a newer tbes may have written it)"
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


def load_row(server_id: str, row: RawRow) -> Versioned[ServerState]:
    """Decode a whole stored server row, version included; StoreError if unreadable."""
    version = stored_version("server", server_id, row[0])
    return Versioned(load_state(server_id, row[1], row[2]), version)


def check_row(table: str, key: str, row: RawRow) -> int:
    """The version of a stored row; :class:`~tbes.errors.StoreError` if it cannot be read."""
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
