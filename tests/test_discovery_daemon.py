"""The daemon writes out its discovery queue on SIGHUP and on SIGTERM, not only on its timer.

``flush_seconds`` is an hour here, so a discovered server in the store after the reload,
and a second message counted after the stop, can only come from those writes.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from daemon_support import Daemon, config_text, free_port
from milter_client import MtaClient
from tbes.store import SQLiteStore

pytestmark = pytest.mark.timeout(90)

EX2013 = (
    "from EX01.fabrikam.local (10.1.2.3) by mail.fabrikam.example (10.1.2.4) with "
    "Microsoft SMTP Server (TLS) id 15.0.1497.2; Tue, 3 Nov 2026 09:00:00 +0100"
)
HOUR = "\n[discovery]\nflush_seconds = 3600\n"


def _send(port: int) -> bytes:
    with MtaClient(port) as client:
        client.negotiate()
        client.macros(b"C", client_addr="127.0.0.2", client_name="mail.fabrikam.example")
        assert client.connect("mail.fabrikam.example", "127.0.0.2") is None
        assert client.helo("mail.fabrikam.example") is None
        code, _ = client.message([("Received", EX2013), ("Subject", "hello")])
        return code


def _messages(db: Path) -> list[tuple[str, str | None, int]]:
    store = SQLiteStore(db, read_only=True)
    try:
        return [(each.peer_ip, each.verified_name, each.messages) for each in store.discovered()]
    finally:
        store.close()


def test_the_queue_is_written_on_reload_and_on_shutdown(tmp_path: Path) -> None:
    config = tmp_path / "adapters.toml"
    config.write_text(config_text(with_rule=False) + HOUR, encoding="utf-8")
    db = tmp_path / "t.db"
    port = free_port()
    args = [
        "milter",
        "--listen",
        f"inet:{port}@127.0.0.1",
        "--db",
        str(db),
        "--config",
        str(config),
    ]
    with Daemon(tmp_path, args, [port]) as daemon:
        assert _send(port) == b"a"  # unmapped: accepted
        assert _messages(db) == []  # an hour to go before the timer writes
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reloaded")
        assert _messages(db) == [("127.0.0.2", "mail.fabrikam.example", 1)]
        assert _send(port) == b"a"
        assert daemon.stop() == 0
    assert _messages(db) == [("127.0.0.2", "mail.fabrikam.example", 2)]
    assert "Traceback" not in daemon.log()
