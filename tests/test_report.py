"""Report rows and forecasts, on timelines worked out by hand from the default stage table.

The default table (SPEC section 4) reports for 30 days, throttles from day 30, blocks from
day 60 and blocks fully from day 90; a pause freezes the clock for its length.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from report_support import JAN_1, fabrikam_state
from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.errors import InvalidValueError, NaiveDatetimeError
from tbes.policy import Policy
from tbes.report import END, ReportRow, Segment, forecast, horizon, report_row, report_rows
from tbes.serde import dumps, loads
from tbes.stages import DEFAULT_STAGE_TABLE
from tbes.state import ServerState
from tbes.version import ExchangeBuild, Product

UTC = dt.UTC
SERVER = "ex16.fabrikam.example"
POLICY = Policy()
CATALOG = Catalog.default()


def at(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def state(
    first: dt.datetime | None = JAN_1,
    *pauses: tuple[dt.date, int],
    compliant_since: dt.datetime | None = None,
    build: str = "15.1.2507.39",
) -> ServerState:
    status = Compliance.OUTDATED if compliant_since is None else Compliance.COMPLIANT
    if first is None:
        status = Compliance.COMPLIANT
    return fabrikam_state(
        SERVER, build, first, pauses, status=status, compliant_since=compliant_since
    )


def stages_of(segments: tuple[Segment, ...]) -> list[tuple[dt.datetime, int | None, bool]]:
    return [(s.start, None if s.stage is None else s.stage.number, s.paused) for s in segments]


# ---- milestones -----------------------------------------------------------------------------


def test_throttling_blocking_and_full_block_start_30_60_and_90_days_after_detection() -> None:
    row = report_row(state(), at(1, 15), POLICY, CATALOG)
    assert row.throttle_enabled == at(1, 31)
    assert row.blocking_enabled == at(3, 2)
    assert row.full_block == at(4, 1)


def test_milestones_keep_the_time_of_day_of_the_first_detection() -> None:
    row = report_row(state(at(1, 1, 8, 30)), at(1, 2), POLICY, CATALOG)
    assert row.throttle_enabled == at(1, 31, 8, 30)
    assert row.full_block == at(4, 1, 8, 30)


def test_a_ten_day_pause_shifts_every_milestone_by_ten_days() -> None:
    row = report_row(state(JAN_1, (dt.date(2026, 1, 10), 10)), at(1, 15), POLICY, CATALOG)
    assert row.throttle_enabled == at(2, 10)
    assert row.blocking_enabled == at(3, 12)
    assert row.full_block == at(4, 11)


def test_a_pause_after_blocking_started_shifts_only_the_full_block() -> None:
    row = report_row(state(JAN_1, (dt.date(2026, 3, 5), 10)), at(3, 1), POLICY, CATALOG)
    assert row.throttle_enabled == at(1, 31)
    assert row.blocking_enabled == at(3, 2)
    assert row.full_block == at(4, 11)


def test_a_pause_before_the_first_detection_shifts_nothing() -> None:
    row = report_row(state(JAN_1, (dt.date(2025, 12, 1), 10)), at(1, 2), POLICY, CATALOG)
    assert row.throttle_enabled == at(1, 31)


def test_without_a_frozen_clock_a_pause_only_delays_what_it_covers() -> None:
    policy = Policy(pause_freezes_clock=False)
    # Paused 25 Jan .. 3 Feb: stage 2 begins (31 Jan) inside it, so throttling waits for 4 Feb.
    row = report_row(state(JAN_1, (dt.date(2026, 1, 25), 10)), at(1, 2), policy, CATALOG)
    assert row.throttle_enabled == at(2, 4)
    assert row.blocking_enabled == at(3, 2)
    assert row.full_block == at(4, 1)


def test_a_pause_starting_as_a_stage_would_begin_delays_its_enforcement_to_the_pause_end() -> None:
    row = report_row(state(JAN_1, (dt.date(2026, 1, 31), 10)), at(1, 20), POLICY, CATALOG)
    assert row.throttle_enabled == at(2, 10)
    # The clock reaches day 30 as the pause begins, so stage 2 starts then, paused.
    assert row.next_stage_start == at(1, 31)


# ---- current and next stage -----------------------------------------------------------------


def test_row_shows_the_current_stage_and_when_the_next_one_starts() -> None:
    row = report_row(state(), at(2, 15), POLICY, CATALOG)  # day 45: stage 3
    assert row.stage == DEFAULT_STAGE_TABLE.stages[2]
    assert (row.next_stage_throttle, row.next_stage_block) == (20, 0)
    assert row.next_stage_start == at(2, 20)
    assert row.paused_until is None


def test_in_the_terminal_stage_there_is_no_next_stage() -> None:
    row = report_row(state(), at(6, 1), POLICY, CATALOG)
    assert row.stage is not None
    assert row.stage.number == 8
    assert (row.next_stage_throttle, row.next_stage_block, row.next_stage_start) == (None,) * 3


def test_paused_until_is_the_end_of_the_pause_in_force() -> None:
    row = report_row(state(JAN_1, (dt.date(2026, 1, 10), 10)), at(1, 15, 12), POLICY, CATALOG)
    assert row.paused_until == at(1, 20)


def test_paused_until_runs_through_back_to_back_pauses() -> None:
    s = state(JAN_1, (dt.date(2026, 1, 10), 10), (dt.date(2026, 1, 20), 5))
    assert report_row(s, at(1, 12), POLICY, CATALOG).paused_until == at(1, 25)


def test_a_future_pause_is_not_a_current_one() -> None:
    row = report_row(state(JAN_1, (dt.date(2026, 2, 10), 10)), at(1, 15), POLICY, CATALOG)
    assert row.paused_until is None


# ---- what the row says about the server -------------------------------------------------


def test_row_names_the_server_its_build_product_status_and_recommended_builds() -> None:
    row = report_row(state(), at(1, 2), POLICY, CATALOG)
    assert (row.server, row.tenant) == (SERVER, "fabrikam")
    assert row.build == ExchangeBuild(15, 1, 2507, 39)
    assert row.product is Product.EXCHANGE_2016
    assert row.status is Compliance.OUTDATED
    assert row.first_detected == JAN_1
    # SPEC section 7: the 2026 minimum for Exchange 2016 is the October 2025 SU.
    assert row.recommended == (ExchangeBuild(15, 1, 2507, 61),)


def test_once_compliant_nothing_is_scheduled() -> None:
    s = state(JAN_1, (dt.date(2026, 1, 10), 5), compliant_since=at(2, 5), build="15.1.2507.61")
    row = report_row(s, at(3, 1), POLICY, CATALOG)
    assert row.status is Compliance.COMPLIANT
    assert row.stage is None
    assert (row.throttle_enabled, row.blocking_enabled, row.full_block) == (None,) * 3
    assert (row.next_stage_start, row.paused_until) == (None, None)


def test_a_server_never_detected_has_an_empty_row_timeline() -> None:
    row = report_row(state(None, build="15.2.1748.39"), at(1, 2), POLICY, CATALOG)
    assert row.first_detected is None
    assert row.stage is None
    assert row.throttle_enabled is None


def test_report_row_refuses_a_naive_now() -> None:
    with pytest.raises(NaiveDatetimeError):
        report_row(state(), dt.datetime(2026, 1, 2), POLICY, CATALOG)


# ---- forecast -----------------------------------------------------------------------------


def test_forecast_lists_the_eight_default_stages_at_their_starts() -> None:
    segments = forecast(state(), POLICY, until=at(5, 1))
    assert stages_of(segments) == [
        (at(1, 1), 1, False),
        (at(1, 31), 2, False),
        (at(2, 10), 3, False),
        (at(2, 20), 4, False),
        (at(3, 2), 5, False),
        (at(3, 12), 6, False),
        (at(3, 22), 7, False),
        (at(4, 1), 8, False),
    ]
    assert segments[-1].end == at(5, 1)


def test_forecast_shows_a_pause_as_a_paused_segment_and_shifts_what_follows() -> None:
    segments = forecast(state(JAN_1, (dt.date(2026, 1, 10), 10)), POLICY, until=at(2, 15))
    assert stages_of(segments) == [
        (at(1, 1), 1, False),
        (at(1, 10), 1, True),
        (at(1, 20), 1, False),
        (at(2, 10), 2, False),
    ]


def test_forecast_of_a_remediated_server_keeps_its_history_then_stops_enforcing() -> None:
    # Paused 5 days, so stage 2 starts on 5 Feb; remediated on 8 Feb.
    s = state(JAN_1, (dt.date(2026, 1, 10), 5), compliant_since=at(2, 8), build="15.1.2507.61")
    assert stages_of(forecast(s, POLICY, until=at(3, 1))) == [
        (at(1, 1), 1, False),
        (at(1, 10), 1, True),
        (at(1, 15), 1, False),
        (at(2, 5), 2, False),
        (at(2, 8), None, False),
    ]


def test_forecast_is_empty_without_an_episode_or_before_detection() -> None:
    assert forecast(state(None), POLICY, until=at(3, 1)) == ()
    assert forecast(state(), POLICY, until=JAN_1) == ()
    assert forecast(state(), POLICY, until=at(1, 1, year=2025)) == ()


def test_forecast_works_in_utc_whatever_zone_it_is_given() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    first = dt.datetime(2026, 1, 1, 2, 0, tzinfo=plus_two)  # midnight UTC
    segments = forecast(state(first), POLICY, until=dt.datetime(2026, 2, 1, tzinfo=plus_two))
    assert segments[1].start == at(1, 31)
    assert segments[1].start.utcoffset() == dt.timedelta(0)


def test_forecast_refuses_a_naive_until() -> None:
    with pytest.raises(NaiveDatetimeError):
        forecast(state(), POLICY, until=dt.datetime(2026, 3, 1))


def test_a_segment_must_end_after_it_starts() -> None:
    with pytest.raises(ValueError, match="end after it starts"):
        Segment(at(1, 2), at(1, 2), None, False)


def test_horizon_is_past_now_every_pause_and_the_terminal_stage() -> None:
    s = state(JAN_1, (dt.date(2026, 1, 10), 10))
    assert horizon(s, POLICY, at(1, 2)) > at(4, 11)
    assert horizon(s, POLICY, at(9, 1)) > at(9, 1)


# ---- serialisation --------------------------------------------------------------------------


def test_report_row_and_segments_round_trip_through_json() -> None:
    s = state(JAN_1, (dt.date(2026, 1, 10), 10))
    row = report_row(s, at(1, 15), POLICY, CATALOG)
    assert loads(dumps(row), ReportRow) == row
    segments = forecast(s, POLICY, until=at(5, 1))
    assert loads(dumps(segments), tuple[Segment, ...]) == segments


def test_report_row_serialises_builds_as_short_strings_and_instants_with_offset() -> None:
    text = dumps(report_row(state(), at(1, 15), POLICY, CATALOG))
    assert '"build":"15.1.2507.39"' in text
    assert '"throttle_enabled":"2026-01-31T00:00:00+00:00"' in text


# ---- report_rows: many rows at once ---------------------------------------------------------


def test_report_rows_near_the_calendars_end_are_report_rows_rows() -> None:
    # Servers without pauses share one timeline, shifted; near the calendar's end the
    # timeline is cut, so those rows must be worked out afresh, not shifted.
    firsts = [
        dt.datetime(2026, 1, 1, tzinfo=UTC),
        dt.datetime(2026, 2, 3, 4, 5, tzinfo=UTC),
        END - dt.timedelta(days=200),
        END - dt.timedelta(days=100),
        END - dt.timedelta(days=40),
        END - dt.timedelta(hours=1),
    ]
    states = [
        fabrikam_state(f"ex{index}.fabrikam.example", "15.1.2507.39", first)
        for index, first in enumerate(firsts)
    ]
    for now in (at(3, 1), END - dt.timedelta(days=50), END):
        fast = list(report_rows(states, now, POLICY, CATALOG))
        assert fast == [report_row(each, now, POLICY, CATALOG) for each in states]
    late = report_row(states[4], END, POLICY, CATALOG)
    assert late.full_block is None  # beyond the calendar: the shifted timeline would have one


def test_report_rows_are_made_as_they_are_asked_for() -> None:
    def states() -> Iterator[ServerState]:
        yield state(at(1, 1))
        raise RuntimeError("the second state is never asked for")

    rows = report_rows(states(), at(3, 1), POLICY, CATALOG)
    assert next(rows).server == SERVER


def test_report_rows_refuses_wrong_arguments_naming_them() -> None:
    with pytest.raises(InvalidValueError, match="catalog"):
        report_rows([], at(3, 1), POLICY, object())  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="policy"):
        report_rows([], at(3, 1), object(), CATALOG)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="states"):
        report_rows(42, at(3, 1), POLICY, CATALOG)  # type: ignore[arg-type]
    with pytest.raises(NaiveDatetimeError):
        report_rows([], dt.datetime(2026, 3, 1), POLICY, CATALOG)
    rows = report_rows([state(at(1, 1)), "ex16"], at(3, 1), POLICY, CATALOG)  # type: ignore[list-item]
    next(rows)
    with pytest.raises(InvalidValueError, match="state must be a ServerState"):
        next(rows)
