"""The milter, driven through pymilter's own callback machinery (Milter.testctx.TestCtx)."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

try:
    import Milter
    import Milter.testctx as testctx
except ImportError:  # pragma: no cover - depends on the installed extras
    # CI installs the milter extra; there a missing pymilter is a failure, not a skip.
    if os.environ.get("TBES_REQUIRE_INTEGRATION") == "1":
        raise
    pytest.skip("the milter extra (pymilter) is not installed", allow_module_level=True)

from adapter_support import Recorder, decision, enforcement_text, offset_minute, on_premises
from tbes.adapters.config import AdapterConfig
from tbes.adapters.milter import MAX_RECEIVED, TbesMilter, run_milter, validate_socket
from tbes.catalog import Catalog
from tbes.decision import Action
from tbes.enforcer import Connection, Enforcer
from tbes.policy import ConnectorKind, Policy, SmtpReply
from tbes.store.memory import MemoryStore

EX2007 = (
    "from EXHUB01.fabrikam.local (10.1.2.3) by mail.fabrikam.example (203.0.113.25) with "
    "Microsoft SMTP Server id 8.3.83.6; Mon, 3 Mar 2025 10:00:00 +0100"
)
MAPI = (
    "from EXMBX01.fabrikam.local ([10.1.2.7]) by EXHUB01.fabrikam.local ([10.1.2.3]) "
    "with mapi; Mon, 3 Mar 2025 09:59:59 +0100"
)
CONFIG = AdapterConfig(connectors=(on_premises("fabrikam", "fabrikam-edge", "203.0.113.0/24"),))
TEXT_5 = enforcement_text("throttled", 5)


# Callbacks that never refuse answer NOREPLY once the MTA agreed to skip their replies.
_GO_ON = (Milter.CONTINUE, Milter.NOREPLY)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder(decision(Action.ACCEPT))


def _install(
    monkeypatch: pytest.MonkeyPatch, checker: object, config: AdapterConfig = CONFIG
) -> None:
    monkeypatch.setattr(Milter, "factory", lambda: TbesMilter(checker, config))  # type: ignore[arg-type]


@pytest.fixture
def ctx(monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> testctx.TestCtx:
    _install(monkeypatch, recorder)
    return testctx.TestCtx()


def _message(
    ctx: testctx.TestCtx, headers: Sequence[tuple[str, str]], *, ip: str = "203.0.113.25"
) -> int:
    assert ctx._connect(host="[" + ip + "]", helo="mail.fabrikam.example", ip=ip) == Milter.CONTINUE
    assert ctx._envfrom("<alice@fabrikam.example>") in _GO_ON
    for name, value in headers:
        assert ctx._header(name, value) in _GO_ON
    rc: int = ctx._eoh()
    return rc


def test_milter_asks_the_mta_for_the_identity_macros(ctx: testctx.TestCtx) -> None:
    ctx._negotiate()
    assert ctx._symlist[Milter.M_CONNECT] == {
        b"{client_addr}",
        b"{client_name}",
        b"{client_resolve}",
    }
    assert ctx._symlist[Milter.M_HELO] == {b"{cert_subject}"}
    # The body is never asked for.
    assert ctx._protocol & Milter.P_NOBODY


def test_identity_comes_from_the_mta_macros(ctx: testctx.TestCtx, recorder: Recorder) -> None:
    ctx._setsymval("{client_addr}", "203.0.113.25")
    ctx._setsymval("{client_name}", "mail.fabrikam.example")
    ctx._setsymval("{cert_subject}", "mail.fabrikam.example")
    # The connect arguments say otherwise: the macros win.
    assert _message(ctx, [("Received", EX2007)], ip="192.0.2.1") == Milter.ACCEPT
    ((conn, _),) = recorder.calls
    assert conn == Connection(
        server_id="fabrikam-edge",
        tenant="fabrikam",
        kind=ConnectorKind.ON_PREMISES,
        peer_ip="203.0.113.25",
        peer_host="mail.fabrikam.example",
        tls_subject="mail.fabrikam.example",
        connector="fabrikam-edge",  # the rule's name
    )


def test_without_macros_the_connect_arguments_identify(
    ctx: testctx.TestCtx, recorder: Recorder
) -> None:
    _message(ctx, [("Received", EX2007)], ip="203.0.113.9")
    ((conn, _),) = recorder.calls
    assert (conn.peer_ip, conn.peer_host, conn.server_id) == ("203.0.113.9", None, "fabrikam-edge")


def test_unverified_names_do_not_identify(ctx: testctx.TestCtx, recorder: Recorder) -> None:
    ctx._setsymval("{client_name}", "mail.fabrikam.example")
    ctx._setsymval("{client_resolve}", "FORGED")
    _message(ctx, [("Received", EX2007)])
    ((conn, _),) = recorder.calls
    assert conn.peer_host is None


def test_received_values_go_top_first_and_nothing_else(
    ctx: testctx.TestCtx, recorder: Recorder
) -> None:
    headers = [
        ("Received", EX2007),
        ("Subject", "by mail.forged.example with Microsoft SMTP Server id 15.2.9999.9"),
        ("RECEIVED", MAPI),
        ("From", "alice@fabrikam.example"),
    ]
    _message(ctx, headers)
    ((_, received),) = recorder.calls
    assert received == [EX2007, MAPI]


def test_each_message_is_judged_on_its_own_headers(
    ctx: testctx.TestCtx, recorder: Recorder
) -> None:
    _message(ctx, [("Received", EX2007)])
    assert ctx._envfrom("<alice@fabrikam.example>") in _GO_ON
    ctx._header("Received", MAPI)
    ctx._eoh()
    assert [received for _, received in recorder.calls] == [[EX2007], [MAPI]]


def test_undecodable_header_bytes_become_replacement_characters(
    ctx: testctx.TestCtx, recorder: Recorder
) -> None:
    # TestCtx sends this str as the bytes b"from \xff ..." (surrogateescape), as an MTA would.
    _message(ctx, [("Received", "from \udcffhost by mx.example; Mon, 3 Mar 2025 10:00:00 +0000")])
    ((_, received),) = recorder.calls
    assert received[0].startswith("from \ufffd")
    assert received[0].endswith("host by mx.example; Mon, 3 Mar 2025 10:00:00 +0000")
    assert all(not 0xD800 <= ord(c) <= 0xDFFF for c in received[0])


def test_received_values_are_bounded(ctx: testctx.TestCtx, recorder: Recorder) -> None:
    _message(ctx, [("Received", f"hop {i}") for i in range(MAX_RECEIVED + 50)])
    ((_, received),) = recorder.calls
    assert received == [f"hop {i}" for i in range(MAX_RECEIVED)]


def test_throttle_is_tempfail_with_the_decision_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reply = SmtpReply(450, "4.7.230", TEXT_5)
    _install(monkeypatch, Recorder(decision(Action.THROTTLE, reply, stage=2)))
    ctx = testctx.TestCtx()
    assert _message(ctx, [("Received", EX2007)]) == Milter.TEMPFAIL
    assert ctx._reply == ("450", "4.7.230", TEXT_5)


def test_block_is_reject_and_percent_is_doubled(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "blocked for 60 mins/hr. For more information see https://example.test/a%20b."
    _install(monkeypatch, Recorder(decision(Action.BLOCK, SmtpReply(550, "5.7.230", text), 8)))
    ctx = testctx.TestCtx()
    assert _message(ctx, [("Received", EX2007)]) == Milter.REJECT
    assert ctx._reply == ("550", "5.7.230", text.replace("%", "%%"))


def test_a_fault_accepts_and_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _install(monkeypatch, Recorder(OSError("store down")))
    ctx = testctx.TestCtx()
    with caplog.at_level(logging.WARNING, logger="tbes.adapters.milter"):
        assert _message(ctx, [("Received", EX2007)]) == Milter.ACCEPT
    assert ctx._reply is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "accepting" in caplog.records[0].getMessage()


def test_a_fault_defers_when_failing_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = AdapterConfig(connectors=CONFIG.connectors, fail_closed=True)
    _install(monkeypatch, Recorder(OSError("store down")), closed)
    ctx = testctx.TestCtx()
    assert _message(ctx, [("Received", EX2007)]) == Milter.TEMPFAIL
    assert ctx._reply == (
        "451",
        "4.3.0",
        "Temporary failure checking the sending Exchange server; try again later",
    )


def test_real_enforcer_throttles_in_stage_two(monkeypatch: pytest.MonkeyPatch) -> None:
    detected = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)
    clock = [detected]
    enforcer = Enforcer(
        MemoryStore(), Policy.exchange_online_2026(), Catalog.default(), clock=lambda: clock[0]
    )
    _install(monkeypatch, enforcer)
    assert _message(testctx.TestCtx(), [("Received", EX2007), ("Received", MAPI)]) == Milter.ACCEPT
    # Stage 2 starts 30 days later; at the server's own offset minute it is throttled.
    clock[0] = detected + dt.timedelta(days=31, minutes=offset_minute("fabrikam-edge"))
    ctx = testctx.TestCtx()
    assert _message(ctx, [("Received", EX2007), ("Received", MAPI)]) == Milter.TEMPFAIL
    assert ctx._reply == ("450", "4.7.230", TEXT_5)


@pytest.mark.parametrize(
    "socket", ["inet:8891@127.0.0.1", "inet6:8891@[::1]", "unix:/run/tbes.sock"]
)
def test_milter_sockets_in_libmilter_form_are_accepted(socket: str) -> None:
    assert validate_socket(socket) == socket


@pytest.mark.parametrize("socket", ["127.0.0.1:8891", "inet:127.0.0.1:8891", "tcp:8891", ""])
def test_other_socket_forms_are_refused_before_starting(socket: str) -> None:
    with pytest.raises(ValueError, match="not a milter socket"):
        run_milter(socket, CONFIG, Recorder(decision(Action.ACCEPT)))


def test_tbes_milter_command_refuses_a_bad_socket_without_starting(tmp_path: Path) -> None:
    click_testing = pytest.importorskip("click.testing", reason="the cli extra is not installed")
    from tbes.adapters.milter import command

    config = tmp_path / "adapters.toml"
    config.write_text('tenant = "contoso"\n', encoding="utf-8")
    args = ["--listen", "127.0.0.1:8891", "--db", str(tmp_path / "t.db"), "--config", str(config)]
    result = click_testing.CliRunner().invoke(command, args)
    assert result.exit_code == 1
    assert "not a milter socket: '127.0.0.1:8891'" in result.output


def test_tbes_milter_command_names_a_bad_configuration(tmp_path: Path) -> None:
    click_testing = pytest.importorskip("click.testing", reason="the cli extra is not installed")
    from tbes.adapters.milter import command

    config = tmp_path / "adapters.toml"
    config.write_text("fail_closed = 1\n", encoding="utf-8")
    args = [
        "--listen",
        "inet:8891@127.0.0.1",
        "--db",
        str(tmp_path / "t.db"),
        "--config",
        str(config),
    ]
    result = click_testing.CliRunner().invoke(command, args)
    assert result.exit_code == 1
    assert "fail_closed must be a bool, got 1" in result.output
