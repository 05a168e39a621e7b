"""Report rows and forecasts, on timelines worked out by hand from the default stage table.

The default table (SPEC section 4) reports for 30 days, throttles from day 30, blocks from
day 60 and blocks fully from day 90; a pause freezes the clock for its length.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest

from report_support import JAN_1, fabrikam_state
from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.errors import InvalidValueError, NaiveDatetimeError
from tbes.policy import Policy
from tbes.report import (
    END,
    ReportRow,
    Segment,
    forecast,
    horizon,
    recommended_builds,
    report_row,
    report_rows,
)
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
    # SPEC section 7: the 2026 minimum for Exchange 2016 is the October 2025 SU; the CU23
    # builds after it (Dec 2025 SU on) went to ESU customers only, so it stands alone.
    assert row.recommended == (ExchangeBuild(15, 1, 2507, 61),)


# ---- Microsoft's report (issue 15, item 4) ------------------------------------------------

EXCHANGE_ONLINE = Policy.exchange_online(CATALOG)
MAY_10_2024 = dt.datetime(2024, 5, 10, 9, 0, tzinfo=UTC)


def may_2024_row(
    build: str = "15.1.2507.16", server: str = "edge/ex16.contoso.example"
) -> ReportRow:
    s = ServerState(
        server_id=server,
        tenant="contoso",
        build=ExchangeBuild.parse(build),
        status=Compliance.OUTDATED,
        first_detected=dt.datetime(2024, 3, 1, tzinfo=UTC),
        last_seen=MAY_10_2024,
        compliant_since=None,
    )
    return report_row(s, MAY_10_2024, EXCHANGE_ONLINE, CATALOG)


def test_may_2024_report_recommends_every_cu23_build_from_the_august_2023_su_newest_first() -> None:
    # The observed report of May 2024: a 2016 at 15.1.2507.16 (Nov 2022 SU) was flagged and
    # .31 to .39 were listed: Aug23SU .31, Aug23SUv2 .32, Oct23SU .34, Nov23SU .35, Mar24SU
    # .37, Apr24HU .39 (the Nov 2024 SU, .43, did not exist yet).
    row = may_2024_row()
    assert [str(build) for build in row.recommended] == [
        "15.1.2507.39",
        "15.1.2507.37",
        "15.1.2507.35",
        "15.1.2507.34",
        "15.1.2507.32",
        "15.1.2507.31",
    ]
    wire = json.loads(dumps(row))
    assert wire["RecommendedBuildVersions"] == [
        "15.1.2507.39",
        "15.01.2507.039",
        "15.1.2507.37",
        "15.01.2507.037",
        "15.1.2507.35",
        "15.01.2507.035",
        "15.1.2507.34",
        "15.01.2507.034",
        "15.1.2507.32",
        "15.01.2507.032",
        "15.1.2507.31",
        "15.01.2507.031",
    ]


def test_may_2024_row_carries_microsofts_fields_worked_out_by_hand() -> None:
    # First detected 1 March 2024: throttling 30 days later (31 Mar), blocking 60 days later
    # (30 Apr), fully blocked 90 days later (30 May). On 10 May, day 70, the server is in
    # stage 6 (days 70-80: throttle 30, block 10); stage 7 (throttle 30, block 20) starts on
    # day 80, 20 May.
    wire = json.loads(dumps(may_2024_row()))
    assert wire["ServerFQDN"] == "ex16.contoso.example"
    assert wire["connector"] == "edge"
    assert wire["server"] == "edge/ex16.contoso.example"
    assert wire["tenant"] == "contoso"
    assert wire["Build"] == "15.1.2507.16"
    assert wire["ExchangeServer"] == "ExchangeServer2016"
    assert wire["status"] == "OUTDATED"
    assert wire["FirstDetectedDate"] == "2024-03-01T00:00:00+00:00"
    assert wire["ThrottleEnabledDate"] == "2024-03-31T00:00:00+00:00"
    assert wire["BlockingEnabledDate"] == "2024-04-30T00:00:00+00:00"
    assert wire["fully_blocked"] == "2024-05-30T00:00:00+00:00"
    assert wire["stage"]["number"] == 6
    assert (wire["NextStageThrottleRate"], wire["NextStageBlockRate"]) == (30, 20)
    assert wire["NextStageStartDate"] == "2024-05-20T00:00:00+00:00"
    assert wire["paused_until"] is None
    assert wire["last_seen"] == "2024-05-10T09:00:00+00:00"
    assert wire["control"] is None


def test_a_connector_level_id_is_its_own_server_fqdn_and_connector() -> None:
    row = may_2024_row(server="edge")
    assert (row.server_fqdn, row.connector) == ("edge", "edge")


def test_a_compliant_build_is_recommended_its_own_line_from_the_floor_up() -> None:
    row = may_2024_row(build="15.1.2507.35")
    assert [str(build) for build in row.recommended][-1] == "15.1.2507.31"
    assert str(row.recommended[0]) == "15.1.2507.39"


def test_a_cu_line_no_longer_accepted_is_recommended_the_accepted_lines() -> None:
    # 2016 CU22 (15.1.2375) is no longer one of the two newest lines in May 2024; the
    # report names what the baseline accepts: CU23 from its Aug 2023 SU.
    row = may_2024_row(build="15.1.2375.37")
    assert row.recommended == (ExchangeBuild(15, 1, 2507, 31),)


def test_a_product_out_of_support_is_recommended_its_upgrade_target() -> None:
    # Exchange 2013 is unsupported from December 2023: the upgrade target is the newest
    # supported product's accepted lines (2019 CU14 and CU13 floors in May 2024).
    row = may_2024_row(build="15.0.1497.48", server="edge/ex13.contoso.example")
    assert row.status is Compliance.OUTDATED  # the stored status; the row recomputes none
    assert [str(build) for build in row.recommended] == ["15.2.1544.9", "15.2.1258.23"]
    assert json.loads(dumps(row))["ExchangeServer"] == "ExchangeServer2013"


def test_recommended_builds_never_lists_an_esu_only_build_nor_one_released_later() -> None:
    # September 2026, Exchange 2016 under the Oct 2025 SU floor: .61 is public; .63 to .72
    # went to ESU customers only.
    policy = EXCHANGE_ONLINE
    on = dt.datetime(2026, 9, 10, tzinfo=UTC)
    got = recommended_builds(
        ExchangeBuild.parse("15.1.2507.39"), policy.baseline_at(on), CATALOG, on.date()
    )
    assert got == (ExchangeBuild(15, 1, 2507, 61),)
    earlier = dt.date(2024, 4, 1)  # before the Apr 2024 HU (.39, 23 April) was released
    baseline = policy.baseline_at(dt.datetime(2024, 4, 1, tzinfo=UTC))
    got = recommended_builds(ExchangeBuild.parse("15.1.2507.16"), baseline, CATALOG, earlier)
    assert ExchangeBuild(15, 1, 2507, 39) not in got
    assert got[0] == ExchangeBuild(15, 1, 2507, 37)


def test_a_build_that_is_no_on_premises_exchange_gets_no_recommendation() -> None:
    on = MAY_10_2024
    online = ExchangeBuild.parse("15.20.7452.0")
    assert recommended_builds(online, EXCHANGE_ONLINE.baseline_at(on), CATALOG, on.date()) == ()


def test_recommended_builds_refuses_an_instant_where_a_day_belongs() -> None:
    with pytest.raises(InvalidValueError, match="on must be a date"):
        recommended_builds(
            ExchangeBuild.parse("15.1.2507.16"),
            EXCHANGE_ONLINE.baseline_at(MAY_10_2024),
            CATALOG,
            "2024-05-10",  # type: ignore[arg-type]
        )


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
    assert '"Build":"15.1.2507.39"' in text
    assert '"ThrottleEnabledDate":"2026-01-31T00:00:00+00:00"' in text


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("RecommendedBuildVersions", ["15.1.2507.61"], "short and long form"),
        ("RecommendedBuildVersions", ["15.1.2507.61", "15.01.2507.063"], "pairs differ"),
        ("ExchangeServer", "ExchangeServer1999", "ExchangeServer1999"),
        ("server", None, "server must be a string"),
    ],
)
def test_a_report_row_that_does_not_add_up_does_not_load(
    key: str, value: object, message: str
) -> None:
    data = json.loads(dumps(report_row(state(), at(1, 15), POLICY, CATALOG)))
    data[key] = value
    with pytest.raises(InvalidValueError, match=message):
        loads(json.dumps(data), ReportRow)


def test_a_report_row_missing_a_key_does_not_load() -> None:
    data = json.loads(dumps(report_row(state(), at(1, 15), POLICY, CATALOG)))
    del data["FirstDetectedDate"]
    with pytest.raises(InvalidValueError, match="ReportRow"):
        loads(json.dumps(data), ReportRow)


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
