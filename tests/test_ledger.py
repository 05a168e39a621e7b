"""Example-based tests of pauses and the tenant's yearly pause quota."""

from __future__ import annotations

import datetime as dt

import pytest

from tbes.errors import (
    InvalidPauseError,
    NaiveDatetimeError,
    PauseConflictError,
    PauseInPastError,
    QuotaExceededError,
)
from tbes.ledger import Pause, PauseLedger
from tbes.serde import dumps, loads

D = dt.date
UTC = dt.UTC


def at(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    micro: int = 0,
    *,
    tz: dt.tzinfo = UTC,
) -> dt.datetime:
    """An aware instant, in UTC unless ``tz`` says otherwise."""
    return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)


def two_servers_sharing_the_quota() -> PauseLedger:
    ledger = PauseLedger("contoso")
    ledger = ledger.grant("EX01", D(2024, 2, 1), 30, today=D(2024, 1, 2))
    return ledger.grant("EX02", D(2024, 4, 1), 60, today=D(2024, 1, 2))


# --- Pause -----------------------------------------------------------------------------------


def test_pause_covers_its_days_with_an_exclusive_end() -> None:
    pause = Pause("EX01", D(2024, 2, 28), 3)  # 28 Feb, 29 Feb (leap year), 1 Mar
    assert pause.end == D(2024, 3, 2)
    assert pause.last_day == D(2024, 3, 1)
    assert pause.start_instant == at(2024, 2, 28)
    assert pause.end_instant == at(2024, 3, 2)


@pytest.mark.parametrize(
    ("instant", "covered"),
    [
        (at(2024, 2, 27, 23, 59, 59, 999999), False),
        (at(2024, 2, 28), True),
        (at(2024, 3, 1, 23, 59, 59, 999999), True),
        (at(2024, 3, 2), False),
        # 00:30 on 2 March in UTC+1 is 23:30 UTC on 1 March: still paused.
        (at(2024, 3, 2, 0, 30, tz=dt.timezone(dt.timedelta(hours=1))), True),
        # 23:30 on 27 Feb in UTC-1 is 00:30 UTC on 28 Feb: already paused.
        (at(2024, 2, 27, 23, 30, tz=dt.timezone(dt.timedelta(hours=-1))), True),
    ],
)
def test_pause_covers_instants_by_their_utc_day(instant: dt.datetime, covered: bool) -> None:
    assert Pause("EX01", D(2024, 2, 28), 3).covers(instant) is covered


def test_pause_covers_day() -> None:
    pause = Pause("EX01", D(2024, 2, 28), 3)
    assert [pause.covers_day(D(2024, 2, d)) for d in (27, 28, 29)] == [False, True, True]
    assert pause.covers_day(D(2024, 3, 1))
    assert not pause.covers_day(D(2024, 3, 2))


def test_pause_refuses_naive_instants() -> None:
    pause = Pause("EX01", D(2024, 2, 28), 3)
    with pytest.raises(NaiveDatetimeError, match="naive"):
        pause.covers(dt.datetime(2024, 2, 28, 12))
    with pytest.raises(NaiveDatetimeError):
        pause.overlap(dt.datetime(2024, 2, 28), at(2024, 3, 1))


def test_pause_overlap_with_an_interval() -> None:
    pause = Pause("EX01", D(2024, 3, 10), 5)  # [10 Mar, 15 Mar)
    assert pause.overlap(at(2024, 3, 1), at(2024, 4, 1)) == dt.timedelta(days=5)
    assert pause.overlap(at(2024, 3, 12, 6), at(2024, 4, 1)) == dt.timedelta(days=2, hours=18)
    assert pause.overlap(at(2024, 3, 1), at(2024, 3, 11)) == dt.timedelta(days=1)
    assert pause.overlap(at(2024, 3, 15), at(2024, 4, 1)) == dt.timedelta(0)
    assert pause.overlap(at(2024, 4, 1), at(2024, 3, 1)) == dt.timedelta(0)


def test_pause_crossing_new_year_charges_each_year_its_days() -> None:
    pause = Pause("EX01", D(2024, 12, 20), 30)  # 20-31 Dec = 12 days, 1-18 Jan = 18 days
    assert pause.days_in_year(2023) == 0
    assert pause.days_in_year(2024) == 12
    assert pause.days_in_year(2025) == 18
    assert pause.days_in_year(2026) == 0
    assert list(pause.years()) == [2024, 2025]
    assert pause.end == D(2025, 1, 19)


def test_pause_ending_on_31_december_charges_one_year() -> None:
    pause = Pause("EX01", D(2024, 12, 22), 10)
    assert pause.last_day == D(2024, 12, 31)
    assert list(pause.years()) == [2024]
    assert pause.days_in_year(2024) == 10
    assert pause.days_in_year(2025) == 0


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("EX01", D(2024, 1, 1), 0), InvalidPauseError, r"days >= 1, got days=0"),
        (("EX01", D(2024, 1, 1), -3), InvalidPauseError, r"days >= 1, got days=-3"),
        (("EX01", D(2024, 1, 1), True), InvalidPauseError, r"days >= 1, got days=True"),
        (("", D(2024, 1, 1), 1), InvalidPauseError, r"server_id must be a non-empty str, got ''"),
        (("EX01", D(9999, 12, 30), 5), InvalidPauseError, r"from 9999-12-30 ends after 9999-12-31"),
        (("EX01", at(2024, 1, 1), 1), InvalidPauseError, r"start must be a date, not a datetime"),
        (("EX01", "2024-01-01", 1), InvalidPauseError, r"start must be a date, got '2024-01-01'"),
    ],
)
def test_invalid_pauses_are_refused(
    args: tuple[object, object, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Pause(*args)  # type: ignore[arg-type]


# --- grant and the quota ---------------------------------------------------------------------


def test_two_servers_share_one_yearly_quota() -> None:
    ledger = two_servers_sharing_the_quota()
    assert ledger.used(2024) == 90
    assert ledger.remaining(2024) == 0
    assert ledger.pauses_for("EX01") == (Pause("EX01", D(2024, 2, 1), 30),)
    assert ledger.pauses_for("EX02") == (Pause("EX02", D(2024, 4, 1), 60),)
    assert ledger.pauses_for("EX03") == ()


def test_a_third_request_beyond_the_quota_is_refused_naming_year_used_and_remaining() -> None:
    ledger = two_servers_sharing_the_quota()
    with pytest.raises(QuotaExceededError) as caught:
        ledger.grant("EX03", D(2024, 7, 1), 10, today=D(2024, 1, 2))
    assert str(caught.value) == (
        "pause of 10 days for EX03 needs 10 days in 2024, but only 0 of 90 remain (90 used)"
    )


def test_pause_crossing_new_year_is_refused_when_the_second_year_lacks_days() -> None:
    ledger = PauseLedger("contoso").grant("EX02", D(2024, 3, 1), 80, today=D(2023, 12, 1))
    with pytest.raises(QuotaExceededError) as caught:
        ledger.grant("EX01", D(2023, 12, 20), 30, today=D(2023, 12, 1))
    assert str(caught.value) == (
        "pause of 30 days for EX01 needs 18 days in 2024, but only 10 of 90 remain (80 used)"
    )


def test_pause_crossing_new_year_charges_both_years() -> None:
    ledger = PauseLedger("contoso").grant("EX01", D(2024, 12, 20), 30, today=D(2024, 12, 1))
    assert (ledger.used(2024), ledger.used(2025)) == (12, 18)
    assert (ledger.remaining(2024), ledger.remaining(2025)) == (78, 72)


def test_a_request_using_exactly_the_remaining_days_is_granted() -> None:
    ledger = PauseLedger("contoso", quota_days=10).grant(
        "EX01", D(2024, 1, 1), 4, today=D(2024, 1, 1)
    )
    ledger = ledger.grant("EX02", D(2024, 1, 1), 6, today=D(2024, 1, 1))
    assert ledger.remaining(2024) == 0
    with pytest.raises(QuotaExceededError, match=r"needs 1 day in 2024, but only 0 of 10 remain"):
        ledger.grant("EX03", D(2024, 6, 1), 1, today=D(2024, 1, 1))


def test_unused_days_expire_and_a_new_year_has_the_full_quota() -> None:
    ledger = two_servers_sharing_the_quota()
    assert ledger.remaining(2025) == 90
    ledger = ledger.grant("EX01", D(2025, 1, 1), 90, today=D(2024, 12, 31))
    assert ledger.used(2025) == 90
    assert ledger.used(2024) == 90
    # Nothing carries over: a year with a light pause leaves the next year at exactly 90.
    light = PauseLedger("fabrikam").grant("EX01", D(2024, 6, 1), 5, today=D(2024, 1, 1))
    assert light.remaining(2024) == 85
    assert light.remaining(2025) == 90


def test_a_pause_may_start_today_but_not_before() -> None:
    ledger = PauseLedger("contoso")
    assert ledger.grant("EX01", D(2024, 5, 5), 1, today=D(2024, 5, 5)).used(2024) == 1
    with pytest.raises(PauseInPastError) as caught:
        ledger.grant("EX01", D(2024, 5, 4), 1, today=D(2024, 5, 5))
    assert str(caught.value) == (
        "a pause for EX01 cannot start on 2024-05-04, before today (2024-05-05)"
    )


def test_overlapping_pauses_of_one_server_conflict() -> None:
    ledger = PauseLedger("contoso").grant("EX01", D(2024, 2, 1), 30, today=D(2024, 1, 2))
    with pytest.raises(PauseConflictError) as caught:
        ledger.grant("EX01", D(2024, 3, 1), 5, today=D(2024, 1, 2))  # 1 March is its last day
    assert str(caught.value) == (
        "pause of 5 days for EX01 from 2024-03-01 overlaps its pause from 2024-02-01 to 2024-03-01"
    )


def test_adjacent_pauses_of_one_server_and_overlapping_pauses_of_two_servers_are_fine() -> None:
    ledger = PauseLedger("contoso").grant("EX01", D(2024, 2, 1), 30, today=D(2024, 1, 2))
    ledger = ledger.grant("EX01", D(2024, 3, 2), 5, today=D(2024, 1, 2))
    ledger = ledger.grant("EX02", D(2024, 2, 10), 5, today=D(2024, 1, 2))
    assert ledger.used(2024) == 40
    assert len(ledger.pauses_for("EX01")) == 2


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda lg: lg.grant("EX03", D(2024, 7, 1), 10, today=D(2024, 1, 2)), QuotaExceededError),
        (lambda lg: lg.grant("EX01", D(2024, 2, 15), 1, today=D(2024, 1, 2)), PauseConflictError),
        (lambda lg: lg.grant("EX03", D(2024, 1, 1), 1, today=D(2024, 1, 2)), PauseInPastError),
        (lambda lg: lg.grant("EX03", D(2024, 7, 1), 0, today=D(2024, 1, 2)), InvalidPauseError),
        (lambda lg: lg.grant("EX03", D(2024, 7, 1), 1, today=at(2024, 1, 2)), InvalidPauseError),
    ],
)
def test_a_refused_grant_leaves_the_ledger_unchanged(call: object, error: type[Exception]) -> None:
    ledger = two_servers_sharing_the_quota()
    before = dumps(ledger)
    with pytest.raises(error):
        call(ledger)  # type: ignore[operator]
    assert dumps(ledger) == before
    assert ledger == two_servers_sharing_the_quota()


def test_today_must_be_a_date_not_a_datetime() -> None:
    with pytest.raises(InvalidPauseError, match=r"today must be a date, not a datetime"):
        PauseLedger("contoso").grant("EX01", D(2024, 7, 1), 1, today=at(2024, 1, 2))
    with pytest.raises(InvalidPauseError, match=r"today must be a date, not a datetime"):
        PauseLedger("contoso").end("EX01", today=at(2024, 1, 2))


# --- end -------------------------------------------------------------------------------------


def test_ending_a_running_pause_keeps_its_days_through_today_and_returns_the_rest() -> None:
    ledger = PauseLedger("contoso").grant("EX01", D(2024, 2, 1), 30, today=D(2024, 1, 2))
    ended = ledger.end("EX01", today=D(2024, 2, 10))
    assert ended.pauses_for("EX01") == (Pause("EX01", D(2024, 2, 1), 10),)  # 1..10 Feb
    assert ended.used(2024) == 10
    assert ended.remaining(2024) == 80
    assert ended.paused_at("EX01", at(2024, 2, 10, 23, 59))
    assert not ended.paused_at("EX01", at(2024, 2, 11))


def test_ending_a_pause_that_started_today_keeps_today() -> None:
    ledger = PauseLedger("contoso").grant("EX01", D(2024, 2, 1), 30, today=D(2024, 1, 2))
    ended = ledger.end("EX01", today=D(2024, 2, 1))
    assert ended.pauses_for("EX01") == (Pause("EX01", D(2024, 2, 1), 1),)
    assert ended.used(2024) == 1


def test_ending_removes_a_future_pause_and_returns_all_its_days() -> None:
    ledger = two_servers_sharing_the_quota()
    ended = ledger.end("EX02", today=D(2024, 3, 31))
    assert ended.pauses_for("EX02") == ()
    assert ended.used(2024) == 30
    assert ended.pauses_for("EX01") == ledger.pauses_for("EX01")


def test_ending_keeps_past_pauses_and_ends_every_current_or_future_one() -> None:
    ledger = PauseLedger("contoso").grant("EX01", D(2024, 1, 5), 5, today=D(2024, 1, 1))
    ledger = ledger.grant("EX01", D(2024, 2, 1), 10, today=D(2024, 1, 1))
    ledger = ledger.grant("EX01", D(2024, 3, 1), 10, today=D(2024, 1, 1))
    ended = ledger.end("EX01", today=D(2024, 2, 3))
    assert ended.pauses_for("EX01") == (
        Pause("EX01", D(2024, 1, 5), 5),
        Pause("EX01", D(2024, 2, 1), 3),
    )
    assert ended.used(2024) == 8


def test_returned_days_can_be_granted_again() -> None:
    ledger = two_servers_sharing_the_quota().end("EX02", today=D(2024, 4, 20))  # keeps 1..20 Apr
    assert ledger.used(2024) == 50
    ledger = ledger.grant("EX03", D(2024, 5, 1), 40, today=D(2024, 4, 20))
    assert ledger.remaining(2024) == 0


def test_ending_a_pause_crossing_new_year_returns_days_to_both_years() -> None:
    ledger = PauseLedger("contoso").grant("EX01", D(2024, 12, 20), 30, today=D(2024, 12, 1))
    ended = ledger.end("EX01", today=D(2024, 12, 25))  # keeps 20-25 Dec
    assert (ended.used(2024), ended.used(2025)) == (6, 0)


def test_ending_with_no_current_or_future_pause_is_a_no_op() -> None:
    ledger = PauseLedger("contoso").grant("EX01", D(2024, 2, 1), 30, today=D(2024, 1, 2))
    assert ledger.end("EX01", today=D(2024, 3, 2)) is ledger  # ended on 1 March
    assert ledger.end("EX09", today=D(2024, 2, 10)) is ledger


# --- paused_at -------------------------------------------------------------------------------


def test_paused_at_is_per_server() -> None:
    ledger = two_servers_sharing_the_quota()
    assert ledger.paused_at("EX01", at(2024, 2, 1))
    assert not ledger.paused_at("EX02", at(2024, 2, 1))
    assert not ledger.paused_at("EX01", at(2024, 1, 31, 23, 59, 59))
    assert ledger.paused_at("EX02", at(2024, 5, 30, 23))  # 60 days from 1 April end on 31 May
    assert not ledger.paused_at("EX02", at(2024, 5, 31))


def test_paused_at_refuses_naive_instants() -> None:
    with pytest.raises(NaiveDatetimeError):
        two_servers_sharing_the_quota().paused_at("EX01", dt.datetime(2024, 2, 1))


# --- construction and serialisation ----------------------------------------------------------


def test_equal_accounts_are_equal_whatever_the_order_of_their_pauses() -> None:
    a = Pause("EX01", D(2024, 2, 1), 30)
    b = Pause("EX02", D(2024, 1, 1), 5)
    assert PauseLedger("t", 90, (a, b)) == PauseLedger("t", 90, (b, a))
    assert PauseLedger("t", 90, (a, b)).pauses == (b, a)


def test_a_ledger_with_overlapping_pauses_of_one_server_cannot_be_built() -> None:
    with pytest.raises(PauseConflictError, match="pauses of EX01 overlap"):
        PauseLedger("t", 90, (Pause("EX01", D(2024, 2, 1), 5), Pause("EX01", D(2024, 2, 5), 5)))


def test_a_ledger_above_its_quota_cannot_be_built() -> None:
    with pytest.raises(QuotaExceededError, match="tenant t use 11 days in 2024, above the quota"):
        PauseLedger("t", 10, (Pause("EX01", D(2024, 2, 1), 5), Pause("EX02", D(2024, 2, 5), 6)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tenant": ""}, r"tenant must be a non-empty str, got ''"),
        ({"tenant": "t", "quota_days": -1}, r"quota_days must be an int >= 0, got -1"),
        ({"tenant": "t", "quota_days": 9.5}, r"quota_days must be an int >= 0, got 9\.5"),
    ],
)
def test_invalid_ledgers_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidPauseError, match=message):
        PauseLedger(**kwargs)  # type: ignore[arg-type]


def test_a_zero_quota_grants_nothing() -> None:
    with pytest.raises(QuotaExceededError, match=r"only 0 of 0 remain \(0 used\)"):
        PauseLedger("t", quota_days=0).grant("EX01", D(2024, 1, 1), 1, today=D(2024, 1, 1))


def test_ledger_serialises_with_iso_dates_and_round_trips() -> None:
    ledger = two_servers_sharing_the_quota()
    text = dumps(ledger)
    assert text == (
        '{"pauses":[{"days":30,"server_id":"EX01","start":"2024-02-01"},'
        '{"days":60,"server_id":"EX02","start":"2024-04-01"}],'
        '"quota_days":90,"tenant":"contoso"}'
    )
    assert loads(text, PauseLedger) == ledger
