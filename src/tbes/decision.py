"""Decisions: what to answer a connection from an Exchange server at an instant.

:func:`decide` turns a :class:`~tbes.state.ServerState`, an instant and a
:class:`~tbes.policy.Policy` into a :class:`Decision`. Two decisions shaped it. The minute of
the UTC hour decides, at a server-specific offset taken from SHA-256 of the server id, so every
process and every node of a cluster answers alike (the built-in ``hash()`` is salted per
process) while servers spread over the hour. And pauses freeze the clock, so the stages after a
pause start as many days later as it lasted; an exemption (:mod:`tbes.exemption`) freezes it
the same way, without a quota. A decision that is not *enforced* (monitor mode, an exemption)
always accepts and says what enforcement would have answered (``would_action``,
``would_reply``), so an adapter that answers ``action``/``reply`` can never refuse it.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib

import attrs

from tbes._instants import as_utc
from tbes._slots import slot_filler
from tbes.compliance import Compliance
from tbes.errors import InvalidValueError
from tbes.exemption import Exemption, exempt_spans
from tbes.ledger import Pause, Span, clock_reaches, covering_end, pause_spans, paused_between
from tbes.policy import DEFAULT_POLICY, Policy, SmtpReply, StagePlan
from tbes.stages import Stage
from tbes.state import ServerState

__all__ = ["Action", "Decision", "decide", "minute_offset", "monitored"]

_MINUTES = 60
_ZERO = dt.timedelta(0)
_MM = tuple(f"{minute:02d}" for minute in range(60))  # formatting ":02d" per call costs more


class Action(enum.Enum):
    """What to do with a connection: accept it, defer it (4xx) or refuse it (5xx)."""

    ACCEPT = "ACCEPT"
    THROTTLE = "THROTTLE"
    BLOCK = "BLOCK"


@functools.lru_cache(maxsize=65536)
def minute_offset(server_id: str) -> int:
    """Where the server's windows start in the UTC hour: stable in every process and node."""
    digest = hashlib.sha256(server_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % _MINUTES


@functools.lru_cache(maxsize=4096)
def _spans(pauses: tuple[Pause, ...]) -> tuple[Span, ...]:
    # States are immutable and a busy server's pauses seldom change: merge them once.
    return pause_spans(pauses)


# ---- Decision --------------------------------------------------------------------------


def _what_is_broken(decision: Decision) -> str:
    action = decision.action
    if not isinstance(action, Action):
        return f"action must be an Action, got {action!r:.80}"
    for name, kind in _FIELD_TYPES:
        value = getattr(decision, name)
        # bool is exact: 1 and 0 are no flags.
        wrong = type(value) is not bool if kind is bool else not isinstance(value, kind)
        if value is not None and wrong:
            return f"{name} must be a {kind.__name__}, got {value!r:.80}"
    for name in ("report", "paused", "elapsed", "reason", "enforced", "exempt"):
        if getattr(decision, name) is None:
            return f"{name} must not be None"
    if action is Action.ACCEPT and decision.reply is not None:
        return f"an ACCEPT decision carries no reply, got {decision.reply!r}"
    if action is not Action.ACCEPT and decision.reply is None:
        return f"a {action.value} decision needs a reply, got None"
    if decision.paused:
        return f"a paused server is accepted, got {action.value}"
    if not isinstance(decision.would_action, Action):
        return f"would_action must be an Action, got {decision.would_action!r:.80}"
    if not decision.enforced and action is not Action.ACCEPT:
        return f"a decision that is not enforced accepts, got {action.value}"
    if decision.exempt and decision.enforced:
        return "an exempt decision is not enforced"
    if decision.enforced and (
        decision.would_action is not action or decision.would_reply != decision.reply
    ):
        return "an enforced decision would answer what it answers: would_* must equal action/reply"
    return f"elapsed must be >= 0, got {decision.elapsed!r}"


# The types _what_is_broken names; None is checked apart (it is valid for some fields).
_FIELD_TYPES = (
    ("stage", Stage),
    ("reply", SmtpReply),
    ("report", bool),
    ("paused", bool),
    ("elapsed", dt.timedelta),
    ("next_change", dt.datetime),
    ("reason", str),
    ("enforced", bool),
    ("exempt", bool),
)


@attrs.frozen
class Decision:
    """What to do with a connection, why, and until when the answer holds.

    ``stage`` is ``None`` outside an enforcement episode (and in decisions no stage made,
    such as the enforcer's fail-closed reply to a store fault). ``reply`` is the SMTP reply for
    ``THROTTLE`` (450 4.7.230) and ``BLOCK`` (550 5.7.230), ``None`` for ``ACCEPT``.
    ``report`` says whether the connection should be reported, ``paused`` whether
    enforcement is paused. ``elapsed`` is the episode's enforcement clock (paused time
    excluded when the policy freezes the clock). ``next_change`` is the earliest later
    instant at which the decision changes (its action, its stage, or whether the server is
    paused), ``None`` if it never will for this state; ``reason`` says why, in a sentence.

    ``enforced`` is false in monitor mode and under an exemption (``exempt``): the decision
    then always accepts (``action`` ``ACCEPT``, ``reply`` ``None``) and ``would_action`` and
    ``would_reply`` are what enforcement would have answered. For an enforced decision they
    equal ``action`` and ``reply`` (their defaults). Adapters answer ``action``/``reply``
    only, so a decision that is not enforced can never become a 4xx or 5xx; logs and
    reports show ``would_*``.

    A Decision is made by :func:`decide` (and the enforcer's fixed replies), on the hot
    path, so construction checks only what one cheap test can:
    :class:`~tbes.errors.InvalidValueError` for a reply that does not fit the action, a
    paused non-ACCEPT, a negative or non-timedelta ``elapsed``, ``report``/``paused`` not
    bool, ``reason`` not str or ``next_change`` not a datetime. The types of ``stage`` and
    ``reply`` are not checked.
    """

    action: Action
    stage: Stage | None
    reply: SmtpReply | None
    report: bool
    paused: bool
    elapsed: dt.timedelta
    next_change: dt.datetime | None
    reason: str
    enforced: bool = True
    would_action: Action = attrs.field(default=attrs.Factory(lambda self: self.action, True))
    would_reply: SmtpReply | None = attrs.field(
        default=attrs.Factory(lambda self: self.reply, True)
    )
    exempt: bool = False

    def __attrs_post_init__(self) -> None:
        # Checked here, in one cheap test, rather than by a validator per field: decide()
        # builds a Decision for every connection, and this test was timed at about 2% of a
        # decision (a type test per field cost twice that). So report, paused, reason and
        # elapsed are checked exactly; stage and reply are trusted to be what decide() and
        # the enforcer build. A wrong type that makes a test raise is caught at no cost
        # (try is free until something raises). The message is worked out only when broken.
        accept = self.action is Action.ACCEPT
        paused = self.paused
        try:
            broken = (
                (self.reply is None) is not accept
                # exactly True or False, and True only when accepted
                or (paused is not False and (paused is not True or not accept))
                or not self.elapsed >= _ZERO  # TypeError unless a timedelta
                or type(self.reason) is not str
                or type(self.report) is not bool
                or type(self.exempt) is not bool
                or type(self.enforced) is not bool
                or type(self.would_action) is not Action
                # enforced: answers what enforcement answers; else accepts, saying what it would
                or (
                    self.exempt
                    or self.would_action is not self.action
                    or self.would_reply != self.reply
                    if self.enforced
                    else not accept
                )
            )
            change = self.next_change
            if not broken and change is not None and change.tzinfo is not dt.UTC:
                # Frozen class: normalising to UTC is the one write, made while constructing.
                object.__setattr__(self, "next_change", as_utc(change, "next_change"))
        except (TypeError, AttributeError):  # elapsed or next_change of the wrong type
            broken = True
        if broken:
            raise InvalidValueError(_what_is_broken(self))


# decide() makes a Decision for every connection, valid by construction (the property tests
# hold it to Decision's checks), so it fills the slots directly: the frozen class's
# construction and its re-check would be a large part of a decision (docs/performance.md).
_decision = slot_filler(Decision)


# ---- decide ----------------------------------------------------------------------------


def _window_edge(now: dt.datetime, r: int, plan: StagePlan) -> dt.datetime | None:
    """The next minute at which the action changes within the stage, if it ever does."""
    if plan.one_zone:
        return None
    end = plan.block_end if r < plan.block_end else plan.throttle_end
    if r >= end:
        end = _MINUTES
    try:
        # The start of the minute (end - r) minutes on, in one timedelta.
        return now + dt.timedelta(0, (end - r) * 60 - now.second, -now.microsecond)
    except OverflowError:
        return None


def _next_change(
    state: ServerState,
    now: dt.datetime,
    elapsed: dt.timedelta,
    policy: Policy,
    plan: StagePlan,
    r: int,
    paused: bool,
    spans: tuple[Span, ...],
    frozen: tuple[Span, ...],
) -> dt.datetime | None:
    """The earliest instant after ``now`` with another action, stage or pause status.

    ``spans`` are where the pause (or exemption) status changes, ``frozen`` where the clock
    stands still."""
    soonest = None if paused else _window_edge(now, r, plan)
    # A window edge is at most an hour away, and pauses only delay a stage start: skip
    # finding the next start when it is more than an hour off.
    if plan.next_start is not None and (soonest is None or elapsed >= plan.near_start):
        first = state.first_detected
        assert first is not None  # decide only asks during an episode
        start = clock_reaches(frozen, first, plan.next_start)
        if start is not None and (soonest is None or start < soonest):
            soonest = start
    for start, end in spans:
        if end > now:
            edge = start if start > now else end
            return edge if soonest is None or edge < soonest else soonest
    return soonest


# Each status's text, looked up once: an enum member's .value is a Python-level property.
_STATUS_TEXT = {status: status.value for status in Compliance}


def _outside(state: ServerState) -> Decision:
    """The decision for a server that is not in an enforcement episode."""
    if state.compliant_since is not None:
        why = f"compliant since {state.compliant_since.isoformat()}, enforcement stopped"
    else:
        why = f"no enforcement episode (status {_STATUS_TEXT[state.status]})"
    reason = f"{state.server_id}: {why}."
    return _decision(
        action=Action.ACCEPT,
        stage=None,
        reply=None,
        report=False,
        paused=False,
        elapsed=_ZERO,
        next_change=None,
        reason=reason,
        enforced=True,
        would_action=Action.ACCEPT,
        would_reply=None,
        exempt=False,
    )


def decide(
    state: ServerState,
    now: dt.datetime,
    policy: Policy = DEFAULT_POLICY,
    exemptions: tuple[Exemption, ...] = (),
) -> Decision:
    """Decide what to do with a connection from ``state``'s server at the instant ``now``.

    Total and deterministic: outside an episode, accept; otherwise the
    stage comes from the episode's clock (paused time excluded when the policy freezes
    it), a paused server is accepted and reported, and the minute of the UTC hour, shifted
    by the server's SHA-256 offset, picks block, throttle or accept. A naive ``now`` raises
    :class:`~tbes.errors.NaiveDatetimeError`; arguments of the wrong type raise
    :class:`~tbes.errors.InvalidValueError` naming the argument.

    ``exemptions`` are the server's exemptions (the caller picks those that apply to it):
    each stops the clock over its days as a pause does (whatever the policy says of
    pauses), and while one holds the decision accepts, ``exempt`` and not ``enforced``,
    with what the stage where the clock stands would answer as ``would_*``.
    """
    if type(now) is not dt.datetime or now.tzinfo is not dt.UTC:  # else already in UTC
        now = as_utc(now, "now")
    if policy is not DEFAULT_POLICY and not isinstance(policy, Policy):
        raise InvalidValueError(f"policy must be a Policy, got {policy!r:.80}")
    if type(state) is not ServerState:
        raise InvalidValueError(f"state must be a ServerState, got {state!r:.80}")
    first = state.first_detected
    if first is None or state.compliant_since is not None:
        return _outside(state)
    if exemptions:
        return _exempted(state, now, policy, first, _checked(exemptions))
    pauses = state.pauses
    spans = _spans(pauses) if pauses else ()
    elapsed = now - first
    if spans and policy.pause_freezes_clock:
        elapsed -= paused_between(spans, first, now)
    if elapsed < _ZERO:  # clock skew: now before the first detection
        elapsed = _ZERO
    plan = policy.plan_at(elapsed)
    paused_until = covering_end(spans, now) if spans else None
    r = (now.minute - minute_offset(state.server_id)) % _MINUTES
    frozen = spans if policy.pause_freezes_clock else ()
    change = _next_change(
        state, now, elapsed, policy, plan, r, paused_until is not None, spans, frozen
    )
    if paused_until is not None:
        return _paused(state, plan.stage, elapsed, change, paused_until)
    return _by_minute(state, plan, elapsed, change, r, now.minute)


def _paused(
    state: ServerState,
    stage: Stage,
    elapsed: dt.timedelta,
    change: dt.datetime | None,
    until: dt.datetime,
) -> Decision:
    reason = (
        f"{state.server_id} is in stage {stage.number} (day {elapsed.days + 1}), but "
        f"enforcement is paused until {until:%Y-%m-%d %H:%M} UTC."
    )
    return _decision(
        action=Action.ACCEPT,
        stage=stage,
        reply=None,
        report=True,
        paused=True,
        elapsed=elapsed,
        next_change=change,
        reason=reason,
        enforced=True,
        would_action=Action.ACCEPT,
        would_reply=None,
        exempt=False,
    )


def _by_minute(
    state: ServerState,
    plan: StagePlan,
    elapsed: dt.timedelta,
    change: dt.datetime | None,
    r: int,
    minute: int,
) -> Decision:
    stage = plan.stage
    if r < plan.block_end:
        action, reply, window = Action.BLOCK, plan.block_reply, plan.block_window
    elif r < plan.throttle_end:
        action, reply, window = Action.THROTTLE, plan.throttle_reply, plan.throttle_window
    else:
        action, reply, window = Action.ACCEPT, None, plan.accept_window
    reason = f"{state.server_id}{plan.where}{elapsed.days + 1}): minute {_MM[minute]} {window}."
    return _decision(
        action=action,
        stage=stage,
        reply=reply,
        report=stage.report,
        paused=False,
        elapsed=elapsed,
        next_change=change,
        reason=reason,
        enforced=True,
        would_action=action,
        would_reply=reply,
        exempt=False,
    )


def _checked(exemptions: object) -> tuple[Exemption, ...]:
    if not isinstance(exemptions, tuple) or not all(
        isinstance(each, Exemption) for each in exemptions
    ):
        raise InvalidValueError(f"exemptions must be a tuple of Exemption, got {exemptions!r:.80}")
    return exemptions


def _merged(spans: tuple[Span, ...]) -> tuple[Span, ...]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def _exempted(
    state: ServerState,
    now: dt.datetime,
    policy: Policy,
    first: dt.datetime,
    exemptions: tuple[Exemption, ...],
) -> Decision:
    """decide() for a server with exemptions: off the hot path, which has none."""
    pauses = _spans(state.pauses) if state.pauses else ()
    held = exempt_spans(exemptions)
    frozen = _merged((*(pauses if policy.pause_freezes_clock else ()), *held))
    elapsed = max(now - first - paused_between(frozen, first, now), _ZERO)
    plan = policy.plan_at(elapsed)
    r = (now.minute - minute_offset(state.server_id)) % _MINUTES
    paused_until = covering_end(pauses, now) if pauses else None
    holding = [each for each in exemptions if each.covers(now)]
    edges = _merged((*pauses, *held))
    change = _next_change(
        state,
        now,
        elapsed,
        policy,
        plan,
        r,
        bool(holding) or paused_until is not None,
        edges,
        frozen,
    )
    if not holding:
        if paused_until is not None:
            return _paused(state, plan.stage, elapsed, change, paused_until)
        return _by_minute(state, plan, elapsed, change, r, now.minute)
    # The latest-ending exemption holding now is the one that says how long it lasts.
    exemption = max(holding, key=lambda each: each.end)
    enforced = _by_minute(state, plan, elapsed, change, r, now.minute)
    reason = (
        f"{state.server_id} is in stage {plan.stage.number} (day {elapsed.days + 1}), but "
        f"{exemption.describe()}."
    )
    would = Action.ACCEPT if paused_until is not None else enforced.action
    return _decision(
        action=Action.ACCEPT,
        stage=plan.stage,
        reply=None,
        report=True,
        paused=paused_until is not None,
        elapsed=elapsed,
        next_change=change,
        reason=reason,
        enforced=False,
        would_action=would,
        would_reply=None if would is Action.ACCEPT else enforced.reply,
        exempt=True,
    )


def monitored(decision: Decision) -> Decision:
    """``decision`` in monitor mode: accepted, not enforced, saying what it would have been.

    A decision already not enforced (an exemption) is returned as it is.
    """
    if not decision.enforced:
        return decision
    action, reply = decision.action, decision.reply
    would = "" if reply is None else f", would {action.value.lower()} ({reply.code})"
    return _decision(
        action=Action.ACCEPT,
        stage=decision.stage,
        reply=None,
        report=decision.report,
        paused=decision.paused,
        elapsed=decision.elapsed,
        next_change=decision.next_change,
        reason=f"monitor mode{would}: {decision.reason}",
        enforced=False,
        would_action=action,
        would_reply=decision.reply,
        exempt=False,
    )
