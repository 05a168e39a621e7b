"""Server state and observe(): episodes start, end, resume and never run backwards."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest

from tbes.compliance import Assessment, Compliance
from tbes.decision import Action, decide
from tbes.errors import NaiveDatetimeError
from tbes.ledger import Pause
from tbes.policy import DEFAULT_POLICY, Policy
from tbes.serde import dumps, loads
from tbes.state import ServerState, observe
from tbes.version import ExchangeBuild, Product

UTC = dt.UTC
T0 = dt.datetime(2025, 11, 3, 9, 0, tzinfo=UTC)
OLD = ExchangeBuild(15, 1, 2507, 39)  # Exchange 2016 CU23 before the October 2025 SU
NEW = ExchangeBuild(15, 1, 2507, 61)
FORGED = ExchangeBuild(16, 0, 0, 0)


def judged(status: Compliance) -> Assessment:
    """An assessment with ``status``: observe() reads nothing else."""
    return Assessment(status, Product.EXCHANGE_2016, None, (), f"judged {status.value}")


OUTDATED = judged(Compliance.OUTDATED)
UNSUPPORTED = judged(Compliance.UNSUPPORTED)
COMPLIANT = judged(Compliance.COMPLIANT)
NOT_APPLICABLE = judged(Compliance.NOT_APPLICABLE)


def see(
    state: ServerState | None,
    assessment: Assessment,
    build: ExchangeBuild | None,
    at: dt.datetime,
    policy: Policy = DEFAULT_POLICY,
) -> ServerState:
    return observe(
        state,
        server_id="EX01",
        tenant="contoso",
        assessment=assessment,
        build=build,
        at=at,
        policy=policy,
    )


def days(n: float) -> dt.timedelta:
    return dt.timedelta(days=n)


# ---- ServerState ----------------------------------------------------------------------


def test_state_stores_instants_in_utc() -> None:
    berlin = dt.timezone(dt.timedelta(hours=1))
    state = ServerState(
        "EX01", "contoso", OLD, Compliance.OUTDATED, T0.astimezone(berlin), T0, None
    )
    assert state.first_detected == T0
    assert state.first_detected is not None
    assert state.first_detected.tzinfo is UTC


@pytest.mark.parametrize("field", ["first_detected", "last_seen", "compliant_since"])
def test_state_refuses_naive_instants(field: str) -> None:
    fields: dict[str, dt.datetime | None] = {
        "first_detected": T0,
        "last_seen": T0,
        "compliant_since": None,
    }
    fields[field] = dt.datetime(2025, 11, 3, 9, 0)
    with pytest.raises(NaiveDatetimeError):
        ServerState(
            "EX01",
            "contoso",
            OLD,
            Compliance.OUTDATED,
            fields["first_detected"],
            fields["last_seen"],
            fields["compliant_since"],
        )


@pytest.mark.parametrize(("server_id", "tenant"), [("", "contoso"), ("EX01", "")])
def test_state_refuses_empty_ids(server_id: str, tenant: str) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        ServerState(server_id, tenant, OLD, Compliance.OUTDATED, T0, T0, None)


def test_state_refuses_another_servers_pause() -> None:
    with pytest.raises(ValueError, match="cannot hold a pause of EX02"):
        ServerState(
            "EX01", "t", OLD, Compliance.OUTDATED, T0, T0, None, (Pause("EX02", T0.date(), 3),)
        )


def test_state_keeps_pauses_in_order_of_start() -> None:
    late, early = Pause("EX01", dt.date(2026, 2, 1), 3), Pause("EX01", dt.date(2026, 1, 1), 3)
    state = ServerState("EX01", "t", OLD, Compliance.OUTDATED, T0, T0, None, (late, early))
    assert state.pauses == (early, late)


@pytest.mark.parametrize("stage", [0, -1, True, "3"])
def test_state_refuses_a_notified_stage_that_is_no_stage_number(stage: object) -> None:
    with pytest.raises(ValueError, match="notified_stage"):
        ServerState("EX01", "t", OLD, Compliance.OUTDATED, T0, T0, None, (), stage)  # type: ignore[arg-type]


def test_state_round_trips_through_serde_and_decides_alike() -> None:
    state = ServerState(
        "EX01", "t", OLD, Compliance.OUTDATED, T0, T0, None, (Pause("EX01", T0.date(), 3),), 2
    )
    back = loads(dumps(state), ServerState)
    assert back == state
    now = T0 + days(45)
    assert decide(back, now) == decide(state, now)


# ---- observe: episodes ----------------------------------------------------------------


def test_first_outdated_sighting_starts_an_episode() -> None:
    state = see(None, OUTDATED, OLD, T0)
    assert (state.first_detected, state.last_seen, state.compliant_since) == (T0, T0, None)
    assert (state.build, state.status) == (OLD, Compliance.OUTDATED)
    assert state.in_episode


def test_unsupported_counts_as_non_compliant() -> None:
    assert see(None, UNSUPPORTED, ExchangeBuild(15, 0, 1497, 48), T0).first_detected == T0


def test_first_compliant_sighting_starts_no_episode() -> None:
    state = see(None, COMPLIANT, NEW, T0)
    assert (state.first_detected, state.compliant_since, state.last_seen) == (None, None, T0)
    assert not state.in_episode


def test_a_running_episode_keeps_its_start() -> None:
    state = see(see(None, OUTDATED, OLD, T0), OUTDATED, OLD, T0 + days(10))
    assert state.first_detected == T0
    assert state.last_seen == T0 + days(10)


def test_compliance_during_an_episode_stops_enforcement_at_once() -> None:
    running = see(None, OUTDATED, OLD, T0)
    healed = see(running, COMPLIANT, NEW, T0 + days(70))
    assert healed.compliant_since == T0 + days(70)
    assert healed.first_detected == T0
    assert (healed.build, healed.status) == (NEW, Compliance.COMPLIANT)
    assert decide(running, T0 + days(70) + dt.timedelta(minutes=14)).action is Action.BLOCK
    assert decide(healed, T0 + days(70) + dt.timedelta(minutes=14)).action is Action.ACCEPT


def test_later_compliant_sightings_keep_the_first_compliant_instant() -> None:
    healed = see(see(None, OUTDATED, OLD, T0), COMPLIANT, NEW, T0 + days(70))
    assert see(healed, COMPLIANT, NEW, T0 + days(80)).compliant_since == T0 + days(70)


# ---- observe: NOT_APPLICABLE ----------------------------------------------------------


def test_a_forged_build_never_ends_an_episode() -> None:
    running = see(None, OUTDATED, OLD, T0)
    forged = see(running, NOT_APPLICABLE, FORGED, T0 + days(40))
    assert forged == attrs.evolve(running, last_seen=T0 + days(40))
    assert (forged.build, forged.status) == (OLD, Compliance.OUTDATED)
    assert forged.compliant_since is None


def test_a_cloud_build_never_starts_an_episode() -> None:
    state = see(None, NOT_APPLICABLE, ExchangeBuild(15, 20, 8835, 29), T0)
    assert (state.build, state.status, state.first_detected) == (
        None,
        Compliance.NOT_APPLICABLE,
        None,
    )
    assert state.last_seen == T0


def test_not_applicable_after_remediation_keeps_the_compliant_build() -> None:
    healed = see(see(None, OUTDATED, OLD, T0), COMPLIANT, NEW, T0 + days(5))
    after = see(healed, NOT_APPLICABLE, FORGED, T0 + days(6))
    assert (after.build, after.status, after.compliant_since) == (
        NEW,
        Compliance.COMPLIANT,
        T0 + days(5),
    )


# ---- observe: relapse -----------------------------------------------------------------


def _healed_with_notice() -> ServerState:
    running = attrs.evolve(see(None, OUTDATED, OLD, T0), notified_stage=3)
    return see(running, COMPLIANT, NEW, T0 + days(45))


def test_relapse_within_the_window_resumes_the_old_episode() -> None:
    relapsed = see(_healed_with_notice(), OUTDATED, OLD, T0 + days(45 + 30))
    assert relapsed.first_detected == T0
    assert relapsed.compliant_since is None
    assert relapsed.notified_stage == 3
    # Day 75 of the old episode: stage 6, not stage 1 of a new one.
    decision = decide(relapsed, T0 + days(75))
    assert decision.stage is not None
    assert decision.stage.number == 6


def test_relapse_after_the_window_starts_a_new_episode() -> None:
    at = T0 + days(45 + 30) + dt.timedelta(microseconds=1)
    relapsed = see(_healed_with_notice(), OUTDATED, OLD, at)
    assert relapsed.first_detected == at
    assert relapsed.compliant_since is None
    assert relapsed.notified_stage is None


def test_relapse_window_comes_from_the_policy() -> None:
    policy = Policy(relapse_window=dt.timedelta(0))
    at = T0 + days(45) + dt.timedelta(seconds=1)
    relapsed = see(_healed_with_notice(), OUTDATED, OLD, at, policy)
    assert relapsed.first_detected == at


# ---- observe: time never runs backwards ----------------------------------------------


def test_an_older_observation_does_not_move_last_seen_back() -> None:
    state = see(see(None, OUTDATED, OLD, T0 + days(2)), OUTDATED, OLD, T0 + days(1))
    assert state.last_seen == T0 + days(2)
    assert state.first_detected == T0 + days(2)


def test_an_older_observation_counts_as_made_at_last_seen() -> None:
    seen = see(None, COMPLIANT, NEW, T0 + days(10))
    state = see(seen, OUTDATED, OLD, T0 + days(9))
    assert state.first_detected == T0 + days(10)
    healed = see(state, COMPLIANT, NEW, T0 + days(3))
    assert healed.compliant_since == T0 + days(10)


def test_a_stale_relapse_is_measured_from_last_seen() -> None:
    healed = see(see(None, OUTDATED, OLD, T0), COMPLIANT, NEW, T0 + days(1))
    later = see(healed, COMPLIANT, NEW, T0 + days(40))
    # Made 20 days after remediation by its own clock, but the state already knows day 40.
    relapsed = see(later, OUTDATED, OLD, T0 + days(21))
    assert relapsed.first_detected == T0 + days(40)


# ---- observe: what it leaves alone and refuses --------------------------------------


def test_observe_never_changes_pauses() -> None:
    pauses = (Pause("EX01", dt.date(2025, 12, 1), 5),)
    state = attrs.evolve(see(None, OUTDATED, OLD, T0), pauses=pauses)
    for assessment in (OUTDATED, COMPLIANT, NOT_APPLICABLE, OUTDATED):
        state = see(state, assessment, OLD, T0 + days(50))
        assert state.pauses == pauses


def test_observe_refuses_another_servers_state() -> None:
    other = observe(None, server_id="EX02", tenant="contoso", assessment=OUTDATED, build=OLD, at=T0)
    with pytest.raises(ValueError, match="EX02"):
        see(other, OUTDATED, OLD, T0)


def test_observe_refuses_a_naive_instant() -> None:
    with pytest.raises(NaiveDatetimeError):
        see(None, OUTDATED, OLD, dt.datetime(2025, 11, 3, 9, 0))


def test_observe_stores_a_non_utc_instant_in_utc() -> None:
    state = see(None, OUTDATED, OLD, T0.astimezone(dt.timezone(-dt.timedelta(hours=5))))
    assert state.first_detected == T0
    assert state.first_detected is not None
    assert state.first_detected.tzinfo is UTC
