"""The self-check responder behind a real aiosmtpd Controller, replying through a real sink.

Both ends are aiosmtpd servers on 127.0.0.1: the responder under test, and a sink standing
in for the outgoing MTA that records every reply (envelope and message).
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
import smtplib
import socket
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

from adapter_support import free_port
from tbes.adapters.listen import ListenAddress
from tbes.adapters.responder import (
    ResponderConfig,
    ResponderHandler,
    load_responder_config,
    parse_responder_config,
)
from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.errors import AdapterConfigError, StoreError
from tbes.policy import Policy
from tbes.state import ServerState
from tbes.store.counters import MemoryCounters, SQLiteCounters
from tbes.store.sqlite import SQLiteStore
from tbes.version import ExchangeBuild

NOW = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)
CHECK = "tbes-check@contoso.example"
SENDER = "admin@fabrikam.example"
EX2013 = (
    "Received: from mx.fabrikam.example (mx.fabrikam.example [198.51.100.7]) by\r\n"
    " in.contoso.example with ESMTPS; Thu, 3 Dec 2026 09:59:30 +0000\r\n"
    "Received: from EX13.fabrikam.local (10.0.0.5) by mx.fabrikam.example (10.0.0.6)\r\n"
    " with Microsoft SMTP Server id 15.0.1497.48; Thu, 3 Dec 2026 09:59:00 +0000\r\n"
)
EXSE = (
    "Received: from mx.fabrikam.example (mx.fabrikam.example [198.51.100.7]) by\r\n"
    " in.contoso.example with ESMTPS; Thu, 3 Dec 2026 09:59:30 +0000\r\n"
    "Received: from EXSE.fabrikam.local (10.0.0.5) by mx.fabrikam.example (10.0.0.6)\r\n"
    " with Microsoft SMTP Server id 15.2.2562.45; Thu, 3 Dec 2026 09:59:00 +0000\r\n"
)


def message(received: str = EX2013, *, extra: str = "", subject: str = "check") -> bytes:
    return (
        f"{received}From: {SENDER}\r\nTo: {CHECK}\r\nSubject: {subject}\r\n"
        f"Message-ID: <m1@fabrikam.example>\r\nReferences: <m0@fabrikam.example>\r\n"
        f"{extra}\r\nhello\r\n"
    ).encode("utf-8", "surrogateescape")


class Sink:
    """The outgoing MTA: keeps (MAIL FROM, RCPT TOs, parsed message) of each reply."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 OK"


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    handler = Sink()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def config(**changes: Any) -> ResponderConfig:
    settings: dict[str, Any] = {
        "addresses": frozenset({CHECK}),
        "sender": CHECK,
        "policy": Policy.exchange_online_2026(),
        "catalog": Catalog.default(),
        "own_hosts": ("contoso.example",),
        **changes,
    }
    return ResponderConfig(**settings)


class Responder:
    """A ResponderHandler behind an aiosmtpd Controller on a free port."""

    def __init__(self, sink_port: int, settings: ResponderConfig, counters: Any = None) -> None:
        self.port = free_port()
        handler = ResponderHandler(
            settings,
            counters if counters is not None else MemoryCounters(),
            ListenAddress(host="127.0.0.1", port=sink_port),
            clock=lambda: NOW,
        )
        self._controller = Controller(
            handler,
            hostname="127.0.0.1",
            port=self.port,
            data_size_limit=settings.max_size,
            enable_SMTPUTF8=False,
        )

    def __enter__(self) -> Responder:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    def send(self, content: bytes, *, sender: str = SENDER, rcpt: str = CHECK) -> None:
        send(self.port, content, sender=sender, rcpt=rcpt)


def send(port: int, content: bytes, *, sender: str = SENDER, rcpt: str = CHECK) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(sender, [rcpt], content)


def text_of(reply: EmailMessage) -> str:
    part = reply.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(reply: EmailMessage) -> str:
    part = reply.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def test_an_exchange_2013_hop_gets_its_build_release_verdict_and_dates(
    sink: tuple[Sink, int],
) -> None:
    handler, port = sink
    with Responder(port, config()) as responder:
        responder.send(message())
    assert len(handler.received) == 1
    mail_from, rcpts, reply = handler.received[0]
    assert mail_from == "<>"  # RFC 3834 3.3: a null return path, so nothing bounces back
    assert rcpts == [SENDER]
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["In-Reply-To"] == "<m1@fabrikam.example>"
    assert reply["References"] == "<m0@fabrikam.example> <m1@fabrikam.example>"
    assert reply["Subject"].startswith("Auto: ")
    assert reply["From"] == CHECK
    text = text_of(reply)
    assert "15.0.1497.48" in text
    assert "Exchange 2013 CU23 Mar23SU" in text
    assert "UNSUPPORTED" in text
    # Microsoft's timeline: throttling from day 30, blocking from day 60, full block from 90.
    for days in (30, 60, 90):
        assert (NOW + dt.timedelta(days=days)).date().isoformat() in text
    assert "hop 2" in text  # the first hop is the receiving side's own
    marked = [line for line in text.splitlines() if line.endswith("<- sender hop")]
    assert len(marked) == 1
    assert marked[0].startswith("  2. from ex13.fabrikam.local")
    assert "Exchange SE" in text  # the upgrade recommended
    assert "SMTP reply tbes would give now: 250" in text  # day 1: reported only
    assert "connector" in text  # the caveat
    assert "UNSUPPORTED" in html_of(reply)


def test_an_exchange_se_hop_is_not_enforced(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    with Responder(port, config()) as responder:
        responder.send(message(EXSE))
    text = text_of(handler.received[0][2])
    assert "15.2.2562.45" in text
    assert "COMPLIANT" in text
    assert "not enforced" in text


def test_a_message_without_an_exchange_build_is_not_enforced(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    received = "Received: from a.example (a.example [192.0.2.1]) by b.example with ESMTP\r\n"
    with Responder(port, config()) as responder:
        responder.send(message(received))
    assert "not enforced" in text_of(handler.received[0][2])


@pytest.mark.parametrize(
    "extra",
    [
        "Auto-Submitted: auto-replied\r\n",
        "Auto-Submitted: auto-generated\r\n",
        "Precedence: bulk\r\n",
        "Precedence: list\r\n",
        "Precedence: junk\r\n",
        "List-Id: <admins.fabrikam.example>\r\n",
    ],
)
def test_automatic_bulk_and_list_mail_gets_no_reply(sink: tuple[Sink, int], extra: str) -> None:
    handler, port = sink
    with Responder(port, config()) as responder:
        responder.send(message(extra=extra))
    assert handler.received == []


def test_auto_submitted_no_is_answered(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    with Responder(port, config()) as responder:
        responder.send(message(extra="Auto-Submitted: no\r\n"))
    assert len(handler.received) == 1


def test_a_null_sender_gets_no_reply(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    with Responder(port, config()) as responder:
        responder.send(message(), sender="")
    assert handler.received == []


def test_a_check_address_as_sender_gets_no_reply(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    with Responder(port, config()) as responder:
        responder.send(message(), sender=CHECK.upper())
    assert handler.received == []


def test_other_recipients_are_refused_so_it_never_relays(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    with Responder(port, config()) as responder, pytest.raises(smtplib.SMTPRecipientsRefused):
        responder.send(message(), rcpt="someone@elsewhere.example")
    assert handler.received == []


def test_a_message_over_the_size_limit_is_refused(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    big = message(extra=f"X-Pad: {'a' * 5000}\r\n")
    with Responder(port, config(max_size=4096)) as responder:
        with smtplib.SMTP("127.0.0.1", responder.port, timeout=30) as client:
            client.ehlo("client.example")
            assert client.has_extn("size")
            assert int(client.esmtp_features["size"]) == 4096
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail(SENDER, [CHECK], big)
        assert refused.value.smtp_code == 552
    assert handler.received == []


def test_nothing_from_the_message_reaches_the_reply_unescaped(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    evil = (
        "Received: from <script>x</script> (\x1b[31mred [10.0.0.5]) by mx.fabrikam.example\r\n"
        " (10.0.0.6) with Microsoft SMTP Server id 15.0.1497.48\u202e; Thu, 3 Dec 2026\r\n"
    )
    with Responder(port, config()) as responder:
        responder.send(message(evil, subject="hi \x1b]0;owned\x07 <b>"))
    reply = handler.received[0][2]
    text, page = text_of(reply), html_of(reply)
    for part in (text, page, reply["Subject"]):
        assert "\x1b" not in part
        assert "\x07" not in part
        assert "\u202e" not in part
    assert "\\x1b" in text
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_one_reply_per_sender_per_interval(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    with Responder(port, config()) as responder:
        responder.send(message())
        responder.send(message())
        responder.send(message(), sender="other@fabrikam.example")
    assert [rcpts for _, rcpts, _ in handler.received] == [[SENDER], ["other@fabrikam.example"]]


def test_the_global_limit_per_minute(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    with Responder(port, config(per_minute=2)) as responder:
        for number in range(4):
            responder.send(message(), sender=f"admin{number}@fabrikam.example")
    assert len(handler.received) == 2


def test_replies_never_change_the_stores_server_rows(
    sink: tuple[Sink, int], tmp_path: Path
) -> None:
    db = tmp_path / "tbes.db"
    store = SQLiteStore(db)
    state = ServerState(
        "fabrikam-edge",
        "fabrikam",
        ExchangeBuild(15, 0, 1497, 48),
        Compliance.UNSUPPORTED,
        NOW - dt.timedelta(days=40),
        NOW,
        None,
    )
    store.put(state, expected_version=None)
    before = [(s, store.get(s.server_id)) for s in store.states()]
    schema = store.schema_version()
    handler, port = sink
    counters = SQLiteCounters(db)
    with Responder(port, config(), counters) as responder:
        responder.send(message())
        responder.send(message(), sender="other@fabrikam.example")
    counters.close()
    assert len(handler.received) == 2
    assert [(s, store.get(s.server_id)) for s in store.states()] == before
    assert store.schema_version() == schema  # the counters' table is no migration
    store.close()


# ---- two processes sharing one SQLite store -----------------------------------------------


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the responder on {port} did not start") from None
            time.sleep(0.05)


def test_two_responder_processes_share_the_rate_limit(
    sink: tuple[Sink, int], tmp_path: Path
) -> None:
    handler, sink_port = sink
    settings = tmp_path / "responder.toml"
    settings.write_text(
        f'[responder]\naddresses = ["{CHECK}"]\nfrom = "{CHECK}"\n', encoding="utf-8"
    )
    db = tmp_path / "tbes.db"
    processes, ports = [], []
    try:
        for _ in range(2):
            port = free_port()
            argv = [
                sys.executable,
                "-c",
                "from tbes.cli import main; main()",
                "responder",
                "--listen",
                f"127.0.0.1:{port}",
                "--config",
                str(settings),
                "--reply-via",
                f"127.0.0.1:{sink_port}",
                "--db",
                str(db),
            ]
            processes.append(subprocess.Popen(argv, env=os.environ.copy()))
            ports.append(port)
        for port, process in zip(ports, processes, strict=True):
            _wait_for_port(port, process)
        send(ports[0], message())
        send(ports[1], message())  # the same sender, through the other process
        send(ports[1], message(), sender="other@fabrikam.example")
    finally:
        for process in processes:
            process.terminate()
        codes = [process.wait(timeout=30) for process in processes]
    assert codes == [0, 0]  # SIGTERM is a clean stop
    assert [rcpts for _, rcpts, _ in handler.received] == [[SENDER], ["other@fabrikam.example"]]


# ---- configuration -----------------------------------------------------------------------


def test_the_documented_config_loads(tmp_path: Path) -> None:
    from integration.postfix import doc_snippet

    path = tmp_path / "responder.toml"
    docs = Path(__file__).resolve().parents[1] / "docs" / "self-check.md"
    path.write_text(doc_snippet("responder config", doc=docs), encoding="utf-8")
    loaded = load_responder_config(path)
    assert loaded.addresses == frozenset({CHECK})
    assert (loaded.per_sender_seconds, loaded.per_minute) == (600.0, 30)


def test_the_config_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(
        '[responder]\naddresses = ["Check@Contoso.Example"]\nfrom = "check@contoso.example"\n'
        "per_sender_seconds = 60\nper_minute = 5\nmax_size = 2048\n",
        encoding="utf-8",
    )
    loaded = load_responder_config(path)
    assert loaded.addresses == frozenset({"check@contoso.example"})
    assert (loaded.per_sender_seconds, loaded.per_minute, loaded.max_size) == (60.0, 5, 2048)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({}, "[responder]"),
        ({"responder": {"addresses": [CHECK], "from": CHECK}, "tenant": "x"}, "tenant"),
        ({"responder": {"addresses": [CHECK], "from": CHECK, "typo": 1}}, "typo"),
        ({"responder": {"addresses": [], "from": CHECK}}, "addresses"),
        ({"responder": {"addresses": ["a b@c"], "from": CHECK}}, "addresses"),
        ({"responder": {"addresses": [CHECK], "from": "x\r\nBcc: y@z"}}, "from"),
        ({"responder": {"addresses": [CHECK], "from": CHECK, "per_minute": 0}}, "per_minute"),
        ({"responder": {"addresses": [CHECK], "from": CHECK, "max_size": "1"}}, "max_size"),
    ],
)
def test_a_bad_config_is_refused_naming_the_key(data: dict[str, Any], named: str) -> None:
    with pytest.raises(AdapterConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_responder_config(data)


def test_the_demo_mentions_the_self_check(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tbes.cli import cli

    db, report = tmp_path / "demo.db", tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["demo", "--db", str(db), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "tbes responder" in result.output


class _BrokenCounters:
    def take(self, limits: Any, now: float) -> bool:
        raise StoreError("the database is gone")

    def close(self) -> None:
        pass


def test_without_its_counters_it_sends_no_reply_and_still_accepts(
    sink: tuple[Sink, int], caplog: pytest.LogCaptureFixture
) -> None:
    handler, port = sink
    with Responder(port, config(), _BrokenCounters()) as responder:
        responder.send(message())  # smtplib raises unless the answer is 250
    assert handler.received == []
    assert "answering a check message failed" in caplog.text


def test_undecodable_header_bytes_do_not_stop_the_reply(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    raw = message(subject="caf\udcc3\udca9 \udcff")  # raw bytes c3 a9 ff
    with Responder(port, config()) as responder:
        responder.send(raw)
    reply = handler.received[0][2]
    assert reply["Subject"].startswith("Auto: tbes self-check - caf")
    assert "Exchange 2013 CU23 Mar23SU" in text_of(reply)
