"""The documented contract of the milter codec, checked by the property tests and the fuzz harness.

Whatever bytes arrive, in whatever chunks: the parser returns packets or raises
``MilterProtocolError`` (and then stays broken), never buffers more than one packet, and
gives the same packets however the bytes are split; the session answers each packet with
well-formed packets, a ``Check`` or "close", or raises ``MilterProtocolError``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from tbes.adapters._milter_protocol import (
    CLOSE,
    Check,
    MilterParser,
    MilterProtocolError,
    MilterSession,
)

MAX_PACKET = 4096
MAX_RECEIVED = 8
# What a filter may send back (SMFIR_* and the negotiation reply).
_REPLIES = frozenset(b"acdrtyO")


def split_packets(data: bytes) -> list[tuple[int, bytes]]:
    """The packets of ``data`` by the protocol description, independently of the parser."""
    packets, offset = [], 0
    while len(data) - offset >= 4:
        (length,) = struct.unpack_from(">L", data, offset)
        if not 1 <= length <= MAX_PACKET or offset + 4 + length > len(data):
            break
        packets.append((data[offset + 4], data[offset + 5 : offset + 4 + length]))
        offset += 4 + length
    return packets


def check_reply(reply: bytes) -> None:
    """A filter reply is one or more whole packets of known commands."""
    assert split_packets(reply), reply
    offset = 0
    while offset < len(reply):
        (length,) = struct.unpack_from(">L", reply, offset)
        assert length >= 1, reply
        assert reply[offset + 4] in _REPLIES, reply
        offset += 4 + length
    assert offset == len(reply), reply


def check_stream(chunks: Sequence[bytes]) -> int:
    """Feed ``chunks`` to a parser and a session; return how many packets were handled."""
    parser = MilterParser(max_packet=MAX_PACKET)
    session = MilterSession(max_received=MAX_RECEIVED)
    whole = b"".join(chunks)
    handled: list[tuple[int, bytes]] = []
    failed = False
    for chunk in chunks:
        try:
            packets = parser.feed(chunk)
        except MilterProtocolError:
            failed = True
            try:
                parser.feed(b"")
            except MilterProtocolError:
                pass
            else:
                raise AssertionError("the parser accepted input after an error") from None
            break
        assert parser.buffered <= MAX_PACKET + 4, parser.buffered
        handled.extend(packets)
    # However the bytes were split, the packets are the protocol's packets of the stream.
    expected = split_packets(whole)
    assert handled == expected[: len(handled)], (handled, expected)
    if not failed:
        assert handled == expected, (handled, expected)
    for command, payload in handled:
        try:
            outcome = session.receive(command, payload)
        except MilterProtocolError:
            break
        if outcome is CLOSE:
            break
        if isinstance(outcome, Check):
            assert len(outcome.received) <= MAX_RECEIVED, outcome
            assert all(isinstance(value, str) for value in outcome.received), outcome
            session.answer(b"\x00\x00\x00\x01a")
        elif outcome is not None:
            assert isinstance(outcome, bytes), outcome
            check_reply(outcome)
    return len(handled)
