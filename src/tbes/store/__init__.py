"""Where enforcement state lives: the :class:`StateStore` protocol and its three stores.

:class:`MemoryStore` for tests and single processes, :class:`SQLiteStore` for the MTAs of
one host, :class:`PostgresStore` for a cluster sharing one database. All three are built on
:class:`RowStore` (:mod:`tbes.store.base`), keep the same versioned JSON rows and pass the
same contract tests; a custom store built on it behaves alike. psycopg is imported only
when a :class:`PostgresStore` is opened, so this package imports without it.
"""

from tbes.store._discovery_queue import DiscoveryQueue
from tbes.store.base import RowStore, UnreadableRow
from tbes.store.memory import MemoryStore
from tbes.store.postgres import PostgresStore
from tbes.store.protocol import (
    EventWrite,
    LedgerWrite,
    Pending,
    StateStore,
    StateWrite,
    Versioned,
    Write,
)
from tbes.store.sqlite import SQLiteStore

__all__ = [
    "DiscoveryQueue",
    "EventWrite",
    "LedgerWrite",
    "MemoryStore",
    "Pending",
    "PostgresStore",
    "RowStore",
    "SQLiteStore",
    "StateStore",
    "StateWrite",
    "UnreadableRow",
    "Versioned",
    "Write",
]
