"""The aiosmtpd handler behind a real aiosmtpd Controller on 127.0.0.1, spoken to by smtplib."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import smtplib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

pytest.importorskip("aiosmtpd", reason="the smtp extra (aiosmtpd) is not installed")

from aiosmtpd.controller import Controller

from adapter_support import free_port, offset_minute, on_premises, reply_line, smtp_send
from tbes.adapters.aiosmtpd import EnforcingHandler, peer_subject
from tbes.adapters.config import AdapterConfig
from tbes.catalog import Catalog
from tbes.decision import Action, Decision
from tbes.enforcer import Connection, Enforcer
from tbes.policy import Policy
from tbes.received import MAX_RECEIVED
from tbes.state import ServerState
from tbes.store.memory import MemoryStore

DETECTED = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)
CONFIG = AdapterConfig(
    connectors=(
        on_premises("fabrikam", "fabrikam-ex2007", "127.0.0.2/32"),
        on_premises("northwind", "northwind-ex2019", "127.0.0.3/32"),
    )
)
EX2007_MESSAGE = (
    b"Received: from EXHUB01.fabrikam.local (10.1.2.3) by mail.fabrikam.example\r\n"
    b" (10.1.2.4) with Microsoft SMTP Server id 8.3.83.6; Mon, 3 Mar 2025 10:00:00 +0100\r\n"
    b"Received: from EXMBX01.fabrikam.local ([10.1.2.7]) by EXHUB01.fabrikam.local\r\n"
    b" ([10.1.2.3]) with mapi; Mon, 3 Mar 2025 09:59:59 +0100\r\n"
    b"From: alice@fabrikam.example\r\n"
    b"Subject: status\r\n"
    b"\r\n"
    b"Received: from a.body.line by b with Microsoft SMTP Server id 15.2.9999.1; x\r\n"
)
EX2019_MESSAGE = (
    b"Received: from EX19MBX.northwind.example (10.0.0.20) by EX19EDGE.northwind.example\r\n"
    b" (10.0.0.21) with Microsoft SMTP Server (version=TLS1_2,\r\n"
    b" cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.2.1748.39; Tue, 4 Mar 2025\r\n"
    b" 10:00:00 +0100\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"body\r\n"
)


class _Inbox:
    """The inner delivery handler: keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.original_content)
        return "250 2.0.0 delivered"


class _Broken:
    """A checker whose store is down."""

    def check(self, conn: Connection, received: Sequence[str]) -> Decision:
        raise OSError("store down")


class _Server:
    def __init__(self, checker: Any, config: AdapterConfig = CONFIG) -> None:
        self.inbox = _Inbox()
        self.port = free_port()
        handler = EnforcingHandler(checker, config, inner=self.inbox)
        self.controller = Controller(handler, hostname="127.0.0.1", port=self.port)

    def send(self, message: bytes, source: str) -> str:
        """The final reply line to a transaction from ``source``."""
        sender, rcpt = "alice@fabrikam.example", "bob@receiver.example"
        return smtp_send(self.port, message, source=source, sender=sender, rcpt=rcpt).line


@pytest.fixture
def clock() -> list[dt.datetime]:
    return [DETECTED]


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def server(clock: list[dt.datetime], store: MemoryStore) -> Iterator[_Server]:
    enforcer = Enforcer(
        store, Policy.exchange_online_2026(), Catalog.default(), clock=lambda: clock[0]
    )
    running = _Server(enforcer)
    running.controller.start()
    try:
        yield running
    finally:
        running.controller.stop()


def _stored(store: MemoryStore, server_id: str) -> ServerState:
    versioned = store.get(server_id)
    assert versioned is not None
    return versioned.value


def test_ehlo_advertises_enhanced_status_codes(server: _Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        code, _ = client.ehlo("client.example")
        assert code == 250
        assert client.has_extn("enhancedstatuscodes")
        assert client.has_extn("8bitmime")  # aiosmtpd's own lines stay


def test_up_to_date_exchange_2019_is_delivered(server: _Server, store: MemoryStore) -> None:
    assert server.send(EX2019_MESSAGE, "127.0.0.3") == "250 2.0.0 delivered"
    assert server.inbox.messages == [EX2019_MESSAGE]
    assert (
        str(_stored(store, "northwind-ex2019/ex19edge.northwind.example").build) == "15.2.1748.39"
    )


def test_exchange_2007_goes_through_the_stages(
    server: _Server, store: MemoryStore, clock: list[dt.datetime]
) -> None:
    offset = dt.timedelta(minutes=offset_minute("fabrikam-ex2007/mail.fabrikam.example"))
    # Stage 1 (first detection): reported, delivered.
    assert server.send(EX2007_MESSAGE, "127.0.0.2") == "250 2.0.0 delivered"
    assert _stored(store, "fabrikam-ex2007/mail.fabrikam.example").first_detected == DETECTED
    # Stage 2 at the server's offset minute: throttled 5 min/h.
    clock[0] = DETECTED + dt.timedelta(days=31) + offset
    assert server.send(EX2007_MESSAGE, "127.0.0.2") == reply_line("throttled", 5)
    # Stage 5: the first 5 minutes of its window block, the next 30 throttle, then accept.
    clock[0] = DETECTED + dt.timedelta(days=61) + offset
    assert server.send(EX2007_MESSAGE, "127.0.0.2") == reply_line("blocked", 5)
    clock[0] += dt.timedelta(minutes=5)
    assert server.send(EX2007_MESSAGE, "127.0.0.2") == reply_line("throttled", 30)
    clock[0] += dt.timedelta(minutes=30)
    assert server.send(EX2007_MESSAGE, "127.0.0.2") == "250 2.0.0 delivered"
    # Stage 8: blocked all hour.
    clock[0] = DETECTED + dt.timedelta(days=95, minutes=17)
    assert server.send(EX2007_MESSAGE, "127.0.0.2") == reply_line("blocked", 60)
    assert len(server.inbox.messages) == 2


def test_identity_is_the_peer_address_not_a_header(server: _Server, store: MemoryStore) -> None:
    # The same Exchange 2007 headers from an address no rule names: not enforced, not stored.
    assert server.send(EX2007_MESSAGE, "127.0.0.9") == "250 2.0.0 delivered"
    assert list(store.states()) == []


def test_a_fault_delivers_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    running = _Server(_Broken())
    running.controller.start()
    try:
        with caplog.at_level(logging.WARNING, logger="tbes.adapters.aiosmtpd"):
            assert running.send(EX2007_MESSAGE, "127.0.0.2") == "250 2.0.0 delivered"
    finally:
        running.controller.stop()
    warnings = [r for r in caplog.records if r.name == "tbes.adapters.aiosmtpd"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert running.inbox.messages == [EX2007_MESSAGE]


def test_a_fault_defers_when_failing_closed() -> None:
    closed = AdapterConfig(connectors=CONFIG.connectors, fail_closed=True)
    running = _Server(_Broken(), closed)
    running.controller.start()
    try:
        reply = running.send(EX2007_MESSAGE, "127.0.0.2")
    finally:
        running.controller.stop()
    assert (
        reply == "451 4.3.0 Temporary failure checking the sending Exchange server; try again later"
    )
    assert running.inbox.messages == []


def test_without_inner_handler_accepted_mail_gets_250(
    clock: list[dt.datetime], store: MemoryStore
) -> None:
    enforcer = Enforcer(
        store, Policy.exchange_online_2026(), Catalog.default(), clock=lambda: clock[0]
    )
    running = _Server(enforcer)
    running.controller = Controller(
        EnforcingHandler(enforcer, CONFIG), hostname="127.0.0.1", port=running.port
    )
    running.controller.start()
    try:
        assert running.send(EX2019_MESSAGE, "127.0.0.3") == "250 2.0.0 OK"
    finally:
        running.controller.stop()


class _Transport:
    def __init__(self, cert: object) -> None:
        self.cert = cert

    def get_extra_info(self, name: str) -> object:
        return self.cert if name == "peercert" else None


class _Peer:
    def __init__(self, cert: object) -> None:
        self.transport = _Transport(cert)


def test_tls_subject_is_the_verified_certificate_common_name() -> None:
    cert = {
        "subject": (
            (("countryName", "DE"),),
            (("organizationName", "Fabrikam"),),
            (("commonName", "mail.fabrikam.example"),),
        )
    }
    assert peer_subject(_Peer(cert)) == "mail.fabrikam.example"
    # No certificate asked for or none verified: Python gives an empty dict or None.
    assert peer_subject(_Peer({})) is None
    assert peer_subject(_Peer(None)) is None
    assert peer_subject(object()) is None


class _Recorder:
    """A checker that keeps the Received values it is asked about and accepts."""

    def __init__(self) -> None:
        self.received: list[Sequence[str]] = []

    def check(self, conn: Connection, received: Sequence[str]) -> Decision:
        self.received.append(received)
        return Decision(Action.ACCEPT, None, None, False, False, dt.timedelta(0), None, "ok")


class _Session:
    peer = ("127.0.0.2", 25025)


class _Envelope:
    def __init__(self, content: bytes) -> None:
        self.original_content = content
        self.content = content


def test_a_flood_of_received_headers_is_judged_only_up_to_the_shared_cap() -> None:
    # 800,000 Received lines: only the top MAX_RECEIVED reach the checker (the scan stops
    # there; tests/test_received_cap.py shows nothing past them is examined).
    lines = [
        b"Received: from h%d.example by mx%d.example with ESMTP id 1" % (i, i)
        for i in range(800_000)
    ]
    content = b"\r\n".join([*lines, b"Subject: s", b"", b"body"]) + b"\r\n"
    recorder = _Recorder()
    inbox = _Inbox()
    handler = EnforcingHandler(recorder, CONFIG, inner=inbox)
    reply = asyncio.run(handler.handle_DATA(_Peer(None), _Session(), _Envelope(content)))
    assert reply == "250 2.0.0 delivered"
    [received] = recorder.received
    assert len(received) == MAX_RECEIVED
    assert received[0] == "from h0.example by mx0.example with ESMTP id 1"
    assert (
        received[-1]
        == f"from h{MAX_RECEIVED - 1}.example by mx{MAX_RECEIVED - 1}.example with ESMTP id 1"
    )
