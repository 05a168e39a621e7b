"""Tenant pauses in the ledger: one exemption for every server, charged once per day."""

from __future__ import annotations

import datetime as dt

import pytest

from tbes.compliance import Compliance
from tbes.decision import Action, decide
from tbes.errors import (
    InvalidPauseError,
    InvalidValueError,
    PauseConflictError,
    PauseInPastError,
    QuotaExceededError,
)
from tbes.ledger import Pause, PauseLedger, TenantPause
from tbes.serde import dumps, loads
from tbes.state import ServerState

D = dt.date
UTC = dt.UTC
TODAY = D(2024, 1, 2)


def noon(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), tzinfo=UTC)


# --- charging ----------------------------------------------------------------------------


def test_a_tenant_pause_costs_one_day_per_day_whatever_the_number_of_servers() -> None:
    ledger = PauseLedger("contoso").grant_tenant(D(2024, 3, 1), 10, today=TODAY)
    assert ledger.tenant_pauses == (TenantPause(D(2024, 3, 1), 10),)
    assert ledger.used(2024) == 10
    assert ledger.remaining(2024) == 80
    # Every server is paused, including one the ledger has never heard of.
    for server in ("EX01", "EX02", "never-seen.contoso.com"):
        assert ledger.paused_at(server, noon(D(2024, 3, 1)))
        assert ledger.paused_at(server, noon(D(2024, 3, 10)))
        assert not ledger.paused_at(server, noon(D(2024, 3, 11)))
        assert not ledger.paused_at(server, noon(D(2024, 2, 29)))


def test_a_tenant_pause_crossing_new_year_charges_each_year_its_days() -> None:
    ledger = PauseLedger("contoso").grant_tenant(D(2024, 12, 20), 30, today=D(2024, 12, 1))
    assert (ledger.used(2024), ledger.used(2025)) == (12, 18)


def test_a_tenant_pause_needs_room_in_every_year_it_touches() -> None:
    ledger = PauseLedger("contoso").grant("EX02", D(2025, 3, 1), 80, today=D(2024, 12, 1))
    with pytest.raises(QuotaExceededError) as caught:
        ledger.grant_tenant(D(2024, 12, 20), 30, today=D(2024, 12, 1))
    assert str(caught.value) == (
        "pause of 30 days of tenant contoso needs 18 days in 2025, "
        "but only 10 of 90 remain (80 used)"
    )
    assert ledger.tenant_pauses == ()


def test_a_tenant_pause_may_start_today_but_not_before() -> None:
    assert PauseLedger("c").grant_tenant(TODAY, 1, today=TODAY).used(2024) == 1
    with pytest.raises(PauseInPastError):
        PauseLedger("c").grant_tenant(TODAY - dt.timedelta(days=1), 5, today=TODAY)


@pytest.mark.parametrize("days", [0, -1, True, 1.5])
def test_a_tenant_pause_lasts_at_least_one_whole_day(days: object) -> None:
    with pytest.raises(InvalidPauseError):
        PauseLedger("c").grant_tenant(TODAY, days, today=TODAY)  # type: ignore[arg-type]


def test_grant_tenant_wants_dates_not_datetimes() -> None:
    with pytest.raises(InvalidPauseError):
        PauseLedger("c").grant_tenant(noon(TODAY), 1, today=TODAY)
    with pytest.raises(InvalidPauseError):
        PauseLedger("c").grant_tenant(TODAY, 1, today=noon(TODAY))


# --- create or extend --------------------------------------------------------------------


def test_an_overlapping_tenant_pause_extends_the_one_granted_and_charges_only_new_days() -> None:
    ledger = PauseLedger("contoso").grant_tenant(D(2024, 3, 1), 10, today=TODAY)
    ledger = ledger.grant_tenant(D(2024, 3, 5), 10, today=TODAY)  # 5th..14th: 4 new days
    assert ledger.tenant_pauses == (TenantPause(D(2024, 3, 1), 14),)
    assert ledger.used(2024) == 14


def test_an_adjoining_tenant_pause_extends_the_one_granted() -> None:
    ledger = PauseLedger("contoso").grant_tenant(D(2024, 3, 1), 10, today=TODAY)
    ledger = ledger.grant_tenant(D(2024, 3, 11), 5, today=TODAY)
    assert ledger.tenant_pauses == (TenantPause(D(2024, 3, 1), 15),)
    assert ledger.used(2024) == 15


def test_a_tenant_pause_inside_the_one_granted_changes_nothing() -> None:
    ledger = PauseLedger("contoso").grant_tenant(D(2024, 3, 1), 10, today=TODAY)
    assert ledger.grant_tenant(D(2024, 3, 2), 3, today=TODAY) == ledger


def test_a_tenant_pause_bridging_two_merges_them_into_one() -> None:
    ledger = PauseLedger("contoso").grant_tenant(D(2024, 3, 1), 5, today=TODAY)
    ledger = ledger.grant_tenant(D(2024, 3, 20), 5, today=TODAY)
    assert ledger.used(2024) == 10
    ledger = ledger.grant_tenant(D(2024, 3, 4), 20, today=TODAY)  # to 23 March
    assert ledger.tenant_pauses == (TenantPause(D(2024, 3, 1), 24),)
    assert ledger.used(2024) == 24


def test_extending_a_running_tenant_pause_from_today_charges_only_the_new_days() -> None:
    ledger = PauseLedger("contoso").grant_tenant(D(2024, 3, 1), 10, today=D(2024, 3, 1))
    ledger = ledger.grant_tenant(D(2024, 3, 5), 30, today=D(2024, 3, 5))
    assert ledger.tenant_pauses == (TenantPause(D(2024, 3, 1), 34),)
    assert ledger.used(2024) == 34


# --- tenant pauses and server pauses -----------------------------------------------------


def test_a_tenant_pause_over_server_pauses_refunds_their_days() -> None:
    ledger = PauseLedger("contoso")
    ledger = ledger.grant("EX01", D(2024, 3, 1), 10, today=TODAY)
    ledger = ledger.grant("EX02", D(2024, 3, 1), 10, today=TODAY)
    ledger = ledger.grant("EX03", D(2024, 3, 1), 10, today=TODAY)
    assert ledger.used(2024) == 30
    ledger = ledger.grant_tenant(D(2024, 3, 1), 10, today=TODAY)
    # The same ten days now cost 10, not 30: 20 days come back.
    assert ledger.used(2024) == 10
    assert ledger.remaining(2024) == 80
    assert ledger.pauses == ()
    for server in ("EX01", "EX02", "EX03"):
        assert ledger.paused_at(server, noon(D(2024, 3, 5)))


def test_a_tenant_pause_keeps_the_server_pause_days_outside_it() -> None:
    ledger = PauseLedger("contoso").grant("EX01", D(2024, 3, 1), 20, today=TODAY)  # to 20th
    ledger = ledger.grant_tenant(D(2024, 3, 6), 5, today=TODAY)  # 6th..10th
    assert ledger.pauses == (Pause("EX01", D(2024, 3, 1), 5), Pause("EX01", D(2024, 3, 11), 10))
    assert ledger.used(2024) == 20
    assert all(ledger.paused_at("EX01", noon(D(2024, 3, n))) for n in range(1, 21))
    assert not ledger.paused_at("EX01", noon(D(2024, 3, 21)))


def test_a_tenant_pause_quota_check_counts_the_refund() -> None:
    ledger = PauseLedger("contoso", quota_days=20)
    ledger = ledger.grant("EX01", D(2024, 3, 1), 10, today=TODAY)
    ledger = ledger.grant("EX02", D(2024, 3, 1), 10, today=TODAY)
    assert ledger.remaining(2024) == 0
    # Ten tenant days over those twenty server days cost ten: granted with room to spare.
    ledger = ledger.grant_tenant(D(2024, 3, 1), 10, today=TODAY)
    assert ledger.remaining(2024) == 10


def test_a_server_pause_inside_a_tenant_pause_is_refused_naming_it() -> None:
    ledger = PauseLedger("contoso").grant_tenant(D(2024, 3, 1), 10, today=TODAY)
    for start, days in ((D(2024, 3, 5), 1), (D(2024, 2, 20), 11), (D(2024, 3, 10), 30)):
        with pytest.raises(PauseConflictError) as caught:
            ledger.grant("EX01", start, days, today=TODAY)
        assert "tenant pause of contoso from 2024-03-01 to 2024-03-10" in str(caught.value)
    # The days just before and after are free.
    ledger = ledger.grant("EX01", D(2024, 2, 20), 10, today=TODAY)
    ledger = ledger.grant("EX01", D(2024, 3, 11), 10, today=TODAY)
    assert ledger.used(2024) == 30


def test_pauses_for_lists_own_pauses_and_covering_adds_the_tenant_pauses() -> None:
    ledger = PauseLedger("contoso").grant("EX01", D(2024, 2, 1), 5, today=TODAY)
    ledger = ledger.grant_tenant(D(2024, 3, 1), 10, today=TODAY)
    assert ledger.pauses_for("EX01") == (Pause("EX01", D(2024, 2, 1), 5),)
    assert ledger.covering("EX01") == (
        Pause("EX01", D(2024, 2, 1), 5),
        Pause("EX01", D(2024, 3, 1), 10),
    )
    assert ledger.covering("EX02") == (Pause("EX02", D(2024, 3, 1), 10),)


def test_a_ledger_with_a_server_pause_inside_a_tenant_pause_cannot_be_built() -> None:
    with pytest.raises(PauseConflictError):
        PauseLedger(
            "contoso",
            pauses=(Pause("EX01", D(2024, 3, 10), 5),),
            tenant_pauses=(TenantPause(D(2024, 3, 1), 10),),
        )


def test_a_ledger_whose_tenant_pauses_are_above_quota_cannot_be_built() -> None:
    with pytest.raises(QuotaExceededError):
        PauseLedger("contoso", 5, tenant_pauses=(TenantPause(D(2024, 3, 1), 6),))


def test_a_ledger_merges_overlapping_tenant_pauses_given_to_it() -> None:
    ledger = PauseLedger(
        "contoso",
        tenant_pauses=(TenantPause(D(2024, 3, 5), 10), TenantPause(D(2024, 3, 1), 5)),
    )
    assert ledger.tenant_pauses == (TenantPause(D(2024, 3, 1), 14),)
    assert ledger.used(2024) == 14


def test_a_ledger_holds_only_tenant_pause_values_as_tenant_pauses() -> None:
    with pytest.raises(InvalidPauseError):
        PauseLedger("c", tenant_pauses=(Pause("EX01", TODAY, 1),))  # type: ignore[arg-type]


# --- ending ------------------------------------------------------------------------------


def test_ending_a_running_tenant_pause_keeps_today_and_returns_the_rest() -> None:
    ledger = PauseLedger("contoso").grant_tenant(D(2024, 3, 1), 30, today=D(2024, 3, 1))
    ended = ledger.end_tenant(today=D(2024, 3, 10))
    assert ended.tenant_pauses == (TenantPause(D(2024, 3, 1), 10),)
    assert ended.used(2024) == 10
    assert ended.paused_at("EX01", noon(D(2024, 3, 10)))
    assert not ended.paused_at("EX01", noon(D(2024, 3, 11)))


def test_ending_a_future_tenant_pause_returns_all_its_days() -> None:
    ledger = PauseLedger("contoso").grant_tenant(D(2024, 3, 1), 30, today=TODAY)
    ended = ledger.end_tenant(today=TODAY)
    assert ended.tenant_pauses == ()
    assert ended.remaining(2024) == 90


def test_ending_tenant_pauses_leaves_server_pauses_and_past_ones_alone() -> None:
    ledger = PauseLedger("contoso").grant_tenant(D(2024, 1, 5), 5, today=TODAY)
    ledger = ledger.grant("EX01", D(2024, 2, 1), 5, today=TODAY)
    ledger = ledger.grant_tenant(D(2024, 3, 1), 5, today=TODAY)
    ended = ledger.end_tenant(today=D(2024, 1, 20))
    assert ended.tenant_pauses == (TenantPause(D(2024, 1, 5), 5),)
    assert ended.pauses == ledger.pauses
    assert ended.used(2024) == 10


def test_ending_with_no_current_or_future_tenant_pause_is_a_no_op() -> None:
    ledger = PauseLedger("contoso").grant_tenant(D(2024, 1, 5), 5, today=TODAY)
    assert ledger.end_tenant(today=D(2024, 1, 10)) is ledger
    assert PauseLedger("c").end_tenant(today=TODAY) == PauseLedger("c")


def test_ending_a_server_pause_leaves_the_tenant_pause() -> None:
    ledger = PauseLedger("contoso").grant_tenant(D(2024, 3, 1), 5, today=TODAY)
    assert ledger.end("EX01", today=D(2024, 3, 2)) is ledger
    assert ledger.paused_at("EX01", noon(D(2024, 3, 3)))


# --- serialisation -----------------------------------------------------------------------

# A ledger row as tbes wrote it before tenant pauses existed, typed out by hand.
TODAYS_ROW = (
    '{"pauses":[{"days":30,"server_id":"EX01","start":"2024-02-01"},'
    '{"days":60,"server_id":"EX02","start":"2024-04-01"}],'
    '"quota_days":90,"tenant":"contoso"}'
)


def test_a_ledger_stored_before_tenant_pauses_still_loads() -> None:
    ledger = loads(TODAYS_ROW, PauseLedger)
    assert ledger == PauseLedger(
        "contoso",
        90,
        (Pause("EX01", D(2024, 2, 1), 30), Pause("EX02", D(2024, 4, 1), 60)),
    )
    assert ledger.tenant_pauses == ()
    assert ledger.used(2024) == 90


def test_a_ledger_without_tenant_pauses_is_stored_as_before() -> None:
    # Byte for byte, so nodes still running the previous release read it.
    assert dumps(loads(TODAYS_ROW, PauseLedger)) == TODAYS_ROW


def test_a_ledger_with_tenant_pauses_serialises_them_and_round_trips() -> None:
    ledger = PauseLedger("contoso").grant("EX01", D(2024, 2, 1), 5, today=TODAY)
    ledger = ledger.grant_tenant(D(2024, 3, 1), 10, today=TODAY)
    text = dumps(ledger)
    assert text == (
        '{"pauses":[{"days":5,"server_id":"EX01","start":"2024-02-01"}],'
        '"quota_days":90,"tenant":"contoso",'
        '"tenant_pauses":[{"days":10,"start":"2024-03-01"}]}'
    )
    assert loads(text, PauseLedger) == ledger


def test_a_stored_ledger_breaking_the_tenant_pause_rules_does_not_load() -> None:
    text = (
        '{"pauses":[{"days":5,"server_id":"EX01","start":"2024-03-03"}],'
        '"quota_days":90,"tenant":"contoso",'
        '"tenant_pauses":[{"days":10,"start":"2024-03-01"}]}'
    )
    with pytest.raises(InvalidValueError, match=r"PauseConflictError.*tenant pause of contoso"):
        loads(text, PauseLedger)


# --- what decide() makes of it -----------------------------------------------------------

DETECTED = dt.datetime(2024, 2, 1, 9, 0, tzinfo=UTC)


def _state(pauses: tuple[Pause, ...]) -> ServerState:
    return ServerState(
        "EX01", "contoso", None, Compliance.OUTDATED, DETECTED, DETECTED, None, pauses
    )


@pytest.mark.parametrize(
    "now",
    [
        dt.datetime(2024, 2, 29, 23, 59, tzinfo=UTC),
        dt.datetime(2024, 3, 1, 0, 0, tzinfo=UTC),
        dt.datetime(2024, 3, 5, 12, 7, tzinfo=UTC),
        dt.datetime(2024, 3, 11, 0, 0, tzinfo=UTC),
        dt.datetime(2024, 4, 20, 10, 30, tzinfo=UTC),
    ],
)
def test_decide_freezes_the_clock_under_a_tenant_pause_as_under_a_server_pause(
    now: dt.datetime,
) -> None:
    tenant = PauseLedger("contoso").grant_tenant(D(2024, 3, 1), 10, today=TODAY)
    own = PauseLedger("contoso").grant("EX01", D(2024, 3, 1), 10, today=TODAY)
    under_tenant = decide(_state(tenant.covering("EX01")), now)
    assert under_tenant == decide(_state(own.covering("EX01")), now)
    paused = D(2024, 3, 1) <= now.date() < D(2024, 3, 11)
    assert under_tenant.paused is paused
    if paused:
        assert under_tenant.action is Action.ACCEPT
        # The clock stood still from 1 March 00:00.
        assert under_tenant.elapsed == dt.datetime(2024, 3, 1, tzinfo=UTC) - DETECTED
    elif now.date() >= D(2024, 3, 11):
        assert under_tenant.elapsed == now - DETECTED - dt.timedelta(days=10)


# --- what a refused ledger says ----------------------------------------------------------


def test_a_ledger_refused_at_construction_names_the_days_not_a_python_repr() -> None:
    # Reaches people through a store holding a ledger written by hand or by another version.
    with pytest.raises(PauseConflictError) as overlap:
        PauseLedger(
            "contoso", 90, (Pause("EX01", D(2024, 3, 1), 5), Pause("EX01", D(2024, 3, 3), 5))
        )
    assert str(overlap.value) == (
        "pauses of EX01 overlap: from 2024-03-01 to 2024-03-05 and from 2024-03-03 to 2024-03-07"
    )
    with pytest.raises(PauseConflictError) as shared:
        PauseLedger(
            "contoso", 90, (Pause("EX01", D(2024, 3, 1), 5),), (TenantPause(D(2024, 3, 5), 2),)
        )
    assert "Pause(" not in str(shared.value)
    assert "EX01 from 2024-03-01 to 2024-03-05" in str(shared.value)
    assert "tenant pause of contoso from 2024-03-05 to 2024-03-06" in str(shared.value)
