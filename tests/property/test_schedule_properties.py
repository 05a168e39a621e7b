"""Properties of schedules and of the rolling baseline, each against a simple reference."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tbes.baseline import Baseline
from tbes.catalog import Catalog, Release
from tbes.compliance import Compliance, assess
from tbes.errors import InvalidValueError, NaiveDatetimeError
from tbes.schedule import RollingBaseline, Schedule, Step
from tbes.version import ExchangeBuild, Product

CATALOG = Catalog.default()
NOTHING = Baseline(minimum={}, unsupported=frozenset())
POOL = [
    Baseline.exchange_online_2023(),
    Baseline.exchange_online_2026(),
    Baseline(minimum={}, unsupported=frozenset({Product.EXCHANGE_2010})),
    Baseline(minimum={Product.EXCHANGE_2016: (ExchangeBuild(15, 1, 2507, 39),)}, unsupported=()),
]
zones = st.sampled_from(
    [dt.UTC, dt.timezone(dt.timedelta(hours=-7)), dt.timezone(dt.timedelta(hours=5, minutes=30))]
)
instants = st.builds(
    lambda naive, zone: naive.replace(tzinfo=zone),
    st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2040, 1, 1)),
    zones,
)
steps = st.lists(
    st.tuples(instants, st.sampled_from(POOL)),
    min_size=1,
    max_size=6,
    unique_by=lambda step: step[0].astimezone(dt.UTC),
).map(lambda drawn: sorted(drawn, key=lambda step: step[0]))


def reference(pairs: list[tuple[dt.datetime, Baseline]], t: dt.datetime) -> Baseline:
    """The last step with effective_from <= t, by a linear scan; nothing enforced before."""
    found = NOTHING
    for start, baseline in pairs:
        if start <= t:
            found = baseline
    return found


@given(steps, instants)
def test_the_baseline_at_t_is_the_last_step_in_force(
    pairs: list[tuple[dt.datetime, Baseline]], t: dt.datetime
) -> None:
    schedule = Schedule(pairs)
    assert schedule.baseline_at(t) == reference(pairs, t)
    for start, baseline in pairs:  # each step is in force from its very instant
        assert schedule.baseline_at(start) is baseline


@given(steps, st.randoms(use_true_random=False))
def test_a_schedule_out_of_order_is_refused(
    pairs: list[tuple[dt.datetime, Baseline]], random: object
) -> None:
    assume(len(pairs) > 1)
    shuffled = list(pairs)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    assume(shuffled != pairs)
    with pytest.raises(InvalidValueError, match="sorted"):
        Schedule(shuffled)


@given(steps, st.integers(0, 5))
def test_a_naive_or_empty_schedule_is_refused(
    pairs: list[tuple[dt.datetime, Baseline]], index: int
) -> None:
    with pytest.raises(InvalidValueError, match="at least one"):
        Schedule([])
    naive = list(pairs)
    start, baseline = naive[index % len(naive)]
    naive[index % len(naive)] = (start.replace(tzinfo=None), baseline)
    with pytest.raises(NaiveDatetimeError):
        Schedule(naive)
    with pytest.raises(NaiveDatetimeError):
        Step(start.replace(tzinfo=None), baseline)


# ---- the rolling baseline against a reference over the raw releases -------------------------

ROLLED = (Product.EXCHANGE_2016, Product.EXCHANGE_2019)
days = st.dates(dt.date(2019, 1, 1), dt.date(2027, 12, 31))


def _line(build: ExchangeBuild) -> tuple[int, int, int]:
    return (build.major, build.minor, build.build)


def _public(product: Product, day: dt.date) -> list[Release]:
    return [
        r
        for r in CATALOG.releases
        if r.product is product and r.date <= day and not r.esu and r.name != "Preview"
    ]


def reference_compliant(release: Release, day: dt.date, months: int) -> bool:
    """Spec §10 read literally, by scanning the catalog's releases (no lines, no index)."""
    product = release.product
    public = _public(product, day)
    lines = sorted({_line(r.build) for r in public})
    supported = lines[-2:]
    if _line(release.build) not in supported:
        return False
    end = CATALOG.end_of_support(product)
    reference_day = day if end is None else min(day, end)
    index = reference_day.year * 12 + reference_day.month - 1 - months
    since = dt.date(index // 12, index % 12 + 1, 1)
    line = [r for r in public if _line(r.build) == _line(release.build)]
    recent = [r for r in line if r.date >= since]
    updates = [r for r in recent if not r.is_base]
    if updates:
        return release.build >= min(r.build for r in updates)
    if recent:
        return release.build >= min(r.build for r in recent)
    newest_line = _line(release.build) == supported[-1]
    return newest_line and release.build >= max(r.build for r in line)


@given(days, st.sampled_from(ROLLED), st.integers(1, 18))
def test_the_rolling_baseline_accepts_exactly_what_the_reference_accepts(
    day: dt.date, product: Product, months: int
) -> None:
    rolling = RollingBaseline(CATALOG, months=months, unsupported=())
    baseline = rolling.at(dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC))
    for release in _public(product, day):
        verdict = assess(release.build, baseline=baseline, catalog=CATALOG).status
        expected = reference_compliant(release, day, months)
        assert (verdict is Compliance.COMPLIANT) == expected, (release.title, day, months)


@given(days, st.sampled_from(ROLLED), st.integers(1, 18))
def test_no_floor_is_esu_only_and_no_build_of_an_unsupported_line_passes(
    day: dt.date, product: Product, months: int
) -> None:
    rolling = RollingBaseline(CATALOG, months=months, unsupported=())
    baseline = rolling.at(dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC))
    for floor in baseline.minimum.get(product, ()):
        release = CATALOG.release(floor)
        assert release is not None
        assert not release.esu
    lines = sorted({_line(r.build) for r in _public(product, day)})
    for release in CATALOG.releases:
        if release.product is product and _line(release.build) in lines[:-2]:
            verdict = assess(release.build, baseline=baseline, catalog=CATALOG).status
            assert verdict is not Compliance.COMPLIANT, release.title


# ---- the instants where the baseline in force may change ------------------------------------

PHASES = Schedule.exchange_online(CATALOG, final_step_from=dt.date(2027, 1, 4))
later = st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=6 * 366))


def reference_from_changes(schedule: Schedule, since: dt.datetime, t: dt.datetime) -> Baseline:
    """The baseline at ``t`` as the last change at or before it says (``since``'s before any)."""
    found = schedule.baseline_at(since)
    for when, baseline in schedule.changes_after(since):
        if when > t:
            break
        found = baseline
    return found


@given(st.datetimes(dt.datetime(2022, 1, 1), dt.datetime(2030, 1, 1)), later)
def test_no_baseline_of_the_phases_changes_between_two_of_its_announced_changes(
    naive: dt.datetime, delta: dt.timedelta
) -> None:
    since = naive.replace(tzinfo=dt.UTC)
    t = since + delta
    assert PHASES.baseline_at(t) == reference_from_changes(PHASES, since, t)


@given(steps, instants, later)
def test_a_fixed_schedule_changes_exactly_at_its_later_steps(
    pairs: list[tuple[dt.datetime, Baseline]], since: dt.datetime, delta: dt.timedelta
) -> None:
    schedule = Schedule(pairs)
    changes = list(schedule.changes_after(since))
    expected = [(start, baseline) for start, baseline in pairs if start > since]
    assert [(when, baseline) for when, baseline in changes] == [
        (start.astimezone(dt.UTC), baseline) for start, baseline in expected
    ]
    t = since + delta
    assert schedule.baseline_at(t) == reference_from_changes(schedule, since, t)


def test_changes_are_sorted_and_end_once_the_rolling_window_passes_the_catalog() -> None:
    changes = [when for when, _ in PHASES.changes_after(dt.datetime(2019, 1, 1, tzinfo=dt.UTC))]
    assert changes == sorted(set(changes))
    assert changes[-1] == dt.datetime(2027, 1, 4, tzinfo=dt.UTC)  # the dated final step
