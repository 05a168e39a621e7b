"""Events: which announcements a change of a server's stored state makes, and what each says.

:func:`announcement` compares the state before a write with the state to be written and
returns the events the change makes, with the state to write: that state's
``notified_stage`` records what people were last told, so every process sharing the store
can tell what is news (docs/enforcement.md, "Events"). Pure: no clock, no I/O, no logging;
the enforcer sends the events, and only when its compare-and-swap stored the change, so
each change is announced exactly once. Two decisions shaped it. Stages are announced only
upwards within an episode, so nodes with skewed clocks cannot make them flap. And the
marker is part of the stored state, so a writer that loses the race recomputes from the
winner's state, in which the change is already recorded.
"""

from __future__ import annotations

import datetime as dt
import enum

import attrs

from tbes._checks import id_field, of_type, require_type
from tbes._instants import as_utc
from tbes.decision import decide
from tbes.errors import InvalidValueError
from tbes.policy import Policy
from tbes.stages import Stage
from tbes.state import ServerState
from tbes.version import ExchangeBuild

__all__ = [
    "Announcement",
    "Event",
    "EventKind",
    "announce",
    "announcement",
    "state_event",
]


class EventKind(enum.Enum):
    """What happened to a server, as announced to people (see docs/enforcement.md)."""

    DETECTED = "DETECTED"
    STAGE_CHANGED = "STAGE_CHANGED"
    BLOCKING_STARTED = "BLOCKING_STARTED"
    FULLY_BLOCKED = "FULLY_BLOCKED"
    PAUSED = "PAUSED"
    RESUMED = "RESUMED"
    REMEDIATED = "REMEDIATED"


def _check_stage(instance: object, attribute: attrs.Attribute[int | None], value: object) -> None:
    _require_stage(value)


def _require_stage(value: object) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise InvalidValueError(f"stage must be a stage number >= 1 or None, got {value!r:.80}")


def _event_at(value: object) -> dt.datetime:
    return as_utc(value, "at")


@attrs.frozen
class Event:
    """One change worth telling people about: what, which server, when, and the details.

    ``stage`` is the stage number in force (``None`` outside an episode), ``build`` the
    server's last known build, ``detail`` a sentence for humans. Instants must be
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
) -> Announcement:
    """The events a write from ``old`` (``None``: no stored state) to ``new`` makes at ``now``.

    ``new`` is the state about to be written; the returned state is ``new`` with its
    ``notified_stage`` marker updated, and it is what must be stored for the events to be
    news exactly once. DETECTED fires once per episode, stages are announced only upwards
    (the stage compared is the one in force at the later of ``now`` and ``new.last_seen``,
    so a slow clock announces no stage behind the stored one), and REMEDIATED fires when
    people were last told that enforcement runs. Arguments of the wrong type raise
    :class:`~tbes.errors.InvalidValueError` naming them.
    """
    require_type(old, ServerState, "old", optional=True)
    require_type(new, ServerState, "new")
    require_type(policy, Policy, "policy")
    teller = _Teller(new, policy, as_utc(now, "now"))
    state, events = teller.announce(old)
    return Announcement(state, events)


def announce(
    old: ServerState | None,
    new: ServerState,
    policy: Policy,
    now: dt.datetime,
) -> tuple[Event, ...]:
    """The events of :func:`announcement` alone: what a write from ``old`` to ``new`` tells."""
    return announcement(old, new, policy, now).events


def state_event(
    kind: EventKind, state: ServerState, policy: Policy, now: dt.datetime, detail: str
) -> Event:
    """The event ``kind`` about ``state`` as it stands at ``now`` (a pause, its early end).

    Its stage is the one in force at ``now``. Arguments of the wrong type raise
    :class:`~tbes.errors.InvalidValueError` naming them.
    """
    require_type(state, ServerState, "state")
    require_type(policy, Policy, "policy")
    now = as_utc(now, "now")
    stage = decide(state, now, policy).stage
    return _Teller(state, policy, now).event(kind, None if stage is None else stage.number, detail)


@attrs.frozen
class _Teller:
    """The announcement of one write to ``new``: its events share the state and the clock."""

    new: ServerState
    policy: Policy
    now: dt.datetime

    def event(self, kind: EventKind, stage: int | None, detail: str) -> Event:
        new = self.new
        return Event(kind, new.server_id, new.tenant, self.now, stage, new.build, detail)

    def announce(self, old: ServerState | None) -> tuple[ServerState, tuple[Event, ...]]:
        new, policy = self.new, self.policy
        if not new.in_episode:
            return self._stop(old)
        stage = _stage_number(new, _latest(new, self.now), policy)
        if old is None or old.first_detected != new.first_detected:
            status = new.status.value.lower()
            detail = f"build {new.build} is {status}: enforcement episode started"
            return self._stage(stage, None, lead=self.event(EventKind.DETECTED, stage, detail))
        if old.in_episode and old.notified_stage is not None:
            return self._stage(stage, old.notified_stage)
        # People were last told of a remediation: the episode resumed within the relapse
        # window (``old`` is remediated), or resumed earlier without a new stage (marker
        # ``None``, and the stage last announced is the one in force at ``last_seen``).
        told = (
            old.notified_stage if not old.in_episode else _stage_number(old, old.last_seen, policy)
        )
        if stage > (told or 0):
            return self._stage(stage, told, prefix="enforcement resumed after remediation; ")
        if stage < (told or 0):
            # Only a node whose clock is behind the announcement gets here. Going silent
            # would lose the stage announced (``last_seen`` is behind it), so keep the
            # marker: at worst people hear REMEDIATED once more, but never a stage twice.
            return new, ()
        return attrs.evolve(new, notified_stage=None), ()

    def _stage(
        self, stage: int, told: int | None, *, lead: Event | None = None, prefix: str = ""
    ) -> tuple[ServerState, tuple[Event, ...]]:
        """Announce ``stage`` if above ``told`` (the stage last announced; ``None``: none).

        STAGE_CHANGED names the new stage, except in the write that starts an episode, whose
        ``lead`` (DETECTED) names it; the thresholds compare with the stage ``told``.
        """
        events = [] if lead is None else [lead]
        if stage <= (told or 0):
            return self.new, tuple(events)
        policy = self.policy
        before, blocks = _blocks(policy, told), _blocks(policy, stage)
        if lead is None:
            text = _stage_text(policy.stage_table.stages[stage - 1])
            detail = f"{prefix}now in stage {stage}: {text}"
            events.append(self.event(EventKind.STAGE_CHANGED, stage, detail))
        if blocks > 0 and before == 0:
            events.append(
                self.event(EventKind.BLOCKING_STARTED, stage, f"blocked for {blocks} mins/hr")
            )
        if blocks >= 60 > before:
            events.append(self.event(EventKind.FULLY_BLOCKED, stage, "every connection is blocked"))
        return attrs.evolve(self.new, notified_stage=stage), tuple(events)

    def _stop(self, old: ServerState | None) -> tuple[ServerState, tuple[Event, ...]]:
        """REMEDIATED when a running episode people know of ends; nothing otherwise."""
        new = self.new
        if old is None or not old.in_episode:
            return new, ()
        if old.notified_stage is None:
            # Resumed silently: people still believe the last remediation. Keep the stage
            # they last heard (in force at ``last_seen``) for the next resumption.
            told = _stage_number(old, old.last_seen, self.policy)
            return attrs.evolve(new, notified_stage=told), ()
        detail = f"build {new.build} is compliant; enforcement stopped"
        return new, (self.event(EventKind.REMEDIATED, None, detail),)


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
