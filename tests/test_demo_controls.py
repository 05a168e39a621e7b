"""`tbes demo` shows the operator's controls: a connector in monitor mode and an exemption.

The expected facts are worked out here from the scenario's dates and an enforce-mode replay
of the same mail, never read back from the demo's own counting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

from tbes import demo as scenario
from tbes.catalog import Catalog
from tbes.cli import cli
from tbes.decision import Action, decide
from tbes.enforcer import Connection, Enforcer
from tbes.events import Event, EventKind
from tbes.exemption import Exemption
from tbes.state import ServerState
from tbes.store import MemoryStore, SQLiteStore

UTC = dt.UTC
CONTOSO = "mail.contoso.example"
WOODGROVE = "mail.woodgrove.example"
EXEMPT_FROM = dt.datetime(2026, 12, 1, tzinfo=UTC)
EXEMPT_UNTIL = dt.datetime(2027, 1, 15, tzinfo=UTC)
REASON = "migration partner, moving to Exchange Online"


@attrs.frozen
class Replay:
    notes: tuple[tuple[dt.datetime, str], ...]
    events: tuple[Event, ...]
    states: dict[str, ServerState]
    ledgers: dict[str, object]


def _days() -> Iterator[dt.datetime]:
    """A message a day at 11:00 UTC, as the scenario's controlled servers send."""
    at = scenario.START + dt.timedelta(hours=11)
    while at <= scenario.END:
        yield at
        at += dt.timedelta(days=1)


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    work = tmp_path_factory.mktemp("demo")
    notes: list[tuple[dt.datetime, str]] = []
    events: list[Event] = []
    scenario.run(
        work / "demo.db",
        work / "report.html",
        on_event=events.append,
        on_note=lambda at, text: notes.append((at, text)),
    )
    store = SQLiteStore(work / "demo.db", read_only=True)
    try:
        states = {state.server_id: state for state in store.states()}
        ledgers: dict[str, object] = {
            tenant: store.get_ledger(tenant) for tenant in ("contoso", "woodgrove")
        }
    finally:
        store.close()
    return Replay(tuple(notes), tuple(events), states, ledgers)


def _note(replay: Replay, server: str, *words: str) -> tuple[dt.datetime, str]:
    found = [
        (at, text) for at, text in replay.notes if server in text and all(w in text for w in words)
    ]
    assert found, (server, words, replay.notes)
    return found[0]


# ---- monitor mode ---------------------------------------------------------------------------


def _enforced_contoso() -> tuple[ServerState, list[Action]]:
    """Contoso's mail replayed through an enforcer in enforce mode: its state and answers."""
    now = [scenario.START]
    enforcer = Enforcer(
        MemoryStore(), scenario.demo_policy(), Catalog.default(), clock=lambda: now[0]
    )
    connection = Connection(
        server_id=CONTOSO,
        tenant="contoso",
        kind=scenario.MONITORED.kind,
        peer_ip=scenario.MONITORED.ip,
        connector="contoso",
    )
    answers = []
    for at in _days():
        now[0] = at
        answers.append(
            enforcer.check(connection, scenario.received_headers(scenario.MONITORED, at)).action
        )
    stored = enforcer.store.get(CONTOSO)
    assert stored is not None
    return stored.value, answers


def test_the_monitored_server_stores_what_enforce_mode_stores(replay: Replay) -> None:
    enforced, _ = _enforced_contoso()
    assert replay.states[CONTOSO] == enforced
    assert replay.ledgers["contoso"] is None  # nothing paused, nothing charged


def test_the_monitored_server_is_all_accepted_and_the_demo_says_what_enforcement_would_do(
    replay: Replay,
) -> None:
    enforced, answers = _enforced_contoso()
    throttled, blocked = answers.count(Action.THROTTLE), answers.count(Action.BLOCK)
    assert throttled > 0
    assert blocked > 0  # enforcement would have refused mail the monitored connector took
    sent = len(answers)
    _, text = _note(replay, CONTOSO, 'mode = "monitor"')
    assert f"sent {sent} messages" in text
    assert f"{sent} accepted" in text
    assert f"would have throttled {throttled} and blocked {blocked}" in text
    at_end = decide(enforced, scenario.END, scenario.demo_policy())
    assert at_end.action is Action.BLOCK
    assert at_end.stage is not None
    assert f"would block {at_end.stage.block_minutes} min/h" in text
    assert "identical to enforce mode's" in text
    # Events are sent in monitor mode as in enforcement.
    kinds = {e.kind for e in replay.events if e.server_id == CONTOSO}
    assert {EventKind.DETECTED, EventKind.BLOCKING_STARTED, EventKind.FULLY_BLOCKED} <= kinds


# ---- exemption ------------------------------------------------------------------------------


def test_the_exemption_is_shown_with_its_end_and_reason(replay: Replay) -> None:
    at, _ = _note(replay, WOODGROVE, f"exempt until {EXEMPT_UNTIL.date()}: {REASON}")
    assert EXEMPT_FROM <= at < EXEMPT_FROM + dt.timedelta(days=1)  # its first exempt message
    warned = [
        e.at
        for e in replay.events
        if e.server_id == WOODGROVE and e.kind is EventKind.EXEMPTION_ENDING
    ]
    assert warned
    assert EXEMPT_UNTIL - dt.timedelta(days=7) <= warned[0] < EXEMPT_UNTIL


def test_the_exempt_server_is_charged_no_quota_and_resumes_where_it_stood(
    replay: Replay,
) -> None:
    assert replay.ledgers["woodgrove"] is None  # no pause bought, no quota charged
    state = replay.states[WOODGROVE]
    assert state.pauses == ()  # an exemption is configuration, never stored
    assert state.first_detected is not None
    exemption = Exemption(
        REASON, until=EXEMPT_UNTIL.date(), since=EXEMPT_FROM.date(), connector="woodgrove"
    )
    policy = scenario.demo_policy()
    now = decide(state, scenario.END, policy, (exemption,))
    # The clock stood still for exactly the exempt days, so it reads as if first detected
    # that many days later, and enforcement is back.
    assert now.elapsed == scenario.END - state.first_detected - (EXEMPT_UNTIL - EXEMPT_FROM)
    shifted = attrs.evolve(
        state, first_detected=state.first_detected + (EXEMPT_UNTIL - EXEMPT_FROM)
    )
    assert now.stage == decide(shifted, scenario.END, policy).stage
    assert now.enforced
    assert not now.exempt
    # Frozen: the clock at the exemption's start and right after its end is the same.
    start = decide(state, EXEMPT_FROM, policy, (exemption,)).elapsed
    assert decide(state, EXEMPT_UNTIL, policy, (exemption,)).elapsed == start
    exempt_days = sum(EXEMPT_FROM <= at < EXEMPT_UNTIL for at in _days())
    _, text = _note(replay, WOODGROVE, "exemption ended")
    assert f"{exempt_days} messages accepted while exempt" in text
    _, total = _note(replay, WOODGROVE, "pause quota charged")
    assert "0 days of woodgrove's pause quota charged" in total


# ---- the command ----------------------------------------------------------------------------


def test_tbes_demo_prints_the_monitor_and_exemption_lines(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["demo", "--db", str(tmp_path / "d.db"), "--report", str(tmp_path / "r.html")],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())  # notes wrap at the terminal's width
    assert f'{CONTOSO} (connector contoso, mode = "monitor")' in flat
    assert f"{CONTOSO}: monitor: would block 60 min/h." in flat  # under the report
    assert f"{WOODGROVE} exempt until {EXEMPT_UNTIL.date()}: {REASON}" in flat
    assert "EXEMPTION_ENDING" in flat
