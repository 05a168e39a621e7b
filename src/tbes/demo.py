"""The demo scenario: four months of one tenant's mail, replayed through the real Enforcer.

Tenant *fabrikam* runs an Exchange 2007 server (unsupported), an Exchange 2016 server a year
behind on updates (CU23 Apr24HU, 15.1.2507.39), an up-to-date Exchange 2019 CU15 (Oct25SU)
and an Exchange SE server; a partner, *tailspin*, is cloud-only (Exchange Online, 15.20).
From 15 October 2026 to 15 February 2027 each server sends a few messages a day, each with
the Received headers its Exchange version writes, through the :class:`~tbes.enforcer.Enforcer`
on the embedded SQLite store, with a simulated clock. On 1 December the administrator buys a
30-day pause for the 2016 server (it crosses the year end, so both years' quotas pay), and on
8 January the server is updated to the June 2026 SU and is remediated. Senders retry a
throttled (450) message every 15 minutes for up to two days, as Exchange does; a blocked (550)
message bounces. A second tenant, *northwind*, sends through one connector,
``northwind-edge``, from two servers: an old Exchange 2013 and an up-to-date Exchange SE.
Each has its own state (``northwind-edge/HOST``), so the 2013 server is throttled and blocked
on schedule while the SE server is always accepted; on 9 February northwind's administrator
pauses the whole tenant for 10 days (one quota day per day, whatever the number of servers).
An Exchange 2013 at *litware* (:data:`UNMAPPED`) sends a message a week from an address no
connector rule maps: accepted, and discovered (docs/discovery.md). The operator's
controls come from the TOML of :data:`CONTROLS`, as the daemons read it: *contoso*'s Exchange
2013 (:data:`MONITORED`) comes through a connector in monitor mode, accepted while tbes stores
what enforcement would have done; *woodgrove*'s Exchange 2016 (:data:`EXEMPTED`) is exempted
from 1 December to 15 January, its clock frozen without a quota (docs/operator-controls.md).

This is shell code: it reads no clock (the clock is simulated) but writes the database; the
randomness (minutes of sending) comes from a fixed seed, so every run replays the same mail.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import functools
import heapq
import os
import random
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from tbes.adapters.config import AdapterConfig, parse_config
from tbes.catalog import Catalog
from tbes.decision import Action
from tbes.enforcer import Connection, Enforcer
from tbes.events import Event
from tbes.identity import Identity
from tbes.ledger import PauseLedger
from tbes.notifiers import CallbackNotifier
from tbes.policy import ConnectorKind, Policy
from tbes.render import render_report
from tbes.report import ReportRow, report_row
from tbes.store import DiscoveryQueue
from tbes.store.memory import MemoryStore
from tbes.store.sqlite import SQLiteStore
from tbes.version import ExchangeBuild

__all__ = [
    "CONNECTOR",
    "CONNECTOR_TENANT",
    "CONTROLS",
    "END",
    "EXEMPTED",
    "MONITORED",
    "PAUSE_DAYS",
    "PAUSE_START",
    "POLICY_NAME",
    "SENDERS",
    "START",
    "TENANT",
    "TENANT_PAUSE_DAYS",
    "TENANT_PAUSE_START",
    "UNMAPPED",
    "Delivered",
    "DemoResult",
    "Sender",
    "SenderStats",
    "controls",
    "deliver_events",
    "demo_policy",
    "run",
]

UTC = dt.UTC
TENANT = "fabrikam"
START = dt.datetime(2026, 10, 15, tzinfo=UTC)
END = dt.datetime(2027, 2, 15, 18, 0, tzinfo=UTC)
"""The end of the replay and the instant the report is made at."""

POLICY_NAME = "exchange_online_2026"
PAUSE_BOUGHT = dt.datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
PAUSE_START = dt.date(2026, 12, 5)
PAUSE_DAYS = 30
CONNECTOR_TENANT = "northwind"
CONNECTOR = "northwind-edge"
TENANT_PAUSE_BOUGHT = dt.datetime(2027, 2, 9, 10, 0, tzinfo=UTC)
TENANT_PAUSE_START = dt.date(2027, 2, 10)
TENANT_PAUSE_DAYS = 10
_SEED = 20261015
_RETRY = dt.timedelta(minutes=15)
_EXPIRY = dt.timedelta(days=2)  # Exchange's default message expiration

_TLS = "version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"


@attrs.frozen
class Sender:
    """A sending server of the scenario: where it connects from and what it runs when."""

    server_id: str
    tenant: str
    kind: ConnectorKind
    ip: str
    internal: str
    builds: tuple[tuple[dt.datetime, ExchangeBuild], ...]
    per_day: tuple[int, int]
    cloud: bool = False
    connector: str | None = None  # a named connector with a state per server behind it

    @property
    def peer_host(self) -> str:
        """The host name the server connects from."""
        if self.cloud:
            return "tailspin-com.mail.protection.outlook.com"
        return self.server_id

    def build_at(self, at: dt.datetime) -> ExchangeBuild:
        """The build the server runs at ``at`` (the last one installed by then)."""
        current = self.builds[0][1]
        for since, build in self.builds:
            if since <= at:
                current = build
        return current


def _b(text: str) -> ExchangeBuild:
    return ExchangeBuild.parse(text)


SENDERS: tuple[Sender, ...] = (
    Sender(
        "ex2007.fabrikam.example",
        TENANT,
        ConnectorKind.ON_PREMISES,
        "203.0.113.7",
        "EXHUB07.fabrikam.local",
        ((START, _b("8.3.517.0")),),  # Exchange 2007 SP3 RU23
        (2, 4),
    ),
    Sender(
        "ex2016.fabrikam.example",
        TENANT,
        ConnectorKind.ON_PREMISES,
        "203.0.113.16",
        "EX16MBX01.fabrikam.local",
        (
            (START, _b("15.1.2507.39")),  # CU23 Apr24HU
            (dt.datetime(2027, 1, 8, 19, 0, tzinfo=UTC), _b("15.1.2507.69")),  # Jun26SU
        ),
        (2, 5),
    ),
    Sender(
        "ex2019.fabrikam.example",
        TENANT,
        ConnectorKind.ON_PREMISES,
        "203.0.113.19",
        "EX19MBX01.fabrikam.local",
        ((START, _b("15.2.1748.39")),),  # CU15 Oct25SU
        (2, 4),
    ),
    Sender(
        "exse.fabrikam.example",
        TENANT,
        ConnectorKind.ON_PREMISES,
        "203.0.113.25",
        "EXSE-MBX1.fabrikam.local",
        ((START, _b("15.2.2562.46")),),  # SE RTM Aug26SU
        (2, 4),
    ),
    Sender(
        "tailspin-partner",
        "tailspin",
        ConnectorKind.PARTNER,
        "52.101.68.14",
        "AM9PR04MB8120.eurprd04.prod.outlook.com",
        ((START, _b("15.20.9137.21")),),  # Exchange Online
        (1, 3),
        cloud=True,
    ),
    *(
        Sender(
            host,
            CONNECTOR_TENANT,
            ConnectorKind.ON_PREMISES,
            "198.51.100.7",  # both leave through one edge: one peer, one connector
            internal,
            ((START, _b(build)),),
            (1, 2),
            connector=CONNECTOR,
        )
        for host, internal, build in (
            ("ex2013.northwind.example", "EX13MBX01.northwind.local", "15.0.1497.48"),  # CU23
            ("exse.northwind.example", "EXSE-MBX1.northwind.local", "15.2.2562.46"),  # Aug26SU
        )
    ),
)
"""The sending servers: fabrikam's four on-premises servers, a cloud-only partner, and
northwind's two servers behind one connector."""


UNMAPPED = Sender(
    "mail.litware.example",
    "litware",
    ConnectorKind.INTERNET,
    "198.51.100.13",
    "LW-EX13.litware.local",
    ((START, _b("15.0.1497.2")),),  # Exchange 2013 CU23: no rule names it
    (1, 1),
)
"""An Exchange 2013 that sends without a connector rule: accepted, and discovered."""


MONITORED = Sender(
    "mail.contoso.example",
    "contoso",
    ConnectorKind.ON_PREMISES,
    "198.51.100.40",
    "CON-EX13.contoso.local",
    ((START, _b("15.0.1497.2")),),  # Exchange 2013 CU23: unsupported
    (1, 1),
)
"""An Exchange 2013 behind a connector in monitor mode: accepted, its episode stored."""

EXEMPTED = Sender(
    "mail.woodgrove.example",
    "woodgrove",
    ConnectorKind.PARTNER,
    "198.51.100.50",
    "WG-EX16.woodgrove.local",
    ((START, _b("15.1.2507.39")),),  # Exchange 2016 CU23 Apr24HU, as fabrikam's was
    (1, 1),
)
"""An outdated Exchange 2016 at a partner, exempted for a while (:data:`CONTROLS`)."""

CONTROLS = """\
[[connector]]
name = "contoso"
kind = "on_premises"
tenant = "contoso"
server_id = "mail.contoso.example"
networks = ["198.51.100.40/32"]
identity = "connector"  # one server behind it: one state, named by the rule
mode = "monitor"

[[connector]]
name = "woodgrove"
kind = "partner"
tenant = "woodgrove"
server_id = "mail.woodgrove.example"
networks = ["198.51.100.50/32"]
identity = "connector"

[[exemption]]
connector = "woodgrove"
reason = "migration partner, moving to Exchange Online"
since = 2026-12-01
until = 2027-01-15
"""
"""The operator's controls of the scenario, in the daemons' TOML (docs/operator-controls.md)."""


@functools.cache
def controls() -> AdapterConfig:
    """:data:`CONTROLS` read as the daemons read their configuration file."""
    return parse_config(CONTROLS, source="the demo's controls")


def demo_policy() -> Policy:
    """Microsoft's 2026 rules, enforced on partner connectors as well as on-premises ones.

    Enforcing partners too lets the cloud-only partner's mail go through the header
    checks, which find no on-premises Exchange in it and leave it alone.
    """
    return attrs.evolve(
        Policy.named(POLICY_NAME, catalog=Catalog.default()),  # a fixed preset: reads none
        connectors=frozenset({ConnectorKind.ON_PREMISES, ConnectorKind.PARTNER}),
    )


@attrs.define
class SenderStats:
    """What happened to one server's mail: messages sent and how each ended."""

    messages: int = 0
    delivered: int = 0
    delivered_late: int = 0
    deferrals: int = 0
    bounced: int = 0
    expired: int = 0
    queued: int = 0


@attrs.frozen
class DemoResult:
    """The outcome of a replay: per-server counts, the tenant's ledger and the report."""

    stats: dict[str, SenderStats]
    ledger: PauseLedger | None
    report: Path
    rows: tuple[ReportRow, ...]
    checks: int


@attrs.frozen
class _Attempt:
    """One delivery attempt of a message: when, by which sender, and how many went before."""

    at: dt.datetime
    sender: int
    first: dt.datetime
    tries: int


# The queue orders attempts by time, then by the order they were made (never by attempt).
_Queued = tuple[dt.datetime, int, _Attempt]


class _Clock:
    """The simulated clock the enforcer reads."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def run(
    db: Path,
    report: Path,
    *,
    on_event: Callable[[Event], None] = lambda event: None,
    on_note: Callable[[dt.datetime, str], None] = lambda at, text: None,
    on_progress: Callable[[float], None] = lambda share: None,
    catalog: Catalog | None = None,
) -> DemoResult:
    """Replay the scenario into a fresh SQLite database at ``db``; write the HTML report.

    ``on_event`` receives the enforcer's events (detections, stage changes, pause,
    remediation), ``on_note`` the scenario's own remarks, and ``on_progress`` the share of
    the simulated time replayed so far. ``db`` must not exist yet.
    """
    catalog = catalog or Catalog.default()
    policy = demo_policy()
    clock = _Clock(START)
    stats = {sender.server_id: SenderStats() for sender in SENDERS}
    with _scratch(db) as path:
        store = SQLiteStore(path)
        try:
            enforcer = Enforcer(
                store,
                policy,
                catalog,
                clock=clock,
                notifier=CallbackNotifier(on_event),
                outbox=True,  # for deliver_events
            )
            checks = _replay(enforcer, clock, stats, on_note, on_progress)
            checks += _discover_unmapped(store, policy, catalog, on_note)
            checks += _monitor_connector(store, policy, catalog, on_event, on_note)
            checks += _exempt_partner(store, policy, catalog, on_event, on_note)
            on_note(
                END,
                "Senders can check themselves by mail: see tbes responder (docs/self-check.md).",
            )
            stored = store.get_ledger(TENANT)
            states = list(store.states())
        finally:
            store.close()
    subtitle = (
        f"tenant {TENANT} · simulated {START:%Y-%m-%d} to {END:%Y-%m-%d} · "
        f"as of {END:%Y-%m-%d %H:%M} UTC · policy {POLICY_NAME}"
    )
    page = render_report(
        states,
        "html",
        now=END,
        policy=policy,
        catalog=catalog,
        title="tbes demo: Exchange enforcement report",
        subtitle=subtitle,
        exemptions=controls().exemptions_for,
        monitors=controls().monitors,
    )
    report.write_text(page, encoding="utf-8")
    ledger = None if stored is None else stored.value
    ordered = sorted(states, key=lambda state: (state.tenant, state.server_id))
    rows = tuple(
        report_row(
            state,
            END,
            policy,
            catalog,
            exemptions=controls().exemptions_for(state.server_id),
            monitor=controls().monitors(state.server_id),
        )
        for state in ordered
    )
    return DemoResult(stats, ledger, report, rows, checks)


@contextlib.contextmanager
def _scratch(db: Path) -> Iterator[Path]:
    """Where to replay: a database in memory-backed ``/dev/shm`` copied to ``db`` at the end.

    The store syncs every commit to disk, as an MTA's store must; the demo's thousands of
    commits need no such care, and on a busy disk the syncs would take most of its time.
    Where there is no ``/dev/shm``, the replay writes ``db`` directly.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield db
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="tbes-demo-") as scratch:
        path = Path(scratch) / "demo.db"
        yield path
        source, target = sqlite3.connect(path), sqlite3.connect(db)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()


def _replay(
    enforcer: Enforcer,
    clock: _Clock,
    stats: dict[str, SenderStats],
    on_note: Callable[[dt.datetime, str], None],
    on_progress: Callable[[float], None],
) -> int:
    queue: list[_Queued] = [(a.at, seq, a) for seq, a in enumerate(_first_attempts())]
    heapq.heapify(queue)
    seq = len(queue)
    actions = list(_ACTIONS)
    checks = 0
    span = (END - START).total_seconds()
    last_share = -1.0
    while queue and queue[0][0] <= END:
        _, _, attempt = heapq.heappop(queue)
        while actions and attempt.at >= actions[0][0]:
            when, act = actions.pop(0)
            clock.now = when
            act(enforcer, on_note)
        clock.now = attempt.at
        retry = _deliver(enforcer, attempt, stats)
        checks += 1
        if retry is not None:
            seq += 1
            heapq.heappush(queue, (retry.at, seq, retry))
        share = round((attempt.at - START).total_seconds() / span, 2)
        if share > last_share:
            last_share = share
            on_progress(share)
    for _, _, attempt in queue:
        stats[SENDERS[attempt.sender].server_id].queued += 1
    on_progress(1.0)
    return checks


def _first_attempts() -> Iterator[_Attempt]:
    rng = random.Random(_SEED)
    # The servers behind a connector draw from their own stream: the others' mail stays
    # what it was before they joined the scenario.
    behind = random.Random(_SEED + 1)
    day = START
    while day <= END:
        for index, sender in enumerate(SENDERS):
            draw = behind if sender.connector is not None else rng
            for _ in range(draw.randint(*sender.per_day)):
                # Office hours in Europe: 06:00 to 18:00 UTC, any minute and second.
                at = day + dt.timedelta(hours=6, seconds=draw.randrange(12 * 3600))
                if at <= END:
                    yield _Attempt(at, index, at, 0)
        day += dt.timedelta(days=1)


def _deliver(
    enforcer: Enforcer, attempt: _Attempt, stats: dict[str, SenderStats]
) -> _Attempt | None:
    """One delivery attempt; returns the retry to schedule, if any."""
    sender = SENDERS[attempt.sender]
    counts = stats[sender.server_id]
    if attempt.tries == 0:
        counts.messages += 1
    decision = enforcer.check(_sender_connection(sender), received_headers(sender, attempt.first))
    if decision.action is Action.ACCEPT:
        counts.delivered += 1
        counts.delivered_late += attempt.tries > 0
        return None
    if decision.action is Action.BLOCK:
        counts.bounced += 1
        return None
    counts.deferrals += 1
    retry_at = attempt.at + _RETRY
    if retry_at - attempt.first > _EXPIRY:
        counts.expired += 1
        return None
    return _Attempt(retry_at, attempt.sender, attempt.first, attempt.tries + 1)


def _discover_unmapped(
    store: SQLiteStore,
    policy: Policy,
    catalog: Catalog,
    on_note: Callable[[dt.datetime, str], None],
) -> int:
    """Northwind's unmapped Exchange 2013 sends a message a week: never enforced, but
    discovered (docs/discovery.md). Returns the number of connections checked."""
    sender = UNMAPPED
    clock = _Clock(START)
    queue = DiscoveryQueue(store)
    enforcer = Enforcer(store, policy, catalog, clock=clock, discovery=queue)
    connection = Connection(
        server_id=sender.ip,  # no rule, no name of the operator's: the MTA's view only
        tenant=TENANT,
        kind=sender.kind,
        peer_ip=sender.ip,
        peer_host=sender.peer_host,
    )
    checks = 0
    at = START + dt.timedelta(hours=10)
    try:
        while at <= END:
            clock.now = at
            enforcer.check(connection, received_headers(sender, at))
            checks += 1
            at += dt.timedelta(days=7)
    finally:
        queue.close()  # writes the sightings
    on_note(
        END,
        f"{sender.peer_host} ({sender.ip}) sent {checks} messages as Exchange 2013 without a "
        "connector rule: accepted, and discovered; see tbes report --discovered "
        "(docs/discovery.md).",
    )
    return checks


def _daily(sender: Sender) -> Iterator[dt.datetime]:
    """A message a day from ``sender`` at 11:00 UTC, from the first day to the last."""
    at = START + dt.timedelta(hours=11)
    while at <= END:
        yield at
        at += dt.timedelta(days=1)


def _controlled(
    store: SQLiteStore,
    policy: Policy,
    catalog: Catalog,
    clock: _Clock,
    on_event: Callable[[Event], None],
) -> Enforcer:
    """An enforcer with the controls of :data:`CONTROLS`, as ``make_enforcer`` builds one."""
    config = controls()
    return Enforcer(
        store,
        policy,
        catalog,
        clock=clock,
        notifier=CallbackNotifier(on_event),
        monitor_connectors=config.monitor_connectors,
        exemptions=config.exemptions,
        outbox=True,  # its events are delivered too (deliver_events)
    )


def _connection(sender: Sender) -> Connection:
    """The connection the daemons make of the sender's peer, by the rules of :data:`CONTROLS`."""
    return controls().connection(peer_ip=sender.ip, peer_host=sender.peer_host, tls_subject=None)


def _monitor_connector(
    store: SQLiteStore,
    policy: Policy,
    catalog: Catalog,
    on_event: Callable[[Event], None],
    on_note: Callable[[dt.datetime, str], None],
) -> int:
    """Contoso's Exchange 2013 sends a message a day through a connector in monitor mode:
    every message accepted, and the same state stored as an enforcing twin stores (the
    twin's store is thrown away). Returns the number of connections checked."""
    sender = MONITORED
    clock = _Clock(START)
    enforcer = _controlled(store, policy, catalog, clock, on_event)
    twin = Enforcer(MemoryStore(), policy, catalog, clock=clock)  # enforce mode
    connection = _connection(sender)
    would = dict.fromkeys(Action, 0)
    accepted = checks = 0
    for at in _daily(sender):
        clock.now = at
        headers = received_headers(sender, at)
        decision = enforcer.check(connection, headers)
        twin.check(connection, headers)
        checks += 1
        accepted += decision.action is Action.ACCEPT
        would[decision.would_action or decision.action] += 1
    stored, enforced = store.get(connection.server_id), twin.store.get(connection.server_id)
    same = stored is not None and enforced is not None and stored.value == enforced.value
    row = None if stored is None else report_row(stored.value, END, policy, catalog, monitor=True)
    on_note(
        END,
        f'{connection.server_id} (connector {connection.connector}, mode = "monitor") sent '
        f"{checks} messages as Exchange 2013: {accepted} accepted; enforcement would have "
        f"throttled {would[Action.THROTTLE]} and blocked {would[Action.BLOCK]}; now "
        f"{row.control if row is not None else 'monitor'}. Stored state "
        f"{'identical to' if same else 'DIFFERENT from'} enforce mode's "
        "(docs/operator-controls.md).",
    )
    return checks


def _exempt_partner(
    store: SQLiteStore,
    policy: Policy,
    catalog: Catalog,
    on_event: Callable[[Event], None],
    on_note: Callable[[dt.datetime, str], None],
) -> int:
    """Woodgrove's Exchange 2016 sends a message a day; its ``[[exemption]]`` accepts it from
    1 December to 15 January with its clock frozen and no quota charged, then it resumes
    where it stood. Returns the number of connections checked."""
    sender = EXEMPTED
    clock = _Clock(START)
    enforcer = _controlled(store, policy, catalog, clock, on_event)
    connection = _connection(sender)
    exemption = controls().exemptions_for(connection.server_id)[0]
    checks = refused = exempt = 0
    before = None
    for at in _daily(sender):
        clock.now = at
        decision = enforcer.check(connection, received_headers(sender, at))
        checks += 1
        refused += decision.action is not Action.ACCEPT
        if decision.exempt:
            exempt += decision.action is Action.ACCEPT
            if before is None:
                before = decision.elapsed
                on_note(
                    at,
                    f"{connection.server_id} {exemption.describe()}: accepted, its clock "
                    f"frozen at {_span(before)} of enforcement, no quota charged",
                )
        elif before is not None and at >= exemption.end:
            on_note(
                at,
                f"{connection.server_id}'s exemption ended; its clock resumes where it stood "
                f"({_span(before)} of enforcement when the exemption began): "
                f"{_span(at - exemption.end)} after the end it reads {_span(decision.elapsed)}; "
                f"{exempt} messages accepted while exempt",
            )
            before = None
    ledger = store.get_ledger(connection.tenant)
    charged = 0 if ledger is None else sum(p.days for p in ledger.value.pauses)
    on_note(
        END,
        f"{connection.server_id}: {checks} messages, {refused} refused, "
        f"{charged} days of {connection.tenant}'s pause quota charged",
    )
    return checks


def _span(span: dt.timedelta) -> str:
    """``span`` in days and hours, as the notes say it: ``46 d 13 h``, ``11 h``."""
    hours = f"{span.seconds // 3600} h"
    return f"{span.days} d {hours}" if span.days else hours


def _sender_connection(sender: Sender) -> Connection:
    """The connection as the MTA names it: the server's own, or its connector's."""
    if sender.connector is not None:
        # One connector, a state per server behind it: NAME/HOST from the Received headers.
        return Connection(
            server_id=sender.connector,
            tenant=sender.tenant,
            kind=sender.kind,
            peer_ip=sender.ip,
            peer_host=f"edge.{sender.tenant}.example",
            connector=sender.connector,
            identity=Identity.SERVER,
        )
    return Connection(
        server_id=sender.server_id,
        tenant=sender.tenant,
        kind=sender.kind,
        peer_ip=sender.ip,
        peer_host=sender.peer_host,
        tls_subject=f"CN={sender.peer_host}",
    )


def _buy_pause(enforcer: Enforcer, on_note: Callable[[dt.datetime, str], None]) -> None:
    server = "ex2016.fabrikam.example"
    on_note(
        PAUSE_BOUGHT,
        f"the administrator pauses {server} for {PAUSE_DAYS} days from {PAUSE_START}",
    )
    enforcer.pause(TENANT, server, PAUSE_DAYS, PAUSE_START)


def _pause_connector_tenant(
    enforcer: Enforcer, on_note: Callable[[dt.datetime, str], None]
) -> None:
    on_note(
        TENANT_PAUSE_BOUGHT,
        f"northwind's administrator pauses every server of {CONNECTOR_TENANT} for "
        f"{TENANT_PAUSE_DAYS} days from {TENANT_PAUSE_START} (one quota day per day)",
    )
    enforcer.pause_tenant(CONNECTOR_TENANT, TENANT_PAUSE_DAYS, TENANT_PAUSE_START)


# The administrators' actions, in time order: when, and what.
_ACTIONS: tuple[
    tuple[dt.datetime, Callable[[Enforcer, Callable[[dt.datetime, str], None]], None]], ...
] = (
    (PAUSE_BOUGHT, _buy_pause),
    (TENANT_PAUSE_BOUGHT, _pause_connector_tenant),
)


# ---- Received headers as each Exchange version writes them -------------------------------


def received_headers(sender: Sender, at: dt.datetime) -> list[str]:
    """The Received header values of a message ``sender`` sent at ``at``, newest first."""
    build = sender.build_at(at)
    if sender.cloud:
        return _exchange_online(sender, build, at)
    if build.major == 8:
        return _exchange_2007(sender, build, at)
    return _exchange_2013_and_later(sender, build, at)


def _local(at: dt.datetime) -> str:
    """``at`` as an RFC 5322 date in Central European (summer) time, as the servers write it."""
    offset = dt.timedelta(hours=2 if _summer_time(at) else 1)
    return email.utils.format_datetime(at.astimezone(dt.timezone(offset)))


def _summer_time(at: dt.datetime) -> bool:
    # EU rule: from 01:00 UTC on the last Sunday of March to 01:00 UTC on October's.
    def last_sunday(month: int) -> dt.datetime:
        day = dt.datetime(at.year, month, 31, 1, tzinfo=UTC)
        return day - dt.timedelta(days=(day.weekday() + 1) % 7)

    return last_sunday(3) <= at < last_sunday(10)


def _exchange_2007(sender: Sender, build: ExchangeBuild, at: dt.datetime) -> list[str]:
    mailbox = sender.internal.replace("HUB", "MBX")
    return [
        f"from {sender.internal} ([10.20.0.7]) by {sender.server_id} ([{sender.ip}]) with "
        f"Microsoft SMTP Server id {build}; {_local(at)}",
        f"from {mailbox} ([10.20.0.8]) by {sender.internal} ([10.20.0.7]) with mapi; "
        f"{_local(at - dt.timedelta(seconds=1))}",
    ]


def _exchange_2013_and_later(sender: Sender, build: ExchangeBuild, at: dt.datetime) -> list[str]:
    inner = "10.20.0." + sender.ip.rsplit(".", 1)[1]
    return [
        f"from {sender.internal} ({inner}) by {sender.server_id}\r\n ({sender.ip}) with "
        f"Microsoft SMTP Server\r\n ({_TLS}) id\r\n {build}; {_local(at)}",
        f"from {sender.internal} ([fe80::5d1c:2a4b:9e3f:1a2b]) by {sender.internal}\r\n "
        f"([fe80::5d1c:2a4b:9e3f:1a2b%12]) with mapi id {build.long}; "
        f"{_local(at - dt.timedelta(seconds=1))}",
    ]


def _exchange_online(sender: Sender, build: ExchangeBuild, at: dt.datetime) -> list[str]:
    outbound = "AM9PR04MB8121.eurprd04.prod.outlook.com"
    stamp = email.utils.format_datetime(at)
    return [
        f"from {sender.internal} (2603:10a6:20b:3a::12) by {outbound}\r\n (2603:10a6:20b:3a::13) "
        f"with Microsoft SMTP Server\r\n ({_TLS}) id {build}; {stamp}",
        f"from {sender.internal} ([fe80::1234:5678:9abc:def0]) by {sender.internal}\r\n "
        f"([fe80::1234:5678:9abc:def0%5]) with mapi id {build.long}; {stamp}",
    ]


# ---- delivering the events (docs/notifications.md) -----------------------------------------


@attrs.frozen
class Delivered:
    """What :func:`deliver_events` delivered: per receiver, its address and the event kinds.

    ``mail`` is ``None`` when aiosmtpd (extra ``smtp``) is not installed.
    """

    webhook: str
    posts: tuple[str, ...]  # the kinds, in the order received
    mail: str | None
    mails: tuple[str, ...]  # the subjects


def deliver_events(db: Path, *, catalog: Catalog | None = None) -> Delivered:
    """Deliver the outbox of the demo database ``db`` to a webhook and an SMTP sink of its own.

    Both listen on 127.0.0.1 only, on free ports, for as long as the delivery takes: the
    events the replay stored go through the same :class:`~tbes.outbox.OutboxSender` a
    daemon runs, as JSON POSTs and as mails.
    """
    from tbes.notifiers import EmailNotifier, WebhookNotifier
    from tbes.outbox import OutboxSender, Receiver

    hook = _LoopbackHook()
    sink = _loopback_sink()
    store = SQLiteStore(db)
    try:
        receivers = [Receiver("demo-webhook", WebhookNotifier(hook.url, timeout=5))]
        if sink is not None:
            mailer = EmailNotifier(
                "127.0.0.1",
                sink.port,
                sender="tbes@contoso.example",
                to=["mail-admins@fabrikam.example"],
                catalog=catalog or Catalog.default(),
                timeout=5,
            )
            receivers.append(Receiver("demo-mail", mailer))
        # The replay's events are months old at END: keep them all until they are delivered.
        year = dt.timedelta(days=366)
        sender = OutboxSender(store, receivers, clock=lambda: END, keep=year, expire=year)
        for _ in range(1000):  # bounded: each round delivers up to a batch per receiver
            if not sender.run_once():
                break
        return Delivered(
            hook.url,
            tuple(hook.kinds),
            None if sink is None else f"127.0.0.1:{sink.port}",
            () if sink is None else tuple(sink.subjects),
        )
    finally:
        store.close()
        hook.stop()
        if sink is not None:
            sink.stop()


class _LoopbackHook:
    """A webhook receiver on 127.0.0.1 that keeps the kind of each event posted once."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        kinds: list[str] = []
        seen: set[str] = set()
        self.kinds = kinds

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                key = self.headers.get("Idempotency-Key", "")
                if key not in seen:  # a receiver honouring the key keeps each event once
                    seen.add(key)
                    kinds.append(str(body.get("kind")))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/events"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _LoopbackSink:
    def __init__(self, controller: object, port: int, subjects: list[str]) -> None:
        self._controller = controller
        self.port = port
        self.subjects = subjects

    def stop(self) -> None:
        self._controller.stop()  # type: ignore[attr-defined]


def _loopback_sink() -> _LoopbackSink | None:
    """An aiosmtpd sink on 127.0.0.1 keeping the subjects it is given; None without aiosmtpd."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        return None
    import email
    import email.policy
    import socket

    subjects: list[str] = []

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            content = envelope.original_content  # type: ignore[attr-defined]
            message = email.message_from_bytes(content, policy=email.policy.default)
            subjects.append(str(message["Subject"]))
            return "250 2.0.0 kept"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    return _LoopbackSink(controller, port, subjects)
