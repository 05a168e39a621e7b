"""Decisions: what to answer a connection from an Exchange server at an instant.

:func:`decide` turns a :class:`~tbes.state.ServerState`, an instant and a
:class:`~tbes.policy.Policy` into a :class:`Decision`. Two decisions shaped it. The minute of
the UTC hour decides, at a server-specific offset taken from SHA-256 of the server id, so every
process and every node of a cluster answers alike (the built-in ``hash()`` is salted per
process) while servers spread over the hour. And pauses freeze the clock, so the stages after a
pause start as many days later as it lasted.
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
from tbes.ledger import Pause, Span, clock_reaches, covering_end, pause_spans, paused_between
from tbes.policy import DEFAULT_POLICY, Policy, SmtpReply, StagePlan
from tbes.stages import Stage
from tbes.state import ServerState

__all__ = ["Action", "Decision", "decide", "minute_offset"]

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
    for name in ("report", "paused", "elapsed", "reason"):
        if getattr(decision, name) is None:
            return f"{name} must not be None"
    if action is Action.ACCEPT and decision.reply is not None:
        return f"an ACCEPT decision carries no reply, got {decision.reply!r}"
    if action is not Action.ACCEPT and decision.reply is None:
        return f"a {action.value} decision needs a reply, got None"
    if decision.paused:
        return f"a paused server is accepted, got {action.value}"
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
) -> dt.datetime | None:
    """The earliest instant after ``now`` with another action, stage or pause status."""
    soonest = None if paused else _window_edge(now, r, plan)
    # A window edge is at most an hour away, and pauses only delay a stage start: skip
    # finding the next start when it is more than an hour off.
    if plan.next_start is not None and (soonest is None or elapsed >= plan.near_start):
        first = state.first_detected
        assert first is not None  # decide only asks during an episode
        start = clock_reaches(spans if policy.pause_freezes_clock else (), first, plan.next_start)
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
    )


def decide(state: ServerState, now: dt.datetime, policy: Policy = DEFAULT_POLICY) -> Decision:
    """Decide what to do with a connection from ``state``'s server at the instant ``now``.

    Total and deterministic: outside an episode, accept; otherwise the
    stage comes from the episode's clock (paused time excluded when the policy freezes
    it), a paused server is accepted and reported, and the minute of the UTC hour, shifted
    by the server's SHA-256 offset, picks block, throttle or accept. A naive ``now`` raises
    :class:`~tbes.errors.NaiveDatetimeError`; arguments of the wrong type raise
    :class:`~tbes.errors.InvalidValueError` naming the argument.
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
    change = _next_change(state, now, elapsed, policy, plan, r, paused_until is not None, spans)
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
    )
