"""Postfix SMTP access policy delegation: a sans-I/O codec and a small asyncio server.

Postfix's ``check_policy_service`` sends a request of ``name=value`` lines ended by an
empty line and expects ``action=...`` and an empty line back, on a connection it keeps open
for further requests (Postfix SMTPD_POLICY_README). A policy request carries no message
headers, so this adapter cannot *observe* a build, nor tell which server behind the
client's connector sends: it refuses only what is certain, as an early answer at RCPT time
(:meth:`Enforcer.check_envelope <tbes.enforcer.Enforcer.check_envelope>`: every server
of the connector seen lately would be refused); the milter observes and decides the rest. A
client with no stored state, or one that may be compliant, gets ``DUNNO`` (no opinion), so
other restrictions still apply.

Decisions that shaped it: the codec (:class:`PolicyParser`, :func:`format_response`) does
no I/O, so it is tested byte by byte, and it bounds memory: a line longer than
``max_line`` bytes, a request with more than ``max_attributes`` lines or more than
``max_request`` bytes in all is a :class:`PolicyProtocolError`, raised as soon as the limit
is passed, never after buffering the excess. Postfix never sends such input, so the server
treats it as a peer that is not Postfix: it logs a warning and disconnects, as the protocol
prescribes for trouble. A fault while deciding (store down, bug) answers ``DUNNO`` and logs
a warning (fail open), or a ``451 4.3.0`` deferral when the configuration says
``fail_closed``.

The server bounds everything a peer can make it hold (:class:`PolicyLimits`): a number of
concurrent clients (past it a new connection is closed at once), the bytes of one request,
the time from a request's first byte to its end (not reset by each byte, so a slow drip
cannot hold a connection), the idle time between requests, and the number of checks
running at once: :meth:`Enforcer.check <tbes.enforcer.Enforcer.check>` is synchronous, so
checks run on the server's own pool of ``max_checks`` threads, and a request that waits
longer than ``queue_timeout`` for one gets the fault answer. What peers do to it (resets,
garbage, timeouts, refusals) is logged once per ``log_interval`` per kind, with a count of
the ones suppressed, so a flood never becomes a flood of log lines or tracebacks. Each
decision is one line of the decision log (:mod:`tbes.adapters._decision_log`); a daemon
swaps in a reloaded configuration with :meth:`PolicyService.replace` and stops with
:meth:`PolicyService.drain`, which lets each connection finish the answer in hand.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import weakref
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import attrs

from tbes.adapters import _metrics
from tbes.adapters._decision_log import fault_decision, log_fault, run_check
from tbes.adapters._ratelimit import RateLimitedLogger
from tbes.adapters.config import AdapterConfig, Checker
from tbes.adapters.listen import ListenAddress, parse_listen_address, start_server
from tbes.decision import Action, Decision
from tbes.enforcer import FAIL_CLOSED_REPLY, Connection
from tbes.errors import PolicyProtocolError

__all__ = [
    "DUNNO",
    "PolicyLimits",
    "PolicyParser",
    "PolicyProtocolError",
    "PolicyRequest",
    "PolicyService",
    "action_for",
    "decide_request",
    "format_response",
    "run_policy_server",
    "serve_policy",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

DUNNO = "DUNNO"
"""The policy action that expresses no opinion: Postfix goes on with its other checks."""

_DEFAULT_MAX_LINE = 4096
_DEFAULT_MAX_ATTRIBUTES = 256
# A Postfix 3.x request is some 30 short attributes (addresses, names, TLS data): well
# under 4 KiB. 32 KiB leaves room for long ones and bounds a connection's parser memory.
_DEFAULT_MAX_REQUEST = 32 * 1024
_READ_SIZE = 4096


def _pairs(values: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((str(name), str(value)) for name, value in values)


@attrs.frozen
class PolicyRequest:
    """One policy request: its ``name=value`` attributes in the order received.

    A name sent twice keeps its last value for :meth:`get`, as Postfix attribute lists do.
    """

    attributes: tuple[tuple[str, str], ...] = attrs.field(converter=_pairs)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of attribute ``name``, or ``default`` when the request lacks it."""
        for key, value in reversed(self.attributes):
            if key == name:
                return value
        return default

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.attributes)


class PolicyParser:
    """Incremental parser of policy requests from a byte stream (no I/O).

    :meth:`feed` takes any chunk of bytes and returns the requests it completed. After a
    :class:`PolicyProtocolError` the parser stays broken: the connection must be closed.
    """

    def __init__(
        self,
        *,
        max_line: int = _DEFAULT_MAX_LINE,
        max_attributes: int = _DEFAULT_MAX_ATTRIBUTES,
        max_request: int = _DEFAULT_MAX_REQUEST,
    ) -> None:
        if max_line < 1 or max_attributes < 1 or max_request < 1:
            raise ValueError(
                f"limits must be >= 1, got max_line={max_line!r}, "
                f"max_attributes={max_attributes!r}, max_request={max_request!r}"
            )
        self._max_line = max_line
        self._max_attributes = max_attributes
        self._max_request = max_request
        self._request_bytes = 0  # bytes of the pending request's lines already consumed
        self._buffer = bytearray()
        self._pending: list[tuple[str, str]] = []
        self._error: PolicyProtocolError | None = None

    @property
    def idle(self) -> bool:
        """True between requests: no partial line or attribute is pending."""
        return not self._buffer and not self._pending

    def feed(self, data: bytes) -> list[PolicyRequest]:
        """Consume ``data``; return the requests it completed, in order."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        requests: list[PolicyRequest] = []
        try:
            while (end := self._buffer.find(b"\n")) >= 0:
                self._check_length(end)
                self._check_request(self._request_bytes + end + 1)
                line = bytes(self._buffer[:end]).removesuffix(b"\r")
                del self._buffer[: end + 1]
                self._request_bytes += end + 1
                request = self._line(line)
                if request is not None:
                    requests.append(request)
                    self._request_bytes = 0
            # What is left is the start of the next line, of the pending request.
            self._check_length(len(self._buffer))
            self._check_request(self._request_bytes + len(self._buffer))
        except PolicyProtocolError as error:
            self._error = error
            self._buffer.clear()
            raise
        return requests

    def _check_length(self, length: int) -> None:
        if length > self._max_line:
            raise PolicyProtocolError(
                f"policy request line longer than {self._max_line} bytes "
                f"(at least {length}); Postfix never sends such lines"
            )

    def _check_request(self, size: int) -> None:
        if size > self._max_request:
            raise PolicyProtocolError(
                f"policy request longer than {self._max_request} bytes "
                f"(at least {size}); Postfix never sends such requests"
            )

    def _line(self, line: bytes) -> PolicyRequest | None:
        if not line:
            if not self._pending:
                raise PolicyProtocolError(
                    "empty policy request: an empty line before any name=value"
                )
            request = PolicyRequest(self._pending)
            self._pending = []
            return request
        name, equals, value = line.partition(b"=")
        if not equals or not name.strip():
            shown = line[:80].decode("utf-8", errors="replace")
            raise PolicyProtocolError(f"policy request line is not name=value: {shown!r}")
        if len(self._pending) >= self._max_attributes:
            raise PolicyProtocolError(
                f"policy request has more than {self._max_attributes} attributes"
            )
        self._pending.append(
            (name.decode("utf-8", errors="replace"), value.decode("utf-8", errors="replace"))
        )
        return None


def format_response(action: str) -> bytes:
    """The bytes that answer one request with ``action`` (``action=...`` and an empty line)."""
    if not action or any(c in action for c in "\r\n\0") or action != action.strip():
        raise ValueError(f"a policy action is one non-empty line without edge spaces: {action!r}")
    return f"action={action}\n\n".encode()


def action_for(decision: Decision) -> str:
    """The policy action for a decision: the reply line to defer or reject, else ``DUNNO``."""
    if decision.action is Action.ACCEPT or decision.reply is None:
        return DUNNO
    return str(decision.reply)


def _fault_action(config: AdapterConfig, request: PolicyRequest | None = None) -> str:
    closes = (
        config.fail_closed
        if request is None
        else config.fails_closed(
            peer_ip=request.get("client_address"),
            peer_host=request.get("client_name"),
            tls_subject=request.get("ccert_subject"),
        )
    )
    if config.mode == "monitor" and request is None:
        closes = False  # monitor mode never refuses
    return str(FAIL_CLOSED_REPLY) if closes else DUNNO


def _connection(request: PolicyRequest, config: AdapterConfig) -> Connection:
    return config.connection(
        peer_ip=request.get("client_address"),
        peer_host=request.get("client_name"),
        tls_subject=request.get("ccert_subject"),
    )


def decide_request(
    request: PolicyRequest,
    checker: Checker,
    config: AdapterConfig,
    faults: RateLimitedLogger | None = None,
) -> str:
    """The action for one request, failing open (or closed, if configured) on any fault.

    No headers at this stage, so the sending server is unknown: only what every active
    server behind the connector would be refused is refused (docs/postfix.md). The
    decision is logged (:func:`~tbes.adapters._decision_log.run_check`).
    """

    def ask() -> tuple[Connection, Sequence[str]]:
        return _connection(request, config), ()

    peer = request.get("client_address")
    envelope = _Envelope(checker)
    return action_for(run_check("policy", envelope, config, ask, peer=peer, faults=faults))


class _Envelope:
    """``checker`` as the policy service asks it: ``check_envelope`` when it has one."""

    __slots__ = ("_checker",)

    def __init__(self, checker: Checker) -> None:
        self._checker = checker

    def check(self, conn: Connection, received: Sequence[str]) -> Decision:
        envelope = getattr(self._checker, "check_envelope", None)
        if callable(envelope):
            decision: Decision = envelope(conn)
            return decision
        return self._checker.check(conn, received)

    def __getattr__(self, name: str) -> object:
        # The decision log reads the checker's policy and catalog.
        return getattr(self._checker, name)


def _count(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


def _seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{attribute.name} must be a finite number of seconds > 0, got {value!r}")


@attrs.frozen
class PolicyLimits:
    """What one policy server lets its peers hold; the defaults suit a Postfix host.

    ``max_clients`` concurrent connections (Postfix keeps one per ``smtpd`` process, 100 by
    default); a connection past it is closed at once. The process needs file descriptors
    for all of them, so keep it well under ``ulimit -n``. Per connection: ``max_line``
    bytes per line, ``max_attributes`` lines and ``max_request_bytes`` bytes per request;
    ``request_timeout`` seconds from a request's first byte to its empty line (Postfix
    sends a request in one write); ``idle_timeout`` seconds between requests (longer than
    Postfix's ``smtpd_policy_service_max_idle``, 300 s, so Postfix is the one that closes).
    Checks run on ``max_checks`` threads shared by all connections; a request that waits
    ``queue_timeout`` seconds for one gets the fault answer (``DUNNO``, or ``451 4.3.0``
    with ``fail_closed``), well within Postfix's policy ``timeout``. Each kind of trouble is
    logged at most once per ``log_interval`` seconds.
    """

    max_clients: int = attrs.field(default=500, validator=_count)
    max_line: int = attrs.field(default=_DEFAULT_MAX_LINE, validator=_count)
    max_attributes: int = attrs.field(default=_DEFAULT_MAX_ATTRIBUTES, validator=_count)
    max_request_bytes: int = attrs.field(default=_DEFAULT_MAX_REQUEST, validator=_count)
    request_timeout: float = attrs.field(default=10.0, validator=_seconds)
    idle_timeout: float = attrs.field(default=600.0, validator=_seconds)
    max_checks: int = attrs.field(default=8, validator=_count)
    queue_timeout: float = attrs.field(default=5.0, validator=_seconds)
    log_interval: float = attrs.field(default=60.0, validator=_seconds)


class _RequestDeadline(Exception):
    """A request (or the answer to it) took longer than ``request_timeout``."""


class PolicyService:
    """The state one policy server shares across its connections: the client count, the check
    threads and the rate-limited log. :meth:`client` is the connection handler to serve."""

    def __init__(self, checker: Checker, config: AdapterConfig, limits: PolicyLimits) -> None:
        # One tuple, replaced whole on a reload (see replace()).
        self.current: tuple[AdapterConfig, Checker] = (config, checker)
        self._limits = limits
        self._clients = 0
        self._draining = False
        # Open connections, each with whether it is answering a request now.
        self._writers: dict[asyncio.StreamWriter, bool] = {}
        self._executor = ThreadPoolExecutor(limits.max_checks, thread_name_prefix="tbes-policy")
        # The semaphore, not the executor's queue, is where requests wait: a wait there can
        # be abandoned (queue_timeout) without leaving work behind.
        self._slots = asyncio.Semaphore(limits.max_checks)
        self._log = RateLimitedLogger(_log, limits.log_interval)

    @property
    def open_connections(self) -> int:
        """How many client connections are open."""
        return len(self._writers)

    def replace(self, config: AdapterConfig, checker: Checker) -> None:
        """Use ``config`` and ``checker`` from the next request on (a reload); open
        connections stay, and a request being checked ends with what it started with."""
        self.current = (config, checker)

    def drain(self) -> None:
        """Close each connection once it has answered the request in hand (on shutdown)."""
        self._draining = True
        for writer, answering in list(self._writers.items()):
            if not answering:
                writer.transport.close()

    async def start(self, address: str | ListenAddress) -> asyncio.Server:
        """Listen on ``address`` (see :mod:`tbes.adapters.listen`) and return the server."""
        if isinstance(address, str):
            address = parse_listen_address(address)
        return await start_server(address, self.client)

    def close(self) -> None:
        """Abort the connections left and shut down the check threads."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= self._limits.max_clients:
            self._log.log(
                "max_clients",
                logging.WARNING,
                "tbes policy: %d clients connected (max_clients); closing new connections "
                "at once, such as %s",
                self._clients,
                writer.get_extra_info("peername"),
            )
            writer.transport.abort()
            return
        if self._draining:
            writer.transport.abort()
            return
        self._clients += 1
        self._writers[writer] = False
        _metrics.active().connections("policy", 1)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # The loop is shutting down. Nothing awaits this task, and Python 3.11's stream
            # callback logs a traceback for each cancelled one: end it quietly instead.
            pass
        finally:
            self._clients -= 1
            del self._writers[writer]
            _metrics.active().connections("policy", -1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limits = self._limits
        parser = PolicyParser(
            max_line=limits.max_line,
            max_attributes=limits.max_attributes,
            max_request=limits.max_request_bytes,
        )
        peer = writer.get_extra_info("peername")
        loop = asyncio.get_running_loop()
        started: float | None = None  # when the first byte of the pending request came
        try:
            while True:
                if started is None:
                    try:
                        async with asyncio.timeout(limits.idle_timeout):
                            data = await reader.read(_READ_SIZE)
                    except TimeoutError:
                        self._log.log(
                            "idle",
                            logging.INFO,
                            "tbes policy: closing connection from %s: idle for %.0f s",
                            peer,
                            limits.idle_timeout,
                        )
                        return
                else:
                    data = await self._before(started, reader.read(_READ_SIZE))
                if not data:
                    return
                arrived = loop.time()
                requests = parser.feed(data)
                for request in requests:
                    self._writers[writer] = True
                    writer.write(format_response(await self._answer(request)))
                    # A peer that does not read its answers must not hold them, or us, either.
                    await self._before(loop.time(), writer.drain())
                    self._writers[writer] = False
                if self._draining:
                    return
                if parser.idle:
                    started = None
                elif requests or started is None:
                    started = arrived  # the rest of this read starts the next request
        except _RequestDeadline:
            self._log.log(
                "request_timeout",
                logging.WARNING,
                "tbes policy: closing connection from %s: a request took longer than %.1f s "
                "(request_timeout); Postfix sends a request at once",
                peer,
                limits.request_timeout,
            )
        except PolicyProtocolError as error:
            self._log.log(
                "protocol",
                logging.WARNING,
                "tbes policy: closing connection from %s: %s",
                peer,
                error,
            )
        except ConnectionError as error:
            self._log.log(
                "reset", logging.INFO, "tbes policy: connection from %s ended: %r", peer, error
            )
        except Exception:  # a bug: one traceback per interval, never one per connection
            self._log.log(
                "bug",
                logging.ERROR,
                "tbes policy: unexpected error on connection from %s; closing it",
                peer,
                exc_info=True,
            )
        finally:
            # Let the last answers go out, but not for longer than a request may take.
            writer.close()
            try:
                async with asyncio.timeout(limits.request_timeout):
                    await writer.wait_closed()
            except Exception:  # nothing more to do for this peer
                pass
            finally:
                writer.transport.abort()  # a no-op once closed

    async def _before(self, started: float, awaitable: Awaitable[_T]) -> _T:
        deadline = started + self._limits.request_timeout
        try:
            async with asyncio.timeout_at(deadline):
                return await awaitable
        except TimeoutError:
            raise _RequestDeadline from None

    async def _answer(self, request: PolicyRequest) -> str:
        config, checker = self.current
        fault = _fault_action(config)
        try:
            async with asyncio.timeout(self._limits.queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            self._log.log(
                "queue_timeout",
                logging.WARNING,
                "tbes policy: all %d check threads busy for %.1f s (max_checks, "
                "queue_timeout); answering %s",
                self._limits.max_checks,
                self._limits.queue_timeout,
                fault,
            )
            try:
                conn: Connection | None = _connection(request, config)
            except Exception:  # logged as a fault when a check meets it
                conn = None
            log_fault(
                "policy", config, conn, "busy", fault_decision(config, "no check thread", conn)
            )
            return fault
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, decide_request, request, checker, config, self._log
            )
        finally:
            self._slots.release()


# Descriptors the process needs besides its clients: stdio, the listener, store, logs.
_SPARE_FDS = 64


def _warn_if_fds_short(max_clients: int) -> None:
    # Past the descriptor limit, accept() fails and asyncio logs a traceback per attempt:
    # the cap only protects the process when it is under that limit.
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_clients + _SPARE_FDS > soft:
        _log.warning(
            "tbes policy: max_clients=%d leaves too few of the %d file descriptors this "
            "process may open (ulimit -n); lower max_clients or raise the limit",
            max_clients,
            soft,
        )


async def serve_policy(
    checker: Checker,
    config: AdapterConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: PolicyLimits | None = None,
) -> asyncio.Server:
    """Start a policy server on ``host:port`` (0: any free port) and return it, serving.

    Use ``server.sockets[0].getsockname()`` for the port, ``async with server`` and
    ``await server.serve_forever()`` to run it. ``limits`` (default :class:`PolicyLimits`)
    bounds what peers can make it hold.
    """
    if limits is None:
        limits = PolicyLimits()
    elif not isinstance(limits, PolicyLimits):
        raise TypeError(f"limits must be a PolicyLimits, got {type(limits).__name__}")
    _warn_if_fds_short(limits.max_clients)
    service = PolicyService(checker, config, limits)
    try:
        server = await asyncio.start_server(service.client, host, port)
    except BaseException:
        service.close()
        raise
    # The check threads live as long as the server object.
    weakref.finalize(server, service.close)
    return server


def run_policy_server(
    checker: Checker,
    config: AdapterConfig,
    *,
    host: str = "127.0.0.1",
    port: int,
    limits: PolicyLimits | None = None,
) -> None:
    """Run a policy server on ``host:port`` until interrupted (blocking; for the CLI)."""

    async def _main() -> None:
        server = await serve_policy(checker, config, host=host, port=port, limits=limits)
        async with server:
            await server.serve_forever()

    asyncio.run(_main())
