"""A tbes daemon (``tbes policy``, ``tbes milter``, ``tbes serve``) in a child process.

Started through the ``tbes`` entry point exactly as an administrator or a systemd unit
runs it; the test sends it signals, talks to it over loopback and reads what it logged.
"""

from __future__ import annotations

import datetime as dt
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from adapter_support import on_premises
from tbes.adapters.config import AdapterConfig, make_enforcer
from tbes.enforcer import Connection
from tbes.policy import ConnectorKind
from tbes.store.sqlite import SQLiteStore

TBES = "import sys; from tbes.cli import main; sys.argv[0] = 'tbes'; main()"

T0 = dt.datetime(2025, 11, 3, 8, 0, tzinfo=dt.UTC)
# Stage 8 (every connection blocked) begins 90 days into an episode.
BLOCKED_AT = T0 + dt.timedelta(days=200)
EX2007 = (
    "from EXHUB01.fabrikam.local (10.1.2.3) by mail.fabrikam.example (10.1.2.4) with "
    "Microsoft SMTP Server id 8.3.83.6; Mon, 3 Nov 2025 09:00:00 +0100"
)
BLOCK_PREFIX = b"action=550 5.7.230 "


def config_text(*, with_rule: bool, fixed_time: dt.datetime = BLOCKED_AT) -> str:
    """An adapter configuration; ``with_rule`` names 127.0.0.0/8 as connector fabrikam-edge.

    The connector keeps one state (``identity = "connector"``): the daemon tests are about
    the daemons, and the state they seed is the connector's.
    """
    text = f'tenant = "contoso"\n\n[testing]\nfixed_time = {fixed_time.isoformat()}\n'
    if with_rule:
        text = (
            'tenant = "contoso"\n\n[[connector]]\nname = "fabrikam-edge"\nkind = "on_premises"\n'
            'tenant = "fabrikam"\nnetworks = ["127.0.0.0/8"]\nidentity = "connector"\n\n'
            f"[testing]\nfixed_time = {fixed_time.isoformat()}\n"
        )
    return text


def seed_exchange_2007(db: Path) -> None:
    """Store what a milter saw at T0: fabrikam-edge sends as Exchange 2007."""
    config = AdapterConfig(
        connectors=(on_premises("fabrikam", "fabrikam-edge", "127.0.0.0/8"),), fixed_time=T0
    )
    store = SQLiteStore(db)
    try:
        conn = Connection("fabrikam-edge", "fabrikam", ConnectorKind.ON_PREMISES, "127.0.0.2")
        make_enforcer(config, store).check(conn, [EX2007])
    finally:
        store.close()


def break_row(db: Path, server_id: str) -> None:
    """Make the stored row of ``server_id`` unreadable (a store fault when read)."""
    with sqlite3.connect(db) as handle:
        handle.execute("UPDATE tbes_servers SET data = '{' WHERE server_id = ?", (server_id,))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


POLICY_REQUEST = b"request=smtpd_access_policy\nclient_address=127.0.0.2\nclient_name=unknown\n\n"


def ask_policy(sock: socket.socket, request: bytes = POLICY_REQUEST) -> bytes:
    """Send one policy request on ``sock`` and return the whole answer."""
    sock.sendall(request)
    answer = b""
    while not answer.endswith(b"\n\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {answer!r}")
        answer += chunk
    return answer


class Daemon:
    """``tbes ARGS`` in a child process, its stdout and stderr in files; a context manager."""

    def __init__(self, tmp: Path, args: Sequence[str], ports: Sequence[int] = ()) -> None:
        self.args = list(args)
        self.ports = tuple(ports)
        self.out = tmp / f"daemon-{len(list(tmp.glob('daemon-*')))}.err"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        with self.out.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-c", TBES, *self.args], stdout=err, stderr=err
            )
        return self.process

    def __enter__(self) -> Daemon:
        process = self.process or self.start()
        deadline = time.monotonic() + 20
        for port in self.ports:
            while True:
                assert process.poll() is None, f"tbes exited early: {self.log()}"
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"nothing listens on {port}: {self.log()}"
                    time.sleep(0.05)
        return self

    def log(self) -> str:
        return self.out.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_for_log(self, text: str, *, count: int = 1, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            assert time.monotonic() < deadline, f"{text!r} not logged: {self.log()}"
            time.sleep(0.05)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM; the exit code (the test fails if it takes longer than ``timeout``)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
