"""Policies: what is enforced, on which connections, how long each stage lasts, what replies say.

A :class:`Policy` is a frozen value: the baseline (or :class:`~tbes.schedule.Schedule` of
baselines) that judges builds, the stage table, the
connector kinds enforced on and the reply wording. Decision: :func:`~tbes.decision.decide`
sits on the hot path of every connection, so a policy precomputes per stage what does not
depend on the server (window bounds, reply lines) as :class:`StagePlan` values, and a
decision is mostly arithmetic.
"""

from __future__ import annotations

import bisect
import datetime as dt
import enum
from collections.abc import Iterable
from typing import NamedTuple

import attrs

from tbes._checks import of_type, require_type
from tbes.baseline import Baseline
from tbes.catalog import Catalog
from tbes.errors import InvalidValueError, PolicyError
from tbes.schedule import Schedule
from tbes.stages import DEFAULT_STAGE_TABLE, Stage, StageTable

__all__ = ["DEFAULT_POLICY", "PRESETS", "ConnectorKind", "Policy", "SmtpReply"]

_MINUTES = 60
_ZERO = dt.timedelta(0)
_HOUR = dt.timedelta(hours=1)
PRESETS = ("exchange_online", "exchange_online_2023", "exchange_online_2026", "supported_only")
"""The names :meth:`Policy.named` knows, in the order commands list them."""
# A reply line travels through milters and SMTP libraries: one line, printable ASCII.
_PRINTABLE = frozenset(chr(c) for c in range(32, 127))


class ConnectorKind(enum.Enum):
    """Where a connection comes from; a policy enforces only on the kinds it lists."""

    ON_PREMISES = "ON_PREMISES"
    PARTNER = "PARTNER"
    INTERNET = "INTERNET"


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


class StagePlan(NamedTuple):
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


def _default_baseline() -> Baseline:
    return Baseline.exchange_online_2026()


def _check_baseline(
    instance: Policy, attribute: attrs.Attribute[Baseline | Schedule], value: object
) -> None:
    if not isinstance(value, Baseline | Schedule):
        raise PolicyError(f"baseline must be a Baseline or a Schedule, got {value!r:.80}")


@attrs.frozen
class Policy:
    """What is enforced, on which connections, how long each stage lasts and what replies say.

    ``baseline`` is a :class:`Baseline`, in force at every instant, or a :class:`Schedule`
    of them; :meth:`baseline_at` gives the one in force at an instant. The defaults are
    Microsoft's Exchange Online rules of 2026; see the presets :meth:`exchange_online`,
    :meth:`exchange_online_2023`, :meth:`exchange_online_2026`, :meth:`supported_only` and
    :meth:`named`. Invalid settings, values of the wrong type included, raise
    :class:`~tbes.errors.PolicyError` naming the setting and the value (the reply wording,
    :class:`~tbes.errors.InvalidValueError`).
    """

    stage_table: StageTable = attrs.field(
        default=DEFAULT_STAGE_TABLE, validator=of_type(StageTable, error=PolicyError)
    )
    baseline: Baseline | Schedule = attrs.field(
        factory=_default_baseline, validator=_check_baseline
    )
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
    pause_freezes_clock: bool = attrs.field(
        default=True, validator=of_type(bool, error=PolicyError)
    )
    relapse_window: dt.timedelta = attrs.field(
        default=dt.timedelta(days=30), validator=_check_window
    )
    # Derived from the fields above for decide's hot path; outside eq, repr and the
    # serialised form (cattrs skips init=False fields).
    _starts: tuple[dt.timedelta, ...] = attrs.field(init=False, eq=False, repr=False, default=())
    _plans: tuple[StagePlan, ...] = attrs.field(init=False, eq=False, repr=False, default=())
    _fixed: Baseline | None = attrs.field(init=False, eq=False, repr=False, default=None)

    def __attrs_post_init__(self) -> None:
        # The class is frozen; these are the only writes, made while constructing.
        table = self.stage_table
        starts = tuple(table.start_of(stage.number) for stage in table)
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_plans", tuple(self._plan(stage, starts) for stage in table))
        fixed = self.baseline if isinstance(self.baseline, Baseline) else None
        object.__setattr__(self, "_fixed", fixed)

    @property
    def schedule(self) -> Schedule:
        """The baselines over time; a plain :class:`Baseline` is a one-step schedule."""
        if isinstance(self.baseline, Schedule):
            return self.baseline
        return Schedule.constant(self.baseline)

    def baseline_at(self, instant: dt.datetime) -> Baseline:
        """The baseline that judges builds at ``instant`` (an aware datetime).

        The same object all day long for a schedule's rolling step, and always the same
        object for a fixed one, so verdicts can be cached against it.
        """
        if self._fixed is not None:  # the common case, on every connection
            return self._fixed
        assert isinstance(self.baseline, Schedule)
        return self.baseline.baseline_at(instant)

    def plan_at(self, elapsed: dt.timedelta) -> StagePlan:
        """What a decision needs in the stage an episode is in after ``elapsed`` (>= 0)."""
        return self._plans[bisect.bisect_right(self._starts, elapsed) - 1]

    def _plan(self, stage: Stage, starts: tuple[dt.timedelta, ...]) -> StagePlan:
        block, throttle = stage.block_minutes, stage.throttle_minutes
        next_start = starts[stage.number] if stage.number < len(starts) else None
        zones = (block > 0) + (throttle > 0) + (block + throttle < _MINUTES)
        return StagePlan(
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
    def exchange_online(cls, catalog: Catalog, final_step_from: dt.date | None = None) -> Policy:
        """Microsoft's phases from June 2023 on, each in force from its day (a :class:`Schedule`).

        See :meth:`Schedule.exchange_online <tbes.schedule.Schedule.exchange_online>`: the
        March 2024 phase reads its releases from ``catalog`` (required); the announced last
        step ("above every public update") is off unless ``final_step_from`` gives its day.
        """
        require_type(catalog, Catalog, "catalog", error=PolicyError)
        if final_step_from is not None and (
            isinstance(final_step_from, dt.datetime) or not isinstance(final_step_from, dt.date)
        ):
            raise PolicyError(f"final_step_from must be a date, got {final_step_from!r:.80}")
        return cls(baseline=Schedule.exchange_online(catalog, final_step_from))

    @classmethod
    def supported_only(cls, on: dt.date, catalog: Catalog) -> Policy:
        """Only what Microsoft supports on ``on``: the latest SU of every supported CU line.

        ``on`` must be a :class:`~datetime.date` (not a datetime), else
        :class:`~tbes.errors.PolicyError`. The lines and their updates come from
        ``catalog`` (required: pass :meth:`Catalog.default() <tbes.catalog.Catalog.default>`
        for the packaged one), so an operator's imported catalog raises the minimums without
        a new release.
        """
        if isinstance(on, dt.datetime) or not isinstance(on, dt.date):
            raise PolicyError(f"on must be a date, got {on!r:.80}")
        require_type(catalog, Catalog, "catalog", error=PolicyError)
        return cls(baseline=Baseline.supported_only(on, catalog))

    @classmethod
    def check_named(cls, name: str, *, on: dt.date | None = None) -> None:
        """Raise the :class:`~tbes.errors.PolicyError` :meth:`named` would for ``name`` and ``on``.

        Needs no catalog: for checking a configuration before its catalog is read.
        """
        if name not in PRESETS:
            raise PolicyError(f"unknown policy {name!r:.80}: choose one of {', '.join(PRESETS)}")
        if name == "supported_only":
            if on is None:
                raise PolicyError("policy 'supported_only' needs the date to judge support on")
            if isinstance(on, dt.datetime) or not isinstance(on, dt.date):
                raise PolicyError(f"on must be a date, got {on!r:.80}")

    @classmethod
    def named(cls, name: str, *, catalog: Catalog, on: dt.date | None = None) -> Policy:
        """The preset called ``name``; ``supported_only`` needs ``on``, the others ignore it.

        ``catalog`` (required) is what the presets that read releases take them from (see
        :meth:`supported_only`); the fixed presets ignore it. Raises
        :class:`~tbes.errors.PolicyError` naming the valid presets for an unknown name, and
        for ``supported_only`` without ``on`` (see :meth:`check_named`).
        """
        cls.check_named(name, on=on)
        require_type(catalog, Catalog, "catalog", error=PolicyError)
        if name == "exchange_online":
            return cls.exchange_online(catalog)
        if name == "exchange_online_2023":
            return cls.exchange_online_2023()
        if name == "exchange_online_2026":
            return cls.exchange_online_2026()
        assert on is not None  # check_named refused supported_only without a day
        return cls.supported_only(on, catalog)


DEFAULT_POLICY: Policy = Policy.exchange_online_2026()
"""The policy of the pure core when none is given: :meth:`Policy.exchange_online_2026`.

Not :meth:`Policy.exchange_online`, the default of the command line and the adapters: that
one needs a catalog, and a module-level default reading the packaged catalog would be the
hidden I/O the core avoids. Callers with a catalog pass ``Policy.exchange_online(catalog)``.
"""
