"""The enforcer: the core's decisions applied to live connections, with state kept in a store.

For each connection it finds the sending Exchange server's build in the Received headers,
assesses it, records the observation in a :class:`~tbes.store.StateStore` by
compare-and-swap (retrying a bounded number of times when another process got there
first) and decides. Three decisions shaped it. Mail keeps flowing when tbes cannot work: a
store fault or an unreadable row accepts the connection and logs a warning, unless the
operator chose ``fail_closed``. The server's identity comes from the connection, never
from a header, so stripping headers never evades enforcement: the stored state still
decides. And people hear of each change exactly once, even with many MTA processes
sharing one store, because only the writer whose compare-and-swap stored the change
notifies (the stage last announced, ``notified_stage``, is part of the stored state).
:func:`utc_now` is the only place tbes reads the clock.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

import attrs

from tbes.catalog import Catalog, Compliance, assess
from tbes.decide import Action, ConnectorKind, Decision, Policy, SmtpReply, decide
from tbes.errors import (
    InvalidValueError,
    NaiveDatetimeError,
    StoreConflictError,
    StoreError,
    TbesError,
)
from tbes.ledger import PauseLedger
from tbes.received import SenderEvidence, find_sender
from tbes.stages import Stage
from tbes.state import ServerState, observe
from tbes.store.protocol import LedgerWrite, StateStore, StateWrite, Versioned, Write
from tbes.version import ExchangeBuild

__all__ = [
    "FAIL_CLOSED_REPLY",
    "CallbackNotifier",
    "Connection",
    "Enforcer",
    "Event",
    "EventKind",
    "LoggingNotifier",
    "Notifier",
    "utc_now",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_ZERO = dt.timedelta(0)

FAIL_CLOSED_REPLY = SmtpReply(
    451, "4.3.0", "Temporary failure checking the sending Exchange server; try again later"
)
"""The reply when the store fails and the enforcer was made with ``fail_closed=True``."""


def utc_now() -> dt.datetime:
    """The current instant in UTC: the only clock read in tbes."""
    return dt.datetime.now(dt.UTC)


def _non_empty(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidValueError(f"{attribute.name} must be a non-empty str, got {value!r}")


_optional_str = attrs.validators.optional(attrs.validators.instance_of(str))


@attrs.frozen
class Connection:
    """Who is connecting, as the MTA knows it: never taken from the message's headers.

    ``server_id`` is the stable name the operator gives the sending server (e.g. the
    connector or the TLS subject); ``tenant`` owns its pause quota; ``kind`` says which
    kind of connector it came through; the peer fields are for logs and evidence matching.
    """

    server_id: str = attrs.field(validator=_non_empty)
    tenant: str = attrs.field(validator=_non_empty)
    kind: ConnectorKind = attrs.field(validator=attrs.validators.instance_of(ConnectorKind))
    peer_ip: str | None = attrs.field(default=None, validator=_optional_str)
    peer_host: str | None = attrs.field(default=None, validator=_optional_str)
    tls_subject: str | None = attrs.field(default=None, validator=_optional_str)


class EventKind(enum.Enum):
    """What happened to a server, as announced to people (see docs/storage.md)."""

    DETECTED = "DETECTED"
    STAGE_CHANGED = "STAGE_CHANGED"
    BLOCKING_STARTED = "BLOCKING_STARTED"
    FULLY_BLOCKED = "FULLY_BLOCKED"
    PAUSED = "PAUSED"
    RESUMED = "RESUMED"
    REMEDIATED = "REMEDIATED"


def _aware_utc(value: dt.datetime) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise TypeError(f"an instant must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(f"an instant needs a time zone, got naive {value!r}")
    return value.astimezone(dt.UTC)


@attrs.frozen
class Event:
    """One change worth telling people about: what, which server, when, and the details.

    ``stage`` is the stage number in force (``None`` outside an episode), ``build`` the
    server's last known build, ``detail`` a sentence for humans.
    """

    kind: EventKind = attrs.field(validator=attrs.validators.instance_of(EventKind))
    server_id: str = attrs.field(validator=_non_empty)
    tenant: str = attrs.field(validator=_non_empty)
    at: dt.datetime = attrs.field(converter=_aware_utc)
    stage: int | None
    build: ExchangeBuild | None
    detail: str = attrs.field(validator=attrs.validators.instance_of(str))


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


def _accept(reason: str) -> Decision:
    return Decision(Action.ACCEPT, None, None, False, False, _ZERO, None, reason)


class Enforcer:
    """Decides connections from Exchange servers and keeps their state in a store.

    ``clock`` returns the current instant (default :func:`utc_now`); ``retries`` is how
    many times a lost compare-and-swap is retried; ``notifier`` hears of every change
    (:class:`Event`); ``fail_closed`` answers :data:`FAIL_CLOSED_REPLY` instead of
    accepting when the store fails. ``own_hosts`` are the receiving side's host names, whose
    Received hops :func:`~tbes.received.find_sender` skips.
    """

    def __init__(
        self,
        store: StateStore,
        policy: Policy,
        catalog: Catalog,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        retries: int = 5,
        notifier: Notifier | None = None,
        fail_closed: bool = False,
        own_hosts: Iterable[str] = (),
    ) -> None:
        if type(retries) is not int or retries < 0:
            raise InvalidValueError(f"retries must be an int >= 0, got {retries!r}")
        self.store = store
        self.policy = policy
        self.catalog = catalog
        self.notifier = notifier
        self.fail_closed = fail_closed
        self._clock = clock
        self._retries = retries
        self._own_hosts = (own_hosts,) if isinstance(own_hosts, str) else tuple(own_hosts)

    # ---- checking connections ---------------------------------------------------------

    def check(self, conn: Connection, received: Sequence[str]) -> Decision:
        """Decide a connection: ``received`` are its Received header values, newest first.

        Connections of a kind the policy does not enforce are accepted without touching the
        store. Otherwise the sender's build is found, assessed and recorded, and the stored
        state decides; without Exchange evidence nothing is recorded, but a stored state of
        ``conn.server_id`` still decides. A store failure accepts (logged at WARNING), or
        answers :data:`FAIL_CLOSED_REPLY` when the enforcer fails closed.
        """
        if conn.kind not in self.policy.connectors:
            return _accept(f"{conn.kind.value} connections are not enforced by the policy.")
        now = self._now()
        evidence = find_sender(
            received, own_hosts=self._own_hosts, client=conn.peer_ip or conn.peer_host
        )
        try:
            if evidence is None:
                return self._decide_stored(conn, now)
            return self._record(conn, evidence, now)
        except StoreError as exc:
            return self._store_fault(conn, exc)

    def _decide_stored(self, conn: Connection, now: dt.datetime) -> Decision:
        current = self._state(conn.server_id)
        if current is None:
            return _accept(f"{conn.server_id}: no Exchange build in the headers and no record.")
        return decide(current.value, now, self.policy)

    def _record(self, conn: Connection, evidence: SenderEvidence, now: dt.datetime) -> Decision:
        assessment = assess(evidence.build, baseline=self.policy.baseline, catalog=self.catalog)
        decision: Decision | None = None
        for _ in range(self._retries + 1):
            current = self._state(conn.server_id)
            old = current.value if current is not None else None
            if old is not None and old.tenant != conn.tenant:
                _log.warning(
                    "tbes: %s belongs to tenant %s, not %s: decided on the stored state, "
                    "nothing recorded",
                    conn.server_id,
                    old.tenant,
                    conn.tenant,
                )
                return decide(old, now, self.policy)
            observed = observe(
                old,
                server_id=conn.server_id,
                tenant=conn.tenant,
                assessment=assessment,
                build=evidence.build,
                at=now,
                policy=self.policy,
            )
            decision = decide(observed, now, self.policy)
            new, events = _announce(old, observed, decision, self.policy, now)
            if new == old:
                return decision  # nothing to store (an observation dated before last_seen)
            try:
                self._put(new, None if current is None else current.version)
            except StoreConflictError:
                continue
            self._emit(events)
            return decision
        _log.warning(
            "tbes: %s: lost %d compare-and-swap races in a row; decided without recording",
            conn.server_id,
            self._retries + 1,
        )
        assert decision is not None  # the loop ran at least once
        return decision

    def _store_fault(self, conn: Connection, exc: StoreError) -> Decision:
        if self.fail_closed:
            _log.warning(
                "tbes: store failed for %s; deferring (fail closed): %s", conn.server_id, exc
            )
            reason = f"{conn.server_id}: the store failed, so the connection is deferred: {exc}"
            return Decision(
                Action.THROTTLE, None, FAIL_CLOSED_REPLY, False, False, _ZERO, None, reason
            )
        _log.warning("tbes: store failed for %s; accepting (fail open): %s", conn.server_id, exc)
        return _accept(f"{conn.server_id}: the store failed, so the connection is accepted: {exc}")

    # ---- pauses -----------------------------------------------------------------------

    def pause(
        self, tenant: str, server_id: str, days: int, start: dt.date | None = None
    ) -> PauseLedger:
        """Pause enforcement of ``server_id`` for ``days`` days from ``start`` (default today).

        Charges the tenant's ledger and records the pause in the server's state in one
        atomic write (a server not yet seen gets a state without a build). Errors of the
        ledger propagate (:class:`~tbes.errors.QuotaExceededError`,
        :class:`~tbes.errors.PauseConflictError`, :class:`~tbes.errors.PauseInPastError`),
        and so do store errors. Returns the tenant's new ledger.
        """
        now = self._now()
        today = now.date()
        first = today if start is None else start
        ledger, state, _ = self._change_pauses(
            tenant, server_id, lambda ledger: ledger.grant(server_id, first, days, today=today)
        )
        last = first + dt.timedelta(days=days - 1)
        detail = (
            f"enforcement paused for {days} day{'s' if days != 1 else ''}, {first} to {last}; "
            f"{ledger.used(first.year)} of {ledger.quota_days} pause days used in {first.year}"
        )
        self._emit([self._event(EventKind.PAUSED, state, now, detail)])
        return ledger

    def end_pause(self, tenant: str, server_id: str) -> PauseLedger:
        """End ``server_id``'s current and future pauses as of today; return the new ledger.

        A pause that has started keeps today (enforcement resumes at the next UTC
        midnight); the days given up return to the quota. With nothing to end, nothing is
        written and no event is sent.
        """
        now = self._now()
        today = now.date()
        ledger, state, changed = self._change_pauses(
            tenant, server_id, lambda ledger: ledger.end(server_id, today=today)
        )
        if changed:
            resumes = today + dt.timedelta(days=1) if ledger.paused_at(server_id, now) else today
            detail = f"pause ended early; enforcement resumes on {resumes}"
            self._emit([self._event(EventKind.RESUMED, state, now, detail)])
        return ledger

    def _change_pauses(
        self, tenant: str, server_id: str, change: Callable[[PauseLedger], PauseLedger]
    ) -> tuple[PauseLedger, ServerState, bool]:
        """Apply ``change`` to the ledger and copy the server's pauses into its state.

        Both rows are written in one :meth:`~tbes.store.StateStore.put_many`, retried on a
        lost race. Returns the ledger, the state and whether anything changed.
        """
        for _ in range(self._retries + 1):
            stored_ledger = self._ledger(tenant)
            stored_state = self._state(server_id)
            ledger = (
                stored_ledger.value
                if stored_ledger is not None
                else PauseLedger(tenant, self.policy.pause_quota_days)
            )
            state = stored_state.value if stored_state is not None else _unseen(server_id, tenant)
            if state.tenant != tenant:
                raise InvalidValueError(
                    f"server {server_id} belongs to tenant {state.tenant}, not {tenant}"
                )
            changed = change(ledger)
            if changed == ledger:
                return ledger, state, False
            new_state = attrs.evolve(state, pauses=changed.pauses_for(server_id))
            writes: list[Write] = [
                LedgerWrite(changed, _version(stored_ledger)),
                StateWrite(new_state, _version(stored_state)),
            ]
            try:
                self._guard(functools.partial(self.store.put_many, writes))
            except StoreConflictError:
                continue
            return changed, new_state, True
        raise StoreConflictError(
            f"changing the pauses of {server_id} (tenant {tenant}) lost {self._retries + 1} "
            "compare-and-swap races in a row; try again"
        )

    # ---- helpers ----------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        return _aware_utc(self._clock())

    def _guard(self, call: Callable[[], _T]) -> _T:
        """Call the store; an exception outside tbes's family becomes a StoreError."""
        try:
            return call()
        except TbesError:
            raise
        except Exception as exc:  # a custom store's own failure is still a store fault
            raise StoreError(f"store {type(self.store).__name__} failed: {exc!r}") from exc

    def _state(self, server_id: str) -> Versioned[ServerState] | None:
        return self._guard(lambda: self.store.get(server_id))

    def _ledger(self, tenant: str) -> Versioned[PauseLedger] | None:
        return self._guard(lambda: self.store.get_ledger(tenant))

    def _put(self, state: ServerState, expected_version: int | None) -> None:
        self._guard(lambda: self.store.put(state, expected_version=expected_version))

    def _emit(self, events: Sequence[Event]) -> None:
        if self.notifier is None:
            return
        for event in events:
            try:
                self.notifier.notify(event)
            except Exception:  # a broken notifier must never stop mail
                _log.warning("tbes: notifier failed on %s", event, exc_info=True)

    def _event(self, kind: EventKind, state: ServerState, now: dt.datetime, detail: str) -> Event:
        return _make_event(kind, state, decide(state, now, self.policy), now, detail)


def _version(stored: Versioned[object] | None) -> int | None:
    return None if stored is None else stored.version


def _unseen(server_id: str, tenant: str) -> ServerState:
    """The state of a server paused before it was first seen: no build, no episode."""
    return ServerState(server_id, tenant, None, Compliance.NOT_APPLICABLE, None, None, None)


def _make_event(
    kind: EventKind, state: ServerState, decision: Decision, now: dt.datetime, detail: str
) -> Event:
    stage = None if decision.stage is None else decision.stage.number
    return Event(kind, state.server_id, state.tenant, now, stage, state.build, detail)


def _announce(
    old: ServerState | None,
    new: ServerState,
    decision: Decision,
    policy: Policy,
    now: dt.datetime,
) -> tuple[ServerState, list[Event]]:
    """The events a write from ``old`` to ``new`` announces, and ``new`` with its marker.

    The rules (docs/storage.md): DETECTED when an episode starts or resumes; for a stage
    above the last announced one, STAGE_CHANGED (except for the stage an episode starts in,
    which DETECTED announces), BLOCKING_STARTED on the first stage that blocks, and
    FULLY_BLOCKED on the first that blocks the whole hour; REMEDIATED when an episode ends.
    Stages are announced only upwards, so nodes with skewed clocks cannot make them flap.
    """
    events: list[Event] = []
    was_running = old is not None and old.in_episode

    def add(kind: EventKind, detail: str) -> None:
        events.append(_make_event(kind, new, decision, now, detail))

    if new.in_episode and decision.stage is not None:
        marker = new.notified_stage  # observe resets it when a new episode starts
        if not was_running:
            resumed = old is not None and old.first_detected == new.first_detected
            add(EventKind.DETECTED, _detected_detail(new, resumed))
        stage = decision.stage
        if stage.number > (marker or 0):
            before = _blocks(policy, marker)
            if marker is not None or was_running:
                add(EventKind.STAGE_CHANGED, f"now in stage {stage.number}: {_stage_text(stage)}")
            if stage.block_minutes > 0 and before == 0:
                add(EventKind.BLOCKING_STARTED, f"blocked for {stage.block_minutes} mins/hr")
            if stage.block_minutes >= 60 > before:
                add(EventKind.FULLY_BLOCKED, "every connection is blocked")
            new = attrs.evolve(new, notified_stage=stage.number)
    elif was_running and new.compliant_since is not None:
        add(EventKind.REMEDIATED, f"build {new.build} is compliant; enforcement stopped")
    return new, events


def _blocks(policy: Policy, number: int | None) -> int:
    """Block minutes of stage ``number`` (0 for none or a number the table lacks)."""
    stages = policy.stage_table.stages
    return stages[number - 1].block_minutes if number and number <= len(stages) else 0


def _stage_text(stage: Stage) -> str:
    parts = [
        f"{verb} {minutes} mins/hr"
        for verb, minutes in (
            ("throttled", stage.throttle_minutes),
            ("blocked", stage.block_minutes),
        )
        if minutes
    ]
    return " and ".join(parts) or "reported, not throttled or blocked"


def _detected_detail(state: ServerState, resumed: bool) -> str:
    status = state.status.value.lower()
    if resumed:
        since = state.first_detected
        return (
            f"{status} again within the relapse window: the episode from {since:%Y-%m-%d} resumes"
        )
    return f"build {state.build} is {status}: enforcement episode started"
