"""Pauses of enforcement and the tenant's yearly pause quota.

A :class:`PauseLedger` is a tenant's account of pause days: a quota per UTC calendar year,
shared by all the tenant's servers, with every paused day charged to the year it falls in.
Pauses are whole UTC days, so a ledger is exact with plain date arithmetic and never reads a
clock: callers pass ``today``. The ledger is immutable and checks its invariants (no two
pauses of one server overlap, no year above quota) at construction, so a ledger that exists
is valid and an operation that fails leaves the caller's ledger as it was. The arithmetic of
a clock that stands still while paused (merged pause spans, paused time between two instants,
when a frozen clock reaches a value) lives here too, beside the pauses it is about.

A ledger holds two kinds of pause (docs/pauses.md, "Tenant pauses"): a :class:`Pause` of one
server, and a :class:`TenantPause` of every server of the tenant, including servers first
seen while it runs. A tenant pause is its own type, not a ``Pause`` with no server: every
``Pause`` names a server (states hold them, ``pauses_for`` selects by them, rows store them),
and a ``None`` there would make each of those places tell the two kinds apart. Charging is
per UTC day: a day of a tenant pause costs 1 however many servers it covers; any other day
costs 1 per server pause covering it. The ledger keeps the two kinds apart day by day, as an
invariant: granting a tenant pause takes over the current and future days of the server
pauses it covers (they stop being charged; the pauses are cut or dropped), and a server
pause on a day of a tenant pause is refused. So ``used`` is a plain sum, and ending a tenant
pause early can never bring back server days above the quota. Tenant pauses that overlap or
adjoin are one pause ("create or extend"), so they are kept merged.

Where a calendar date is expected (``start``, ``today``), a :class:`~datetime.datetime` is
refused with :exc:`InvalidPauseError`: ``datetime`` is a subclass of ``date``, and
silently taking its date part would hide which day (in which time zone) the caller meant.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TypeVar

import attrs

from tbes._checks import id_field, require_id
from tbes._instants import midnight, require_aware
from tbes.errors import (
    InvalidPauseError,
    PauseConflictError,
    PauseInPastError,
    QuotaExceededError,
)

__all__ = ["DEFAULT_QUOTA_DAYS", "Pause", "PauseLedger", "TenantPause"]

DEFAULT_QUOTA_DAYS = 90
"""Pause days a tenant may use per UTC calendar year, as Microsoft grants them."""


def _require_date(value: object, name: str) -> dt.date:
    """Return ``value`` if it is a calendar date; raise InvalidPauseError otherwise."""
    if isinstance(value, dt.datetime):
        raise InvalidPauseError(
            f"{name} must be a date, not a datetime: got {value!r}; pass its UTC .date()"
        )
    if not isinstance(value, dt.date):
        raise InvalidPauseError(f"{name} must be a date, got {value!r}")
    return value


def _require_year(year: object) -> int:
    # bool is an int subclass, but True is no year; date() only holds years 1..9999.
    if type(year) is not int or not dt.MINYEAR <= year <= dt.MAXYEAR:
        raise InvalidPauseError(
            f"year must be an int from {dt.MINYEAR} to {dt.MAXYEAR}, got {year!r:.80}"
        )
    return year


def _days(count: int) -> str:
    return f"{count} day" if count == 1 else f"{count} days"


def _span(pause: _Days) -> str:
    """How messages name a pause's days: ``from 2026-11-01 to 2026-12-30``."""
    return f"from {pause.start} to {pause.last_day}"


def _check_start(instance: object, attribute: attrs.Attribute[dt.date], value: dt.date) -> None:
    _require_date(value, "start")


def _check_days(instance: _Days, attribute: attrs.Attribute[int], value: int) -> None:
    # bool is an int subclass, but True is no number of days.
    if type(value) is not int or value < 1:
        raise InvalidPauseError(f"a pause lasts days >= 1, got days={value!r}")
    try:
        instance.start + dt.timedelta(days=value)
    except OverflowError:
        raise InvalidPauseError(
            f"a pause of {_days(value)} from {instance.start} ends after {dt.date.max}"
        ) from None


class _Days:
    """What a run of whole UTC days ``[start, start + days)`` knows about itself."""

    __slots__ = ()
    start: dt.date
    days: int

    @property
    def end(self) -> dt.date:
        """The first day after the pause (exclusive end)."""
        return self.start + dt.timedelta(days=self.days)

    @property
    def last_day(self) -> dt.date:
        """The last paused day (inclusive)."""
        return self.end - dt.timedelta(days=1)

    @property
    def start_instant(self) -> dt.datetime:
        """The instant the pause starts: midnight UTC at the start of ``start``."""
        return midnight(self.start)

    @property
    def end_instant(self) -> dt.datetime:
        """The instant the pause ends: midnight UTC at the start of :attr:`end`."""
        return midnight(self.end)

    def covers(self, at: dt.datetime) -> bool:
        """Whether the instant ``at`` falls inside the pause (a naive ``at`` raises)."""
        return self.start_instant <= require_aware(at, "at", InvalidPauseError) < self.end_instant

    def covers_day(self, day: dt.date) -> bool:
        """Whether the UTC day ``day`` is one of the paused days."""
        return self.start <= _require_date(day, "day") < self.end

    def overlap(self, since: dt.datetime, until: dt.datetime) -> dt.timedelta:
        """How much of the interval ``[since, until)`` the pause covers (zero if none)."""
        lo = max(self.start_instant, require_aware(since, "since", InvalidPauseError))
        hi = min(self.end_instant, require_aware(until, "until", InvalidPauseError))
        return max(hi - lo, dt.timedelta(0))

    def days_in_year(self, year: int) -> int:
        """How many of the paused days fall in the UTC calendar year ``year``."""
        _require_year(year)
        lo = max(self.start, dt.date(year, 1, 1))
        # The year's exclusive end, except in 9999, whose end no date holds (nor does self.end).
        hi = self.end if year == dt.MAXYEAR else min(self.end, dt.date(year + 1, 1, 1))
        return max((hi - lo).days, 0)

    def years(self) -> range:
        """The calendar years the pause charges days to."""
        return range(self.start.year, self.last_day.year + 1)


@attrs.frozen
class Pause(_Days):
    """A pause of enforcement for one server over the UTC days ``[start, start + days)``.

    ``start`` must be a :class:`~datetime.date` (a datetime raises :exc:`InvalidPauseError`),
    ``server_id`` non-empty and ``days`` >= 1 (else :exc:`InvalidPauseError`).
    """

    server_id: str = attrs.field(validator=id_field(InvalidPauseError))
    start: dt.date = attrs.field(validator=_check_start)
    days: int = attrs.field(validator=_check_days)


@attrs.frozen
class TenantPause(_Days):
    """A pause of enforcement for every server of the tenant over ``[start, start + days)``.

    It covers servers first seen while it runs too. Validated as :class:`Pause` is.
    """

    start: dt.date = attrs.field(validator=_check_start)
    days: int = attrs.field(validator=_check_days)

    def for_server(self, server_id: str) -> Pause:
        """The same days as a :class:`Pause` of ``server_id``: how a server state holds it."""
        return Pause(server_id, self.start, self.days)


def _sorted_pauses(pauses: Iterable[Pause]) -> tuple[Pause, ...]:
    # A canonical order makes equal accounts equal whatever order they were granted in.
    items = tuple(pauses)
    for pause in items:
        if not isinstance(pause, Pause):
            raise InvalidPauseError(f"a ledger holds Pause values, got {pause!r}")
    return tuple(sorted(items, key=lambda p: (p.start, p.server_id, p.days)))


def _merged_tenant_pauses(pauses: Iterable[TenantPause]) -> tuple[TenantPause, ...]:
    # Overlapping or adjoining tenant pauses are one pause over the same days, so they are
    # merged: the canonical form, and the one "create or extend" needs.
    items = tuple(pauses)
    for pause in items:
        if not isinstance(pause, TenantPause):
            raise InvalidPauseError(
                f"a ledger's tenant_pauses are TenantPause values, got {pause!r}"
            )
    merged: list[TenantPause] = []
    for pause in sorted(items, key=lambda p: (p.start, p.days)):
        if merged and pause.start <= merged[-1].end:
            last = merged[-1]
            if pause.end > last.end:
                merged[-1] = TenantPause(last.start, (pause.end - last.start).days)
        else:
            merged.append(pause)
    return tuple(merged)


def _usage(pauses: Iterable[_Days]) -> Counter[int]:
    """Days charged per calendar year by ``pauses`` (which share no day)."""
    used: Counter[int] = Counter()
    for pause in pauses:
        for year in pause.years():
            used[year] += pause.days_in_year(year)
    return used


def _conflict(pauses: Iterable[Pause], new: Pause) -> Pause | None:
    """The first pause of ``new``'s server that shares a day with ``new``, if any."""
    for pause in pauses:
        if pause.server_id == new.server_id and _share_a_day(pause, new):
            return pause
    return None


def _share_a_day(one: _Days, other: _Days) -> bool:
    return one.start < other.end and other.start < one.end


def _outside(pause: Pause, span: _Days) -> tuple[Pause, ...]:
    """The parts of ``pause`` before and after ``span`` (none if the span covers it all)."""
    parts = []
    if pause.start < span.start:
        parts.append(
            Pause(pause.server_id, pause.start, (min(pause.end, span.start) - pause.start).days)
        )
    if pause.end > span.end:
        first = max(pause.start, span.end)
        parts.append(Pause(pause.server_id, first, (pause.end - first).days))
    return tuple(parts)


def _check_quota(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 0:
        raise InvalidPauseError(f"quota_days must be an int >= 0, got {value!r}")


def _check_pauses(instance: PauseLedger, attribute: object, pauses: tuple[Pause, ...]) -> None:
    # Sorted by server then start, two pauses of one server overlap only if neighbours do.
    by_server = sorted(pauses, key=lambda p: (p.server_id, p.start))
    for before, after in itertools.pairwise(by_server):
        if before.server_id == after.server_id and after.start < before.end:
            raise PauseConflictError(
                f"pauses of {after.server_id} overlap: {_span(before)} and {_span(after)}"
            )


def _check_tenant_pauses(
    instance: PauseLedger, attribute: object, tenant_pauses: tuple[TenantPause, ...]
) -> None:
    # Run after every field is set, so both kinds are there to compare and to charge.
    for pause in instance.pauses:
        for tenant_pause in tenant_pauses:
            if _share_a_day(pause, tenant_pause):
                raise PauseConflictError(
                    f"pause of {pause.server_id} {_span(pause)} shares a day with the "
                    f"tenant pause of {instance.tenant} "
                    f"from {tenant_pause.start} to {tenant_pause.last_day}"
                )
    for year, used in sorted(_usage((*instance.pauses, *tenant_pauses)).items()):
        if used > instance.quota_days:
            raise QuotaExceededError(
                f"pauses of tenant {instance.tenant} use {_days(used)} in {year}, "
                f"above the quota of {instance.quota_days}"
            )


@attrs.frozen
class PauseLedger:
    """A tenant's pauses and their yearly quota, shared by all of the tenant's servers.

    ``pauses`` are pauses of one server each; ``tenant_pauses`` cover every server of the
    tenant. Each paused day is charged to the UTC calendar year it falls in, once per server
    pause covering it, or once in all for a tenant pause (no server pause shares a day with
    a tenant pause); unused days expire at the end of their year. Construction raises
    :class:`~tbes.errors.PauseConflictError` if two pauses of one server overlap or a server
    pause shares a day with a tenant pause, and :class:`~tbes.errors.QuotaExceededError` if
    any year uses more than ``quota_days``. ``pauses`` is kept sorted by start, server and
    days; ``tenant_pauses`` sorted, with overlapping or adjoining ones merged.
    """

    tenant: str = attrs.field(validator=id_field(InvalidPauseError))
    quota_days: int = attrs.field(default=DEFAULT_QUOTA_DAYS, validator=_check_quota)
    pauses: tuple[Pause, ...] = attrs.field(
        default=(), converter=_sorted_pauses, validator=_check_pauses
    )
    tenant_pauses: tuple[TenantPause, ...] = attrs.field(
        default=(), converter=_merged_tenant_pauses, validator=_check_tenant_pauses
    )

    def grant(self, server_id: str, start: dt.date, days: int, *, today: dt.date) -> PauseLedger:
        """A ledger with a pause of ``days`` days for ``server_id`` from ``start`` added.

        Raises :exc:`InvalidPauseError` for ``days`` < 1 or an empty ``server_id``,
        :exc:`InvalidPauseError` for a datetime where a date belongs,
        :class:`~tbes.errors.PauseInPastError` if ``start`` is before ``today``,
        :class:`~tbes.errors.PauseConflictError` if it shares a day with another pause of the
        same server or with a tenant pause (the server is paused then already), and
        :class:`~tbes.errors.QuotaExceededError` (naming the year, the days used and the
        days remaining) if any year would go above the quota.
        """
        _require_date(today, "today")
        pause = Pause(server_id, start, days)
        if pause.start < today:
            raise PauseInPastError(
                f"a pause for {server_id} cannot start on {pause.start}, before today ({today})"
            )
        clash = _conflict(self.pauses, pause)
        if clash is not None:
            raise PauseConflictError(
                f"pause of {_days(days)} for {server_id} from {pause.start} overlaps its pause "
                f"from {clash.start} to {clash.last_day}"
            )
        for tenant_pause in self.tenant_pauses:
            if _share_a_day(tenant_pause, pause):
                raise PauseConflictError(
                    f"pause of {_days(days)} for {server_id} from {pause.start} overlaps the "
                    f"tenant pause of {self.tenant} from {tenant_pause.start} to "
                    f"{tenant_pause.last_day}, which pauses every server already"
                )
        self._check_quota_for(
            pause.years(), (*self.pauses, pause), self.tenant_pauses, pause, server_id
        )
        return attrs.evolve(self, pauses=(*self.pauses, pause))

    def grant_tenant(self, start: dt.date, days: int, *, today: dt.date) -> PauseLedger:
        """A ledger with every server of the tenant paused ``days`` days from ``start``.

        A tenant pause that overlaps or adjoins one already granted extends it, and only the
        new days are charged. Server pauses on its days are taken over: those days stop
        being charged once each and are charged once, as days of the tenant pause (the
        server pauses are cut to the days outside it, or dropped). Raises as
        :meth:`grant` does: :exc:`InvalidPauseError`, :class:`~tbes.errors.PauseInPastError`
        and :class:`~tbes.errors.QuotaExceededError` naming the year, the days used and the
        days remaining.
        """
        _require_date(today, "today")
        new = TenantPause(start, days)
        if new.start < today:
            raise PauseInPastError(
                f"a tenant pause of {self.tenant} cannot start on {new.start}, "
                f"before today ({today})"
            )
        tenant_pauses = _merged_tenant_pauses((*self.tenant_pauses, new))
        span = next(p for p in tenant_pauses if p.start <= new.start < p.end)
        pauses = tuple(
            part
            for pause in self.pauses
            for part in (_outside(pause, span) if _share_a_day(pause, span) else (pause,))
        )
        self._check_quota_for(new.years(), pauses, tenant_pauses, new, None)
        return attrs.evolve(self, pauses=pauses, tenant_pauses=tenant_pauses)

    def _check_quota_for(
        self,
        years: range,
        pauses: tuple[Pause, ...],
        tenant_pauses: tuple[TenantPause, ...],
        asked: _Days,
        server_id: str | None,
    ) -> None:
        """Raise QuotaExceededError if ``years`` would use more than the quota afterwards."""
        after = _usage((*pauses, *tenant_pauses))
        for year in years:
            used = self.used(year)
            need = after[year] - used
            if after[year] > self.quota_days:
                what = f"for {server_id}" if server_id is not None else f"of tenant {self.tenant}"
                raise QuotaExceededError(
                    f"pause of {_days(asked.days)} {what} needs {_days(need)} "
                    f"in {year}, but only {self.quota_days - used} of {self.quota_days} remain "
                    f"({used} used)"
                )

    def end(self, server_id: str, *, today: dt.date) -> PauseLedger:
        """A ledger with ``server_id``'s current and future pauses ended as of ``today``.

        A pause that has started keeps its days up to and including ``today`` (today is
        already paused and stays charged; enforcement resumes at the next UTC midnight); a
        pause that starts after ``today`` is removed. The days given up return to the quota.
        Past pauses stay on record. With no current or future pause this is a no-op and
        returns the ledger unchanged. Tenant pauses are not touched: :meth:`end_tenant`.
        """
        require_id(server_id, "server_id", InvalidPauseError)
        _require_date(today, "today")
        kept, changed = _ended(self.pauses, today, lambda p: p.server_id == server_id)
        return attrs.evolve(self, pauses=kept) if changed else self

    def end_tenant(self, *, today: dt.date) -> PauseLedger:
        """A ledger with the current and future tenant pauses ended as of ``today``.

        As :meth:`end` does for a server: a tenant pause that has started keeps its days up
        to and including ``today``, a later one is removed, and the days given up return to
        the quota. Server pauses its days took over are not given back (every server's
        enforcement resumes together). With nothing to end, the ledger comes back unchanged.
        """
        _require_date(today, "today")
        kept, changed = _ended(self.tenant_pauses, today, lambda p: True)
        return attrs.evolve(self, tenant_pauses=kept) if changed else self

    def used(self, year: int) -> int:
        """Pause days charged to the UTC calendar year ``year``, over all servers.

        A day of a tenant pause counts once; any other day once per server pause on it.
        A ``year`` that is no int from 1 to 9999 raises :exc:`InvalidPauseError`.
        """
        _require_year(year)
        return sum(pause.days_in_year(year) for pause in (*self.pauses, *self.tenant_pauses))

    def remaining(self, year: int) -> int:
        """Pause days still available in the UTC calendar year ``year``."""
        return self.quota_days - self.used(year)

    def pauses_for(self, server_id: str) -> tuple[Pause, ...]:
        """The pauses of ``server_id``, past, current and future, in order of start.

        Only the server's own pauses; :meth:`covering` adds the tenant pauses.
        """
        require_id(server_id, "server_id", InvalidPauseError)
        return tuple(pause for pause in self.pauses if pause.server_id == server_id)

    def covering(self, server_id: str) -> tuple[Pause, ...]:
        """Every pause of ``server_id``: its own and the tenant's, as pauses of the server.

        This is what a server's :class:`~tbes.state.ServerState` holds, so that
        :func:`~tbes.decision.decide` and the reports treat both kinds alike. Own and tenant
        pauses never share a day.
        """
        own = self.pauses_for(server_id)
        return (*own, *(pause.for_server(server_id) for pause in self.tenant_pauses))

    def paused_at(self, server_id: str, at: dt.datetime) -> bool:
        """Whether ``server_id`` is paused at the instant ``at``, by its own or a tenant pause.

        A naive ``at`` raises :class:`~tbes.errors.NaiveDatetimeError`; a date or any other
        non-datetime raises :exc:`InvalidPauseError`.
        """
        require_aware(at, "at", InvalidPauseError)
        return any(pause.covers(at) for pause in self.covering(server_id))


_P = TypeVar("_P", Pause, TenantPause)


def _ended(
    pauses: tuple[_P, ...], today: dt.date, selected: Callable[[_P], bool]
) -> tuple[tuple[_P, ...], bool]:
    """``pauses`` with the selected current and future ones ended as of ``today``."""
    kept: list[_P] = []
    changed = False
    for pause in pauses:
        if not selected(pause) or pause.end <= today:
            kept.append(pause)
            continue
        changed = True
        if pause.start <= today:
            kept.append(attrs.evolve(pause, days=(today - pause.start).days + 1))
    return tuple(kept), changed


# ---- pause spans: the arithmetic of a clock that stands still while paused --------------

Span = tuple[dt.datetime, dt.datetime]
"""A paused stretch of time, ``[start, end)`` in UTC."""

_ZERO = dt.timedelta(0)


def pause_spans(pauses: Iterable[Pause]) -> tuple[Span, ...]:
    """The paused instants as sorted, disjoint ``[start, end)`` spans (touching ones merged)."""
    spans: list[Span] = []
    for start, end in sorted((p.start_instant, p.end_instant) for p in pauses):
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return tuple(spans)


def paused_between(spans: tuple[Span, ...], since: dt.datetime, until: dt.datetime) -> dt.timedelta:
    """How much of ``[since, until]`` the spans cover."""
    total = _ZERO
    for start, end in spans:
        if start >= until:
            break
        if end > since:
            total += min(end, until) - max(start, since)
    return total


def clock_reaches(
    spans: tuple[Span, ...], first: dt.datetime, target: dt.timedelta
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


def covering_end(spans: tuple[Span, ...], now: dt.datetime) -> dt.datetime | None:
    """The end of the span covering ``now``, if one does."""
    for start, end in spans:
        if start > now:
            return None
        if now < end:
            return end
    return None
