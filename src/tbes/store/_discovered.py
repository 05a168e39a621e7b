"""The discovered-servers table as every store keeps it: rows, the merge of a batch, the bound.

Decision: a row is ``(peer, last_seen, data)``: the peer address as key, ``last_seen`` in
whole microseconds since the Unix epoch (an integer, so that the oldest row is found by an
index in SQL), and the :func:`tbes.discovery.to_json` text. The rows of a batch are merged
here with the stored ones (:func:`plan`) inside the back end's transaction, so all stores
merge alike; a stored row that cannot be read is replaced by the new record, since the
table is a report of what was seen, not enforcement state. Eviction is the same order in
every store: ``last_seen``, then the peer text in binary order.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping

from tbes.discovery import DiscoveredServer, from_json, merge, to_json
from tbes.errors import InvalidValueError, StoreError

__all__ = ["DiscoveredRow", "check_batch", "decode", "micros", "plan"]

_log = logging.getLogger(__name__)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)

DiscoveredRow = tuple[str, int, str]
"""A row to write: ``(peer, last_seen in microseconds since the epoch, JSON)``."""


def micros(at: dt.datetime) -> int:
    """``at`` (aware) as whole microseconds since the Unix epoch."""
    return (at - _EPOCH) // _MICROSECOND


def plan(
    records: Iterable[DiscoveredServer], read: Callable[[str], str | None]
) -> list[DiscoveredRow]:
    """The rows to write for ``records`` merged with the stored ones, in peer order.

    ``read(peer)`` returns the stored JSON text of ``peer`` (inside the caller's
    transaction) or ``None``. Records of one peer in the batch are merged first.
    """
    batch: dict[str, DiscoveredServer] = {}
    for record in records:
        batch[record.peer_ip] = merge(batch.get(record.peer_ip), record)
    rows = []
    for peer in sorted(batch):
        stored = read(peer)
        old = None
        if stored is not None:
            try:
                old = from_json(stored)
            except InvalidValueError as error:
                _log.warning("tbes: discovered server %s was unreadable, replaced: %s", peer, error)
        if old is not None and old.peer_ip != peer:
            old = None  # a row under another key than its own: not this peer's history
        new = merge(old, batch[peer])
        rows.append((peer, micros(new.last_seen), to_json(new)))
    return rows


def decode(peer: object, data: object) -> DiscoveredServer:
    """The record stored under ``peer``; StoreError naming it if it cannot be read."""
    try:
        if not isinstance(data, str):
            raise InvalidValueError(f"data is no text but {type(data).__name__}")
        record = from_json(data)
    except InvalidValueError as error:
        raise StoreError(f"discovered server {peer!r:.80} cannot be read: {error}") from None
    if record.peer_ip != peer:
        raise StoreError(f"discovered server {peer!r:.80} holds the record of {record.peer_ip}")
    return record


def check_batch(records: object, max_servers: object) -> tuple[DiscoveredServer, ...]:
    """``records`` as a tuple, checked, with ``max_servers``; InvalidValueError naming either."""
    if type(max_servers) is not int or max_servers < 1:
        raise InvalidValueError(f"max_servers must be an int >= 1, got {max_servers!r:.80}")
    if isinstance(records, str | bytes | Mapping) or not isinstance(records, Iterable):
        raise InvalidValueError(f"records must be DiscoveredServer values, got {records!r:.80}")
    batch = tuple(records)
    for record in batch:
        if not isinstance(record, DiscoveredServer):
            raise InvalidValueError(f"records must be DiscoveredServer values, got {record!r:.80}")
    return batch
