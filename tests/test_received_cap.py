"""One cap on the Received values any adapter judges, and a scan that stops at it (issue 13).

A message with 800,000 Received lines used to be decoded whole and every line judged, which
blocked aiosmtpd's event loop for most of a second. These tests show the bound by the work
done, never by timing: the lines the scanner visits, and the memory it allocates.
"""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

import tbes._header_section as header_section
from tbes.adapters import milter
from tbes.errors import InvalidValueError
from tbes.received import MAX_RECEIVED, received_values

HUGE = 800_000


def flood(count: int, *, newline: bytes = b"\r\n") -> bytes:
    """A message whose header section holds ``count`` Received fields, top one first."""
    lines = [
        b"Received: from h%d.example by mx%d.example with ESMTP id %d" % (i, i, i)
        for i in range(count)
    ]
    return newline.join([*lines, b"Subject: s", b"", b"body"]) + newline


class _CountingPattern:
    """A compiled pattern that records where each match it hands out begins."""

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.starts: list[int] = []

    def finditer(self, text: bytes) -> Iterator[re.Match[bytes]]:
        for found in self.pattern.finditer(text):
            self.starts.append(found.start())
            yield found


def scanned(monkeypatch: pytest.MonkeyPatch, message: bytes, **options: Any) -> list[int]:
    """The offsets of the lines the header scan visits while reading ``message``."""
    name, notable, value, newline = header_section.BYTES_SYNTAX
    counting = _CountingPattern(notable)
    with monkeypatch.context() as patch:
        patch.setattr(header_section, "BYTES_SYNTAX", (name, counting, value, newline))
        received_values(message, **options)
    return counting.starts


def test_every_adapter_shares_the_one_cap() -> None:
    assert milter.MAX_RECEIVED is MAX_RECEIVED == 200


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
def test_the_top_values_up_to_the_cap_are_returned(newline: bytes) -> None:
    values = received_values(flood(HUGE, newline=newline))
    assert len(values) == MAX_RECEIVED
    assert values[0] == "from h0.example by mx0.example with ESMTP id 0"
    assert values[-1] == "from h199.example by mx199.example with ESMTP id 199"


def test_a_limit_of_none_returns_every_value_and_a_smaller_limit_fewer() -> None:
    message = flood(MAX_RECEIVED + 5)
    assert len(received_values(message, limit=None)) == MAX_RECEIVED + 5
    assert received_values(message, limit=3) == received_values(message, limit=None)[:3]
    assert received_values(message, limit=0) == []
    text = message.decode()
    assert received_values(text, limit=2) == received_values(message, limit=2)


@pytest.mark.parametrize("limit", [-1, True, 2.0, "3"])
def test_a_limit_that_is_no_count_is_refused(limit: object) -> None:
    with pytest.raises(InvalidValueError, match="limit"):
        received_values(b"Received: x\r\n\r\n", limit=limit)  # type: ignore[arg-type]


def test_nothing_past_the_cap_is_examined(monkeypatch: pytest.MonkeyPatch) -> None:
    message = flood(HUGE)
    # Where the value after the cap's last one begins: no line from there on is visited.
    cap_end = message.index(b"\r\nReceived: from h%d." % MAX_RECEIVED)
    starts = scanned(monkeypatch, message)
    assert len(starts) <= MAX_RECEIVED
    assert max(starts) < cap_end


def test_the_work_is_the_same_for_a_thousand_and_for_800k_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert scanned(monkeypatch, flood(1_000)) == scanned(monkeypatch, flood(HUGE))


def test_the_header_section_is_never_decoded_or_copied_whole() -> None:
    message = flood(HUGE)  # about 45 MB
    tracemalloc.start()
    try:
        received_values(message)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 200 short values; decoding the section (or splitting it into lines) would take ~45 MB.
    assert peak < 1_000_000, peak


def test_bytes_are_cut_at_the_white_space_their_text_is_cut_at() -> None:
    # The bytes scan spells out in UTF-8 the characters that [^\S\n] matches in a str.
    pattern = re.compile(r"[^\S\n]")
    expected = "".join(c for c in map(chr, range(0x110000)) if pattern.fullmatch(c))
    assert expected == header_section.SPACE_BUT_NEWLINE
    for space in expected:
        text = f"Received{space}: v\r\n\r\n"
        assert received_values(text.encode()) == received_values(text) == ["v"]
