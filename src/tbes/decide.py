"""Enforcement decisions: what to answer a connection from an Exchange server at an instant.

A :class:`Policy` says what is enforced (baseline, stage table, connectors, reply wording);
:func:`decide` turns a :class:`~tbes.state.ServerState` and an instant into a
:class:`Decision`. Three decisions shaped it. The minute of the UTC hour decides, at a
server-specific offset taken from SHA-256 of the server id, so every process and every node
of a cluster answers alike (the built-in ``hash()`` is salted per process) while servers
spread over the hour. Pauses freeze the clock, so the stages after a pause start as many
days later as it lasted. And :func:`decide` sits on the hot path of every connection, so a
policy precomputes per stage what does not depend on the server (window bounds, reply
lines) and a decision is mostly arithmetic.
"""

from __future__ import annotations

import bisect
import datetime as dt
import enum
import hashlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import attrs

from tbes.catalog import Baseline, Catalog, Compliance
from tbes.errors import InvalidValueError, NaiveDatetimeError, PolicyError
from tbes.ledger import Pause
from tbes.stages import DEFAULT_STAGE_TABLE, Stage, StageTable

if TYPE_CHECKING:
    # tbes.state imports this module at run time (observe's default is DEFAULT_POLICY), so
    # importing ServerState here only for the type checker keeps the import graph acyclic.
    from tbes.state import ServerState

__all__ = [
    "DEFAULT_POLICY",
    "Action",
    "ConnectorKind",
    "Decision",
    "Policy",
    "SmtpReply",
    "decide",
]

_MINUTES = 60
_ZERO = dt.timedelta(0)
_HOUR = dt.timedelta(hours=1)
_MM = tuple(f"{minute:02d}" for minute in range(60))  # formatting ":02d" per call costs more
_PRESETS = ("exchange_online_2023", "exchange_online_2026", "supported_only")
# A reply line travels through milters and SMTP libraries: one line, printable ASCII.
_PRINTABLE = frozenset(chr(c) for c in range(32, 127))


class ConnectorKind(enum.Enum):
    """Where a connection comes from; a policy enforces only on the kinds it lists."""

    ON_PREMISES = "ON_PREMISES"
    PARTNER = "PARTNER"
    INTERNET = "INTERNET"


class Action(enum.Enum):
    """What to do with a connection: accept it, defer it (4xx) or refuse it (5xx)."""

    ACCEPT = "ACCEPT"
    THROTTLE = "THROTTLE"
    BLOCK = "BLOCK"


def _as_utc(value: dt.datetime, name: str) -> dt.datetime:
    """``value`` in UTC; a naive datetime raises NaiveDatetimeError, a non-datetime (a date
    included: it names no instant) InvalidValueError."""
    if not isinstance(value, dt.datetime):
        raise InvalidValueError(f"{name} must be a timezone-aware datetime, got {value!r:.80}")
    tz = value.tzinfo
    if tz is dt.UTC:
        return value
    if tz is None or value.utcoffset() is None:
        raise NaiveDatetimeError(
            f"{name} must be timezone-aware, got naive {value!r}; attach a tzinfo such as "
            "datetime.UTC"
        )
    return value.astimezone(dt.UTC)


def _as_utc_or_none(value: dt.datetime | None, name: str) -> dt.datetime | None:
    """``value`` in UTC, or None; see :func:`_as_utc`."""
    # The common case first; type() rules out other objects with a tzinfo (a time, say).
    if value is None or (type(value) is dt.datetime and value.tzinfo is dt.UTC):
        return value
    return _as_utc(value, name)


def _minute_offset(server_id: str) -> int:
    """Where the server's windows start in the UTC hour: stable in every process and node."""
    digest = hashlib.sha256(server_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % _MINUTES


# ---- SMTP replies ---------------------------------------------------------------------


def _check_code(instance: SmtpReply, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or not 400 <= value <= 599:
        raise InvalidValueError(f"an enforcement reply code is 4xx or 5xx, got {value!r}")


def _check_enhanced(instance: SmtpReply, attribute: attrs.Attribute[str], value: str) -> None:
    parts = value.split(".") if isinstance(value, str) else []
    valid = (
        len(parts) == 3
        and all(part.isascii() and part.isdigit() and len(part) <= 3 for part in parts)
        and parts[0] == str(instance.code)[0]
    )
    if not valid:
        raise InvalidValueError(
            f"enhanced status code must be class.subject.detail with the reply's class "
            f"{str(instance.code)[0]} (RFC 3463), got {value!r}"
        )


def _check_line(what: str, value: str) -> None:
    if not isinstance(value, str) or not value or not _PRINTABLE.issuperset(value):
        raise InvalidValueError(
            f"{what} must be non-empty printable ASCII on one line, got {value!r}"
        )


def _check_text(instance: SmtpReply, attribute: attrs.Attribute[str], value: str) -> None:
    _check_line("reply text", value)


@attrs.frozen
class SmtpReply:
    """An SMTP reply line: code, enhanced status code and text; ``str()`` gives the line."""

    code: int = attrs.field(validator=_check_code)
    enhanced: str = attrs.field(validator=_check_enhanced)
    text: str = attrs.field(validator=_check_text)

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


def _reply(code: int, enhanced: str, verb: str, minutes: int, policy: Policy) -> SmtpReply:
    return SmtpReply(
        code,
        enhanced,
        f"Connecting Exchange server version is out-of-date; connection to "
        f"{policy.service_name} {verb} for {minutes} mins/hr. "
        f"For more information see {policy.info_url}.",
    )


# ---- Policy ----------------------------------------------------------------------------


class _Plan(NamedTuple):
    """What a decision in one stage needs, computed once per policy."""

    stage: Stage
    # In window coordinates r = (minute - offset) mod 60: r < block_end blocks,
    # r < throttle_end throttles, the rest accepts.
    block_end: int
    throttle_end: int
    block_reply: SmtpReply | None
    throttle_reply: SmtpReply | None
    # The pieces of a reason: " is in stage N (day ", then how it names the window the
    # minute falls in.
    where: str
    block_window: str
    throttle_window: str
    accept_window: str
    # Whether the whole hour is one action: no window edges within the stage.
    one_zone: bool
    next_start: dt.timedelta | None
    # An hour before next_start: until then the next window edge comes first.
    near_start: dt.timedelta


def _accept_window(stage: Stage) -> str:
    """How a reason says that a minute is accepted in ``stage``."""
    windows = [
        name
        for name, minutes in (("block", stage.block_minutes), ("throttle", stage.throttle_minutes))
        if minutes
    ]
    if windows:
        plural = "s" if len(windows) > 1 else ""
        return f"is outside its {' and '.join(windows)} window{plural}"
    reported = " (reported only)" if stage.report else ""
    return f"is not throttled or blocked in this stage{reported}"


def _to_connectors(kinds: Iterable[ConnectorKind]) -> frozenset[ConnectorKind]:
    return frozenset(kinds)


def _check_connectors(
    instance: Policy, attribute: attrs.Attribute[frozenset[ConnectorKind]], value: object
) -> None:
    assert isinstance(value, frozenset)  # the converter made it one
    strangers = [kind for kind in value if not isinstance(kind, ConnectorKind)]
    if strangers:
        raise PolicyError(f"connectors must be ConnectorKind members, got {strangers[0]!r}")


def _check_text_setting(instance: Policy, attribute: attrs.Attribute[str], value: str) -> None:
    # Both end up in the reply line sent to the peer.
    _check_line(attribute.name, value)


def _check_quota(instance: Policy, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 0:
        raise PolicyError(f"pause_quota_days must be an int >= 0, got {value!r}")


def _check_window(
    instance: Policy, attribute: attrs.Attribute[dt.timedelta], value: object
) -> None:
    if not isinstance(value, dt.timedelta) or value < _ZERO:
        raise PolicyError(f"relapse_window must be a timedelta >= 0, got {value!r}")


def _setting_of(kind: type) -> Callable[[Policy, attrs.Attribute[Any], object], None]:
    """A validator raising PolicyError (not attrs' TypeError) for a value not of ``kind``."""

    def check(instance: Policy, attribute: attrs.Attribute[Any], value: object) -> None:
        # bool is exact: 1 and 0 are no flags.
        wrong = type(value) is not bool if kind is bool else not isinstance(value, kind)
        if wrong:
            raise PolicyError(f"{attribute.name} must be a {kind.__name__}, got {value!r:.80}")

    return check


def _default_baseline() -> Baseline:
    return Baseline.exchange_online_2026()


@attrs.frozen
class Policy:
    """What is enforced, on which connections, how long each stage lasts and what replies say.

    The defaults are Microsoft's Exchange Online rules of 2026; see the presets
    :meth:`exchange_online_2023`, :meth:`exchange_online_2026`, :meth:`supported_only` and
    :meth:`named`. Invalid settings, values of the wrong type included, raise
    :class:`~tbes.errors.PolicyError` naming the setting and the value (the reply wording,
    :class:`~tbes.errors.InvalidValueError`).
    """

    stage_table: StageTable = attrs.field(
        default=DEFAULT_STAGE_TABLE, validator=_setting_of(StageTable)
    )
    baseline: Baseline = attrs.field(factory=_default_baseline, validator=_setting_of(Baseline))
    connectors: frozenset[ConnectorKind] = attrs.field(
        default=frozenset({ConnectorKind.ON_PREMISES}),
        converter=_to_connectors,
        validator=_check_connectors,
    )
    service_name: str = attrs.field(default="Exchange Online", validator=_check_text_setting)
    info_url: str = attrs.field(
        default="https://aka.ms/BlockUnsafeExchange", validator=_check_text_setting
    )
    pause_quota_days: int = attrs.field(default=90, validator=_check_quota)
    pause_freezes_clock: bool = attrs.field(default=True, validator=_setting_of(bool))
    relapse_window: dt.timedelta = attrs.field(
        default=dt.timedelta(days=30), validator=_check_window
    )
    # Derived from the fields above for decide's hot path; outside eq, repr and the
    # serialised form (cattrs skips init=False fields).
    _starts: tuple[dt.timedelta, ...] = attrs.field(init=False, eq=False, repr=False, default=())
    _plans: tuple[_Plan, ...] = attrs.field(init=False, eq=False, repr=False, default=())

    def __attrs_post_init__(self) -> None:
        # The class is frozen; these are the only writes, made while constructing.
        table = self.stage_table
        starts = tuple(table.start_of(stage.number) for stage in table)
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_plans", tuple(self._plan(stage, starts) for stage in table))

    def _plan(self, stage: Stage, starts: tuple[dt.timedelta, ...]) -> _Plan:
        block, throttle = stage.block_minutes, stage.throttle_minutes
        next_start = starts[stage.number] if stage.number < len(starts) else None
        zones = (block > 0) + (throttle > 0) + (block + throttle < _MINUTES)
        return _Plan(
            stage=stage,
            block_end=block,
            throttle_end=block + throttle,
            block_reply=_reply(550, "5.7.230", "blocked", block, self) if block else None,
            throttle_reply=_reply(450, "4.7.230", "throttled", throttle, self)
            if throttle
            else None,
            where=f" is in stage {stage.number} (day ",
            block_window=f"is in its {block}-minute block window",
            throttle_window=f"is in its {throttle}-minute throttle window",
            accept_window=_accept_window(stage),
            one_zone=zones < 2,
            next_start=next_start,
            near_start=_ZERO if next_start is None else next_start - _HOUR,
        )

    @classmethod
    def exchange_online_2023(cls) -> Policy:
        """Microsoft's 2023 rules: Exchange 2007 and older unsupported, the rest compliant."""
        return cls(baseline=Baseline.exchange_online_2023())

    @classmethod
    def exchange_online_2026(cls) -> Policy:
        """Microsoft's 2026 rules: 2013 and older unsupported, 2016/2019 need the Oct 2025 SU."""
        return cls(baseline=Baseline.exchange_online_2026())

    @classmethod
    def supported_only(cls, on: dt.date, catalog: Catalog | None = None) -> Policy:
        """Only what Microsoft supports on ``on``: the latest SU of every supported CU line.

        ``on`` must be a :class:`~datetime.date` (not a datetime), else
        :class:`~tbes.errors.PolicyError`. The lines and their updates come from
        ``catalog``, so an operator's imported catalog raises the minimums without a new
        release; without one the packaged catalog is read (:meth:`Catalog.default`).
        """
        if isinstance(on, dt.datetime) or not isinstance(on, dt.date):
            raise PolicyError(f"on must be a date, got {on!r:.80}")
        if catalog is not None and not isinstance(catalog, Catalog):
            raise PolicyError(f"catalog must be a Catalog or None, got {catalog!r:.80}")
        return cls(baseline=Baseline.supported_only(on, catalog))

    @classmethod
    def named(
        cls, name: str, *, on: dt.date | None = None, catalog: Catalog | None = None
    ) -> Policy:
        """The preset called ``name``; ``supported_only`` needs ``on``, the others ignore it.

        ``catalog`` is what ``supported_only`` reads its lines from (see
        :meth:`supported_only`); the fixed presets need none. Raises
        :class:`~tbes.errors.PolicyError` naming the valid presets for an unknown name, and
        for ``supported_only`` without ``on``.
        """
        if name == "exchange_online_2023":
            return cls.exchange_online_2023()
        if name == "exchange_online_2026":
            return cls.exchange_online_2026()
        if name == "supported_only":
            if on is None:
                raise PolicyError("policy 'supported_only' needs the date to judge support on")
            return cls.supported_only(on, catalog)
        raise PolicyError(f"unknown policy {name!r}: choose one of {', '.join(_PRESETS)}")


DEFAULT_POLICY: Policy = Policy.exchange_online_2026()
"""The policy used when none is given: :meth:`Policy.exchange_online_2026`."""


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
                object.__setattr__(self, "next_change", _as_utc(change, "next_change"))
        except (TypeError, AttributeError):  # elapsed or next_change of the wrong type
            broken = True
        if broken:
            raise InvalidValueError(_what_is_broken(self))


# decide() makes a Decision for every connection, valid by construction (the property tests
# hold it to Decision's checks), so it fills the slots directly: the frozen class's per-field
# __setattr__ and the re-check cost about a fifth of a decision.
_new_object = object.__new__
(
    _SET_ACTION,
    _SET_STAGE,
    _SET_REPLY,
    _SET_REPORT,
    _SET_PAUSED,
    _SET_ELAPSED,
    _SET_CHANGE,
    _SET_REASON,
) = (getattr(Decision, field.name).__set__ for field in attrs.fields(Decision))


def _decision(
    action: Action,
    stage: Stage | None,
    reply: SmtpReply | None,
    report: bool,
    paused: bool,
    elapsed: dt.timedelta,
    next_change: dt.datetime | None,
    reason: str,
) -> Decision:
    decision: Decision = _new_object(Decision)
    _SET_ACTION(decision, action)
    _SET_STAGE(decision, stage)
    _SET_REPLY(decision, reply)
    _SET_REPORT(decision, report)
    _SET_PAUSED(decision, paused)
    _SET_ELAPSED(decision, elapsed)
    _SET_CHANGE(decision, next_change)
    _SET_REASON(decision, reason)
    return decision


# ---- decide ----------------------------------------------------------------------------

_Span = tuple[dt.datetime, dt.datetime]


def _pause_spans(pauses: Iterable[Pause]) -> tuple[_Span, ...]:
    """The paused instants as sorted, disjoint ``[start, end)`` spans (touching ones merged)."""
    spans: list[_Span] = []
    for start, end in sorted((p.start_instant, p.end_instant) for p in pauses):
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return tuple(spans)


def _paused_between(
    spans: tuple[_Span, ...], since: dt.datetime, until: dt.datetime
) -> dt.timedelta:
    """How much of ``[since, until]`` the spans cover."""
    total = _ZERO
    for start, end in spans:
        if start >= until:
            break
        if end > since:
            total += min(end, until) - max(start, since)
    return total


def _reached(
    spans: tuple[_Span, ...], first: dt.datetime, target: dt.timedelta
) -> dt.datetime | None:
    """The first instant at which a clock started at ``first`` and frozen in ``spans`` shows
    ``target``; ``None`` past :attr:`datetime.datetime.max`."""
    try:
        at = first + target
        for start, end in spans:
            if end <= first:
                continue
            stood_from = max(start, first)
            if stood_from >= at:
                break
            # The clock stood still for the whole span, so the target moves by its length.
            at += end - stood_from
    except OverflowError:
        return None
    return at


def _window_edge(now: dt.datetime, r: int, plan: _Plan) -> dt.datetime | None:
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
    plan: _Plan,
    r: int,
    paused: bool,
) -> dt.datetime | None:
    """The earliest instant after ``now`` with another action, stage or pause status."""
    spans = state._pause_spans
    soonest = None if paused else _window_edge(now, r, plan)
    # A window edge is at most an hour away, and pauses only delay a stage start: skip
    # finding the next start when it is more than an hour off.
    if plan.next_start is not None and (soonest is None or elapsed >= plan.near_start):
        first = state.first_detected
        assert first is not None  # decide only asks during an episode
        start = _reached(spans if policy.pause_freezes_clock else (), first, plan.next_start)
        if start is not None and (soonest is None or start < soonest):
            soonest = start
    for start, end in spans:
        if end > now:
            edge = start if start > now else end
            return edge if soonest is None or edge < soonest else soonest
    return soonest


def _covering_end(spans: tuple[_Span, ...], now: dt.datetime) -> dt.datetime | None:
    """The end of the pause span covering ``now``, if one does."""
    for start, end in spans:
        if start > now:
            return None
        if now < end:
            return end
    return None


# Each status's text, looked up once: an enum member's .value is a Python-level property.
_STATUS_TEXT = {status: status.value for status in Compliance}


def _outside(state: ServerState) -> Decision:
    """The decision for a server that is not in an enforcement episode."""
    if state.compliant_since is not None:
        why = f"compliant since {state.compliant_since.isoformat()}, enforcement stopped"
    else:
        why = f"no enforcement episode (status {_STATUS_TEXT[state.status]})"
    reason = f"{state.server_id}: {why}."
    return _decision(Action.ACCEPT, None, None, False, False, _ZERO, None, reason)


def decide(state: ServerState, now: dt.datetime, policy: Policy = DEFAULT_POLICY) -> Decision:
    """Decide what to do with a connection from ``state``'s server at the instant ``now``.

    Total and deterministic (SPEC section 7): outside an episode, accept; otherwise the
    stage comes from the episode's clock (paused time excluded when the policy freezes
    it), a paused server is accepted and reported, and the minute of the UTC hour, shifted
    by the server's SHA-256 offset, picks block, throttle or accept. A naive ``now`` raises
    :class:`~tbes.errors.NaiveDatetimeError`; arguments of the wrong type raise
    :class:`~tbes.errors.InvalidValueError` naming the argument.
    """
    if type(now) is not dt.datetime or now.tzinfo is not dt.UTC:  # else already in UTC
        now = _as_utc(now, "now")
    if policy is not DEFAULT_POLICY and not isinstance(policy, Policy):
        raise InvalidValueError(f"policy must be a Policy, got {policy!r:.80}")
    try:  # free unless it raises; ServerState is imported for type checking only
        first = state.first_detected
    except AttributeError:
        raise InvalidValueError(f"state must be a ServerState, got {state!r:.80}") from None
    if first is None or state.compliant_since is not None:
        return _outside(state)
    spans = state._pause_spans
    elapsed = now - first
    if spans and policy.pause_freezes_clock:
        elapsed -= _paused_between(spans, first, now)
    if elapsed < _ZERO:  # clock skew: now before the first detection
        elapsed = _ZERO
    plan = policy._plans[bisect.bisect_right(policy._starts, elapsed) - 1]
    paused_until = _covering_end(spans, now) if spans else None
    r = (now.minute - state._window_offset) % _MINUTES
    change = _next_change(state, now, elapsed, policy, plan, r, paused_until is not None)
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
    return _decision(Action.ACCEPT, stage, None, True, True, elapsed, change, reason)


def _by_minute(
    state: ServerState,
    plan: _Plan,
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
    return _decision(action, stage, reply, stage.report, False, elapsed, change, reason)
