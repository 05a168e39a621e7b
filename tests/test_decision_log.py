"""Decision logs: one line per decision from every adapter, in text or JSON, to stderr or syslog.

The text lines are read back with a parser of this file's own (``key=value``, a quoted value
is a Python string literal), so the escaping is checked by what it means, not by how the
formatter writes it.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import re
import shutil
import socket
import tempfile
import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter_support import Recorder, decision, on_premises
from daemon_support import (
    BLOCK_PREFIX,
    EX2007,
    T0,
    Daemon,
    ask_policy,
    config_text,
    free_port,
    seed_exchange_2007,
)
from milter_client import MtaClient
from tbes.adapters._log_output import JsonFormatter, TextFormatter, escape
from tbes.adapters._store_watch import WatchedStore
from tbes.adapters.aiosmtpd import EnforcingHandler
from tbes.adapters.config import AdapterConfig, make_enforcer
from tbes.decision import Action, Decision
from tbes.enforcer import Connection
from tbes.store.memory import MemoryStore

pytestmark = pytest.mark.timeout(90)

# The keys every decision line carries, in this order (docs/operations.md).
KEYS = [
    "adapter",
    "connector",
    "kind",
    "tenant",
    "server",
    "build",
    "status",
    "stage",
    "action",
    "code",
    "enforced",
    "would",
    "would_code",
    "fault",
    "micros",
]
_TOKEN = re.compile(r'([^\s=]+)=("(?:\\.|[^"\\])*"|[^\s"]+)(?: |$)')


def parse_text(line: str) -> dict[str, str]:
    """A text log line as its pairs; quoted values decoded as Python string literals."""
    pairs: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = _TOKEN.match(line, position)
        assert match is not None, f"not key=value at {line[position:]!r}"
        key, value = match.group(1), match.group(2)
        assert key not in pairs, f"{key} twice in {line!r}"
        pairs[key] = ast.literal_eval(value) if value.startswith('"') else value
        position = match.end()
    return pairs


# ---- the formatters --------------------------------------------------------------------------


@given(st.text())
def test_any_text_is_one_printable_ascii_token_that_reads_back(text: str) -> None:
    token = escape(text)
    assert token.isascii()
    assert all(" " <= char <= "~" for char in token)
    if " " in token or not token:
        assert token.startswith('"')
    decoded = ast.literal_eval(token) if token.startswith('"') else token
    assert decoded == text


def _record(message: str, fields: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord("tbes.decisions", logging.INFO, __file__, 1, message, (), None)
    record.tbes = fields
    return record


HOSTILE = {
    "server": 'ex01\nlevel=ERROR forged="yes"',
    "tenant": "\x1b[31mred\x1b[0m",
    "build": "\u202etxt.exe",
    "stage": 3,
    "fault": None,
}


def test_a_text_line_is_one_line_whose_values_read_back_exactly() -> None:
    line = TextFormatter().format(_record('said "hi"\r\n', HOSTILE))
    assert "\n" not in line
    assert "\r" not in line
    assert line.isascii()
    pairs = parse_text(line)
    assert pairs["level"] == "INFO"
    assert pairs["msg"] == 'said "hi"\r\n'
    assert pairs["server"] == HOSTILE["server"]
    assert pairs["tenant"] == HOSTILE["tenant"]
    assert pairs["build"] == HOSTILE["build"]
    assert pairs["stage"] == "3"
    assert pairs["fault"] == "-"
    assert "forged" not in pairs


def test_a_json_line_is_one_ascii_object_with_the_fields() -> None:
    line = JsonFormatter().format(_record("decision", HOSTILE))
    assert "\n" not in line
    assert line.isascii()
    data = json.loads(line)
    assert data["msg"] == "decision"
    assert data["level"] == "INFO"
    assert data["logger"] == "tbes.decisions"
    assert {key: data[key] for key in HOSTILE} == HOSTILE


def test_a_traceback_is_one_escaped_value() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("x", logging.WARNING, __file__, 1, "failed", (), None)
        record.exc_info = __import__("sys").exc_info()
    line = TextFormatter(with_time=False).format(record)
    assert "\n" not in line
    assert "ValueError: bad\nthing" in parse_text(line)["exc"]


# ---- the adapters ----------------------------------------------------------------------------


def _aiosmtpd_data(handler: EnforcingHandler, message: bytes) -> str:
    session = types.SimpleNamespace(peer=("203.0.113.9", 2525))
    envelope = types.SimpleNamespace(original_content=message, content=message)
    server = types.SimpleNamespace(transport=None)
    return asyncio.run(handler.handle_DATA(server, session, envelope))


FABRIKAM = AdapterConfig(
    connectors=(on_premises("fabrikam", "fabrikam-edge", "203.0.113.0/24"),), fixed_time=T0
)
MESSAGE = f"Received: {EX2007}\r\nSubject: the plans\r\n\r\nbody\r\n".encode()


def test_the_aiosmtpd_handler_logs_one_line_per_decision(
    caplog: pytest.LogCaptureFixture,
) -> None:
    enforcer = make_enforcer(FABRIKAM, MemoryStore())
    with caplog.at_level(logging.INFO, logger="tbes.decisions"):
        assert _aiosmtpd_data(EnforcingHandler(enforcer, FABRIKAM), MESSAGE).startswith("250")
        broken = EnforcingHandler(Recorder(OSError("store down")), FABRIKAM)
        assert _aiosmtpd_data(broken, MESSAGE).startswith("250")
    lines = [r.tbes for r in caplog.records if r.name == "tbes.decisions"]  # type: ignore[attr-defined]
    assert [list(line) for line in lines] == [KEYS, KEYS]
    first, fault = lines
    assert first["adapter"] == "aiosmtpd"
    assert first["connector"] == "fabrikam-edge"
    assert first["tenant"] == "fabrikam"
    assert first["build"] == "8.3.83.6"
    assert first["status"] == "UNSUPPORTED"
    assert (first["stage"], first["action"], first["code"], first["fault"]) == (
        1,
        "ACCEPT",
        None,
        None,
    )
    assert isinstance(first["micros"], int)
    assert first["micros"] >= 0
    assert (fault["action"], fault["fault"]) == ("ACCEPT", "error")
    assert "the plans" not in caplog.text


def test_a_decision_line_names_the_server_behind_the_connector(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As a daemon runs it: the store watched. The sender hop's by host names the server.
    enforcer = make_enforcer(FABRIKAM, WatchedStore(MemoryStore()))
    with caplog.at_level(logging.INFO, logger="tbes.decisions"):
        assert _aiosmtpd_data(EnforcingHandler(enforcer, FABRIKAM), MESSAGE).startswith("250")
    (line,) = [r.tbes for r in caplog.records if r.name == "tbes.decisions"]  # type: ignore[attr-defined]
    assert (line["connector"], line["server"]) == (
        "fabrikam-edge",
        "fabrikam-edge/mail.fabrikam.example",
    )


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_tbes_serve_logs_json_decisions_of_both_adapters_and_events_at_warning(
    tmp_path: Path,
) -> None:
    config = tmp_path / "adapters.toml"
    config.write_text(config_text(with_rule=True, fixed_time=T0), encoding="utf-8")
    milter_port, policy_port = free_port(), free_port()
    args = ["serve", "--milter", f"127.0.0.1:{milter_port}", "--policy", f"127.0.0.1:{policy_port}"]
    args += ["--db", str(tmp_path / "t.db"), "--config", str(config), "--log-format", "json"]
    with Daemon(tmp_path, args, [milter_port, policy_port]) as daemon:
        with MtaClient(milter_port) as client:
            client.negotiate()
            client.macros(b"C", client_addr="127.0.0.2", client_name="mail.fabrikam.example")
            client.connect("mail.fabrikam.example", "127.0.0.2")
            client.helo("mail.fabrikam.example")
            assert client.message([("Received", EX2007), ("Subject", "q3")]) == (b"a", b"")
        with socket.create_connection(("127.0.0.1", policy_port), timeout=10) as sock:
            assert ask_policy(sock) == b"action=DUNNO\n\n"  # stage 1: reported only
        assert daemon.stop() == 0
    lines = _json_lines(daemon.log())
    assert len(lines) == len(daemon.log().splitlines()), "every line is one JSON object"
    decided = [line for line in lines if line["logger"] == "tbes.decisions"]
    assert [line["adapter"] for line in decided] == ["milter", "policy"]
    for line in decided:
        assert line["level"] == "INFO"
        assert [key for key in line if key in KEYS] == KEYS
        assert (line["server"], line["stage"], line["action"]) == ("fabrikam-edge", 1, "ACCEPT")
        assert line["fault"] is None
    # The milter's from the hop it read; the policy service's from the state stored since.
    for line in decided:
        assert (line["build"], line["status"]) == ("8.3.83.6", "UNSUPPORTED")
    (event,) = [line for line in lines if line["logger"] == "tbes.events"]
    assert event["level"] == "WARNING"
    assert (event["event"], event["server"], event["stage"]) == ("DETECTED", "fabrikam-edge", 1)
    assert "q3" not in daemon.log()


@pytest.fixture
def syslog_socket() -> Iterator[tuple[socket.socket, str]]:
    # A short directory: a unix socket path has a limit of about 100 bytes.
    directory = tempfile.mkdtemp(prefix="tbes-log-", dir="/tmp")
    path = f"{directory}/log"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(15)
    try:
        yield receiver, path
    finally:
        receiver.close()
        shutil.rmtree(directory)


_SYSLOG = re.compile(r"<(\d+)>tbes\[(\d+)\]: (.*)")
_MAIL_INFO = 2 * 8 + 6  # facility mail (2), severity informational (6): RFC 5424


def test_syslog_lines_go_to_the_socket_with_facility_mail(
    tmp_path: Path, syslog_socket: tuple[socket.socket, str]
) -> None:
    receiver, path = syslog_socket
    config = tmp_path / "adapters.toml"
    config.write_text(config_text(with_rule=True), encoding="utf-8")
    seed_exchange_2007(tmp_path / "t.db")
    port = free_port()
    args = ["policy", "--listen", f"127.0.0.1:{port}", "--db", str(tmp_path / "t.db")]
    args += ["--config", str(config), "--log-target", "syslog", "--syslog-socket", path]
    with Daemon(tmp_path, args, [port]) as daemon:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert ask_policy(sock).startswith(BLOCK_PREFIX)
        received: list[tuple[int, int, dict[str, str]]] = []
        while not any(pairs.get("logger") == "tbes.decisions" for _, _, pairs in received):
            match = _SYSLOG.fullmatch(receiver.recv(65536).decode("ascii"))
            assert match is not None
            received.append((int(match[1]), int(match[2]), parse_text(match[3])))
        assert daemon.stop() == 0
    assert daemon.process is not None
    assert {pid for _, pid, _ in received} == {daemon.process.pid}
    priority, _, line = received[-1]
    assert priority == _MAIL_INFO
    assert "time" not in line  # syslog stamps the time
    assert list(line)[:4] == ["level", "logger", "msg", "adapter"]
    assert [key for key in line if key in KEYS] == KEYS
    assert (line["adapter"], line["server"], line["tenant"]) == (
        "policy",
        "fabrikam-edge",
        "fabrikam",
    )
    assert (line["build"], line["status"]) == ("8.3.83.6", "UNSUPPORTED")
    assert (line["stage"], line["action"], line["code"], line["fault"]) == (
        "8",
        "BLOCK",
        "550",
        "-",
    )
    assert daemon.log() == ""  # nothing on stderr


def test_an_unreachable_syslog_socket_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "adapters.toml"
    config.write_text('tenant = "contoso"\n', encoding="utf-8")
    args = ["policy", "--listen", f"127.0.0.1:{free_port()}", "--db", str(tmp_path / "t.db")]
    args += ["--config", str(config), "--log-target", "syslog"]
    args += ["--syslog-socket", str(tmp_path / "nothing-here")]
    daemon = Daemon(tmp_path, args)
    assert daemon.start().wait(30) == 2
    lines = daemon.log().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tbes: error: cannot log to syslog")


class _Slow:
    """A checker that takes 20 ms, then accepts."""

    def check(self, conn: Connection, received: Sequence[str]) -> Decision:
        time.sleep(0.02)
        return decision(Action.ACCEPT)


def test_micros_is_the_checks_own_time(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tbes.decisions"):
        _aiosmtpd_data(EnforcingHandler(_Slow(), FABRIKAM), MESSAGE)
    (record,) = [r for r in caplog.records if r.name == "tbes.decisions"]
    assert record.tbes["micros"] >= 20_000  # type: ignore[attr-defined]


@given(st.dictionaries(st.sampled_from(KEYS), st.text(), min_size=1), st.text())
def test_any_fields_and_message_make_one_text_line_that_reads_back(
    fields: dict[str, str], message: str
) -> None:
    line = TextFormatter().format(_record(message, dict(fields)))
    assert len(line.splitlines()) == 1
    assert all(" " <= char <= "~" for char in line)
    pairs = parse_text(line)
    assert pairs["msg"] == message
    for key, value in fields.items():
        assert pairs[key] == value


# Values made of plain-word characters, spaces and "=": the text line's one-match fast path
# must never let such a value pose as another key=value pair.
_NEAR_PLAIN = st.lists(st.sampled_from(["a", "9.b", "-", "=", " ", "stage=3", ""]), max_size=6).map(
    "".join
)


@given(st.dictionaries(st.sampled_from(KEYS), _NEAR_PLAIN, min_size=1))
def test_a_value_of_plain_words_and_spaces_never_poses_as_another_pair(
    fields: dict[str, str],
) -> None:
    line = TextFormatter().format(_record("decision", dict(fields)))
    pairs = parse_text(line)
    assert set(pairs) == {"time", "level", "logger", "msg", *fields}
    for key, value in fields.items():
        assert pairs[key] == value
