"""The MTA side of the milter protocol, written from the protocol description, for the tests.

Independent of tbes's codec on purpose: the tests compare what tbes sends with what
Sendmail's libmilter documentation and Postfix's ``milter8`` expect, so a mistake shared
by encoder and decoder cannot hide. :class:`MtaClient` speaks over a real socket, like
Postfix: it offers a protocol version and flags, then sends events and waits for a reply
only where the filter did not negotiate "no reply".
"""

from __future__ import annotations

import socket
import struct

import attrs

__all__ = ["MtaClient", "Negotiated", "packet"]

# Protocol flags (SMFIP_*) and actions (SMFIF_*), from the protocol description.
NOCONNECT, NOHELO, NOMAIL, NORCPT, NOBODY, NOHDRS, NOEOH = 1, 2, 4, 8, 0x10, 0x20, 0x40
NR_HDR, NOUNKNOWN, NODATA, SKIP, RCPT_REJ = 0x80, 0x100, 0x200, 0x400, 0x800
NR_CONN, NR_HELO, NR_MAIL, NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000
NR_DATA, NR_UNKN, NR_EOH, NR_BODY = 0x10000, 0x20000, 0x40000, 0x80000
HDR_LEADSPC = 0x100000
SETSYMLIST = 0x100
# What Postfix offers for milter_protocol = 2 and = 6 (milter8.c's event masks).
POSTFIX_V2 = NOCONNECT | NOHELO | NOMAIL | NORCPT | NOBODY | NOHDRS | NOEOH
POSTFIX_V6 = (
    POSTFIX_V2
    | NOUNKNOWN
    | NODATA
    | SKIP
    | RCPT_REJ
    | NR_CONN
    | NR_HELO
    | NR_MAIL
    | NR_RCPT
    | NR_DATA
    | NR_UNKN
    | NR_HDR
    | NR_EOH
    | NR_BODY
    | HDR_LEADSPC
)
ALL_ACTIONS = 0x1FF
_NO_REPLY = {b"C": NR_CONN, b"H": NR_HELO, b"L": NR_HDR, b"N": NR_EOH, b"M": NR_MAIL}


def packet(command: bytes, payload: bytes = b"") -> bytes:
    """A packet as the MTA writes it: 4-byte big-endian length, command, payload."""
    return struct.pack(">L", len(payload) + 1) + command + payload


@attrs.frozen
class Negotiated:
    """The filter's answer to the option negotiation."""

    version: int
    actions: int
    protocol: int
    macros: dict[int, list[str]]


class MtaClient:
    """One MTA-to-filter connection (a context manager)."""

    def __init__(self, port: int, *, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.protocol = 0

    def __enter__(self) -> MtaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, command: bytes, payload: bytes = b"") -> None:
        """Send one packet."""
        self.sock.sendall(packet(command, payload))

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError(f"closed by the filter after {len(data)} of {size} bytes")
            data += chunk
        return data

    def read(self) -> tuple[bytes, bytes]:
        """One packet from the filter: (command, payload)."""
        (length,) = struct.unpack(">L", self._exactly(4))
        body = self._exactly(length)
        return body[:1], body[1:]

    def closed_by_filter(self, *, timeout: float = 5.0) -> bool:
        """True once the filter has closed the connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def negotiate(
        self, version: int = 6, actions: int = ALL_ACTIONS, protocol: int = POSTFIX_V6
    ) -> Negotiated:
        """Offer ``version``, ``actions`` and ``protocol``; return the filter's choice."""
        self.send(b"O", struct.pack(">LLL", version, actions, protocol))
        command, payload = self.read()
        assert command == b"O", (command, payload)
        got_version, got_actions, got_protocol = struct.unpack(">LLL", payload[:12])
        macros: dict[int, list[str]] = {}
        rest = payload[12:]
        while rest:
            (stage,) = struct.unpack(">L", rest[:4])
            names, _, rest = rest[4:].partition(b"\0")
            macros[stage] = names.decode().split()
        self.protocol = got_protocol
        return Negotiated(got_version, got_actions, got_protocol, macros)

    def event(self, command: bytes, payload: bytes = b"") -> tuple[bytes, bytes] | None:
        """Send an event; return the filter's reply, or None when it negotiated no reply."""
        self.send(command, payload)
        if self.protocol & _NO_REPLY.get(command, 0):
            return None
        return self.read()

    def macros(self, stage: bytes, **pairs: str) -> None:
        """Send macro values for the next ``stage`` command (``client_addr="…"``)."""
        body = b"".join(
            b"{" + name.encode() + b"}\0" + value.encode() + b"\0" for name, value in pairs.items()
        )
        self.send(b"D", stage + body)

    def connect(
        self, hostname: str, address: str, *, family: bytes = b"4", port: int = 25
    ) -> tuple[bytes, bytes] | None:
        """The CONNECT event."""
        payload = hostname.encode() + b"\0" + family
        if family != b"U":
            payload += struct.pack(">H", port) + address.encode() + b"\0"
        return self.event(b"C", payload)

    def helo(self, name: str) -> tuple[bytes, bytes] | None:
        """The HELO event."""
        return self.event(b"H", name.encode() + b"\0")

    def header(self, name: str, value: str | bytes) -> tuple[bytes, bytes] | None:
        """One HEADER event."""
        raw = value if isinstance(value, bytes) else value.encode()
        return self.event(b"L", name.encode() + b"\0" + raw + b"\0")

    def end_of_headers(self) -> tuple[bytes, bytes]:
        """The EOH event; tbes always answers it."""
        reply = self.event(b"N")
        assert reply is not None
        return reply

    def message(self, headers: list[tuple[str, str]]) -> tuple[bytes, bytes]:
        """The headers of one message and the filter's answer at their end."""
        for name, value in headers:
            reply = self.header(name, value)
            assert reply in (None, (b"c", b"")), reply
        return self.end_of_headers()
