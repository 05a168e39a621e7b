"""Where enforcement state lives: the :class:`StateStore` protocol and its three stores.

:class:`MemoryStore` for tests and single processes, :class:`SQLiteStore` for the MTAs of
one host, :class:`PostgresStore` for a cluster sharing one database. All three keep the
same versioned JSON rows and pass the same contract tests. psycopg is imported only when a
:class:`PostgresStore` is opened, so this package imports without it.
"""

from tbes.store.memory import MemoryStore
from tbes.store.postgres import PostgresStore
from tbes.store.protocol import (
    LedgerWrite,
    StateStore,
    StateWrite,
    UnreadableRow,
    Versioned,
    Write,
)
from tbes.store.sqlite import SQLiteStore

__all__ = [
    "LedgerWrite",
    "MemoryStore",
    "PostgresStore",
    "SQLiteStore",
    "StateStore",
    "StateWrite",
    "UnreadableRow",
    "Versioned",
    "Write",
]
