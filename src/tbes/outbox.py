"""The outbox sender: delivers the events the store's outbox holds, off the mail path.

The enforcer puts each event in the store's outbox in the transaction that stores the
change it announces (``Enforcer(outbox=True)``), so an event is stored exactly when its
change is. :class:`OutboxSender`, one background thread per daemon, claims the oldest
undelivered events for each :class:`Receiver`, hands them to its notifier and records the
delivery per receiver. Decisions: a claim is a lease (a sender killed holding it loses it
when it runs out, and the events go again); a failed delivery is retried after an
exponential backoff kept in the store, so it outlives a restart; each receiver is served
in order and stops at its first failure (a receiver that is down costs one timeout per
round, not one per event); and the outbox is pruned of delivered events after ``keep``
and of every event after ``expire`` (docs/notifications.md). Delivery is at least once;
receivers deduplicate by the event id (``Idempotency-Key``, ``Message-ID``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from tbes._instants import as_utc
from tbes.errors import InvalidValueError, StoreError, TbesError
from tbes.events import Event
from tbes.notifiers import EmailNotifier, Notifier
from tbes.render._common import printable
from tbes.store.protocol import Pending

__all__ = ["DEFAULTS", "OutboxSender", "Receiver", "backoff"]

_log = logging.getLogger("tbes.outbox")
_DAY = dt.timedelta(days=1)
_DIGEST_LIMIT = 1000


def _name(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValueError(f"a receiver's name must be a non-empty str, got {value!r:.80}")


def _notifier(instance: object, attribute: attrs.Attribute[Notifier], value: object) -> None:
    if not isinstance(value, Notifier):
        raise InvalidValueError(f"notifier must have notify(event), got {value!r:.80}")


def _connectors(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _hour(instance: object, attribute: attrs.Attribute[int | None], value: object) -> None:
    if value is not None and (type(value) is not int or not 0 <= value <= 23):
        raise InvalidValueError(f"digest_hour must be an int in 0..23 or None, got {value!r:.80}")


@attrs.frozen
class Receiver:
    """Who gets events: a named notifier, the connectors it hears of, and how often.

    ``name`` keys its deliveries in the store: renaming a receiver makes it a new one,
    which gets every event the outbox still holds. ``connectors`` (``None``: all events)
    limits it to the events of those connectors (others are recorded as not its own).
    ``digest_hour`` (an :class:`~tbes.notifiers.EmailNotifier` only) sends, once a day at
    that hour (UTC), one digest per tenant of the events before it.
    """

    name: str = attrs.field(validator=_name)
    notifier: Notifier = attrs.field(validator=_notifier)
    connectors: frozenset[str] | None = attrs.field(default=None, converter=_connectors)
    digest_hour: int | None = attrs.field(default=None, validator=_hour)

    def __attrs_post_init__(self) -> None:
        if self.digest_hour is not None and not isinstance(self.notifier, EmailNotifier):
            raise InvalidValueError(f"receiver {self.name!r}: only a mail notifier sends digests")

    def wants(self, event: Event) -> bool:
        """Whether ``event`` is for this receiver (by its connector)."""
        return self.connectors is None or event.connector in self.connectors


def backoff(attempts: int, first: dt.timedelta, last: dt.timedelta) -> dt.timedelta:
    """The wait after failed delivery ``attempts``: ``first``, doubled each time, up to ``last``."""
    if attempts > 40:  # 2**40 times anything sensible is past any cap
        return last
    wait: dt.timedelta = first * 2 ** max(attempts - 1, 0)
    return min(wait, last)


@attrs.frozen
class _Settings:
    lease: dt.timedelta = dt.timedelta(minutes=2)
    batch: int = 50
    interval: float = 2.0
    first_retry: dt.timedelta = dt.timedelta(seconds=10)
    last_retry: dt.timedelta = dt.timedelta(hours=1)
    keep: dt.timedelta = dt.timedelta(days=7)
    expire: dt.timedelta = dt.timedelta(days=30)
    prune_every: dt.timedelta = dt.timedelta(hours=1)


DEFAULTS = _Settings()
"""The sender's defaults: 2-minute leases, 50 events per receiver and round, a round every
2 s, retries from 10 s doubling to 1 h, delivered events kept 7 days, every event 30."""


class OutboxSender:
    """Delivers the outbox of ``store`` to ``receivers``, in a thread of its own (:meth:`start`).

    ``store`` is a store with an outbox (``supports_outbox``); ``clock`` returns the current
    instant. The settings are those of :data:`DEFAULTS` unless given. :meth:`run_once` does
    one round (what the thread does every ``interval`` seconds, and what tests call);
    :meth:`replace` swaps the receivers (a configuration reload); :meth:`stop` ends the
    thread after the round in hand. A store fault is logged and the round ends: the events
    stay in the outbox for the next.
    """

    def __init__(
        self,
        store: Any,
        receivers: Sequence[Receiver],
        *,
        clock: Callable[[], dt.datetime],
        **settings: Any,
    ) -> None:
        if not getattr(store, "supports_outbox", False):
            raise InvalidValueError(f"store {type(store).__name__} keeps no outbox")
        self._store = store
        self._receivers = _receivers(receivers)
        self._clock = clock
        self.settings = attrs.evolve(DEFAULTS, **settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned: dt.datetime | None = None

    @property
    def receivers(self) -> tuple[Receiver, ...]:
        """The receivers served."""
        return self._receivers

    def replace(self, receivers: Sequence[Receiver]) -> None:
        """Serve ``receivers`` from the next round on."""
        self._receivers = _receivers(receivers)

    def start(self) -> None:
        """Start the thread: a round now, then one every ``interval`` seconds."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="tbes-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after the round in hand (waiting at most ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the thread must outlive any fault; the next round retries
                _log.exception("tbes: the outbox sender's round failed")
            self._stop.wait(self.settings.interval)

    def run_once(self) -> int:
        """One round: every receiver's claimable events, then pruning if due; how many delivered."""
        now = as_utc(self._clock(), "the clock's time")
        delivered = 0
        for receiver in self._receivers:
            if self._stop.is_set():
                break
            try:
                delivered += self._serve(receiver, now)
            except StoreError as error:
                _log.warning("tbes: outbox of %s not served: %s", receiver.name, error)
                return delivered
        self._prune(now)
        return delivered

    def _serve(self, receiver: Receiver, now: dt.datetime) -> int:
        digest = receiver.digest_hour is not None
        limit = _DIGEST_LIMIT if digest else self.settings.batch
        pending = self._store.claim_events(
            receiver.name, now, lease=self.settings.lease, limit=limit
        )
        mine = []
        for each in pending:
            if receiver.wants(each.event):
                mine.append(each)
            else:  # not its connector: recorded, so it is never claimed for it again
                self._store.mark_delivered(receiver.name, each.event.id, now)
        if digest:
            return self._digest(receiver, mine, now)
        for index, each in enumerate(mine):
            try:
                receiver.notifier.notify(each.event)
            except Exception as error:
                self._failed(receiver, mine[index:], error, now)
                return index
            self._store.mark_delivered(receiver.name, each.event.id, now)
        return len(mine)

    def _digest(self, receiver: Receiver, pending: list[Pending], now: dt.datetime) -> int:
        assert receiver.digest_hour is not None
        assert isinstance(receiver.notifier, EmailNotifier)
        cutoff = dt.datetime.combine(now.date(), dt.time(receiver.digest_hour), dt.UTC)
        if cutoff > now:
            cutoff -= _DAY
        due: list[Pending] = []
        later: list[Pending] = []
        for each in pending:
            (due if each.event.at < cutoff else later).append(each)
        for each in later:  # into the next digest
            self._store.retry_later(receiver.name, each.event.id, cutoff + _DAY)
        tenants: dict[str, list[Pending]] = {}
        for each in due:
            tenants.setdefault(each.event.tenant, []).append(each)
        sent = 0
        for tenant, items in sorted(tenants.items()):
            try:
                receiver.notifier.notify_digest(tenant, [each.event for each in items])
            except Exception as error:
                self._failed(receiver, items, error, now)
                continue
            for each in items:
                self._store.mark_delivered(receiver.name, each.event.id, now)
            sent += len(items)
        return sent

    def _failed(
        self, receiver: Receiver, pending: list[Pending], error: Exception, now: dt.datetime
    ) -> None:
        """Put ``pending`` back, each to be retried after its backoff; log the failure once."""
        settings = self.settings
        first = pending[0]
        wait = backoff(first.attempts, settings.first_retry, settings.last_retry)
        reason = str(error) if isinstance(error, TbesError) else repr(error)
        _log.warning(
            "tbes: delivery to %s failed (attempt %d), retry in %s: %s",
            receiver.name,
            first.attempts,
            wait,
            printable(reason),
        )
        for each in pending:
            delay = backoff(each.attempts, settings.first_retry, settings.last_retry)
            self._store.retry_later(receiver.name, each.event.id, now + delay)

    def _prune(self, now: dt.datetime) -> None:
        if self._pruned is not None and now - self._pruned < self.settings.prune_every:
            return
        self._pruned = now
        try:
            gone = self._store.prune_outbox(
                now,
                keep=self.settings.keep,
                expire=self.settings.expire,
                receivers=[each.name for each in self._receivers],
            )
        except StoreError as error:
            _log.warning("tbes: outbox not pruned: %s", error)
            return
        if gone:
            _log.info("tbes: outbox pruned of %d events", gone)


def _receivers(values: Sequence[Receiver]) -> tuple[Receiver, ...]:
    receivers = tuple(values)
    names = [each.name for each in receivers if isinstance(each, Receiver)]
    if len(names) != len(receivers):
        raise InvalidValueError("receivers must be Receiver values")
    if len(set(names)) != len(names):
        raise InvalidValueError(f"receiver names must be unique, got {names}")
    return receivers
