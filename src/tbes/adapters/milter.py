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
a connection idle for ``idle_timeout`` is closed. The store is synchronous, so each check
runs in a bounded thread pool and the event loop never waits for it: a check that takes
longer than ``check_timeout`` is answered as a fault. Any fault (configuration, store,
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
import logging
import signal
import time
from collections.abc import Iterable, Sequence
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
    """

    max_packet: int = attrs.field(default=DEFAULT_MAX_PACKET, validator=_positive("max_packet"))
    max_connections: int = attrs.field(default=256, validator=_positive("max_connections"))
    idle_timeout: float = attrs.field(default=600.0, validator=_positive("idle_timeout"))
    check_timeout: float = attrs.field(default=5.0, validator=_positive("check_timeout"))
    workers: int = attrs.field(default=8, validator=_positive("workers"))
    log_interval: float = attrs.field(default=60.0, validator=_positive("log_interval"))

    def __attrs_post_init__(self) -> None:
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
    check: Check, checker: Checker, config: AdapterConfig, attempt: Attempt | None = None
) -> bytes:
    """The packet that answers one message's end of headers; never raises.

    Runs in a worker thread: the configuration names the connection, the checker decides
    (through :func:`~tbes.adapters._decision_log.run_check`, which logs the decision).
    """

    def ask() -> tuple[Connection, Sequence[str]]:
        conn = config.connection(
            peer_ip=check.peer_ip, peer_host=check.peer_host, tls_subject=check.tls_subject
        )
        return conn, check.received

    return _answer(run_check("milter", checker, config, ask, peer=check.peer_ip, attempt=attempt))


# ---- serving -------------------------------------------------------------------------------


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
        self.executor = executor or concurrent.futures.ThreadPoolExecutor(
            self.limits.workers, thread_name_prefix="tbes-milter"
        )
        self.connections: set[_MilterConnection] = set()
        self.log = _RateLimitedLog(self.limits.log_interval)

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

    def drain(self) -> None:
        """Close each connection as soon as it has no check in flight (on shutdown)."""
        self.draining = True
        for connection in list(self.connections):
            connection.close_if_idle()

    async def start(self, address: str | ListenAddress) -> asyncio.Server:
        """Listen on ``address`` (see :mod:`tbes.adapters.listen`) and return the server."""
        if isinstance(address, str):
            address = parse_listen_address(address)
        return await create_server(address, lambda: _MilterConnection(self))

    def close_connections(self) -> None:
        """Close every open MTA connection (on shutdown)."""
        for connection in list(self.connections):
            connection.close()

    def close(self) -> None:
        """Close the connections and shut down the thread pool this service created."""
        self.close_connections()
        if self._own_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)


class _MilterConnection(asyncio.Protocol):
    """One MTA connection: bytes in, packets to the session, checks to the thread pool."""

    def __init__(self, service: MilterService) -> None:
        self._service = service
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = MilterParser(max_packet=service.limits.max_packet)
        self._session = MilterSession(max_received=MAX_RECEIVED)
        self._pending: collections.deque[tuple[int, bytes]] = collections.deque()
        self._checking = 0  # the number of the check in flight, 0 if none
        self._checks = 0
        self._check_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._peer: object = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._peer = transport.get_extra_info("peername")
        service = self._service
        if len(service.connections) >= service.limits.max_connections:
            service.log.warning(
                "too-many",
                "tbes milter: refusing a connection: %d MTA connections are open already",
                len(service.connections),
            )
            self._transport = None
            transport.close()
            return
        service.connections.add(self)
        _metrics.active().connections("milter", 1)
        self._last = self._loop.time()
        self._idle_timer = self._loop.call_later(service.limits.idle_timeout, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self._service.connections:
            self._service.connections.discard(self)
            _metrics.active().connections("milter", -1)
        self._transport = None
        self._checking = 0
        for timer in (self._idle_timer, self._check_timer):
            if timer is not None:
                timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        self._last = self._loop.time()
        try:
            packets = self._parser.feed(data)
        except MilterProtocolError as error:
            self._protocol_error(error)
            return
        if self._checking:
            self._pending.extend(packets)
        else:
            self._run(packets)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._checking:
            self._transport.resume_reading()

    def close(self) -> None:
        """Close the connection (the MTA applies its default action)."""
        if self._transport is not None:
            self._transport.close()

    def close_if_idle(self) -> None:
        """Close the connection unless a check is in flight (then it closes once answered)."""
        if not self._checking:
            self.close()

    # work

    def _run(self, packets: Iterable[tuple[int, bytes]]) -> None:
        """Handle packets in order until one needs a check; keep the rest for later."""
        transport = self._transport
        session = self._session
        out: list[bytes] = []
        remaining = iter(packets)
        try:
            for command, payload in remaining:
                outcome = session.receive(command, payload)
                if outcome is None:
                    continue
                if isinstance(outcome, bytes):
                    out.append(outcome)
                elif outcome is CLOSE:
                    if transport is not None:
                        transport.write(b"".join(out))
                        out.clear()
                        transport.close()
                    return
                else:
                    assert isinstance(outcome, Check)
                    self._pending.extend(remaining)
                    self._start_check(outcome)
                    break
        except MilterProtocolError as error:
            self._protocol_error(error)
            return
        finally:
            if out and self._transport is not None:
                self._transport.write(b"".join(out))

    def _start_check(self, check: Check) -> None:
        assert self._transport is not None
        service = self._service
        self._checks += 1
        number = self._checking = self._checks
        self._transport.pause_reading()
        config, checker = service.current
        attempt = Attempt()
        future = self._loop.run_in_executor(
            service.executor, decide_check, check, checker, config, attempt
        )
        future.add_done_callback(lambda done: self._checked(number, config, done))
        self._check_timer = self._loop.call_later(
            service.limits.check_timeout, self._check_timed_out, number, check, config, attempt
        )

    def _checked(self, number: int, config: AdapterConfig, future: asyncio.Future[bytes]) -> None:
        if number != self._checking:
            return  # answered already (timeout) or the connection is gone
        if future.cancelled() or future.exception() is not None:
            # decide_check never raises; a cancelled future means the pool shut down.
            reply = fault_reply(config)
        else:
            reply = future.result()
        self._finish(reply)

    def _check_timed_out(
        self, number: int, check: Check, config: AdapterConfig, attempt: Attempt
    ) -> None:
        if number != self._checking:
            return
        if attempt.settle():
            try:
                conn: Connection | None = config.connection(
                    peer_ip=check.peer_ip, peer_host=check.peer_host, tls_subject=check.tls_subject
                )
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
        if self._check_timer is not None:
            self._check_timer.cancel()
            self._check_timer = None
        transport = self._transport
        if transport is None:
            return
        transport.write(self._session.answer(reply))
        self._last = self._loop.time()
        if self._service.draining:
            transport.close()
            return
        transport.resume_reading()
        if self._pending:
            packets = list(self._pending)
            self._pending.clear()
            self._run(packets)

    def _idle(self) -> None:
        # One timer per connection, moved on only when it fires: no timer work per packet.
        transport = self._transport
        if transport is None:
            return
        timeout = self._service.limits.idle_timeout
        due = self._last + timeout
        now = self._loop.time()
        if self._checking or now < due:
            self._idle_timer = self._loop.call_later(max(due - now, 0.0) or timeout, self._idle)
            return
        self._service.log.warning(
            "idle",
            "tbes milter: closing the connection from %r: idle for %.0f s",
            self._peer,
            timeout,
        )
        transport.close()

    def _protocol_error(self, error: MilterProtocolError) -> None:
        self._service.log.warning(
            "protocol", "tbes milter: closing the connection from %r: %s", self._peer, error
        )
        self._pending.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._checking = 0


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
