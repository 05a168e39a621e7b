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
cannot hold a connection), the idle time between requests, and the time a check may hold
others: :meth:`Enforcer.check <tbes.enforcer.Enforcer.check>` is synchronous, so with a
store in the process (SQLite, memory) a check runs on the event loop, bounded by the
store's deadline and cheaper than a hand-off to a thread (docs/postfix.md has the
figures), and with any other store on the server's own pool of ``max_checks`` threads,
where a request that waits longer than ``queue_timeout`` gets the fault answer. What
peers do to it (resets, garbage, timeouts, refusals) is logged once per ``log_interval``
per kind, with a count of the ones suppressed, so a flood never becomes a flood of log
lines or tracebacks. Each decision is one line of the decision log
(:mod:`tbes.adapters._decision_log`); a daemon swaps in a reloaded configuration with
:meth:`PolicyService.replace` and stops with :meth:`PolicyService.drain`, which lets each
connection finish the answer in hand.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import re
import resource
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs

from tbes._slots import slot_filler
from tbes.adapters import _metrics
from tbes.adapters._decision_log import fault_decision, log_fault, run_check
from tbes.adapters._ratelimit import RateLimitedLogger
from tbes.adapters.config import AdapterConfig, Checker
from tbes.adapters.listen import ListenAddress, create_server, parse_listen_address
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
        # The last value wins, as in a dict built in order; built in C, not a Python loop.
        return dict(self.attributes).get(name, default)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.attributes)


# A run of request lines each ``name=value`` with a name that is not blank (bytes.strip's
# white space): the shape Postfix sends, checked in one pass; the line-by-line path names
# what is wrong when it does not match.
_WELL_FORMED = re.compile(rb"(?:[ \t\r\x0b\x0c]*[^ \t\r\n\x0b\x0c=][^\n=]*=[^\n]*\n)+")
# The empty line that ends a request (after a line's own newline).
_END = re.compile(rb"\n\r?\n")
_request = slot_filler(PolicyRequest)


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
        # The pending request's bytes; of them, the first ``_checked`` are whole lines
        # already checked, ``_count`` attributes. Kept so a request sent in pieces is
        # never scanned again from its start (a drip stays linear in its bytes).
        self._buffer = bytearray()
        self._checked = 0
        self._count = 0
        self._error: PolicyProtocolError | None = None

    @property
    def idle(self) -> bool:
        """True between requests: no partial line or attribute is pending."""
        return not self._buffer

    def feed(self, data: bytes) -> list[PolicyRequest]:
        """Consume ``data``; return the requests it completed, in order."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        text: bytes | bytearray
        if buffer:
            buffer += data
            text = buffer
        else:
            text = data  # the usual case: a whole request in one read, never copied
        requests: list[PolicyRequest] = []
        start = 0
        try:
            while (found := _END.search(text, start + max(self._checked - 1, 0))) is not None:
                lines_end = found.start() + 1  # after the last attribute's newline
                end = found.end()
                requests.append(self._complete(text, start, lines_end, end))
                start = end
                self._checked = self._count = 0
            self._check_pending(text, start)
        except PolicyProtocolError as error:
            self._error = error
            self._buffer = bytearray()
            raise
        if text is buffer:
            del buffer[:start]
        elif start < len(text):
            self._buffer = bytearray(text[start:])
        return requests

    def _complete(
        self, text: bytes | bytearray, start: int, lines_end: int, end: int
    ) -> PolicyRequest:
        """The request in ``text[start:end]``, its attribute lines ending at ``lines_end``."""
        size = end - start
        if not (
            size <= self._max_request
            and size <= self._max_line  # so that no line can be longer
            and _WELL_FORMED.fullmatch(text, start + self._checked, lines_end) is not None
            and self._count + text.count(b"\n", start + self._checked, lines_end)
            <= self._max_attributes
        ):
            # Something is over a limit or malformed: find what, line by line, in order.
            self._check_lines(text, start, lines_end)
            self._check_length(end - lines_end - 1)
            self._check_request(size)
        decoded = text[start:lines_end].decode("utf-8", errors="replace")
        lines = decoded[:-1].split("\n")
        if "\r" in decoded:
            lines = [line.removesuffix("\r") for line in lines]
        return _request(attributes=tuple([line.partition("=")[::2] for line in lines]))

    def _check_pending(self, text: bytes | bytearray, start: int) -> None:
        """Check the start of the next request in ``text[start:]``: whole lines and the rest."""
        last = text.rfind(b"\n", start)
        if last >= start + self._checked:
            self._check_lines(text, start, last + 1)
        # What is left is the start of the next line, of the pending request.
        self._check_length(len(text) - max(last + 1, start))
        self._check_request(len(text) - start)

    def _check_lines(self, text: bytes | bytearray, start: int, stop: int) -> None:
        """Check the unchecked whole lines of the request at ``start``, up to ``stop``."""
        position = start + self._checked
        while position < stop:
            newline = text.index(b"\n", position)
            self._check_length(newline - position)
            self._check_request(newline + 1 - start)
            line = bytes(text[position:newline]).removesuffix(b"\r")
            if not line:
                # Only a request's first line gets here empty: an empty line ends a request.
                raise PolicyProtocolError(
                    "empty policy request: an empty line before any name=value"
                )
            name, equals, _ = line.partition(b"=")
            if not equals or not name.strip():
                shown = line[:80].decode("utf-8", errors="replace")
                raise PolicyProtocolError(f"policy request line is not name=value: {shown!r}")
            if self._count >= self._max_attributes:
                raise PolicyProtocolError(
                    f"policy request has more than {self._max_attributes} attributes"
                )
            self._count += 1
            position = newline + 1
            self._checked = position - start

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


# Connections named per configuration and client, as Postfix's smtpd processes ask for the
# same few clients again and again: naming one parses its address and matches every rule.
# Keyed by the configuration's id and checked by identity, so a reload never answers from
# the old rules; cleared when full, so a flood of new clients cannot grow it.
_NAMED: dict[tuple[int, str | None, str | None, str | None], tuple[AdapterConfig, Connection]]
_NAMED = {}
_MAX_NAMED = 4096


def _connection(
    request: PolicyRequest, config: AdapterConfig, values: Mapping[str, str] | None = None
) -> Connection:
    # ``values``: the request's attributes as a dict, when the caller has made it already.
    values = dict(request.attributes) if values is None else values
    ip = values.get("client_address")
    host = values.get("client_name")
    subject = values.get("ccert_subject")
    key = (id(config), ip, host, subject)
    named = _NAMED.get(key)
    if named is not None and named[0] is config:
        return named[1]
    conn = config.connection(peer_ip=ip, peer_host=host, tls_subject=subject)
    if len(_NAMED) >= _MAX_NAMED:
        _NAMED.clear()
    _NAMED[key] = (config, conn)
    return conn


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

    values = dict(request.attributes)  # once: each get() of the request would make it again

    def ask() -> tuple[Connection, Sequence[str]]:
        return _connection(request, config, values), ()

    peer = values.get("client_address")
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


def _tristate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be True, False or None, got {value!r}")


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
    sends a request in one write), and for a peer to take its answer; ``idle_timeout``
    seconds between requests (longer than Postfix's ``smtpd_policy_service_max_idle``,
    300 s, so Postfix is the one that closes). Each kind of trouble is logged at most once
    per ``log_interval`` seconds.

    Where checks run: ``inline_checks`` ``None`` (the default) runs them on the event loop
    when the checker's store says it answers in process (``in_process``:
    :class:`~tbes.store.MemoryStore`, :class:`~tbes.store.SQLiteStore`), and on threads
    otherwise (PostgreSQL, a store of your own); ``True`` or ``False`` chooses. Inline, a
    check holds the loop at most for the store's deadline (``check_timeout``), and a
    request costs no thread hand-off. On threads, checks run on ``max_checks`` threads
    shared by all connections; a request that waits ``queue_timeout`` seconds for one gets
    the fault answer (``DUNNO``, or ``451 4.3.0`` with ``fail_closed``), well within
    Postfix's policy ``timeout``.
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
    inline_checks: bool | None = attrs.field(default=None, validator=_tristate)


def _runs_inline(checker: Checker, limits: PolicyLimits) -> bool:
    """Whether checks for ``checker`` run on the event loop (see :class:`PolicyLimits`)."""
    if limits.inline_checks is not None:
        return limits.inline_checks
    # Read through the daemon's watching wrapper, which passes attributes on.
    return getattr(getattr(checker, "store", None), "in_process", False) is True


_DUNNO_RESPONSE = format_response(DUNNO)
_INLINE_BATCH = 16  # checks on the loop per turn for one connection


class PolicyService:
    """The state one policy server shares across its connections: the client count, the check
    threads and the rate-limited log. :meth:`protocol` makes the handler of one connection."""

    def __init__(self, checker: Checker, config: AdapterConfig, limits: PolicyLimits) -> None:
        # One tuple, replaced whole on a reload (see replace()).
        self.current: tuple[AdapterConfig, Checker] = (config, checker)
        self._inline = _runs_inline(checker, limits)
        self._limits = limits
        self._draining = False
        self._connections: set[_PolicyConnection] = set()
        self._executor = ThreadPoolExecutor(limits.max_checks, thread_name_prefix="tbes-policy")
        # The semaphore, not the executor's queue, is where requests wait: a wait there can
        # be abandoned (queue_timeout) without leaving work behind.
        self._slots = asyncio.Semaphore(limits.max_checks)
        self._log = RateLimitedLogger(_log, limits.log_interval)

    @property
    def open_connections(self) -> int:
        """How many client connections are open."""
        return len(self._connections)

    def replace(self, config: AdapterConfig, checker: Checker) -> None:
        """Use ``config`` and ``checker`` from the next request on (a reload); open
        connections stay, and a request being checked ends with what it started with."""
        self.current = (config, checker)
        self._inline = _runs_inline(checker, self._limits)

    def drain(self) -> None:
        """Close each connection once it has answered the request in hand (on shutdown)."""
        self._draining = True
        for connection in list(self._connections):
            connection.close_if_idle()

    def protocol(self) -> asyncio.Protocol:
        """The handler of one new client connection (a protocol factory for asyncio)."""
        return _PolicyConnection(self)

    async def start(self, address: str | ListenAddress) -> asyncio.Server:
        """Listen on ``address`` (see :mod:`tbes.adapters.listen`) and return the server."""
        if isinstance(address, str):
            address = parse_listen_address(address)
        return await create_server(address, self.protocol)

    def close(self) -> None:
        """Abort the connections left and shut down the check threads."""
        for connection in list(self._connections):
            connection.abort()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _answer(self, request: PolicyRequest) -> str:
        """The action for ``request`` from a check on the threads (``max_checks``)."""
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


class _PolicyConnection(asyncio.Protocol):
    """One client connection: bytes in, requests to the checker, answers out in order.

    A protocol rather than a stream reader and a task: no coroutine, future or timeout
    object per request. One timer per connection watches both deadlines (a request's
    ``request_timeout``, the ``idle_timeout`` between requests) and is moved on only when
    it fires, so a request costs no timer work.
    """

    def __init__(self, service: PolicyService) -> None:
        limits = service._limits
        self._service = service
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = PolicyParser(
            max_line=limits.max_line,
            max_attributes=limits.max_attributes,
            max_request=limits.max_request_bytes,
        )
        self._waiting: collections.deque[PolicyRequest] = collections.deque()
        self._checking: asyncio.Task[str] | None = None  # a check on the threads
        self._started: float | None = None  # when the pending request's first byte came
        self._blocked: float | None = None  # when the peer stopped taking our answers
        self._last = 0.0  # the last byte in or answer out
        self._timer: asyncio.TimerHandle | None = None
        self._due = math.inf
        self._peer: object = None
        self._broken = False  # the peer sent what Postfix never sends
        self._deferred: asyncio.Handle | None = None  # the next batch of inline answers
        self._eof = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        service = self._service
        self._peer = transport.get_extra_info("peername")
        if len(service._connections) >= service._limits.max_clients:
            service._log.log(
                "max_clients",
                logging.WARNING,
                "tbes policy: %d clients connected (max_clients); closing new connections "
                "at once, such as %s",
                len(service._connections),
                self._peer,
            )
            transport.abort()
            return
        if service._draining:
            transport.abort()
            return
        self._transport = transport
        service._connections.add(self)
        _metrics.active().connections("policy", 1)
        self._last = self._loop.time()
        self._arm(self._last + service._limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        service = self._service
        if self in service._connections:
            service._connections.discard(self)
            _metrics.active().connections("policy", -1)
        if exc is not None and self._transport is not None:
            service._log.log(
                "reset", logging.INFO, "tbes policy: connection from %s ended: %r", self._peer, exc
            )
        self._transport = None
        self._waiting.clear()
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        try:
            self._received(data)
        except Exception:  # a bug: one traceback per interval, never one per connection
            self._service._log.log(
                "bug",
                logging.ERROR,
                "tbes policy: unexpected error on connection from %s; closing it",
                self._peer,
                exc_info=True,
            )
            self.abort()

    def eof_received(self) -> bool | None:
        # Answers still owed go out first; a check on the threads closes once it is written.
        if self._checking is None:
            return None  # close our side too
        self._eof = True
        return True

    def pause_writing(self) -> None:
        # The peer does not take its answers: read nothing more, and give it request_timeout.
        self._blocked = self._loop.time()
        if self._transport is not None:
            self._transport.pause_reading()
            self._arm(self._blocked + self._service._limits.request_timeout)

    def resume_writing(self) -> None:
        self._blocked = None
        if self._transport is not None and self._checking is None and self._deferred is None:
            self._transport.resume_reading()

    # control

    def abort(self) -> None:
        """Drop the connection at once."""
        if self._transport is not None:
            self._transport.abort()

    def close_if_idle(self) -> None:
        """Close the connection unless an answer is owed (then it closes once answered)."""
        if self._transport is not None and self._checking is None and not self._waiting:
            self._transport.close()

    # work

    def _received(self, data: bytes) -> None:
        now = self._loop.time()
        self._last = now
        parser = self._parser
        try:
            requests = parser.feed(data)
        except PolicyProtocolError as error:
            self._service._log.log(
                "protocol",
                logging.WARNING,
                "tbes policy: closing connection from %s: %s",
                self._peer,
                error,
            )
            self._close_after_answers()
            return
        if parser.idle:
            self._started = None
        elif requests or self._started is None:
            self._started = now  # the rest of this read starts the next request
            self._arm(now + self._service._limits.request_timeout)
        if requests:
            self._waiting.extend(requests)
            if self._checking is None:
                self._answer_waiting()

    def _answer_waiting(self) -> None:
        """Answer the requests in hand, in order; a check on the threads suspends that."""
        service = self._service
        transport = self._transport
        out: list[bytes] = []
        while self._waiting and transport is not None:
            if not service._inline:
                self._hand_off(self._waiting.popleft())
                break
            if len(out) == _INLINE_BATCH:
                # Many requests in one read (Postfix sends one at a time): answer them a
                # batch per turn of the loop, reading nothing more, so that the checks of
                # one peer never hold the other connections for more than a batch.
                transport.pause_reading()
                self._deferred = self._loop.call_soon(self._answer_deferred)
                break
            config, checker = service.current
            action = decide_request(self._waiting.popleft(), checker, config, service._log)
            out.append(_DUNNO_RESPONSE if action == DUNNO else format_response(action))
        if out and transport is not None:
            transport.write(b"".join(out) if len(out) > 1 else out[0])
            self._last = self._loop.time()
        if service._draining and self._checking is None:
            self.close_if_idle()

    def _answer_deferred(self) -> None:
        self._deferred = None
        if self._transport is None:
            return
        self._answer_waiting()
        if self._transport is not None and self._deferred is None and self._blocked is None:
            self._transport.resume_reading()

    def _hand_off(self, request: PolicyRequest) -> None:
        assert self._transport is not None
        self._transport.pause_reading()  # one check per connection at a time
        task = self._loop.create_task(self._service._answer(request))
        self._checking = task
        task.add_done_callback(self._checked)

    def _checked(self, task: asyncio.Task[str]) -> None:
        self._checking = None
        transport = self._transport
        if transport is None:
            return
        if task.cancelled() or task.exception() is not None:
            # decide_request never raises; a cancelled task means the loop is shutting down.
            action = _fault_action(self._service.current[0])
        else:
            action = task.result()
        transport.write(_DUNNO_RESPONSE if action == DUNNO else format_response(action))
        self._last = self._loop.time()
        if self._blocked is None:
            transport.resume_reading()
        if transport.is_closing():
            return
        if self._waiting:
            self._answer_waiting()
        elif self._service._draining or self._broken or self._eof:
            transport.close()

    def _close_after_answers(self) -> None:
        # A broken request ends the connection; answers owed for earlier ones still go out.
        self._waiting.clear()
        self._broken = True
        if self._checking is None and self._transport is not None:
            self._transport.close()

    def _arm(self, due: float) -> None:
        """Make the connection's one timer fire no later than ``due``."""
        if due >= self._due and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._due = due
        self._timer = self._loop.call_at(due, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._due = math.inf
        transport = self._transport
        if transport is None:
            return
        limits = self._service._limits
        now = self._loop.time()
        for since in (self._started, self._blocked):
            if since is not None and now >= since + limits.request_timeout:
                self._service._log.log(
                    "request_timeout",
                    logging.WARNING,
                    "tbes policy: closing connection from %s: a request took longer than "
                    "%.1f s (request_timeout); Postfix sends a request at once",
                    self._peer,
                    limits.request_timeout,
                )
                transport.abort()
                return
        dues = [
            since + limits.request_timeout
            for since in (self._started, self._blocked)
            if since is not None
        ]
        if self._checking is None and not dues:
            idle_due = self._last + limits.idle_timeout
            if now >= idle_due:
                self._service._log.log(
                    "idle",
                    logging.INFO,
                    "tbes policy: closing connection from %s: idle for %.0f s",
                    self._peer,
                    limits.idle_timeout,
                )
                transport.close()
                return
            dues.append(idle_due)
        self._arm(min(dues) if dues else now + limits.idle_timeout)


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
        server = await asyncio.get_running_loop().create_server(service.protocol, host, port)
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
