"""The Sendmail milter protocol, filter side, as far as tbes needs it: a sans-I/O codec.

The wire format (Sendmail's libmilter, Postfix's ``milter8``): every packet is a 4-byte
big-endian length, then that many bytes: a one-byte command and its payload. The MTA opens
with ``SMFIC_OPTNEG`` (its protocol version, 2 to 6, the actions it allows and the steps it
can leave out); the filter answers with the version it speaks, the actions it wants and the
steps the MTA is to leave out or not wait for; from version 6 on it may also ask for the
macros (``{client_addr}`` …) it wants at each step. Then come the SMTP events, each answered
unless the filter said it would not answer that step.

Decisions that shaped it, as h11 does for HTTP: no I/O here, so every byte is testable and
fuzzable; :class:`MilterParser` bounds memory (a length over ``max_packet`` is refused as
soon as the 4-byte header is read, never after buffering the excess) and :class:`MilterSession`
is the whole state machine: it takes packets and returns what to send, a :class:`Check` to
decide, or :data:`CLOSE`. Anything an MTA never sends (an unknown command, a short payload,
an event before negotiation) is a :class:`MilterProtocolError`: the server closes that
connection and the MTA applies its ``milter_default_action``, so a confused peer can never
make tbes answer for the wrong message. Only ``Received`` header values (at most
``max_received``, the topmost) and four identity macros are kept per connection.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

import attrs

from tbes.errors import TbesError

__all__ = [
    "ACCEPT",
    "CLOSE",
    "CONTINUE",
    "DEFAULT_MAX_PACKET",
    "TEMPFAIL",
    "WANTED_MACROS",
    "Check",
    "MilterParser",
    "MilterProtocolError",
    "MilterSession",
    "Signal",
    "encode_packet",
    "encode_reply",
]

DEFAULT_MAX_PACKET: Final = 256 * 1024
"""Largest packet accepted, bytes: room for a header at Postfix's 100 KiB header limit."""

_LENGTH = struct.Struct("!I")
_OPTNEG = struct.Struct("!III")

# Commands from the MTA (SMFIC_*).
ABORT, BODY, CONNECT, MACRO, BODYEOB = b"A"[0], b"B"[0], b"C"[0], b"D"[0], b"E"[0]
HELO, QUIT_NC, HEADER, MAIL, EOH = b"H"[0], b"K"[0], b"L"[0], b"M"[0], b"N"[0]
OPTNEG, QUIT, RCPT, DATA, UNKNOWN = b"O"[0], b"Q"[0], b"R"[0], b"T"[0], b"U"[0]

# Protocol flags (SMFIP_*): steps the MTA leaves out, and steps it does not wait for.
P_NOCONNECT, P_NOHELO, P_NOMAIL, P_NORCPT = 0x1, 0x2, 0x4, 0x8
P_NOBODY, P_NOHDRS, P_NOEOH, P_NR_HDR = 0x10, 0x20, 0x40, 0x80
P_NOUNKNOWN, P_NODATA = 0x100, 0x200
P_NR_CONN, P_NR_HELO, P_NR_MAIL, P_NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000
P_NR_DATA, P_NR_UNKN, P_NR_EOH, P_NR_BODY = 0x10000, 0x20000, 0x40000, 0x80000
# Action flag (SMFIF_SETSYMLIST): the filter names the macros it wants (version 6).
F_SETSYMLIST = 0x100
# What a version-1 MTA means by sending 0 (libmilter's SMFI_V1_PROT / SMFI_V1_ACTS).
_V1_PROTOCOL, _V1_ACTIONS = 0x3F, 0x0F

MIN_VERSION, MAX_VERSION = 2, 6

# tbes needs connect, helo, the headers and their end; nothing else, and it answers only at
# the end of headers. Each flag is asked for only when the MTA offers it.
_WANTED_PROTOCOL = (
    P_NOMAIL
    | P_NORCPT
    | P_NOBODY
    | P_NOUNKNOWN
    | P_NODATA
    | P_NR_CONN
    | P_NR_HELO
    | P_NR_HDR
    | P_NR_MAIL
    | P_NR_RCPT
    | P_NR_DATA
    | P_NR_UNKN
    | P_NR_BODY
)
# The step each no-reply flag silences.
_NO_REPLY = {
    CONNECT: P_NR_CONN,
    HELO: P_NR_HELO,
    HEADER: P_NR_HDR,
    MAIL: P_NR_MAIL,
    RCPT: P_NR_RCPT,
    DATA: P_NR_DATA,
    UNKNOWN: P_NR_UNKN,
    BODY: P_NR_BODY,
}

WANTED_MACROS: Final = {
    0: ("{client_addr}", "{client_name}", "{client_resolve}"),  # SMFIM_CONNECT
    1: ("{cert_subject}",),  # SMFIM_HELO
}
"""The macros tbes asks for at each step (SMFIM_CONNECT = 0, SMFIM_HELO = 1)."""
_KEPT_MACROS = frozenset(
    name.strip("{}").encode() for names in WANTED_MACROS.values() for name in names
)
# A header field name compared without case: only these are kept.
_RECEIVED = b"received"


class MilterProtocolError(TbesError, ValueError):
    """Bytes no MTA sends: a bad length, an unknown command, a malformed payload."""


def encode_packet(command: bytes, payload: bytes = b"") -> bytes:
    """One packet: length, ``command`` (one byte) and ``payload``."""
    if len(command) != 1:
        raise ValueError(f"a milter command is one byte, got {command!r}")
    return _LENGTH.pack(len(payload) + 1) + command + payload


CONTINUE: Final = encode_packet(b"c")
ACCEPT: Final = encode_packet(b"a")
TEMPFAIL: Final = encode_packet(b"t")


def encode_reply(code: int, enhanced: str, text: str) -> bytes:
    """``SMFIR_REPLYCODE``: the SMTP reply the MTA gives for this message.

    ``%`` is doubled, as libmilter's ``smfi_setreply`` requires and MTAs undo; line breaks
    and NUL, which would end or split the reply, become spaces.
    """
    if not 400 <= code <= 599:
        raise ValueError(f"a milter reply code is 4xx or 5xx, got {code!r}")
    line = f"{code} {enhanced} {text}".replace("%", "%%")
    line = line.translate(_UNSAFE)
    return encode_packet(b"y", line.encode("utf-8") + b"\0")


_UNSAFE = str.maketrans({"\r": " ", "\n": " ", "\0": " "})


class MilterParser:
    """Split a byte stream from the MTA into ``(command, payload)`` packets (no I/O).

    After a :class:`MilterProtocolError` the parser stays broken: close the connection.
    """

    __slots__ = ("_buffer", "_error", "_max_packet")

    def __init__(self, *, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        if max_packet < 16:
            raise ValueError(f"max_packet must be at least 16 bytes, got {max_packet!r}")
        self._max_packet = max_packet
        self._buffer = bytearray()
        self._error: MilterProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete packet (never more than ``max_packet`` + 4)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Consume ``data``; return the packets it completed, in order."""
        if self._error is not None:
            raise self._error
        if self._buffer:
            # The rest of a packet cut by the last read: parse the two as one.
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        packets: list[tuple[int, bytes]] = []
        start, end, limit = 0, len(data), self._max_packet
        unpack = _LENGTH.unpack_from
        while end - start >= 4:
            (length,) = unpack(data, start)
            if length == 0 or length > limit:
                self._error = MilterProtocolError(
                    f"milter packet length {length} is outside 1..{limit}"
                )
                raise self._error
            stop = start + 4 + length
            if stop > end:
                break
            # Slices of bytes: one copy per payload, none for the buffer in the usual case
            # (each read ends on a packet's end).
            packets.append((data[start + 4], data[start + 5 : stop]))
            start = stop
        if start < end:
            self._buffer += data[start:]
        return packets


class Signal(enum.Enum):
    """What the server does besides sending bytes."""

    CLOSE = "close"


CLOSE: Final = Signal.CLOSE


@attrs.frozen
class Check:
    """The end of a message's headers: decide for it, then :meth:`MilterSession.answer`.

    The identity comes from the MTA (macros, else the connect arguments), never from the
    headers; ``received`` are the topmost ``Received`` values, top first.
    """

    peer_ip: str | None
    peer_host: str | None
    tls_subject: str | None
    received: tuple[str, ...]


def _split(payload: bytes, count: int, what: str) -> list[bytes]:
    """The first ``count`` NUL-terminated strings of ``payload``."""
    parts = payload.split(b"\0", count)
    if len(parts) <= count:
        raise MilterProtocolError(f"milter {what} packet lacks a NUL-terminated string")
    return parts[:count]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class MilterSession:
    """One MTA connection's protocol state (no I/O): packets in, what to do out.

    :meth:`receive` returns the bytes to send (``None``: nothing), a :class:`Check`, or
    :data:`CLOSE`. A :class:`Check` must be answered with :meth:`answer` before the next
    packet; the MTA waits for it.
    """

    __slots__ = (
        "_awaiting",
        "_macros",
        "_max_received",
        "_negotiated",
        "_no_reply",
        "_peer_host",
        "_peer_ip",
        "_received",
        "_tls_subject",
        "version",
    )

    def __init__(self, *, max_received: int) -> None:
        if max_received < 1:
            raise ValueError(f"max_received must be >= 1, got {max_received!r}")
        self._max_received = max_received
        self.version = 0
        """The negotiated protocol version (0 until negotiated)."""
        self._negotiated = False
        self._no_reply = 0
        self._awaiting = False
        self._macros: dict[bytes, str] = {}
        self._peer_ip: str | None = None
        self._peer_host: str | None = None
        self._tls_subject: str | None = None
        self._received: list[str] = []

    def receive(self, command: int, payload: bytes) -> bytes | Check | Signal | None:
        """Handle one packet from the MTA."""
        if self._awaiting:
            raise MilterProtocolError("milter packet before the answer to end of headers")
        if command == HEADER:
            return self._header(payload)
        if command == OPTNEG:
            return self._negotiate(payload)
        if not self._negotiated:
            raise MilterProtocolError(f"milter command {_show(command)} before option negotiation")
        if command == MACRO:
            self._macro(payload)
            return None
        if command in (EOH, BODYEOB):
            self._awaiting = True
            received, self._received = tuple(self._received), []
            return Check(self._peer_ip, self._peer_host, self._tls_subject, received)
        if command == ABORT:
            self._received = []
            return None
        if command == CONNECT:
            self._connect(payload)
        elif command == HELO:
            _split(payload, 1, "HELO")
            self._tls_subject = self._macros.get(b"cert_subject") or self._tls_subject
        elif command == QUIT:
            return CLOSE
        elif command == QUIT_NC:
            # The MTA keeps this socket for its next SMTP connection: forget this one.
            self._forget_connection()
            return None
        elif command not in _NO_REPLY:
            raise MilterProtocolError(f"unknown milter command {_show(command)}")
        return None if self._no_reply & _NO_REPLY[command] else CONTINUE

    def answer(self, reply: bytes) -> bytes:
        """The bytes that answer the pending :class:`Check`: ``reply`` itself."""
        if not self._awaiting:
            raise RuntimeError("no end of headers is waiting for an answer")
        self._awaiting = False
        return reply

    # ---- steps ---------------------------------------------------------------------------

    def _negotiate(self, payload: bytes) -> bytes:
        if self._negotiated:
            raise MilterProtocolError("milter option negotiation repeated on one connection")
        if len(payload) < _OPTNEG.size:
            raise MilterProtocolError("milter option negotiation packet is too short")
        version, actions, protocol = _OPTNEG.unpack_from(payload)
        if version < MIN_VERSION:
            raise MilterProtocolError(f"milter protocol version {version} is not supported")
        version = min(version, MAX_VERSION)
        actions = actions or _V1_ACTIONS
        protocol = protocol or _V1_PROTOCOL
        self._no_reply = protocol & _WANTED_PROTOCOL
        reply = _OPTNEG.pack(version, 0, self._no_reply)
        if version >= 6 and actions & F_SETSYMLIST:
            reply = _OPTNEG.pack(version, F_SETSYMLIST, self._no_reply)
            for stage, names in WANTED_MACROS.items():
                reply += _LENGTH.pack(stage) + " ".join(names).encode() + b"\0"
        self.version = version
        self._negotiated = True
        return encode_packet(b"O", reply)

    def _macro(self, payload: bytes) -> None:
        if not payload:
            raise MilterProtocolError("milter macro packet without a command")
        parts = payload[1:].split(b"\0")
        if parts[-1] != b"" or len(parts) % 2 == 0:
            raise MilterProtocolError("milter macro packet is not name/value pairs")
        for index in range(0, len(parts) - 1, 2):
            name = parts[index].strip(b"{}")
            if name in _KEPT_MACROS:
                self._macros[name] = _text(parts[index + 1])

    def _connect(self, payload: bytes) -> None:
        hostname, nul, rest = payload.partition(b"\0")
        family = rest[:1]
        if not nul or family not in (b"4", b"6", b"L", b"U"):
            raise MilterProtocolError("milter CONNECT packet lacks a host name and family")
        address: str | None = None
        if family != b"U":
            # Family, 2-byte port, then the address (a socket path for "L").
            if len(rest) < 4:
                raise MilterProtocolError("milter CONNECT packet lacks port and address")
            raw = _split(rest[3:], 1, "CONNECT")[0]
            address = None if family == b"L" else _text(raw)
        macros = self._macros
        self._peer_ip = macros.get(b"client_addr") or address
        self._peer_host = macros.get(b"client_name") or _text(hostname) or None
        # Sendmail's reverse name may be forged; it says so in {client_resolve}.
        if macros.get(b"client_resolve") not in (None, "OK"):
            self._peer_host = None

    def _header(self, payload: bytes) -> bytes | None:
        name, _, rest = payload.partition(b"\0")
        value, nul, _ = rest.partition(b"\0")
        if not nul:
            raise MilterProtocolError("milter HEADER packet is not name and value")
        if not self._negotiated:
            raise MilterProtocolError("milter HEADER before option negotiation")
        if (
            len(name) == 8
            and name.lower() == _RECEIVED
            and len(self._received) < self._max_received
        ):
            self._received.append(_text(value))
        return None if self._no_reply & P_NR_HDR else CONTINUE

    def _forget_connection(self) -> None:
        self._macros = {}
        self._peer_ip = self._peer_host = self._tls_subject = None
        self._received = []


def _show(command: int) -> str:
    """A command byte for a log line: the letter if printable, else its hex value."""
    return repr(chr(command)) if 0x21 <= command <= 0x7E else f"0x{command:02x}"
