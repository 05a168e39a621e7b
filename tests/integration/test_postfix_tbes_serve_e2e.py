"""End to end: a real Postfix speaking milter protocol 6 and 2 to ``tbes serve``.

``tbes serve`` runs the milter and the policy service in one child process on one event
loop, over one SQLite store. The Exchange 2007 server was first seen 95 days before the
configuration's ``fixed_time`` (stage 8: blocked all hour), seeded into the store through
the enforcer; the Exchange 2019 server is compliant. Three smtpd listeners: one with the
milter at protocol 6, one at protocol 2 (no macros: the connect arguments identify), one
asking the policy service only. Several messages go over one SMTP session, so one milter
connection carries several messages. Expected lines are the SPEC's (adapter_support).
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter_support import reply_line
from integration.postfix import (
    EX2007,
    RCPT,
    Listener,
    PostfixServer,
    ServeProcess,
    free_port,
    require_root,
    seed_then_advance,
)
from tbes.compliance import Compliance
from tbes.store.sqlite import SQLiteStore

pytestmark = [pytest.mark.service("postfix"), pytest.mark.timeout(120)]

EX2019 = (
    b"Received: from EX19MBX.northwind.example (10.0.0.20) by EX19EDGE.northwind.example\r\n"
    b" (10.0.0.21) with Microsoft SMTP Server (version=TLS1_2,\r\n"
    b" cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.2.1748.39; Mon, 3 Nov 2025\r\n"
    b" 09:00:00 +0100\r\n"
    b"From: carol@northwind.example\r\nSubject: hello\r\n\r\nHi.\r\n"
)
CONFIG = """\
tenant = "receiver"
own_hosts = ["receiver.example"]

[[connector]]
kind = "on_premises"
tenant = "fabrikam"
server_id = "fabrikam-ex2007"
networks = ["127.0.0.2/32"]

[[connector]]
kind = "on_premises"
tenant = "northwind"
server_id = "northwind-ex2019"
networks = ["127.0.0.3/32"]

[testing]
fixed_time = {now}
"""


class _Site:
    def __init__(self, postfix: PostfixServer, serve: ServeProcess, db: Path) -> None:
        self.postfix = postfix
        self.serve = serve
        self.db = db
        self.v6, self.v2, self.policy = postfix.ports


def _session(port: int, source: str, messages: list[bytes]) -> list[str]:
    """Send ``messages`` over one SMTP session; the final reply line of each."""
    lines: list[str] = []
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30) as client:
        client.ehlo("client.example")
        for message in messages:
            code, text = client.mail("sender@client.example")
            if code < 400:
                code, text = client.rcpt(RCPT)
            if code < 400:
                try:
                    code, text = client.data(message)
                except smtplib.SMTPDataError as error:
                    code = error.smtp_code
                    raw = error.smtp_error
                    text = raw if isinstance(raw, bytes) else raw.encode()
            if code >= 400:
                client.rset()
            lines.append(f"{code} {text.decode()}")
    return lines


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Site]:
    require_root()
    work = tmp_path_factory.mktemp("serve")
    config, db = work / "adapters.toml", work / "tbes.db"
    # The Exchange 2007 server was first seen at T0, and it is now 95 days later: stage 8.
    seed_then_advance(config, db, CONFIG, peer_ip="127.0.0.2", days=95)
    milter_port, policy_port = free_port(), free_port()
    milter = f"inet:127.0.0.1:{milter_port}"
    main_cf = (
        f"smtpd_milters = {milter}\nmilter_default_action = tempfail\n"
        "smtpd_restriction_classes = tbes_policy\n"
        f"tbes_policy = check_policy_service inet:127.0.0.1:{policy_port}\n"
    )
    listeners = [
        Listener(free_port(), (("milter_protocol", "6"),)),
        Listener(free_port(), (("milter_protocol", "2"),)),
        Listener(
            free_port(),
            (
                ("smtpd_milters", ""),
                ("smtpd_recipient_restrictions", "reject_unauth_destination,tbes_policy"),
            ),
        ),
    ]
    serve = ServeProcess(config, db, milter_port, policy_port, work / "serve.log")
    with serve, PostfixServer(main_cf, listeners) as postfix:
        yield _Site(postfix, serve, db)
    # SIGTERM stops both services cleanly.
    assert serve.returncode == 0, (work / "serve.log").read_text(errors="replace")[-3000:]


@pytest.mark.parametrize("listener", ["v6", "v2"])
def test_each_message_of_a_session_is_judged_by_protocol_6_and_2(
    site: _Site, listener: str
) -> None:
    port = getattr(site, listener)
    blocked = reply_line("blocked", 60)
    compliant = _session(port, "127.0.0.3", [EX2019, EX2019, EX2019])
    assert [line[:14] for line in compliant] == ["250 2.0.0 Ok: "] * 3, compliant
    # A blocked message, then another on the same session: each gets the decision's reply.
    assert _session(port, "127.0.0.2", [EX2007, EX2007]) == [blocked, blocked]


def test_the_policy_service_of_the_same_process_answers_from_the_same_store(
    site: _Site,
) -> None:
    # The milter sees the server's mail now, so it is active behind its connector: at RCPT,
    # with no headers, what every active server of the connector would get is certain.
    _session(site.v6, "127.0.0.2", [EX2007])
    (line,) = _session(site.policy, "127.0.0.2", [EX2007])
    blocked = reply_line("blocked", 60)
    code, text = blocked[:12], blocked[12:]
    assert line == f"{code}<{RCPT}>: Recipient address rejected: {text}"
    (ok,) = _session(site.policy, "127.0.0.3", [EX2019])
    assert ok.startswith("250 ")


def test_the_milter_recorded_the_compliant_server(site: _Site) -> None:
    _session(site.v6, "127.0.0.3", [EX2019])
    stored = SQLiteStore(site.db).get("northwind-ex2019/ex19edge.northwind.example")
    assert stored is not None
    assert stored.value.status is Compliance.COMPLIANT
