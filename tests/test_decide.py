"""Enforcement decisions: the shared vectors, the staged windows, pauses, replies and policies.

Expected values are worked out by hand from SPEC sections 4 and 7: a server's windows start
at its SHA-256 minute offset (``EX01`` 14, ``ex2007.fabrikam.example`` 24, both from the
shared vectors), blocking first, then throttling.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import attrs
import pytest

from support import load_vectors
from tbes.baseline import Baseline
from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.decision import Action, Decision, decide
from tbes.errors import NaiveDatetimeError, PolicyError
from tbes.ledger import Pause
from tbes.policy import DEFAULT_POLICY, ConnectorKind, Policy, SmtpReply
from tbes.stages import DEFAULT_STAGE_TABLE, Stage, StageTable
from tbes.state import ServerState

CATALOG = Catalog.default()

UTC = dt.UTC
US = dt.timedelta(microseconds=1)
EX01 = "EX01"  # minute offset 14
FABRIKAM = "ex2007.fabrikam.example"  # minute offset 24
DETECTED = dt.datetime(2025, 11, 3, 9, 0, tzinfo=UTC)
STAGE = {stage.number: stage for stage in DEFAULT_STAGE_TABLE}


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def state(
    server_id: str = EX01,
    first: dt.datetime | None = DETECTED,
    *,
    pauses: tuple[tuple[str, int], ...] = (),
    compliant_since: dt.datetime | None = None,
) -> ServerState:
    return ServerState(
        server_id=server_id,
        tenant="contoso",
        build=None,
        status=Compliance.OUTDATED if first else Compliance.COMPLIANT,
        first_detected=first,
        last_seen=first,
        compliant_since=compliant_since,
        pauses=tuple(Pause(server_id, dt.date.fromisoformat(d), n) for d, n in pauses),
    )


# ---- the shared vectors ---------------------------------------------------------------


def _vector_id(case: dict[str, Any]) -> str:
    return f"{case['now']}-{case['action']}-pauses{len(case['pauses'])}"


@pytest.mark.parametrize("case", load_vectors("decide.json")["decisions"], ids=_vector_id)
def test_decision_vector(case: dict[str, Any]) -> None:
    subject = state(
        case["server_id"],
        at(case["first_detected"]),
        pauses=tuple((start, days) for start, days in case["pauses"]),
    )
    decision = decide(subject, at(case["now"]))
    assert decision.action.value == case["action"]
    assert decision.stage is not None
    assert decision.stage.number == case["stage"]
    assert (None if decision.reply is None else str(decision.reply)) == case["reply"]
    assert decision.paused is case["paused"]


@pytest.mark.parametrize(
    "case", load_vectors("decide.json")["offsets"], ids=lambda c: c["server_id"]
)
def test_offset_vector_is_where_the_throttle_window_starts(case: dict[str, Any]) -> None:
    # In stage 2 (5 throttle minutes, no block) the window is minutes offset .. offset+4.
    offset = case["offset"]
    subject = state(case["server_id"])
    hour = DETECTED + dt.timedelta(days=31)
    actions = [decide(subject, hour.replace(minute=m)).action for m in range(60)]
    throttled = [m for m, action in enumerate(actions) if action is Action.THROTTLE]
    assert throttled == sorted((offset + k) % 60 for k in range(5))


# ---- stages and minute windows --------------------------------------------------------


def test_ex01_in_stage_5_blocks_minutes_14_to_18_and_throttles_19_to_48() -> None:
    hour = DETECTED + dt.timedelta(days=61)  # stage 5: 5 block, 30 throttle
    actions = {m: decide(state(), hour.replace(minute=m)).action for m in range(60)}
    assert [m for m in range(60) if actions[m] is Action.BLOCK] == [14, 15, 16, 17, 18]
    assert [m for m in range(60) if actions[m] is Action.THROTTLE] == list(range(19, 49))


def test_windows_wrap_around_the_hour() -> None:
    # Stage 7 (20 block, 30 throttle) for offset 24: block 24..43, throttle 44..59 and 0..13.
    hour = at("2023-06-23T08:00:00+00:00") + dt.timedelta(days=85)
    subject = state(FABRIKAM, at("2023-06-23T08:00:00+00:00"))
    assert decide(subject, hour.replace(minute=43)).action is Action.BLOCK
    assert decide(subject, hour.replace(minute=59)).action is Action.THROTTLE
    assert decide(subject, hour.replace(minute=0)).action is Action.THROTTLE
    assert decide(subject, hour.replace(minute=13)).action is Action.THROTTLE
    assert decide(subject, hour.replace(minute=14)).action is Action.ACCEPT


@pytest.mark.parametrize(
    ("days", "stage"),
    [(0, 1), (29, 1), (30, 2), (40, 3), (50, 4), (60, 5), (70, 6), (80, 7), (90, 8), (900, 8)],
)
def test_stage_starts_at_the_sum_of_the_days_before_it(days: int, stage: int) -> None:
    decision = decide(state(), DETECTED + dt.timedelta(days=days))
    assert decision.stage is not None
    assert decision.stage.number == stage
    assert decision.elapsed == dt.timedelta(days=days)


def test_the_last_microsecond_of_stage_1_is_still_stage_1() -> None:
    decision = decide(state(), DETECTED + dt.timedelta(days=30) - US)
    assert decision.stage is not None
    assert decision.stage.number == 1


def test_stage_1_reports_but_never_throttles() -> None:
    decision = decide(state(), DETECTED + dt.timedelta(days=3, minutes=14))
    assert decision.action is Action.ACCEPT
    assert decision.report is True
    assert decision.reply is None


def test_stage_8_blocks_every_minute_with_the_60_minute_reply() -> None:
    decision = decide(state(), DETECTED + dt.timedelta(days=120, minutes=37))
    assert decision.action is Action.BLOCK
    assert str(decision.reply) == (
        "550 5.7.230 Connecting Exchange server version is out-of-date; connection to "
        "Exchange Online blocked for 60 mins/hr. For more information see "
        "https://aka.ms/BlockUnsafeExchange."
    )


def test_now_before_first_detection_counts_as_day_one() -> None:
    decision = decide(state(), DETECTED - dt.timedelta(hours=5))
    assert decision.stage is not None
    assert decision.stage.number == 1
    assert decision.elapsed == dt.timedelta(0)
    assert decision.next_change == DETECTED + dt.timedelta(days=30)


def test_a_non_utc_now_decides_like_the_same_instant_in_utc() -> None:
    tokyo = dt.timezone(dt.timedelta(hours=9))
    now = DETECTED + dt.timedelta(days=61, minutes=16)
    local = decide(state(), now.astimezone(tokyo))
    assert local == decide(state(), now)
    assert local.next_change is not None
    assert local.next_change.tzinfo is UTC


def test_a_half_hour_zone_does_not_shift_the_minute_of_the_hour() -> None:
    # 09:46 in UTC+05:30 is 04:16 UTC: minute 16 is in EX01's stage-5 block window.
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    now = dt.datetime(2026, 1, 3, 9, 46, tzinfo=india)
    assert decide(state(), now).action is Action.BLOCK


def test_naive_now_raises() -> None:
    with pytest.raises(NaiveDatetimeError):
        decide(state(), dt.datetime(2025, 12, 1, 9, 0))


# ---- outside an episode ---------------------------------------------------------------


def test_no_episode_accepts_without_stage_or_change() -> None:
    decision = decide(state(first=None), DETECTED)
    assert decision.action is Action.ACCEPT
    assert decision.stage is None
    assert decision.report is False
    assert decision.next_change is None
    assert decision.reason == "EX01: no enforcement episode (status COMPLIANT)."


def test_compliance_stops_enforcement_at_once() -> None:
    healed = DETECTED + dt.timedelta(days=95)
    subject = state(compliant_since=healed)
    decision = decide(subject, healed + dt.timedelta(minutes=1))
    assert decision.action is Action.ACCEPT
    assert decision.stage is None
    assert decision.next_change is None
    assert "compliant since 2026-02-06T09:00:00+00:00" in decision.reason


# ---- pauses ---------------------------------------------------------------------------


def test_paused_server_is_accepted_reported_and_keeps_its_stage() -> None:
    subject = state(pauses=(("2026-01-20", 10),))
    decision = decide(subject, at("2026-01-22T12:16:00+00:00"))
    assert decision.action is Action.ACCEPT
    assert decision.paused is True
    assert decision.report is True
    assert decision.reply is None
    assert decision.stage is not None
    # The clock froze at 2026-01-20 00:00, 77 days 15 hours after detection: stage 6
    # (from day 70 to day 80).
    assert decision.stage.number == 6
    assert decision.elapsed == dt.timedelta(days=77, hours=15)
    assert decision.next_change == at("2026-01-30T00:00:00+00:00")
    assert decision.reason == (
        "EX01 is in stage 6 (day 78), but enforcement is paused until 2026-01-30 00:00 UTC."
    )


def test_pause_moves_the_next_stage_start_by_its_length() -> None:
    # Without the pause stage 2 starts 2025-12-03 09:00; 7 paused days move it 7 days.
    subject = state(pauses=(("2025-11-10", 7),))
    assert decide(subject, at("2025-12-10T08:59:59.999999+00:00")).stage == STAGE[1]
    assert decide(subject, at("2025-12-10T09:00:00+00:00")).stage == STAGE[2]
    assert decide(subject, at("2025-11-20T09:00:00+00:00")).next_change == at(
        "2025-12-10T09:00:00+00:00"
    )


def test_a_pause_before_detection_freezes_nothing() -> None:
    subject = state(pauses=(("2025-10-01", 20),))
    decision = decide(subject, DETECTED + dt.timedelta(days=30))
    assert decision.stage is not None
    assert decision.stage.number == 2


def test_a_pause_on_the_detection_day_freezes_only_the_hours_after_detection() -> None:
    # Paused 2025-11-03 00:00 .. 2025-11-04 00:00; detection at 09:00 that day: 15 hours.
    subject = state(pauses=(("2025-11-03", 1),))
    assert decide(subject, at("2025-11-04T00:00:00+00:00")).elapsed == dt.timedelta(0)
    stage_2 = DETECTED + dt.timedelta(days=30, hours=15)
    assert decide(subject, stage_2 - US).stage == STAGE[1]
    assert decide(subject, stage_2).stage == STAGE[2]


def test_overlapping_pauses_freeze_the_clock_once() -> None:
    subject = state(pauses=(("2025-11-10", 5), ("2025-11-12", 5)))  # 10th..16th: 7 days
    decision = decide(subject, at("2025-11-20T09:00:00+00:00"))
    assert decision.elapsed == dt.timedelta(days=17 - 7)


def test_without_clock_freezing_stages_run_on_through_a_pause() -> None:
    policy = Policy(pause_freezes_clock=False)
    subject = state(FABRIKAM, at("2023-06-23T08:00:00+00:00"), pauses=(("2023-07-10", 20),))
    paused = decide(subject, at("2023-07-25T08:24:00+00:00"), policy)
    assert paused.paused is True
    assert paused.action is Action.ACCEPT
    assert paused.stage is not None
    assert paused.stage.number == 2
    after = decide(subject, at("2023-07-31T08:24:00+00:00"), policy)
    assert after.action is Action.THROTTLE
    assert after.elapsed == dt.timedelta(days=38, minutes=24)


def test_stage_changes_while_paused_without_freezing_are_changes() -> None:
    policy = Policy(pause_freezes_clock=False)
    subject = state(FABRIKAM, at("2023-06-23T08:00:00+00:00"), pauses=(("2023-07-10", 20),))
    decision = decide(subject, at("2023-07-20T00:00:00+00:00"), policy)
    assert decision.next_change == at("2023-07-23T08:00:00+00:00")


# ---- next_change ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minute", "change"),
    [
        (16, "2026-01-03T04:19:00+00:00"),  # block 14..18 -> throttle from 19
        (30, "2026-01-03T04:49:00+00:00"),  # throttle 19..48 -> accept from 49
        (50, "2026-01-03T05:14:00+00:00"),  # accept 49..13 -> block from 14 next hour
        (13, "2026-01-03T04:14:00+00:00"),
    ],
)
def test_next_change_is_the_next_window_edge(minute: int, change: str) -> None:
    now = at("2026-01-03T04:00:00+00:00").replace(minute=minute, second=42, microsecond=7)
    decision = decide(state(), now)
    assert decision.next_change == at(change)
    assert decide(state(), at(change)).action is not decision.action


def test_next_change_in_stage_1_is_the_start_of_stage_2() -> None:
    decision = decide(state(), DETECTED + dt.timedelta(days=12, minutes=14))
    assert decision.next_change == DETECTED + dt.timedelta(days=30)


def test_next_change_is_the_stage_start_when_it_comes_before_the_window_edge() -> None:
    # 2025-12-13 08:50 in stage 2 (accepting until minute 14); stage 3 starts at 09:00.
    decision = decide(state(), at("2025-12-13T08:50:00+00:00"))
    assert decision.next_change == at("2025-12-13T09:00:00+00:00")


def test_full_block_never_changes_without_a_pause() -> None:
    assert decide(state(), DETECTED + dt.timedelta(days=91)).next_change is None


def test_full_block_changes_at_the_next_pause_and_back_at_its_end() -> None:
    subject = state(pauses=(("2026-03-01", 3),))
    before = decide(subject, at("2026-02-20T10:00:00+00:00"))
    assert before.next_change == at("2026-03-01T00:00:00+00:00")
    during = decide(subject, at("2026-03-02T10:00:00+00:00"))
    assert during.next_change == at("2026-03-04T00:00:00+00:00")
    assert decide(subject, at("2026-03-04T00:00:00+00:00")).action is Action.BLOCK


def test_next_change_passes_over_reporting_only_stages_one_at_a_time() -> None:
    table = StageTable(
        (Stage(1, True, 0, 0, 1), Stage(2, False, 0, 0, 1), Stage(3, True, 0, 60, None))
    )
    policy = Policy(stage_table=table)
    first = decide(state(), DETECTED, policy)
    assert first.next_change == DETECTED + dt.timedelta(days=1)
    second = decide(state(), DETECTED + dt.timedelta(days=1), policy)
    assert second.report is False
    assert second.next_change == DETECTED + dt.timedelta(days=2)


# ---- replies and reasons --------------------------------------------------------------


def test_throttle_reply_is_microsofts_text() -> None:
    decision = decide(state(FABRIKAM, at("2023-06-23T08:00:00+00:00")), at("2023-07-23T08:26:00Z"))
    assert decision.reply == SmtpReply(
        450,
        "4.7.230",
        "Connecting Exchange server version is out-of-date; connection to Exchange Online "
        "throttled for 5 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange.",
    )


def test_block_reply_names_the_stage_block_minutes() -> None:
    decision = decide(state(), DETECTED + dt.timedelta(days=75, minutes=14))  # stage 6
    assert str(decision.reply) == (
        "550 5.7.230 Connecting Exchange server version is out-of-date; connection to "
        "Exchange Online blocked for 10 mins/hr. For more information see "
        "https://aka.ms/BlockUnsafeExchange."
    )


def test_reply_uses_the_policys_service_name_and_url() -> None:
    policy = Policy(service_name="Contoso Mail", info_url="https://contoso.example/exchange")
    decision = decide(state(), DETECTED + dt.timedelta(days=95), policy)
    assert str(decision.reply) == (
        "550 5.7.230 Connecting Exchange server version is out-of-date; connection to "
        "Contoso Mail blocked for 60 mins/hr. For more information see "
        "https://contoso.example/exchange."
    )


def test_reason_says_stage_day_minute_and_window() -> None:
    decision = decide(state(), at("2026-01-03T04:16:00+00:00"))
    assert (
        decision.reason == "EX01 is in stage 5 (day 61): minute 16 is in its 5-minute block window."
    )
    accepted = decide(state(), at("2026-01-03T04:50:00+00:00"))
    assert accepted.reason == (
        "EX01 is in stage 5 (day 61): minute 50 is outside its block and throttle windows."
    )


@pytest.mark.parametrize(
    ("later", "reason"),
    [
        (
            dt.timedelta(days=3, minutes=14),
            "EX01 is in stage 1 (day 4): minute 14 is not throttled or blocked in this stage "
            "(reported only).",
        ),
        (
            dt.timedelta(days=31, minutes=15),
            "EX01 is in stage 2 (day 32): minute 15 is in its 5-minute throttle window.",
        ),
        (
            dt.timedelta(days=31, minutes=30),
            "EX01 is in stage 2 (day 32): minute 30 is outside its throttle window.",
        ),
        (
            dt.timedelta(days=100, minutes=7),
            "EX01 is in stage 8 (day 101): minute 07 is in its 60-minute block window.",
        ),
    ],
)
def test_reason_names_only_the_windows_the_stage_has(later: dt.timedelta, reason: str) -> None:
    assert decide(state(), DETECTED + later).reason == reason


def test_smtp_reply_str_is_the_whole_line() -> None:
    assert str(SmtpReply(450, "4.7.230", "Try later.")) == "450 4.7.230 Try later."


@pytest.mark.parametrize(
    ("code", "enhanced", "text"),
    [
        (250, "2.0.0", "OK"),
        (450, "5.7.230", "class differs from the code"),
        (550, "5.7", "too short"),
        (550, "5.7.x", "not a number"),
        (550, "5.7.230", ""),
        (550, "5.7.230", "two\r\nlines"),
        (550, "5.7.230", "caf\u00e9"),
    ],
)
def test_smtp_reply_refuses_what_no_server_may_send(code: int, enhanced: str, text: str) -> None:
    with pytest.raises(ValueError, match=r"got"):
        SmtpReply(code, enhanced, text)


# ---- Decision -------------------------------------------------------------------------


def _a_decision(**changes: Any) -> Decision:
    base = decide(state(), DETECTED + dt.timedelta(days=95))
    return attrs.evolve(base, **changes)


def test_decision_refuses_a_reply_on_accept_and_none_on_block() -> None:
    with pytest.raises(ValueError, match="ACCEPT decision carries no reply"):
        _a_decision(action=Action.ACCEPT)
    with pytest.raises(ValueError, match="BLOCK decision needs a reply"):
        _a_decision(reply=None)


def test_decision_refuses_a_paused_block_and_negative_elapsed() -> None:
    with pytest.raises(ValueError, match="paused server is accepted"):
        _a_decision(paused=True)
    with pytest.raises(ValueError, match="elapsed must be >= 0"):
        _a_decision(elapsed=dt.timedelta(seconds=-1))


def test_decision_refuses_a_naive_next_change_and_normalises_to_utc() -> None:
    with pytest.raises(NaiveDatetimeError):
        _a_decision(next_change=dt.datetime(2026, 3, 1))
    paris = dt.timezone(dt.timedelta(hours=1))
    decision = _a_decision(next_change=dt.datetime(2026, 3, 1, 1, 0, tzinfo=paris))
    assert decision.next_change == dt.datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert decision.next_change is not None
    assert decision.next_change.tzinfo is UTC


# ---- Policy ---------------------------------------------------------------------------


def test_default_policy_has_the_specified_settings() -> None:
    policy = Policy()
    assert policy.stage_table == DEFAULT_STAGE_TABLE
    assert policy.baseline == Baseline.exchange_online_2026()
    assert policy.connectors == frozenset({ConnectorKind.ON_PREMISES})
    assert policy.service_name == "Exchange Online"
    assert policy.info_url == "https://aka.ms/BlockUnsafeExchange"
    assert policy.pause_quota_days == 90
    assert policy.pause_freezes_clock is True
    assert policy.relapse_window == dt.timedelta(days=30)
    assert policy == DEFAULT_POLICY == Policy.exchange_online_2026()


def test_the_2023_preset_differs_only_in_its_baseline() -> None:
    policy = Policy.exchange_online_2023()
    assert policy.baseline == Baseline.exchange_online_2023()
    assert attrs.evolve(policy, baseline=Baseline.exchange_online_2026()) == DEFAULT_POLICY


def test_supported_only_judges_support_on_the_given_day() -> None:
    on = dt.date(2026, 1, 15)
    assert Policy.supported_only(on, CATALOG).baseline == Baseline.supported_only(on, CATALOG)


def test_named_presets() -> None:
    named = functools.partial(Policy.named, catalog=CATALOG)
    assert named("exchange_online_2023") == Policy.exchange_online_2023()
    assert named("exchange_online_2026", on=dt.date(2026, 1, 1)) == DEFAULT_POLICY
    on = dt.date(2026, 1, 15)
    assert named("supported_only", on=on) == Policy.supported_only(on, CATALOG)


def test_unknown_policy_name_lists_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match="exchange_online_2023, exchange_online_2026, supported_only"
    ):
        Policy.named("exchange_online_2030", catalog=CATALOG)


def test_supported_only_needs_a_day() -> None:
    with pytest.raises(ValueError, match="supported_only"):
        Policy.named("supported_only", catalog=CATALOG)
    with pytest.raises(PolicyError, match="date"):
        Policy.supported_only(dt.datetime(2026, 1, 1, tzinfo=UTC), CATALOG)


def test_presets_that_read_releases_need_the_catalog_given() -> None:
    # Issue 14 item 6: no preset falls back to the packaged catalog without saying so.
    on = dt.date(2026, 1, 15)
    with pytest.raises(PolicyError, match="catalog"):
        Policy.named("supported_only", on=on, catalog=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Policy.named("supported_only", on=on)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Policy.supported_only(on)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "changes",
    [
        {"pause_quota_days": -1},
        {"relapse_window": dt.timedelta(days=-1)},
        {"connectors": frozenset({"ON_PREMISES"})},
        {"service_name": "Exchange\r\nOnline"},
        {"info_url": ""},
    ],
)
def test_policy_refuses_bad_settings(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="got"):
        Policy(**changes)


def test_policy_accepts_any_iterable_of_connector_kinds() -> None:
    policy = Policy(connectors=[ConnectorKind.PARTNER, ConnectorKind.INTERNET])
    assert policy.connectors == frozenset({ConnectorKind.PARTNER, ConnectorKind.INTERNET})
