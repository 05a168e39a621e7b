"""Helpers shared by the test modules: paths of the committed test data and the vector loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tbes.store import MemoryStore, PostgresStore, SQLiteStore, StateStore

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS = REPO_ROOT / "tests"
VECTORS = TESTS / "vectors"
DATA = TESTS / "data"
# Microsoft's build list (MIT, see ExchangeBuildNumbers.LICENSE.txt beside it): the source of
# the packaged catalog and the independent reference the catalog tests read by hand.
BUILD_LIST_CSV = DATA / "ExchangeBuildNumbers.csv"


def load_vectors(name: str) -> Any:
    """Load a JSON vector file from tests/vectors."""
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


STORE_KINDS = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.service("postgresql")),
]
"""Every kind of store, as fixture params; PostgreSQL's needs the service."""


def make_store(request: pytest.FixtureRequest, kind: str, path: Path) -> StateStore:
    """A new, empty store of ``kind`` (SQLite at ``path``, PostgreSQL a fresh database)."""
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(path)
    return PostgresStore(request.getfixturevalue("pg_server").fresh_dsn())
