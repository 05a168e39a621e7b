"""A store in this process's memory: for tests, examples and single-process tools.

It keeps the same rows as the database stores (row-schema version plus JSON text made by
:mod:`tbes.serde`) rather than the objects themselves, so it behaves exactly like them:
every read decodes afresh, nothing a caller holds aliases the store, and an unreadable row
is refused the same way. One lock makes it safe across threads; it is not shared between
processes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, ClassVar

from tbes.discovery import DiscoveredServer
from tbes.store._discovered import plan
from tbes.store.base import ROW_SCHEMA, RawRow, RowStore
from tbes.store.protocol import Write

__all__ = ["MemoryStore"]


class MemoryStore(RowStore):
    """A :class:`~tbes.store.StateStore` held in a dict; lost when the process ends.

    Its outbox is in memory too: it survives nothing, but it lets one process (a test, the
    demo) run the sender as a daemon does.
    """

    supports_outbox = True

    in_process: ClassVar[bool] = True
    """Calls return without waiting on anything outside the process (see
    :class:`~tbes.adapters.postfix_policy.PolicyLimits`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # table -> key -> (version, schema, data); servers also remember their tenant.
        self._rows: dict[str, dict[str, RawRow]] = {"server": {}, "ledger": {}}
        self._tenants: dict[str, str] = {}
        self._discovered: dict[str, tuple[int, str]] = {}  # peer -> (last seen in µs, JSON)
        # The outbox: event id -> (sequence, at, schema, data), in insertion order, and
        # (event id, receiver) -> [attempts, due, delivered] (see RowStore._claim_rows).
        self._outbox: dict[str, tuple[int, float, int, str]] = {}
        self._deliveries: dict[tuple[str, str], list[Any]] = {}
        self._sequence = 0

    def _read_row(self, table: str, key: str) -> RawRow | None:
        with self._lock:
            return self._rows[table].get(key)

    def _apply(self, writes: tuple[Write, ...]) -> tuple[int, ...]:
        with self._lock:
            planned = self._plan(writes, lambda table, key: self._rows[table].get(key))
            for row in planned:  # under the lock: no order to keep
                if row.table == "outbox":
                    if row.key not in self._outbox:
                        self._sequence += 1
                        at = row.at if row.at is not None else 0.0
                        self._outbox[row.key] = (self._sequence, at, ROW_SCHEMA, row.data)
                    continue
                self._rows[row.table][row.key] = (row.version, ROW_SCHEMA, row.data)
                if row.table == "server":
                    self._tenants[row.key] = row.tenant
        return tuple(row.version for row in planned)

    def _server_rows(self, tenant: str | None) -> Iterator[tuple[str, RawRow]]:
        with self._lock:
            rows = sorted(
                (key, row)
                for key, row in self._rows["server"].items()
                if tenant is None or self._tenants.get(key) == tenant
            )
        yield from rows

    def _ledger_rows(self) -> list[tuple[str, RawRow]]:
        with self._lock:
            return sorted(self._rows["ledger"].items())

    def _delete_row(self, server_id: str, version: int) -> bool:
        with self._lock:
            row = self._rows["server"].get(server_id)
            if row is None or row[0] != version:
                return False
            del self._rows["server"][server_id]
            return True

    def _record_discovered(self, records: tuple[DiscoveredServer, ...], max_servers: int) -> None:
        with self._lock:
            stored = self._discovered
            rows = plan(records, lambda peer: stored[peer][1] if peer in stored else None)
            for peer, last_seen, data in rows:
                self._discovered[peer] = (last_seen, data)
            excess = len(self._discovered) - max_servers
            if excess > 0:
                oldest = sorted(
                    self._discovered, key=lambda peer: (self._discovered[peer][0], peer)
                )
                for peer in oldest[:excess]:
                    del self._discovered[peer]

    def _discovered_rows(self) -> list[tuple[object, object]]:
        with self._lock:
            return [(peer, data) for peer, (_, data) in self._discovered.items()]

    def _claim_rows(
        self, receiver: str, now: float, until: float, limit: int
    ) -> list[tuple[str, object, object, int]]:
        claimed: list[tuple[str, object, object, int]] = []
        with self._lock:
            for event_id, (_, _, schema, data) in self._outbox.items():
                if len(claimed) >= limit:
                    break
                record = self._deliveries.get((event_id, receiver))
                if record is None:
                    record = self._deliveries[(event_id, receiver)] = [0, None, None]
                elif record[2] is not None or record[1] > now:
                    continue
                record[0] += 1
                record[1] = until
                claimed.append((event_id, schema, data, record[0]))
        return claimed

    def _mark_row(
        self, receiver: str, event_id: str, delivered: float | None, due: float | None
    ) -> None:
        with self._lock:
            record = self._deliveries.get((event_id, receiver))
            if record is None or record[2] is not None:
                return  # never claimed here, or delivered already: nothing to record
            record[1], record[2] = due, delivered

    def _prune_rows(
        self, delivered_before: float, expire_before: float, receivers: tuple[str, ...]
    ) -> int:
        with self._lock:
            gone = [
                event_id
                for event_id, (_, at, _, _) in self._outbox.items()
                if at < expire_before
                or (
                    at < delivered_before
                    and all(
                        (record := self._deliveries.get((event_id, name))) is not None
                        and record[2] is not None
                        for name in receivers
                    )
                )
            ]
            for event_id in gone:
                del self._outbox[event_id]
            gone_set = set(gone)
            for key in [key for key in self._deliveries if key[0] in gone_set]:
                del self._deliveries[key]
        return len(gone)
