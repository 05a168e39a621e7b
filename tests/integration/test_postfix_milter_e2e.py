"""End to end: a real Postfix on loopback, the tbes milter beside it, smtplib as the sender.

Postfix runs the milter settings of ``docs/postfix.md`` verbatim (free ports instead of the
documented ones). The milter runs as the CLI runs it, in its own process, with the adapter
configuration's ``fixed_time`` placing each message at a chosen stage and minute. Each
"server" is a loopback source address that the configuration maps to a server id.
Expected reply lines are written out from the SPEC (section 7), and the minute at which a
server is throttled is worked out from the SPEC's formula, not taken from tbes.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter_support import offset_minute, reply_line
from integration.postfix import (
    Listener,
    MilterProcess,
    PostfixServer,
    doc_snippet,
    free_port,
    require_root,
    smtp_send,
    with_port,
)
from tbes.baseline import Baseline
from tbes.catalog import Catalog
from tbes.compliance import Compliance, assess
from tbes.store.sqlite import SQLiteStore
from tbes.version import ExchangeBuild

pytestmark = [pytest.mark.service("postfix"), pytest.mark.timeout(120)]

T0 = dt.datetime(2025, 11, 3, 8, 0, tzinfo=dt.UTC)

# What an Exchange 2007 Edge sends: its own hop on top, the Hub's mapi hop below.
EX2007 = (
    b"Received: from EXHUB01.fabrikam.local (10.1.2.3) by mail.fabrikam.example\r\n"
    b" (10.1.2.4) with Microsoft SMTP Server (TLS) id 8.3.83.6; Mon, 3 Nov 2025\r\n"
    b" 09:00:00 +0100\r\n"
    b"Received: from EXMBX01.fabrikam.local ([10.1.2.7]) by EXHUB01.fabrikam.local\r\n"
    b" ([10.1.2.3]) with mapi; Mon, 3 Nov 2025 08:59:59 +0100\r\n"
    b"From: Alice <alice@fabrikam.example>\r\n"
    b"To: Bob <postmaster@receiver.example>\r\n"
    b"Subject: quarterly figures\r\n"
    b"Message-ID: <1@fabrikam.example>\r\n"
    b"Date: Mon, 3 Nov 2025 09:00:00 +0100\r\n"
    b"\r\n"
    b"Hello.\r\n"
)
# An up-to-date Exchange 2019 CU15 (build 15.2.1748.39, the October 2025 SU).
EX2019 = (
    b"Received: from EX19MBX.northwind.example (10.0.0.20) by EX19EDGE.northwind.example\r\n"
    b" (10.0.0.21) with Microsoft SMTP Server (version=TLS1_2,\r\n"
    b" cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.2.1748.39; Mon, 3 Nov 2025\r\n"
    b" 09:00:00 +0100\r\n"
    b"Received: from EX19MBX.northwind.example ([fe80::1c2d:3e4f:5a6b:7c8d]) by\r\n"
    b" EX19MBX.northwind.example ([fe80::1c2d:3e4f:5a6b:7c8d%4]) with mapi id\r\n"
    b" 15.02.1748.039; Mon, 3 Nov 2025 08:59:59 +0100\r\n"
    b"From: Carol <carol@northwind.example>\r\n"
    b"To: postmaster@receiver.example\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"Hi.\r\n"
)
# The same Exchange 2007 message after one of our own relays passed it on.
EX2007_VIA_OWN_RELAY = (
    b"Received: from mail.fabrikam.example (mail.fabrikam.example [203.0.113.25])\r\n"
    b"\tby mx1.receiver.example (Postfix) with ESMTPS id 4Y2kLm0QzXz9sWx\r\n"
    b"\tfor <postmaster@receiver.example>; Mon, 3 Nov 2025 08:00:01 +0000 (UTC)\r\n" + EX2007
)

CONFIG = """\
tenant = "receiver"
own_hosts = {own_hosts}
fail_closed = {fail_closed}

[[connector]]
kind = "on_premises"
tenant = "fabrikam"
name = "fabrikam-ex2007"
networks = ["127.0.0.2/32"]

[[connector]]
kind = "on_premises"
tenant = "northwind"
name = "northwind-ex2019"
networks = ["127.0.0.3/32"]

[[connector]]
kind = "on_premises"
tenant = "fabrikam"
name = "fabrikam-behind-relay"
networks = ["127.0.0.4/32"]

[[connector]]
kind = "on_premises"
tenant = "litware"
name = "litware-broken-row"
networks = ["127.0.0.5/32"]

[[connector]]
kind = "on_premises"
tenant = "fabrikam"
name = "fabrikam-no-own-hosts"
networks = ["127.0.0.6/32"]

[testing]
fixed_time = {now}
"""


class _Site:
    """Postfix plus what a test needs to run the milter at a chosen instant."""

    def __init__(self, postfix: PostfixServer, milter_port: int, work: Path) -> None:
        self.postfix = postfix
        self.milter_port = milter_port
        self.work = work
        self.db = work / "tbes.db"
        self.log = work / "milter.log"

    def milter(
        self, now: dt.datetime, *, fail_closed: bool = False, own_hosts: bool = True
    ) -> MilterProcess:
        config = self.work / "adapters.toml"
        text = CONFIG.format(
            now=now.isoformat(),
            fail_closed=str(fail_closed).lower(),
            own_hosts='["receiver.example"]' if own_hosts else "[]",
        )
        config.write_text(text, encoding="utf-8")
        return MilterProcess(config, self.db, self.milter_port, self.log)

    def send_at(
        self,
        now: dt.datetime,
        message: bytes,
        source: str,
        *,
        fail_closed: bool = False,
        own_hosts: bool = True,
    ) -> str:
        with self.milter(now, fail_closed=fail_closed, own_hosts=own_hosts):
            return smtp_send(self.postfix.port, message, source=source).line


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Site]:
    require_root()
    milter_port, smtp_port, listener_port, dead_port = (free_port() for _ in range(4))
    main_cf = with_port(doc_snippet("main.cf milter"), 8891, milter_port)
    # The documented per-listener form, pointed at a port where no milter listens.
    master = with_port(doc_snippet("master.cf milter"), 2525, listener_port)
    master = with_port(master, 8891, dead_port)
    tempfail = Listener(
        free_port(),
        (
            ("smtpd_milters", f"inet:127.0.0.1:{dead_port}"),
            ("milter_default_action", "tempfail"),
        ),
    )
    with PostfixServer(main_cf, [Listener(smtp_port), tempfail], master_extra=master) as postfix:
        yield _Site(postfix, milter_port, tmp_path_factory.mktemp("milter"))


def _stored(site: _Site, server_id: str) -> tuple[str | None, Compliance, dt.datetime | None]:
    versioned = SQLiteStore(site.db).get(server_id)
    assert versioned is not None, (
        f"no state stored for {server_id}; milter log:\n{_tail(site.log)}\n"
        f"Postfix log:\n{site.postfix.log()[-3000:]}"
    )
    state = versioned.value
    return (None if state.build is None else str(state.build), state.status, state.first_detected)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(none)"


def test_the_builds_used_here_are_what_the_tests_claim() -> None:
    baseline, catalog = Baseline.exchange_online_2026(), Catalog.default()
    old = assess(ExchangeBuild(8, 3, 83, 6), baseline=baseline, catalog=catalog)
    new = assess(ExchangeBuild(15, 2, 1748, 39), baseline=baseline, catalog=catalog)
    assert (old.status, new.status) == (Compliance.UNSUPPORTED, Compliance.COMPLIANT)


def test_up_to_date_exchange_2019_is_accepted_and_recorded(site: _Site) -> None:
    assert site.send_at(T0, EX2019, "127.0.0.3").startswith("250 2.0.0 Ok: queued as ")
    assert _stored(site, "northwind-ex2019/ex19edge.northwind.example") == (
        "15.2.1748.39",
        Compliance.COMPLIANT,
        None,
    )


def test_exchange_2007_is_reported_then_throttled_then_blocked(site: _Site) -> None:
    server = "fabrikam-ex2007/mail.fabrikam.example"  # CONNECTOR/HOST: the sender hop's by
    at_offset = dt.timedelta(minutes=offset_minute(server))
    # Day 0: first detection, stage 1 only reports.
    assert site.send_at(T0, EX2007, "127.0.0.2").startswith("250 ")
    assert _stored(site, server) == ("8.3.83.6", Compliance.UNSUPPORTED, T0)
    # Day 31, the server's offset minute: stage 2 throttles 5 minutes an hour.
    assert site.send_at(T0 + dt.timedelta(days=31) + at_offset, EX2007, "127.0.0.2") == reply_line(
        "throttled", 5
    )
    # Day 61: stage 5 blocks the first 5 minutes of the window, and accepts after 35.
    stage5 = T0 + dt.timedelta(days=61) + at_offset
    assert site.send_at(stage5, EX2007, "127.0.0.2") == reply_line("blocked", 5)
    later = stage5 + dt.timedelta(minutes=40)
    assert site.send_at(later, EX2007, "127.0.0.2").startswith("250 ")
    # Day 95: stage 8 blocks all hour.
    assert site.send_at(T0 + dt.timedelta(days=95, minutes=7), EX2007, "127.0.0.2") == reply_line(
        "blocked", 60
    )
    # The episode still starts at the first detection.
    assert _stored(site, server)[2] == T0


def test_own_relay_hop_is_skipped_to_find_the_exchange_sender(site: _Site) -> None:
    assert site.send_at(T0, EX2007_VIA_OWN_RELAY, "127.0.0.4").startswith("250 ")
    assert _stored(site, "fabrikam-behind-relay/mail.fabrikam.example") == (
        "8.3.83.6",
        Compliance.UNSUPPORTED,
        T0,
    )


def test_postfix_does_not_show_the_milter_its_own_received_header(site: _Site) -> None:
    # Without own_hosts, a Postfix hop on top would be taken for the sender (no build) and
    # nothing would be recorded: docs/postfix.md relies on this.
    assert site.send_at(T0, EX2007, "127.0.0.6", own_hosts=False).startswith("250 ")
    assert _stored(site, "fabrikam-no-own-hosts/mail.fabrikam.example") == (
        "8.3.83.6",
        Compliance.UNSUPPORTED,
        T0,
    )


def test_a_store_fault_accepts_or_defers_as_configured(site: _Site) -> None:
    server = "litware-broken-row/mail.fabrikam.example"
    assert site.send_at(T0, EX2007, "127.0.0.5").startswith("250 ")
    with sqlite3.connect(site.db) as db:
        db.execute("UPDATE tbes_servers SET data = '{not json' WHERE server_id = ?", (server,))
    stage8 = T0 + dt.timedelta(days=95)
    # Fail open: the unreadable row must not turn into a refusal.
    assert site.send_at(stage8, EX2007, "127.0.0.5").startswith("250 ")
    warnings = [
        line
        for line in site.log.read_text(errors="replace").splitlines()
        if "level=WARNING" in line and server in line
    ]
    assert warnings, f"no WARNING about {server}:\n{_tail(site.log)}"
    closed = site.send_at(stage8, EX2007, "127.0.0.5", fail_closed=True)
    assert (
        closed
        == "451 4.3.0 Temporary failure checking the sending Exchange server; try again later"
    )
    # The unreadable row is left as it was.
    with sqlite3.connect(site.db) as db:
        (data,) = db.execute(
            "SELECT data FROM tbes_servers WHERE server_id = ?", (server,)
        ).fetchone()
    assert data == "{not json"


def test_postfix_applies_milter_default_action_when_the_milter_is_down(site: _Site) -> None:
    documented_listener, tempfail_listener = site.postfix.ports[2], site.postfix.ports[1]
    assert smtp_send(documented_listener, EX2007, source="127.0.0.2").code == 250
    deferred = smtp_send(tempfail_listener, EX2007, source="127.0.0.2")
    assert deferred.code == 451
    assert deferred.text.startswith("4.7.1 ")
