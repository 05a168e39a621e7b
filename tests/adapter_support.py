"""What the adapter tests share: connector rules, canned decisions, expected replies, SMTP.

The milter, aiosmtpd and Postfix policy tests (unit and end-to-end) all map loopback or
documentation addresses to servers, hand adapters a recording checker, and compare what a
sender sees with the SPEC's reply lines. Expected texts and the minute a server is throttled
are worked out here from the SPEC (section 7), never taken from tbes, so that one copy of
each serves every adapter. :func:`smtp_send` speaks SMTP from a chosen loopback address
(Linux routes all of 127.0.0.0/8 to ``lo``), so one listener sees several "servers".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import smtplib
import socket
import threading
from collections.abc import Sequence

import attrs

from tbes.adapters.config import ConnectorRule
from tbes.decision import Action, Decision
from tbes.enforcer import Connection
from tbes.policy import ConnectorKind, SmtpReply
from tbes.stages import DEFAULT_STAGE_TABLE

__all__ = [
    "RECEIVER_DOMAIN",
    "Recorder",
    "SmtpOutcome",
    "decision",
    "enforcement_text",
    "free_port",
    "offset_minute",
    "on_premises",
    "reply_line",
    "smtp_send",
]

RECEIVER_DOMAIN = "receiver.example"
"""The domain the receiving MTA of the tests accepts mail for."""


def offset_minute(server_id: str) -> int:
    """The server's fixed place in the UTC hour (SPEC 7)."""
    return int.from_bytes(hashlib.sha256(server_id.encode()).digest()[:8], "big") % 60


def enforcement_text(verb: str, minutes: int) -> str:
    """The text of a throttle (``verb="throttled"``) or block reply, as SPEC 7 words it."""
    return (
        f"Connecting Exchange server version is out-of-date; connection to Exchange Online "
        f"{verb} for {minutes} mins/hr. For more information see "
        "https://aka.ms/BlockUnsafeExchange."
    )


def reply_line(verb: str, minutes: int) -> str:
    """The whole reply line: 450 4.7.230 when throttled, 550 5.7.230 when blocked."""
    code = "450 4.7.230" if verb == "throttled" else "550 5.7.230"
    return f"{code} {enforcement_text(verb, minutes)}"


def on_premises(tenant: str, server_id: str, network: str) -> ConnectorRule:
    """An on-premises connector rule named ``server_id`` (its server's id) for one ``network``."""
    return ConnectorRule(
        kind=ConnectorKind.ON_PREMISES, tenant=tenant, name=server_id, networks=(network,)
    )


def decision(action: Action, reply: SmtpReply | None = None, stage: int = 1) -> Decision:
    """A canned decision for a checker to answer with: ``action`` at stage ``stage``."""
    return Decision(
        action=action,
        stage=DEFAULT_STAGE_TABLE.stages[stage - 1],
        reply=reply,
        report=True,
        paused=False,
        elapsed=dt.timedelta(days=31),
        next_change=None,
        reason="test",
    )


class Recorder:
    """A checker that records its calls and answers (or raises) as told."""

    def __init__(self, answer: Decision | Exception) -> None:
        self.answer = answer
        self.calls: list[tuple[Connection, list[str]]] = []

    def check(self, conn: Connection, received: Sequence[str]) -> Decision:
        """Record the call; return the answer, or raise it if it is an exception."""
        self.calls.append((conn, list(received)))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.frozen
class SmtpOutcome:
    """How an SMTP transaction ended: the command that got the final reply, and the reply."""

    command: str
    code: int
    text: str

    @property
    def line(self) -> str:
        """The reply as one line: ``"450 4.7.230 ..."``."""
        return f"{self.code} {self.text}"


def smtp_send(
    port: int,
    message: bytes,
    *,
    source: str,
    sender: str = "sender@client.example",
    rcpt: str = f"postmaster@{RECEIVER_DOMAIN}",
) -> SmtpOutcome:
    """Send ``message`` from loopback address ``source``; stop at the first non-2xx/3xx reply."""
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30) as client:
        client.ehlo("client.example")
        code, text = client.mail(sender)
        if code >= 400:
            return SmtpOutcome("MAIL", code, text.decode())
        code, text = client.rcpt(rcpt)
        if code >= 400:
            return SmtpOutcome("RCPT", code, text.decode())
        try:
            code, text = client.data(message)
        except smtplib.SMTPDataError as error:
            code, text = error.smtp_code, _as_bytes(error.smtp_error)
        return SmtpOutcome("DATA", code, text.decode())


def _as_bytes(text: bytes | str) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


class WhereChecker:
    """A checker over ``store`` that accepts, noting the thread each check runs on and the
    connection it was asked for (where an adapter runs its checks: on its event loop for a
    store in the process, in its threads otherwise)."""

    def __init__(self, store: object) -> None:
        self.store = store
        self.threads: list[str] = []
        self.conns: list[Connection] = []

    def check(self, conn: Connection, received: Sequence[str]) -> Decision:
        """Note the thread and the connection; accept."""
        self.threads.append(threading.current_thread().name)
        self.conns.append(conn)
        return decision(Action.ACCEPT, None, 1)


def where_cases(memory: object) -> list[tuple[object, bool | None, bool]]:
    """``(store, inline, on_loop)``: where checks run for each store and setting."""
    return [
        (memory, None, True),  # a store in the process: no thread hand-off
        (object(), None, False),  # a store that may wait on the network: the threads
        (memory, False, False),  # chosen explicitly, either way
        (object(), True, True),
    ]
