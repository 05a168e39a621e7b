"""Postfix policy delegation: the codec byte by byte, the decision per request, the server."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter_support import Recorder, decision, on_premises, reply_line
from tbes.adapters.config import AdapterConfig
from tbes.adapters.postfix_policy import (
    PolicyParser,
    PolicyProtocolError,
    PolicyRequest,
    action_for,
    decide_request,
    format_response,
    serve_policy,
)
from tbes.catalog import Catalog
from tbes.decision import Action
from tbes.enforcer import Connection, Enforcer
from tbes.identity import Identity
from tbes.policy import ConnectorKind, Policy, SmtpReply
from tbes.store.memory import MemoryStore

# A request as Postfix 3.x sends it at RCPT TO (SMTPD_POLICY_README), abridged.
REQUEST = (
    b"request=smtpd_access_policy\n"
    b"protocol_state=RCPT\n"
    b"protocol_name=ESMTP\n"
    b"client_address=203.0.113.25\n"
    b"client_name=mail.fabrikam.example\n"
    b"reverse_client_name=mail.fabrikam.example\n"
    b"helo_name=mail.fabrikam.example\n"
    b"sender=alice@fabrikam.example\n"
    b"recipient=bob@contoso.example\n"
    b"ccert_subject=mail.fabrikam.example\n"
    b"queue_id=\n"
    b"\n"
)
THROTTLE_5 = reply_line("throttled", 5)
BLOCK_60 = reply_line("blocked", 60)
CONFIG = AdapterConfig(connectors=(on_premises("fabrikam", "fabrikam-edge", "203.0.113.0/24"),))


def test_a_whole_request_gives_its_attributes_in_order() -> None:
    (request,) = PolicyParser().feed(REQUEST)
    assert request.get("client_address") == "203.0.113.25"
    assert request.get("ccert_subject") == "mail.fabrikam.example"
    assert request.get("queue_id") == ""
    assert request.get("missing") is None
    assert next(iter(request)) == ("request", "smtpd_access_policy")
    assert len(request.attributes) == 11


def test_requests_on_one_connection_come_out_one_by_one() -> None:
    parser = PolicyParser()
    assert parser.feed(REQUEST[:40]) == []
    assert not parser.idle
    first = parser.feed(REQUEST[40:] + REQUEST + b"client_address=192.0.2.1\n")
    assert len(first) == 2
    assert parser.feed(b"\n") == [PolicyRequest((("client_address", "192.0.2.1"),))]
    assert parser.idle


@given(cuts=st.lists(st.integers(0, 2 * len(REQUEST)), max_size=12))
def test_any_chunking_gives_the_same_requests(cuts: list[int]) -> None:
    stream = REQUEST + REQUEST.replace(b"203.0.113.25", b"198.51.100.1")
    parser = PolicyParser()
    got: list[PolicyRequest] = []
    last = 0
    for cut in [*sorted(cuts), len(stream)]:
        got += parser.feed(stream[last:cut])
        last = max(last, cut)
    assert [r.get("client_address") for r in got] == ["203.0.113.25", "198.51.100.1"]


def test_crlf_lines_and_repeated_names_are_read() -> None:
    (request,) = PolicyParser().feed(b"a=1\r\nb=x=y\r\na=2\r\n\r\n")
    assert request.get("a") == "2"
    assert request.get("b") == "x=y"


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    (request,) = PolicyParser().feed(b"sender=\xff\xfe@example\n\n")
    assert request.get("sender") == "\ufffd\ufffd@example"


def test_an_overlong_line_fails_before_it_is_buffered() -> None:
    parser = PolicyParser(max_line=64)
    parser.feed(b"client_address=" + b"1" * 40)
    with pytest.raises(PolicyProtocolError, match="longer than 64 bytes"):
        parser.feed(b"2" * 100)  # no newline yet: the limit applies to the partial line
    # The parser stays broken and keeps nothing.
    with pytest.raises(PolicyProtocolError):
        parser.feed(b"\n\n")


def test_too_many_attributes_fail() -> None:
    parser = PolicyParser(max_attributes=3)
    with pytest.raises(PolicyProtocolError, match="more than 3 attributes"):
        parser.feed(b"a=1\nb=2\nc=3\nd=4\n")


def test_a_request_over_its_byte_bound_fails_whatever_its_lines() -> None:
    parser = PolicyParser(max_request=100)
    assert len(parser.feed(b"a=" + b"1" * 40 + b"\n\n")) == 1  # 44 bytes: fine
    parser.feed(b"a=" + b"1" * 40 + b"\n")  # 43 bytes pending
    parser.feed(b"b=" + b"2" * 40 + b"\n")  # 86 bytes pending
    with pytest.raises(PolicyProtocolError, match="longer than 100 bytes"):
        parser.feed(b"c=333333333333333")  # a partial line past the bound: no newline needed
    with pytest.raises(PolicyProtocolError):
        parser.feed(b"\n\n")


def test_the_byte_bound_counts_each_request_afresh() -> None:
    parser = PolicyParser(max_request=len(REQUEST))
    assert len(parser.feed(REQUEST * 5)) == 5
    assert parser.idle


def _raw_at_least(text: str) -> int:
    # A U+FFFD replaced at least one byte (it is 3 bytes encoded).
    return len(text.encode()) - 2 * text.count("\ufffd")


@given(
    chunks=st.lists(
        st.one_of(st.binary(max_size=200), st.sampled_from([b"a=1\n", b"\n", b"n=" + b"x" * 60])),
        max_size=20,
    ),
    bound=st.integers(1, 300),
)
def test_no_request_is_over_its_byte_bound(chunks: list[bytes], bound: int) -> None:
    parser = PolicyParser(max_line=1000, max_attributes=1000, max_request=bound)
    try:
        for chunk in chunks:
            for request in parser.feed(chunk):
                # The bytes each name=value line and the final empty line took, at least.
                size = sum(_raw_at_least(n) + _raw_at_least(v) + 2 for n, v in request) + 1
                assert size <= bound
    except PolicyProtocolError:
        pass


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"no equals sign\n", "not name=value"),
        (b"=value\n", "not name=value"),
        (b"\n", "empty policy request"),
    ],
)
def test_malformed_lines_fail(data: bytes, message: str) -> None:
    with pytest.raises(PolicyProtocolError, match=message):
        PolicyParser().feed(data)


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_bytes_give_requests_or_a_protocol_error(chunks: list[bytes]) -> None:
    parser = PolicyParser(max_line=128, max_attributes=8)
    try:
        for chunk in chunks:
            for request in parser.feed(chunk):
                assert 1 <= len(request.attributes) <= 8
                assert all(len(name) <= 128 for name, _ in request)
    except PolicyProtocolError:
        pass


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_line=0"):
        PolicyParser(max_line=0)
    with pytest.raises(ValueError, match="max_request=0"):
        PolicyParser(max_request=0)


def test_response_is_one_action_line_and_an_empty_line() -> None:
    assert format_response("DUNNO") == b"action=DUNNO\n\n"
    assert format_response(THROTTLE_5) == f"action={THROTTLE_5}\n\n".encode()
    for bad in ("", "DUNNO\n", "a\rb", " DUNNO"):
        with pytest.raises(ValueError, match="one non-empty line"):
            format_response(bad)


def test_actions_are_the_reply_line_or_dunno() -> None:
    block = SmtpReply(550, "5.7.230", BLOCK_60.split(" ", 2)[2])
    assert action_for(decision(Action.BLOCK, block, 8)) == BLOCK_60
    assert action_for(decision(Action.ACCEPT, None, 1)) == "DUNNO"


def test_identity_comes_from_client_attributes_and_no_headers_are_judged() -> None:
    (request,) = PolicyParser().feed(REQUEST)
    recorder = Recorder(decision(Action.ACCEPT, None, 1))
    assert decide_request(request, recorder, CONFIG) == "DUNNO"
    ((conn, received),) = recorder.calls
    assert conn == Connection(
        server_id="fabrikam-edge",
        tenant="fabrikam",
        kind=ConnectorKind.ON_PREMISES,
        peer_ip="203.0.113.25",
        peer_host="mail.fabrikam.example",
        tls_subject="mail.fabrikam.example",
        connector="fabrikam-edge",  # the rule's name
        identity=Identity.SERVER,  # the default: a state per server behind the connector
    )
    assert list(received) == []


def test_a_fault_answers_dunno_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    (request,) = PolicyParser().feed(REQUEST)
    with caplog.at_level(logging.WARNING, logger="tbes.adapters.postfix_policy"):
        action = decide_request(request, Recorder(OSError("store down")), CONFIG)
    assert action == "DUNNO"
    assert any("203.0.113.25" in r.getMessage() for r in caplog.records)
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_a_fault_defers_when_failing_closed() -> None:
    (request,) = PolicyParser().feed(REQUEST)
    closed = AdapterConfig(connectors=CONFIG.connectors, fail_closed=True)
    action = decide_request(request, Recorder(OSError("store down")), closed)
    assert (
        action
        == "451 4.3.0 Temporary failure checking the sending Exchange server; try again later"
    )


def _exchange_2007_received() -> str:
    return (
        "from EXHUB01.fabrikam.local (10.1.2.3) by mail.fabrikam.example (203.0.113.25) "
        "with Microsoft SMTP Server id 8.3.83.6; Mon, 3 Mar 2025 10:00:00 +0100"
    )


async def _exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    return data


def test_server_answers_from_the_stored_state_over_one_connection() -> None:
    detected = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)
    clock = [detected]
    store = MemoryStore()
    enforcer = Enforcer(
        store, Policy.exchange_online_2026(), Catalog.default(), clock=lambda: clock[0]
    )
    conn = CONFIG.connection(peer_ip="203.0.113.25", peer_host=None, tls_subject=None)
    enforcer.check(conn, [_exchange_2007_received()])  # what the milter would have seen
    clock[0] = detected + dt.timedelta(days=90)
    enforcer.check(conn, [_exchange_2007_received()])  # still sending: an active server
    clock[0] = detected + dt.timedelta(days=91)  # stage 8: blocked all hour
    unknown = REQUEST.replace(b"203.0.113.25", b"192.0.2.99")

    async def scenario() -> bytes:
        server = await serve_policy(enforcer, CONFIG)
        async with server:
            port = server.sockets[0].getsockname()[1]
            return await _exchange(port, REQUEST + unknown)

    answer = asyncio.run(scenario())
    assert answer == f"action={BLOCK_60}\n\naction=DUNNO\n\n".encode()


def test_rcpt_refuses_only_when_every_active_server_behind_the_connector_would_be() -> None:
    # An Exchange 2007 and an up-to-date Exchange SE behind one connector: at RCPT no header
    # says which of them sends, so only a refusal both would get is certain.
    detected = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)
    clock = [detected]
    enforcer = Enforcer(
        MemoryStore(), Policy.exchange_online_2026(), Catalog.default(), clock=lambda: clock[0]
    )
    conn = CONFIG.connection(peer_ip="203.0.113.25", peer_host=None, tls_subject=None)
    exse = _exchange_2007_received().replace("mail.", "exse.").replace("8.3.83.6", "15.2.2562.35")
    enforcer.check(conn, [_exchange_2007_received()])
    clock[0] = detected + dt.timedelta(days=91)  # stage 8 for the 2007 server
    enforcer.check(conn, [_exchange_2007_received()])
    (request,) = PolicyParser().feed(REQUEST)
    assert decide_request(request, enforcer, CONFIG) == BLOCK_60
    enforcer.check(conn, [exse])  # the SE server sends too: it would be accepted
    assert decide_request(request, enforcer, CONFIG) == "DUNNO"
    # The milter, which sees the headers, still blocks the 2007 server's message.
    assert enforcer.check(conn, [_exchange_2007_received()]).action is Action.BLOCK


def test_server_drops_a_peer_that_is_not_postfix(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(decision(Action.ACCEPT, None, 1))

    async def scenario() -> bytes:
        server = await serve_policy(recorder, CONFIG)
        async with server:
            port = server.sockets[0].getsockname()[1]
            return await _exchange(port, b"GET / HTTP/1.0\r\n\r\n")

    with caplog.at_level(logging.WARNING, logger="tbes.adapters.postfix_policy"):
        assert asyncio.run(scenario()) == b""
    assert recorder.calls == []
    assert any("not name=value" in r.getMessage() for r in caplog.records)


def test_throttle_reply_is_the_decision_line() -> None:
    throttle = SmtpReply(450, "4.7.230", THROTTLE_5.split(" ", 2)[2])
    assert action_for(decision(Action.THROTTLE, throttle, 2)) == THROTTLE_5


class _LineByLine:
    """The model the parser must agree with: the policy protocol read one line at a time,
    every limit checked on each line as it completes (the parser before it learnt to take
    a whole request in one pass). Errors are the messages' first words, the kind of fault."""

    def __init__(self, max_line: int, max_attributes: int, max_request: int) -> None:
        self.limits = (max_line, max_attributes, max_request)
        self.buffer = b""
        self.pending: list[tuple[str, str]] = []
        self.size = 0  # bytes of the pending request's whole lines

    def feed(self, data: bytes) -> list[tuple[tuple[str, str], ...]]:
        max_line, max_attributes, max_request = self.limits
        self.buffer += data
        done = []
        while b"\n" in self.buffer:
            raw, _, self.buffer = self.buffer.partition(b"\n")
            if len(raw) > max_line:
                raise PolicyProtocolError("line")
            self.size += len(raw) + 1
            if self.size > max_request:
                raise PolicyProtocolError("request")
            line = raw.removesuffix(b"\r")
            if not line:
                if not self.pending:
                    raise PolicyProtocolError("empty")
                done.append(tuple(self.pending))
                self.pending, self.size = [], 0
                continue
            name, equals, value = line.partition(b"=")
            if not equals or not name.strip():
                raise PolicyProtocolError("not")
            if len(self.pending) >= max_attributes:
                raise PolicyProtocolError("attributes")
            self.pending.append((name.decode(errors="replace"), value.decode(errors="replace")))
        if len(self.buffer) > max_line:
            raise PolicyProtocolError("line")
        if self.size + len(self.buffer) > max_request:
            raise PolicyProtocolError("request")
        return done


_KINDS = {
    "policy request line longer": "line",
    "policy request longer": "request",
    "empty policy request": "empty",
    "policy request line is not": "not",
    "policy request has more": "attributes",
}


def _kind(error: PolicyProtocolError) -> str:
    return next(kind for start, kind in _KINDS.items() if str(error).startswith(start))


_LINES = st.sampled_from(
    [
        b"a=1\n",
        b"client_address=203.0.113.25\n",
        b"name=" + b"x" * 40 + b"\n",
        b"\tk=v\r\n",
        b"k= v=w \r\r\n",
        b"\xff=\xe2\x82\n",
        b"\n",
        b"\r\n",
        b"=v\n",
        b" =v\n",
        b"no value\n",
    ]
)


@st.composite
def _streams(draw: st.DrawFn) -> list[bytes]:
    """A stream of mostly well-formed requests (a few broken lines, some garbage), cut
    into chunks at arbitrary points."""
    parts = draw(
        st.lists(
            st.one_of(
                st.lists(_LINES.filter(lambda line: line.strip(b"\r\n") != b""), max_size=14).map(
                    lambda lines: b"".join(lines) + b"\n"
                ),
                _LINES,
                st.just(REQUEST),
                st.binary(max_size=40),
            ),
            max_size=8,
        )
    )
    stream = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    return [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


@given(
    chunks=_streams(),
    max_line=st.integers(1, 800),
    max_attributes=st.integers(1, 8),
    max_request=st.integers(1, 1000),
)
def test_the_parser_agrees_with_a_line_by_line_reading(
    chunks: list[bytes], max_line: int, max_attributes: int, max_request: int
) -> None:
    # The parser takes a whole request in one pass when it can; whatever the cut of the
    # stream, it must return what a line-by-line reading returns, and fail where and how
    # that fails (the same kind of fault, on the same chunk).
    parser = PolicyParser(max_line=max_line, max_attributes=max_attributes, max_request=max_request)
    model = _LineByLine(max_line, max_attributes, max_request)
    for chunk in chunks:
        try:
            expected = model.feed(chunk)
        except PolicyProtocolError as error:
            fault = str(error)
        else:
            assert [request.attributes for request in parser.feed(chunk)] == expected
            assert parser.idle == (not model.buffer and not model.pending)
            continue
        with pytest.raises(PolicyProtocolError) as raised:
            parser.feed(chunk)
        assert _kind(raised.value) == fault
        with pytest.raises(PolicyProtocolError):  # and it stays broken
            parser.feed(b"a=1\n\n")
        return


def test_a_request_sent_a_byte_at_a_time_is_the_request_sent_at_once() -> None:
    parser = PolicyParser()
    got = [request for byte in REQUEST * 2 for request in parser.feed(bytes([byte]))]
    assert got == PolicyParser().feed(REQUEST * 2)
    assert len(got) == 2
    assert parser.idle
