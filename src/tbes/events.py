"""Events: which announcements a change of a server's stored state makes, and what each says.

:func:`announcement` compares the state before a write with the state to be written and
returns the events the change makes, with the state to write: that state's
``notified_stage`` records what people were last told, so every process sharing the store
can tell what is news (docs/enforcement.md, "Events"). Pure: no clock, no I/O, no logging;
the enforcer sends the events, and only when its compare-and-swap stored the change, so
each change is announced exactly once. Two decisions shaped it. Stages are announced only
upwards within an episode, so nodes with skewed clocks cannot make them flap. And every
event has an :attr:`Event.id` computed from what it announces (server, kind, episode start,
stage), never from who computed it, so two writers never mint two ids for one event.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json

import attrs

from tbes._checks import id_field, of_type, require_id, require_type
from tbes._instants import as_utc, as_utc_or_none
from tbes.decision import Decision, decide
from tbes.errors import InvalidValueError
from tbes.exemption import Exemption, exempt_spans
from tbes.identity import connector_of, host_of
from tbes.ledger import Span, clock_reaches, pause_spans
from tbes.policy import Policy
from tbes.stages import Stage
from tbes.state import ServerState
from tbes.version import ExchangeBuild

__all__ = [
    "ADVANCE_NOTICE",
    "NOTICE_KINDS",
    "Announcement",
    "Event",
    "EventKind",
    "advance_notices",
    "announce",
    "announcement",
    "event_id",
    "state_event",
]

_ID_LENGTH = 32  # hex digits: 128 bits, ample for ids that must never collide by chance

ADVANCE_NOTICE = dt.timedelta(days=7)
"""How long before a server's throttling, and its blocking, starts people are told."""


class EventKind(enum.Enum):
    """What happened to a server, as announced to people (see docs/enforcement.md)."""

    DETECTED = "DETECTED"
    RELAPSED = "RELAPSED"
    STAGE_CHANGED = "STAGE_CHANGED"
    BLOCKING_STARTED = "BLOCKING_STARTED"
    FULLY_BLOCKED = "FULLY_BLOCKED"
    PAUSED = "PAUSED"
    RESUMED = "RESUMED"
    REMEDIATED = "REMEDIATED"
    EXEMPTION_ENDING = "EXEMPTION_ENDING"
    THROTTLING_SOON = "THROTTLING_SOON"
    BLOCKING_SOON = "BLOCKING_SOON"


NOTICE_KINDS = (EventKind.THROTTLING_SOON, EventKind.BLOCKING_SOON)
"""The advance notices: their ``stage`` is the stage about to start, ``next_change`` its start."""


def _check_stage(instance: object, attribute: attrs.Attribute[int | None], value: object) -> None:
    _require_stage(value)


def _require_stage(value: object) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise InvalidValueError(f"stage must be a stage number >= 1 or None, got {value!r:.80}")


def event_id(
    server_id: str,
    kind: EventKind,
    episode_start: dt.datetime | None,
    stage: int | None,
    occasion: str = "",
) -> str:
    """The id of the event ``kind`` of ``server_id``: 32 hex digits of a SHA-256.

    Computed from what the event announces, never from who computed it or when, so the
    same event computed twice (by two processes, or again after a crash) has the same id.
    ``episode_start`` is the episode's ``first_detected`` (``None`` outside any episode) and
    ``occasion`` tells apart the events of a kind that may recur within one episode and
    stage (a second remediation, another pause). The fields are joined as a JSON array, so
    no text in one field can pass for another's. Arguments of the wrong type raise
    :class:`~tbes.errors.InvalidValueError` naming them.
    """
    require_id(server_id, "server_id")
    require_type(kind, EventKind, "kind")
    start = as_utc_or_none(episode_start, "episode_start")
    _require_stage(stage)
    require_type(occasion, str, "occasion")
    fields = [
        server_id,
        kind.value,
        None if start is None else start.isoformat(),
        stage,
        occasion,
    ]
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:_ID_LENGTH]


def _event_at(value: object) -> dt.datetime:
    return as_utc(value, "at")


def _next_change(value: object) -> dt.datetime | None:
    return as_utc_or_none(value, "next_change")


def _episode_start(value: object) -> dt.datetime | None:
    return as_utc_or_none(value, "episode_start")


def _default_id(event: Event) -> str:
    return event_id(event.server_id, event.kind, event.episode_start, event.stage)


@attrs.frozen
class Event:
    """One change worth telling people about: what, which server, when, and the details.

    ``stage`` is the stage number in force (``None`` outside an episode; for an advance
    notice, :data:`NOTICE_KINDS`, the stage about to start), ``build`` the
    server's last known build, ``detail`` a sentence for humans. ``connector`` is the name
    of the connector the server's mail came through (``None`` where unknown, as for a
    pause), ``next_change`` the instant of the server's next stage change (``None`` if
    none is due: outside an episode, or in the terminal stage), ``episode_start`` the
    ``first_detected`` of the episode the event belongs to (``None`` without one). ``id``
    is :func:`event_id` of the event (by default with no occasion). Instants must be
    timezone-aware (else :class:`~tbes.errors.NaiveDatetimeError`) and are kept in UTC; a
    value of the wrong type raises :class:`~tbes.errors.InvalidValueError` naming the field.
    """

    kind: EventKind = attrs.field(validator=of_type(EventKind))
    server_id: str = attrs.field(validator=id_field())
    tenant: str = attrs.field(validator=id_field())
    at: dt.datetime = attrs.field(converter=_event_at)
    stage: int | None = attrs.field(validator=_check_stage)
    build: ExchangeBuild | None = attrs.field(validator=of_type(ExchangeBuild, optional=True))
    detail: str = attrs.field(validator=of_type(str))
    connector: str | None = attrs.field(
        default=None, kw_only=True, validator=of_type(str, optional=True)
    )
    next_change: dt.datetime | None = attrs.field(
        default=None, kw_only=True, converter=_next_change
    )
    episode_start: dt.datetime | None = attrs.field(
        default=None, kw_only=True, converter=_episode_start
    )
    id: str = attrs.field(
        default=attrs.Factory(_default_id, takes_self=True), kw_only=True, validator=id_field()
    )


@attrs.frozen
class Announcement:
    """What a write announces: the ``state`` to store (its marker updated) and the ``events``."""

    state: ServerState
    events: tuple[Event, ...]


def announcement(
    old: ServerState | None,
    new: ServerState,
    policy: Policy,
    now: dt.datetime,
    *,
    connector: str | None = None,
    exemptions: tuple[Exemption, ...] = (),
    notice: dt.timedelta | None = ADVANCE_NOTICE,
    decided: Decision | None = None,
) -> Announcement:
    """The events a write from ``old`` (``None``: no stored state) to ``new`` makes at ``now``.

    ``new`` is the state about to be written; the returned state is ``new`` with its
    ``notified_stage`` marker updated, and it is what must be stored for the events to be
    news exactly once. DETECTED fires once per episode, RELAPSED when a remediated episode
    resumes within the relapse window, stages are announced only upwards (the stage
    compared is the one in force at the later of ``now`` and ``new.last_seen``, so a slow
    clock announces no stage behind the stored one), and REMEDIATED fires when people were
    last told that enforcement runs. ``connector`` names the connector in every event.
    ``exemptions`` are the server's (:func:`~tbes.decision.decide`): the stages compared are
    those of the clock they hold still, so an exempt server announces no stage it is not in.
    ``notice`` (default :data:`ADVANCE_NOTICE`; ``None``: none) is how long ahead the
    advance notices of :func:`advance_notices` are given. ``decided``, when the caller has
    it, is ``decide(new, now, policy, exemptions)``: the stage in force is then read from it
    instead of deciding again (the enforcer's case). Arguments of the wrong type raise
    :class:`~tbes.errors.InvalidValueError` naming them.
    """
    require_type(old, ServerState, "old", optional=True)
    require_type(new, ServerState, "new")
    require_type(policy, Policy, "policy")
    require_type(connector, str, "connector", optional=True)
    require_type(decided, Decision, "decided", optional=True)
    _require_notice(notice)
    teller = _Teller(new, policy, as_utc(now, "now"), connector, exemptions, notice, decided)
    state, events = teller.announce(old)
    return Announcement(state, events)


def announce(
    old: ServerState | None,
    new: ServerState,
    policy: Policy,
    now: dt.datetime,
    *,
    connector: str | None = None,
) -> tuple[Event, ...]:
    """The events of :func:`announcement` alone: what a write from ``old`` to ``new`` tells."""
    return announcement(old, new, policy, now, connector=connector).events


def advance_notices(
    old: ServerState | None,
    new: ServerState,
    policy: Policy,
    now: dt.datetime,
    *,
    notice: dt.timedelta = ADVANCE_NOTICE,
    connector: str | None = None,
    exemptions: tuple[Exemption, ...] = (),
) -> tuple[Event, ...]:
    """The advance notices a write from ``old`` to ``new`` gives at ``now``.

    Microsoft announces each step ahead; so does tbes: ``THROTTLING_SOON`` once the server's
    throttling starts within ``notice`` (the start of the policy's first throttling stage
    on the server's clock, later by the pauses and exemptions holding it), and
    ``BLOCKING_SOON`` likewise before its first blocking stage. A notice is given by the
    write that first sees the server inside its window: its ``last_seen`` before the write
    was before the window opened (or the episode is new), and the stage has not started.
    Its ``stage`` is the stage about to start and ``next_change`` that stage's start; its
    id is :func:`event_id` of the server, kind, episode start and that stage, so a notice
    computed again (a pause moved the start, another writer raced) keeps its id. A stage
    that starts at detection, or that the clock never reaches, gets no notice.
    """
    require_type(old, ServerState, "old", optional=True)
    require_type(new, ServerState, "new")
    require_type(policy, Policy, "policy")
    require_type(connector, str, "connector", optional=True)
    _require_notice(notice)
    return _Teller(new, policy, as_utc(now, "now"), connector, exemptions, notice).notices(old)


def _require_notice(value: object) -> None:
    if value is not None and (not isinstance(value, dt.timedelta) or value <= dt.timedelta(0)):
        raise InvalidValueError(f"notice must be a timedelta > 0 or None, got {value!r:.80}")


def state_event(
    kind: EventKind,
    state: ServerState,
    policy: Policy,
    now: dt.datetime,
    detail: str,
    *,
    connector: str | None = None,
    occasion: str = "",
    exemptions: tuple[Exemption, ...] = (),
) -> Event:
    """The event ``kind`` about ``state`` as it stands at ``now`` (a pause, its early end).

    Its stage and next change are those in force at ``now``; ``occasion`` goes into its id
    (see :func:`event_id`); ``exemptions`` as for :func:`announcement`. Without
    ``connector``, a canonical server id (``CONNECTOR/HOST``, :mod:`tbes.identity`) names
    its connector: no connection makes a pause's events, but the id says where it sends
    from. Arguments of the wrong type raise :class:`~tbes.errors.InvalidValueError` naming
    them.
    """
    require_type(state, ServerState, "state")
    require_type(policy, Policy, "policy")
    require_type(connector, str, "connector", optional=True)
    if connector is None and host_of(state.server_id) is not None:
        connector = connector_of(state.server_id)
    now = as_utc(now, "now")
    stage = decide(state, now, policy, exemptions).stage
    number = None if stage is None else stage.number
    return _Teller(state, policy, now, connector, exemptions).event(kind, number, detail, occasion)


@attrs.frozen
class _Teller:
    """The announcement of one write to ``new``: its events share the state, clock and connector."""

    new: ServerState
    policy: Policy
    now: dt.datetime
    connector: str | None
    exemptions: tuple[Exemption, ...] = ()
    notice: dt.timedelta | None = None
    decided: Decision | None = None  # decide(new, now, policy, exemptions), if known

    def event(
        self,
        kind: EventKind,
        stage: int | None,
        detail: str,
        occasion: str = "",
    ) -> Event:
        new = self.new
        start = new.first_detected
        # Worked out only here: most writes announce nothing, and this is their hot path.
        change = (
            None
            if stage is None
            else _next_start(new, _latest(new, self.now), self.policy, self.exemptions)
        )
        return Event(
            kind,
            new.server_id,
            new.tenant,
            self.now,
            stage,
            new.build,
            detail,
            connector=self.connector,
            next_change=change,
            episode_start=start,
            id=event_id(new.server_id, kind, start, stage, occasion),
        )

    def announce(self, old: ServerState | None) -> tuple[ServerState, tuple[Event, ...]]:
        state, events = self._changes(old)
        if self.notice is None or not self.new.in_episode:
            return state, events
        return state, events + self.notices(old)

    def notices(self, old: ServerState | None) -> tuple[Event, ...]:
        """The advance notices of :func:`advance_notices`."""
        new, notice = self.new, self.notice
        first = new.first_detected
        if notice is None or first is None or not new.in_episode:
            return ()
        at = _latest(new, self.now)
        # Seen inside the window before this write: the notice was given then.
        prior = old.last_seen if old is not None and old.first_detected == first else None
        same = old is not None and old.first_detected == first
        markers = [new.notified_stage, old.notified_stage if same and old is not None else None]
        told = max((m for m in markers if m is not None), default=None)
        table = self.policy.stage_table
        ahead = []
        for kind, offset in (
            (EventKind.THROTTLING_SOON, table.first_throttle),
            (EventKind.BLOCKING_SOON, table.first_block),
        ):
            if not offset:  # no such stage, or it starts at detection: nothing ahead
                continue
            stage = table.stage_at(offset)
            if (told is None or told < stage.number) and _may_open(first, offset, notice, at):
                # Otherwise already announced (another writer's clock ran ahead), or not yet
                # within reach: no notice.
                ahead.append((kind, offset, stage))
        if not ahead:
            return ()  # the usual case (announced, or days away): no spans to work out
        spans = _held_spans(new, self.policy, self.exemptions)
        notices = []
        for kind, offset, stage in ahead:
            starts = clock_reaches(spans, first, offset)
            if starts is None or not starts - notice <= at < starts:
                continue
            if prior is not None and prior >= starts - notice:
                continue
            detail = (
                f"stage {stage.number} starts on {starts:%Y-%m-%d %H:%M} UTC: {_stage_text(stage)}"
            )
            notices.append(
                Event(
                    kind,
                    new.server_id,
                    new.tenant,
                    self.now,
                    stage.number,
                    new.build,
                    detail,
                    connector=self.connector,
                    next_change=starts,
                    episode_start=first,
                    id=event_id(new.server_id, kind, first, stage.number),
                )
            )
        return tuple(notices)

    def _changes(self, old: ServerState | None) -> tuple[ServerState, tuple[Event, ...]]:
        new, policy = self.new, self.policy
        if not new.in_episode:
            return self._stop(old)
        at, decided = _latest(new, self.now), self.decided
        if decided is not None and at == self.now:
            stage = 1 if decided.stage is None else decided.stage.number  # as _stage_number
        else:
            stage = _stage_number(new, at, policy, self.exemptions)
        status = new.status.value.lower()
        if old is None or old.first_detected != new.first_detected:
            detail = f"build {new.build} is {status}: enforcement episode started"
            lead = self.event(EventKind.DETECTED, stage, detail)
            return self._stage(stage, None, lead=lead)
        if old.in_episode:
            if old.notified_stage is not None:
                return self._stage(stage, old.notified_stage)
            # Written before RELAPSED existed: the episode resumed silently, and people were
            # last told of its remediation, at the stage in force at ``last_seen``.
            told = _stage_number(old, old.last_seen, policy, self.exemptions)
            if stage > told:
                prefix = "enforcement resumed after remediation; "
                return self._stage(stage, told, prefix=prefix)
            return new, ()
        # Remediated, and non-compliant again within the relapse window: the episode resumes.
        assert old.compliant_since is not None  # same first_detected, not in an episode
        detail = (
            f"build {new.build} is {status} again within the relapse window: the enforcement "
            f"episode of {new.first_detected:%Y-%m-%d} resumes, in stage {stage}"
        )
        occasion = old.compliant_since.isoformat()  # the remediation it ends
        lead = self.event(EventKind.RELAPSED, stage, detail, occasion)
        return self._stage(stage, old.notified_stage, lead=lead)

    def _stage(
        self,
        stage: int,
        told: int | None,
        *,
        lead: Event | None = None,
        prefix: str = "",
    ) -> tuple[ServerState, tuple[Event, ...]]:
        """Announce ``stage`` if above ``told`` (the stage last announced; ``None``: none).

        STAGE_CHANGED names the new stage, except in a write whose ``lead`` (DETECTED,
        RELAPSED) names it; the thresholds compare with the stage ``told``.
        """
        events = [] if lead is None else [lead]
        if stage <= (told or 0):
            if self.new.notified_stage == told:
                return self.new, tuple(events)  # most messages: nothing changes
            return attrs.evolve(self.new, notified_stage=told), tuple(events)
        policy = self.policy
        before, blocks = _blocks(policy, told), _blocks(policy, stage)
        if lead is None:
            text = _stage_text(policy.stage_table.stages[stage - 1])
            detail = f"{prefix}now in stage {stage}: {text}"
            events.append(self.event(EventKind.STAGE_CHANGED, stage, detail))
        if blocks > 0 and before == 0:
            detail = f"blocked for {blocks} mins/hr"
            events.append(self.event(EventKind.BLOCKING_STARTED, stage, detail))
        if blocks >= 60 > before:
            detail = "every connection is blocked"
            events.append(self.event(EventKind.FULLY_BLOCKED, stage, detail))
        return attrs.evolve(self.new, notified_stage=stage), tuple(events)

    def _stop(self, old: ServerState | None) -> tuple[ServerState, tuple[Event, ...]]:
        """REMEDIATED when a running episode people know of ends; nothing otherwise."""
        new = self.new
        if old is None or not old.in_episode:
            return new, ()
        if old.notified_stage is None:
            # Resumed silently (before RELAPSED existed): people still believe the last
            # remediation. Keep the stage they last heard for the next resumption.
            return attrs.evolve(
                new,
                notified_stage=_stage_number(old, old.last_seen, self.policy, self.exemptions),
            ), ()
        detail = f"build {new.build} is compliant; enforcement stopped"
        since = new.compliant_since
        occasion = "" if since is None else since.isoformat()
        return new, (self.event(EventKind.REMEDIATED, None, detail, occasion),)


def _next_start(
    state: ServerState,
    at: dt.datetime,
    policy: Policy,
    exemptions: tuple[Exemption, ...] = (),
) -> dt.datetime | None:
    """The instant the stage after the one in force at ``at`` starts; ``None`` if none will.

    ``None`` outside an episode and in the terminal stage. Pauses delay it when the policy
    freezes the clock.
    """
    decision = decide(state, at, policy, exemptions)
    first = state.first_detected
    if decision.stage is None or first is None:
        return None
    start = policy.stage_table.next_start(decision.elapsed)
    if start is None:
        return None
    return clock_reaches(_held_spans(state, policy, exemptions), first, start)


def _held_spans(
    state: ServerState, policy: Policy, exemptions: tuple[Exemption, ...]
) -> tuple[Span, ...]:
    """The spans in which the server's enforcement clock stands still."""
    spans = pause_spans(state.pauses) if policy.pause_freezes_clock else ()
    if exemptions:  # an exemption holds the clock as a pause does
        spans = _union((*spans, *exempt_spans(exemptions)))
    return spans


def _union(spans: tuple[Span, ...]) -> tuple[Span, ...]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def _may_open(
    first: dt.datetime, offset: dt.timedelta, notice: dt.timedelta, at: dt.datetime
) -> bool:
    """Whether the notice window of a stage ``offset`` into an episode from ``first`` can be
    open at ``at``. The held spans only delay the stage's start, so the window opens no
    earlier than ``first + offset - notice``; before that no notice is due, whatever the
    pauses and exemptions."""
    try:
        return at >= first + (offset - notice)
    except OverflowError:
        return True  # let clock_reaches decide


def _latest(state: ServerState, now: dt.datetime) -> dt.datetime:
    """The later of ``now`` and ``last_seen``: a slow node announces no stage behind it."""
    seen = state.last_seen
    return now if seen is None or now >= seen else seen


def _stage_number(
    state: ServerState,
    at: dt.datetime | None,
    policy: Policy,
    exemptions: tuple[Exemption, ...] = (),
) -> int:
    """The stage in force at ``at`` for a state in an episode (stage 1 without ``at``)."""
    if at is None:
        return 1
    stage = decide(state, at, policy, exemptions).stage
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
