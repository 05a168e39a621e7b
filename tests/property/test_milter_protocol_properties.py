"""Properties of the milter codec: any bytes, any chunking, only documented outcomes."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from milter_contract import check_reply, check_stream
from milter_strategies import chunked, packets, streams

from tbes.adapters._milter_protocol import (
    Check,
    MilterParser,
    MilterProtocolError,
    MilterSession,
    encode_reply,
)
from tbes.adapters.listen import ListenAddress, ListenAddressError, parse_listen_address


@given(st.data(), streams)
def test_any_stream_in_any_chunks_keeps_the_contract(data: st.DataObject, stream: bytes) -> None:
    check_stream(data.draw(chunked(stream)))


@given(st.data(), st.binary(max_size=200))
def test_noise_keeps_the_contract(data: st.DataObject, noise: bytes) -> None:
    check_stream(data.draw(chunked(noise)))


@given(st.lists(packets, max_size=10), st.data())
def test_packets_come_out_as_they_went_in_however_split(
    items: list[bytes], data: st.DataObject
) -> None:
    parser = MilterParser(max_packet=4096)
    out: list[tuple[int, bytes]] = []
    for chunk in data.draw(chunked(b"".join(items))):
        out.extend(parser.feed(chunk))
    assert [bytes([c]) + p for c, p in out] == [item[4:] for item in items]
    assert parser.buffered == 0


@given(st.integers(0, 2**32 - 1))
def test_a_length_outside_the_limit_fails_at_once(length: int) -> None:
    parser = MilterParser(max_packet=4096)
    header = struct.pack(">L", length)
    if 1 <= length <= 4096:
        assert parser.feed(header) == []
    else:
        try:
            parser.feed(header)
        except MilterProtocolError:
            assert parser.buffered == 0
        else:
            raise AssertionError(f"length {length} was accepted")


@given(
    st.integers(400, 599),
    st.from_regex(r"[45]\.[0-9]\.[0-9]{1,3}", fullmatch=True),
    st.text(max_size=80),
)
def test_a_reply_is_one_line_that_gives_back_the_text(code: int, enhanced: str, text: str) -> None:
    reply = encode_reply(code, enhanced, text)
    check_reply(reply)
    (length,) = struct.unpack(">L", reply[:4])
    assert length == len(reply) - 4
    assert reply[4:5] == b"y"
    line = reply[5:].decode()
    assert line.endswith("\0")
    body = line[:-1]
    assert not any(c in body for c in "\r\n\0")
    # The MTA undoes the doubling: what the client reads is the text, line breaks as spaces.
    expected = f"{code} {enhanced} {text}".translate(str.maketrans("\r\n\0", "   "))
    assert body.replace("%%", "%") == expected


@given(st.lists(st.binary(max_size=30), max_size=40), st.integers(1, 10))
def test_received_values_are_the_topmost_and_bounded(values: list[bytes], limit: int) -> None:
    session = MilterSession(max_received=limit)
    session.receive(ord("O"), struct.pack(">LLL", 6, 0x1FF, 0x1FFFFF))
    kept = [v.replace(b"\0", b"") for v in values]
    for value in kept:
        session.receive(ord("L"), b"Received\0" + value + b"\0")
    check = session.receive(ord("N"), b"")
    assert isinstance(check, Check)
    assert list(check.received) == [v.decode("utf-8", "replace") for v in kept[:limit]]


_hosts = st.one_of(
    st.none(),
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True),
)


@given(_hosts, st.integers(0, 65535))
def test_a_listen_address_reads_back_from_its_text(host: str | None, port: int) -> None:
    address = ListenAddress(host=host, port=port)
    assert parse_listen_address(str(address)) == address


@given(st.text(max_size=40))
def test_any_text_is_a_listen_address_or_a_listen_address_error(text: str) -> None:
    try:
        address = parse_listen_address(text)
    except ListenAddressError as error:
        message = str(error)
    else:
        assert (address.path is None) != (address.port is None)
        return
    # The refusal quotes the text, escaped.
    assert repr(text) in message
