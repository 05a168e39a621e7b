"""The milter: enforcement inside Postfix or Sendmail, at the end of the message headers.

A pure-Python asyncio server (no libmilter, no C extension) speaking the milter protocol,
versions 2 to 6, through the sans-I/O codec in :mod:`tbes.adapters._milter_protocol`. One
event loop serves every MTA connection; the :class:`~tbes.enforcer.Enforcer` behind it is
shared. The milter negotiates only the steps it needs (connect, HELO, headers, end of
headers: the MTA leaves out MAIL, RCPT, DATA and the body, and does not wait for an answer
to anything before the end of headers) and, from protocol 6 on, asks for the macros it
needs itself, so the MTA needs no macro configuration.

The identity comes from the MTA, never from the headers: ``{client_addr}``,
``{client_name}`` (the verified name, ``unknown`` when there is none; a name Sendmail's
``{client_resolve}`` does not call ``OK`` is dropped) and ``{cert_subject}`` (the TLS
client certificate subject); the connect arguments are the fallback for MTAs that cannot
negotiate macros. The decision is taken at end of headers: every ``Received`` value has
been seen, top first (the topmost :data:`MAX_RECEIVED` are kept), and the body is never
sent. A throttle or block is answered with the decision's own code, enhanced code and text
(``SMFIR_REPLYCODE``); the MTA gives it to the client's end of ``DATA``.

Bounds, so that no MTA connection can hurt another: a packet longer than
``max_packet`` or malformed closes that connection (the MTA applies its
``milter_default_action``); beyond ``max_connections`` a new connection is closed at once;
a connection idle for ``idle_timeout`` is closed (one timer per service keeps every
deadline). The store is synchronous, so each check runs in a bounded thread pool and the
event loop never waits for it: a check that takes longer than ``check_timeout`` is answered
as a fault. Over a store whose every wait ends at its own deadline (a local one), checks may
instead run on the event loop (``MilterLimits.inline``), which spares the thread hand-over's
CPU but makes the loop wait for each check. Any fault (configuration, store,
bug, timeout) is logged at WARNING and the message accepted (fail open), or deferred with
``451 4.3.0`` when the configuration says ``fail_closed``. Warnings about misbehaving
peers are rate-limited, so a flood cannot flood the log. Each decision is one line of the
decision log (:mod:`tbes.adapters._decision_log`); a daemon swaps in a reloaded
configuration with :meth:`MilterService.replace` and stops with :meth:`MilterService.drain`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from tbes.adapters import _metrics
from tbes.adapters._decision_log import Attempt, fault_decision, log_fault, run_check
from tbes.adapters._milter_protocol import (
    ACCEPT,
    CLOSE,
    DEFAULT_MAX_PACKET,
    TEMPFAIL,
    Check,
    MilterParser,
    MilterProtocolError,
    MilterSession,
    encode_reply,
)
from tbes.adapters.config import AdapterConfig, Checker
from tbes.adapters.listen import (
    ListenAddress,
    create_server,
    parse_listen_address,
)
from tbes.decision import Action, Decision
from tbes.enforcer import FAIL_CLOSED_REPLY, Connection
from tbes.errors import AdapterConfigError
from tbes.policy import SmtpReply
from tbes.received import MAX_RECEIVED  # the cap every adapter shares

__all__ = [
    "MAX_RECEIVED",
    "MilterLimits",
    "MilterService",
    "decide_check",
    "fault_reply",
    "run_milter",
    "serve_milter",
    "serve_until_stopped",
    "validate_socket",
]

_log = logging.getLogger(__name__)

_READ_SIZE = 65536


def _positive(name: str) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise AdapterConfigError(f"{name} must be a positive number, got {value!r}")

    return check


@attrs.frozen
class MilterLimits:
    """The bounds of one milter service (see the module docstring); a bad value is an
    :class:`~tbes.adapters.config.AdapterConfigError` naming it.

    ``check_timeout`` is above the stores' own per-check deadline (2 s), so a slow store
    normally fails open by itself, and below Postfix's ``milter_command_timeout``.

    ``inline`` says where checks run: ``None`` (the default) on the event loop itself when
    the checker's store answers in process (``in_process``: a
    :class:`~tbes.store.memory.MemoryStore`, a :class:`~tbes.store.sqlite.SQLiteStore`,
    whose every wait ends at the store's deadline, below ``check_timeout``), and in one of
    ``workers`` threads otherwise (PostgreSQL); ``True`` or ``False`` choose. On the loop
    there is no hand-over between threads (less CPU per message, see ``docs/milter.md``),
    but the loop waits for each check; the policy service decides the same way
    (``PolicyLimits.inline_checks``).
    """

    max_packet: int = attrs.field(default=DEFAULT_MAX_PACKET, validator=_positive("max_packet"))
    max_connections: int = attrs.field(default=256, validator=_positive("max_connections"))
    idle_timeout: float = attrs.field(default=600.0, validator=_positive("idle_timeout"))
    check_timeout: float = attrs.field(default=5.0, validator=_positive("check_timeout"))
    workers: int = attrs.field(default=8, validator=_positive("workers"))
    log_interval: float = attrs.field(default=60.0, validator=_positive("log_interval"))
    inline: bool | None = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        if self.inline is not None and not isinstance(self.inline, bool):
            raise AdapterConfigError(f"inline must be None, True or False, got {self.inline!r}")
        for name in ("max_packet", "max_connections", "workers"):
            if not isinstance(getattr(self, name), int):
                raise AdapterConfigError(f"{name} must be an int, got {getattr(self, name)!r}")
        if self.max_packet < 1024:
            raise AdapterConfigError(
                f"max_packet must be at least 1024 bytes, got {self.max_packet}"
            )


class _RateLimitedLog:
    """At most one warning per kind per ``interval`` seconds; says how many it held back."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next: dict[str, float] = {}
        self._held: collections.Counter[str] = collections.Counter()

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next.get(kind, 0.0):
            self._held[kind] += 1
            return
        self._next[kind] = now + self._interval
        held = self._held.pop(kind, 0)
        if held:
            message += " (%d more like it not logged)"
            args = (*args, held)
        _log.warning(message, *args)


# ---- deciding ------------------------------------------------------------------------------


def _reply(reply: SmtpReply) -> bytes:
    return encode_reply(reply.code, reply.enhanced, reply.text)


def fault_reply(config: AdapterConfig, check: Check | None = None) -> bytes:
    """What a fault answers: accept (fail open) or ``451 4.3.0`` (``fail_closed``, unless
    the peer of ``check`` is in monitor mode: see :meth:`AdapterConfig.fails_closed`)."""
    closes = (
        config.fail_closed and config.mode != "monitor"
        if check is None
        else config.fails_closed(
            peer_ip=check.peer_ip, peer_host=check.peer_host, tls_subject=check.tls_subject
        )
    )
    if not closes:
        return ACCEPT
    try:
        return _reply(FAIL_CLOSED_REPLY)
    except Exception:  # pragma: no cover - FAIL_CLOSED_REPLY is a constant that encodes
        return TEMPFAIL


def _answer(decision: Decision) -> bytes:
    if decision.action is Action.ACCEPT or decision.reply is None:
        return ACCEPT
    return _reply(decision.reply)


def decide_check(
    check: Check,
    checker: Checker,
    config: AdapterConfig,
    attempt: Attempt | None = None,
    *,
    names: _Names | None = None,
) -> bytes:
    """The packet that answers one message's end of headers; never raises.

    Runs in a worker thread: the configuration names the connection (through ``names``,
    which remembers it per peer, when given), the checker decides (through
    :func:`~tbes.adapters._decision_log.run_check`, which logs the decision).
    """

    def ask() -> tuple[Connection, Sequence[str]]:
        if names is not None:
            return names.connection(config, check), check.received
        conn = config.connection(
            peer_ip=check.peer_ip, peer_host=check.peer_host, tls_subject=check.tls_subject
        )
        return conn, check.received

    return _answer(run_check("milter", checker, config, ask, peer=check.peer_ip, attempt=attempt))


# ---- serving -------------------------------------------------------------------------------


class _CheckThreads(concurrent.futures.Executor):
    """The milter's thread pool: ``workers`` threads taking jobs from one queue.

    :meth:`post` is the milter's own path, one queue put per check and no future: a
    ``ThreadPoolExecutor`` would build a future, a lock and a condition per check and an
    asyncio future chained to it, about a tenth of a message's CPU. :meth:`submit` keeps
    the ``Executor`` interface for anything else.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]] | None]
        self._jobs = queue.SimpleQueue()
        self._workers = workers
        self._name = name
        self._threads: list[threading.Thread] = []
        self._closed = False

    def post(self, job: Callable[..., object], *args: Any) -> None:
        """Run ``job(*args)`` in a worker thread; it must not raise."""
        if self._closed:
            raise RuntimeError("the check threads are shut down")
        if not self._threads:
            # All at once, on the first check: an idle thread waiting on the queue costs nothing.
            for number in range(self._workers):
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{number}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        self._jobs.put((job, args))

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        job = _FutureJob(fn, args, kwargs)
        self.post(job)
        return job.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is not None and isinstance(item[0], _FutureJob):
                    item[0].future.cancel()
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        jobs = self._jobs
        while (item := jobs.get()) is not None:
            job, args = item
            try:
                job(*args)
            except BaseException:  # pragma: no cover - post()'s jobs catch their own errors
                _log.exception("tbes milter: a check thread job failed")


class _FutureJob:
    """A :meth:`_CheckThreads.submit` call: its function, and the future it settles."""

    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def __call__(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.future.set_result(self.fn(*self.args, **self.kwargs))
        except BaseException as error:
            self.future.set_exception(error)


class MilterService:
    """The milter for every MTA connection of one or more listeners, on one event loop.

    ``checker`` (normally ``make_enforcer(config, store)``) is shared by all connections;
    checks run in ``executor``, or in a pool of ``limits.workers`` threads that
    :meth:`close` shuts down.
    """

    def __init__(
        self,
        checker: Checker,
        config: AdapterConfig,
        *,
        limits: MilterLimits | None = None,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        # One tuple, replaced whole on a reload: a check never pairs one with the other's old.
        self.current: tuple[AdapterConfig, Checker] = (config, checker)
        self.draining = False
        self.limits = MilterLimits() if limits is None else limits
        self._own_executor = executor is None
        self.executor: concurrent.futures.Executor = executor or _CheckThreads(
            self.limits.workers, "tbes-milter"
        )
        self.connections: set[_MilterConnection] = set()
        self.log = _RateLimitedLog(self.limits.log_interval)
        self.names = _Names()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Answers from the check threads, handed to the event loop in batches: one wake-up
        # of the loop however many checks end while it is busy.
        self._answers: collections.deque[tuple[_MilterConnection, int, bytes]] = collections.deque()
        self._woken = False
        # One timer for every connection's deadlines (idle, check), not one per connection.
        self._ticker: asyncio.TimerHandle | None = None
        self._tick = min(
            max(min(self.limits.idle_timeout, self.limits.check_timeout) / 4, 0.01), 1.0
        )

    @property
    def config(self) -> AdapterConfig:
        """The configuration new checks use."""
        return self.current[0]

    @property
    def checker(self) -> Checker:
        """The checker new checks use."""
        return self.current[1]

    def replace(self, config: AdapterConfig, checker: Checker) -> None:
        """Use ``config`` and ``checker`` from the next check on (a reload); open
        connections stay, and a check in flight ends with what it started with."""
        self.current = (config, checker)
        self.names = _Names()

    def drain(self) -> None:
        """Close each connection as soon as it has no check in flight (on shutdown)."""
        self.draining = True
        for connection in list(self.connections):
            connection.close_if_idle()

    async def start(self, address: str | ListenAddress) -> asyncio.Server:
        """Listen on ``address`` (see :mod:`tbes.adapters.listen`) and return the server."""
        if isinstance(address, str):
            address = parse_listen_address(address)
        self._loop = asyncio.get_running_loop()
        return await create_server(address, lambda: _MilterConnection(self))

    def close_connections(self) -> None:
        """Close every open MTA connection (on shutdown)."""
        for connection in list(self.connections):
            connection.close()

    def close(self) -> None:
        """Close the connections and shut down the thread pool this service created."""
        self.close_connections()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._own_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)

    # the connections' side

    def opened(self, connection: _MilterConnection, loop: asyncio.AbstractEventLoop) -> None:
        self.connections.add(connection)
        self._loop = loop
        if self._ticker is None:
            self._ticker = loop.call_later(self._tick, self._on_tick)

    def check(self, connection: _MilterConnection, number: int, check: Check) -> None:
        """Decide ``check`` in a worker thread; the answer comes to ``connection``."""
        config, checker = self.current
        attempt = Attempt()
        connection.checking(number, check, config, attempt)
        if self._inline(checker):
            connection.checked(
                number, decide_check(check, checker, config, attempt, names=self.names)
            )
            return
        args = (connection, number, check, checker, config, attempt, self.names)
        executor = self.executor
        if isinstance(executor, _CheckThreads):
            executor.post(self._decide, *args)
        else:
            executor.submit(self._decide, *args)

    def _inline(self, checker: Checker) -> bool:
        inline = self.limits.inline
        if inline is None:
            # Read through the daemon's watching wrapper, which passes attributes on.
            return getattr(getattr(checker, "store", None), "in_process", False) is True
        return inline

    def _decide(
        self,
        connection: _MilterConnection,
        number: int,
        check: Check,
        checker: Checker,
        config: AdapterConfig,
        attempt: Attempt,
        names: _Names,
    ) -> None:
        # In a worker thread: decide, then hand the answer to the event loop.
        try:
            reply = decide_check(check, checker, config, attempt, names=names)
        except Exception:  # pragma: no cover - decide_check never raises
            reply = fault_reply(config, check)
        self._answers.append((connection, number, reply))
        if not self._woken:
            self._woken = True
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to answer
                    loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        # Cleared before draining: an answer appended after the last pop wakes the loop again.
        self._woken = False
        answers = self._answers
        while answers:
            connection, number, reply = answers.popleft()
            connection.checked(number, reply)

    def _on_tick(self) -> None:
        self._ticker = None
        if not self.connections or self._loop is None:
            return
        now = self._loop.time()
        for connection in list(self.connections):
            connection.tick(now)
        if self.connections:
            self._ticker = self._loop.call_later(self._tick, self._on_tick)


class _Names:
    """The connection each peer maps to under one configuration, remembered (at most
    :data:`_NAMES_KEPT` peers): ``AdapterConfig.connection`` parses and matches the address
    for every message otherwise, while a mail server sees the same peers all day."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[tuple[str | None, str | None, str | None], Connection] = {}

    def connection(self, config: AdapterConfig, check: Check) -> Connection:
        key = (check.peer_ip, check.peer_host, check.tls_subject)
        known = self._known.get(key)
        if known is None:
            known = config.connection(
                peer_ip=check.peer_ip, peer_host=check.peer_host, tls_subject=check.tls_subject
            )
            if len(self._known) >= _NAMES_KEPT:
                self._known.clear()
            self._known[key] = known
        return known


_NAMES_KEPT = 4096


class _MilterConnection(asyncio.Protocol):
    """One MTA connection: bytes in, packets to the session, checks to the service."""

    def __init__(self, service: MilterService) -> None:
        self._service = service
        self._transport: asyncio.Transport | None = None
        self._parser = MilterParser(max_packet=service.limits.max_packet)
        self._session = MilterSession(max_received=MAX_RECEIVED)
        self._pending: list[tuple[int, bytes]] = []
        self._held = 0  # bytes read while a check is in flight
        self._checking = 0  # the number of the check in flight, 0 if none
        self._checks = 0
        self._check_due = 0.0
        self._inflight: tuple[Check, AdapterConfig, Attempt] | None = None
        self._paused = 0  # reasons reading is paused: _WRITING, _HOLDING
        self._last = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        service = self._service
        if len(service.connections) >= service.limits.max_connections:
            service.log.warning(
                "too-many",
                "tbes milter: refusing a connection: %d MTA connections are open already",
                len(service.connections),
            )
            transport.close()
            return
        self._transport = transport
        self._loop = loop = asyncio.get_running_loop()
        self._last = loop.time()
        service.opened(self, loop)
        _metrics.active().connections("milter", 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self._service.connections:
            self._service.connections.discard(self)
            _metrics.active().connections("milter", -1)
        self._transport = None
        self._checking = 0
        self._pending = []

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        try:
            packets = self._parser.feed(data)
        except MilterProtocolError as error:
            self._protocol_error(error)
            return
        if self._checking:
            # The MTA waits for the answer; whatever it sends meanwhile waits too, and past
            # one packet's worth the connection stops reading until the answer is sent.
            self._pending.extend(packets)
            self._held += len(data)
            if self._held > self._service.limits.max_packet:
                self._pause(_HOLDING)
            return
        assert self._loop is not None
        self._last = self._loop.time()
        self._run(packets)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        self._pause(_WRITING)

    def resume_writing(self) -> None:
        self._resume(_WRITING)

    def close(self) -> None:
        """Close the connection (the MTA applies its default action)."""
        if self._transport is not None:
            self._transport.close()

    def close_if_idle(self) -> None:
        """Close the connection unless a check is in flight (then it closes once answered)."""
        if not self._checking:
            self.close()

    # work

    def _pause(self, reason: int) -> None:
        if not self._paused and self._transport is not None:
            self._transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        was = self._paused
        self._paused &= ~reason
        if was and not self._paused and self._transport is not None:
            self._transport.resume_reading()

    def _run(self, packets: Iterable[tuple[int, bytes]]) -> None:
        """Handle packets in order until one needs a check; keep the rest for later."""
        transport = self._transport
        receive = self._session.receive
        out: list[bytes] = []
        remaining = iter(packets)
        try:
            for command, payload in remaining:
                outcome = receive(command, payload)
                if outcome is None:
                    continue
                if type(outcome) is bytes:
                    out.append(outcome)
                elif outcome is CLOSE:
                    if transport is not None:
                        transport.write(b"".join(out))
                        out.clear()
                        transport.close()
                    return
                else:
                    assert isinstance(outcome, Check)
                    if out and transport is not None:
                        # Before the answer, which an inline check writes at once.
                        transport.write(b"".join(out))
                        out.clear()
                    self._pending.extend(remaining)
                    self._checks += 1
                    self._service.check(self, self._checks, outcome)
                    break
        except MilterProtocolError as error:
            self._protocol_error(error)
            return
        finally:
            if out and self._transport is not None:
                self._transport.write(b"".join(out))

    def checking(self, number: int, check: Check, config: AdapterConfig, attempt: Attempt) -> None:
        """A check of this connection's message has started (the service's call)."""
        assert self._loop is not None
        self._checking = number
        self._check_due = self._loop.time() + self._service.limits.check_timeout
        self._inflight = (check, config, attempt)

    def checked(self, number: int, reply: bytes) -> None:
        """The answer to check ``number`` (the service's call, on the event loop)."""
        if number == self._checking:
            self._finish(reply)
        # else: answered already (timeout) or the connection is gone

    def tick(self, now: float) -> None:
        """Enforce the deadlines (the service's timer)."""
        if self._checking:
            if now >= self._check_due:
                self._check_timed_out()
        elif now - self._last >= self._service.limits.idle_timeout and self._transport is not None:
            self._service.log.warning(
                "idle",
                "tbes milter: closing the connection from %r: idle for %.0f s",
                self._transport.get_extra_info("peername"),
                self._service.limits.idle_timeout,
            )
            self._transport.close()

    def _check_timed_out(self) -> None:
        assert self._inflight is not None
        check, config, attempt = self._inflight
        if attempt.settle():
            try:
                conn: Connection | None = self._service.names.connection(config, check)
            except Exception:  # named in the check's own warning, if it ever ends
                conn = None
            log_fault("milter", config, conn, "timeout", fault_decision(config, "timed out", conn))
        self._service.log.warning(
            "check-timeout",
            "tbes milter: deciding for %r took over %.1f s; %s the message",
            check.peer_ip,
            self._service.limits.check_timeout,
            "deferring" if config.fail_closed else "accepting",
        )
        self._finish(fault_reply(config, check))

    def _finish(self, reply: bytes) -> None:
        self._checking = 0
        self._inflight = None
        transport = self._transport
        if transport is None:
            return
        transport.write(self._session.answer(reply))
        assert self._loop is not None
        self._last = self._loop.time()
        if self._service.draining:
            transport.close()
            return
        self._held = 0
        self._resume(_HOLDING)
        if self._pending:
            packets, self._pending = self._pending, []
            self._run(packets)

    def _protocol_error(self, error: MilterProtocolError) -> None:
        peer = None if self._transport is None else self._transport.get_extra_info("peername")
        self._service.log.warning(
            "protocol", "tbes milter: closing the connection from %r: %s", peer, error
        )
        self._pending = []
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._checking = 0


_WRITING, _HOLDING = 1, 2  # why a connection stopped reading


async def serve_milter(
    checker: Checker,
    config: AdapterConfig,
    address: str | ListenAddress = "inet:0@127.0.0.1",
    *,
    limits: MilterLimits | None = None,
) -> asyncio.Server:
    """Start a milter on ``address`` (port 0: any free port) and return it, serving.

    Use ``server.sockets[0].getsockname()`` for the port, ``async with server`` and
    ``await server.serve_forever()`` to run it. Its worker threads end with the process;
    to shut them down earlier, use :class:`MilterService` and its ``close()``.
    """
    return await MilterService(checker, config, limits=limits).start(address)


def validate_socket(socket: str) -> str:
    """Return ``socket`` if a daemon can listen on it, else raise ValueError naming it.

    The forms of :mod:`tbes.adapters.listen`: ``inet:PORT@HOST``, ``HOST:PORT``,
    ``[IPv6]:PORT``, ``unix:/path``.
    """
    parse_listen_address(socket)
    return socket


async def serve_until_stopped(
    checker: Checker,
    config: AdapterConfig,
    *,
    milter: str | None = None,
    policy: str | None = None,
    limits: MilterLimits | None = None,
) -> None:
    """Serve the milter and/or the policy service on one event loop until SIGTERM/SIGINT.

    Every address is bound before anything is logged as listening (an OSError if one
    cannot be); on the signal, each connection finishes the answer in hand, for up to
    :data:`~tbes.adapters._daemon.DRAIN_SECONDS`. The daemons (``tbes milter``, ``tbes
    policy``, ``tbes serve``) also reload on SIGHUP; see :mod:`tbes.adapters._daemon`.
    """
    from tbes.adapters._daemon import DRAIN_SECONDS
    from tbes.adapters.postfix_policy import PolicyLimits, PolicyService

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    service = MilterService(checker, config, limits=limits)
    policy_service = PolicyService(checker, config, PolicyLimits())
    servers: list[asyncio.Server] = []
    try:
        if milter is not None:
            servers.append(await service.start(milter))
        if policy is not None:
            servers.append(await policy_service.start(policy))
        for name, at in (("milter", milter), ("policy service", policy)):
            if at is not None:
                _log.info("tbes %s listening on %s", name, at)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
    finally:
        for server in servers:
            server.close()
        service.drain()
        policy_service.drain()
        deadline = loop.time() + DRAIN_SECONDS
        while (service.connections or policy_service.open_connections) and (loop.time() < deadline):
            await asyncio.sleep(0.02)
        service.close()
        policy_service.close()
        _log.info("tbes stopped")


def run_milter(
    socket: str,
    config: AdapterConfig,
    checker: Checker,
    *,
    name: str = "tbes",
    timeout: int = 600,
) -> None:
    """Serve the milter on ``socket`` until SIGTERM/SIGINT (blocks).

    ``checker`` is normally ``make_enforcer(config, store)``. ``timeout`` closes an MTA
    connection idle for that many seconds. ``name`` only labels the log lines.
    """
    validate_socket(socket)
    limits = MilterLimits(idle_timeout=float(timeout))
    _log.info("tbes milter %r starting", name)
    asyncio.run(serve_until_stopped(checker, config, milter=socket, limits=limits))
