"""Notifiers: what the enforcer hands each :class:`~tbes.events.Event` to, to tell people.

Any object with ``notify(event)`` is a :class:`Notifier`; two are shipped. The enforcer calls
the notifier only after its compare-and-swap stored the change, and logs and swallows what it
raises, so a broken notifier never stops mail. Events carry text from outside (server ids,
tenants and connector names come from configuration and connections, builds from headers),
so a notifier that writes them anywhere a person reads escapes them first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from tbes.events import Event
from tbes.render._common import printable

__all__ = ["CallbackNotifier", "LoggingNotifier", "Notifier"]


@runtime_checkable
class Notifier(Protocol):
    """Something that tells people about events: mail, chat, a ticket, a log line."""

    def notify(self, event: Event) -> None:
        """Deliver one event; an exception is logged by the enforcer and does not stop mail."""
        ...


def _shown(value: object) -> str:
    return "-" if value is None else printable(str(value))


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
