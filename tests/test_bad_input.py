"""Bad input to the pure core: a clear tbes error naming the argument, never a crash.

The brief's rule: bad input gets a clear exception from the :mod:`tbes.errors` family (or a
documented ``None``), never an ``AttributeError``/``TypeError`` from deep inside, a silent
default or lost data; naive datetimes are refused. The table below is the audit's list of
calls that used to crash or answer silently; the property test feeds arbitrary objects to
every argument of every public entry point of the core.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tbes.baseline import Baseline
from tbes.catalog import Catalog
from tbes.compliance import Assessment, Compliance, assess
from tbes.decision import Action, Decision, decide
from tbes.errors import (
    InvalidBuildError,
    InvalidPauseError,
    InvalidValueError,
    NaiveDatetimeError,
    PolicyError,
    StageTableError,
    TbesError,
)
from tbes.ledger import Pause, PauseLedger
from tbes.policy import DEFAULT_POLICY, Policy
from tbes.received import find_sender, parse_received, received_values
from tbes.report import ReportRow, Segment, forecast, horizon, report_row
from tbes.serde import loads
from tbes.stages import DEFAULT_STAGE_TABLE, StageTable
from tbes.state import ServerState, observe
from tbes.version import ExchangeBuild, Product

UTC = dt.UTC
CATALOG = Catalog.default()
BUILD = ExchangeBuild(15, 1, 2507, 6)
BASELINE = Baseline.exchange_online_2026()
JAN1 = dt.datetime(2026, 1, 1, tzinfo=UTC)
JAN2 = dt.datetime(2026, 1, 2, tzinfo=UTC)
STATE = ServerState("mx1", "contoso", BUILD, Compliance.OUTDATED, JAN1, JAN1, None)
OUTDATED = Assessment(Compliance.OUTDATED, Product.EXCHANGE_2016, None, (), "below the SU")
LEDGER = PauseLedger("contoso")
EXCHANGE_HOP = "from a.example by mx1.example with mapi id 15.1.2507.6; Mon, 1 Jan 2024 00:00 +0000"
PLUS_TWO = dt.timezone(dt.timedelta(hours=2))

Call = Callable[[], object]


def bad(value: object) -> Any:
    """``value``, typed Any: these calls pass wrong types on purpose."""
    return value


# (call, expected error, a fragment of the message that names the argument or value)
CASES: list[tuple[str, Call, type[TbesError], str]] = [
    # received
    ("received_values(None)", lambda: received_values(bad(None)), InvalidValueError, "message"),
    (
        "parse_received(None)",
        lambda: parse_received(bad(None)),
        InvalidValueError,
        "Received value",
    ),
    (
        "parse_received(bytes)",
        lambda: parse_received(bad(b"from a by b")),
        InvalidValueError,
        "b'from a by b'",
    ),
    ("find_sender(None)", lambda: find_sender(bad(None)), InvalidValueError, "received"),
    ("find_sender(str)", lambda: find_sender(EXCHANGE_HOP), InvalidValueError, "received"),
    ("find_sender([None])", lambda: find_sender([bad(None)]), InvalidValueError, "received"),
    (
        "find_sender(own_hosts=[None])",
        lambda: find_sender([EXCHANGE_HOP], own_hosts=[bad(None)]),
        InvalidValueError,
        "own_hosts",
    ),
    (
        "find_sender(client=5)",
        lambda: find_sender([EXCHANGE_HOP], client=bad(5)),
        InvalidValueError,
        "client",
    ),
    # catalog
    (
        "assess('15.1.1.1')",
        lambda: assess(bad("15.1.1.1"), baseline=BASELINE, catalog=CATALOG),
        InvalidBuildError,
        "build must be an ExchangeBuild, got '15.1.1.1'",
    ),
    (
        "assess(baseline=None)",
        lambda: assess(BUILD, baseline=bad(None), catalog=CATALOG),
        InvalidValueError,
        "baseline=None",
    ),
    ("catalog.release('x')", lambda: CATALOG.release(bad("x")), InvalidBuildError, "build"),
    ("catalog.release(None)", lambda: CATALOG.release(bad(None)), InvalidBuildError, "build"),
    ("catalog.base_release('x')", lambda: CATALOG.base_release(bad("x")), InvalidBuildError, "'x'"),
    ("catalog.latest(None)", lambda: CATALOG.latest(bad(None)), InvalidValueError, "product"),
    (
        "catalog.end_of_support(None)",
        lambda: CATALOG.end_of_support(bad(None)),
        InvalidValueError,
        "product must be a Product, got None",
    ),
    # stages
    (
        "stage_at(None)",
        lambda: DEFAULT_STAGE_TABLE.stage_at(bad(None)),
        InvalidValueError,
        "elapsed",
    ),
    ("next_start(5)", lambda: DEFAULT_STAGE_TABLE.next_start(bad(5)), InvalidValueError, "elapsed"),
    ("StageTable(None)", lambda: StageTable(bad(None)), StageTableError, "got None"),
    ("start_of('x')", lambda: DEFAULT_STAGE_TABLE.start_of(bad("x")), StageTableError, "'x'"),
    # ledger
    ("paused_at(None)", lambda: LEDGER.paused_at("mx1", bad(None)), InvalidPauseError, "at"),
    (
        "paused_at(date)",
        lambda: LEDGER.paused_at("mx1", bad(dt.date(2026, 1, 1))),
        InvalidPauseError,
        "at must be a timezone-aware datetime, got datetime.date(2026, 1, 1)",
    ),
    (
        "paused_at(naive)",
        lambda: LEDGER.paused_at("mx1", dt.datetime(2026, 1, 1)),
        NaiveDatetimeError,
        "at",
    ),
    (
        "paused_at(server_id=5)",
        lambda: LEDGER.paused_at(bad(5), JAN1),
        InvalidPauseError,
        "server_id",
    ),
    ("used('2026')", lambda: LEDGER.used(bad("2026")), InvalidPauseError, "year"),
    ("remaining('2026')", lambda: LEDGER.remaining(bad("2026")), InvalidPauseError, "year"),
    ("used(True)", lambda: LEDGER.used(True), InvalidPauseError, "year"),
    ("used(10000)", lambda: LEDGER.used(10_000), InvalidPauseError, "10000"),
    (
        "Pause.days_in_year(0)",
        lambda: Pause("mx1", dt.date(2026, 1, 1), 3).days_in_year(0),
        InvalidPauseError,
        "year",
    ),
    (
        "end(server_id=None)",
        lambda: LEDGER.end(bad(None), today=dt.date(2026, 1, 1)),
        InvalidPauseError,
        "server_id",
    ),
    # state
    (
        "ServerState(first_detected='x')",
        lambda: ServerState("mx1", "contoso", None, Compliance.OUTDATED, bad("x"), None, None),
        InvalidValueError,
        "first_detected",
    ),
    (
        "ServerState(last_seen=date)",
        lambda: ServerState(
            "mx1", "contoso", None, Compliance.OUTDATED, None, bad(dt.date(2026, 1, 1)), None
        ),
        InvalidValueError,
        "last_seen",
    ),
    (
        "ServerState(compliant_since=time)",
        lambda: ServerState(
            "mx1", "contoso", None, Compliance.OUTDATED, None, None, bad(dt.time(tzinfo=UTC))
        ),
        InvalidValueError,
        "compliant_since",
    ),
    (
        "ServerState(status='OUTDATED')",
        lambda: ServerState("mx1", "contoso", None, bad("OUTDATED"), None, None, None),
        InvalidValueError,
        "status",
    ),
    (
        "ServerState(build='15.1.1.1')",
        lambda: ServerState(
            "mx1", "contoso", bad("15.1.1.1"), Compliance.OUTDATED, None, None, None
        ),
        InvalidBuildError,
        "build",
    ),
    (
        "ServerState(pauses=5)",
        lambda: ServerState("mx1", "contoso", None, Compliance.OUTDATED, None, None, None, bad(5)),
        InvalidValueError,
        "pauses",
    ),
    (
        "observe(assessment=None)",
        lambda: observe(
            STATE, server_id="mx1", tenant="contoso", assessment=bad(None), build=BUILD, at=JAN2
        ),
        InvalidValueError,
        "assessment",
    ),
    (
        "observe(at=None)",
        lambda: observe(
            STATE, server_id="mx1", tenant="contoso", assessment=OUTDATED, build=BUILD, at=bad(None)
        ),
        InvalidValueError,
        "at must be a timezone-aware datetime",
    ),
    (
        "observe(state=5)",
        lambda: observe(
            bad(5), server_id="mx1", tenant="contoso", assessment=OUTDATED, build=BUILD, at=JAN2
        ),
        InvalidValueError,
        "state",
    ),
    (
        "observe(build='15.1.1.1')",
        lambda: observe(
            None,
            server_id="mx1",
            tenant="contoso",
            assessment=OUTDATED,
            build=bad("15.1.1.1"),
            at=JAN2,
        ),
        InvalidBuildError,
        "build",
    ),
    # decide
    ("decide(None, now)", lambda: decide(bad(None), JAN2), InvalidValueError, "state"),
    ("decide(state, None)", lambda: decide(STATE, bad(None)), InvalidValueError, "now"),
    (
        "decide(state, date)",
        lambda: decide(STATE, bad(dt.date(2026, 1, 2))),
        InvalidValueError,
        "now must be a timezone-aware datetime, got datetime.date(2026, 1, 2)",
    ),
    ("decide(policy='x')", lambda: decide(STATE, JAN2, bad("x")), InvalidValueError, "policy"),
    (
        "Policy.supported_only(None)",
        lambda: Policy.supported_only(bad(None), CATALOG),
        PolicyError,
        "on must be a date",
    ),
    ("Policy(stage_table=None)", lambda: Policy(stage_table=bad(None)), PolicyError, "stage_table"),
    (
        "Policy(pause_freezes_clock=1)",
        lambda: Policy(pause_freezes_clock=bad(1)),
        PolicyError,
        "pause_freezes_clock",
    ),
    # report
    (
        "report_row(now=None)",
        lambda: report_row(STATE, bad(None), DEFAULT_POLICY, CATALOG),
        InvalidValueError,
        "now",
    ),
    (
        "report_row(catalog=None)",
        lambda: report_row(STATE, JAN2, DEFAULT_POLICY, bad(None)),
        InvalidValueError,
        "catalog",
    ),
    (
        "report_row(state=None)",
        lambda: report_row(bad(None), JAN2, DEFAULT_POLICY, CATALOG),
        InvalidValueError,
        "state",
    ),
    (
        "forecast(until=None)",
        lambda: forecast(STATE, DEFAULT_POLICY, until=bad(None)),
        InvalidValueError,
        "until",
    ),
    (
        "forecast(policy=None)",
        lambda: forecast(STATE, bad(None), until=JAN2),
        InvalidValueError,
        "policy",
    ),
    (
        "horizon(now='x')",
        lambda: horizon(STATE, DEFAULT_POLICY, bad("x")),
        InvalidValueError,
        "now",
    ),
    (
        "Segment(start=None)",
        lambda: Segment(bad(None), JAN2, None, False),
        InvalidValueError,
        "start",
    ),
    (
        "Segment(end=naive)",
        lambda: Segment(JAN1, dt.datetime(2026, 1, 2), None, False),
        NaiveDatetimeError,
        "end",
    ),
    ("Segment(paused=1)", lambda: Segment(JAN1, JAN2, None, bad(1)), InvalidValueError, "paused"),
    # serde
    (
        "loads('{', ServerState)",
        lambda: loads("{", ServerState),
        InvalidValueError,
        "ServerState: not valid JSON",
    ),
    (
        "loads('{\"a\":1}', ServerState)",
        lambda: loads('{"a":1}', ServerState),
        InvalidValueError,
        "$.server_id",
    ),
    (
        "loads(None, ServerState)",
        lambda: loads(bad(None), ServerState),
        InvalidValueError,
        "ServerState",
    ),
    ("loads('\"x\"', timedelta)", lambda: loads('"x"', dt.timedelta), InvalidValueError, "'x'"),
    # Decision: the checks its one cheap test makes
    (
        "Decision(report='yes')",
        lambda: Decision(Action.ACCEPT, None, None, bad("yes"), False, dt.timedelta(0), None, "r"),
        InvalidValueError,
        "report",
    ),
    (
        "Decision(reason=5)",
        lambda: Decision(Action.ACCEPT, None, None, False, False, dt.timedelta(0), None, bad(5)),
        InvalidValueError,
        "reason",
    ),
    (
        "Decision(paused=1)",
        lambda: Decision(Action.ACCEPT, None, None, False, bad(1), dt.timedelta(0), None, "r"),
        InvalidValueError,
        "paused",
    ),
    (
        "Decision(elapsed=5)",
        lambda: Decision(Action.ACCEPT, None, None, False, False, bad(5), None, "r"),
        InvalidValueError,
        "elapsed",
    ),
    (
        "Decision(next_change=date)",
        lambda: Decision(
            Action.ACCEPT, None, None, False, False, dt.timedelta(0), bad(dt.date(2026, 1, 1)), "r"
        ),
        InvalidValueError,
        "next_change",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [pytest.param(call, error, fragment, id=name) for name, call, error, fragment in CASES],
)
def test_bad_input_raises_a_tbes_error_naming_the_argument(
    call: Call, error: type[TbesError], fragment: str
) -> None:
    with pytest.raises(error) as caught:
        call()
    # One family for callers to catch: every one of these is a TbesError and a ValueError.
    assert isinstance(caught.value, TbesError)
    assert isinstance(caught.value, ValueError)
    assert fragment in str(caught.value)


def test_loads_keeps_the_original_error_as_its_cause() -> None:
    with pytest.raises(InvalidValueError) as caught:
        loads("{", ServerState)
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)


def test_segment_instants_are_normalised_to_utc() -> None:
    # 10:00 at +02:00 is 08:00 UTC (SPEC section 0: instants are normalised to UTC).
    segment = Segment(
        dt.datetime(2026, 1, 1, 10, tzinfo=PLUS_TWO),
        dt.datetime(2026, 1, 1, 12, tzinfo=PLUS_TWO),
        None,
        False,
    )
    assert segment.start == dt.datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert segment.start.tzinfo is UTC
    assert segment.end == dt.datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert segment.end.tzinfo is UTC


def test_server_state_instants_are_normalised_to_utc() -> None:
    state = ServerState(
        "mx1",
        "contoso",
        None,
        Compliance.OUTDATED,
        dt.datetime(2026, 1, 1, 1, tzinfo=PLUS_TWO),
        None,
        None,
    )
    assert state.first_detected == dt.datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert state.first_detected is not None
    assert state.first_detected.tzinfo is UTC


def _row(**changes: object) -> ReportRow:
    fields: dict[str, Any] = {
        "server": "mx1",
        "tenant": "contoso",
        "build": None,
        "product": None,
        "status": Compliance.OUTDATED,
        "first_detected": None,
        "last_seen": None,
        "recommended": (),
        "throttle_enabled": None,
        "blocking_enabled": None,
        "full_block": None,
        "stage": None,
        "next_stage_throttle": None,
        "next_stage_block": None,
        "next_stage_start": None,
        "paused_until": None,
    }
    fields.update(changes)
    return ReportRow(**fields)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("next_stage_throttle", "5", InvalidValueError),
        ("next_stage_throttle", 61, InvalidValueError),
        ("next_stage_block", -1, InvalidValueError),
        ("next_stage_block", True, InvalidValueError),
        ("server", None, InvalidValueError),
        ("status", "OUTDATED", InvalidValueError),
        ("build", "15.1.1.1", InvalidBuildError),
        ("recommended", ("15.1.1.1",), InvalidBuildError),
    ],
)
def test_report_row_refuses_values_of_the_wrong_kind(
    field: str, value: object, error: type[TbesError]
) -> None:
    with pytest.raises(error, match=field):
        _row(**{field: value})


def test_report_row_takes_minutes_within_the_hour() -> None:
    row = _row(next_stage_throttle=0, next_stage_block=60)
    assert (row.next_stage_throttle, row.next_stage_block) == (0, 60)


# --- every entry point, every argument: return or raise a TbesError -------------------------

anything = st.one_of(st.none(), st.integers(), st.text(), st.binary(), st.dates(), st.floats())

Feed = Callable[[Any], object]  # Any: wrong types are the point

ENTRY_POINTS: dict[str, Feed] = {
    "received_values": lambda x: received_values(x),
    "parse_received": lambda x: parse_received(x),
    "find_sender(received)": lambda x: find_sender(x),
    "find_sender([value])": lambda x: find_sender([x]),
    "find_sender(own_hosts)": lambda x: find_sender([EXCHANGE_HOP], own_hosts=x),
    "find_sender(client)": lambda x: find_sender([EXCHANGE_HOP], client=x),
    "find_sender(skip)": lambda x: find_sender([EXCHANGE_HOP], skip_exchange_online=x),
    "ExchangeBuild.parse": lambda x: ExchangeBuild.parse(x),
    "assess(build)": lambda x: assess(x, baseline=BASELINE, catalog=CATALOG),
    "assess(baseline)": lambda x: assess(BUILD, baseline=x, catalog=CATALOG),
    "assess(catalog)": lambda x: assess(BUILD, baseline=BASELINE, catalog=x),
    "catalog.release": lambda x: CATALOG.release(x),
    "catalog.base_release": lambda x: CATALOG.base_release(x),
    "catalog.latest": lambda x: CATALOG.latest(x),
    "catalog.end_of_support": lambda x: CATALOG.end_of_support(x),
    "Baseline.supported_only": lambda x: Baseline.supported_only(x, CATALOG),
    "stage_at": lambda x: DEFAULT_STAGE_TABLE.stage_at(x),
    "start_of": lambda x: DEFAULT_STAGE_TABLE.start_of(x),
    "next_start": lambda x: DEFAULT_STAGE_TABLE.next_start(x),
    "StageTable": lambda x: StageTable(x),
    "Pause(server_id)": lambda x: Pause(x, dt.date(2026, 1, 1), 3),
    "Pause(start)": lambda x: Pause("mx1", x, 3),
    "Pause(days)": lambda x: Pause("mx1", dt.date(2026, 1, 1), x),
    "Pause.covers": lambda x: Pause("mx1", dt.date(2026, 1, 1), 3).covers(x),
    "Pause.days_in_year": lambda x: Pause("mx1", dt.date(2026, 1, 1), 3).days_in_year(x),
    "PauseLedger(tenant)": lambda x: PauseLedger(x),
    "PauseLedger(quota_days)": lambda x: PauseLedger("contoso", x),
    "ledger.grant(start)": lambda x: LEDGER.grant("mx1", x, 3, today=dt.date(2026, 1, 1)),
    "ledger.grant(days)": lambda x: LEDGER.grant(
        "mx1", dt.date(2026, 1, 1), x, today=dt.date(2026, 1, 1)
    ),
    "ledger.grant(today)": lambda x: LEDGER.grant("mx1", dt.date(2026, 1, 1), 3, today=x),
    "ledger.end(server_id)": lambda x: LEDGER.end(x, today=dt.date(2026, 1, 1)),
    "ledger.end(today)": lambda x: LEDGER.end("mx1", today=x),
    "ledger.used": lambda x: LEDGER.used(x),
    "ledger.remaining": lambda x: LEDGER.remaining(x),
    "ledger.pauses_for": lambda x: LEDGER.pauses_for(x),
    "ledger.paused_at(server_id)": lambda x: LEDGER.paused_at(x, JAN1),
    "ledger.paused_at(at)": lambda x: LEDGER.paused_at("mx1", x),
    "ServerState(server_id)": lambda x: ServerState(
        x, "contoso", None, Compliance.OUTDATED, None, None, None
    ),
    "ServerState(build)": lambda x: ServerState(
        "mx1", "contoso", x, Compliance.OUTDATED, None, None, None
    ),
    "ServerState(status)": lambda x: ServerState("mx1", "contoso", None, x, None, None, None),
    "ServerState(first_detected)": lambda x: ServerState(
        "mx1", "contoso", None, Compliance.OUTDATED, x, None, None
    ),
    "ServerState(pauses)": lambda x: ServerState(
        "mx1", "contoso", None, Compliance.OUTDATED, None, None, None, x
    ),
    "observe(state)": lambda x: observe(
        x, server_id="mx1", tenant="contoso", assessment=OUTDATED, build=BUILD, at=JAN2
    ),
    "observe(server_id)": lambda x: observe(
        None, server_id=x, tenant="contoso", assessment=OUTDATED, build=BUILD, at=JAN2
    ),
    "observe(assessment)": lambda x: observe(
        STATE, server_id="mx1", tenant="contoso", assessment=x, build=BUILD, at=JAN2
    ),
    "observe(build)": lambda x: observe(
        STATE, server_id="mx1", tenant="contoso", assessment=OUTDATED, build=x, at=JAN2
    ),
    "observe(at)": lambda x: observe(
        STATE, server_id="mx1", tenant="contoso", assessment=OUTDATED, build=BUILD, at=x
    ),
    "observe(policy)": lambda x: observe(
        STATE,
        server_id="mx1",
        tenant="contoso",
        assessment=OUTDATED,
        build=BUILD,
        at=JAN2,
        policy=x,
    ),
    "decide(state)": lambda x: decide(x, JAN2),
    "decide(now)": lambda x: decide(STATE, x),
    "decide(policy)": lambda x: decide(STATE, JAN2, x),
    "Policy.supported_only": lambda x: Policy.supported_only(x, CATALOG),
    "Policy.supported_only(catalog)": lambda x: Policy.supported_only(dt.date(2026, 1, 2), x),
    "Policy.named": lambda x: Policy.named(x, catalog=CATALOG),
    "Policy.named(catalog)": lambda x: Policy.named("exchange_online_2026", catalog=x),
    "Baseline.supported_only(catalog)": lambda x: Baseline.supported_only(dt.date(2026, 1, 2), x),
    "Policy(service_name)": lambda x: Policy(service_name=x),
    "report_row(state)": lambda x: report_row(x, JAN2, DEFAULT_POLICY, CATALOG),
    "report_row(now)": lambda x: report_row(STATE, x, DEFAULT_POLICY, CATALOG),
    "report_row(policy)": lambda x: report_row(STATE, JAN2, x, CATALOG),
    "report_row(catalog)": lambda x: report_row(STATE, JAN2, DEFAULT_POLICY, x),
    "forecast(state)": lambda x: forecast(x, DEFAULT_POLICY, until=JAN2),
    "forecast(until)": lambda x: forecast(STATE, DEFAULT_POLICY, until=x),
    "horizon(now)": lambda x: horizon(STATE, DEFAULT_POLICY, x),
    "Segment(start)": lambda x: Segment(x, JAN2, None, False),
    "Segment(paused)": lambda x: Segment(JAN1, JAN2, None, x),
    "serde.loads(text)": lambda x: loads(x, ServerState),
    "serde.loads(cls)": lambda x: loads("{}", x),
    "Decision(reason)": lambda x: Decision(
        Action.ACCEPT, None, None, False, False, dt.timedelta(0), None, x
    ),
    "Decision(next_change)": lambda x: Decision(
        Action.ACCEPT, None, None, False, False, dt.timedelta(0), x, "r"
    ),
}


@pytest.mark.parametrize("feed", list(ENTRY_POINTS.values()), ids=list(ENTRY_POINTS))
@given(value=anything)
def test_any_object_gets_a_result_or_a_tbes_error(feed: Feed, value: object) -> None:
    # TbesError is the one family callers catch; anything else escapes and fails the test.
    with contextlib.suppress(TbesError):
        feed(value)


def test_a_pause_in_the_last_year_a_date_holds_is_charged_without_overflow() -> None:
    # Found by the property test: 9999-12-31 + 1 day overflowed while counting 9999's days.
    ledger = LEDGER.grant("mx1", dt.date(9999, 1, 1), 3, today=dt.date(2026, 1, 1))
    assert ledger.used(9999) == 3
    assert ledger.remaining(9999) == 87
