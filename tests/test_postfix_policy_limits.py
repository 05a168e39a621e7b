"""The policy server under abuse, over real loopback sockets: every limit of PolicyLimits.

Limits are set small so that each scenario runs in a second or two; every loop is bounded.
A test that waits for the server to close a connection gives it the limit under test plus a
margin, never a timing of its own. Throughout, a well-behaved client must still get its
answer, and no record may carry a traceback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import resource
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest

from adapter_support import Recorder, WhereChecker, decision, on_premises, where_cases
from tbes.adapters.config import AdapterConfig, Checker
from tbes.adapters.postfix_policy import PolicyLimits, serve_policy
from tbes.catalog import Catalog
from tbes.decision import Action, Decision
from tbes.enforcer import Connection, Enforcer
from tbes.policy import Policy
from tbes.store import MemoryStore, SQLiteStore

pytestmark = pytest.mark.timeout(60)

REQUEST = (
    b"request=smtpd_access_policy\n"
    b"protocol_state=RCPT\n"
    b"client_address=203.0.113.25\n"
    b"client_name=mail.fabrikam.example\n"
    b"\n"
)
DUNNO = b"action=DUNNO\n\n"
# One state per connector: the RCPT check reads that state (docs/enforcement.md).
CONFIG = AdapterConfig(
    connectors=(on_premises("fabrikam", "fabrikam-edge", "203.0.113.0/24"),), identity="connector"
)
LOGGER = "tbes.adapters.postfix_policy"
# Generous for everything but the limit under test, so only that limit can close a socket.
RELAXED = PolicyLimits(idle_timeout=60.0, request_timeout=30.0)


def _accept() -> Recorder:
    return Recorder(decision(Action.ACCEPT, None, 1))


@asynccontextmanager
async def _server(checker: Checker, limits: PolicyLimits) -> AsyncIterator[int]:
    server = await serve_policy(checker, CONFIG, limits=limits)
    async with server:
        yield server.sockets[0].getsockname()[1]


EX2007 = (
    "from EXHUB01.fabrikam.local (10.1.2.3) by mail.fabrikam.example (203.0.113.25) "
    "with Microsoft SMTP Server id 8.3.83.6; Mon, 3 Mar 2025 10:00:00 +0100"
)


async def _ask(port: int) -> bytes:
    """One request on a fresh connection, as Postfix would send it; its answer."""
    return await _ask_with(port, REQUEST)


async def _ask_with(port: int, request: bytes) -> bytes:
    """``request`` on a fresh connection; its answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\n\n"), 10)
    finally:
        writer.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closes (EOF or reset) within ``seconds``; reads what it sends."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def _no_traceback(records: Sequence[logging.LogRecord]) -> None:
    assert [r.getMessage() for r in records if r.exc_info] == []
    assert [
        r.getMessage() for r in records if r.name == "asyncio" and r.levelno >= logging.WARNING
    ] == []


@pytest.mark.parametrize("inline", [True, False])
def test_connections_past_the_cap_are_closed_at_once_with_one_warning(
    inline: bool, caplog: pytest.LogCaptureFixture
) -> None:
    limits = attrs.evolve(RELAXED, max_clients=3, inline_checks=inline)

    async def scenario() -> tuple[list[bool], bytes, bytes]:
        async with _server(_accept(), limits) as port:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            for reader, writer in held:  # an answer proves the server counts the connection
                writer.write(REQUEST)
                assert await asyncio.wait_for(reader.readuntil(b"\n\n"), 10) == DUNNO
            extra = [await asyncio.open_connection("127.0.0.1", port) for _ in range(6)]
            closed = [await _closed_within(reader, 5.0) for reader, _ in extra]
            for _, writer in extra:
                writer.close()
            # The clients already in keep being answered.
            reader, writer = held[0]
            writer.write(REQUEST)
            answer = await asyncio.wait_for(reader.readuntil(b"\n\n"), 10)
            # A slot freed is a slot for the next client (bounded wait for the close).
            held[1][1].close()
            later = b""
            for _ in range(50):
                try:
                    later = await _ask(port)
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    await asyncio.sleep(0.1)
            for _, writer in held:
                writer.close()
            return closed, answer, later

    with caplog.at_level(logging.DEBUG):
        closed, answer, later = asyncio.run(scenario())
    assert closed == [True] * 6
    assert answer == DUNNO
    assert later == DUNNO
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "max_clients" in warnings[0].getMessage()
    _no_traceback(caplog.records)


@pytest.mark.parametrize("inline", [True, False])
def test_a_slow_drip_is_cut_at_the_request_deadline(
    inline: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # The idle timeout is shorter than the drip interval's total but longer than one gap:
    # were it reset by each byte, as before, the drip would go on for the whole loop.
    limits = PolicyLimits(request_timeout=1.0, idle_timeout=0.5, inline_checks=inline)

    async def scenario() -> tuple[float | None, bytes]:
        async with _server(_accept(), limits) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            start = time.monotonic()
            cut: float | None = None
            for index in range(100):  # 100 bytes, 0.1 s apart: 10 s if never cut
                try:
                    writer.write(REQUEST[index : index + 1])
                    await writer.drain()
                except ConnectionError:
                    cut = time.monotonic() - start
                    break
                if await _closed_within(reader, 0.1):
                    cut = time.monotonic() - start
                    break
            writer.close()
            # Another client is answered meanwhile and after.
            return cut, await _ask(port)

    with caplog.at_level(logging.DEBUG):
        cut, answer = asyncio.run(scenario())
    assert cut is not None
    assert cut <= 1.0 + 1.5
    assert answer == DUNNO
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("request_timeout" in m for m in messages)
    _no_traceback(caplog.records)


@pytest.mark.parametrize("inline", [True, False])
def test_a_request_over_the_byte_bound_is_cut(
    inline: bool, caplog: pytest.LogCaptureFixture
) -> None:
    limits = attrs.evolve(RELAXED, max_request_bytes=2048, inline_checks=inline)
    line = b"x=" + b"y" * 98 + b"\n"  # 101 bytes: each line alone is fine

    async def scenario() -> tuple[int, bool, bytes]:
        async with _server(_accept(), limits) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            sent = 0
            try:
                for _ in range(2000):  # 200 KB if never cut
                    writer.write(line)
                    await writer.drain()
                    sent += len(line)
                    await asyncio.sleep(0)
            except ConnectionError:
                pass
            closed = await _closed_within(reader, 5.0)
            writer.close()
            return sent, closed, await _ask(port)

    with caplog.at_level(logging.DEBUG):
        sent, closed, answer = asyncio.run(scenario())
    assert closed
    assert sent < 2000 * len(line)
    assert answer == DUNNO
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("longer than 2048 bytes" in m for m in messages)
    _no_traceback(caplog.records)


def test_many_idle_and_half_sent_connections_do_not_stop_an_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = attrs.evolve(RELAXED, max_clients=300)

    async def scenario() -> list[bytes]:
        async with _server(_accept(), limits) as port:
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
            for _, writer in idle[::2]:
                writer.write(REQUEST[:30])  # a request begun and never finished
            answers = [await _ask(port) for _ in range(3)]
            for _, writer in idle:
                writer.close()
            return answers

    with caplog.at_level(logging.DEBUG):
        assert asyncio.run(scenario()) == [DUNNO] * 3
    _no_traceback(caplog.records)


def test_garbage_from_many_peers_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    recorder = _accept()

    async def scenario() -> bytes:
        async with _server(recorder, PolicyLimits()) as port:
            for _ in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.0\r\n\r\n")
                assert await _closed_within(reader, 5.0)
                writer.close()
            return await _ask(port)

    with caplog.at_level(logging.DEBUG):
        assert asyncio.run(scenario()) == DUNNO
    protocol = [r for r in caplog.records if "not name=value" in r.getMessage()]
    assert len(protocol) == 1
    assert len(recorder.calls) == 1
    _no_traceback(caplog.records)


class _Gate:
    """A checker that holds every check until released, counting how many run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0

    def check(self, conn: Connection, received: Sequence[str]) -> Decision:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.release.wait(20)
            return decision(Action.ACCEPT, None, 1)
        finally:
            with self._lock:
                self.running -= 1


def test_checks_run_on_at_most_max_checks_threads() -> None:
    gate = _Gate()
    limits = attrs.evolve(RELAXED, max_checks=2, queue_timeout=30.0)

    async def scenario() -> list[bytes]:
        async with _server(gate, limits) as port:
            asks = [asyncio.create_task(_ask(port)) for _ in range(8)]
            for _ in range(100):  # until the pool is full (bounded)
                if gate.running == 2:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # room for a third check to start, were it allowed
            gate.release.set()
            return await asyncio.gather(*asks)

    assert asyncio.run(scenario()) == [DUNNO] * 8
    assert gate.most == 2


def test_a_request_waiting_too_long_for_a_check_gets_the_fault_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = _Gate()
    limits = attrs.evolve(RELAXED, max_checks=1, queue_timeout=0.3)
    closed = AdapterConfig(connectors=CONFIG.connectors, fail_closed=True)

    async def scenario() -> tuple[bytes, bytes]:
        server = await serve_policy(gate, closed, limits=limits)
        async with server:
            port = server.sockets[0].getsockname()[1]
            first = asyncio.create_task(_ask(port))
            for _ in range(100):
                if gate.running == 1:
                    break
                await asyncio.sleep(0.05)
            waiting = await _ask(port)
            gate.release.set()
            return waiting, await first

    with caplog.at_level(logging.DEBUG):
        waiting, first = asyncio.run(scenario())
    assert waiting.startswith(b"action=451 4.3.0 ")
    assert first == DUNNO
    assert any("queue_timeout" in r.getMessage() for r in caplog.records)
    _no_traceback(caplog.records)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_clients", 0),
        ("max_request_bytes", True),
        ("max_checks", 2.5),
        ("request_timeout", 0),
        ("idle_timeout", float("inf")),
        ("queue_timeout", float("nan")),
        ("log_interval", -1),
        ("inline_checks", 1),
    ],
)
def test_limits_are_checked(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        PolicyLimits(**{field: value})  # type: ignore[arg-type]


def test_limits_must_be_a_policy_limits() -> None:
    with pytest.raises(TypeError, match="PolicyLimits"):
        asyncio.run(serve_policy(_accept(), CONFIG, limits={"max_clients": 1}))  # type: ignore[arg-type]


def test_a_cap_above_the_descriptor_limit_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft != resource.RLIM_INFINITY  # the test needs a finite limit to go over

    async def scenario(max_clients: int) -> None:
        async with _server(_accept(), attrs.evolve(RELAXED, max_clients=max_clients)):
            pass

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        asyncio.run(scenario(soft))
        asyncio.run(scenario(min(500, soft // 2)))
    assert len(caplog.records) == 1
    assert "ulimit -n" in caplog.records[0].getMessage()


# ---- where checks run: on the loop for a store in the process, else on the threads --------


@pytest.mark.parametrize(("store", "inline", "on_loop"), where_cases(MemoryStore()))
def test_checks_run_on_the_loop_only_for_a_store_in_the_process(
    store: object, inline: bool | None, on_loop: bool
) -> None:
    checker = WhereChecker(store)
    limits = attrs.evolve(RELAXED, inline_checks=inline)

    async def scenario() -> tuple[list[bytes], str]:
        async with _server(checker, limits) as port:
            return [await _ask(port) for _ in range(3)], threading.current_thread().name

    answers, loop_thread = asyncio.run(scenario())
    assert answers == [DUNNO] * 3
    assert len(checker.threads) == 3
    assert all((thread == loop_thread) == on_loop for thread in checker.threads)


def test_a_check_on_the_loop_holds_it_no_longer_than_the_stores_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A SQLite store is served on the loop. Its reads never wait, but a check that must
    # write (here: announcing the stage the server reached) waits for the write lock,
    # which another process holds: the check's deadline ends that wait, the request is
    # answered as a fault (fail open), and a client queued behind it is answered as soon.
    path = tmp_path / "state.db"
    detected = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)
    clock = [detected]
    store = SQLiteStore(path)
    enforcer = Enforcer(
        store,
        Policy.exchange_online_2026(),
        Catalog.default(),
        clock=lambda: clock[0],
        check_timeout=0.5,
    )
    conn = CONFIG.connection(peer_ip="203.0.113.25", peer_host=None, tls_subject=None)
    enforcer.check(conn, [EX2007])  # what the milter would have recorded
    clock[0] = detected + dt.timedelta(days=91)  # stage 8 reached: announced on next check
    other = REQUEST.replace(b"203.0.113.25", b"192.0.2.99")  # no connector: no store

    async def scenario() -> tuple[bytes, bytes, float, bytes]:
        async with _server(enforcer, RELAXED) as port:
            holder = sqlite3.connect(path, isolation_level=None, timeout=0)
            holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            try:
                started = time.monotonic()
                stored, unknown = await asyncio.gather(_ask(port), _ask_with(port, other))
                waited = time.monotonic() - started
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            return stored, unknown, waited, await _ask(port)

    try:
        with caplog.at_level(logging.WARNING):
            stored, unknown, waited, after = asyncio.run(scenario())
    finally:
        store.close()
    assert stored == DUNNO  # the store's fault, answered open
    assert unknown == DUNNO
    assert waited <= 0.5 + 1.5
    assert after.startswith(b"action=550 5.7.230 ")  # the lock gone, the state decides
    _no_traceback(caplog.records)


def test_many_requests_in_one_write_are_all_answered_in_order_on_the_loop() -> None:
    # Postfix sends one request at a time; a peer that sends many at once is answered a
    # batch per turn of the loop, every one of them, in order.
    checker = WhereChecker(MemoryStore())
    others = [REQUEST.replace(b"203.0.113.25", f"192.0.2.{n % 250}".encode()) for n in range(100)]

    async def scenario() -> list[bytes]:
        async with _server(checker, RELAXED) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"".join(others))
                answers = [await asyncio.wait_for(reader.readuntil(b"\n\n"), 10) for _ in others]
                # The connection still serves a request sent after them.
                writer.write(REQUEST)
                answers.append(await asyncio.wait_for(reader.readuntil(b"\n\n"), 10))
                return answers
            finally:
                writer.close()

    assert asyncio.run(scenario()) == [DUNNO] * 101
    assert [conn.peer_ip for conn in checker.conns] == [
        f"192.0.2.{n % 250}" for n in range(100)
    ] + ["203.0.113.25"]


@pytest.mark.parametrize("inline", [True, False])
def test_an_idle_connection_is_closed_after_the_idle_timeout(
    inline: bool, caplog: pytest.LogCaptureFixture
) -> None:
    limits = PolicyLimits(idle_timeout=0.5, request_timeout=30.0, inline_checks=inline)

    async def scenario() -> tuple[bytes, bool]:
        async with _server(_accept(), limits) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST)
            answer = await asyncio.wait_for(reader.readuntil(b"\n\n"), 10)
            closed = await _closed_within(reader, 0.5 + 1.5)
            writer.close()
            return answer, closed

    with caplog.at_level(logging.INFO, logger=LOGGER):
        answer, closed = asyncio.run(scenario())
    assert answer == DUNNO
    assert closed
    assert any("idle for" in r.getMessage() for r in caplog.records)
    _no_traceback(caplog.records)
