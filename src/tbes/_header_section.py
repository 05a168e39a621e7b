"""The header section of a message: its Received values cut out, without reading the body.

Decision: a small own splitter, not :mod:`email.parser`: it stops at the first empty line
without reading the body, and is held line for line to the standard parser's reading of the
section by a property test. Bytes are scanned as bytes, each value decoded alone (UTF-8,
invalid bytes replaced by U+FFFD, so values never hold lone surrogates), and the scan stops
at the cap it is given, so a flood of Received lines is neither decoded nor looked at past
it. Callers (:func:`tbes.received.received_values`) check the arguments.
"""

from __future__ import annotations

import email.header
import email.message
import re
from typing import TypeVar

__all__ = ["BYTES_SYNTAX", "SPACE_BUT_NEWLINE", "received_fields"]

_Text = TypeVar("_Text", str, bytes)


def received_fields(message: email.message.Message | bytes | str, limit: int | None) -> list[str]:
    """The top ``limit`` (all for ``None``) Received values of ``message``, unfolded.

    ``message`` is a parsed message, bytes or text; ``limit`` an ``int >= 0`` or ``None``.
    """
    if isinstance(message, email.message.Message):
        values = (message.get_all("Received") or [])[:limit]
        return [_unfold(_clean(_header_text(value))) for value in values]
    if isinstance(message, bytes):
        # Cut and decoded value by value: a huge header section is never decoded whole.
        return _received_fields(message, BYTES_SYNTAX, limit)
    # ASCII needs no cleaning, so it is not cut first: the scan finds the section's end.
    head = message if message.isascii() else _clean(message[: _header_end(message, "\n", "\r")])
    return _received_fields(head, _STR_SYNTAX, limit)


def _header_text(value: object) -> str:
    # compat32 returns an email.header.Header for values holding 8-bit bytes.
    return str(value) if isinstance(value, email.header.Header | str) else ""


def _clean(text: str) -> str:
    # Lone surrogates (surrogateescape'd bytes) become their UTF-8 meaning, else U+FFFD.
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _unfold(value: str) -> str:
    return value.replace("\r", "").replace("\n", "").strip()


def _header_end(text: _Text, newline: _Text, carriage_return: _Text) -> int:
    # Offset of the empty line (LF or CR LF) that ends the header section, or the end of the
    # text. The line ending the first line uses is looked for first and the other only
    # before it, so the body is not scanned.
    if text[:1] == newline or text[:2] == carriage_return + newline:
        return 0
    first_end = text.find(newline)
    crlf = first_end > 0 and text[first_end - 1 : first_end] == carriage_return
    ends = (newline + carriage_return + newline, newline + newline)
    likely, other = ends if crlf else ends[::-1]
    found = text.find(likely)
    limit = len(text) if found < 0 else found
    earlier = text.find(other, 0, limit + len(other))
    found = earlier if earlier >= 0 else found
    return len(text) if found < 0 else found + 1


# "received" in any case: only the ASCII letters lower-case to its letters (a test checks
# every code point), so this is exactly the old test name.lower() == "received".
_RECEIVED_NAME = r"[Rr][Ee][Cc][Ee][Ii][Vv][Ee][Dd][^\S\n]*:"
# A field's value: its first line's rest, then its continuation lines and the CR-only lines
# between them, which say nothing.
_VALUE = r".*(?:\n(?:\r\r+\n)*[ \t].*)*"
# A line that matters: a Received field, with its value (group 1, set only for one), or a
# line that may end the header section, one that neither continues a field (white space
# first) nor plainly starts one (a printable ASCII name, then ":"). Suspects are few (the
# empty line that ends the section always is one) and each is then judged exactly. One
# match per Received field takes its value too, so the scan goes over the section once.
_NOTABLE_LINE = rf"\n(?:{_RECEIVED_NAME}({_VALUE})|(?![ \t]|[!-9;-~]+:))"
# The characters [^\S\n] matches in a str (white space but LF; a test checks every code
# point): in bytes, their UTF-8 forms, so that bytes are cut exactly as their decoded text.
SPACE_BUT_NEWLINE = (
    "\t\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_BYTES_SPACE = b"(?:" + b"|".join(re.escape(c.encode()) for c in SPACE_BUT_NEWLINE) + b")"
_BYTES_RECEIVED_NAME = rb"[Rr][Ee][Cc][Ee][Ii][Vv][Ee][Dd]" + _BYTES_SPACE + b"*:"


def _syntax(name: _Text, notable: _Text, value: _Text, newline: _Text) -> _Syntax[_Text]:
    return re.compile(name), re.compile(notable), re.compile(value), newline


_Syntax = tuple[re.Pattern[_Text], re.Pattern[_Text], re.Pattern[_Text], _Text]
_STR_SYNTAX = _syntax(_RECEIVED_NAME, _NOTABLE_LINE, _VALUE, "\n")
BYTES_SYNTAX = _syntax(
    _BYTES_RECEIVED_NAME,
    _NOTABLE_LINE.replace(_RECEIVED_NAME, "{}").encode().replace(b"{}", _BYTES_RECEIVED_NAME),
    _VALUE.encode(),
    b"\n",
)


def _decoded(text: str | bytes) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else text


def _received_fields(head: _Text, syntax: _Syntax[_Text], limit: int | None) -> list[str]:
    # The unfolded Received values of the header section that `head` begins with, which
    # ends, as email.feedparser ends it, before its first line that is empty, "\r", or
    # neither a field, a continuation, a CR-only line nor (first) an mbox "From " line. One
    # pass of a linear pattern visits the lines that matter, and stops at the `limit`-th
    # value: nothing after it is examined. Only values and suspect lines are decoded.
    first_received, notable, value, newline = syntax
    if limit == 0:
        return []
    first_end = head.find(newline)
    if not _in_section(_decoded(head if first_end < 0 else head[:first_end]), first=True):
        return []
    values: list[str] = []
    if (name := first_received.match(head)) is not None:
        values.append(_unfold(_decoded(value.match(head, name.end()).group())))  # type: ignore[union-attr]
    if len(values) == limit:
        return values
    for line in notable.finditer(head):
        if (found := line.group(1)) is not None:
            values.append(_unfold(_decoded(found)))
            if len(values) == limit:
                break  # before the next line is searched for
            continue
        start = line.end()
        end = head.find(newline, start)
        if not _in_section(_decoded(head[start:] if end < 0 else head[start:end]), first=False):
            break
    return values


def _in_section(line: str, *, first: bool) -> bool:
    if line in ("", "\r"):
        return False
    if line[0] in " \t":
        return True
    name, colon, _ = line.partition(":")
    name = name.rstrip()
    # str.split() splits at exactly the characters str.isspace() accepts.
    if colon and name and name.split(maxsplit=1) == [name]:
        return True
    return (first and line.startswith("From ")) or not line.strip("\r")
