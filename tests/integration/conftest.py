"""Fixtures for the integration tests: a real PostgreSQL server, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from integration.pg import PostgresServer, acquire, release


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server; stopped at the end of the session, pass or fail."""
    server = acquire()
    yield server
    release()
