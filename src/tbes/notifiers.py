"""Notifiers: what the enforcer hands each :class:`~tbes.events.Event` to, to tell people.

Any object with ``notify(event)`` is a :class:`Notifier`; two are shipped. The enforcer calls
the notifier only after its compare-and-swap stored the change, and logs and swallows what it
raises, so a broken notifier never stops mail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from tbes.events import Event

__all__ = ["CallbackNotifier", "LoggingNotifier", "Notifier"]


@runtime_checkable
class Notifier(Protocol):
    """Something that tells people about events: mail, chat, a ticket, a log line."""

    def notify(self, event: Event) -> None:
        """Deliver one event; an exception is logged by the enforcer and does not stop mail."""
        ...


class LoggingNotifier:
    """A notifier that writes each event as one log line (logger ``tbes.events``)."""

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self._logger = logger or logging.getLogger("tbes.events")
        self._level = level

    def notify(self, event: Event) -> None:
        """Log the event: kind, server, tenant, stage, build and detail."""
        self._logger.log(
            self._level,
            "%s server=%s tenant=%s stage=%s build=%s at=%s: %s",
            event.kind.value,
            event.server_id,
            event.tenant,
            event.stage,
            event.build,
            event.at.isoformat(),
            event.detail,
        )


class CallbackNotifier:
    """A notifier that hands each event to a function of yours."""

    def __init__(self, callback: Callable[[Event], object]) -> None:
        self._callback = callback

    def notify(self, event: Event) -> None:
        """Call the callback with the event."""
        self._callback(event)
