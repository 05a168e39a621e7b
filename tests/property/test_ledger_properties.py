"""Properties of pauses and the pause ledger, and a state machine against a day-by-day model."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from strategies import pauses

from tbes.errors import (
    InvalidPauseError,
    PauseConflictError,
    PauseInPastError,
    QuotaExceededError,
)
from tbes.ledger import Pause, PauseLedger
from tbes.serde import converter

ONE_DAY = dt.timedelta(days=1)


def _days_of(pause: Pause) -> list[dt.date]:
    return [pause.start + n * ONE_DAY for n in range(pause.days)]


@given(pauses)
def test_a_pause_charges_each_of_its_days_to_the_year_it_falls_in(pause: Pause) -> None:
    per_year = Counter(day.year for day in _days_of(pause))
    for year in range(pause.start.year - 1, pause.end.year + 2):
        assert pause.days_in_year(year) == per_year[year]
    assert sum(pause.days_in_year(y) for y in pause.years()) == pause.days


@given(pauses, st.datetimes(timezones=st.just(dt.UTC)))
def test_a_pause_covers_an_instant_exactly_when_it_covers_its_utc_day(
    pause: Pause, at: dt.datetime
) -> None:
    assert pause.covers(at) == (pause.start <= at.date() < pause.end) == pause.covers_day(at.date())


@given(pauses, st.datetimes(timezones=st.just(dt.UTC)), st.datetimes(timezones=st.just(dt.UTC)))
def test_overlap_is_the_covered_part_of_an_interval(
    pause: Pause, a: dt.datetime, b: dt.datetime
) -> None:
    since, until = sorted((a, b))
    covered = pause.overlap(since, until)
    assert dt.timedelta(0) <= covered <= min(until - since, pause.end_instant - pause.start_instant)
    if covered:
        assert pause.covers(max(since, pause.start_instant))


@given(pauses)
def test_pause_round_trips_through_serde(pause: Pause) -> None:
    assert converter.structure(converter.unstructure(pause), Pause) == pause


@st.composite
def ledgers(draw: st.DrawFn) -> PauseLedger:
    """Ledgers built by granting random pauses, skipping the ones the rules refuse."""
    ledger = PauseLedger(draw(st.sampled_from(["contoso", "fabrikam"])), draw(st.integers(0, 120)))
    for pause in draw(st.lists(pauses, max_size=8)):
        with contextlib.suppress(QuotaExceededError, PauseConflictError):
            ledger = ledger.grant(pause.server_id, pause.start, pause.days, today=pause.start)
    return ledger


@given(ledgers())
def test_ledger_round_trips_through_serde(ledger: PauseLedger) -> None:
    assert converter.structure(converter.unstructure(ledger), PauseLedger) == ledger


@given(ledgers(), st.data())
def test_a_ledger_is_the_same_whatever_the_order_of_its_pauses(
    ledger: PauseLedger, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(ledger.pauses))
    assert PauseLedger(ledger.tenant, ledger.quota_days, tuple(shuffled)) == ledger


SERVERS = ("EX01", "EX02", "EX03")
# Documented errors of grant(); anything else escaping is a bug.
GRANT_ERRORS = (PauseInPastError, PauseConflictError, QuotaExceededError, InvalidPauseError)


class LedgerMachine(RuleBasedStateMachine):
    """Drives grant/end with an advancing ``today`` against a model of paused (server, day)s."""

    ledger: PauseLedger
    today: dt.date
    model: set[tuple[str, dt.date]]

    @initialize(
        quota=st.integers(0, 100),
        today=st.dates(min_value=dt.date(2023, 10, 1), max_value=dt.date(2024, 12, 31)),
    )
    def start(self, quota: int, today: dt.date) -> None:
        self.ledger = PauseLedger("contoso", quota_days=quota)
        self.today = today
        self.model = set()

    def _model_used(self) -> Counter[int]:
        return Counter(day.year for _, day in self.model)

    def _expected_error(self, server: str, start: dt.date, days: int) -> type[Exception] | None:
        """What the SPEC says grant() must do, worked out on the day-by-day model."""
        if days < 1:
            return InvalidPauseError
        if start < self.today:
            return PauseInPastError
        wanted = {(server, start + n * ONE_DAY) for n in range(days)}
        if wanted & self.model:
            return PauseConflictError
        used = self._model_used() + Counter(day.year for _, day in wanted)
        if any(count > self.ledger.quota_days for count in used.values()):
            return QuotaExceededError
        return None

    @rule(days=st.integers(0, 45))
    def advance(self, days: int) -> None:
        self.today += days * ONE_DAY

    @rule(
        server=st.sampled_from(SERVERS),
        offset=st.integers(-5, 120),
        days=st.integers(-1, 70),
    )
    def grant(self, server: str, offset: int, days: int) -> None:
        start = self.today + offset * ONE_DAY
        before = self.ledger
        expected = self._expected_error(server, start, days)
        if expected is None:
            self.ledger = self.ledger.grant(server, start, days, today=self.today)
            self.model |= {(server, start + n * ONE_DAY) for n in range(days)}
            return
        with pytest.raises(GRANT_ERRORS) as caught:
            self.ledger.grant(server, start, days, today=self.today)
        assert type(caught.value) is expected, caught.value
        if expected is QuotaExceededError:
            assert str(self.ledger.quota_days) in str(caught.value)
        assert self.ledger == before
        assert self.ledger.pauses == before.pauses

    @precondition(lambda self: bool(self.ledger.pauses))
    @rule(data=st.data())
    def advance_to_an_edge(self, data: st.DataObject) -> None:
        # Edges (first, last and first-after days) are where off-by-one errors live.
        pause = data.draw(st.sampled_from(self.ledger.pauses))
        edges = [d for d in (pause.start, pause.last_day, pause.end) if d >= self.today]
        if edges:
            self.today = data.draw(st.sampled_from(edges))

    @precondition(lambda self: bool(self.ledger.pauses))
    @rule(data=st.data(), days=st.integers(1, 20))
    def grant_next_to_a_pause(self, data: st.DataObject, days: int) -> None:
        pause = data.draw(st.sampled_from(self.ledger.pauses))
        server = data.draw(st.sampled_from((pause.server_id, *SERVERS)))
        choices = (pause.end, pause.last_day, pause.start - days * ONE_DAY, pause.start)
        start = data.draw(st.sampled_from(choices))
        self.grant(server, (start - self.today).days, days)

    @rule(server=st.sampled_from(SERVERS))
    def end(self, server: str) -> None:
        # Days after today go back to the quota; today stays paused only if a pause covers it,
        # which means that pause has started.
        self.ledger = self.ledger.end(server, today=self.today)
        self.model = {(s, d) for s, d in self.model if s != server or d <= self.today}

    @invariant()
    def no_year_above_quota_and_usage_matches_the_model(self) -> None:
        used = self._model_used()
        years = set(used) | {y for p in self.ledger.pauses for y in p.years()}
        for year in years | {self.today.year, self.today.year + 1}:
            assert self.ledger.used(year) == used[year] <= self.ledger.quota_days
            assert self.ledger.remaining(year) == self.ledger.quota_days - used[year]

    @invariant()
    def paused_days_match_the_model(self) -> None:
        paused = {(p.server_id, day) for p in self.ledger.pauses for day in _days_of(p)}
        assert paused == self.model
        for server in SERVERS:
            noon = dt.datetime.combine(self.today, dt.time(12), tzinfo=dt.UTC)
            assert self.ledger.paused_at(server, noon) == ((server, self.today) in self.model)


# 30 steps reach well past a year-end from any start; more only slows CI's 400 examples.
LedgerMachine.TestCase.settings = settings(LedgerMachine.TestCase.settings, stateful_step_count=30)
TestLedgerStateMachine = LedgerMachine.TestCase


# --- tenant pauses (SPEC section 10) -------------------------------------------------------

TENANT = "*tenant*"  # the model's mark for a day of a tenant pause; no server is called that


def _charge(kinds: set[str]) -> int:
    """A day's cost: 1 inside a tenant pause, else 1 per server pause on it."""
    return 1 if TENANT in kinds else len(kinds)


class TenantLedgerMachine(RuleBasedStateMachine):
    """Drives grant/grant_tenant/end/end_tenant against a model charging day by day.

    The model maps each day to the kinds of pause covering it: server ids, and ``TENANT``
    for a tenant pause. A tenant pause takes over the server pauses of its days.
    """

    ledger: PauseLedger
    today: dt.date
    model: dict[dt.date, set[str]]

    @initialize(
        quota=st.integers(0, 100),
        today=st.dates(min_value=dt.date(2023, 10, 1), max_value=dt.date(2024, 12, 31)),
    )
    def start(self, quota: int, today: dt.date) -> None:
        self.ledger = PauseLedger("contoso", quota_days=quota)
        self.today = today
        self.model = {}

    def _used(self, model: dict[dt.date, set[str]]) -> Counter[int]:
        used: Counter[int] = Counter()
        for day, kinds in model.items():
            used[day.year] += _charge(kinds)
        return used

    def _with(self, start: dt.date, days: int, kind: str) -> dict[dt.date, set[str]]:
        model = {day: set(kinds) for day, kinds in self.model.items()}
        for n in range(days):
            day = start + n * ONE_DAY
            model[day] = {TENANT} if kind == TENANT else model.get(day, set()) | {kind}
        return model

    def _over_quota(self, model: dict[dt.date, set[str]]) -> bool:
        return any(count > self.ledger.quota_days for count in self._used(model).values())

    def _check_refusal(
        self, expected: type[Exception], call: Callable[[], PauseLedger], what: str
    ) -> None:
        before = self.ledger
        with pytest.raises(GRANT_ERRORS) as caught:
            call()
        assert type(caught.value) is expected, caught.value
        if expected is PauseConflictError and what == "tenant":
            assert "tenant pause of contoso" in str(caught.value)
        if expected is QuotaExceededError:
            assert str(self.ledger.quota_days) in str(caught.value)
        assert self.ledger == before

    @rule(days=st.integers(0, 45))
    def advance(self, days: int) -> None:
        self.today += days * ONE_DAY

    @rule(server=st.sampled_from(SERVERS), offset=st.integers(-5, 120), days=st.integers(-1, 40))
    def grant(self, server: str, offset: int, days: int) -> None:
        start = self.today + offset * ONE_DAY
        wanted = [start + n * ONE_DAY for n in range(max(days, 0))]
        expected: type[Exception] | None = None
        what = ""
        if days < 1:
            expected = InvalidPauseError
        elif start < self.today:
            expected = PauseInPastError
        elif any(server in self.model.get(day, ()) for day in wanted):
            expected = PauseConflictError
        elif any(TENANT in self.model.get(day, ()) for day in wanted):
            expected, what = PauseConflictError, "tenant"
        elif self._over_quota(self._with(start, days, server)):
            expected = QuotaExceededError
        call = functools.partial(self.ledger.grant, server, start, days, today=self.today)
        if expected is None:
            self.ledger = call()
            self.model = self._with(start, days, server)
        else:
            self._check_refusal(expected, call, what)

    @rule(offset=st.integers(-5, 120), days=st.integers(-1, 40))
    def grant_tenant(self, offset: int, days: int) -> None:
        start = self.today + offset * ONE_DAY
        expected: type[Exception] | None = None
        if days < 1:
            expected = InvalidPauseError
        elif start < self.today:
            expected = PauseInPastError
        elif self._over_quota(self._with(start, days, TENANT)):
            expected = QuotaExceededError
        call = functools.partial(self.ledger.grant_tenant, start, days, today=self.today)
        if expected is None:
            self.ledger = call()
            self.model = self._with(start, days, TENANT)
        else:
            self._check_refusal(expected, call, "")

    @precondition(lambda self: bool(self.ledger.pauses or self.ledger.tenant_pauses))
    @rule(data=st.data(), days=st.integers(1, 20), tenant=st.booleans())
    def grant_next_to_a_pause(self, data: st.DataObject, days: int, tenant: bool) -> None:
        # Overlapping and adjoining grants are where "create or extend" and conflicts live.
        pause = data.draw(st.sampled_from((*self.ledger.pauses, *self.ledger.tenant_pauses)))
        choices = (pause.end, pause.last_day, pause.start - days * ONE_DAY, pause.start)
        offset = (data.draw(st.sampled_from(choices)) - self.today).days
        if tenant:
            self.grant_tenant(offset, days)
        else:
            self.grant(data.draw(st.sampled_from(SERVERS)), offset, days)

    @precondition(lambda self: bool(self.ledger.pauses or self.ledger.tenant_pauses))
    @rule(data=st.data())
    def advance_to_an_edge(self, data: st.DataObject) -> None:
        pause = data.draw(st.sampled_from((*self.ledger.pauses, *self.ledger.tenant_pauses)))
        edges = [d for d in (pause.start, pause.last_day, pause.end) if d >= self.today]
        if edges:
            self.today = data.draw(st.sampled_from(edges))

    def _end(self, kind: str) -> None:
        # Days after today are given up; today stays paused only if the pause has started.
        for day, kinds in self.model.items():
            if day > self.today:
                kinds.discard(kind)

    @rule(server=st.sampled_from(SERVERS))
    def end(self, server: str) -> None:
        self.ledger = self.ledger.end(server, today=self.today)
        self._end(server)

    @rule()
    def end_tenant(self) -> None:
        self.ledger = self.ledger.end_tenant(today=self.today)
        self._end(TENANT)

    @invariant()
    def usage_matches_the_model(self) -> None:
        used = self._used(self.model)
        years = set(used) | {self.today.year, self.today.year + 1}
        for year in years:
            assert self.ledger.used(year) == used[year] <= self.ledger.quota_days
            assert self.ledger.remaining(year) == self.ledger.quota_days - used[year]

    @invariant()
    def paused_days_match_the_model(self) -> None:
        for server in (*SERVERS, "first-seen-later"):
            covered = {day for pause in self.ledger.covering(server) for day in _days_of(pause)}
            assert covered == {
                day for day, kinds in self.model.items() if server in kinds or TENANT in kinds
            }
            noon = dt.datetime.combine(self.today, dt.time(12), tzinfo=dt.UTC)
            kinds = self.model.get(self.today, set())
            assert self.ledger.paused_at(server, noon) == bool({server, TENANT} & kinds)

    @invariant()
    def tenant_pauses_are_merged_and_the_ledger_round_trips(self) -> None:
        for before, after in itertools.pairwise(self.ledger.tenant_pauses):
            assert before.end < after.start
        assert converter.structure(converter.unstructure(self.ledger), PauseLedger) == self.ledger


TenantLedgerMachine.TestCase.settings = settings(
    TenantLedgerMachine.TestCase.settings, stateful_step_count=30
)
TestTenantLedgerStateMachine = TenantLedgerMachine.TestCase
