"""Properties of decide(): exact minute windows, monotone stages, pauses, next_change, purity.

Each property of decide() has its own test; the pause ledger's state machine lives with the
ledger's properties.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import builds, instants, stage_tables

from tbes.compliance import Assessment, Compliance
from tbes.decision import Action, Decision, decide
from tbes.errors import NaiveDatetimeError
from tbes.ledger import Pause, PauseLedger
from tbes.policy import DEFAULT_POLICY, ConnectorKind, Policy, SmtpReply
from tbes.serde import dumps, loads
from tbes.stages import DEFAULT_STAGE_TABLE, Stage
from tbes.state import ServerState, observe
from tbes.version import ExchangeBuild, Product

US = dt.timedelta(microseconds=1)
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)

# Any text a store can hold: no lone surrogates (ServerState refuses them).
server_ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)
naive_instants = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 1, 1))
policies = st.builds(
    Policy,
    stage_table=st.one_of(st.just(DEFAULT_STAGE_TABLE), stage_tables(max_stages=6)),
    pause_freezes_clock=st.booleans(),
)


def _state(
    server_id: str,
    first: dt.datetime | None,
    pauses: tuple[tuple[dt.date, int], ...] = (),
) -> ServerState:
    return ServerState(
        server_id=server_id,
        tenant="contoso",
        build=ExchangeBuild(15, 1, 2507, 39),
        status=Compliance.OUTDATED,
        first_detected=first,
        last_seen=first,
        compliant_since=None,
        pauses=tuple(Pause(server_id, start, days) for start, days in pauses),
    )


@st.composite
def paused_states(draw: st.DrawFn, min_pauses: int = 0) -> ServerState:
    """A server in an episode with up to three pauses (maybe overlapping) around its detection."""
    server_id = draw(server_ids)
    first = draw(instants)
    pauses = []
    for _ in range(draw(st.integers(min_pauses, 3))):
        start = first.date() + DAY * draw(st.integers(-30, 150))
        pauses.append((start, draw(st.integers(1, 60))))
    return _state(server_id, first, tuple(pauses))


def _key(decision: Decision) -> tuple[Action, int | None, bool]:
    """What next_change promises stays the same: action, stage and pause status."""
    stage = None if decision.stage is None else decision.stage.number
    return decision.action, stage, decision.paused


def _stage_number(state: ServerState, now: dt.datetime, policy: Policy = DEFAULT_POLICY) -> int:
    stage = decide(state, now, policy).stage
    assert stage is not None
    return stage.number


# ---- exact minutes per hour -----------------------------------------------------------


def _hour_in_stage(
    data: st.DataObject, stage: Stage, start: dt.timedelta, hour: dt.datetime
) -> dt.datetime:
    """A first detection that puts the whole UTC hour starting at ``hour`` in ``stage``."""
    length = DAY * (stage.days if stage.days is not None else 500)
    into = data.draw(st.timedeltas(dt.timedelta(0), length - HOUR))
    return hour - start - into


@given(server_ids, st.sampled_from(DEFAULT_STAGE_TABLE.stages), instants, st.data())
def test_every_hour_of_a_stage_has_exactly_its_block_and_throttle_minutes(
    server_id: str, stage: Stage, hour: dt.datetime, data: st.DataObject
) -> None:
    hour = hour.replace(minute=0, second=0, microsecond=0)
    start = DEFAULT_STAGE_TABLE.start_of(stage.number)
    state = _state(server_id, _hour_in_stage(data, stage, start, hour))
    second = dt.timedelta(seconds=data.draw(st.integers(0, 59)))
    decisions = [decide(state, hour + m * MINUTE + second) for m in range(60)]
    assert {d.stage for d in decisions} == {stage}
    counts = Counter(d.action for d in decisions)
    assert counts[Action.BLOCK] == stage.block_minutes
    assert counts[Action.THROTTLE] == stage.throttle_minutes


@given(server_ids, policies, instants, st.data())
def test_any_table_blocks_and_throttles_exactly_its_minutes(
    server_id: str, policy: Policy, hour: dt.datetime, data: st.DataObject
) -> None:
    table = policy.stage_table
    stage = data.draw(st.sampled_from(table.stages))
    hour = hour.replace(minute=0, second=0, microsecond=0)
    state = _state(server_id, _hour_in_stage(data, stage, table.start_of(stage.number), hour))
    counts = Counter(decide(state, hour + m * MINUTE, policy).action for m in range(60))
    assert counts[Action.BLOCK] == stage.block_minutes
    assert counts[Action.THROTTLE] == stage.throttle_minutes


# ---- stages never go back -------------------------------------------------------------


@given(server_ids, policies, instants, instants, instants)
def test_stage_never_decreases_as_time_passes(
    server_id: str, policy: Policy, first: dt.datetime, a: dt.datetime, b: dt.datetime
) -> None:
    early, late = sorted((a, b))
    state = _state(server_id, first)
    assert _stage_number(state, early, policy) <= _stage_number(state, late, policy)


# ---- the default timeline's two ends --------------------------------------------------


@given(server_ids, instants, st.timedeltas(-400 * DAY, 30 * DAY - US))
def test_nothing_but_accept_before_30_days(
    server_id: str, first: dt.datetime, elapsed: dt.timedelta
) -> None:
    assert decide(_state(server_id, first), first + elapsed).action is Action.ACCEPT


@given(server_ids, instants, st.timedeltas(90 * DAY, 3000 * DAY))
def test_block_in_every_minute_from_90_days(
    server_id: str, first: dt.datetime, elapsed: dt.timedelta
) -> None:
    assert decide(_state(server_id, first), first + elapsed).action is Action.BLOCK


# ---- the same decision in a fresh interpreter -----------------------------------------

_CHILD = """
import sys, json, datetime as dt
from tbes.decision import decide
from tbes.serde import dumps, loads
from tbes.state import ServerState
out = []
for case in json.load(sys.stdin):
    state = loads(case["state"], ServerState)
    out.append(dumps(decide(state, dt.datetime.fromisoformat(case["now"]))))
json.dump(out, sys.stdout)
"""


@settings(max_examples=3, deadline=None)
@given(
    st.lists(st.tuples(paused_states(), instants), min_size=50, max_size=50),
    st.integers(1, 2**32 - 1),
)
def test_decisions_are_the_same_in_a_fresh_interpreter(
    cases: list[tuple[ServerState, dt.datetime]], hash_seed: int
) -> None:
    payload = [{"state": dumps(state), "now": now.isoformat()} for state, now in cases]
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    here = [dumps(decide(state, now)) for state, now in cases]
    assert json.loads(child.stdout) == here


# ---- next_change ----------------------------------------------------------------------


def _landmarks(state: ServerState, policy: Policy) -> list[dt.datetime]:
    """Instants where decisions change or nearly do, to sample around: stage starts (moved
    by the pauses before them, roughly as a frozen clock moves them) and pause boundaries."""
    first = state.first_detected
    assert first is not None
    marks = []
    for pause in state.pauses:
        marks += [pause.start_instant, pause.end_instant]
    for stage in policy.stage_table:
        start = first + policy.stage_table.start_of(stage.number)
        marks.append(start)
        for pause in state.pauses:
            if first <= pause.start_instant < start:
                start += pause.days * DAY
        marks.append(start)
    return marks


@given(paused_states(), policies, st.data())
def test_decision_holds_until_next_change_and_changes_there(
    state: ServerState, policy: Policy, data: st.DataObject
) -> None:
    assert state.first_detected is not None
    first = state.first_detected
    mark = data.draw(st.sampled_from(_landmarks(state, policy)))
    now = data.draw(
        st.one_of(
            st.timedeltas(-HOUR, HOUR).map(lambda delta: mark + delta),
            st.timedeltas(-5 * DAY, 700 * DAY).map(lambda delta: first + delta),
        )
    )
    decision = decide(state, now, policy)
    change = decision.next_change
    if change is None:
        for later in data.draw(st.lists(st.timedeltas(US, 4000 * DAY), min_size=1, max_size=5)):
            assert _key(decide(state, now + later, policy)) == _key(decision)
        return
    assert change > now
    fractions = data.draw(st.lists(st.floats(0, 1), min_size=1, max_size=5))
    for point in [now, change - US, *(now + (change - now) * f for f in fractions)]:
        point = min(point, change - US)
        assert _key(decide(state, point, policy)) == _key(decision), point
    assert _key(decide(state, change, policy)) != _key(decision)


# ---- a paused instant is never enforced -----------------------------------------------


@given(paused_states(min_pauses=1), policies, st.data())
def test_a_paused_instant_is_never_throttled_or_blocked(
    state: ServerState, policy: Policy, data: st.DataObject
) -> None:
    pause = data.draw(st.sampled_from(state.pauses))
    now = pause.start_instant + data.draw(st.timedeltas(dt.timedelta(0), pause.days * DAY - US))
    decision = decide(state, now, policy)
    assert decision.action is Action.ACCEPT
    assert decision.paused is True
    assert decision.report is True
    assert decision.reply is None


# ---- a pause of d days moves every later stage start by d days ------------------------


@given(
    server_ids,
    policies,
    instants,
    st.integers(1, 200),
    st.integers(1, 120),
)
def test_a_pause_moves_every_later_stage_start_by_its_days(
    server_id: str, policy: Policy, first: dt.datetime, after: int, days: int
) -> None:
    policy = Policy(stage_table=policy.stage_table, pause_freezes_clock=True)
    start = first.date() + after * DAY  # the pause begins after the detection
    paused = _state(server_id, first, ((start, days),))
    pause_start = paused.pauses[0].start_instant
    for stage in policy.stage_table.stages[1:]:
        unpaused = first + policy.stage_table.start_of(stage.number)
        expected = unpaused + days * DAY if unpaused > pause_start else unpaused
        assert _stage_number(paused, expected - US, policy) == stage.number - 1
        assert _stage_number(paused, expected, policy) == stage.number


# ---- naive instants are refused everywhere --------------------------------------------


@given(naive_instants)
def test_naive_instants_raise_from_every_public_function(naive: dt.datetime) -> None:
    aware = naive.replace(tzinfo=dt.UTC)
    state = _state("EX01", aware, ((aware.date(), 3),))
    calls: list[Callable[[], object]] = [
        lambda: decide(state, naive),
        lambda: observe(
            state,
            server_id="EX01",
            tenant="contoso",
            assessment=Assessment(Compliance.OUTDATED, Product.UNKNOWN, None, (), "x"),
            build=None,
            at=naive,
        ),
        lambda: _state("EX01", naive),
        lambda: ServerState("EX01", "t", None, Compliance.COMPLIANT, None, naive, None),
        lambda: ServerState("EX01", "t", None, Compliance.COMPLIANT, aware, aware, naive),
        lambda: state.pauses[0].covers(naive),
        lambda: PauseLedger("contoso", pauses=state.pauses).paused_at("EX01", naive),
    ]
    for call in calls:
        try:
            call()
        except NaiveDatetimeError:
            continue
        raise AssertionError(f"no NaiveDatetimeError from {call}")


# ---- every value class round-trips through serde --------------------------------------


@given(paused_states(), st.sampled_from(Compliance), st.none() | builds, st.data())
def test_server_state_round_trips_through_serde(
    state: ServerState, status: Compliance, build: ExchangeBuild | None, data: st.DataObject
) -> None:
    state = ServerState(
        state.server_id,
        state.tenant,
        build,
        status,
        state.first_detected,
        data.draw(st.none() | instants),
        data.draw(st.none() | instants),
        state.pauses,
        data.draw(st.none() | st.integers(1, 8)),
    )
    back = loads(dumps(state), ServerState)
    assert back == state
    assert back.pauses == state.pauses


@given(paused_states(), policies, instants)
def test_decision_and_its_reply_round_trip_through_serde(
    state: ServerState, policy: Policy, now: dt.datetime
) -> None:
    decision = decide(state, now, policy)
    assert loads(dumps(decision), Decision) == decision
    if decision.reply is not None:
        assert loads(dumps(decision.reply), SmtpReply) == decision.reply


@given(
    policies,
    st.frozensets(st.sampled_from(ConnectorKind)),
    st.integers(0, 366),
    st.timedeltas(dt.timedelta(0), 400 * DAY),
    st.sampled_from([Policy.exchange_online_2023(), Policy.exchange_online_2026()]),
    paused_states(),
    instants,
)
def test_policy_round_trips_through_serde_and_decides_alike(
    drawn: Policy,
    connectors: frozenset[ConnectorKind],
    quota: int,
    relapse: dt.timedelta,
    preset: Policy,
    state: ServerState,
    now: dt.datetime,
) -> None:
    policy = Policy(
        stage_table=drawn.stage_table,
        baseline=preset.baseline,
        connectors=connectors,
        service_name="Contoso Mail",
        info_url="https://contoso.example/x",
        pause_quota_days=quota,
        pause_freezes_clock=drawn.pause_freezes_clock,
        relapse_window=relapse,
    )
    back = loads(dumps(policy), Policy)
    assert back == policy
    # The precomputed plans are rebuilt, not lost, on the way back.
    assert decide(state, now, back) == decide(state, now, policy)


@given(
    st.sampled_from([(450, "4.7.230"), (550, "5.7.230"), (451, "4.3.0"), (554, "5.7.1")]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1),
)
def test_smtp_reply_round_trips_through_serde(code: tuple[int, str], text: str) -> None:
    reply = SmtpReply(code[0], code[1], text)
    assert loads(dumps(reply), SmtpReply) == reply
