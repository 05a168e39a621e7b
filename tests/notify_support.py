"""Real receivers on loopback for the notification tests: a webhook and an SMTP sink.

:class:`HookServer` is an :mod:`http.server` on 127.0.0.1 that keeps every POST (its
``Idempotency-Key`` and JSON body) and can be told to answer 503, as a receiver that is
down does. :class:`MailSink` is an aiosmtpd Controller that keeps every message. Both
count what arrived raw and what a receiver honouring the idempotency key (the header, the
``Message-ID``) would keep.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import http.server
import json
import threading
from typing import Any

from aiosmtpd.controller import Controller

from adapter_support import free_port


class HookServer:
    """A webhook receiver on loopback (start with :meth:`start`, end with :meth:`stop`)."""

    def __init__(self, port: int = 0) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.down = False  # answer 503 while true
        self.stall = False  # keep the request unanswered (after recording it) while true
        self.released = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if outer.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                with outer._lock:
                    outer.posts.append((self.headers.get("Idempotency-Key", ""), json.loads(body)))
                if outer.stall:  # received, never acknowledged: the sender dies waiting
                    outer.released.wait(30)
                    return
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/tbes"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> HookServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()

    def kept(self) -> dict[str, dict[str, Any]]:
        """What a receiver honouring ``Idempotency-Key`` keeps: the first body per key."""
        with self._lock:
            kept: dict[str, dict[str, Any]] = {}
            for key, body in self.posts:
                kept.setdefault(key, body)
            return kept


class _Handler:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 kept"


class MailSink:
    """An SMTP sink on loopback keeping every message it is given."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._handler = _Handler()
        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        return self._handler.messages

    @property
    def envelopes(self) -> list[tuple[str, list[str]]]:
        return self._handler.envelopes

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def kept(self) -> dict[str, email.message.EmailMessage]:
        """What a receiver honouring ``Message-ID`` keeps: the first message per id."""
        kept: dict[str, email.message.EmailMessage] = {}
        for message in self.messages:
            kept.setdefault(str(message["Message-ID"]), message)
        return kept
