"""The reads and single writes every store makes alike, over its own row access.

Decision: a store supplies three primitives, reading one raw row, applying a checked batch
and listing states; the public methods are the same on top of them for every back end, so
they live here once: all stores check their arguments (:class:`~tbes.errors.InvalidValueError`
naming the argument, before the back end is touched) and decode and refuse rows through the
same :mod:`tbes.store.protocol` helpers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tbes.errors import InvalidValueError, StoreConflictError, StoreError
from tbes.ledger import PauseLedger
from tbes.state import ServerState
from tbes.store.protocol import (
    LedgerWrite,
    RawRow,
    StateWrite,
    UnreadableRow,
    Versioned,
    Write,
    check_key,
    check_writes,
    load_ledger,
    load_row,
    load_state,
    stored_version,
)

__all__ = ["RowStore"]

_MAX_DECODED = 4096


class RowStore:
    """The parts of a :class:`~tbes.store.StateStore` that are the same for every back end.

    A subclass implements :meth:`_read_row`, :meth:`_apply` and :meth:`_server_rows`.
    """

    _decoded_rows: dict[str, tuple[object, object, ServerState]]

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
        """Every stored ledger row, in order of tenant."""
        raise NotImplementedError

    def _delete_row(self, server_id: str, version: int) -> bool:
        """Delete the server row if still at ``version``; whether it was."""
        raise NotImplementedError

    def ledgers(self) -> Iterator[PauseLedger]:
        """Every stored pause ledger, in order of tenant (for copying a store whole).

        An unreadable row raises :class:`~tbes.errors.StoreError` naming it.
        """
        for tenant, row in self._ledger_rows():
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
        if not self._delete_row(server_id, expected_version):
            raise StoreConflictError(
                f"server {server_id!r}: expected version {expected_version}, it changed or is gone"
            )

    def put_many(self, writes: Sequence[Write]) -> tuple[int, ...]:
        """Apply compare-and-swap writes all-or-nothing; return their new versions."""
        return self._apply(check_writes(writes))

    def states(self, tenant: str | None = None) -> Iterator[ServerState]:
        """Every stored state, or those of ``tenant``, in order of server id.

        An unreadable row raises :class:`~tbes.errors.StoreError` naming it and ends the
        iteration; :meth:`entries` goes on past it.
        """
        # Checked here, not in the generator, so a bad tenant raises at the call.
        return self._states(self.entries(tenant))

    @staticmethod
    def _states(entries: Iterator[ServerState | UnreadableRow]) -> Iterator[ServerState]:
        for entry in entries:
            if isinstance(entry, UnreadableRow):
                raise StoreError(entry.error)
            yield entry

    def entries(self, tenant: str | None = None) -> Iterator[ServerState | UnreadableRow]:
        """Like :meth:`states`, but an unreadable row is listed as an :class:`UnreadableRow`.

        For a report that must show every readable row and mark the others; a failing back
        end still raises :class:`~tbes.errors.StoreError`.
        """
        return self._entries(None if tenant is None else check_key("tenant", tenant))

    def _entries(self, tenant: str | None) -> Iterator[ServerState | UnreadableRow]:
        for server_id, row in self._server_rows(tenant):
            try:
                yield load_row(server_id, row).value
            except StoreError as exc:
                yield UnreadableRow(server_id, str(exc))

    def get(self, server_id: str) -> Versioned[ServerState] | None:
        """The stored state of ``server_id`` and its version, or ``None``."""
        row = self._read_row("server", check_key("server_id", server_id))
        if row is None:
            return None
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
        row = self._read_row("ledger", check_key("tenant", tenant))
        if row is None:
            return None
        version = stored_version("ledger", tenant, row[0])
        return Versioned(load_ledger(tenant, row[1], row[2]), version)

    def put(self, state: ServerState, *, expected_version: int | None) -> int:
        """Store ``state`` by compare-and-swap; return its new version."""
        return self.put_many([StateWrite(state, expected_version)])[0]

    def put_ledger(self, ledger: PauseLedger, *, expected_version: int | None) -> int:
        """Store ``ledger`` by compare-and-swap; return its new version."""
        return self.put_many([LedgerWrite(ledger, expected_version)])[0]
