"""End to end: a real Postfix routes the check address to ``tbes responder`` by transport map.

Postfix runs the ``transport_maps`` line of ``docs/self-check.md`` (the check address moved
to the test's receiving domain, a free port instead of 10027). The responder runs as
``tbes responder`` does, in a child process, and replies through an aiosmtpd sink on
loopback standing in for the outgoing MTA. The reply must show the build of the Exchange
hop below the one Postfix added.
"""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiosmtpd", reason="the smtp extra (aiosmtpd) is not installed")

from aiosmtpd.controller import Controller

from adapter_support import RECEIVER_DOMAIN
from integration.postfix import (
    Listener,
    PostfixServer,
    doc_snippet,
    free_port,
    require_root,
    smtp_send,
    wait_for_port,
)

pytestmark = [pytest.mark.service("postfix"), pytest.mark.timeout(120)]

DOC = Path(__file__).resolve().parents[2] / "docs" / "self-check.md"
CHECK = f"tbes-check@{RECEIVER_DOMAIN}"
SENDER = "admin@fabrikam.example"
MESSAGE = (
    b"Received: from EX13.fabrikam.local (10.0.0.5) by mx.fabrikam.example (10.0.0.6)\r\n"
    b" with Microsoft SMTP Server id 15.0.1497.48; Thu, 3 Dec 2026 09:59:00 +0000\r\n"
    b"From: admin@fabrikam.example\r\nTo: " + CHECK.encode() + b"\r\n"
    b"Subject: will we be throttled?\r\nMessage-ID: <q1@fabrikam.example>\r\n\r\nHello.\r\n"
)


class _Sink:
    def __init__(self) -> None:
        self.replies: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.replies.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"


@pytest.fixture
def sink() -> Iterator[tuple[_Sink, int]]:
    handler, port = _Sink(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def test_postfix_routes_the_check_address_to_the_responder(
    sink: tuple[_Sink, int], tmp_path: Path
) -> None:
    require_root()
    handler, sink_port = sink
    responder_port, smtpd_port = free_port(), free_port()
    settings = tmp_path / "responder.toml"
    settings.write_text(
        f'[responder]\naddresses = ["{CHECK}"]\nfrom = "{CHECK}"\n'
        f'own_hosts = ["{RECEIVER_DOMAIN}"]\n',
        encoding="utf-8",
    )
    routing = doc_snippet("responder main.cf", doc=DOC).replace("contoso.example", RECEIVER_DOMAIN)
    assert "[127.0.0.1]:10027" in routing
    main_cf = routing.replace("[127.0.0.1]:10027", f"[127.0.0.1]:{responder_port}")
    argv = [
        sys.executable,
        "-c",
        "from tbes.cli import main; main()",
        "responder",
        "--listen",
        f"127.0.0.1:{responder_port}",
        "--config",
        str(settings),
        "--reply-via",
        f"127.0.0.1:{sink_port}",
        "--db",
        str(tmp_path / "tbes.db"),
    ]
    process = subprocess.Popen(argv)
    try:
        wait_for_port(responder_port)
        master_extra = "smtp      unix  - - n - - smtp\n"
        with PostfixServer(main_cf, [Listener(smtpd_port)], master_extra=master_extra) as postfix:
            outcome = smtp_send(smtpd_port, MESSAGE, source="127.0.0.1", sender=SENDER, rcpt=CHECK)
            assert outcome.code == 250, outcome.line
            deadline = time.monotonic() + 60
            while not handler.replies and time.monotonic() < deadline:
                time.sleep(0.1)
            assert handler.replies, postfix.log()
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
    rcpts, reply = handler.replies[0]
    assert rcpts == [SENDER]
    body = reply.get_body(("plain",))
    assert body is not None
    text = str(body.get_content())
    assert "Build: 15.0.1497.48 (Exchange 2013 CU23 Mar23SU)" in text
    assert "UNSUPPORTED" in text
    # Postfix's own hop (by mx.receiver.example) is on top; the Exchange hop is the sender's.
    assert f"by mx.{RECEIVER_DOMAIN}" in text
    assert "Sender hop: hop 2" in text
