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
Failing open covers faults, not mistakes: an argument of the wrong type is the caller's
bug and raises :class:`~tbes.errors.InvalidValueError` naming it, before the store is
touched. :func:`utc_now` is the only place tbes reads the clock.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import inspect
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import attrs

from tbes.catalog import Assessment, Baseline, Catalog, Compliance, assess
from tbes.decision import Action, Decision, decide
from tbes.errors import (
    InvalidPauseError,
    InvalidValueError,
    NaiveDatetimeError,
    StoreConflictError,
    StoreError,
    TbesError,
    UnseenServerError,
)
from tbes.ledger import PauseLedger
from tbes.policy import ConnectorKind, Policy, SmtpReply
from tbes.received import SenderEvidence, SenderFinder
from tbes.stages import Stage
from tbes.state import ServerState, observe
from tbes.store._deadline import DEFAULT_CHECK_TIMEOUT, check_deadline, expired
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
_MAX_VERDICTS = 1024
_SEEN_RESOLUTION = dt.timedelta(minutes=1)
# The stored fields that make a state what it is; last_seen is compared on its own.
_STATE_FIELDS = tuple(
    field.name for field in attrs.fields(ServerState) if field.eq and field.name != "last_seen"
)

FAIL_CLOSED_REPLY = SmtpReply(
    451, "4.3.0", "Temporary failure checking the sending Exchange server; try again later"
)
"""The reply when the store fails and the enforcer was made with ``fail_closed=True``."""


def utc_now() -> dt.datetime:
    """The current instant in UTC: the only clock read in tbes."""
    return dt.datetime.now(dt.UTC)


def _non_empty(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidValueError(f"{attribute.name} must be a non-empty str, got {value!r:.80}")


def _optional_str(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidValueError(f"{attribute.name} must be a str or None, got {value!r:.80}")


def _of(cls: type) -> Callable[[object, attrs.Attribute[Any], object], None]:
    """An attrs validator: the value is a ``cls``, else InvalidValueError naming the field."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, cls):
            raise InvalidValueError(f"{attribute.name} must be a {cls.__name__}, got {value!r:.80}")

    return check


@attrs.frozen
class Connection:
    """Who is connecting, as the MTA knows it: never taken from the message's headers.

    ``server_id`` is the stable name the operator gives the sending server (e.g. the
    connector or the TLS subject); ``tenant`` owns its pause quota; ``kind`` says which
    kind of connector it came through; the peer fields are for logs and evidence matching.
    """

    server_id: str = attrs.field(validator=_non_empty)
    tenant: str = attrs.field(validator=_non_empty)
    kind: ConnectorKind = attrs.field(validator=_of(ConnectorKind))
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


def _aware_utc(value: object, name: str) -> dt.datetime:
    """``value`` in UTC if it is an aware datetime; the errors name it ``name``."""
    if not isinstance(value, dt.datetime):
        raise InvalidValueError(f"{name} must be a timezone-aware datetime, got {value!r:.80}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(f"{name} must be timezone-aware, got naive {value!r}")
    return value.astimezone(dt.UTC)


def _event_at(value: object) -> dt.datetime:
    return _aware_utc(value, "at")


def _check_stage(instance: object, attribute: attrs.Attribute[int | None], value: object) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise InvalidValueError(f"stage must be a stage number >= 1 or None, got {value!r:.80}")


def _optional_build(
    instance: object, attribute: attrs.Attribute[ExchangeBuild | None], value: object
) -> None:
    if value is not None and not isinstance(value, ExchangeBuild):
        raise InvalidValueError(f"build must be an ExchangeBuild or None, got {value!r:.80}")


@attrs.frozen
class Event:
    """One change worth telling people about: what, which server, when, and the details.

    ``stage`` is the stage number in force (``None`` outside an episode), ``build`` the
    server's last known build, ``detail`` a sentence for humans.
    """

    kind: EventKind = attrs.field(validator=_of(EventKind))
    server_id: str = attrs.field(validator=_non_empty)
    tenant: str = attrs.field(validator=_non_empty)
    at: dt.datetime = attrs.field(converter=_event_at)
    stage: int | None = attrs.field(validator=_check_stage)
    build: ExchangeBuild | None = attrs.field(validator=_optional_build)
    detail: str = attrs.field(validator=_of(str))


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
    Received hops :func:`~tbes.received.find_sender` skips. ``seen_resolution`` (one
    minute by default, ``timedelta(0)`` to write every message) is how far ``last_seen`` may
    lag before it is written: a message that changes nothing else is not stored, because
    :func:`~tbes.decision.decide` never reads ``last_seen`` and a busy server would otherwise
    cost one synchronous write per message. ``check_timeout`` (seconds, default 2) bounds
    each :meth:`check`, retries included: past it the check stops retrying and fails like
    any store fault, so a stalled or contended store never holds the MTA past its own
    timeout. ``policy`` and ``catalog`` may be replaced at any time (a configuration
    reload); the verdict per build that the enforcer keeps (at most 1,024 builds) is never
    used under another policy or catalog than its own. An argument of the wrong kind (a
    store without the :class:`~tbes.store.StateStore` methods, a policy that is no
    :class:`~tbes.policy.Policy`, a clock that is not callable, a ``check_timeout`` that is
    no finite number above zero, …) raises
    :class:`~tbes.errors.InvalidValueError` naming it.
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
        seen_resolution: dt.timedelta = _SEEN_RESOLUTION,
        check_timeout: float = DEFAULT_CHECK_TIMEOUT,
    ) -> None:
        _require(type(retries) is int and retries >= 0, "retries", "an int >= 0", retries)
        _require(
            _is_timeout(check_timeout),
            "check_timeout",
            "a finite number of seconds > 0",
            check_timeout,
        )
        _require(
            isinstance(seen_resolution, dt.timedelta) and seen_resolution >= _ZERO,
            "seen_resolution",
            "a timedelta >= 0",
            seen_resolution,
        )
        _require(_is_store(store), "store", "a StateStore (" + ", ".join(_STORE_API) + ")", store)
        _require(isinstance(policy, Policy), "policy", "a Policy", policy)
        _require(isinstance(catalog, Catalog), "catalog", "a Catalog", catalog)
        _require(callable(clock), "clock", "callable (returning an aware datetime)", clock)
        _require(
            notifier is None or isinstance(notifier, Notifier), "notifier", "a Notifier", notifier
        )
        _require(type(fail_closed) is bool, "fail_closed", "a bool", fail_closed)
        self.store = store
        self.policy = policy
        self.catalog = catalog
        self.notifier = notifier
        self.fail_closed = fail_closed
        self._clock = clock
        self._retries = retries
        self._finder = SenderFinder(own_hosts)  # own_hosts checked and prepared once
        self._seen_resolution = seen_resolution
        self._check_timeout = float(check_timeout)
        # Verdicts per build, each with the baseline and catalog it was judged against: a
        # handful of builds makes nearly all the traffic, and assess is pure.
        self._verdicts: dict[ExchangeBuild, tuple[Baseline, Catalog, Assessment]] = {}

    # ---- checking connections ---------------------------------------------------------

    def check(self, conn: Connection, received: Sequence[str]) -> Decision:
        """Decide a connection: ``received`` are its Received header values, newest first.

        Connections of a kind the policy does not enforce are accepted without touching the
        store. Otherwise the sender's build is found, assessed and recorded, and the stored
        state decides; without Exchange evidence nothing about the server is recorded, but a
        stored state of ``conn.server_id`` still decides, and a stage it has reached since the
        last announcement is announced (only ``notified_stage`` is written). A stored state of
        another tenant moves to ``conn.tenant`` when observed (logged at WARNING; its episode
        and pauses stay). A store failure, or a check still retrying when ``check_timeout``
        runs out, accepts (logged at WARNING), or answers :data:`FAIL_CLOSED_REPLY` when the
        enforcer fails closed. A ``conn`` that is no :class:`Connection`, or ``received`` that is no
        sequence of ``str``, is the caller's mistake, not a fault: it raises
        :class:`~tbes.errors.InvalidValueError` naming the argument.
        """
        if not isinstance(conn, Connection):
            raise InvalidValueError(f"conn must be a Connection, got {conn!r:.80}")
        _check_received(received)
        if conn.kind not in self.policy.connectors:
            return _accept(f"{conn.kind.value} connections are not enforced by the policy.")
        with check_deadline(self._check_timeout):
            now = self._now()
            # received was checked above, at this boundary: not checked again.
            client = conn.peer_ip or conn.peer_host
            evidence = self._finder.find_checked(received, client=client)
            observation = None if evidence is None else self._observation(conn, evidence, now)
            try:
                return self._settle(conn, now, observation)
            except StoreError as exc:
                return self._store_fault(conn, exc)

    def _observation(
        self, conn: Connection, evidence: SenderEvidence, now: dt.datetime
    ) -> Callable[[ServerState | None], ServerState]:
        """The change one message with Exchange evidence makes to the stored state."""
        assessment = self._assess(evidence.build)
        return functools.partial(
            observe,
            server_id=conn.server_id,
            tenant=conn.tenant,
            assessment=assessment,
            build=evidence.build,
            at=now,
            policy=self.policy,
        )

    def _settle(
        self,
        conn: Connection,
        now: dt.datetime,
        observation: Callable[[ServerState | None], ServerState] | None,
    ) -> Decision:
        """Read, observe (if there is evidence), announce, compare-and-swap; retry a lost race.

        Without evidence the state itself is kept and only the notification marker can
        change, so stage changes are still announced (once) when headers are stripped.
        """
        decision: Decision | None = None
        for attempt in range(self._retries + 1):
            if attempt and expired():
                raise StoreError(
                    f"{conn.server_id}: the check's deadline of {self._check_timeout:g} s passed "
                    f"after {attempt} compare-and-swap attempt{'s' if attempt != 1 else ''}"
                )
            current = self._state(conn.server_id)
            old = None if current is None else current.value
            if old is None and observation is None:
                return _accept(f"{conn.server_id}: no Exchange build in the headers and no record.")
            observed: ServerState | None
            if old is not None and old.tenant != conn.tenant:
                if observation is None:
                    # Nothing observed, so nothing to record: the stored state still decides.
                    _log.warning(
                        "tbes: %s belongs to tenant %s, not %s: no Exchange evidence, decided "
                        "on the stored state",
                        conn.server_id,
                        old.tenant,
                        conn.tenant,
                    )
                    return decide(old, now, self.policy)
                _log.warning(
                    "tbes: %s moves from tenant %s to %s, the connection's; its episode "
                    "continues and its granted pauses stay charged to %s",
                    conn.server_id,
                    old.tenant,
                    conn.tenant,
                    old.tenant,
                )
                # SPEC section 10, "tenant follows the connection": a mistyped pause or a
                # renamed tenant must never freeze the server's state.
                observed = observation(attrs.evolve(old, tenant=conn.tenant))
            else:
                observed = observation(old) if observation is not None else old
            assert observed is not None  # no observation means a stored state (checked above)
            decision = decide(observed, now, self.policy)
            new, events = _announce(old, observed, self.policy, now)
            if new == old or (not events and _only_seen(old, new, self._seen_resolution)):
                return decision  # nothing to store or announce
            try:
                self._put(new, _version(current))
            except StoreConflictError:
                continue  # another writer won: recompute from its state, which may announce
            self._emit(events)
            return decision
        _log.warning(
            "tbes: %s: lost %d compare-and-swap races in a row; decided without recording",
            conn.server_id,
            self._retries + 1,
        )
        assert decision is not None  # the loop ran at least once
        return decision

    def _assess(self, build: ExchangeBuild) -> Assessment:
        baseline, catalog = self.policy.baseline, self.catalog
        cached = self._verdicts.get(build)
        # Checked by identity, so a new policy or catalog is never answered from an old
        # verdict, even by a thread that raced the change.
        if cached is not None and cached[0] is baseline and cached[1] is catalog:
            return cached[2]
        if len(self._verdicts) >= _MAX_VERDICTS:  # forged builds must not grow it for ever
            self._verdicts.clear()
        verdict = assess(build, baseline=baseline, catalog=catalog)
        self._verdicts[build] = (baseline, catalog, verdict)
        return verdict

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
        self,
        tenant: str,
        server_id: str,
        days: int,
        start: dt.date | None = None,
        *,
        force: bool = False,
    ) -> PauseLedger:
        """Pause enforcement of ``server_id`` for ``days`` days from ``start`` (default today).

        Charges the tenant's ledger and records the pause in the server's state in one
        atomic write. A server with no stored state is refused with
        :class:`~tbes.errors.UnseenServerError` (a mistyped id or tenant would otherwise
        charge a quota for nothing), unless ``force`` is true: then it gets a state without a
        build, and the tenant of its first connection takes it over. Errors of the
        ledger propagate (:class:`~tbes.errors.QuotaExceededError`,
        :class:`~tbes.errors.PauseConflictError`, :class:`~tbes.errors.PauseInPastError`),
        and so do store errors. Returns the tenant's new ledger. Arguments of the wrong kind
        (an empty id, ``days`` < 1, a ``start`` that is no date) raise
        :class:`~tbes.errors.InvalidPauseError` naming the argument.
        """
        _check_pause_ids(tenant, server_id)
        if type(days) is not int or days < 1:
            raise InvalidPauseError(f"days must be an int >= 1, got {days!r:.80}")
        if start is not None and (type(start) is dt.datetime or not isinstance(start, dt.date)):
            raise InvalidPauseError(f"start must be a date or None, got {start!r:.80}")
        if type(force) is not bool:
            raise InvalidPauseError(f"force must be a bool, got {force!r:.80}")
        now = self._now()
        today = now.date()
        first = today if start is None else start
        ledger, state, _ = self._change_pauses(
            tenant,
            server_id,
            lambda ledger: ledger.grant(server_id, first, days, today=today),
            unseen=force,
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
        written and no event is sent. An empty or non-``str`` id raises
        :class:`~tbes.errors.InvalidPauseError` naming it.
        """
        _check_pause_ids(tenant, server_id)
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
        self,
        tenant: str,
        server_id: str,
        change: Callable[[PauseLedger], PauseLedger],
        *,
        unseen: bool = True,
    ) -> tuple[PauseLedger, ServerState, bool]:
        """Apply ``change`` to the ledger and copy the server's pauses into its state.

        A server with no stored state gets one without a build when ``unseen`` allows it,
        else :class:`~tbes.errors.UnseenServerError`. Both rows are written in one
        :meth:`~tbes.store.StateStore.put_many`, retried on a lost race. Returns the ledger,
        the state and whether anything changed.
        """
        for _ in range(self._retries + 1):
            stored_ledger = self._ledger(tenant)
            stored_state = self._state(server_id)
            ledger = (
                stored_ledger.value
                if stored_ledger is not None
                else PauseLedger(tenant, self.policy.pause_quota_days)
            )
            if stored_state is None and not unseen:
                raise UnseenServerError(
                    f"no server {server_id} has been seen (tenant {tenant}): check the server id "
                    "and the tenant's spelling, or force the pause of a server not seen yet"
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
        return _aware_utc(self._clock(), "the clock's time")

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
        stage = decide(state, now, self.policy).stage
        return _make_event(kind, state, None if stage is None else stage.number, now, detail)


_STORE_API = ("get", "put", "get_ledger", "put_ledger", "put_many", "states", "close")
_MISSING = object()


def _require(ok: bool, name: str, what: str, value: object) -> None:
    if not ok:
        raise InvalidValueError(f"{name} must be {what}, got {value!r:.80}")


def _is_timeout(value: object) -> bool:
    """Whether ``value`` is a usable number of seconds: finite and above zero."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _is_store(store: object) -> bool:
    """Whether ``store`` has the StateStore methods, looked up without touching the store."""
    if isinstance(store, type):
        return False  # the class, not a store: every call would fail, and fail open
    # A proxy answering through __getattr__ (a wrapper of another store) cannot be looked at
    # without calling it, so it is trusted; its own failures are store faults later.
    if inspect.getattr_static(store, "__getattr__", _MISSING) is not _MISSING:
        return True
    return all(inspect.getattr_static(store, name, _MISSING) is not _MISSING for name in _STORE_API)


def _check_received(received: object) -> None:
    # A bare str is a sequence too, but of letters: one header value passed by mistake.
    if isinstance(received, str | bytes) or not isinstance(received, Sequence):
        raise InvalidValueError(
            f"received must be a sequence of Received header values, got {received!r:.80}"
        )
    for value in received:
        if not isinstance(value, str):
            raise InvalidValueError(f"received must hold only str values, got {value!r:.80}")


def _check_pause_ids(tenant: object, server_id: object) -> None:
    for name, value in (("tenant", tenant), ("server_id", server_id)):
        if not isinstance(value, str) or not value:
            raise InvalidPauseError(f"{name} must be a non-empty str, got {value!r:.80}")


def _only_seen(old: ServerState | None, new: ServerState, resolution: dt.timedelta) -> bool:
    """Whether ``new`` differs from ``old`` only by ``last_seen``, moved by under ``resolution``."""
    if old is None or old.last_seen is None or new.last_seen is None:
        return False
    if not _ZERO <= new.last_seen - old.last_seen < resolution:
        return False
    return all(getattr(old, name) == getattr(new, name) for name in _STATE_FIELDS)


def _version(stored: Versioned[object] | None) -> int | None:
    return None if stored is None else stored.version


def _unseen(server_id: str, tenant: str) -> ServerState:
    """The state of a server paused before it was first seen: no build, no episode."""
    return ServerState(server_id, tenant, None, Compliance.NOT_APPLICABLE, None, None, None)


def _make_event(
    kind: EventKind, state: ServerState, stage: int | None, now: dt.datetime, detail: str
) -> Event:
    return Event(kind, state.server_id, state.tenant, now, stage, state.build, detail)


def _announce(
    old: ServerState | None, new: ServerState, policy: Policy, now: dt.datetime
) -> tuple[ServerState, list[Event]]:
    """The events a write from ``old`` to ``new`` announces, and ``new`` with its marker.

    ``notified_stage`` says what people were last told (docs/storage.md, "Events"): in a
    running episode, the stage last announced, or ``None`` when they were last told of a
    remediation and the episode has since resumed without a new stage to announce; outside
    an episode, the stage last announced before it stopped. So DETECTED fires once per
    episode, a resumption at a stage already announced is silent, and REMEDIATED fires only
    when people were last told that enforcement runs. Stages are announced only upwards, so
    nodes with skewed clocks cannot make them flap.
    """
    if not new.in_episode:
        return _announce_stop(old, new, policy, now)
    stage = _stage_number(new, _latest(new, now), policy)
    if old is None or old.first_detected != new.first_detected:
        detail = f"build {new.build} is {new.status.value.lower()}: enforcement episode started"
        detected = _make_event(EventKind.DETECTED, new, stage, now, detail)
        return _announce_stage(new, stage, None, policy, now, detected=detected)
    if old.in_episode and old.notified_stage is not None:
        return _announce_stage(new, stage, old.notified_stage, policy, now)
    # People were last told of a remediation: the episode resumed within the relapse window
    # (``old`` is remediated), or resumed earlier without a new stage (marker ``None``, and
    # the stage last announced is the one in force at ``last_seen``).
    told = old.notified_stage if not old.in_episode else _stage_number(old, old.last_seen, policy)
    if stage > (told or 0):
        resumed = "enforcement resumed after remediation; "
        return _announce_stage(new, stage, told, policy, now, prefix=resumed)
    if stage < (told or 0):
        # Only a node whose clock is behind the announcement gets here. Going silent would
        # lose the stage announced (``last_seen`` is behind it), so keep the marker: at
        # worst people hear REMEDIATED once more, but never a stage twice.
        return new, []
    return attrs.evolve(new, notified_stage=None), []


def _announce_stage(
    new: ServerState,
    stage: int,
    told: int | None,
    policy: Policy,
    now: dt.datetime,
    *,
    detected: Event | None = None,
    prefix: str = "",
) -> tuple[ServerState, list[Event]]:
    """Announce ``stage`` if above ``told`` (the stage last announced; ``None``: none).

    STAGE_CHANGED names the new stage, except in the write that starts an episode, whose
    ``detected`` event names it; the thresholds compare with the stage ``told``.
    """
    events = [] if detected is None else [detected]
    if stage <= (told or 0):
        return new, events
    before, blocks = _blocks(policy, told), _blocks(policy, stage)
    if detected is None:
        text = _stage_text(policy.stage_table.stages[stage - 1])
        detail = f"{prefix}now in stage {stage}: {text}"
        events.append(_make_event(EventKind.STAGE_CHANGED, new, stage, now, detail))
    if blocks > 0 and before == 0:
        detail = f"blocked for {blocks} mins/hr"
        events.append(_make_event(EventKind.BLOCKING_STARTED, new, stage, now, detail))
    if blocks >= 60 > before:
        detail = "every connection is blocked"
        events.append(_make_event(EventKind.FULLY_BLOCKED, new, stage, now, detail))
    return attrs.evolve(new, notified_stage=stage), events


def _announce_stop(
    old: ServerState | None, new: ServerState, policy: Policy, now: dt.datetime
) -> tuple[ServerState, list[Event]]:
    """REMEDIATED when a running episode people know of ends; nothing otherwise."""
    if old is None or not old.in_episode:
        return new, []
    if old.notified_stage is None:
        # Resumed silently: people still believe the last remediation. Keep the stage they
        # last heard (in force at ``last_seen``) for the next resumption to compare with.
        return attrs.evolve(new, notified_stage=_stage_number(old, old.last_seen, policy)), []
    detail = f"build {new.build} is compliant; enforcement stopped"
    return new, [_make_event(EventKind.REMEDIATED, new, None, now, detail)]


def _latest(state: ServerState, now: dt.datetime) -> dt.datetime:
    """The later of ``now`` and ``last_seen``: a slow node announces no stage behind it."""
    seen = state.last_seen
    return now if seen is None or now >= seen else seen


def _stage_number(state: ServerState, at: dt.datetime | None, policy: Policy) -> int:
    """The stage in force at ``at`` for a state in an episode (stage 1 without ``at``)."""
    if at is None:
        return 1
    stage = decide(state, at, policy).stage
    return 1 if stage is None else stage.number


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
