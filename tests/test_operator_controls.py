"""Operator controls: monitor-only mode and exemptions outside the pause quota.

Monitor mode must change only the answer: a month replayed through two enforcers, one per
mode, stores the same states and sends the same events. An exemption must stop the clock
exactly as a pause of the same days does, with nothing charged to the quota. Expected
stages come from the SPEC's default stage table (stage 2 from day 30, 5 from day 60).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import logging
import signal
import socket
import types
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from daemon_support import (
    BLOCK_PREFIX,
    Daemon,
    ask_policy,
    config_text,
    free_port,
    seed_exchange_2007,
)
from tbes.adapters import _metrics
from tbes.adapters._milter_protocol import ACCEPT, Check
from tbes.adapters.aiosmtpd import EnforcingHandler
from tbes.adapters.config import AdapterConfig, ConnectorRule, make_enforcer, parse_config
from tbes.adapters.milter import decide_check
from tbes.adapters.postfix_policy import PolicyParser, decide_request
from tbes.catalog import Catalog
from tbes.cli import cli
from tbes.compliance import Compliance
from tbes.decision import Action, Decision, decide, monitored
from tbes.enforcer import FAIL_CLOSED_REPLY, Connection, Enforcer
from tbes.errors import AdapterConfigError, InvalidValueError, StoreError
from tbes.events import Event, EventKind
from tbes.exemption import Exemption
from tbes.ledger import Pause
from tbes.notifiers import CallbackNotifier
from tbes.policy import DEFAULT_POLICY, ConnectorKind
from tbes.state import ServerState
from tbes.store import MemoryStore
from tbes.store.sqlite import SQLiteStore

UTC = dt.UTC
CONNECTOR = "fabrikam-edge"
SERVER = "fabrikam-edge"
TENANT = "fabrikam"
T0 = dt.datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
OUTDATED = "15.1.2507.39"  # Exchange 2016 CU23 below the October 2025 SU
CATALOG = Catalog.default()
DAY = dt.timedelta(days=1)


def hop(build: str, by: str = "mail.fabrikam.example") -> str:
    return (
        f"from EXMBX01.fabrikam.local (10.0.0.7) by {by} (192.0.2.10) with Microsoft SMTP "
        f"Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id {build}; "
        "Mon, 5 Jan 2026 10:00:00 +0000"
    )


def conn(server_id: str = SERVER) -> Connection:
    return Connection(
        server_id, TENANT, ConnectorKind.ON_PREMISES, peer_ip="192.0.2.10", connector=CONNECTOR
    )


class Clock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def enforcer(store: MemoryStore, clock: Clock, events: list[Event], **options: object) -> Enforcer:
    return Enforcer(
        store,
        DEFAULT_POLICY,
        CATALOG,
        clock=clock,
        notifier=CallbackNotifier(events.append),
        **options,  # type: ignore[arg-type]
    )


def stored(store: MemoryStore, server_id: str = SERVER) -> ServerState:
    versioned = store.get(server_id)
    assert versioned is not None
    return versioned.value


def state(first: dt.datetime = T0, pauses: tuple[Pause, ...] = ()) -> ServerState:
    return ServerState(
        server_id=SERVER,
        tenant=TENANT,
        build=None,
        status=Compliance.OUTDATED,
        first_detected=first,
        last_seen=first,
        compliant_since=None,
        pauses=pauses,
    )


# ---- monitor mode --------------------------------------------------------------------------


def test_a_replayed_month_stores_the_same_in_both_modes_and_monitor_only_accepts() -> None:
    enforcing, monitoring = MemoryStore(), MemoryStore()
    told_enforcing: list[Event] = []
    told_monitoring: list[Event] = []
    clock = Clock()
    one = enforcer(enforcing, clock, told_enforcing)
    other = enforcer(monitoring, clock, told_monitoring, monitor_connectors=[CONNECTOR])
    answers: list[tuple[Decision, Decision]] = []
    # Every 97 minutes for 45 days: every minute of the hour, into stage 2 (day 30).
    at = T0
    while at < T0 + 45 * DAY:
        clock.now = at
        answers.append((one.check(conn(), [hop(OUTDATED)]), other.check(conn(), [hop(OUTDATED)])))
        assert stored(enforcing) == stored(monitoring)
        at += dt.timedelta(minutes=97)
    assert [e.id for e in told_enforcing] == [e.id for e in told_monitoring]
    assert {e.kind for e in told_enforcing} >= {EventKind.DETECTED, EventKind.STAGE_CHANGED}
    refused = [pair for pair in answers if pair[0].action is not Action.ACCEPT]
    assert refused, "the replay never reached a throttling stage"
    for enforced, watched in answers:
        assert watched.action is Action.ACCEPT
        assert watched.reply is None
        assert enforced.enforced
        assert not watched.enforced
        assert not watched.exempt
        assert (watched.would_action, watched.would_reply) == (enforced.action, enforced.reply)
        assert (watched.stage, watched.elapsed, watched.next_change) == (
            enforced.stage,
            enforced.elapsed,
            enforced.next_change,
        )


def test_only_the_connectors_in_monitor_mode_are_monitored() -> None:
    store, clock, events = MemoryStore(), Clock(T0 + 40 * DAY), list[Event]()
    checker = enforcer(store, clock, events, monitor_connectors=["another"])
    stored_state = state(T0)
    store.put(stored_state, expected_version=None)
    answers = set()
    for minute in range(60):
        clock.now = (T0 + 40 * DAY).replace(minute=minute)
        answers.add(checker.check(conn(), []).action)
    assert Action.THROTTLE in answers


@pytest.mark.parametrize("fail_closed", [False, True])
def test_monitor_mode_never_fails_closed(fail_closed: bool) -> None:
    class Broken(MemoryStore):
        def get(self, server_id: str) -> None:
            raise StoreError("down")

    checker = enforcer(
        Broken(), Clock(), [], fail_closed=fail_closed, monitor_connectors=[CONNECTOR]
    )
    decision = checker.check(conn(), [hop(OUTDATED)])
    assert decision.action is Action.ACCEPT
    assert decision.reply is None
    assert not decision.enforced
    expected = FAIL_CLOSED_REPLY if fail_closed else None
    assert decision.would_reply == expected
    # The same enforcer enforcing answers 451 when it fails closed.
    checker.monitor_connectors = frozenset()
    enforced = checker.check(conn(), [hop(OUTDATED)])
    assert enforced.reply == expected


def test_monitored_keeps_everything_but_the_answer() -> None:
    blocked = decide(state(), (T0 + 100 * DAY).replace(minute=0), DEFAULT_POLICY)
    for minute in range(60):
        decision = decide(state(), (T0 + 100 * DAY).replace(minute=minute), DEFAULT_POLICY)
        watched = monitored(decision)
        assert watched.action is Action.ACCEPT
        assert watched.reply is None
        assert (watched.would_action, watched.would_reply) == (decision.action, decision.reply)
        assert watched.enforced is False
        assert monitored(watched) is watched
        # What the slot filler made passes the class's own checks.
        assert attrs.evolve(watched) == watched
    assert blocked.stage is not None
    assert blocked.stage.block_minutes == 60


def test_a_decision_not_enforced_must_accept() -> None:
    with pytest.raises(InvalidValueError, match="not enforced accepts"):
        Decision(
            Action.BLOCK,
            None,
            FAIL_CLOSED_REPLY,
            False,
            False,
            dt.timedelta(0),
            None,
            "x",
            enforced=False,
        )
    with pytest.raises(InvalidValueError, match="enforced decision would answer"):
        Decision(
            Action.ACCEPT,
            None,
            None,
            False,
            False,
            dt.timedelta(0),
            None,
            "x",
            would_action=Action.BLOCK,
        )


# ---- adapters in monitor mode --------------------------------------------------------------

MONITOR_TOML = """
tenant = "fabrikam"
mode = "monitor"
fail_closed = true

[[connector]]
name = "fabrikam-edge"
kind = "on_premises"
networks = ["127.0.0.2/32"]
"""


def _blocking_enforcer(config: AdapterConfig) -> Enforcer:
    """An enforcer whose stored server is in stage 8 (blocked every minute) by its clock."""
    store = MemoryStore()
    # Seen lately, so it is active: it decides the policy service's header-less requests.
    store.put(attrs.evolve(state(T0), last_seen=T0 + 119 * DAY), expected_version=None)
    blocking = attrs.evolve(config, fixed_time=(T0 + 120 * DAY).replace(minute=7))
    return make_enforcer(blocking, store, catalog=CATALOG)


class _Raising:
    def check(self, conn: Connection, received: Sequence[str]) -> Decision:
        raise OSError("boom")


def test_adapters_accept_in_monitor_mode_even_failing_closed() -> None:
    config = parse_config(MONITOR_TOML)
    enforcing = attrs.evolve(config, mode="enforce")
    check = Check("127.0.0.2", None, None, (hop(OUTDATED),))
    assert b"550 5.7.230" in decide_check(check, _blocking_enforcer(enforcing), enforcing)
    assert decide_check(check, _blocking_enforcer(config), config) == ACCEPT
    assert decide_check(check, _Raising(), config) == ACCEPT
    assert b"451 4.3.0" in decide_check(check, _Raising(), enforcing)

    (request,) = PolicyParser().feed(
        b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=127.0.0.2\n\n"
    )
    assert decide_request(request, _blocking_enforcer(enforcing), enforcing).startswith("550")
    assert decide_request(request, _blocking_enforcer(config), config) == "DUNNO"
    assert decide_request(request, _Raising(), config) == "DUNNO"
    assert decide_request(request, _Raising(), enforcing).startswith("451")

    message = b"Received: " + hop(OUTDATED).encode() + b"\r\nSubject: x\r\n\r\nbody\r\n"
    session = types.SimpleNamespace(peer=("127.0.0.2", 2525))
    envelope = types.SimpleNamespace(original_content=message, content=message)
    server = types.SimpleNamespace()

    def data(checker: object, cfg: AdapterConfig) -> str:
        handler = EnforcingHandler(checker, cfg)  # type: ignore[arg-type]
        return asyncio.run(handler.handle_DATA(server, session, envelope))

    assert data(_blocking_enforcer(enforcing), enforcing).startswith("550")
    assert data(_blocking_enforcer(config), config).startswith("250")
    assert data(_Raising(), config).startswith("250")
    assert data(_Raising(), enforcing).startswith("451")


def test_a_connector_in_monitor_mode_never_fails_closed_under_a_global_enforce() -> None:
    # fail_closed and mode "enforce" for the configuration, "monitor" for fabrikam-edge only.
    per_connector = MONITOR_TOML.replace('mode = "monitor"\n', "", 1).replace(
        "networks =", 'mode = "monitor"\nnetworks ='
    )
    config = parse_config(per_connector)
    assert (config.mode, config.fail_closed) == ("enforce", True)
    monitored = Check("127.0.0.2", None, None, (hop(OUTDATED),))
    assert decide_check(monitored, _Raising(), config) == ACCEPT
    (request,) = PolicyParser().feed(
        b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=127.0.0.2\n\n"
    )
    assert decide_request(request, _Raising(), config) == "DUNNO"
    # A peer of no connector falls under the configuration's mode: it fails closed.
    elsewhere = Check("198.51.100.9", None, None, (hop(OUTDATED),))
    assert b"451 4.3.0" in decide_check(elsewhere, _Raising(), config)


def test_logs_and_metrics_show_both_the_answer_and_what_enforcement_would_have_given(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = parse_config(MONITOR_TOML)
    enforcing = attrs.evolve(config, mode="enforce")
    metrics = _metrics.enable()
    registry = metrics.registry  # type: ignore[attr-defined]

    def not_enforced() -> float:
        labels = {"adapter": "milter", "would_action": "BLOCK", "stage": "8"}
        return registry.get_sample_value("tbes_decisions_not_enforced_total", labels) or 0.0

    check = Check("127.0.0.2", None, None, (hop(OUTDATED),))
    before = not_enforced()
    with caplog.at_level(logging.INFO, logger="tbes.decisions"):
        assert decide_check(check, _blocking_enforcer(config), config) == ACCEPT
        assert not_enforced() == before + 1
        assert b"550 5.7.230" in decide_check(check, _blocking_enforcer(enforcing), enforcing)
        assert not_enforced() == before + 1  # an enforced block is no monitored one
    watched, enforced = [r.tbes for r in caplog.records if r.name == "tbes.decisions"]  # type: ignore[attr-defined]
    assert (watched["action"], watched["code"], watched["enforced"]) == ("ACCEPT", None, False)
    assert (watched["would"], watched["would_code"], watched["stage"]) == ("BLOCK", 550, 8)
    assert (enforced["action"], enforced["code"], enforced["enforced"]) == ("BLOCK", 550, True)
    assert (enforced["would"], enforced["would_code"]) == ("BLOCK", 550)


# ---- exemptions in the pure core -----------------------------------------------------------


def test_an_exemption_delays_every_later_stage_by_its_length() -> None:
    # Exempt days 10..19 (ten days) of the episode: stage 2 starts on day 40, not 30.
    exemption = Exemption(
        "migration partner",
        server=SERVER,
        since=(T0 + 10 * DAY).date(),
        until=(T0 + 20 * DAY).date(),
    )
    first = T0.replace(hour=0)
    plain = state(first)
    assert decide(plain, first + 30 * DAY + dt.timedelta(hours=1), DEFAULT_POLICY).stage.number == 2  # type: ignore[union-attr]
    before = decide(plain, first + 39 * DAY + dt.timedelta(hours=23), DEFAULT_POLICY, (exemption,))
    after = decide(plain, first + 40 * DAY + dt.timedelta(hours=1), DEFAULT_POLICY, (exemption,))
    assert before.stage is not None
    assert before.stage.number == 1
    assert after.stage is not None
    assert after.stage.number == 2
    assert before.next_change is not None
    assert before.next_change <= first + 40 * DAY
    inside = decide(plain, first + 15 * DAY, DEFAULT_POLICY, (exemption,))
    assert inside.exempt
    assert not inside.enforced
    assert inside.action is Action.ACCEPT
    assert inside.elapsed == 10 * DAY  # the clock stood still from day 10
    assert "exempt until 2026-01-25: migration partner" in inside.reason


@given(
    since=st.integers(min_value=-20, max_value=120),
    days=st.integers(min_value=1, max_value=60),
    at=st.integers(min_value=0, max_value=200 * 24 * 60),
)
def test_an_exemption_stops_the_clock_exactly_like_a_pause(since: int, days: int, at: int) -> None:
    first = T0
    start = (first + since * DAY).date()
    exemption = Exemption("r", server=SERVER, since=start, until=start + days * DAY)
    pause = Pause(SERVER, start, days)
    now = first + dt.timedelta(minutes=at)
    exempt = decide(state(first), now, DEFAULT_POLICY, (exemption,))
    paused = decide(state(first, (pause,)), now, DEFAULT_POLICY)
    assert (exempt.stage, exempt.elapsed, exempt.next_change) == (
        paused.stage,
        paused.elapsed,
        paused.next_change,
    )
    assert exempt.exempt is paused.paused  # exempt exactly where the pause holds
    assert exempt.action is paused.action
    assert not exempt.paused
    assert attrs.evolve(exempt) == exempt  # valid by the class's own checks


def test_an_exemption_without_since_covers_the_whole_episode_until_it_ends() -> None:
    exemption = Exemption("partner", server=SERVER, until=(T0 + 50 * DAY).date())
    during = decide(state(), T0 + 40 * DAY, DEFAULT_POLICY, (exemption,))
    assert during.exempt
    assert during.elapsed == dt.timedelta(0)
    ended = decide(state(), T0 + 51 * DAY, DEFAULT_POLICY, (exemption,))
    assert ended.enforced
    assert not ended.exempt
    assert ended.stage is not None
    assert ended.stage.number == 1


def test_exemption_values_are_checked() -> None:
    with pytest.raises(InvalidValueError, match="names no connector"):
        Exemption("r")
    with pytest.raises(InvalidValueError, match="end after it starts"):
        Exemption("r", server="a", since=dt.date(2027, 1, 2), until=dt.date(2027, 1, 1))
    with pytest.raises(InvalidValueError, match="CIDR"):
        Exemption("r", network="not a network")
    with pytest.raises(InvalidValueError, match="exemptions"):
        decide(state(), T0, DEFAULT_POLICY, [Exemption("r", server="a")])  # type: ignore[arg-type]


def test_exemption_matching() -> None:
    by_host = Exemption("r", connector="Edge", server="Mail.Fabrikam.Example.")
    assert by_host.applies("edge/mail.fabrikam.example", connector="edge")
    assert not by_host.applies("edge/mail.fabrikam.example", connector="other")
    by_network = Exemption("r", network="192.0.2.0/24")
    assert by_network.applies("x", peer_ip="192.0.2.10")
    assert not by_network.applies("x", peer_ip="198.51.100.1")
    assert not by_network.applies("x")  # no address, no match (reports)


_NAMES = st.text("abcdef-", min_size=1, max_size=6)
_HOSTS = st.builds("{}.example".format, st.text("abc", min_size=1, max_size=3))


@given(name=_NAMES, prefix=_NAMES, host=_HOSTS, other=_HOSTS, peer=_NAMES)
def test_a_host_exemption_covers_exactly_its_host_behind_its_connector(
    name: str, prefix: str, host: str, other: str, peer: str
) -> None:
    # Whatever the id's prefix (the rule's server_id or name), the host part decides, and
    # only through the connector the exemption names.
    exemption = Exemption("r", connector=name, server=host.upper() + ".")
    assert exemption.applies(f"{prefix}/{host}", connector=name)
    assert exemption.applies(f"{prefix}/{other}", connector=name) == (other == host)
    assert not exemption.applies(prefix, connector=name)  # a connector-level id
    assert exemption.applies(f"{prefix}/{host}", connector=peer) == (
        peer.casefold() == name.casefold()
    )


def test_a_host_exemption_reaches_the_servers_of_a_rule_whose_server_id_is_not_its_name() -> None:
    # Server ids are SERVER_ID/HOST when the rule has a server_id; the exemption names the
    # rule by its name. It once built NAME/HOST and so never matched such a server.
    toml = """
tenant = "receiver"
identity = "server"

[[connector]]
name = "fabrikam-edge"
server_id = "fabrikam-ex2007"
kind = "on_premises"
tenant = "fabrikam"
networks = ["203.0.113.0/28"]

[[exemption]]
connector = "fabrikam-edge"
server = "Mail.Fabrikam.Example"
reason = "migration partner"

[testing]
fixed_time = {now}
"""
    config = parse_config(toml.format(now=T0.isoformat()))
    (exemption,) = config.exemptions
    assert config.exemptions_for("fabrikam-ex2007/mail.fabrikam.example") == (exemption,)
    assert config.exemptions_for("fabrikam-ex2007/other.fabrikam.example") == ()
    assert config.exemptions_for("fabrikam-ex2007") == ()  # the connector-level state
    # And through the enforcer: an Exchange 2007 server 95 days in is accepted as exempt.
    store = MemoryStore()
    conn = config.connection(
        peer_ip="203.0.113.5", peer_host="mail.fabrikam.example", tls_subject=None
    )
    hop = (
        "from EXHUB01.fabrikam.local (10.1.2.3) by mail.fabrikam.example (10.1.2.4) with "
        "Microsoft SMTP Server (TLS) id 8.3.83.6; Mon, 3 Nov 2025 09:00:00 +0100"
    )
    make_enforcer(config, store, catalog=CATALOG).check(conn, [hop])
    later = parse_config(toml.format(now=(T0 + 95 * DAY).isoformat()))
    decision = make_enforcer(later, store, catalog=CATALOG).check(conn, [hop])
    assert decision.exempt
    assert decision.action is Action.ACCEPT


# ---- exemptions in the enforcer ------------------------------------------------------------


def test_an_exempted_server_is_accepted_and_nothing_is_charged() -> None:
    store, clock, events = MemoryStore(), Clock(), list[Event]()
    until = (T0 + 40 * DAY).date()
    exemption = Exemption("migration partner", connector=CONNECTOR, until=until)
    checker = enforcer(store, clock, events, exemptions=[exemption])
    for day in range(0, 39):
        for minute in range(0, 60, 7):
            clock.now = (T0 + day * DAY).replace(minute=minute)
            decision = checker.check(conn(), [hop(OUTDATED)])
            assert decision.action is Action.ACCEPT
            assert decision.exempt
    assert store.get_ledger(TENANT) is None  # no quota charged
    # The exemption ends on its own: enforcement resumes at day 1 of the timeline.
    clock.now = T0 + 41 * DAY
    after = checker.check(conn(), [hop(OUTDATED)])
    assert after.enforced
    assert after.stage is not None
    assert after.stage.number == 1


def test_the_ending_warning_is_sent_once_with_one_id_for_every_process() -> None:
    store = MemoryStore()
    clock = Clock()
    told: list[Event] = []
    until = (T0 + 30 * DAY).date()
    exemption = Exemption("migration partner", connector=CONNECTOR, until=until)
    first = enforcer(store, clock, told, exemptions=[exemption])
    second = enforcer(store, clock, told, exemptions=[exemption])
    for hour in range(0, 30 * 24, 5):
        clock.now = T0 + dt.timedelta(hours=hour)
        first.check(conn(), [hop(OUTDATED)])
        second.check(conn(), [hop(OUTDATED)])
    warnings = [e for e in told if e.kind is EventKind.EXEMPTION_ENDING]
    assert len(warnings) == 2  # one per process, both with the same deterministic id
    assert warnings[0].id == warnings[1].id
    assert warnings[0].at >= dt.datetime.combine(until, dt.time(), UTC) - 7 * DAY


# ---- configuration -------------------------------------------------------------------------

EXEMPTIONS_TOML = """
tenant = "contoso"

[[connector]]
name = "fabrikam-edge"
kind = "on_premises"
mode = "monitor"
networks = ["203.0.113.0/28"]

[[connector]]
name = "northwind"
kind = "on_premises"
networks = ["198.51.100.0/28"]

[[exemption]]
connector = "fabrikam-edge"
server = "mail.fabrikam.example"
reason = "migration partner"
until = 2027-03-01

[[exemption]]
network = "198.51.100.0/29"
reason = "lab"
"""


def test_modes_and_exemptions_are_read_and_reach_the_enforcer() -> None:
    config = parse_config(EXEMPTIONS_TOML)
    assert config.monitor_connectors == frozenset({"fabrikam-edge"})
    first, second = config.exemptions
    assert first.until == dt.date(2027, 3, 1)
    assert first.describe() == ("exempt until 2027-03-01: migration partner")
    assert config.exemptions_for("fabrikam-edge/mail.fabrikam.example") == (first,)
    assert config.exemptions_for("northwind", peer_ip="198.51.100.3") == (second,)
    built = make_enforcer(config, MemoryStore(), catalog=CATALOG)
    assert built.monitor_connectors == config.monitor_connectors
    assert built.exemptions == config.exemptions


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('mode = "watch"', "mode = 'watch'"),
        ('[[exemption]]\nserver = "mail.fabrikam.example"\nreason = "r"', "host name"),
        ('[[exemption]]\nconnector = "nope"\nreason = "r"', "no \\[\\[connector\\]\\] has"),
        ('[[exemption]]\nnetwork = "192.0.2.0/24"', "reason"),
        ('[[exemption]]\nnetwork = "192.0.2.0/24"\nreason = "r"\nuntil = "soon"', "until"),
        ('[[exemption]]\nnetwork = "192.0.2.0/24"\nreason = "r"\nwhy = 1', "unknown key"),
        ("[[exemption]]\nreason = 'r'", "names no connector"),
    ],
)
def test_bad_controls_are_refused_with_a_clear_error(toml: str, message: str) -> None:
    with pytest.raises(AdapterConfigError, match=message):
        parse_config(toml)


def test_a_connector_rule_mode_overrides_the_default() -> None:
    rule = ConnectorRule(
        kind=ConnectorKind.ON_PREMISES,
        tenant="t",
        name="a",
        networks=("192.0.2.0/24",),
        mode="enforce",
    )
    config = AdapterConfig(connectors=(rule,), mode="monitor")
    assert config.monitor_connectors == frozenset()
    assert not config.monitors("a")


# ---- tbes report and tbes server show ------------------------------------------------------

CLI_TOML = """
tenant = "fabrikam"

[[connector]]
name = "fabrikam-edge"
kind = "on_premises"
networks = ["203.0.113.0/28"]

[[connector]]
name = "northwind"
kind = "on_premises"
tenant = "northwind"
mode = "monitor"
networks = ["198.51.100.0/28"]

[[exemption]]
server = "fabrikam-edge"
reason = "migration partner"
until = 2026-06-01
"""


def test_report_and_server_show_name_exemptions_and_monitor_mode(tmp_path: Path) -> None:
    db, config = tmp_path / "tbes.db", tmp_path / "adapters.toml"
    config.write_text(CLI_TOML, encoding="utf-8")
    store = SQLiteStore(db)
    store.put(state(T0), expected_version=None)
    store.put(
        attrs.evolve(state(T0), server_id="northwind", tenant="northwind"), expected_version=None
    )
    store.close()
    at = (T0 + 120 * DAY).isoformat()
    runner = CliRunner()
    plain = runner.invoke(cli, ["report", "--db", str(db), "--at", at], catch_exceptions=False)
    assert "exempt" not in plain.output
    assert "monitor" not in plain.output
    shown = runner.invoke(
        cli,
        ["report", "--db", str(db), "--at", at, "--config", str(config), "--format", "csv"],
        catch_exceptions=False,
    )
    rows = {row["server"]: row for row in csv.DictReader(io.StringIO(shown.output))}
    assert rows["fabrikam-edge"]["control"] == "exempt until 2026-06-01: migration partner"
    assert rows["northwind"]["control"] == "monitor: would block 60 min/h"
    # Exempt since ever until June: 147 days frozen, so still stage 1 on day 121.
    assert rows["fabrikam-edge"]["stage"] == "1"
    assert rows["fabrikam-edge"]["NextStageStartDate"].startswith("2026-07-01")
    show = runner.invoke(
        cli,
        ["server", "show", "northwind", "--db", str(db), "--at", at, "--config", str(config)],
        catch_exceptions=False,
    )
    assert "Mode: monitor." in show.output
    assert "At 2026-05-05 10:00 UTC: ACCEPT. monitor mode, would block (550)" in show.output
    show = runner.invoke(
        cli,
        ["server", "show", SERVER, "--db", str(db), "--at", at, "--config", str(config)],
        catch_exceptions=False,
    )
    assert "Exemption: exempt until 2026-06-01: migration partner." in show.output


def test_an_exempt_server_announces_only_the_stages_its_held_clock_reaches() -> None:
    # Exempt days 10..39 (30 days) of the episode: stage 2 starts on day 60, not day 30.
    first = T0.replace(hour=0)
    exemption = Exemption(
        "migration partner",
        connector=CONNECTOR,
        since=(first + 10 * DAY).date(),
        until=(first + 40 * DAY).date(),
    )
    store, clock, told = MemoryStore(), Clock(first), list[Event]()
    checker = enforcer(store, clock, told, exemptions=[exemption])
    for day in range(0, 65):
        clock.now = first + day * DAY + dt.timedelta(hours=12)
        checker.check(conn(), [hop(OUTDATED)])
    stages = [(e.kind, e.stage, e.at.date()) for e in told if e.kind is EventKind.STAGE_CHANGED]
    assert stages == [(EventKind.STAGE_CHANGED, 2, (first + 60 * DAY).date())]
    (detected,) = [e for e in told if e.kind is EventKind.DETECTED]
    # The next change it names is the delayed start of stage 2.
    assert detected.next_change == detected.episode_start + 60 * DAY  # type: ignore[operator]


def test_config_check_shows_monitor_mode_and_exemptions(tmp_path: Path) -> None:
    config = tmp_path / "adapters.toml"
    config.write_text(EXEMPTIONS_TOML, encoding="utf-8")
    result = CliRunner().invoke(cli, ["config", "check", str(config)], catch_exceptions=False)
    lines = result.output.splitlines()
    (fabrikam,) = [line for line in lines if line.startswith("  1. fabrikam-edge")]
    assert "monitor mode" in fabrikam
    (northwind,) = [line for line in lines if line.startswith("  2. northwind")]
    assert "monitor" not in northwind
    assert (
        "  1. connector fabrikam-edge, server mail.fabrikam.example: "
        "exempt until 2027-03-01: migration partner" in lines
    )
    assert "  2. network 198.51.100.0/29: exempt: lab" in lines


# ---- reloads: exemptions and modes are configuration ---------------------------------------


def test_a_reload_follows_the_exemptions_and_modes_of_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "adapters.toml"
    plain = config_text(with_rule=True)
    config.write_text(plain, encoding="utf-8")
    db = tmp_path / "t.db"
    seed_exchange_2007(db)
    port = free_port()
    args = ["policy", "--listen", f"127.0.0.1:{port}", "--db", str(db), "--config", str(config)]
    exempt = plain + '\n[[exemption]]\nconnector = "fabrikam-edge"\nreason = "migration"\n'
    monitored = plain.replace('tenant = "contoso"\n', 'tenant = "contoso"\nmode = "monitor"\n', 1)
    with Daemon(tmp_path, args, [port]) as daemon:
        answers = []
        for reloads, text in enumerate([exempt, monitored, plain], start=1):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                answers.append(ask_policy(sock))
            config.write_text(text, encoding="utf-8")
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log("tbes: reloaded", count=reloads)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            answers.append(ask_policy(sock))
        assert daemon.stop() == 0
    blocked, dunno = BLOCK_PREFIX, b"action=DUNNO\n\n"
    # Before the exemption, under it, in monitor mode, and once both are gone again.
    assert answers[0].startswith(blocked)
    assert answers[1:3] == [dunno, dunno]
    assert answers[3].startswith(blocked)
