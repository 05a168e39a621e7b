"""Reading one Received value: comments, words and clauses, and the fields they give.

The tokenizer and scanner behind :func:`tbes.received.parse_received` and
:func:`tbes.received.find_sender`; the decisions it follows (total and linear, forgiving
fields, positional clauses, which forms carry a build, dates) are set out in
:mod:`tbes.received`. A :class:`Scan` reads a field only when asked for it: the sender rule
needs the writer (``by``) of most hops and nothing else.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import ipaddress
import itertools
import re
from typing import Any

from tbes.version import ExchangeBuild

__all__ = ["Scan", "address", "first_word", "host_named", "split_comments"]

_KEYWORDS = ("from", "by", "with", "id", "via", "for")
# What ends a clause, and what it is: every spelling of a keyword (they are
# case-insensitive), and ";".
_MARKS = {
    "".join(spelling): keyword
    for keyword in _KEYWORDS
    for spelling in itertools.product(*((char, char.upper()) for char in keyword))
} | {";": ";"}
_SPELLINGS = {
    keyword: frozenset(word for word, meant in _MARKS.items() if meant == keyword)
    for keyword in _KEYWORDS
}
# The keywords whose next word is a name (RFC 5321's From-domain and By-domain), and the
# words that are never a name: ";" and a comment.
_OPENERS = _SPELLINGS["from"] | _SPELLINGS["by"]
_NOT_NAMES = frozenset({";", "("})
_BUILD_PROTOCOLS = frozenset({"microsoft smtp server", "mapi"})
# Bounds on what is handed to the standard library (see tbes.received's docstring).
_MAX_ID = 64
_MAX_ADDRESS = 64
_MAX_ADDRESS_TRIES = 16
_MAX_DATE = 256


_UNREAD: Any = object()


class Scan:
    """One Received value, its fields read on first use.

    :func:`~tbes.received.find_sender` needs only the writer (``by``) of most hops above the
    sender, not their dates, TLS or addresses, so it reads that and nothing more: the name
    after the first ``by`` that opens a clause is found among the words outside comments
    (:func:`_clause_name`) without cutting them into clauses, which is done only for the
    fields that need it. Most fields need only the words outside comments (a comment stands
    there as ``"("``); the addresses and TLS are read from the comments' text, which is put
    in place only for them.
    """

    __slots__ = (
        "_bounds",
        "_build",
        "_comments",
        "_date",
        "_tokens",
        "_words",
        "by_host",
    )

    def __init__(self, value: str) -> None:
        text, self._comments = _outside(value)
        self._words = text.split()
        self._bounds: dict[str, tuple[int, int]] | None = None  # found on first use
        self._date: int | None = None
        self._tokens: list[str] | None = None
        # Only a protocol spelling "Microsoft ..." or "mapi" carries a build, and lower-casing
        # works letter by letter, so a text whose lower case holds neither names none: most
        # hops are told so without cutting their clauses (a property test holds the two
        # ways to the same build).
        lowered = value.lower()
        self._build: ExchangeBuild | None = (
            _UNREAD if "microsoft" in lowered or "mapi" in lowered else None
        )
        self.by_host = host_named(_clause_name(self._words, "by"))

    def _cut(self) -> dict[str, tuple[int, int]]:
        # Where each clause lies among the words (and where the date begins).
        if self._bounds is None:
            self._bounds, self._date = _clauses(self._words)
        return self._bounds

    def clause(self, keyword: str) -> list[str] | None:
        """The words of the clause ``keyword`` opens, each comment standing as ``"("``."""
        bounds = self._cut().get(keyword)
        return None if bounds is None else self._words[bounds[0] : bounds[1]]

    def _full_clause(self, keyword: str) -> list[str] | None:
        # The clause's tokens, each comment as "(" and its text.
        bounds = self._cut().get(keyword)
        if bounds is None:
            return None
        if self._tokens is None:
            pending = iter(self._comments)
            self._tokens = ["(" + next(pending) if w == "(" else w for w in self._words]
        return self._tokens[bounds[0] : bounds[1]]

    @property
    def build(self) -> ExchangeBuild | None:
        """The Exchange build the hop names (only Exchange's own forms carry one)."""
        if self._build is _UNREAD:
            self._build = _build(_leading_words(self.clause("with")), self.clause("id"))
        return self._build

    def client_host(self) -> str | None:
        """``from_host``: the client the hop's writer took the message from, by name."""
        return host_named(_clause_name(self._words, "from"))

    def client_ip(self) -> str | None:
        """``from_ip``: the client's address, as the hop's writer saw it."""
        return _ip(self._full_clause("from"))

    def fields(self) -> dict[str, Any]:
        """Every field, by the name of the :class:`~tbes.received.Hop` field it fills."""
        self._cut()
        return {
            "from_host": self.client_host(),
            "from_ip": self.client_ip(),
            "by_host": self.by_host,
            "by_ip": _ip(self._full_clause("by")),
            "protocol": _leading_words(self.clause("with")),
            "tls": _tls([self._full_clause(keyword) for keyword in _TLS_CLAUSES]),
            "build": self.build,
            "via": _leading_words(self.clause("via")),
            "date": None if self._date is None else _date(self._words[self._date :]),
        }


def _outside(value: str) -> tuple[str, list[str]]:
    """The text outside comments, each comment standing as a word ``(``; the comments.

    No "(" is left outside comments, so " ( " can stand for "a comment was here"; a stray
    ")" has nothing to close and is white space; ";" is made a word of its own. Splitting
    the text at white space then gives the words (and unfolds: CR/LF are spaces).
    """
    outside, comments = split_comments(value)
    return " ( ".join(outside).replace(")", " ").replace(";", " ; "), comments


def _clause_name(words: list[str], keyword: str) -> str | None:
    # The first word of the clause that `keyword` ("from" or "by") opens that is no
    # comment, or None: first_word of the clause as _clauses cuts it, found without cutting
    # the words into clauses. Only the from/by spellings matter (the word right after an
    # opening from/by is its name, whatever it spells), so they are found at C speed and
    # walked in Python; the clause counts only before the last ";" and ends at the next mark.
    spellings = _SPELLINGS[keyword]
    start, opener = None, -2
    for index in itertools.compress(range(len(words)), map(_OPENERS.__contains__, words)):
        if index == opener + 1:
            continue  # the name of the from/by just before it
        if words[index] in spellings:
            start = index
            break
        opener = index
    if start is None or (";" in words and start > len(words) - 1 - words[::-1].index(";")):
        return None
    name = words[start + 1] if start + 1 < len(words) else None
    if name is not None and name not in _NOT_NAMES:
        return name  # the very next word: a name whatever it spells
    for word in itertools.islice(words, start + 1, None):
        if word != "(":
            return None if word in _MARKS else word
    return None


def split_comments(value: str) -> tuple[list[str], list[str]]:
    # The text is cut at every "(" by str.split. A piece that opens a plain comment (no
    # nesting, no backslash) is cut at its first ")" by str.partition; a piece that leaves
    # a comment open is counted by str.count; only a piece that closes a nested comment or
    # holds a backslash is walked, each character once, with a depth counter.
    pieces = value.split("(")
    outside, comments = [pieces[0]], []
    parts: list[str] = []  # the text so far of the comment still open
    depth, quoted = 0, False
    for piece in pieces[1:]:
        if depth == 0:
            text, close, rest = piece.partition(")")
            if close and "\\" not in text:
                comments.append(text)
                outside.append(rest)
                continue
            parts, depth = [], 1
        else:
            parts.append("(")
            depth += 0 if quoted else 1  # a "(" quoted by a backslash opens nothing
        if "\\" not in piece and (closes := piece.count(")")) < depth:
            parts.append(piece)  # still open after this piece: no need to walk it
            depth, quoted = depth - closes, False
            continue
        end, depth, quoted = _walk(piece, depth)
        if end < 0:
            parts.append(piece)
        else:
            parts.append(piece[:end])
            comments.append("".join(parts))
            outside.append(piece[end + 1 :])
    if depth:  # never closed: the comment runs to the end
        comments.append("".join(parts))
        outside.append("")
    return outside, comments


def _walk(piece: str, depth: int) -> tuple[int, int, bool]:
    # Inside a comment `depth` deep: the offset of the ")" that closes it (or -1), the depth
    # after the piece, and whether a final backslash quotes the "(" that follows the piece.
    i, n = 0, len(piece)
    while i < n:
        char = piece[i]
        if char == "\\":
            if i + 1 == n:
                return -1, depth, True
            i += 2
            continue
        if char == ")":
            depth -= 1
            if depth == 0:
                return i, 0, False
        i += 1
    return -1, depth, False


def _clauses(words: list[str]) -> tuple[dict[str, tuple[int, int]], int | None]:
    # Where each clause before the last ";" lies, by keyword (a repeated keyword opens a
    # clause that is dropped), and where the words after that ";" (the date) begin. The word
    # right after a "from" or "by" that opens a clause is its name (the client's EHLO name,
    # the writer's own), never a mark, whatever it spells; only ";" and a comment are not
    # names.
    marks: list[int] = []
    opener = -2
    for index in itertools.compress(range(len(words)), map(_MARKS.__contains__, words)):
        word = words[index]
        if index == opener + 1 and word != ";":
            continue
        marks.append(index)
        if word in _OPENERS:
            opener = index
    last = len(words) - words[::-1].index(";") - 1 if ";" in words else None
    bounds: dict[str, tuple[int, int]] = {}
    for start, end in zip(marks, [*marks[1:], len(words)], strict=False):
        if last is not None and start >= last:
            break
        keyword = _MARKS[words[start]]
        if keyword not in bounds and keyword != ";":
            bounds[keyword] = (start + 1, end)
    return bounds, None if last is None else last + 1


def first_word(clause: list[str] | None) -> str | None:
    # The name of a from/by clause: its first word that is no comment.
    for token in clause or ():
        if not token.startswith("("):
            return token
    return None


def host_named(name: str | None) -> str | None:
    # The host a from/by clause names by its first word; None for none or an address
    # literal ("[192.0.2.1]").
    if name is None or name.startswith("[") or address(name) is not None:
        return None
    return name.rstrip(".").lower() or None


def _ip(clause: list[str] | None) -> str | None:
    # The address in a comment of the clause (what the writer saw) wins over a literal name
    # (what the client claimed in its greeting).
    if not clause:
        return None
    name = first_word(clause)
    return _comment_address(clause) or (None if name is None else address(name))


def _comment_address(clause: list[str]) -> str | None:
    tries = 0
    for token in clause:
        if not token.startswith("("):
            continue
        for word in token[1:].split(maxsplit=_MAX_ADDRESS_TRIES):
            tries += 1
            if tries > _MAX_ADDRESS_TRIES:
                return None
            found = address(word.strip("(),;"))
            if found is not None:
                return found
    return None


# What an IPv4 or IPv6 address (before any %zone) is written with.
_ADDRESS_CHARS = frozenset("0123456789abcdefABCDEF.:")
_ADDRESS_STARTS = frozenset("[0123456789")


def address(text: str) -> str | None:
    """The IP address a word names (``1.2.3.4``, ``[::1]``, ``[IPv6:2001:db8::1]``), or None."""
    if len(text) > _MAX_ADDRESS:
        return None
    if ":" not in text and text[:1] not in _ADDRESS_STARTS:
        return None  # IPv4 starts with a digit, IPv6 (and "IPv6:") has colons: a host name
    if text.startswith("["):
        end = text.find("]")
        # Exim may append the port: "[192.0.2.1]:54321".
        text = text[1:end] if end > 0 else text[1:]
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    # Most words are host names: a set check turns them away before the costly parse.
    if not _ADDRESS_CHARS.issuperset(text.partition("%")[0]):
        return None
    if ":" not in text:  # only IPv4 is written without colons
        return text if _IPV4.fullmatch(text) else None
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return None
    return text.lower()


# IPv4 by ipaddress.IPv4Address's own rules: four decimal octets, none above 255, none with
# a leading zero (ASCII digits only: [0-9], not \d).
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def _leading_words(clause: list[str] | None) -> str | None:
    # The words up to the clause's first comment: "Microsoft SMTP Server", "Frontend Transport".
    words: list[str] = []
    for token in clause or ():
        if token.startswith("("):
            break
        words.append(token)
    return " ".join(words) or None


_TLS_CLAUSES = ("with", "id", "via", "for")


def _tls(clauses: list[list[str] | None]) -> str | None:
    # The transfer's TLS comment follows `with` (Exchange), `id` (Sendmail) or `for` (Gmail).
    for clause in clauses:
        for token in clause or ():
            if not token.startswith("("):
                continue
            text = token[1:].strip()
            if text.upper() == "TLS":
                return "TLS"
            if text[:8].lower() == "version=":
                return " ".join(text.split())
    return None


def _build(protocol: str | None, id_clause: list[str] | None) -> ExchangeBuild | None:
    if protocol is None or protocol.lower() not in _BUILD_PROTOCOLS or not id_clause:
        return None
    text = id_clause[0]
    if text.startswith("(") or len(text) > _MAX_ID:
        return None
    try:
        return ExchangeBuild.parse(text)
    except ValueError:
        return None


def _date(words: list[str]) -> _dt.datetime | None:
    # The words after the last ";" outside comments, comments (standing as "(") left out.
    words = [word for word in words if word != "("]
    if not words or sum(map(len, words)) + len(words) > _MAX_DATE:
        return None
    text = " ".join(words)
    try:
        usual = _usual_date(text)
        if usual is not None:
            return usual
        parsed = email.utils.parsedate_to_datetime(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_dt.UTC)
        return parsed.astimezone(_dt.UTC)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}


# RFC 5322's own layout, "[Tue,] 3 Nov 2026 10:17:29 +0100" (email.utils drops any first
# word that ends in ","), in the words of a date joined by single spaces.
_USUAL_DATE = re.compile(
    r"(?:\S*, )?([0-9]+) ([A-Za-z]{3}) ([0-9]+) "  # [day name,] day month year
    r"([0-9]+):([0-9]+):([0-9]+) ([+-])([0-9]{2})([0-9]{2})"  # clock, zone
)
_DAY = 86_400


def _usual_date(text: str) -> _dt.datetime | None:
    # A date in RFC 5322's layout, in UTC, read as email.utils reads it but at a fraction of
    # the cost; None for any other layout, left to email.utils. A date in this layout that
    # cannot be (a 31 November, a zone of 24 hours or more) raises ValueError, as there.
    found = _USUAL_DATE.fullmatch(text)
    if found is None:
        return None
    day, month, year, hour, minute, second, sign, zone_hours, zone_minutes = found.groups()
    number = _MONTHS.get(month.lower())
    if number is None or int(year) < 100:  # email.utils widens two-digit years
        return None
    offset = int(zone_hours) * 3600 + int(zone_minutes) * 60
    if offset >= _DAY:
        raise ValueError(f"zone offset out of range: {sign}{zone_hours}{zone_minutes}")
    local = _dt.datetime(
        int(year), number, int(day), int(hour), int(minute), int(second), tzinfo=_dt.UTC
    )
    return local + _dt.timedelta(seconds=offset if sign == "-" else -offset)
