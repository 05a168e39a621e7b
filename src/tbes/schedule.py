"""Schedules: which baseline is in force at which instant.

A :class:`Schedule` is a non-empty sequence of :class:`Step` values, each an instant from
which a baseline applies, sorted and validated once; :meth:`Schedule.baseline_at` gives the
:class:`~tbes.baseline.Baseline` in force at an instant (before the first step, nothing is
enforced). A step's baseline is either a fixed :class:`~tbes.baseline.Baseline` or a
:class:`RollingBaseline`, which moves with time: it is computed from a catalog and the
instant, and cached per UTC day. Decision: :func:`~tbes.decision.decide` and the enforcer's
verdict cache sit on the hot path, so a baseline in force on one day is one object, built once
per day; a verdict cached against that object can never be served on another day.
:meth:`Schedule.exchange_online` is Microsoft's widening of scope from 2023 on.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import threading
from collections.abc import Iterable, Iterator, Mapping

import attrs

from tbes._checks import of_type
from tbes._instants import as_utc, midnight
from tbes.baseline import Baseline
from tbes.catalog import Catalog, Release
from tbes.errors import InvalidValueError
from tbes.version import ExchangeBuild, Product

__all__ = ["EARLIEST", "RollingBaseline", "Schedule", "Step"]

EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
"""The first instant there is: a step from here is in force at every instant."""

NOTHING_ENFORCED = Baseline(minimum={}, unsupported=frozenset())
"""The baseline in force before a schedule's first step: every on-premises build compliant."""

_OLD_PRODUCTS = (Product.EXCHANGE_2000, Product.EXCHANGE_2003)
_ROLLED = frozenset({Product.EXCHANGE_2016, Product.EXCHANGE_2019})
_DAY = dt.timedelta(days=1)
_DAYS_CACHED = 64  # a process judges at a few instants; a report over history at a few more


def _products(value: Iterable[Product]) -> frozenset[Product]:
    products = frozenset(value)
    for product in products:
        if not isinstance(product, Product) or not product.on_premises:
            raise InvalidValueError(f"expected on-premises Product values, got {product!r:.80}")
    return products


def _months(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or not 0 <= value <= 1200:
        raise InvalidValueError(f"months must be an int from 0 to 1200, got {value!r:.80}")


@attrs.frozen
class RollingBaseline:
    """A baseline that moves with time: recent public updates of supported CU lines.

    For each product in ``rolled``, a build is compliant on the day ``d`` when its CU line
    is the product's newest line released by ``d`` or the one before it, and the build is no
    older than the oldest public update (SU or HU, never an ESU-only one) of that line
    released in or after the calendar month ``months`` months before the month of
    ``min(d, the product's end of support)``. A newest line with no such update is held to
    the CU itself if the CU came out in that window, else to its newest public release; the
    line before it, with nothing public in the window, is no longer accepted. Products in
    ``unsupported`` are unsupported; the others are left alone. The releases come from
    ``catalog``. :meth:`at` gives the :class:`~tbes.baseline.Baseline` of an instant,
    computed once per UTC day.
    """

    catalog: Catalog = attrs.field(validator=of_type(Catalog))
    months: int = attrs.field(validator=_months)
    unsupported: frozenset[Product] = attrs.field(converter=_products)
    rolled: frozenset[Product] = attrs.field(default=_ROLLED, converter=_products)
    _days: dict[dt.date, Baseline] = attrs.field(
        init=False, eq=False, repr=False, factory=dict, hash=False
    )
    _lock: threading.Lock = attrs.field(
        init=False, eq=False, repr=False, factory=threading.Lock, hash=False
    )

    def __attrs_post_init__(self) -> None:
        both = self.unsupported & self.rolled
        if both:
            names = ", ".join(sorted(product.label for product in both))
            raise InvalidValueError(f"{names} cannot be both unsupported and rolled")

    def at(self, instant: dt.datetime) -> Baseline:
        """The baseline in force at ``instant`` (an aware datetime): one object per UTC day."""
        day = as_utc(instant, "instant").date()
        found = self._days.get(day)
        if found is not None:
            return found
        with self._lock:  # two threads on a new day get the same object
            found = self._days.get(day)
            if found is None:
                if len(self._days) >= _DAYS_CACHED:
                    self._days.clear()
                found = self._days[day] = self._compute(day)
            return found

    def change_days(self, after: dt.date, before: dt.date) -> Iterator[dt.date]:
        """The days in ``(after, before)`` on which :meth:`at` may differ from the day before.

        The baseline of a day depends only on the releases out by then and on the calendar
        month its window starts in, so it can change only on a release's day or on the
        first of a month; once the newest release is ``months`` months behind, never again.
        Sorted, each once; a superset of the days it does change.
        """
        last = max((r.date for r in self.catalog.releases), default=dt.date.min)
        stop = min(before, _months_after(last, self.months + 1))
        releases = {r.date for r in self.catalog.releases if after < r.date < stop}
        months = set()
        month = _months_after(after, 1)  # the first of the month after ``after``
        while month < stop:
            months.add(month)
            month = _months_after(month, 1)
        yield from sorted(releases | months)

    def _compute(self, day: dt.date) -> Baseline:
        minimum: dict[Product, tuple[ExchangeBuild, ...]] = {}
        for product in self.rolled:
            end = self.catalog.end_of_support(product)
            reference = day if end is None else min(day, end)
            since = _months_before(reference, self.months)
            minimum[product] = _rolling_floors(self.catalog.lines(product), day, since)
        return Baseline(minimum=minimum, unsupported=self.unsupported)


def _months_before(day: dt.date, months: int) -> dt.date:
    """The first day of the calendar month ``months`` months before ``day``'s month."""
    index = day.year * 12 + (day.month - 1) - months
    return dt.date(max(index // 12, 1), index % 12 + 1, 1) if index >= 12 else dt.date.min


def _months_after(day: dt.date, months: int) -> dt.date:
    """The first day of the calendar month ``months`` months after ``day``'s (capped at max)."""
    index = day.year * 12 + (day.month - 1) + months
    if index // 12 > dt.MAXYEAR:
        return dt.date.max
    return dt.date(index // 12, index % 12 + 1, 1)


def _rolling_floors(
    lines: tuple[tuple[Release, ...], ...], day: dt.date, since: dt.date
) -> tuple[ExchangeBuild, ...]:
    released = [
        public
        for line in lines
        if (public := tuple(r for r in line if r.date <= day and not r.esu and not r.is_preview))
    ]
    floors = []
    for rank, line in enumerate(reversed(released[-2:])):  # the newest line first
        recent = [r for r in line if r.date >= since]
        updates = [r for r in recent if not r.is_base]
        if updates:
            floors.append(min(r.build for r in updates))
        elif recent:
            floors.append(min(r.build for r in recent))  # a new CU, no update yet
        elif rank == 0:
            floors.append(line[-1].build)  # nothing recent: its newest public release
    return tuple(floors)


StepBaseline = Baseline | RollingBaseline
"""What a step puts in force: a fixed baseline or one that moves with time."""


def _instant(instance: object, attribute: attrs.Attribute[dt.datetime], value: object) -> None:
    as_utc(value, attribute.name)


def _step_baseline(
    instance: object, attribute: attrs.Attribute[StepBaseline], value: object
) -> None:
    if not isinstance(value, Baseline | RollingBaseline):
        raise InvalidValueError(
            f"a step's baseline must be a Baseline or a RollingBaseline, got {value!r:.80}"
        )


@attrs.frozen
class Step:
    """From ``effective_from`` (an aware datetime) on, ``baseline`` judges builds."""

    effective_from: dt.datetime = attrs.field(validator=_instant)
    baseline: StepBaseline = attrs.field(validator=_step_baseline)


def _to_steps(value: Iterable[Step | tuple[dt.datetime, StepBaseline]]) -> tuple[Step, ...]:
    if isinstance(value, Step | Mapping | str | bytes) or not isinstance(value, Iterable):
        raise InvalidValueError(f"a schedule is a sequence of steps, got {value!r:.80}")
    steps = []
    for item in value:
        if isinstance(item, Step):
            steps.append(item)
        elif isinstance(item, tuple) and len(item) == 2:
            steps.append(Step(*item))
        else:
            raise InvalidValueError(
                f"a schedule step is a Step or an (effective_from, baseline) pair, got {item!r:.80}"
            )
    return tuple(steps)


def _check_steps(
    instance: Schedule, attribute: attrs.Attribute[tuple[Step, ...]], value: tuple[Step, ...]
) -> None:
    if not value:
        raise InvalidValueError("a schedule needs at least one step")
    for earlier, later in itertools.pairwise(value):
        if not earlier.effective_from < later.effective_from:
            raise InvalidValueError(
                "a schedule's steps must be sorted by effective_from, each strictly after "
                f"the one before: {later.effective_from.isoformat()} follows "
                f"{earlier.effective_from.isoformat()}"
            )


@attrs.frozen
class Schedule:
    """Baselines that take effect one after another; see the module docstring.

    ``steps`` are :class:`Step` values or ``(effective_from, baseline)`` pairs: at least one,
    with aware instants in strictly increasing order, else
    :class:`~tbes.errors.InvalidValueError` (a naive instant,
    :class:`~tbes.errors.NaiveDatetimeError`).
    """

    steps: tuple[Step, ...] = attrs.field(converter=_to_steps, validator=_check_steps)
    _starts: tuple[dt.datetime, ...] = attrs.field(init=False, eq=False, repr=False, hash=False)

    def __attrs_post_init__(self) -> None:
        starts = tuple(as_utc(step.effective_from, "effective_from") for step in self.steps)
        object.__setattr__(self, "_starts", starts)

    @classmethod
    def constant(cls, baseline: Baseline) -> Schedule:
        """One step: ``baseline`` in force at every instant."""
        return cls([Step(EARLIEST, baseline)])

    def step_at(self, instant: dt.datetime) -> Step | None:
        """The last step with ``effective_from <= instant``; None before the first step."""
        index = bisect.bisect_right(self._starts, as_utc(instant, "instant")) - 1
        return self.steps[index] if index >= 0 else None

    def baseline_at(self, instant: dt.datetime) -> Baseline:
        """The baseline in force at ``instant``; before the first step nothing is enforced."""
        step = self.step_at(instant)
        if step is None:
            return NOTHING_ENFORCED
        if isinstance(step.baseline, RollingBaseline):
            return step.baseline.at(instant)
        return step.baseline

    def changes_after(self, instant: dt.datetime) -> Iterator[tuple[dt.datetime, Baseline]]:
        """Each later instant at which the baseline in force may change, with that baseline.

        In order: every later step's start, and within a :class:`RollingBaseline`'s step the
        midnights of its :meth:`~RollingBaseline.change_days`. A superset of the instants
        where :meth:`baseline_at` changes, and finite: a rolling baseline stops moving once
        its catalog's newest release is behind its window. ``instant`` must be aware.
        """
        now = as_utc(instant, "instant")
        index = bisect.bisect_right(self._starts, now) - 1
        for position in range(max(index, 0), len(self.steps)):
            step = self.steps[position]
            start = self._starts[position]
            end = self._starts[position + 1] if position + 1 < len(self.steps) else None
            if start > now:
                yield start, self.baseline_at(start)
            if not isinstance(step.baseline, RollingBaseline):
                continue
            since = max(start, now).date()
            last = dt.date.max if end is None else end.date()
            until = last if last == dt.date.max else last + _DAY  # ``at < end`` trims it
            for day in step.baseline.change_days(since, until):
                at = midnight(day)
                if at > now and (end is None or at < end):
                    yield at, step.baseline.at(at)

    @classmethod
    def exchange_online(cls, catalog: Catalog, final_step_from: dt.date | None = None) -> Schedule:
        """Microsoft's phases: from when which servers are in scope (docs/enforcement.md).

        The instants are 00:00 UTC of the days below, approximations of Microsoft's
        announcements (a month where only the month is known). 2023-06-23: Exchange 2007 and
        older; 2023-09-01: + 2010; 2023-12-01: + 2013; 2024-03-01: 2016 and 2019
        "significantly behind on security updates" (a :class:`RollingBaseline` of nine
        months over ``catalog``); 2026-09-08: 2016 and 2019 below the October 2025 SU
        (:meth:`Baseline.exchange_online_2026 <tbes.baseline.Baseline.exchange_online_2026>`);
        from ``final_step_from`` (a date, off by default: not announced yet) 2016 and 2019
        "above every public update", where only ESU builds pass.
        """
        if not isinstance(catalog, Catalog):
            raise InvalidValueError(f"catalog must be a Catalog, got {catalog!r:.80}")
        if final_step_from is not None and (
            isinstance(final_step_from, dt.datetime) or not isinstance(final_step_from, dt.date)
        ):
            raise InvalidValueError(f"final_step_from must be a date, got {final_step_from!r:.80}")
        up_to_2007 = frozenset({*_OLD_PRODUCTS, Product.EXCHANGE_2007})
        up_to_2010 = up_to_2007 | {Product.EXCHANGE_2010}
        up_to_2013 = up_to_2010 | {Product.EXCHANGE_2013}
        steps = [
            Step(midnight(dt.date(2023, 6, 23)), Baseline(minimum={}, unsupported=up_to_2007)),
            Step(midnight(dt.date(2023, 9, 1)), Baseline(minimum={}, unsupported=up_to_2010)),
            Step(midnight(dt.date(2023, 12, 1)), Baseline(minimum={}, unsupported=up_to_2013)),
            Step(
                midnight(dt.date(2024, 3, 1)),
                RollingBaseline(catalog, months=9, unsupported=up_to_2013),
            ),
            Step(midnight(dt.date(2026, 9, 8)), Baseline.exchange_online_2026()),
        ]
        if final_step_from is not None:
            steps.append(
                Step(midnight(final_step_from), _above_public_updates(catalog, up_to_2013))
            )
        return cls(steps)


def _above_public_updates(catalog: Catalog, unsupported: frozenset[Product]) -> Baseline:
    # Each supported 2016/2019 line is held above its newest public release: to its first ESU
    # update where the catalog has one, else to the next revision.
    minimum: dict[Product, tuple[ExchangeBuild, ...]] = {}
    for product in _ROLLED:
        floors = []
        for line in catalog.lines(product)[-2:]:
            esu = [r.build for r in line if r.esu]
            newest = max(r.build for r in line if not r.esu)
            floors.append(min(esu) if esu else attrs.evolve(newest, revision=newest.revision + 1))
        minimum[product] = tuple(floors)
    return Baseline(minimum=minimum, unsupported=unsupported)
