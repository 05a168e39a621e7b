"""The base class of every store: the :class:`~tbes.store.StateStore` API over three row primitives.

Decision: a store supplies three primitives, reading one raw row, applying a checked batch of
compare-and-swap writes, and listing server rows; the public methods are the same on top of
them for every back end, so they live here once. All stores built on :class:`RowStore`
therefore check their arguments alike (:class:`~tbes.errors.InvalidValueError` naming the
argument, before the back end is touched), decode and refuse rows alike (an unreadable row
raises :class:`~tbes.errors.StoreError` naming it and is never overwritten), and turn any
other exception a primitive raises into a :class:`~tbes.errors.StoreError` (the original
chained as its cause), so a back end's I/O error or a store's bug is a store fault that
the :class:`~tbes.enforcer.Enforcer` fails open on. ``docs/custom-store.md`` builds a
store on it.

Besides :class:`RowStore`, this module exports what its primitives speak in (:data:`RawRow`,
:class:`RowWrite`, :data:`ROW_SCHEMA`) and the per-check deadline a store should honour
(:func:`remaining`, :data:`DEFAULT_CHECK_TIMEOUT`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar, Self, TypeVar, cast

import attrs

from tbes._instants import as_utc
from tbes.discovery import DiscoveredServer
from tbes.errors import InvalidValueError, StoreConflictError, StoreError
from tbes.ledger import PauseLedger
from tbes.state import ServerState
from tbes.store._deadline import DEFAULT_CHECK_TIMEOUT, remaining
from tbes.store._discovered import check_batch, decode
from tbes.store._rows import (
    ROW_SCHEMA,
    RawRow,
    RowWrite,
    check_key,
    check_writes,
    lean_row,
    load_event,
    load_ledger,
    load_state,
    plan_writes,
    raw_row,
    row_state,
    stored_version,
)
from tbes.store.protocol import EventWrite, LedgerWrite, Pending, StateWrite, Versioned, Write

__all__ = [
    "DEFAULT_CHECK_TIMEOUT",
    "ROW_SCHEMA",
    "RawRow",
    "RowStore",
    "RowWrite",
    "UnreadableRow",
    "remaining",
]

_MAX_DECODED = 4096
_log = logging.getLogger(__name__)
# An outbox row this tbes cannot read (a newer tbes wrote it?) is set aside this long.
_UNREADABLE_RETRY = dt.timedelta(days=1)
_MAX_CLAIM = 1000

# What a primitive may raise as it is: the contract's own errors. Anything else is wrapped.
_R = TypeVar("_R")
_CONTRACT_ERRORS = (StoreError, StoreConflictError)


@attrs.frozen
class UnreadableRow:
    """A stored server row that cannot be read, as :meth:`RowStore.entries` lists it.

    ``error`` says why (the :class:`~tbes.errors.StoreError` that reading it raises).
    """

    server_id: str
    error: str


class RowStore:
    """A :class:`~tbes.store.StateStore` over three primitives a subclass implements.

    * ``_read_row(table, key)``: the stored row of ``key`` in ``table`` (``"server"``,
      keyed by server id, or ``"ledger"``, keyed by tenant) as a :data:`RawRow`
      ``(version, schema, data)`` exactly as stored, or ``None``.
    * ``_apply(writes)``: apply a batch of compare-and-swap writes all-or-nothing and
      return their new versions. In one transaction of the back end (or under one lock)
      call :meth:`_plan` with a reader of the rows inside it, write each :class:`RowWrite`
      it returns (``version``, :data:`ROW_SCHEMA` and ``data``; ``tenant`` too for a
      server row) only if the row is still at ``expected``, and return the versions.
    * ``_server_rows(tenant)``: yield ``(server_id, raw_row)`` for every stored server
      row, or those whose last write named ``tenant``, in order of server id.

    Two more are optional, for the discovered servers (docs/discovery.md):
    ``_record_discovered(records, max_servers)`` and ``_discovered_rows()``; without them
    :meth:`record_discovered` and :meth:`discovered` raise :class:`~tbes.errors.StoreError`.

    Arguments are checked before a primitive runs. A primitive raises
    :class:`~tbes.errors.StoreConflictError` for a lost race, or
    :class:`~tbes.errors.StoreError`; any other exception it raises reaches the caller as
    a StoreError with the original as its ``__cause__``. A primitive that may wait (for a
    lock, a connection, an answer) should wait at most :func:`remaining` seconds, so that a
    stalled back end fails an :class:`~tbes.enforcer.Enforcer` check open in time.
    :meth:`close` does nothing unless overridden; a store is its own context manager.
    """

    _decoded_rows: dict[str, tuple[object, object, ServerState]]

    # ---- the primitives -----------------------------------------------------------------

    def _read_row(self, table: str, key: str) -> RawRow | None:
        """The stored row of ``key`` in ``table`` (``"server"`` or ``"ledger"``), or ``None``."""
        raise NotImplementedError

    def _apply(self, writes: tuple[Write, ...]) -> tuple[int, ...]:
        """Apply checked compare-and-swap writes all-or-nothing; return their new versions."""
        raise NotImplementedError

    def _server_rows(self, tenant: str | None) -> Iterator[tuple[str, RawRow]]:
        """Every stored server row, or those of ``tenant`` (checked), in order of server id."""
        raise NotImplementedError

    def _ledger_rows(self) -> list[tuple[str, RawRow]]:
        """Every stored ledger row, in order of tenant (optional: for ``ledgers()``)."""
        raise NotImplementedError

    def _delete_row(self, server_id: str, version: int) -> bool:
        """Delete the server row if still at ``version``; whether it was (for ``delete()``)."""
        raise NotImplementedError

    def _record_discovered(self, records: tuple[DiscoveredServer, ...], max_servers: int) -> None:
        """Merge ``records`` into the discovered table and keep its ``max_servers`` newest
        (optional: for ``record_discovered()``; see :meth:`record_discovered`)."""
        raise NotImplementedError

    def _discovered_rows(self) -> list[tuple[object, object]]:
        """Every ``(peer, data)`` of the discovered table (optional: for ``discovered()``)."""
        raise NotImplementedError

    # ---- the outbox primitives (only with ``supports_outbox``) -------------------------

    supports_outbox: ClassVar[bool] = False
    """Whether the store keeps an outbox: takes :class:`~tbes.store.protocol.EventWrite`
    in :meth:`put_many` (an ``"outbox"`` :class:`RowWrite`, inserted unless its key is
    there) and implements the three primitives below (docs/notifications.md)."""

    def _claim_rows(
        self, receiver: str, now: float, until: float, limit: int
    ) -> list[tuple[str, object, object, int]]:
        """Claim for ``receiver`` up to ``limit`` outbox rows, oldest first, in one transaction.

        A row is claimable unless delivered to ``receiver`` or claimed until after ``now``
        (seconds since the epoch). Each claimed row's delivery record (made if missing)
        gets one more attempt and is claimed ``until``. Returns ``(event_id, schema, data,
        attempts)`` per claimed row.
        """
        raise NotImplementedError

    def _mark_row(
        self, receiver: str, event_id: str, delivered: float | None, due: float | None
    ) -> None:
        """Record ``delivered`` (an instant) or, undelivered, the instant ``due`` it may retry."""
        raise NotImplementedError

    def _prune_rows(
        self, delivered_before: float, expire_before: float, receivers: tuple[str, ...]
    ) -> int:
        """Delete outbox rows (and their delivery records); return how many rows went.

        Deleted: rows of events before ``delivered_before`` delivered to every one of
        ``receivers``, and rows of events before ``expire_before`` whatever their state.
        """
        raise NotImplementedError

    @staticmethod
    def _plan(writes: Sequence[Write], read: Callable[[str, str], RawRow | None]) -> list[RowWrite]:
        """Check a batch against the stored rows; return the rows to write, in input order.

        ``read(table, key)`` returns the stored row inside the caller's transaction (so that
        it cannot change until the writes are made) or ``None``; rows are read in (table,
        key) order, so concurrent batches lock them in one order and cannot deadlock. An
        unreadable row raises :class:`~tbes.errors.StoreError` whatever was expected (it is
        never overwritten), a row at another version
        :class:`~tbes.errors.StoreConflictError`, two writes of one row StoreError.
        """
        return plan_writes(writes, read)

    def _foreign(self, exc: Exception) -> StoreError:
        """The StoreError for an exception outside the contract raised by a primitive."""
        return StoreError(f"store {type(self).__name__} failed: {exc!r}")

    def _call(self, primitive: Callable[..., _R], *args: object) -> _R:
        """``primitive(*args)``, with any exception outside the contract as a StoreError."""
        try:
            return primitive(*args)
        except _CONTRACT_ERRORS:
            raise
        except Exception as exc:
            raise self._foreign(exc) from exc

    # ---- the StateStore API on top of them -------------------------------------------------

    def get(self, server_id: str) -> Versioned[ServerState] | None:
        """The stored state of ``server_id`` and its version, or ``None``."""
        check_key("server_id", server_id)
        found = self._call(self._read_row, "server", server_id)
        if found is None:
            return None
        row = raw_row("server", server_id, found)
        version = stored_version("server", server_id, row[0])
        return Versioned(self._decoded(server_id, row[1], row[2]), version)

    def _decoded(self, server_id: str, schema: object, data: object) -> ServerState:
        # A busy server's row is read for every message but seldom changes, and decoding it
        # costs about a third of a check: the last state decoded per server is reused while
        # the stored text is the same (states are immutable, so sharing one is safe).
        try:
            cache = self._decoded_rows
        except AttributeError:  # subclasses have their own __init__: made on first use
            cache = self._decoded_rows = {}
        entry = cache.get(server_id)
        if entry is not None and entry[0] == schema and entry[1] == data:
            return entry[2]
        state = load_state(server_id, schema, data)
        if len(cache) >= _MAX_DECODED:  # bounded: a wide scan must not keep every state
            cache.clear()
        cache[server_id] = (schema, data, state)
        return state

    def get_ledger(self, tenant: str) -> Versioned[PauseLedger] | None:
        """The stored pause ledger of ``tenant`` and its version, or ``None``."""
        check_key("tenant", tenant)
        found = self._call(self._read_row, "ledger", tenant)
        if found is None:
            return None
        row = raw_row("ledger", tenant, found)
        version = stored_version("ledger", tenant, row[0])
        return Versioned(load_ledger(tenant, row[1], row[2]), version)

    def ledgers(self) -> Iterator[PauseLedger]:
        """Every stored pause ledger, in order of tenant (for copying a store whole).

        An unreadable row raises :class:`~tbes.errors.StoreError` naming it.
        """
        rows = self._call(self._ledger_rows)
        for tenant, found in rows:
            row = raw_row("ledger", tenant, found)
            stored_version("ledger", tenant, row[0])
            yield load_ledger(tenant, row[1], row[2])

    def delete(self, server_id: str, *, expected_version: int) -> None:
        """Remove the state of ``server_id`` if its row is still at ``expected_version``.

        A row at another version, or none, raises :class:`~tbes.errors.StoreConflictError`.
        Ledgers are untouched: the pause days the server was charged stay charged.
        """
        check_key("server_id", server_id)
        if type(expected_version) is not int or expected_version < 1:
            raise InvalidValueError(
                f"expected_version must be an int >= 1, got {expected_version!r}"
            )
        deleted = self._call(self._delete_row, server_id, expected_version)
        if not deleted:
            raise StoreConflictError(
                f"server {server_id!r}: expected version {expected_version}, it changed or is gone"
            )

    def put(self, state: ServerState, *, expected_version: int | None) -> int:
        """Store ``state`` by compare-and-swap; return its new version."""
        return self.put_many([StateWrite(state, expected_version)])[0]

    def put_ledger(self, ledger: PauseLedger, *, expected_version: int | None) -> int:
        """Store ``ledger`` by compare-and-swap; return its new version."""
        return self.put_many([LedgerWrite(ledger, expected_version)])[0]

    def put_many(self, writes: Sequence[Write]) -> tuple[int, ...]:
        """Apply compare-and-swap writes all-or-nothing; return their new versions.

        An :class:`~tbes.store.protocol.EventWrite` puts its event in the outbox (version
        1), unless it is there already; a store without an outbox refuses it with
        :class:`~tbes.errors.InvalidValueError`.
        """
        checked = check_writes(writes)
        if not self.supports_outbox and any(isinstance(w, EventWrite) for w in checked):
            raise InvalidValueError(f"store {type(self).__name__} keeps no outbox")
        return self._call(self._apply, checked)

    # ---- the outbox --------------------------------------------------------------------

    def claim_events(
        self,
        receiver: str,
        now: dt.datetime,
        *,
        lease: dt.timedelta,
        limit: int = 100,
    ) -> list[Pending]:
        """Claim for ``receiver`` the oldest undelivered events of the outbox, up to ``limit``.

        An event delivered to ``receiver`` (:meth:`mark_delivered`) is never claimed for it
        again; a claimed one is not claimed again before ``now + lease`` or the instant
        :meth:`retry_later` set, so a sender that died holding a claim loses it after the
        lease. Claims of several processes never overlap. An outbox row this tbes cannot
        read is logged at ERROR and set aside for a day.
        """
        receiver = check_key("receiver", receiver)
        now = as_utc(now, "now")
        if not isinstance(lease, dt.timedelta) or lease <= dt.timedelta(0):
            raise InvalidValueError(f"lease must be a timedelta > 0, got {lease!r:.80}")
        if type(limit) is not int or not 1 <= limit <= _MAX_CLAIM:
            raise InvalidValueError(f"limit must be an int in 1..{_MAX_CLAIM}, got {limit!r:.80}")
        self._require_outbox()
        start = now.timestamp()
        rows = self._call(self._claim_rows, receiver, start, (now + lease).timestamp(), limit)
        claimed = []
        for event_id, schema, data, attempts in rows:
            try:
                claimed.append(Pending(load_event(event_id, schema, data), attempts))
            except StoreError as exc:
                _log.error("tbes: outbox row set aside for a day: %s", exc)
                self._call(
                    self._mark_row,
                    receiver,
                    event_id,
                    None,
                    start + _UNREADABLE_RETRY.total_seconds(),
                )
        return claimed

    def mark_delivered(self, receiver: str, event_id: str, now: dt.datetime) -> None:
        """Record that ``receiver`` has the event ``event_id``: it is never claimed for it again."""
        receiver = check_key("receiver", receiver)
        event_id = check_key("event_id", event_id)
        at = as_utc(now, "now").timestamp()
        self._require_outbox()
        self._call(self._mark_row, receiver, event_id, at, None)

    def retry_later(self, receiver: str, event_id: str, at: dt.datetime) -> None:
        """Let the undelivered event ``event_id`` be claimed for ``receiver`` again from ``at``."""
        receiver = check_key("receiver", receiver)
        event_id = check_key("event_id", event_id)
        due = as_utc(at, "at").timestamp()
        self._require_outbox()
        self._call(self._mark_row, receiver, event_id, None, due)

    def prune_outbox(
        self,
        now: dt.datetime,
        *,
        keep: dt.timedelta,
        expire: dt.timedelta,
        receivers: Sequence[str],
    ) -> int:
        """Delete what the outbox need not keep; return how many events were deleted.

        Events older than ``keep`` delivered to every one of ``receivers``, and every event
        older than ``expire`` (delivered or not: a receiver down that long is told no more
        of it). With no ``receivers``, events older than ``keep`` go.
        """
        now = as_utc(now, "now")
        for name, value in (("keep", keep), ("expire", expire)):
            if not isinstance(value, dt.timedelta) or value < dt.timedelta(0):
                raise InvalidValueError(f"{name} must be a timedelta >= 0, got {value!r:.80}")
        if isinstance(receivers, str) or not isinstance(receivers, Sequence):
            raise InvalidValueError(f"receivers must be a sequence of names, got {receivers!r:.80}")
        names = tuple(sorted({check_key("receivers", name) for name in receivers}))
        self._require_outbox()
        return self._call(
            self._prune_rows, (now - keep).timestamp(), (now - expire).timestamp(), names
        )

    def _require_outbox(self) -> None:
        if not self.supports_outbox:
            raise InvalidValueError(f"store {type(self).__name__} keeps no outbox")

    def states(self, tenant: str | None = None) -> Iterator[ServerState]:
        """Every stored state, or those of ``tenant``, in order of server id.

        An unreadable row raises :class:`~tbes.errors.StoreError` naming it and ends the
        iteration; :meth:`entries` goes on past it.
        """
        # Checked here, not in the generator, so a bad tenant raises at the call. Strict
        # entries are never an UnreadableRow.
        strict = self._entries(None if tenant is None else check_key("tenant", tenant), True)
        return cast("Iterator[ServerState]", strict)

    def entries(self, tenant: str | None = None) -> Iterator[ServerState | UnreadableRow]:
        """Like :meth:`states`, but an unreadable row is listed as an :class:`UnreadableRow`.

        For a report that must show every readable row and mark the others; a failing back
        end still raises :class:`~tbes.errors.StoreError`. Not part of the
        :class:`~tbes.store.StateStore` protocol: every RowStore has it.
        """
        return self._entries(None if tenant is None else check_key("tenant", tenant), False)

    def _entries(self, tenant: str | None, strict: bool) -> Iterator[ServerState | UnreadableRow]:
        """The entries of :meth:`entries`; ``strict``: an unreadable row raises, as
        :meth:`states` has it (one generator for both: a report reads every row through it)."""
        try:
            rows = iter(self._server_rows(tenant))
        except _CONTRACT_ERRORS:
            raise
        except Exception as exc:
            raise self._foreign(exc) from exc
        while True:
            try:
                server_id, row = next(rows)
            except StopIteration:
                return
            except _CONTRACT_ERRORS:
                raise
            except Exception as exc:
                raise self._foreign(exc) from exc
            # A row as tbes writes it straight to the lean decoder: a report reads every row.
            # (Anything but a 3-tuple goes to row_state, which names what is wrong with it.)
            entry: ServerState | UnreadableRow | None = (
                lean_row(server_id, *row) if type(row) is tuple and len(row) == 3 else None
            )
            if entry is not None:
                yield entry
                continue
            try:
                entry = row_state(server_id, row)
            except StoreError as exc:
                if strict:
                    raise StoreError(str(exc)) from None
                entry = UnreadableRow(server_id, str(exc))
            yield entry

    # ---- discovered servers (docs/discovery.md) -----------------------------------------

    def record_discovered(self, records: Sequence[DiscoveredServer], *, max_servers: int) -> None:
        """Merge ``records`` into the discovered servers, then keep at most ``max_servers``.

        Each record is merged (:func:`tbes.discovery.merge`) with the stored one of its
        peer, in one transaction; then the oldest by last seen are dropped
        (:func:`tbes.discovery.evicted`). Server rows and ledgers are never touched. A store
        whose primitive ``_record_discovered`` is not implemented raises
        :class:`~tbes.errors.StoreError` saying so.
        """
        batch = check_batch(records, max_servers)
        if batch:
            self._optional(self._record_discovered, batch, max_servers)

    def discovered(self) -> list[DiscoveredServer]:
        """Every discovered server, the most recently seen first (then by address).

        A row that cannot be read raises :class:`~tbes.errors.StoreError` naming its peer;
        a store without the primitive ``_discovered_rows`` raises StoreError saying so.
        """
        rows = self._optional(self._discovered_rows)
        records = [decode(peer, data) for peer, data in rows]
        records.sort(key=lambda each: each.peer_ip)
        records.sort(key=lambda each: each.last_seen, reverse=True)
        return records

    def _optional(self, primitive: Callable[..., _R], *args: object) -> _R:
        try:
            return self._call(primitive, *args)
        except StoreError as error:
            if isinstance(error.__cause__, NotImplementedError):
                raise StoreError(
                    f"store {type(self).__name__} keeps no discovered servers: it implements "
                    f"no {primitive.__name__} (docs/custom-store.md), or set "
                    "[discovery] enabled = false"
                ) from None
            raise

    def close(self) -> None:
        """Release connections and files (nothing, unless a subclass holds some)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
