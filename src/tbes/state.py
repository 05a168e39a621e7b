"""What tbes knows about one sending server, and how each observation of it changes that.

A :class:`ServerState` holds the server's last real build and status and its enforcement
**episode**: from ``first_detected`` while it is non-compliant, suspended at
``compliant_since``. :func:`observe` is the only transition. Two decisions shaped it: an
observation can never buy enforcement relief cheaply (a ``NOT_APPLICABLE`` build, such as a
forged ``16.0.0.0``, neither starts nor ends an episode, and a relapse soon after
remediation resumes the old episode), and time never runs backwards (an observation dated
before ``last_seen``, from clock skew or reordered delivery, counts as made at
``last_seen``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import attrs

from tbes._checks import id_field, of_type
from tbes._instants import as_utc, as_utc_or_none
from tbes._slots import slot_filler
from tbes.compliance import Assessment, Compliance
from tbes.errors import InvalidBuildError, InvalidValueError
from tbes.ledger import Pause
from tbes.policy import DEFAULT_POLICY, Policy
from tbes.version import ExchangeBuild

__all__ = ["ServerState", "observe"]

_NON_COMPLIANT = frozenset({Compliance.OUTDATED, Compliance.UNSUPPORTED})


# One converter per instant field, so that an error names the field (the mypy plugin of attrs
# understands named functions only, not attrs.Converter(..., takes_field=True)).
def _first_detected(value: dt.datetime | None) -> dt.datetime | None:
    return as_utc_or_none(value, "first_detected")


def _last_seen(value: dt.datetime | None) -> dt.datetime | None:
    return as_utc_or_none(value, "last_seen")


def _compliant_since(value: dt.datetime | None) -> dt.datetime | None:
    return as_utc_or_none(value, "compliant_since")


def _sorted_pauses(pauses: Iterable[Pause]) -> tuple[Pause, ...]:
    if not isinstance(pauses, Iterable):
        raise InvalidValueError(f"pauses must be a sequence of Pause, got {pauses!r:.80}")
    items = tuple(pauses)
    for pause in items:
        if not isinstance(pause, Pause):
            raise InvalidValueError(f"pauses must be Pause values, got {pause!r:.80}")
    # One canonical order, as in the ledger, so equal states compare equal.
    return tuple(sorted(items, key=lambda p: (p.start, p.days)))


def _check_pauses(
    instance: ServerState, attribute: attrs.Attribute[tuple[Pause, ...]], value: tuple[Pause, ...]
) -> None:
    for pause in value:
        if pause.server_id != instance.server_id:
            raise InvalidValueError(
                f"state of {instance.server_id} cannot hold a pause of {pause.server_id}: {pause}"
            )


def _check_notified(
    instance: ServerState, attribute: attrs.Attribute[int | None], value: object
) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise InvalidValueError(
            f"notified_stage must be a stage number >= 1 or None, got {value!r}"
        )


@attrs.frozen
class ServerState:
    """What tbes knows about one sending server: its build, status and enforcement episode.

    ``build`` and ``status`` come from the last *applicable* observation (a
    ``NOT_APPLICABLE`` one leaves them alone; a state first made from one has ``build=None``
    and status ``NOT_APPLICABLE``). An episode runs from ``first_detected`` while
    ``compliant_since`` is ``None``. ``pauses`` are the server's pauses from the tenant's
    ledger (the enforcer copies them; :func:`observe` never changes them).
    ``notified_stage`` is the stage last announced to people for the current episode, kept
    by the enforcer's notifier and reset to ``None`` when a new episode starts.

    Instants must be timezone-aware (else :class:`~tbes.errors.NaiveDatetimeError`) and are
    stored in UTC; ids must be non-empty and every pause must be this server's; a value of
    the wrong type raises :class:`~tbes.errors.InvalidValueError` (for ``build``,
    :class:`~tbes.errors.InvalidBuildError`) naming the field.
    """

    server_id: str = attrs.field(validator=id_field())
    tenant: str = attrs.field(validator=id_field())
    build: ExchangeBuild | None = attrs.field(validator=of_type(ExchangeBuild, optional=True))
    status: Compliance = attrs.field(validator=of_type(Compliance))
    first_detected: dt.datetime | None = attrs.field(converter=_first_detected)
    last_seen: dt.datetime | None = attrs.field(converter=_last_seen)
    compliant_since: dt.datetime | None = attrs.field(converter=_compliant_since)
    pauses: tuple[Pause, ...] = attrs.field(
        default=(), converter=_sorted_pauses, validator=_check_pauses
    )
    notified_stage: int | None = attrs.field(default=None, validator=_check_notified)

    @property
    def in_episode(self) -> bool:
        """Whether enforcement is running: detected non-compliant and not remediated since."""
        return self.first_detected is not None and self.compliant_since is None


_state = slot_filler(ServerState)


def _copy(
    state: ServerState,
    build: ExchangeBuild | None,
    status: Compliance,
    first: dt.datetime | None,
    when: dt.datetime,
    since: dt.datetime | None,
    notified: int | None,
) -> ServerState:
    # observe's hot path (every message with a build): slot by slot, not attrs.evolve,
    # which re-runs every converter and validator of the state. Valid by construction:
    # the rest comes from a checked state, ``build`` and the status were checked by
    # observe, and the instants are the state's own or ``at`` in UTC; a property test
    # holds the result to ServerState's checks.
    return _state(
        server_id=state.server_id,
        tenant=state.tenant,
        build=build,
        status=status,
        first_detected=first,
        last_seen=when,
        compliant_since=since,
        pauses=state.pauses,
        notified_stage=notified,
    )


def _fresh(
    server_id: str, tenant: str, status: Compliance, build: ExchangeBuild | None, at: dt.datetime
) -> ServerState:
    if status is Compliance.NOT_APPLICABLE:
        return ServerState(server_id, tenant, None, status, None, at, None)
    first = at if status in _NON_COMPLIANT else None
    return ServerState(server_id, tenant, build, status, first, at, None)


def _non_compliant(
    state: ServerState,
    status: Compliance,
    build: ExchangeBuild | None,
    when: dt.datetime,
    relapse_window: dt.timedelta,
) -> ServerState:
    first, since, notified = state.first_detected, state.compliant_since, state.notified_stage
    if first is None or (since is not None and when - since > relapse_window):
        first, notified = when, None  # a new episode
    since = None  # running, or resumed within the relapse window
    return _copy(state, build, status, first, when, since, notified)


def _compliant(state: ServerState, build: ExchangeBuild | None, when: dt.datetime) -> ServerState:
    since = state.compliant_since
    if state.first_detected is not None and since is None:
        since = when  # the episode ends now; a later compliance keeps the first one
    return _copy(
        state, build, Compliance.COMPLIANT, state.first_detected, when, since, state.notified_stage
    )


def _require_types(state: object, assessment: object, build: object, policy: object) -> None:
    # build too: a NOT_APPLICABLE observation drops it, which must not hide a wrong type.
    if build is not None and not isinstance(build, ExchangeBuild):
        raise InvalidBuildError(f"build must be an ExchangeBuild or None, got {build!r:.80}")
    if state is not None and not isinstance(state, ServerState):
        raise InvalidValueError(f"state must be a ServerState or None, got {state!r:.80}")
    if not isinstance(assessment, Assessment):
        raise InvalidValueError(f"assessment must be an Assessment, got {assessment!r:.80}")
    if not isinstance(policy, Policy):
        raise InvalidValueError(f"policy must be a Policy, got {policy!r:.80}")


def observe(
    state: ServerState | None,
    *,
    server_id: str,
    tenant: str,
    assessment: Assessment,
    build: ExchangeBuild | None,
    at: dt.datetime,
    policy: Policy = DEFAULT_POLICY,
) -> ServerState:
    """The state after seeing ``server_id`` send ``build``, judged ``assessment``, at ``at``.

    Pure. Non-compliant with no episode starts one (``first_detected``);
    compliant during an episode ends it (``compliant_since``); non-compliant again within
    ``policy.relapse_window`` of ``compliant_since`` resumes the old episode, later starts
    a new one. ``NOT_APPLICABLE`` only moves ``last_seen`` and keeps the last real build and
    status. An ``at`` before ``last_seen`` counts as ``last_seen``, so no time moves back.
    ``pauses`` are never changed. Raises :class:`~tbes.errors.InvalidValueError` when
    ``state`` belongs to another server or tenant or an argument has the wrong type, and
    :class:`~tbes.errors.NaiveDatetimeError` for a naive ``at``.
    """
    at = as_utc(at, "at")
    _require_types(state, assessment, build, policy)
    status = assessment.status
    if state is None:
        return _fresh(server_id, tenant, status, build, at)
    if (state.server_id, state.tenant) != (server_id, tenant):
        raise InvalidValueError(
            f"cannot observe {server_id} of tenant {tenant} with the state of "
            f"{state.server_id} of tenant {state.tenant}"
        )
    when = at if state.last_seen is None or at > state.last_seen else state.last_seen
    if status in _NON_COMPLIANT:
        return _non_compliant(state, status, build, when, policy.relapse_window)
    if status is Compliance.COMPLIANT:
        return _compliant(state, build, when)
    return _copy(
        state,
        state.build,
        state.status,
        state.first_detected,
        when,
        state.compliant_since,
        state.notified_stage,
    )
