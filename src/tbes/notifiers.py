"""Notifiers: how an :class:`~tbes.events.Event` reaches people (a log, a webhook, a mail).

Any object with ``notify(event)`` is a :class:`Notifier`. The enforcer may call one directly
after its compare-and-swap stored the change (and logs and swallows what it raises, so a
broken notifier never stops mail); the daemons instead hand the events to the outbox's
sender (:mod:`tbes.outbox`), which calls the notifiers below off the mail path and retries
what they raise (:class:`~tbes.errors.DeliveryError`). Events carry text from outside
(server ids, tenants and connector names come from configuration and connections, builds
from headers), so every notifier escapes it: a log line with
:func:`~tbes.render._common.printable`, a mail header likewise, a webhook as JSON.

Delivery is at least once: a sender that dies between sending and recording the delivery
sends again, with the same idempotency key (the webhook's ``Idempotency-Key`` header, the
mail's ``Message-ID``), both made from the event's deterministic id, so a receiver that
honours them sees each event once (docs/notifications.md).
"""

from __future__ import annotations

import datetime as dt
import email.message
import email.utils
import hashlib
import json
import logging
import smtplib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from tbes.catalog import Catalog
from tbes.errors import CatalogError, DeliveryError, InvalidValueError
from tbes.events import NOTICE_KINDS, Event, EventKind
from tbes.render._common import printable
from tbes.serde import converter

__all__ = [
    "CallbackNotifier",
    "EmailNotifier",
    "LoggingNotifier",
    "Notifier",
    "WebhookNotifier",
    "event_document",
]

_MAX_RESPONSE = 64 * 1024  # bytes of a webhook's answer read, at most: it is not used


@runtime_checkable
class Notifier(Protocol):
    """Something that tells people about events: mail, chat, a ticket, a log line."""

    def notify(self, event: Event) -> None:
        """Deliver one event; raise (:class:`~tbes.errors.DeliveryError`) if it was not."""
        ...


def _shown(value: object) -> str:
    return "-" if value is None else printable(str(value))


def event_document(event: Event, *, info_url: str | None = None) -> dict[str, Any]:
    """The event as JSON-ready data: every field (instants in ISO 8601), and ``info_url``.

    What the webhook posts. ``id`` is the deterministic event id; ``info_url`` the page the
    operator gives for the event's connector (``None`` without one).
    """
    document: dict[str, Any] = converter.unstructure(event)
    document["info_url"] = info_url
    return document


class LoggingNotifier:
    """A notifier that writes each event as one log line (logger ``tbes.events``).

    The line reads ``KIND id=… server=… tenant=… connector=… stage=… build=… at=… next=…:
    detail``, a missing value shown as ``-``; every field is escaped
    (:func:`~tbes.render._common.printable`), so no text from a message or a connection can
    break the line or act on a terminal.
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self._logger = logger or logging.getLogger("tbes.events")
        self._level = level

    def notify(self, event: Event) -> None:
        """Log the event: kind, id, server, tenant, connector, stage, build, instants, detail."""
        self._logger.log(
            self._level,
            "%s id=%s server=%s tenant=%s connector=%s stage=%s build=%s at=%s next=%s: %s",
            event.kind.value,
            event.id,
            _shown(event.server_id),
            _shown(event.tenant),
            _shown(event.connector),
            _shown(event.stage),
            _shown(event.build),
            event.at.isoformat(),
            _shown(None if event.next_change is None else event.next_change.isoformat()),
            _shown(event.detail),
        )


class CallbackNotifier:
    """A notifier that hands each event to a function of yours."""

    def __init__(self, callback: Callable[[Event], object]) -> None:
        self._callback = callback

    def notify(self, event: Event) -> None:
        """Call the callback with the event."""
        self._callback(event)


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 3600:
        raise InvalidValueError(f"{name} must be a number of seconds in (0, 3600), got {value!r}")
    return float(value)


def _info_urls(value: Mapping[str, str] | None) -> dict[str, str]:
    urls = dict(value or {})
    for key, url in urls.items():
        if not isinstance(key, str) or not isinstance(url, str) or not url:
            raise InvalidValueError(f"info_urls must map connector names to URLs, got {key!r}")
    return urls


class WebhookNotifier:
    """POSTs each event as JSON (:func:`event_document`) to ``url``, within ``timeout`` seconds.

    The request carries ``Content-Type: application/json`` and ``Idempotency-Key`` = the
    event's id, so a receiver that keeps the keys it has seen ignores a repeat. Any answer
    but 2xx, a refused connection or a timeout raises :class:`~tbes.errors.DeliveryError`;
    the sender retries it with exponential backoff. ``info_urls`` (connector name -> URL)
    and ``info_url`` (the rest) fill the document's ``info_url``. A ``url`` that is not
    ``http://`` or ``https://``, or a bad ``timeout``, raises InvalidValueError.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        info_url: str | None = None,
        info_urls: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise InvalidValueError(f"url must be an http:// or https:// URL, got {url!r:.80}")
        if not urllib.parse.urlsplit(url).hostname:
            raise InvalidValueError(f"url names no host: {url!r:.80}")
        self.url = url
        self._timeout = _seconds("timeout", timeout)
        self._info_url = info_url
        self._info_urls = _info_urls(info_urls)

    def notify(self, event: Event) -> None:
        """POST the event; DeliveryError unless the receiver answers 2xx in time."""
        url = self._info_urls.get(event.connector or "", self._info_url)
        body = json.dumps(event_document(event, info_url=url), ensure_ascii=True).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": event.id,
                "User-Agent": "tbes-notifier",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                response.read(_MAX_RESPONSE)
                status = response.status
        except urllib.error.HTTPError as error:
            raise DeliveryError(f"webhook {self.url}: HTTP {error.code}") from None
        except (urllib.error.URLError, OSError) as error:
            why = getattr(error, "reason", error)
            raise DeliveryError(f"webhook {self.url}: {printable(str(why))}") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"webhook {self.url}: HTTP {status}")


_NEXT = {
    EventKind.DETECTED: "Enforcement has started: report only at first, then throttling",
    EventKind.THROTTLING_SOON: "Throttling starts",
    EventKind.BLOCKING_SOON: "Blocking starts",
}


class EmailNotifier:
    """Mails each event (or a daily digest of a tenant's events) over SMTP to ``to``.

    ``host``/``port`` is the SMTP server (``starttls`` upgrades the connection, ``username``
    and ``password`` log in), ``sender`` the From address. Each mail goes to ``to`` and to
    the recipients the event's connector names (``recipients``: connector name -> addresses).
    The text says which server, its build, what stage it is in, what happens next and when,
    and how to fix it (the latest update of its product, from ``catalog``), as Microsoft's
    notices do, with the connector's ``info_urls`` entry (or ``info_url``). Everything from
    the event is escaped; the ``Message-ID`` is made from the event id (a digest's from its
    events' ids), so a resent mail is recognisably the same. A refused or failed delivery
    raises :class:`~tbes.errors.DeliveryError`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        to: Sequence[str] = (),
        recipients: Mapping[str, Sequence[str]] | None = None,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        catalog: Catalog | None = None,
        info_url: str | None = None,
        info_urls: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise InvalidValueError(f"host must be a non-empty str, got {host!r:.80}")
        if type(port) is not int or not 0 < port < 65536:
            raise InvalidValueError(f"port must be an int in 1..65535, got {port!r:.80}")
        self._host, self._port = host, port
        self._sender = _address("sender", sender)
        self._to = tuple(_address("to", each) for each in to)
        self._recipients = {
            name: tuple(_address(f"recipients of {name}", a) for a in addresses)
            for name, addresses in (recipients or {}).items()
        }
        self._starttls = bool(starttls)
        self._login = None if username is None else (username, password or "")
        self._timeout = _seconds("timeout", timeout)
        self._catalog = catalog
        self._info_url = info_url
        self._info_urls = _info_urls(info_urls)
        self._domain = self._sender.rpartition("@")[2] or "tbes.invalid"

    def recipients_of(self, connector: str | None) -> tuple[str, ...]:
        """Who hears of an event of ``connector``: ``to`` and the connector's recipients."""
        extra = self._recipients.get(connector or "", ())
        return tuple(dict.fromkeys((*self._to, *extra)))

    def notify(self, event: Event) -> None:
        """Mail one notice about ``event``."""
        subject = f"[tbes] {event.kind.value}: {event.server_id}"
        self._send((event.connector,), subject, self.text(event), f"{event.id}@{self._domain}")

    def notify_digest(self, tenant: str, events: Sequence[Event]) -> None:
        """Mail one digest of ``tenant``'s ``events`` to the recipients of all of them."""
        if not events:
            return
        ids = "\n".join(sorted(e.id for e in events))
        digest = hashlib.sha256(f"{tenant}\n{ids}".encode()).hexdigest()[:32]
        day = max(e.at for e in events).date()
        plural = "s" if len(events) != 1 else ""
        subject = f"[tbes] {len(events)} enforcement event{plural} of tenant {tenant}, {day}"
        body = "\n\n---\n\n".join(self.text(event) for event in events)
        connectors = tuple(dict.fromkeys(e.connector for e in events))
        self._send(connectors, subject, body, f"digest.{digest}@{self._domain}")

    def text(self, event: Event) -> str:
        """The body of the notice about ``event`` (escaped: one line per fact)."""
        lines = [
            f"Server:     {_shown(event.server_id)}",
            f"Tenant:     {_shown(event.tenant)}",
            f"Connector:  {_shown(event.connector)}",
            f"Build:      {_shown(event.build)}",
            f"Event:      {event.kind.value} at {_when(event.at)}",
            f"Stage:      {_shown(event.stage)}",
            f"What:       {_shown(event.detail)}",
        ]
        if event.kind in NOTICE_KINDS:
            lines.append(f"Next:       {_NEXT[event.kind]} on {_when(event.next_change)}.")
        elif event.next_change is not None:
            lines.append(f"Next:       the next stage starts on {_when(event.next_change)}.")
        elif event.kind is EventKind.REMEDIATED:
            lines.append("Next:       nothing: mail from this server is accepted.")
        lines.append(f"How to fix: {self._fix(event)}")
        url = self._info_urls.get(event.connector or "", self._info_url)
        if url:
            lines.append(f"More:       {_shown(url)}")
        lines.append(f"Event id:   {event.id}")
        return "\n".join(lines) + "\n"

    def _fix(self, event: Event) -> str:
        build = event.build
        if event.kind is EventKind.REMEDIATED:
            return "nothing left to do."
        if build is None or self._catalog is None:
            return "update the Exchange server to the latest Cumulative Update and Security Update."
        try:
            latest = self._catalog.latest(build.product)
        except CatalogError:
            return "update the Exchange server to a supported, current build."
        advice = f"install {latest.title} (build {latest.build}) or later"
        ended = self._catalog.end_of_support(build.product)
        if ended is not None and ended <= event.at.date():
            advice += (
                f"; {build.product.label} reached its end of support on {ended}: "
                "migrate to a supported version (Exchange Server SE)"
            )
        return advice + "."

    def _send(
        self, connectors: tuple[str | None, ...], subject: str, body: str, message_id: str
    ) -> None:
        to = tuple(dict.fromkeys(a for c in connectors for a in self.recipients_of(c)))
        if not to:
            return  # nobody to tell: delivered to no one, as configured
        message = email.message.EmailMessage()
        message["From"] = self._sender
        message["To"] = ", ".join(to)
        message["Subject"] = printable(subject)
        message["Message-ID"] = f"<{message_id}>"
        message["Date"] = email.utils.formatdate(usegmt=True)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body)
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                if self._starttls:
                    smtp.starttls()
                if self._login is not None:
                    smtp.login(*self._login)
                refused = smtp.send_message(message)
        except (TimeoutError, smtplib.SMTPException, OSError) as error:
            raise DeliveryError(
                f"mail via {self._host}:{self._port}: {printable(str(error))}"
            ) from None
        if refused:
            raise DeliveryError(f"mail via {self._host}:{self._port}: refused {sorted(refused)}")


def _address(name: str, value: object) -> str:
    if not isinstance(value, str) or "@" not in value or any(c in value for c in "\r\n,<>"):
        raise InvalidValueError(f"{name} must be a mail address, got {value!r:.80}")
    return value.strip()


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"
