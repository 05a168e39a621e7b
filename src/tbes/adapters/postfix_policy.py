"""Postfix SMTP access policy delegation: a sans-I/O codec and a small asyncio server.

Postfix's ``check_policy_service`` sends a request of ``name=value`` lines ended by an
empty line and expects ``action=...`` and an empty line back, on a connection it keeps open
for further requests (Postfix SMTPD_POLICY_README). A policy request carries no message
headers, so this adapter cannot *observe* a build: it decides from the state already
stored for the client, as an early answer at RCPT time; the milter observes. A client with
no stored state, or one that is compliant, gets ``DUNNO`` (no opinion), so other
restrictions still apply.

Decisions that shaped it: the codec (:class:`PolicyParser`, :func:`format_response`) does
no I/O, so it is tested byte by byte, and it bounds memory: a line longer than
``max_line`` bytes or a request with more than ``max_attributes`` lines is a
:class:`PolicyProtocolError`, raised as soon as the limit is passed, never after buffering
the excess. Postfix never sends such input, so the server treats it as a peer that is not
Postfix: it logs a warning and disconnects, as the protocol prescribes for trouble. A fault
while deciding (store down, bug) answers ``DUNNO`` and logs a warning (fail open), or a
``451 4.3.0`` deferral when the configuration says ``fail_closed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator

import attrs

from tbes.adapters.config import FAULT_REPLY, AdapterConfig, Checker
from tbes.decision import Action, Decision
from tbes.errors import TbesError

__all__ = [
    "DUNNO",
    "PolicyParser",
    "PolicyProtocolError",
    "PolicyRequest",
    "action_for",
    "decide_request",
    "format_response",
    "handle_policy_connection",
    "run_policy_server",
    "serve_policy",
]

_log = logging.getLogger(__name__)

DUNNO = "DUNNO"
"""The policy action that expresses no opinion: Postfix goes on with its other checks."""

_DEFAULT_MAX_LINE = 4096
_DEFAULT_MAX_ATTRIBUTES = 256
_READ_SIZE = 4096


class PolicyProtocolError(TbesError, ValueError):
    """Input that is not a Postfix policy request: a line too long, too many or bad lines."""


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
        self, *, max_line: int = _DEFAULT_MAX_LINE, max_attributes: int = _DEFAULT_MAX_ATTRIBUTES
    ) -> None:
        if max_line < 1 or max_attributes < 1:
            raise ValueError(
                f"limits must be >= 1, got max_line={max_line!r}, max_attributes={max_attributes!r}"
            )
        self._max_line = max_line
        self._max_attributes = max_attributes
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
                line = bytes(self._buffer[:end]).removesuffix(b"\r")
                del self._buffer[: end + 1]
                request = self._line(line)
                if request is not None:
                    requests.append(request)
            self._check_length(len(self._buffer))
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


def _fault_action(config: AdapterConfig) -> str:
    return str(FAULT_REPLY) if config.fail_closed else DUNNO


def decide_request(request: PolicyRequest, checker: Checker, config: AdapterConfig) -> str:
    """The action for one request, failing open (or closed, if configured) on any fault."""
    try:
        conn = config.connection(
            peer_ip=request.get("client_address"),
            peer_host=request.get("client_name"),
            tls_subject=request.get("ccert_subject"),
        )
        # No headers at this stage: the state stored for this server decides (SPEC 9).
        return action_for(checker.check(conn, ()))
    except Exception:
        _log.warning(
            "tbes policy: deciding for client %s failed; answering %s",
            request.get("client_address"),
            _fault_action(config),
            exc_info=True,
        )
        return _fault_action(config)


async def handle_policy_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    checker: Checker,
    config: AdapterConfig,
    *,
    idle_timeout: float = 600.0,
) -> None:
    """Serve one Postfix policy client connection until it closes, idles out or misbehaves."""
    parser = PolicyParser()
    peer = writer.get_extra_info("peername")
    try:
        while True:
            data = await asyncio.wait_for(reader.read(_READ_SIZE), idle_timeout)
            if not data:
                return
            for request in parser.feed(data):
                action = await asyncio.to_thread(decide_request, request, checker, config)
                writer.write(format_response(action))
            await writer.drain()
    except PolicyProtocolError as error:
        _log.warning("tbes policy: closing connection from %s: %s", peer, error)
    except (TimeoutError, ConnectionError) as error:
        _log.info("tbes policy: connection from %s ended: %r", peer, error)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def serve_policy(
    checker: Checker,
    config: AdapterConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    idle_timeout: float = 600.0,
) -> asyncio.Server:
    """Start a policy server on ``host:port`` (0: any free port) and return it, serving.

    Use ``server.sockets[0].getsockname()`` for the port, ``async with server`` and
    ``await server.serve_forever()`` to run it.
    """

    async def _client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handle_policy_connection(reader, writer, checker, config, idle_timeout=idle_timeout)

    return await asyncio.start_server(_client, host, port)


def run_policy_server(
    checker: Checker, config: AdapterConfig, *, host: str = "127.0.0.1", port: int
) -> None:
    """Run a policy server on ``host:port`` until interrupted (blocking; for the CLI)."""

    async def _main() -> None:
        server = await serve_policy(checker, config, host=host, port=port)
        async with server:
            await server.serve_forever()

    asyncio.run(_main())
