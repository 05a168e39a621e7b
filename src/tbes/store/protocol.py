"""The storage contract: versioned rows of server states and pause ledgers, written by CAS.

Every writer follows read, compute, compare-and-swap: a ``put`` names the version it read
(``None``: "must not exist yet") and fails with :class:`~tbes.errors.StoreConflictError`
if another writer got there first, so several MTA processes or nodes can share a store
without locks held across the computation. :meth:`StateStore.put_many` writes several rows
all-or-nothing (a pause changes the tenant's ledger and the server's state together).

This module is the contract only. The base class that implements it over three row
primitives, for the shipped stores and custom ones alike, is :class:`tbes.store.base.RowStore`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Generic, Protocol, TypeVar, runtime_checkable

import attrs

from tbes.errors import InvalidValueError
from tbes.events import Event
from tbes.ledger import PauseLedger
from tbes.state import ServerState

__all__ = [
    "EventWrite",
    "LedgerWrite",
    "Pending",
    "StateStore",
    "StateWrite",
    "Versioned",
    "Write",
]

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


def _check_event(instance: object, attribute: attrs.Attribute[Event], value: object) -> None:
    if not isinstance(value, Event):
        raise InvalidValueError(f"event must be an Event, got {value!r:.80}")


@attrs.frozen
class EventWrite:
    """An event to put in the store's outbox in the same :meth:`StateStore.put_many`.

    Outbox rows are keyed by :attr:`~tbes.events.Event.id`: an event already there is kept
    as it is (no compare-and-swap: the same id is the same event), so a batch that
    announces it again changes nothing. Only stores whose ``supports_outbox`` is true
    take them (docs/notifications.md).
    """

    event: Event = attrs.field(validator=_check_event)


Write = StateWrite | LedgerWrite | EventWrite
"""A row to write in a batch: a server state, a tenant's ledger, or an event for the outbox."""


def _check_attempts(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 1:
        raise InvalidValueError(f"attempts must be an int >= 1, got {value!r:.80}")


@attrs.frozen
class Pending:
    """An event of the outbox claimed for one receiver, and how many claims it has had."""

    event: Event = attrs.field(validator=_check_event)
    attempts: int = attrs.field(validator=_check_attempts)


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
