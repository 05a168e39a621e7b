"""Schedules of baselines, the rolling baseline and Microsoft's dated phases (issue 15 item 3).

Expected verdicts come from Microsoft's announcements and the observed report of May 2024
(the project's reference page on Microsoft's system, ``microsoft-tbes.md``), never from the
code under test.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tbes.adapters.config import parse_config
from tbes.baseline import Baseline
from tbes.catalog import Catalog
from tbes.compliance import Compliance, assess
from tbes.enforcer import Connection, Enforcer
from tbes.errors import AdapterConfigError, InvalidValueError, NaiveDatetimeError, PolicyError
from tbes.policy import PRESETS, ConnectorKind, Policy
from tbes.schedule import RollingBaseline, Schedule, Step
from tbes.store import MemoryStore
from tbes.version import ExchangeBuild, Product

CATALOG = Catalog.default()
UTC = dt.UTC
B = ExchangeBuild.parse
OK, OUT, UNSUP = Compliance.COMPLIANT, Compliance.OUTDATED, Compliance.UNSUPPORTED
DATA = Path(__file__).parent / "data"


def at(day: str, hour: int = 12) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def status(policy: Policy, build: str, instant: dt.datetime) -> Compliance:
    return assess(B(build), baseline=policy.baseline_at(instant), catalog=CATALOG).status


# ---- the observed report of May 2024 ---------------------------------------------------------

# Exchange 2016 CU23 SUs that the May 2024 report listed as recommended (Aug 2023 SU and newer).
MAY_2024_ACCEPTED = ["15.1.2507.31", "15.1.2507.32", "15.1.2507.34", "15.1.2507.35"]
MAY_2024_ACCEPTED += ["15.1.2507.37", "15.1.2507.39"]
MAY_2024_FLAGGED = ["15.1.2507.16", "15.1.2507.27"]  # Nov 2022 SU, Jun 2023 SU


@pytest.mark.parametrize("day", range(1, 32))
def test_every_day_of_may_2024_accepts_what_the_observed_report_accepted(day: int) -> None:
    policy = Policy.exchange_online(CATALOG)
    instant = dt.datetime(2024, 5, day, 23, 59, tzinfo=UTC)
    for build in MAY_2024_ACCEPTED:
        assert status(policy, build, instant) is OK, build
    for build in MAY_2024_FLAGGED:
        assert status(policy, build, instant) is OUT, build


def test_the_rolling_baseline_alone_matches_the_may_2024_report() -> None:
    rolling = RollingBaseline(CATALOG, months=9, unsupported=())
    baseline = rolling.at(at("2024-05-10"))
    assert baseline.minimum[Product.EXCHANGE_2016] == (B("15.1.2507.31"),)
    # A build of CU22, the line before CU23 that had no update since Nov 2022, is outdated.
    assert assess(B("15.1.2375.37"), baseline=baseline, catalog=CATALOG).status is OUT


# ---- Microsoft's phases ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "build", "expected"),
    [
        (at("2023-06-22", 23), "8.3.83.6", OK),  # Exchange 2007, the day before the first phase
        (dt.datetime(2023, 6, 23, tzinfo=UTC), "8.3.83.6", UNSUP),
        (at("2023-08-31", 23), "14.3.513.0", OK),  # Exchange 2010 until September 2023
        (dt.datetime(2023, 9, 1, tzinfo=UTC), "14.3.513.0", UNSUP),
        (at("2023-11-30", 23), "15.0.1497.48", OK),  # Exchange 2013 until December 2023
        (dt.datetime(2023, 12, 1, tzinfo=UTC), "15.0.1497.48", UNSUP),
        (at("2024-02-29", 23), "15.1.2507.16", OK),  # 2016 far behind, before March 2024
        (dt.datetime(2024, 3, 1, tzinfo=UTC), "15.1.2507.16", OUT),
        (at("2026-09-07", 23), "15.1.2507.55", OK),  # Apr25HU: rolling, frozen at end of support
        (dt.datetime(2026, 9, 8, tzinfo=UTC), "15.1.2507.55", OUT),  # below the Oct25SU
        (dt.datetime(2026, 9, 8, tzinfo=UTC), "15.1.2507.61", OK),
        (at("2026-10-01"), "15.2.2562.17", OK),  # Exchange SE is never in scope
    ],
)
def test_exchange_online_follows_the_phases(
    instant: dt.datetime, build: str, expected: Compliance
) -> None:
    assert status(Policy.exchange_online(CATALOG), build, instant) is expected


def test_the_final_step_is_off_by_default_and_passes_only_esu_builds_when_dated() -> None:
    later = at("2027-01-15")
    assert status(Policy.exchange_online(CATALOG), "15.1.2507.61", later) is OK
    final = Policy.exchange_online(CATALOG, final_step_from=dt.date(2027, 1, 4))
    assert status(final, "15.1.2507.61", at("2027-01-03")) is OK
    assert status(final, "15.1.2507.61", later) is OUT  # the Oct25SU, the last public one
    assert status(final, "15.1.2507.72", later) is OK  # Aug26SU, an ESU build
    assert status(final, "15.2.1748.49", later) is OK
    assert status(final, "15.2.1748.39", later) is OUT
    assert status(final, "15.2.2562.46", later) is OK  # SE


def test_exchange_online_is_a_preset_by_name_and_needs_its_catalog() -> None:
    assert "exchange_online" in PRESETS
    assert Policy.named("exchange_online", catalog=CATALOG) == Policy.exchange_online(CATALOG)
    with pytest.raises(PolicyError, match="catalog"):
        Policy.exchange_online(None)  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="final_step_from"):
        Policy.exchange_online(CATALOG, at("2027-01-01"))


# ---- schedules ------------------------------------------------------------------------------

A, Z = Baseline.exchange_online_2023(), Baseline.exchange_online_2026()


def test_a_plain_baseline_is_a_one_step_schedule() -> None:
    policy = Policy(baseline=Z)
    assert policy.baseline_at(at("1999-01-01")) is Z
    assert policy.schedule.baseline_at(at("2999-01-01")) == Z
    assert Policy(baseline=Schedule.constant(Z)).baseline_at(at("2024-01-01")) == Z


def test_a_schedule_puts_each_step_in_force_from_its_instant() -> None:
    switch = dt.datetime(2025, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    schedule = Schedule([(at("2024-01-01", 0), A), (switch, Z)])
    assert schedule.baseline_at(at("2023-12-31", 23)) == Baseline(minimum={}, unsupported=())
    assert schedule.baseline_at(at("2024-01-01", 0)) is A
    assert schedule.baseline_at(dt.datetime(2024, 12, 31, 22, 59, tzinfo=UTC)) is A
    assert schedule.baseline_at(dt.datetime(2024, 12, 31, 23, 0, tzinfo=UTC)) is Z


@pytest.mark.parametrize(
    ("steps", "error", "message"),
    [
        ([], InvalidValueError, "at least one step"),
        ([(at("2025-01-01"), A), (at("2024-01-01"), Z)], InvalidValueError, "sorted"),
        ([(at("2025-01-01"), A), (at("2025-01-01"), Z)], InvalidValueError, "sorted"),
        ([(dt.datetime(2025, 1, 1), A)], NaiveDatetimeError, "timezone-aware"),
        ([(dt.date(2025, 1, 1), A)], InvalidValueError, "effective_from"),
        ([(at("2025-01-01"), "strict")], InvalidValueError, "Baseline"),
        ([at("2025-01-01")], InvalidValueError, "pair"),
        (A, InvalidValueError, "sequence"),
    ],
)
def test_a_schedule_refuses_what_is_no_sorted_non_empty_sequence_of_aware_steps(
    steps: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Schedule(steps)  # type: ignore[arg-type]


def test_a_policy_refuses_a_baseline_that_is_neither_baseline_nor_schedule() -> None:
    with pytest.raises(PolicyError, match="Baseline or a Schedule"):
        Policy(baseline=[Step(at("2025-01-01"), A)])  # type: ignore[arg-type]


# ---- the baseline of a day, and the enforcer's verdict cache --------------------------------


def test_the_rolling_baseline_is_one_object_per_utc_day() -> None:
    rolling = RollingBaseline(CATALOG, months=9, unsupported=())
    morning = rolling.at(dt.datetime(2024, 5, 10, 0, 1, tzinfo=UTC))
    evening = dt.datetime(2024, 5, 10, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-1)))
    assert rolling.at(at("2024-05-10", 23)) is morning
    assert rolling.at(evening) is not morning  # 00:30 UTC on the 11th: another day
    assert rolling.at(evening) == morning  # ... with the same minimums that month


def test_the_enforcer_never_serves_a_verdict_of_another_days_baseline() -> None:
    # 15.1.2507.31 (Aug 2023 SU) meets the nine-month rule through May 2024; from 1 June the
    # window starts in September 2023 and the oldest CU23 update in it is the Oct 2023 SU.
    clock = [dt.datetime(2024, 5, 31, 23, 59, tzinfo=UTC)]
    store = MemoryStore()
    enforcer = Enforcer(store, Policy.exchange_online(CATALOG), CATALOG, clock=lambda: clock[0])
    server = Connection("ex01.fabrikam.example", "fabrikam", ConnectorKind.ON_PREMISES)
    received = [
        "from EXMBX01.fabrikam.local (10.0.0.7) by ex01.fabrikam.example (192.0.2.10) with "
        "Microsoft SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id "
        "15.1.2507.31; Fri, 31 May 2024 23:59:00 +0000"
    ]
    enforcer.check(server, received)
    assert store.get("ex01.fabrikam.example").value.status is OK  # type: ignore[union-attr]
    clock[0] = dt.datetime(2024, 6, 1, 0, 1, tzinfo=UTC)
    enforcer.check(server, received)
    state = store.get("ex01.fabrikam.example").value  # type: ignore[union-attr]
    assert state.status is OUT
    assert state.first_detected == clock[0]  # the episode starts under the baseline then in force


# ---- the operator dates the final step in the adapters' configuration ----------------------


def test_the_adapters_configuration_dates_the_final_step() -> None:
    later = at("2027-02-01")
    plain = parse_config('tenant = "contoso"\n')
    assert plain.final_step_from is None
    assert status(plain.make_policy(CATALOG), "15.1.2507.61", later) is OK  # off by default
    dated = parse_config('tenant = "contoso"\nfinal_step_from = 2027-01-04\n')
    policy = dated.make_policy(CATALOG)
    assert policy == Policy.exchange_online(CATALOG, final_step_from=dt.date(2027, 1, 4))
    assert status(policy, "15.1.2507.61", later) is OUT  # the Oct25SU, the last public one
    assert status(policy, "15.1.2507.72", later) is OK  # an ESU build


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('final_step_from = "2027-01-04"', "final_step_from must be a date"),
        ("final_step_from = 2027-01-04T00:00:00Z", "final_step_from must be a date"),
        (
            'policy = "exchange_online_2026"\nfinal_step_from = 2027-01-04',
            "only policy 'exchange_online' has a final step",
        ),
    ],
)
def test_a_final_step_that_is_no_date_or_of_another_policy_is_refused(
    toml: str, message: str
) -> None:
    with pytest.raises(AdapterConfigError, match=message):
        parse_config(toml)
