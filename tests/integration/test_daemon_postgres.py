"""``--db postgresql://…``: a daemon keeps its state in PostgreSQL as well as in SQLite.

A ``tbes policy`` daemon in a child process, given a ``postgresql://`` URL of the test
server, answers from the state another process stored there.
"""

from __future__ import annotations

import socket
import urllib.parse
from pathlib import Path

import pytest

from adapter_support import on_premises
from daemon_support import (
    BLOCK_PREFIX,
    EX2007,
    T0,
    Daemon,
    ask_policy,
    config_text,
    free_port,
)
from integration.pg import PostgresServer
from tbes.adapters.config import AdapterConfig, make_enforcer
from tbes.enforcer import Connection
from tbes.policy import ConnectorKind
from tbes.store import PostgresStore

pytestmark = [pytest.mark.service("postgresql"), pytest.mark.timeout(120)]


def _url(dsn: str) -> str:
    """The key=value DSN of the test server as a postgresql:// URL."""
    parts = dict(item.split("=", 1) for item in dsn.split())
    query = urllib.parse.urlencode({"options": parts["options"], "connect_timeout": "5"})
    return f"postgresql://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}?{query}"


def test_tbes_policy_answers_from_state_stored_in_postgresql(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    dsn = pg_server.fresh_dsn()
    seeding = AdapterConfig(
        connectors=(on_premises("fabrikam", "fabrikam-edge", "127.0.0.0/8"),), fixed_time=T0
    )
    store = PostgresStore(dsn)
    try:
        conn = Connection("fabrikam-edge", "fabrikam", ConnectorKind.ON_PREMISES, "127.0.0.2")
        make_enforcer(seeding, store).check(conn, [EX2007])
    finally:
        store.close()
    config = tmp_path / "adapters.toml"
    config.write_text(config_text(with_rule=True), encoding="utf-8")
    port = free_port()
    args = ["policy", "--listen", f"127.0.0.1:{port}", "--db", _url(dsn), "--config", str(config)]
    with Daemon(tmp_path, args, [port]) as daemon:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert ask_policy(sock).startswith(BLOCK_PREFIX)
        assert daemon.stop() == 0
    assert "fault=-" in daemon.log()
    assert "postgres@" not in daemon.log()
