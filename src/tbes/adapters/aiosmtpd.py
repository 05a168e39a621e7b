"""An aiosmtpd handler that enforces at end of DATA (extra ``smtp``).

aiosmtpd calls ``handle_DATA`` once the whole message is in: the handler reads the top
:data:`~tbes.received.MAX_RECEIVED` ``Received`` values from its header block
(:func:`~tbes.received.received_values` stops at the first empty line or at the cap, and
never decodes the header block whole, so a million Received lines cost no more than 200),
takes the identity from the connection — the peer address
of ``session.peer`` and the subject of a verified TLS client certificate, never the HELO
name or a header — and asks the shared :class:`~tbes.enforcer.Enforcer`. The check does
blocking store I/O, so it runs in a worker thread and the event loop keeps serving other
sessions. A throttle or block is the decision's own reply line; otherwise the wrapped
``inner`` handler delivers (or ``250 OK`` when there is none). The EHLO reply advertises
``ENHANCEDSTATUSCODES``, which aiosmtpd does not itself, because the replies carry them.

Any fault is logged at WARNING and the message goes on to delivery (fail open), or is
deferred with ``451 4.3.0`` when the configuration says ``fail_closed``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tbes.adapters.config import AdapterConfig, Checker
from tbes.decision import Action
from tbes.enforcer import FAIL_CLOSED_REPLY, Connection
from tbes.received import MAX_RECEIVED, received_values

__all__ = ["EnforcingHandler", "peer_subject"]

_log = logging.getLogger(__name__)
_ENHANCED = "250-ENHANCEDSTATUSCODES"


def peer_subject(server: Any) -> str | None:
    """The common name of the client's verified TLS certificate, if the session has one."""
    transport = getattr(server, "transport", None)
    if transport is None:
        return None
    cert = transport.get_extra_info("peercert")
    if not isinstance(cert, dict):
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and isinstance(value, str):
                return value
    return None


def _peer_ip(session: Any) -> str | None:
    peer = getattr(session, "peer", None)
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return peer[0]
    return None


class EnforcingHandler:
    """aiosmtpd handler: decides in ``handle_DATA``; delivery is left to ``inner``.

    ``inner`` is any aiosmtpd handler with an async ``handle_DATA``; its reply is used
    for accepted messages. Subclass to add other hooks.
    """

    def __init__(self, checker: Checker, config: AdapterConfig, inner: Any = None) -> None:
        self._checker = checker
        self._config = config
        self._inner = inner

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        """The usual EHLO reply, plus ``ENHANCEDSTATUSCODES`` before its last line."""
        # With a 5-argument hook aiosmtpd leaves recording the name to the hook.
        session.host_name = hostname
        if _ENHANCED in responses:
            return responses
        return [*responses[:-1], _ENHANCED, *responses[-1:]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Throttle or block with the decision's reply; otherwise hand over to ``inner``."""
        conn: Connection | None = None
        try:
            conn = self.connection(server, session)
            content = envelope.original_content or envelope.content or b""
            received = received_values(content, limit=MAX_RECEIVED)
            decision = await asyncio.to_thread(self._checker.check, conn, received)
        except Exception:
            _log.warning(
                "tbes aiosmtpd: deciding for %s failed; %s the message",
                getattr(session, "peer", None),
                "deferring" if self._config.fail_closed else "accepting",
                exc_info=True,
            )
            # Monitor mode never refuses, not even on a fault.
            if conn is None or conn.connector is None:
                monitored = self._config.mode == "monitor"
            else:
                monitored = conn.connector in self._config.monitor_connectors
            if self._config.fail_closed and not monitored:
                return str(FAIL_CLOSED_REPLY)
        else:
            if decision.action is not Action.ACCEPT and decision.reply is not None:
                return str(decision.reply)
        return await self._deliver(server, session, envelope)

    def connection(self, server: Any, session: Any) -> Connection:
        """The connection's identity: peer address and TLS subject, mapped by the config."""
        return self._config.connection(
            peer_ip=_peer_ip(session), peer_host=None, tls_subject=peer_subject(server)
        )

    async def _deliver(self, server: Any, session: Any, envelope: Any) -> str:
        handle = getattr(self._inner, "handle_DATA", None)
        if handle is None:
            return "250 2.0.0 OK"
        status: str = await handle(server, session, envelope)
        return status
