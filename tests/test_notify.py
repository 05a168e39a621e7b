"""Notifications that reach people: the outbox, the sender, the webhook and the mail.

Events go into the store's outbox in the transaction of the change they announce, and the
sender delivers them to a real webhook (http.server) and a real SMTP sink (aiosmtpd), both
on loopback: every event arrives, in order, with its id as the idempotency key; a receiver
that is down gets everything once it is back; a lost compare-and-swap enqueues nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from notify_support import HookServer, MailSink
from tbes.adapters.config import make_enforcer, make_receivers, parse_config
from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.enforcer import Connection, Enforcer
from tbes.errors import AdapterConfigError, DeliveryError, InvalidValueError
from tbes.events import Event, EventKind, event_id
from tbes.notifiers import CallbackNotifier, EmailNotifier, WebhookNotifier
from tbes.outbox import OutboxSender, Receiver, backoff
from tbes.policy import DEFAULT_POLICY, ConnectorKind
from tbes.state import ServerState
from tbes.store import MemoryStore, RowStore, SQLiteStore, StateWrite, Write
from tbes.version import ExchangeBuild

SERVER = "fabrikam-edge"
TENANT = "fabrikam"
T0 = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)
OUTDATED = "15.1.2507.39"  # Exchange 2016 CU23 below its latest SU
CATALOG = Catalog.default()


def hop(build: str) -> str:
    return (
        "from EXMBX01.fabrikam.local (10.0.0.7) by mail.fabrikam.example (192.0.2.10) with "
        f"Microsoft SMTP Server (version=TLS1_2, cipher=TLS_AES_256_GCM_SHA384) id {build}; "
        "Mon, 5 Jan 2026 10:00:00 +0000"
    )


class Clock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


CONN = Connection(SERVER, TENANT, ConnectorKind.ON_PREMISES, peer_ip="192.0.2.10", connector=SERVER)


def enforcer_on(store: RowStore, clock: Clock, heard: list[Event]) -> Enforcer:
    return Enforcer(
        store,
        DEFAULT_POLICY,
        CATALOG,
        clock=clock,
        notifier=CallbackNotifier(heard.append),
        outbox=True,
    )


def run_month(enforcer: Enforcer, clock: Clock) -> None:
    """Days 0, 23 (a week before throttling) and 30 (throttling): three writes, three events."""
    for day in (0, 23, 30):
        clock.now = T0 + dt.timedelta(days=day, hours=1)
        enforcer.check(CONN, [hop(OUTDATED)])


def mailer(sink: MailSink, **options: object) -> EmailNotifier:
    return EmailNotifier(
        "127.0.0.1",
        sink.port,
        sender="tbes@contoso.example",
        to=["ops@contoso.example"],
        recipients={SERVER: ["admin@fabrikam.example"]},
        catalog=CATALOG,
        info_urls={SERVER: "https://intranet.contoso.example/tbes/fabrikam"},
        timeout=5,
        **options,  # type: ignore[arg-type]
    )


# ---- the outbox is written with the change ---------------------------------------------


def test_the_events_of_a_check_are_in_the_outbox_in_the_order_announced(tmp_path: Path) -> None:
    store, clock = SQLiteStore(tmp_path / "s.db"), Clock()
    heard: list[Event] = []
    run_month(enforcer_on(store, clock, heard), clock)
    assert [e.kind for e in heard] == [
        EventKind.DETECTED,
        EventKind.THROTTLING_SOON,
        EventKind.STAGE_CHANGED,
    ]
    claimed = store.claim_events("r", clock.now, lease=dt.timedelta(minutes=1))
    assert [p.event for p in claimed] == heard


def test_a_lost_compare_and_swap_puts_no_event_in_the_outbox() -> None:
    store, clock = MemoryStore(), Clock()
    heard: list[Event] = []
    enforcer = enforcer_on(store, clock, heard)
    real_put_many = store.put_many
    # Between the enforcer's read and its write, another node stores the server in an
    # episode it already announced: the lost batch's DETECTED must not reach the outbox.
    rival = ServerState(
        SERVER,
        TENANT,
        ExchangeBuild.parse(OUTDATED),
        Compliance.OUTDATED,
        T0 - dt.timedelta(days=10),
        T0,
        None,
        notified_stage=1,
    )

    def racing_put_many(writes: Sequence[Write]) -> tuple[int, ...]:
        if store.get(SERVER) is None:
            real_put_many([StateWrite(rival, None)])
        return real_put_many(writes)

    store.put_many = racing_put_many  # type: ignore[method-assign]
    clock.now = T0 + dt.timedelta(hours=1)
    enforcer.check(CONN, [hop(OUTDATED)])
    # The retry read the rival's episode (stage 1, told): nothing new to announce.
    assert heard == []
    assert store.claim_events("r", clock.now, lease=dt.timedelta(minutes=1)) == []
    stored = store.get(SERVER)
    assert stored is not None
    assert stored.value.first_detected == rival.first_detected


def test_an_outbox_needs_a_store_that_keeps_one() -> None:
    class Plain(RowStore):
        pass

    with pytest.raises(InvalidValueError, match="outbox"):
        Enforcer(Plain(), DEFAULT_POLICY, CATALOG, outbox=True)


# ---- the sender, the webhook and the mail --------------------------------------------


def test_webhook_and_mail_receive_every_event_once_with_its_id(
    tmp_path: Path, hook: HookServer, sink: MailSink
) -> None:
    store, clock = SQLiteStore(tmp_path / "s.db"), Clock()
    heard: list[Event] = []
    run_month(enforcer_on(store, clock, heard), clock)
    receivers = [
        Receiver("hook", WebhookNotifier(hook.url, timeout=5)),
        Receiver("mail", mailer(sink)),
    ]
    sender = OutboxSender(store, receivers, clock=clock)
    assert sender.run_once() == 6
    assert sender.run_once() == 0  # nothing twice
    assert [key for key, _ in hook.posts] == [e.id for e in heard]
    assert [body["kind"] for _, body in hook.posts] == [e.kind.value for e in heard]
    assert hook.posts[1][1]["next_change"] == "2026-02-04T11:00:00+00:00"
    assert [m["Message-ID"] for m in sink.messages] == [f"<{e.id}@contoso.example>" for e in heard]
    assert all(
        rcpts == ["ops@contoso.example", "admin@fabrikam.example"] for _, rcpts in sink.envelopes
    )


def test_the_mail_says_which_server_what_stage_what_next_and_how_to_fix(
    tmp_path: Path, sink: MailSink
) -> None:
    store, clock = MemoryStore(), Clock()
    heard: list[Event] = []
    run_month(enforcer_on(store, clock, heard), clock)
    OutboxSender(store, [Receiver("mail", mailer(sink))], clock=clock).run_once()
    notice = sink.messages[1]
    assert notice["Subject"] == f"[tbes] THROTTLING_SOON: {SERVER}"
    text = notice.get_content()
    assert f"Server:     {SERVER}" in text
    assert "Build:      15.1.2507.39" in text
    assert "Stage:      2" in text
    assert "Throttling starts on 2026-02-04 11:00 UTC." in text
    latest = CATALOG.latest(heard[0].build.product)  # type: ignore[union-attr]
    assert f"install {latest.title} (build {latest.build}) or later" in text
    assert "More:       https://intranet.contoso.example/tbes/fabrikam" in text


def test_text_from_outside_is_escaped_in_mail_and_log(
    sink: MailSink, caplog: pytest.LogCaptureFixture
) -> None:
    evil = "mx\r\nBcc: victim@example\x1b[31m"
    event = Event(EventKind.DETECTED, evil, TENANT, T0, 1, None, "detail\nX-Injected: 1")
    mailer(sink).notify(event)
    [message] = sink.messages
    assert message["Bcc"] is None
    assert message["X-Injected"] is None
    assert "\\r\\nBcc" in message["Subject"]
    assert "\x1b" not in message.get_content()
    assert "X-Injected" not in str(message.keys())


def test_a_receiver_that_is_down_gets_every_event_once_it_is_back(
    tmp_path: Path, hook: HookServer, caplog: pytest.LogCaptureFixture
) -> None:
    store, clock = SQLiteStore(tmp_path / "s.db"), Clock()
    heard: list[Event] = []
    run_month(enforcer_on(store, clock, heard), clock)
    sender = OutboxSender(
        store,
        [Receiver("hook", WebhookNotifier(hook.url, timeout=5))],
        clock=clock,
        first_retry=dt.timedelta(seconds=10),
        last_retry=dt.timedelta(minutes=5),
    )
    hook.down = True
    with caplog.at_level(logging.WARNING, logger="tbes.outbox"):
        assert sender.run_once() == 0
    assert "delivery to hook failed (attempt 1), retry in 0:00:10" in caplog.text
    # One request per round while down: the receiver stops at its first failure.
    assert len(hook.posts) == 0
    clock.now += dt.timedelta(seconds=5)
    assert sender.run_once() == 0  # not yet due: no request at all
    clock.now += dt.timedelta(seconds=5)
    assert sender.run_once() == 0  # due, still down: the wait doubles
    assert "attempt 2), retry in 0:00:20" in caplog.text
    hook.down = False
    clock.now += dt.timedelta(seconds=20)
    assert sender.run_once() == 3
    assert list(hook.kept()) == [e.id for e in heard]
    assert len(hook.posts) == 3


def test_backoff_doubles_up_to_its_cap() -> None:
    first, last = dt.timedelta(seconds=10), dt.timedelta(minutes=1)
    waits = [backoff(n, first, last).total_seconds() for n in range(1, 7)]
    assert waits == [10, 20, 40, 60, 60, 60]
    assert backoff(10_000, first, last) == last


def test_a_receiver_hears_only_of_its_connectors(hook: HookServer) -> None:
    store, clock = MemoryStore(), Clock()
    heard: list[Event] = []
    run_month(enforcer_on(store, clock, heard), clock)
    other = Receiver("other", WebhookNotifier(hook.url), connectors=["contoso-edge"])
    sender = OutboxSender(store, [other], clock=clock)
    assert sender.run_once() == 0
    assert hook.posts == []
    assert store.claim_events("other", clock.now, lease=dt.timedelta(minutes=1)) == []


def test_a_daily_digest_per_tenant_goes_at_its_hour(sink: MailSink) -> None:
    store, clock = MemoryStore(), Clock()
    heard: list[Event] = []
    run_month(enforcer_on(store, clock, heard), clock)  # the last event on day 30 at 11:00
    sender = OutboxSender(store, [Receiver("mail", mailer(sink), digest_hour=8)], clock=clock)
    assert sender.run_once() == 2  # the events before today's 08:00 go now, in one mail
    assert len(sink.messages) == 1
    assert "2 enforcement events of tenant fabrikam" in sink.messages[0]["Subject"]
    clock.now += dt.timedelta(hours=12)  # day 30 at 23:00: the next digest is tomorrow's
    assert sender.run_once() == 0
    clock.now += dt.timedelta(hours=10)  # day 31 at 09:00: day 30's event goes
    assert sender.run_once() == 1
    assert len(sink.messages) == 2
    assert sender.run_once() == 0


def test_a_webhook_that_answers_an_error_raises_delivery_error(hook: HookServer) -> None:
    hook.down = True
    event = Event(EventKind.DETECTED, SERVER, TENANT, T0, 1, None, "d")
    with pytest.raises(DeliveryError, match="HTTP 503"):
        WebhookNotifier(hook.url, timeout=5).notify(event)
    with pytest.raises(InvalidValueError, match="http"):
        WebhookNotifier("file:///etc/passwd")


def test_pruning_keeps_undelivered_events_until_they_expire() -> None:
    store, clock = MemoryStore(), Clock()
    heard: list[Event] = []
    run_month(enforcer_on(store, clock, heard), clock)
    store.claim_events("hook", clock.now, lease=dt.timedelta(minutes=1))
    store.mark_delivered("hook", heard[0].id, clock.now)
    later = clock.now + dt.timedelta(days=8)
    week, month = dt.timedelta(days=7), dt.timedelta(days=30)
    # The delivered DETECTED (38 days old) goes; the undelivered ones stay until they expire.
    assert store.prune_outbox(later, keep=week, expire=month, receivers=["hook"]) == 1
    left = store.claim_events("other", later, lease=dt.timedelta(minutes=1))
    assert [p.event.id for p in left] == [e.id for e in heard[1:]]
    assert (
        store.prune_outbox(later, keep=week, expire=dt.timedelta(days=1), receivers=["hook"]) == 2
    )


# ---- advance notices ---------------------------------------------------------------------


def test_an_advance_notice_has_the_id_of_its_server_kind_episode_and_stage() -> None:
    store, clock = MemoryStore(), Clock()
    heard: list[Event] = []
    run_month(enforcer_on(store, clock, heard), clock)
    notice = heard[1]
    assert notice.id == event_id(SERVER, EventKind.THROTTLING_SOON, heard[0].at, 2)
    assert (notice.stage, notice.next_change) == (2, heard[0].at + dt.timedelta(days=30))


def test_advance_notice_days_are_configurable() -> None:
    config = parse_config(
        '[notifications]\nadvance_notice_days = 3\n[[connector]]\nname = "x"\n'
        'kind = "on_premises"\nnetworks = ["192.0.2.0/24"]\n'
    )
    enforcer = make_enforcer(config, MemoryStore(), catalog=CATALOG)
    assert enforcer.advance_notice == dt.timedelta(days=3)


# ---- configuration -----------------------------------------------------------------------

CONFIG = """
[[connector]]
name = "fabrikam-edge"
kind = "on_premises"
tenant = "fabrikam"
networks = ["192.0.2.0/24"]
recipients = ["admin@fabrikam.example"]
info_url = "https://intranet.contoso.example/tbes/fabrikam"

[[notifier]]
name = "ops-hook"
type = "webhook"
url = "https://hooks.contoso.example/tbes"
timeout = 5

[[notifier]]
name = "ops-mail"
type = "email"
smtp_host = "localhost"
from = "tbes@contoso.example"
to = ["ops@contoso.example"]
digest_hour = 8
connectors = ["fabrikam-edge"]

[[notifier]]
name = "log"
type = "log"
"""


def test_notifiers_are_configured_in_toml() -> None:
    config = parse_config(CONFIG)
    receivers = make_receivers(config, catalog=CATALOG)
    assert [(r.name, type(r.notifier).__name__) for r in receivers] == [
        ("ops-hook", "WebhookNotifier"),
        ("ops-mail", "EmailNotifier"),
        ("log", "LoggingNotifier"),
    ]
    mail = receivers[1]
    assert mail.digest_hour == 8
    assert mail.connectors == frozenset({"fabrikam-edge"})
    assert isinstance(mail.notifier, EmailNotifier)
    assert mail.notifier.recipients_of("fabrikam-edge") == (
        "ops@contoso.example",
        "admin@fabrikam.example",
    )
    assert make_enforcer(config, MemoryStore(), catalog=CATALOG).outbox is True


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[notifier]]\nname = "a"\ntype = "pager"\n', "type = 'pager'"),
        ('[[notifier]]\nname = "a"\ntype = "webhook"\n', "needs url"),
        ('[[notifier]]\nname = "a"\ntype = "webhook"\nurl = "x"\nport = 1\n', "unknown key 'port'"),
        ('[[notifier]]\nname = "a"\ntype = "log"\nconnectors = ["nope"]\n', "connector 'nope'"),
        ('[[notifier]]\nname = "log"\ntype = "log"\n', "two \\[\\[notifier\\]\\] tables"),
        ("[notifications]\nkeep_days = 0\n", "keep_days"),
        ("[notifications]\nlead = 3\n", "unknown key 'lead'"),
    ],
)
def test_a_bad_notifier_table_is_a_clear_error(extra: str, message: str) -> None:
    with pytest.raises(AdapterConfigError, match=message):
        parse_config(CONFIG + extra)


def test_a_bad_notifier_value_is_named_when_the_file_is_read() -> None:
    with pytest.raises(AdapterConfigError, match=r"ops-hook.*http"):
        parse_config(CONFIG.replace('url = "https://hooks', 'url = "ftp://hooks'))
    with pytest.raises(AdapterConfigError, match=r"ops-mail.*mail address"):
        parse_config(CONFIG.replace('to = ["ops@contoso.example"]', 'to = ["ops"]'))
