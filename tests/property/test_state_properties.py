"""Properties of observe(): time never runs backwards, NOT_APPLICABLE buys nothing, relapses."""

from __future__ import annotations

import datetime as dt

import attrs
from hypothesis import given
from hypothesis import strategies as st
from strategies import builds, instants

from tbes.compliance import Assessment, Compliance
from tbes.decision import Action, decide
from tbes.ledger import Pause
from tbes.policy import DEFAULT_POLICY, Policy
from tbes.state import ServerState, observe
from tbes.version import ExchangeBuild, Product

DAY = dt.timedelta(days=1)
NON_COMPLIANT = (Compliance.OUTDATED, Compliance.UNSUPPORTED)


Observation = tuple[Compliance, ExchangeBuild | None, dt.datetime]

observations: st.SearchStrategy[Observation] = st.tuples(
    st.sampled_from(Compliance), st.none() | builds, instants
)
# Observations close together in time, so that relapse windows and reordering both matter.
nearby: st.SearchStrategy[list[Observation]] = st.builds(
    lambda start, steps: [(c, b, start + offset) for c, b, offset in steps],
    instants,
    st.lists(
        st.tuples(
            st.sampled_from(Compliance),
            st.none() | builds,
            st.timedeltas(-10 * DAY, 120 * DAY),
        ),
        max_size=8,
    ),
)
relapse_windows = st.timedeltas(dt.timedelta(0), 90 * DAY)


def step(state: ServerState | None, seen: Observation, policy: Policy) -> ServerState:
    status, build, at = seen
    new = observe(
        state,
        server_id="EX01",
        tenant="contoso",
        assessment=Assessment(status, Product.UNKNOWN, None, (), status.value),
        build=build,
        at=at,
        policy=policy,
    )
    # The result must pass the class's checks and equal the state built afresh from its fields.
    attrs.validate(new)
    rebuilt = ServerState(*(getattr(new, f.name) for f in attrs.fields(ServerState)))
    assert rebuilt == new
    return new


def not_before(new: dt.datetime | None, old: dt.datetime | None) -> bool:
    return old is None or new is None or new >= old


@given(st.one_of(st.lists(observations, max_size=8), nearby), relapse_windows)
def test_no_time_field_ever_moves_backwards(
    sequence: list[Observation], window: dt.timedelta
) -> None:
    policy = Policy(relapse_window=window)
    state: ServerState | None = None
    for seen in sequence:
        new = step(state, seen, policy)
        if state is not None:
            assert state.last_seen is not None
            assert new.last_seen is not None
            assert new.last_seen >= state.last_seen
            assert not_before(new.first_detected, state.first_detected)
            assert not_before(new.compliant_since, state.compliant_since)
            if state.first_detected is not None:
                assert new.first_detected is not None  # an episode once seen is never forgotten
        for instant in (new.first_detected, new.compliant_since):
            assert not_before(new.last_seen, instant)  # nothing is dated after last_seen
        state = new


@given(st.one_of(st.lists(observations, max_size=8), nearby), builds, instants)
def test_not_applicable_changes_nothing_but_last_seen(
    sequence: list[Observation], forged: ExchangeBuild, at: dt.datetime
) -> None:
    state: ServerState | None = None
    for seen in sequence:
        state = step(state, seen, DEFAULT_POLICY)
    assert state is not None or not sequence
    if state is None:
        return
    after = step(state, (Compliance.NOT_APPLICABLE, forged, at), DEFAULT_POLICY)
    assert attrs.evolve(after, last_seen=state.last_seen) == state


@given(st.one_of(st.lists(observations, max_size=8), nearby))
def test_observe_never_changes_pauses(sequence: list[Observation]) -> None:
    pauses = (Pause("EX01", dt.date(2026, 1, 1), 10), Pause("EX01", dt.date(2027, 6, 1), 3))
    state = ServerState(
        "EX01", "contoso", None, Compliance.NOT_APPLICABLE, None, None, None, pauses
    )
    for seen in sequence:
        state = step(state, seen, DEFAULT_POLICY)
        assert state.pauses == pauses


@given(st.lists(observations, max_size=8), observations)
def test_episode_follows_the_latest_applicable_status(
    sequence: list[Observation], last: Observation
) -> None:
    state: ServerState | None = None
    for seen in sequence:
        state = step(state, seen, DEFAULT_POLICY)
    after = step(state, last, DEFAULT_POLICY)
    if last[0] in NON_COMPLIANT:
        assert after.in_episode
        assert (after.status, after.build) == (last[0], last[1])
    elif last[0] is Compliance.COMPLIANT:
        assert not after.in_episode
        assert (after.status, after.build) == (last[0], last[1])


@given(instants, st.timedeltas(dt.timedelta(0), 400 * DAY), relapse_windows, st.data())
def test_relapse_within_the_window_resumes_and_later_starts_over(
    first: dt.datetime, episode: dt.timedelta, window: dt.timedelta, data: st.DataObject
) -> None:
    policy = Policy(relapse_window=window)
    running = step(None, (Compliance.OUTDATED, None, first), policy)
    healed = step(running, (Compliance.COMPLIANT, None, first + episode), policy)
    assert healed.compliant_since == first + episode
    after = data.draw(st.timedeltas(dt.timedelta(0), window + 60 * DAY))
    at = first + episode + after
    relapsed = step(healed, (Compliance.UNSUPPORTED, None, at), policy)
    assert relapsed.compliant_since is None
    assert relapsed.first_detected == (first if after <= window else at)


@given(st.lists(observations, max_size=8), instants, st.timedeltas(dt.timedelta(0), 900 * DAY))
def test_compliance_stops_enforcement_for_good(
    sequence: list[Observation], at: dt.datetime, later: dt.timedelta
) -> None:
    state: ServerState | None = None
    for seen in sequence:
        state = step(state, seen, DEFAULT_POLICY)
    healed = step(state, (Compliance.COMPLIANT, None, at), DEFAULT_POLICY)
    decision = decide(healed, max(at, healed.last_seen or at) + later)
    assert decision.action is Action.ACCEPT
    assert decision.stage is None


@given(st.lists(observations, max_size=8), st.sampled_from(NON_COMPLIANT), st.data())
def test_a_first_sighting_in_order_starts_the_episode_at_that_instant(
    sequence: list[Observation], status: Compliance, data: st.DataObject
) -> None:
    state: ServerState | None = None
    for seen in sequence:
        state = step(state, seen, DEFAULT_POLICY)
    if state is not None and state.in_episode:
        return
    floor = None if state is None else state.last_seen
    at = data.draw(instants)
    if floor is not None:
        at = floor + data.draw(st.timedeltas(dt.timedelta(0), 900 * DAY))
    if state is not None and state.compliant_since is not None:
        at = max(at, state.compliant_since + DEFAULT_POLICY.relapse_window + DAY)
    assert step(state, (status, None, at), DEFAULT_POLICY).first_detected == at
