"""End to end: a real Postfix asking the tbes policy service at RCPT TO.

Postfix runs the policy settings of ``docs/postfix.md`` verbatim (a free port instead of
9997). The policy service runs in this process on an asyncio loop in a thread, over a
SQLite store and an enforcer whose clock the test moves. The state it decides on is what
the milter would have recorded: an Exchange 2007 server behind connector
``fabrikam-ex2007``, ``fabrikam-ex2007/mail.fabrikam.example``, first observed at ``T0`` and
observed again whenever the test moves the clock (it keeps sending, so it stays *active*:
at RCPT, with no headers, tbes refuses only what every active server of the connector
would be refused). Postfix puts
its usual ``<recipient>: Recipient address rejected:`` before a policy's reply text; code
and enhanced code are the decision's own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter_support import enforcement_text, offset_minute, on_premises
from integration.postfix import (
    EX2007_HOP,
    RCPT,
    T0,
    Listener,
    PostfixServer,
    doc_snippet,
    free_port,
    require_root,
    smtp_send,
    with_port,
)
from tbes.adapters.config import AdapterConfig
from tbes.adapters.postfix_policy import serve_policy
from tbes.catalog import Catalog
from tbes.enforcer import Enforcer
from tbes.policy import Policy
from tbes.store.sqlite import SQLiteStore

pytestmark = [pytest.mark.service("postfix"), pytest.mark.timeout(120)]

MESSAGE = b"Subject: figures\r\nFrom: alice@fabrikam.example\r\n\r\nHello.\r\n"


def _config(*, fail_closed: bool) -> AdapterConfig:
    return AdapterConfig(
        connectors=(
            on_premises("fabrikam", "fabrikam-ex2007", "127.0.0.2/32"),
            on_premises("litware", "litware-broken-row", "127.0.0.5/32"),
        ),
        fail_closed=fail_closed,
    )


def _rejected(code: str, text: str) -> str:
    return f"{code} <{RCPT}>: Recipient address rejected: {text}"


class _PolicyThread:
    """``serve_policy`` on its own event loop in a thread, on ``port``."""

    def __init__(self, enforcer: Enforcer, config: AdapterConfig, port: int) -> None:
        self.port = port
        self._args = (enforcer, config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> _PolicyThread:
        self._thread.start()
        start = serve_policy(*self._args, port=self.port)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class _Site:
    def __init__(
        self, postfix: PostfixServer, db: Path, clock: list[dt.datetime], enforcer: Enforcer
    ) -> None:
        self.postfix = postfix
        self.db = db
        self.clock = clock
        self.enforcer = enforcer

    def send(self, port: int, source: str) -> str:
        outcome = smtp_send(port, MESSAGE, source=source, rcpt=RCPT)
        return f"{outcome.command} {outcome.line}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Site]:
    require_root()
    work = tmp_path_factory.mktemp("policy")
    db = work / "tbes.db"
    clock = [T0]
    store = SQLiteStore(db)
    catalog, policy = Catalog.default(), Policy.exchange_online_2026()
    open_port, closed_port, dead_port = free_port(), free_port(), free_port()
    documented = doc_snippet("main.cf policy")
    main_cf = with_port(documented, 9997, open_port)
    # The same documented restriction list under other names, for two more listeners.
    main_cf += with_port(documented, 9997, closed_port).replace(
        "smtpd_recipient_restrictions", "tbes_fail_closed_restrictions"
    )
    main_cf += with_port(documented, 9997, dead_port).replace(
        "smtpd_recipient_restrictions", "tbes_dead_service_restrictions"
    )
    listeners = [
        Listener(free_port()),
        Listener(
            free_port(), (("smtpd_recipient_restrictions", "$tbes_fail_closed_restrictions"),)
        ),
        Listener(
            free_port(), (("smtpd_recipient_restrictions", "$tbes_dead_service_restrictions"),)
        ),
    ]
    fail_open = Enforcer(store, policy, catalog, clock=lambda: clock[0])
    fail_closed = Enforcer(store, policy, catalog, clock=lambda: clock[0], fail_closed=True)
    # What the milter would have recorded on the first Exchange 2007 message.
    conn = _config(fail_closed=False).connection(
        peer_ip="127.0.0.2", peer_host=None, tls_subject=None
    )
    fail_open.check(conn, [EX2007_HOP])
    with (
        _PolicyThread(fail_open, _config(fail_closed=False), open_port),
        _PolicyThread(fail_closed, _config(fail_closed=True), closed_port),
        PostfixServer(main_cf, listeners) as postfix,
    ):
        yield _Site(postfix, db, clock, fail_open)
    store.close()


def test_a_client_without_stored_state_is_accepted(site: _Site) -> None:
    site.clock[0] = T0 + dt.timedelta(days=95)
    assert site.send(site.postfix.ports[0], "127.0.0.9").startswith("DATA 250 ")


def _seen(site: _Site) -> None:
    """The milter records one more message of the 2007 server at the clock's instant."""
    conn = _config(fail_closed=False).connection(
        peer_ip="127.0.0.2", peer_host=None, tls_subject=None
    )
    site.enforcer.check(conn, [EX2007_HOP])


def test_stored_state_throttles_and_blocks_at_rcpt(site: _Site) -> None:
    at_offset = dt.timedelta(minutes=offset_minute("fabrikam-ex2007/mail.fabrikam.example"))
    site.clock[0] = T0 + dt.timedelta(days=1)  # stage 1: report only
    assert site.send(site.postfix.ports[0], "127.0.0.2").startswith("DATA 250 ")
    site.clock[0] = T0 + dt.timedelta(days=31) + at_offset  # stage 2, in the window
    _seen(site)
    assert site.send(site.postfix.ports[0], "127.0.0.2") == "RCPT " + _rejected(
        "450 4.7.230", enforcement_text("throttled", 5)
    )
    site.clock[0] += dt.timedelta(minutes=10)  # stage 2, outside the 5-minute window
    assert site.send(site.postfix.ports[0], "127.0.0.2").startswith("DATA 250 ")
    site.clock[0] = T0 + dt.timedelta(days=95)  # stage 8: blocked all hour
    _seen(site)
    assert site.send(site.postfix.ports[0], "127.0.0.2") == "RCPT " + _rejected(
        "550 5.7.230", enforcement_text("blocked", 60)
    )


def test_a_store_fault_answers_dunno_or_defers_as_configured(site: _Site) -> None:
    conn = _config(fail_closed=False).connection(
        peer_ip="127.0.0.5", peer_host=None, tls_subject=None
    )
    site.clock[0] = T0
    site.enforcer.check(conn, [EX2007_HOP])  # recorded as the milter would, then broken
    with sqlite3.connect(site.db) as db:
        db.execute(
            "UPDATE tbes_servers SET data = '{' "
            "WHERE server_id = 'litware-broken-row/mail.fabrikam.example'"
        )
    site.clock[0] = T0 + dt.timedelta(days=95)
    assert site.send(site.postfix.ports[0], "127.0.0.5").startswith("DATA 250 ")
    assert site.send(site.postfix.ports[1], "127.0.0.5") == "RCPT " + _rejected(
        "451 4.3.0", "Temporary failure checking the sending Exchange server; try again later"
    )


def test_postfix_carries_on_when_the_policy_service_is_down(site: _Site) -> None:
    site.clock[0] = T0 + dt.timedelta(days=95)
    # Nothing listens on this listener's policy port: default_action=DUNNO lets mail in.
    assert site.send(site.postfix.ports[2], "127.0.0.2").startswith("DATA 250 ")
