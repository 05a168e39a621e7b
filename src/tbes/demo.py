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
message bounces.

This is shell code: it reads no clock (the clock is simulated) but writes the database; the
randomness (minutes of sending) comes from a fixed seed, so every run replays the same mail.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import heapq
import os
import random
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from tbes.catalog import Catalog
from tbes.decision import Action
from tbes.enforcer import Connection, Enforcer
from tbes.events import Event
from tbes.ledger import PauseLedger
from tbes.notifiers import CallbackNotifier
from tbes.policy import ConnectorKind, Policy
from tbes.render import render_report
from tbes.report import ReportRow, report_row
from tbes.store.sqlite import SQLiteStore
from tbes.version import ExchangeBuild

__all__ = [
    "END",
    "PAUSE_DAYS",
    "PAUSE_START",
    "POLICY_NAME",
    "SENDERS",
    "START",
    "TENANT",
    "Delivered",
    "DemoResult",
    "Sender",
    "SenderStats",
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
)
"""The sending servers: fabrikam's four on-premises servers and a cloud-only partner."""


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
    )
    report.write_text(page, encoding="utf-8")
    ledger = None if stored is None else stored.value
    ordered = sorted(states, key=lambda state: (state.tenant, state.server_id))
    rows = tuple(report_row(state, END, policy, catalog) for state in ordered)
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
    paused = False
    checks = 0
    span = (END - START).total_seconds()
    last_share = -1.0
    while queue and queue[0][0] <= END:
        _, _, attempt = heapq.heappop(queue)
        if not paused and attempt.at >= PAUSE_BOUGHT:
            paused = True
            clock.now = PAUSE_BOUGHT
            _buy_pause(enforcer, on_note)
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
    day = START
    while day <= END:
        for index, sender in enumerate(SENDERS):
            for _ in range(rng.randint(*sender.per_day)):
                # Office hours in Europe: 06:00 to 18:00 UTC, any minute and second.
                at = day + dt.timedelta(hours=6, seconds=rng.randrange(12 * 3600))
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
    connection = Connection(
        server_id=sender.server_id,
        tenant=sender.tenant,
        kind=sender.kind,
        peer_ip=sender.ip,
        peer_host=sender.peer_host,
        tls_subject=f"CN={sender.peer_host}",
    )
    decision = enforcer.check(connection, received_headers(sender, attempt.first))
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


def _buy_pause(enforcer: Enforcer, on_note: Callable[[dt.datetime, str], None]) -> None:
    server = "ex2016.fabrikam.example"
    on_note(
        PAUSE_BOUGHT,
        f"the administrator pauses {server} for {PAUSE_DAYS} days from {PAUSE_START}",
    )
    enforcer.pause(TENANT, server, PAUSE_DAYS, PAUSE_START)


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
        sender = OutboxSender(store, receivers, clock=lambda: END)
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
