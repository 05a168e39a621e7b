"""Shutdown and slow checks, in process: a draining service answers what it holds, then closes;
a check answered by its timeout is logged once, as a timeout, however late it ends.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from adapter_support import decision, on_premises
from milter_client import MtaClient
from tbes.adapters.config import AdapterConfig
from tbes.adapters.milter import MilterLimits, MilterService
from tbes.adapters.postfix_policy import PolicyLimits, PolicyService
from tbes.decision import Action, Decision
from tbes.enforcer import Connection

pytestmark = pytest.mark.timeout(60)

CONFIG = AdapterConfig(connectors=(on_premises("fabrikam", "fabrikam-edge", "127.0.0.0/8"),))
EX2007 = (
    "from EXHUB01.fabrikam.local (10.1.2.3) by mail.fabrikam.example (10.1.2.4) with "
    "Microsoft SMTP Server id 8.3.83.6; Mon, 3 Nov 2025 09:00:00 +0100"
)


class Gate:
    """A checker that waits for ``release`` (at most ``seconds``), then accepts."""

    def __init__(self, seconds: float = 20.0) -> None:
        self.seconds = seconds
        self.entered = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()

    def check(self, conn: Connection, received: object) -> Decision:
        self.entered.set()
        self.release.wait(self.seconds)
        self.done.set()
        return decision(Action.ACCEPT)


class Loop:
    """An event loop in a thread; ``run(coroutine)`` waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(20)

    def call(self, function: Any) -> None:
        async def call() -> None:
            function()

        self.run(call())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


def test_a_draining_milter_answers_the_check_in_flight_then_closes(loop: Loop) -> None:
    gate = Gate()
    service = MilterService(gate, CONFIG)
    server = loop.run(service.start("127.0.0.1:0"))
    port = server.sockets[0].getsockname()[1]
    try:
        with MtaClient(port) as busy, MtaClient(port) as idle:
            idle.negotiate()
            busy.negotiate()
            busy.connect("mail.fabrikam.example", "127.0.0.2")
            busy.header("Received", EX2007)
            busy.send(b"N")
            assert gate.entered.wait(10)
            server.close()
            loop.call(service.drain)
            assert idle.closed_by_filter()  # nothing in flight: closed at once
            gate.release.set()
            assert busy.read() == (b"a", b"")  # the answer in hand still goes out
            assert busy.closed_by_filter()
    finally:
        loop.call(service.close)


def test_a_draining_policy_service_answers_the_request_in_flight_then_closes(
    loop: Loop,
) -> None:
    gate = Gate()
    service = PolicyService(gate, CONFIG, PolicyLimits())
    server = loop.run(service.start("127.0.0.1:0"))
    port = server.sockets[0].getsockname()[1]
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as busy,
            socket.create_connection(("127.0.0.1", port), timeout=10) as idle,
        ):
            busy.sendall(b"request=smtpd_access_policy\nclient_address=127.0.0.2\n\n")
            assert gate.entered.wait(10)
            server.close()
            loop.call(service.drain)
            assert idle.recv(100) == b""
            gate.release.set()
            assert busy.recv(100) == b"action=DUNNO\n\n"
            assert busy.recv(100) == b""
    finally:
        loop.call(service.close)


def test_a_check_past_its_timeout_is_one_decision_line_with_fault_timeout(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate()
    service = MilterService(gate, CONFIG, limits=MilterLimits(check_timeout=0.2, workers=1))
    server = loop.run(service.start("127.0.0.1:0"))
    port = server.sockets[0].getsockname()[1]
    try:
        with caplog.at_level(logging.INFO, logger="tbes.decisions"), MtaClient(port) as client:
            client.negotiate()
            client.macros(b"C", client_addr="127.0.0.2")
            client.connect("mail.fabrikam.example", "127.0.0.2")
            client.header("Received", EX2007)
            client.send(b"N")
            assert client.read() == (b"a", b"")  # answered by the timeout: fail open
            gate.release.set()
            assert gate.done.wait(10)
            # The late result settles nothing: wait for the worker to be idle again.
            loop.run(asyncio.sleep(0))
            future = service.executor.submit(lambda: None)
            future.result(10)
    finally:
        server.close()
        loop.call(service.close)
    lines = [r.tbes for r in caplog.records if r.name == "tbes.decisions"]  # type: ignore[attr-defined]
    assert len(lines) == 1
    assert (lines[0]["fault"], lines[0]["action"], lines[0]["server"]) == (
        "timeout",
        "ACCEPT",
        "fabrikam-edge",
    )
    assert lines[0]["micros"] is None


def test_a_request_that_finds_no_check_thread_is_one_decision_line_with_fault_busy(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate()
    limits = PolicyLimits(max_checks=1, queue_timeout=0.2)
    service = PolicyService(gate, CONFIG, limits)
    server = loop.run(service.start("127.0.0.1:0"))
    port = server.sockets[0].getsockname()[1]
    request = b"request=smtpd_access_policy\nclient_address=127.0.0.2\n\n"
    try:
        with (
            caplog.at_level(logging.INFO, logger="tbes.decisions"),
            socket.create_connection(("127.0.0.1", port), timeout=10) as first,
            socket.create_connection(("127.0.0.1", port), timeout=10) as second,
        ):
            first.sendall(request)
            assert gate.entered.wait(10)
            second.sendall(request)
            assert second.recv(100) == b"action=DUNNO\n\n"  # the fault answer, failing open
            gate.release.set()
            assert first.recv(100) == b"action=DUNNO\n\n"
    finally:
        server.close()
        loop.call(service.close)
    lines = [r.tbes for r in caplog.records if r.name == "tbes.decisions"]  # type: ignore[attr-defined]
    assert [(line["fault"], line["server"]) for line in lines] == [
        ("busy", "fabrikam-edge"),
        (None, "fabrikam-edge"),
    ]
