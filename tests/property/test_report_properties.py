"""Properties of forecasts and report rows: contiguous timelines that agree with decide()."""

from __future__ import annotations

import datetime as dt
import itertools

import attrs
from hypothesis import given
from hypothesis import strategies as st
from strategies import stage_tables

from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.decision import decide
from tbes.exemption import Exemption
from tbes.ledger import Pause
from tbes.policy import Policy
from tbes.report import (
    ReportRow,
    Segment,
    forecast,
    horizon,
    report_row,
    report_rows,
    report_values,
)
from tbes.serde import converter
from tbes.stages import DEFAULT_STAGE_TABLE
from tbes.state import ServerState
from tbes.version import ExchangeBuild

US = dt.timedelta(microseconds=1)
SERVER = "ex16.contoso.example"
CATALOG = Catalog.default()

policies = st.builds(
    Policy,
    stage_table=st.one_of(st.just(DEFAULT_STAGE_TABLE), stage_tables(max_stages=6)),
    pause_freezes_clock=st.booleans(),
)


@st.composite
def server_states(draw: st.DrawFn) -> ServerState:
    """A server in an episode (or healed from one), with a few pauses around its detection."""
    first = draw(
        st.datetimes(
            min_value=dt.datetime(2025, 1, 1),
            max_value=dt.datetime(2028, 12, 31),
            timezones=st.just(dt.UTC),
        )
    )
    pauses: list[Pause] = []
    cursor = first.date() - dt.timedelta(days=draw(st.integers(0, 40)))
    for _ in range(draw(st.integers(0, 3))):
        start = cursor + dt.timedelta(days=draw(st.integers(0, 60)))
        days = draw(st.integers(1, 45))
        pauses.append(Pause(SERVER, start, days))
        cursor = start + dt.timedelta(days=days)  # touching is allowed, overlapping is not
    healed = draw(st.none() | st.timedeltas(dt.timedelta(0), dt.timedelta(days=200)))
    return ServerState(
        server_id=SERVER,
        tenant="contoso",
        build=ExchangeBuild(15, 1, 2507, 39),
        status=Compliance.COMPLIANT if healed is not None else Compliance.OUTDATED,
        first_detected=first,
        last_seen=first,
        compliant_since=None if healed is None else first + healed,
        pauses=tuple(pauses),
    )


spans = st.timedeltas(dt.timedelta(minutes=1), dt.timedelta(days=700))


def _episode_state(state: ServerState, at: dt.datetime) -> ServerState:
    """The state decide() judged ``at`` with: before remediation, the running episode."""
    healed = state.compliant_since
    if healed is not None and at < healed:
        return ServerState(
            state.server_id,
            state.tenant,
            state.build,
            Compliance.OUTDATED,
            state.first_detected,
            state.last_seen,
            None,
            state.pauses,
        )
    return state


@given(server_states(), policies, spans)
def test_forecast_is_contiguous_ordered_and_agrees_with_decide_at_every_change(
    state: ServerState, policy: Policy, span: dt.timedelta
) -> None:
    assert state.first_detected is not None
    until = state.first_detected + span
    segments = forecast(state, policy, until=until)
    # Contiguous, ordered, covering [first_detected, until); neighbours differ.
    assert segments[0].start == state.first_detected
    assert segments[-1].end == until
    for left, right in itertools.pairwise(segments):
        assert left.end == right.start
        assert (left.stage, left.paused) != (right.stage, right.paused)
    # Stage numbers never decrease; unenforced time only follows remediation.
    numbers = [segment.stage.number for segment in segments if segment.stage is not None]
    assert numbers == sorted(numbers)
    for segment in segments:
        if segment.stage is None:
            assert state.compliant_since is not None
            assert segment.start >= state.compliant_since
        for at in (segment.start, segment.end - US):
            # Paused exactly where one of the state's pauses covers the episode ...
            enforced = state.compliant_since is None or at < state.compliant_since
            covered = enforced and any(pause.covers(at) for pause in state.pauses)
            assert segment.paused == covered
            # ... and decide() says the same at both ends of every segment.
            decision = decide(_episode_state(state, at), at, policy)
            assert (segment.stage, segment.paused) == (decision.stage, decision.paused)


@given(server_states(), policies, spans, st.floats(0, 1, exclude_max=True))
def test_forecast_agrees_with_decide_at_any_instant_however_far_it_looks(
    state: ServerState, policy: Policy, span: dt.timedelta, share: float
) -> None:
    assert state.first_detected is not None
    until = state.first_detected + span
    at = state.first_detected + min(span * share, span - US)  # timedelta * float rounds
    segments = forecast(state, policy, until=until)
    (segment,) = [s for s in segments if s.start <= at < s.end]
    decision = decide(_episode_state(state, at), at, policy)
    assert segment.stage == decision.stage
    assert segment.paused == decision.paused
    longer = forecast(state, policy, until=until + dt.timedelta(days=100))
    head = [(s.start, s.stage, s.paused) for s in longer if s.start < until]
    assert head == [(s.start, s.stage, s.paused) for s in segments]


@given(server_states(), policies, st.timedeltas(dt.timedelta(0), dt.timedelta(days=300)))
def test_report_row_takes_stage_pause_and_milestones_from_decide(
    state: ServerState, policy: Policy, after: dt.timedelta
) -> None:
    assert state.first_detected is not None
    now = state.first_detected + after
    row = report_row(state, now, policy, CATALOG)
    decision = decide(state, now, policy)
    assert row.stage == decision.stage
    _check_milestones(state, policy, row)
    _check_pause_and_next_stage(state, policy, row, now, decision.paused)
    assert converter.structure(converter.unstructure(row), ReportRow) == row
    segments = forecast(state, policy, until=horizon(state, policy, now))
    data = converter.unstructure(segments, tuple[Segment, ...])
    assert converter.structure(data, tuple[Segment, ...]) == segments


def _check_milestones(state: ServerState, policy: Policy, row: ReportRow) -> None:
    """Each milestone is the first unpaused instant in (or past) its stage."""
    assert state.first_detected is not None
    table = policy.stage_table
    milestones = (
        (row.throttle_enabled, table.first_throttle),
        (row.blocking_enabled, table.first_block),
        (row.full_block, table.full_block),
    )
    for instant, offset in milestones:
        if state.compliant_since is not None or offset is None:
            assert instant is None
            continue
        assert instant is not None
        wanted = table.stage_at(offset).number
        decision = decide(state, instant, policy)
        assert decision.stage is not None
        assert decision.stage.number >= wanted
        assert not decision.paused
        if instant > state.first_detected:
            before = decide(state, instant - US, policy)
            assert before.paused or before.stage is None or before.stage.number < wanted
        assert instant >= state.first_detected + offset  # pauses only ever delay


def _check_pause_and_next_stage(
    state: ServerState, policy: Policy, row: ReportRow, now: dt.datetime, paused: bool
) -> None:
    # A pause that outlives remediation (no decision is paused then) is shown too.
    covered = any(pause.covers(now) for pause in state.pauses)
    assert (row.paused_until is not None) == (paused or covered)
    if row.paused_until is not None and paused:
        assert row.paused_until > now
        assert not decide(state, row.paused_until, policy).paused
        assert decide(state, row.paused_until - US, policy).paused
    elif row.paused_until is not None:
        assert row.paused_until > now
        assert not any(pause.covers(row.paused_until) for pause in state.pauses)
        assert any(pause.covers(row.paused_until - US) for pause in state.pauses)
    if row.next_stage_start is not None:
        assert row.stage is not None
        following = decide(state, row.next_stage_start, policy).stage
        assert following is not None
        assert following.number == row.stage.number + 1
        assert row.next_stage_throttle == following.throttle_minutes
        assert row.next_stage_block == following.block_minutes


@given(server_states(), st.timedeltas(dt.timedelta(0), dt.timedelta(days=300)))
def test_a_frozen_clock_delays_each_milestone_by_the_paused_time_before_it(
    state: ServerState, after: dt.timedelta
) -> None:
    assert state.first_detected is not None
    policy = Policy()  # the default table; pauses freeze the clock
    row = report_row(state, state.first_detected + after, policy, CATALOG)
    if state.compliant_since is not None:
        return
    for instant, offset in (
        (row.throttle_enabled, dt.timedelta(days=30)),
        (row.blocking_enabled, dt.timedelta(days=60)),
        (row.full_block, dt.timedelta(days=90)),
    ):
        assert instant is not None
        paused = sum(
            (p.overlap(state.first_detected, instant) for p in state.pauses), dt.timedelta()
        )
        assert instant == state.first_detected + offset + paused


# ---- the calendar's end -----------------------------------------------------------------

END = dt.datetime.max.replace(tzinfo=dt.UTC)
zones = st.sampled_from(
    [dt.UTC, dt.timezone(dt.timedelta(hours=14)), dt.timezone(dt.timedelta(hours=-12))]
)
# Any instant up to datetime.max in some zone; most of them close to the calendar's end.
instants = st.one_of(
    st.datetimes(max_value=END.replace(tzinfo=None), timezones=zones),
    st.timedeltas(dt.timedelta(0), dt.timedelta(days=400)).map(lambda back: END - back),
)


@st.composite
def late_states(draw: st.DrawFn) -> ServerState:
    """A server detected in the calendar's last year or so, paused up to its last days."""
    first = END - draw(st.timedeltas(dt.timedelta(0), dt.timedelta(days=400)))
    pauses: list[Pause] = []
    cursor = first.date()
    for _ in range(draw(st.integers(0, 3))):
        # A pause ends at a midnight inside the calendar: it starts by 30 December 9999.
        gap = draw(st.integers(0, 60))
        room = (dt.date.max - cursor).days - gap
        if room < 1:
            break
        start = cursor + dt.timedelta(days=gap)
        days = draw(st.integers(1, min(45, room)))
        pauses.append(Pause(SERVER, start, days))
        cursor = start + dt.timedelta(days=days)
    healed = draw(st.none() | st.timedeltas(dt.timedelta(0), END - first))
    return ServerState(
        server_id=SERVER,
        tenant="contoso",
        build=ExchangeBuild(15, 1, 2507, 39),
        status=Compliance.COMPLIANT if healed is not None else Compliance.OUTDATED,
        first_detected=first,
        last_seen=first,
        compliant_since=None if healed is None else first + healed,
        pauses=tuple(pauses),
    )


@given(st.one_of(late_states(), server_states()), policies, instants)
def test_report_and_forecast_answer_up_to_the_calendars_end(
    state: ServerState, policy: Policy, now: dt.datetime
) -> None:
    row = report_row(state, now, policy, CATALOG)
    until = horizon(state, policy, now)
    assert until <= END
    segments = forecast(state, policy, until=now)
    for before, after in itertools.pairwise(segments):
        assert before.end == after.start
    if segments:
        assert segments[-1].end == min(now, END)
    # Milestones come from the timeline, which stops at the calendar's end.
    for milestone in (row.throttle_enabled, row.blocking_enabled, row.full_block):
        assert milestone is None or milestone <= END


def test_an_instant_past_the_calendars_end_in_utc_is_taken_as_its_end() -> None:
    # 23:00 at -05:00 on 31 December 9999 is 04:00 UTC on 1 January 10000.
    late = dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    first = dt.datetime(9999, 12, 1, tzinfo=dt.UTC)
    state = ServerState(
        SERVER, "contoso", ExchangeBuild(15, 1, 2507, 39), Compliance.OUTDATED, first, first, None
    )
    (stage_1, stage_2) = forecast(state, Policy(), until=late)
    assert stage_1.end == stage_2.start == dt.datetime(9999, 12, 31, tzinfo=dt.UTC)
    assert stage_2.end == END
    assert horizon(state, Policy(), late) == END
    assert report_row(state, late, Policy(), CATALOG).blocking_enabled is None


# ---- report_rows, the report's fast path ---------------------------------------------------

# A few builds, so that a list of states repeats them (the fast path's per-build reuse) and
# mixes products, supported and unsupported ones; None is a server never seen with a build.
BUILDS = st.sampled_from(
    [
        ExchangeBuild(15, 1, 2507, 39),
        ExchangeBuild(15, 2, 1748, 39),
        ExchangeBuild(15, 0, 1497, 48),
        ExchangeBuild(15, 2, 1544, 4),
        None,
    ]
)


@st.composite
def report_states(draw: st.DrawFn) -> list[ServerState]:
    """States of several servers with assorted builds, statuses, episodes and pauses."""
    states = []
    for index in range(draw(st.integers(1, 6))):
        state = draw(server_states())
        build = draw(BUILDS)
        status = draw(st.sampled_from(Compliance))
        episode = draw(st.booleans())
        states.append(
            ServerState(
                server_id=f"ex{index}.contoso.example",
                tenant=draw(st.sampled_from(["contoso", "fabrikam"])),
                build=build,
                status=status,
                first_detected=state.first_detected if episode else None,
                last_seen=state.last_seen,
                compliant_since=state.compliant_since if episode else None,
                pauses=tuple(
                    Pause(f"ex{index}.contoso.example", p.start, p.days) for p in state.pauses
                ),
            )
        )
    return states


@given(
    report_states(),
    policies,
    st.datetimes(
        min_value=dt.datetime(2024, 6, 1),
        max_value=dt.datetime(2030, 1, 1),
        timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5))]),
    ),
)
def test_report_rows_gives_report_rows_rows_field_for_field(
    states: list[ServerState], policy: Policy, now: dt.datetime
) -> None:
    fast = list(report_rows(iter(states), now, policy, CATALOG))
    slow = [report_row(state, now, policy, CATALOG) for state in states]
    assert fast == slow
    for made, expected in zip(fast, slow, strict=True):
        # Field for field, as the slots hold them (attrs' == compares the same, but a field
        # the fast path forgot to fill would raise here, not compare).
        assert attrs.astuple(made, recurse=False) == attrs.astuple(expected, recurse=False)
        # And the fast path's rows pass the class's own checks.
        assert attrs.evolve(made) == made


# ---- report_rows against report_row on every kind of state (issue 16 part 2) ---------------

EXCHANGE_ONLINE = Policy.exchange_online(CATALOG)
ALL_BUILDS = st.sampled_from(
    [
        ExchangeBuild(15, 1, 2507, 16),
        ExchangeBuild(15, 1, 2507, 39),
        ExchangeBuild(15, 1, 2507, 61),
        ExchangeBuild(15, 1, 2375, 37),
        ExchangeBuild(15, 2, 1748, 39),
        ExchangeBuild(15, 0, 1497, 48),
        ExchangeBuild(14, 3, 513, 0),
        ExchangeBuild(15, 2, 2562, 17),
        None,
    ]
)
INSTANTS = st.datetimes(
    min_value=dt.datetime(2023, 1, 1),
    max_value=dt.datetime(2030, 1, 1),
    timezones=st.just(dt.UTC),
)


@st.composite
def any_state(draw: st.DrawFn, index: int) -> ServerState:
    """A server in any condition: never detected, in an episode, remediated, with server
    pauses and overlapping or touching ones (a tenant pause copied into the state), or
    detected near the calendar's end."""
    server = f"edge/ex{index}.contoso.example"
    near_end = draw(st.integers(0, 9)) == 0
    first = (
        dt.datetime(9999, 12, draw(st.integers(1, 31)), tzinfo=dt.UTC)
        if near_end
        else draw(INSTANTS)
    )
    pauses = []
    for _ in range(draw(st.integers(0, 3))):
        # Near the calendar's end a pause must still end inside it.
        start = first.date() + dt.timedelta(days=draw(st.integers(-40, -1 if near_end else 120)))
        room = (dt.date.max - start).days
        pauses.append(Pause(server, start, draw(st.integers(1, min(60, room)))))
    episode = draw(st.integers(0, 3)) > 0
    healed = draw(st.none() | st.none() | st.timedeltas(dt.timedelta(0), dt.timedelta(days=200)))
    return ServerState(
        server_id=server,
        tenant=draw(st.sampled_from(["contoso", "fabrikam"])),
        build=draw(ALL_BUILDS),
        status=draw(st.sampled_from(Compliance)),
        first_detected=first if episode else None,
        last_seen=first,
        compliant_since=None if healed is None or not episode or near_end else first + healed,
        pauses=tuple(pauses),
    )


@st.composite
def any_states(draw: st.DrawFn) -> list[ServerState]:
    return [draw(any_state(index)) for index in range(draw(st.integers(1, 6)))]


@given(
    any_states(),
    st.one_of(policies, st.just(EXCHANGE_ONLINE)),
    st.one_of(INSTANTS, st.just(dt.datetime(9999, 12, 31, 12, tzinfo=dt.UTC))),
    st.sets(st.integers(0, 5), max_size=1),  # most rows are the fast path's own
    st.sets(st.integers(0, 5), max_size=1),
    st.none() | st.timedeltas(dt.timedelta(days=-10), dt.timedelta(days=160)),
)
def test_report_rows_equals_report_row_for_paused_exempt_monitored_and_remediated_servers(
    states: list[ServerState],
    policy: Policy,
    now: dt.datetime,
    exempt: set[int],
    monitored: set[int],
    since_first: dt.timedelta | None,
) -> None:
    first = states[0].first_detected or states[0].last_seen
    if since_first is not None and first is not None and first.year < 9999:
        now = first + since_first  # inside the first server's episode, where things change

    def exemptions(server_id: str) -> tuple[Exemption, ...]:
        index = int(server_id.split("ex")[1].split(".")[0])
        if index not in exempt:
            return ()
        return (Exemption("migration", until=dt.date(2026, 3, 1), server=server_id),)

    def monitors(server_id: str) -> bool:
        return int(server_id.split("ex")[1].split(".")[0]) in monitored

    fast = list(
        report_rows(iter(states), now, policy, CATALOG, exemptions=exemptions, monitors=monitors)
    )
    slow = [
        report_row(
            state,
            now,
            policy,
            CATALOG,
            exemptions=exemptions(state.server_id),
            monitor=monitors(state.server_id),
        )
        for state in states
    ]
    for made, expected in zip(fast, slow, strict=True):
        assert attrs.astuple(made, recurse=False) == attrs.astuple(expected, recurse=False)
        assert attrs.evolve(made) == made
    # The CSV writer's path: the same fields as tuples, in the order of ReportRow's fields.
    values = report_values(iter(states), now, policy, CATALOG, exemptions, monitors)
    assert list(values) == [attrs.astuple(row, recurse=False) for row in slow]
