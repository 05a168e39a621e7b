"""The milter over a real socket, driven by an independent MTA-side client (milter_client).

Each test starts the asyncio milter on a loopback port in a background event loop and
speaks the protocol to it as Postfix (version 6, or 2) would: negotiation, macros, connect,
HELO, headers, end of headers; then it checks the filter's replies byte for byte against
the protocol description, and what the checker was asked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from adapter_support import (
    Recorder,
    WhereChecker,
    decision,
    enforcement_text,
    free_port,
    offset_minute,
    on_premises,
    where_cases,
)
from milter_client import (
    ALL_ACTIONS,
    NOBODY,
    NOCONNECT,
    NODATA,
    NOEOH,
    NOHDRS,
    NOHELO,
    NOMAIL,
    NORCPT,
    NOUNKNOWN,
    NR_CONN,
    NR_EOH,
    NR_HDR,
    NR_HELO,
    POSTFIX_V2,
    POSTFIX_V6,
    SETSYMLIST,
    MtaClient,
    packet,
)
from tbes.adapters.config import AdapterConfig, AdapterConfigError, Checker, make_enforcer
from tbes.adapters.listen import ListenAddress, ListenAddressError, parse_listen_address
from tbes.adapters.milter import (
    MAX_RECEIVED,
    MilterLimits,
    MilterService,
    run_milter,
    validate_socket,
)
from tbes.catalog import Catalog
from tbes.decision import Action, Decision
from tbes.enforcer import Connection, Enforcer
from tbes.identity import Identity
from tbes.policy import ConnectorKind, Policy, SmtpReply
from tbes.store.memory import MemoryStore
from tbes.store.sqlite import SQLiteStore

pytestmark = pytest.mark.timeout(60)

EX2007 = (
    "from EXHUB01.fabrikam.local (10.1.2.3) by mail.fabrikam.example (203.0.113.25) with "
    "Microsoft SMTP Server id 8.3.83.6; Mon, 3 Mar 2025 10:00:00 +0100"
)
MAPI = (
    "from EXMBX01.fabrikam.local ([10.1.2.7]) by EXHUB01.fabrikam.local ([10.1.2.3]) "
    "with mapi; Mon, 3 Mar 2025 09:59:59 +0100"
)
CONFIG = AdapterConfig(connectors=(on_premises("fabrikam", "fabrikam-edge", "203.0.113.0/24"),))
TEXT_5 = enforcement_text("throttled", 5)
ACCEPTED = (b"a", b"")
CONTINUED = (b"c", b"")
FAULT_LINE = b"451 4.3.0 Temporary failure checking the sending Exchange server; try again later"


class MilterThread:
    """A MilterService on its own event loop in a thread, listening on a free port."""

    def __init__(
        self, checker: Checker, config: AdapterConfig = CONFIG, limits: MilterLimits | None = None
    ) -> None:
        self.service = MilterService(checker, config, limits=limits)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    def __enter__(self) -> MilterThread:
        self._thread.start()
        start = self.service.start("inet:0@127.0.0.1")
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def client(self) -> MtaClient:
        """A new MTA connection to this milter."""
        return MtaClient(self.port)

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            self.service.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder(decision(Action.ACCEPT))


@pytest.fixture(params=[False, True], ids=["thread-pool", "inline"])
def milter(recorder: Recorder, request: pytest.FixtureRequest) -> Iterator[MilterThread]:
    # Every protocol test runs both ways a check can be made: in a worker thread, and on
    # the event loop itself (MilterLimits.inline), where the answer is written at once.
    with MilterThread(recorder, limits=MilterLimits(inline=request.param)) as running:
        yield running


def _v6_message(
    client: MtaClient, headers: list[tuple[str, str]], ip: str = "203.0.113.25"
) -> tuple[bytes, bytes]:
    client.negotiate()
    client.macros(b"C", client_addr=ip, client_name="mail.fabrikam.example")
    assert client.connect("mail.fabrikam.example", ip) is None
    assert client.helo("mail.fabrikam.example") is None
    return client.message(headers)


def _reply(code: bytes, text: str) -> tuple[bytes, bytes]:
    return b"y", code + text.encode() + b"\0"


# ---- negotiation -----------------------------------------------------------------------------


def test_version_6_negotiates_only_the_needed_steps_and_asks_for_its_macros(
    milter: MilterThread,
) -> None:
    with milter.client() as client:
        got = client.negotiate(6, ALL_ACTIONS, POSTFIX_V6)
    assert got.version == 6
    assert got.actions == SETSYMLIST
    skipped = NOMAIL | NORCPT | NOBODY | NODATA | NOUNKNOWN
    assert got.protocol & skipped == skipped
    # Connect, HELO, headers and their end are needed; only the end of headers is answered.
    assert got.protocol & (NOCONNECT | NOHELO | NOHDRS | NOEOH | NR_EOH) == 0
    assert got.protocol & (NR_CONN | NR_HELO | NR_HDR) == NR_CONN | NR_HELO | NR_HDR
    assert got.protocol & ~POSTFIX_V6 == 0
    assert got.macros == {
        0: ["{client_addr}", "{client_name}", "{client_resolve}"],
        1: ["{cert_subject}"],
    }


def test_version_2_gets_version_2_no_macros_and_only_offered_flags(
    milter: MilterThread, recorder: Recorder
) -> None:
    with milter.client() as client:
        got = client.negotiate(2, 0x3F, POSTFIX_V2)
        assert (got.version, got.actions, got.macros) == (2, 0, {})
        assert got.protocol & ~POSTFIX_V2 == 0
        assert got.protocol & (NOMAIL | NORCPT | NOBODY) == NOMAIL | NORCPT | NOBODY
        # Without "no reply" flags every step is answered; the connect arguments identify.
        assert client.connect("[203.0.113.9]", "203.0.113.9") == CONTINUED
        assert client.helo("mail.fabrikam.example") == CONTINUED
        assert client.header("Received", EX2007) == CONTINUED
        assert client.end_of_headers() == ACCEPTED
    ((conn, received),) = recorder.calls
    assert (conn.peer_ip, conn.peer_host, conn.server_id) == ("203.0.113.9", None, "fabrikam-edge")
    assert received == [EX2007]


def test_a_newer_mta_gets_version_6_and_events_before_negotiation_close(
    milter: MilterThread,
) -> None:
    with milter.client() as client:
        assert client.negotiate(7).version == 6
    with milter.client() as client:
        client.send(b"C", b"host\x00U")
        assert client.closed_by_filter()


def test_steps_the_mta_still_sends_are_answered_with_continue(milter: MilterThread) -> None:
    # An MTA that offers no "leave out" flags at all (version 2, protocol 0: libmilter's V1).
    with milter.client() as client:
        got = client.negotiate(2, 0, 0)
        assert got.protocol & ~0x3F == 0
        assert client.connect("host", "192.0.2.1") == CONTINUED
        for command in (b"M", b"R", b"T", b"U", b"B"):
            assert client.event(command, b"x\x00") == CONTINUED


# ---- identity and headers --------------------------------------------------------------------


def test_identity_comes_from_the_mta_macros(milter: MilterThread, recorder: Recorder) -> None:
    with milter.client() as client:
        client.negotiate()
        client.macros(b"C", client_addr="203.0.113.25", client_name="mail.fabrikam.example")
        # The connect arguments say otherwise: the macros win.
        client.connect("other.example", "192.0.2.1")
        client.macros(b"H", cert_subject="mail.fabrikam.example")
        client.helo("mail.fabrikam.example")
        assert client.message([("Received", EX2007)]) == ACCEPTED
    ((conn, _),) = recorder.calls
    assert conn == Connection(
        server_id="fabrikam-edge",
        tenant="fabrikam",
        kind=ConnectorKind.ON_PREMISES,
        peer_ip="203.0.113.25",
        peer_host="mail.fabrikam.example",
        tls_subject="mail.fabrikam.example",
        connector="fabrikam-edge",  # the rule's name
        identity=Identity.SERVER,  # the default: a state per server behind the connector
    )


def test_unverified_names_do_not_identify(milter: MilterThread, recorder: Recorder) -> None:
    with milter.client() as client:
        client.negotiate()
        client.macros(b"C", client_name="mail.fabrikam.example", client_resolve="FORGED")
        client.connect("mail.fabrikam.example", "203.0.113.25")
        client.message([("Received", EX2007)])
    ((conn, _),) = recorder.calls
    assert (conn.peer_ip, conn.peer_host) == ("203.0.113.25", None)


def test_ipv6_connect_arguments_identify(milter: MilterThread, recorder: Recorder) -> None:
    with milter.client() as client:
        client.negotiate()
        client.connect("unknown", "IPv6:2001:db8::25", family=b"6")
        client.message([("Received", EX2007)])
    ((conn, _),) = recorder.calls
    assert conn.peer_ip == "2001:db8::25"


def test_received_values_go_top_first_and_nothing_else(
    milter: MilterThread, recorder: Recorder
) -> None:
    headers = [
        ("Received", EX2007),
        ("Subject", "by mail.forged.example with Microsoft SMTP Server id 15.2.9999.9"),
        ("RECEIVED", MAPI),
        ("From", "alice@fabrikam.example"),
    ]
    with milter.client() as client:
        _v6_message(client, headers)
    ((_, received),) = recorder.calls
    assert received == [EX2007, MAPI]


def test_undecodable_header_bytes_become_replacement_characters(
    milter: MilterThread, recorder: Recorder
) -> None:
    with milter.client() as client:
        client.negotiate()
        client.connect("host", "203.0.113.25")
        client.header("Received", b"from \xffhost by mx.example; Mon, 3 Mar 2025 10:00:00 +0000")
        client.end_of_headers()
    ((_, received),) = recorder.calls
    assert received == ["from \ufffdhost by mx.example; Mon, 3 Mar 2025 10:00:00 +0000"]


def test_only_the_topmost_received_values_are_kept(
    milter: MilterThread, recorder: Recorder
) -> None:
    with milter.client() as client:
        _v6_message(client, [("Received", f"hop {i}") for i in range(MAX_RECEIVED + 50)])
    ((_, received),) = recorder.calls
    assert received == [f"hop {i}" for i in range(MAX_RECEIVED)]


# ---- replies ---------------------------------------------------------------------------------


def test_throttle_is_the_decision_reply_code() -> None:
    reply = SmtpReply(450, "4.7.230", TEXT_5)
    milter = MilterThread(Recorder(decision(Action.THROTTLE, reply, stage=2)))
    with milter, milter.client() as client:
        assert _v6_message(client, [("Received", EX2007)]) == _reply(b"450 4.7.230 ", TEXT_5)


def test_block_is_the_decision_reply_code_with_percent_doubled() -> None:
    text = "blocked for 60 mins/hr. For more information see https://example.test/a%20b."
    with (
        MilterThread(
            Recorder(decision(Action.BLOCK, SmtpReply(550, "5.7.230", text), 8))
        ) as milter,
        milter.client() as client,
    ):
        assert _v6_message(client, [("Received", EX2007)]) == _reply(
            b"550 5.7.230 ", text.replace("%", "%%")
        )


def test_a_fault_accepts_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    milter = MilterThread(Recorder(OSError("store down")))
    with (
        milter,
        caplog.at_level(logging.WARNING, logger="tbes.adapters.milter"),
        milter.client() as client,
    ):
        assert _v6_message(client, [("Received", EX2007)]) == ACCEPTED
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "accepting" in caplog.records[0].getMessage()


def test_a_fault_defers_when_failing_closed() -> None:
    closed = AdapterConfig(connectors=CONFIG.connectors, fail_closed=True)
    milter = MilterThread(Recorder(OSError("store down")), closed)
    with milter, milter.client() as client:
        assert _v6_message(client, [("Received", EX2007)]) == (b"y", FAULT_LINE + b"\0")


class _Slow:
    """A checker that takes ``seconds`` per check (a stalled store), then accepts."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.release = threading.Event()

    def check(self, conn: Connection, received: object) -> Decision:
        self.release.wait(self.seconds)
        return decision(Action.ACCEPT)


def test_a_stalled_check_is_answered_as_a_fault_and_stalls_no_other_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = _Slow(30.0)
    closed = AdapterConfig(connectors=CONFIG.connectors, fail_closed=True)
    limits = MilterLimits(check_timeout=0.5, workers=1)
    with MilterThread(slow, closed, limits) as milter, caplog.at_level(logging.WARNING):
        with milter.client() as first, milter.client() as second:
            _send_until_eoh(first)
            # While the one worker is stuck, another connection still negotiates at once.
            assert second.negotiate().version == 6
            started = time.monotonic()
            assert first.read() == (b"y", FAULT_LINE + b"\0")
            assert time.monotonic() - started < 0.5 + 2.0
        slow.release.set()
    assert any("took over 0.5 s" in r.getMessage() for r in caplog.records)


def _send_until_eoh(client: MtaClient) -> None:
    client.negotiate()
    client.connect("host", "203.0.113.25")
    client.header("Received", EX2007)
    client.send(b"N")


def test_an_inline_check_on_a_locked_store_holds_other_connections_only_until_its_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "state.db"
    store = SQLiteStore(db)
    config = AdapterConfig(connectors=CONFIG.connectors, check_timeout=0.5)
    # Another process holds the file's write lock; the first message of a server must write.
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        # The daemons' default limits: a SQLite store's checks run on the event loop.
        milter = MilterThread(make_enforcer(config, store), config, MilterLimits())
        with milter, milter.client() as first, milter.client() as second:
            _send_until_eoh(first)
            started = time.monotonic()
            # The event loop waits for the check, and no longer than its deadline.
            assert second.negotiate().version == 6
            assert first.read() == ACCEPTED  # the store failed: fail open
            assert time.monotonic() - started < 0.5 + 1.5
    finally:
        locker.rollback()
        locker.close()
        store.close()
    assert any("store failed for fabrikam-edge" in line for line in _warnings(caplog))


@pytest.mark.parametrize(("store", "inline", "on_loop"), where_cases(MemoryStore()))
def test_checks_run_on_the_loop_by_default_only_for_a_store_in_the_process(
    store: object, inline: bool | None, on_loop: bool
) -> None:
    checker = WhereChecker(store)
    with MilterThread(checker, limits=MilterLimits(inline=inline)) as milter:
        for _ in range(3):
            with milter.client() as client:
                assert _v6_message(client, [("Received", EX2007)]) == ACCEPTED
        loop_thread = milter._thread.name
    assert len(checker.threads) == 3
    assert all((thread == loop_thread) == on_loop for thread in checker.threads)


class _Gate:
    """A checker that holds its first check until released, and records every call."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[list[str]] = []

    def check(self, conn: Connection, received: Sequence[str]) -> Decision:
        if not self.calls:
            self.entered.set()
            self.release.wait(10)
        self.calls.append(list(received))
        return decision(Action.ACCEPT)


def test_what_the_mta_sends_during_a_check_waits_for_its_answer() -> None:
    gate = _Gate()
    # More than one packet's worth arrives during the check: the milter stops reading.
    milter = MilterThread(gate, limits=MilterLimits(max_packet=4096))
    with milter, milter.client() as client:
        _send_until_eoh(client)
        assert gate.entered.wait(10)
        hops = [f"from h{number}.example by mx.example; {'x' * 1000}" for number in range(8)]
        client.sock.sendall(
            b"".join(packet(b"L", b"Received\0" + hop.encode() + b"\0") for hop in hops)
        )
        time.sleep(0.2)
        gate.release.set()
        assert client.read() == ACCEPTED
        # Reading goes on once the answer is out.
        client.send(b"N")
        assert client.read() == ACCEPTED
    assert gate.calls == [[EX2007], hops]


def test_a_reload_names_the_next_connections_by_the_new_configuration() -> None:
    recorder = Recorder(decision(Action.ACCEPT))
    moved = AdapterConfig(connectors=(on_premises("fabrikam", "fabrikam-new", "203.0.113.0/24"),))
    with MilterThread(recorder, limits=MilterLimits(inline=True)) as milter:
        with milter.client() as client:
            assert _v6_message(client, [("Received", EX2007)]) == ACCEPTED
        milter.service.replace(moved, recorder)
        with milter.client() as client:
            assert _v6_message(client, [("Received", EX2007)]) == ACCEPTED
    assert [conn.server_id for conn, _ in recorder.calls] == ["fabrikam-edge", "fabrikam-new"]


# ---- several messages, abort, quit -----------------------------------------------------------


def test_several_messages_on_one_connection_are_judged_on_their_own_headers(
    milter: MilterThread, recorder: Recorder
) -> None:
    with milter.client() as client:
        assert _v6_message(client, [("Received", EX2007)]) == ACCEPTED
        assert client.message([("Received", MAPI)]) == ACCEPTED
        assert client.message([("Subject", "no hops")]) == ACCEPTED
    assert [received for _, received in recorder.calls] == [[EX2007], [MAPI], []]


def test_abort_forgets_the_headers_of_the_abandoned_message(
    milter: MilterThread, recorder: Recorder
) -> None:
    with milter.client() as client:
        client.negotiate()
        client.connect("host", "203.0.113.25")
        client.header("Received", EX2007)
        client.send(b"A")  # the client gave up (RSET); no reply is expected
        assert client.message([("Received", MAPI)]) == ACCEPTED
    assert [received for _, received in recorder.calls] == [[MAPI]]


def test_quit_closes_and_quit_new_connection_starts_afresh(
    milter: MilterThread, recorder: Recorder
) -> None:
    with milter.client() as client:
        _v6_message(client, [("Received", EX2007)])
        # QUIT_NC: the MTA reuses the socket for its next SMTP client.
        client.send(b"K")
        client.connect("[192.0.2.7]", "192.0.2.7")
        assert client.message([("Received", MAPI)]) == ACCEPTED
        client.send(b"Q")
        assert client.closed_by_filter()
    first, second = (conn for conn, _ in recorder.calls)
    assert (first.peer_ip, first.peer_host) == ("203.0.113.25", "mail.fabrikam.example")
    assert (second.peer_ip, second.peer_host) == ("192.0.2.7", None)


def test_replies_before_a_quit_in_the_same_read_are_sent_once(milter: MilterThread) -> None:
    with milter.client() as client:
        client.negotiate(2, 0x3F, POSTFIX_V2)
        # HELO and QUIT arrive together: one "continue", then the filter closes.
        client.sock.sendall(packet(b"H", b"mail.fabrikam.example\x00") + packet(b"Q"))
        assert client.read() == CONTINUED
        assert client.closed_by_filter()


# ---- misbehaving peers -----------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_an_unknown_command_closes_the_connection_and_logs_once(
    milter: MilterThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tbes.adapters.milter"):
        for _ in range(3):
            with milter.client() as client:
                client.negotiate()
                client.send(b"Z", b"whatever")
                assert client.closed_by_filter()
        # The service goes on serving.
        with milter.client() as client:
            assert _v6_message(client, [("Received", EX2007)]) == ACCEPTED
    # Three offenders, one line (rate-limited).
    (line,) = _warnings(caplog)
    assert "unknown milter command 'Z'" in line


def test_an_oversized_packet_closes_before_its_body_is_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        MilterThread(
            Recorder(decision(Action.ACCEPT)), limits=MilterLimits(max_packet=4096)
        ) as milter,
        caplog.at_level(logging.WARNING),
        milter.client() as client,
    ):
        client.negotiate()
        # Only the length is sent: the filter must not wait for 1 MiB to refuse it.
        client.sock.sendall(struct.pack(">L", 1 << 20))
        assert client.closed_by_filter()
    (line,) = _warnings(caplog)
    assert "outside 1..4096" in line


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # length 0x47455420: over the limit
        b"\x00\x00\x00\x00",  # length 0
        packet(b"O", b"\x00\x00"),  # negotiation too short
        packet(b"O", struct.pack(">LLL", 1, 0, 0)),  # version 1
        packet(b"C", b"no-terminator"),
    ],
)
def test_garbage_closes_the_connection_and_others_are_served(
    milter: MilterThread, garbage: bytes
) -> None:
    with milter.client() as client:
        client.sock.sendall(garbage)
        assert client.closed_by_filter()
    with milter.client() as client:
        assert _v6_message(client, [("Received", EX2007)]) == ACCEPTED


def test_malformed_events_after_negotiation_close_the_connection(milter: MilterThread) -> None:
    for command, payload in [
        (b"C", b"host\x00X"),  # unknown family
        (b"C", b"host\x004\x00"),  # no port and address
        (b"L", b"Received-only"),  # no value
        (b"D", b"C{client_addr}\x00"),  # a name without value
        (b"O", struct.pack(">LLL", 6, 0, 0)),  # negotiation repeated
    ]:
        with milter.client() as client:
            client.negotiate()
            client.send(command, payload)
            assert client.closed_by_filter(), (command, payload)


def test_connections_over_the_limit_are_closed_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = MilterLimits(max_connections=2)
    milter = MilterThread(Recorder(decision(Action.ACCEPT)), limits=limits)
    with milter, caplog.at_level(logging.WARNING):
        first, second = milter.client(), milter.client()
        with first, second:
            first.negotiate()
            second.negotiate()
            with milter.client() as third:
                assert third.closed_by_filter()
        # Once they are gone, new connections are served again.
        deadline = time.monotonic() + 5
        while milter.service.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        with milter.client() as fourth:
            assert _v6_message(fourth, [("Received", EX2007)]) == ACCEPTED
    assert any("2 MTA connections are open already" in line for line in _warnings(caplog))


def test_an_idle_connection_is_closed() -> None:
    limits = MilterLimits(idle_timeout=0.3)
    milter = MilterThread(Recorder(decision(Action.ACCEPT)), limits=limits)
    with milter, milter.client() as client:
        client.negotiate()
        started = time.monotonic()
        assert client.closed_by_filter(timeout=5.0)
        assert time.monotonic() - started < 0.3 + 2.0


def test_the_check_threads_run_submitted_work_and_cancel_what_waits_at_close() -> None:
    service = MilterService(
        Recorder(decision(Action.ACCEPT)), CONFIG, limits=MilterLimits(workers=1)
    )
    started, release = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return release.wait(10)

    busy = service.executor.submit(hold)
    waiting = service.executor.submit(lambda: "never run")
    assert started.wait(10)
    service.close()
    release.set()
    assert busy.result(10) is True
    assert waiting.cancelled()
    with pytest.raises(RuntimeError):
        service.executor.submit(lambda: None)


def test_limits_are_checked() -> None:
    bad: dict[str, Any] = {"max_packet": 10, "max_connections": 0, "check_timeout": -1.0}
    for name, value in bad.items():
        with pytest.raises(AdapterConfigError, match=name):
            MilterLimits(**{name: value})
    with pytest.raises(AdapterConfigError, match="workers must be an int"):
        MilterLimits(workers=1.5)  # type: ignore[arg-type]


# ---- the real enforcer -----------------------------------------------------------------------


def test_real_enforcer_throttles_in_stage_two() -> None:
    detected = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)
    clock = [detected]
    enforcer = Enforcer(
        MemoryStore(), Policy.exchange_online_2026(), Catalog.default(), clock=lambda: clock[0]
    )
    with MilterThread(enforcer) as milter, milter.client() as client:
        assert _v6_message(client, [("Received", EX2007), ("Received", MAPI)]) == ACCEPTED
        # Stage 2 starts 30 days later; at the server's own offset minute it is throttled.
        clock[0] = detected + dt.timedelta(days=31, minutes=offset_minute("fabrikam-edge"))
        assert client.message([("Received", EX2007), ("Received", MAPI)]) == _reply(
            b"450 4.7.230 ", TEXT_5
        )


# ---- addresses and commands ------------------------------------------------------------------


@pytest.mark.parametrize(
    "socket",
    [
        "inet:8891@127.0.0.1",
        "inet6:8891@[::1]",
        "inet:8891",
        "127.0.0.1:8891",
        "inet:127.0.0.1:8891",
        "[::1]:8891",
        "localhost:8891",
        "unix:/run/tbes.sock",
    ],
)
def test_every_documented_socket_form_is_accepted(socket: str) -> None:
    assert validate_socket(socket) == socket


@pytest.mark.parametrize(
    "socket", ["::1:8891", "8891", "inet:port@host", "127.0.0.1:99999", "unix:rel", "", "host:"]
)
def test_other_socket_forms_are_refused_before_starting(socket: str) -> None:
    with pytest.raises(ValueError, match="not a listen address"):
        run_milter(socket, CONFIG, Recorder(decision(Action.ACCEPT)))


def test_a_unix_socket_serves_and_a_stale_one_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "milter.sock"

    async def scenario() -> tuple[bytes, bytes]:
        service = MilterService(Recorder(decision(Action.ACCEPT)), CONFIG)
        first = await service.start(f"unix:{path}")
        first.close()
        await first.wait_closed()  # leaves the socket file behind, as a crash would
        server = await service.start(f"unix:{path}")
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(packet(b"O", struct.pack(">LLL", 6, ALL_ACTIONS, POSTFIX_V6)))
            header = await reader.readexactly(4)
            body = await reader.readexactly(struct.unpack(">L", header)[0])
            writer.close()
            return body[:1], body[1:5]
        finally:
            server.close()
            service.close()

    assert asyncio.run(scenario()) == (b"O", struct.pack(">L", 6))


def test_tbes_milter_command_refuses_a_bad_socket_without_starting(tmp_path: Path) -> None:
    click_testing = pytest.importorskip("click.testing", reason="the cli extra is not installed")
    from tbes.cli.daemons import milter as command

    config = tmp_path / "adapters.toml"
    config.write_text('tenant = "contoso"\n', encoding="utf-8")
    args = ["--listen", "8891", "--db", str(tmp_path / "t.db"), "--config", str(config)]
    result = click_testing.CliRunner().invoke(command, args)
    assert result.exit_code == 2
    assert "not a listen address: '8891'" in result.output


def test_tbes_milter_command_names_a_bad_configuration(tmp_path: Path) -> None:
    click_testing = pytest.importorskip("click.testing", reason="the cli extra is not installed")
    from tbes.cli.daemons import milter as command

    config = tmp_path / "adapters.toml"
    config.write_text("fail_closed = 1\n", encoding="utf-8")
    args = ["--listen", "inet:8891@127.0.0.1", "--db", str(tmp_path / "t.db")]
    result = click_testing.CliRunner().invoke(command, [*args, "--config", str(config)])
    assert result.exit_code == 2
    assert "fail_closed must be a bool, got 1" in result.output


def test_tbes_serve_needs_something_to_serve(tmp_path: Path) -> None:
    click_testing = pytest.importorskip("click.testing", reason="the cli extra is not installed")
    from tbes.cli.daemons import serve as serve_command

    config = tmp_path / "adapters.toml"
    config.write_text('tenant = "contoso"\n', encoding="utf-8")
    args = ["--db", str(tmp_path / "t.db"), "--config", str(config)]
    result = click_testing.CliRunner().invoke(serve_command, args)
    assert result.exit_code == 2
    assert "give --milter SOCKET, --policy SOCKET or both" in result.output
    bad = click_testing.CliRunner().invoke(serve_command, [*args, "--policy", "nowhere"])
    assert bad.exit_code == 2
    assert "not a listen address: 'nowhere'" in bad.output


def test_tbes_serve_runs_milter_and_policy_in_one_process_until_sigterm(tmp_path: Path) -> None:
    pytest.importorskip("click", reason="the cli extra is not installed")
    config = tmp_path / "adapters.toml"
    config.write_text('tenant = "contoso"\n', encoding="utf-8")
    milter_port, policy_port = free_port(), free_port()
    main = "import sys; from tbes.cli.daemons import serve; serve.main()"
    args = ["--milter", f"inet:{milter_port}@127.0.0.1", "--policy", f"127.0.0.1:{policy_port}"]
    args += ["--db", str(tmp_path / "t.db"), "--config", str(config)]
    process = subprocess.Popen(
        [sys.executable, "-c", main, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        _wait_for(milter_port, process)
        _wait_for(policy_port, process)
        with MtaClient(milter_port) as client:
            assert _v6_message(client, [("Received", EX2007)]) == ACCEPTED
        with socket.create_connection(("127.0.0.1", policy_port), timeout=10) as policy:
            policy.sendall(b"request=smtpd_access_policy\nclient_address=192.0.2.1\n\n")
            assert policy.recv(100) == b"action=DUNNO\n\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate(timeout=10)[0].decode(errors="replace")
    assert "tbes milter listening on" in output
    assert "Traceback" not in output


def _wait_for(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while True:
        assert process.poll() is None, "tbes serve exited before listening"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


def test_listen_addresses_are_checked_when_built() -> None:
    assert parse_listen_address("inet6:8891@[::1]") == ListenAddress(host="::1", port=8891)
    assert parse_listen_address("unix:/run/tbes.sock") == ListenAddress(path="/run/tbes.sock")
    assert str(parse_listen_address("[::1]:25")) == "[::1]:25"
    bad: list[dict[str, Any]] = [{"port": 70000}, {"port": True}, {}, {"port": 1, "path": "/x"}]
    for fields in bad:
        with pytest.raises(ListenAddressError):
            ListenAddress(**fields)
