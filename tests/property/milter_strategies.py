"""Hypothesis strategies for milter byte streams: real-looking packets, broken ones, noise."""

from __future__ import annotations

import itertools
import struct

from hypothesis import strategies as st

__all__ = ["chunked", "packets", "streams"]


def _packet(command: bytes, payload: bytes) -> bytes:
    return struct.pack(">L", len(payload) + 1) + command + payload


_cstrings = st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"") + b"\0")
_negotiate = st.builds(
    lambda v, a, p: _packet(b"O", struct.pack(">LLL", v, a, p)),
    st.integers(0, 8),
    st.sampled_from([0, 0x3F, 0x1FF, 0xFFFFFFFF]),
    st.sampled_from([0, 0x7F, 0x1FFFFF, 0xFFFFFFFF]),
)
_header = st.builds(
    lambda name, value: _packet(b"L", name + b"\0" + value),
    st.sampled_from([b"Received", b"received", b"Subject", b"", b"RECEIVED"]),
    _cstrings,
)
_connect = st.builds(
    lambda host, family, rest: _packet(b"C", host + family + rest),
    _cstrings,
    st.sampled_from([b"4", b"6", b"U", b"L", b"X", b""]),
    st.binary(max_size=24),
)
_macro = st.builds(
    lambda stage, pairs: _packet(b"D", stage + b"".join(pairs)),
    st.sampled_from([b"C", b"H", b"M", b""]),
    st.lists(_cstrings, max_size=6),
)
_simple = st.builds(
    _packet, st.sampled_from([bytes([c]) for c in b"ABEHKMNQRTUZO\0"]), st.binary(max_size=16)
)
packets = st.one_of(_negotiate, _header, _connect, _macro, _simple)
"""One packet, well-formed or not in its payload."""

streams = st.lists(st.one_of(packets, packets, packets, st.binary(max_size=12)), max_size=30).map(
    b"".join
)
"""A byte stream: mostly packets, sometimes noise."""


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random places."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]
