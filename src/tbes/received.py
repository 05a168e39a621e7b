"""Received headers: what each hop says, and which hop names the sending Exchange server.

A ``Received`` header is written by every server a message passes through; the newest is on
top. :func:`parse_received` reads one header value into a :class:`Hop`, and
:func:`find_sender` walks the hops to the one written by the server that handed the message
to the receiver (SPEC section 2). The build found there is only what that server *claims*:
headers can be forged, so the enforcer takes the sender's identity from the connection and
uses the headers for the build alone.

Decisions that shaped this module:

* **Total and linear.** ``parse_received`` never raises on a ``str`` and runs in time linear
  in its input (anything else is refused with ``InvalidValueError``, as are wrong-typed
  arguments of the other functions). Its few regular expressions (an IPv4 address, a date in
  RFC 5322's layout, the header section) are anchored, fixed-shape patterns whose
  alternatives and repeats start with disjoint characters, so they cannot backtrack
  beyond a bounded amount. :func:`_split_comments`
  cuts the text at every ``(`` with ``str.split`` and a plain comment at its ``)`` with
  ``str.partition`` (C loops, linear); only the characters of nested or escaped comments are
  walked in Python, each once, with a depth counter, so nesting costs nothing extra and an
  unclosed comment simply runs to the end. The text outside comments is cut into words by
  ``str.replace`` and ``str.split`` (C loops, linear; CR and LF are white space, which
  unfolds the header). One pass over the words then does O(1) work per word. Everything
  handed to the standard library is bounded: a build is parsed only from an ``id`` word of
  at most 64 characters, an address only from a word of at most 64 characters and only among
  the first 16 comment words of a clause, and a date only from at most 256 characters. So 1
  MiB of any text is parsed in a fraction of a second.
* **Forgiving fields.** Malformed input gives a ``Hop`` whose unknown fields are ``None``.
  Hosts are lower-cased without a trailing dot; addresses keep their written form without
  brackets or the Sendmail ``IPv6:`` prefix (lower-cased), and are accepted only when
  :mod:`ipaddress` accepts them (IPv4 is checked by its rules without calling it). An
  address in the comment after ``from``/``by`` (the address the server saw, as Postfix,
  Sendmail and Exchange write it) wins over an address literal used as the name (which the
  client merely claimed in its greeting).
* **Clauses.** Each clause (``from``, ``by``, ``with``, ``id``, ``via``, ``for``; keywords
  are case-insensitive) counts the first time it appears. Clauses are positional (SPEC
  section 10): the word right after ``from`` is the from-domain (the name the *client* chose
  in EHLO) and the word right after ``by`` the by-domain, whatever they spell (``with``,
  ``BY``, ``id``, ...); only keywords after those positions open clauses, so a client cannot
  hide the writer or the build of the hop that records it. A comment right after the
  keyword (no name) leaves the first word after it to be the name unless it is a keyword.
  ``protocol`` and ``via`` are the
  words after their keyword up to the next comment, keyword or ``;`` — so Microsoft's
  ``with Microsoft SMTP Server (TLS)`` gives ``"Microsoft SMTP Server"``, ``with Microsoft
  SMTPSVC(6.0.3790.4675)`` gives ``"Microsoft SMTPSVC"`` and Exim's ``with esmtps (TLS1.3)
  tls …`` gives ``"esmtps"``. ``tls`` is the first comment of the ``with``, ``id``, ``via``
  or ``for`` clause that reads ``TLS`` or begins with ``version=`` (Exchange 2007 to 2019;
  Sendmail and Gmail write it after ``id``/``for``), with white space collapsed; Postfix's
  ``(using TLSv1.3 …)`` before ``by`` is not read.
* **Builds.** Only Exchange's own forms carry a build: protocol ``Microsoft SMTP Server`` or
  ``mapi`` (case-insensitive) with an ``id`` that :meth:`ExchangeBuild.parse` accepts.
* **The sender rule** follows SPEC section 2 as amended in section 10: a hop without
  ``by_host`` (no ``by`` part, or one that is only an address) goes with the hop below it
  and is never the sender hop, which is the first hop left that has a ``by_host``; a hop
  without a writer cannot stand in for the sender's with a forged build, nor hide it.
  ``matched`` compares with the nearest hop above that has a writer.
* **Dates.** The words after the last ``;`` outside comments, read by
  :func:`email.utils.parsedate_to_datetime`, or, when they are in RFC 5322's own layout
  (nearly always), read directly the way it reads them (a property test holds the two to
  the same answer). A date whose zone is ``-0000``, missing or an
  unknown name is taken as UTC (RFC 5322 3.3: ``-0000`` means the time is UTC and the local
  zone unknown). Dates are normalised to UTC. A date that does not parse gives ``None``.
* **received_values** uses a small own header splitter, not :mod:`email.parser`: it stops
  at the first empty line without reading the body. Measured against
  ``BytesHeaderParser(policy=compat32)``: about 3 times faster on a 2 KB message (160 vs
  456 us) and about 1000 times on one with a 1 MB body (50 us vs 48 ms), whose body the
  standard parser still splits into lines (see ``docs/received.md``). Bytes are decoded as
  UTF-8 with invalid bytes replaced by U+FFFD, so returned values never hold lone surrogates.
  It returns at most :data:`MAX_RECEIVED` values (the cap every adapter shares); bytes are
  scanned as bytes, each value decoded alone, and the scan stops at the cap, so a flood of
  Received lines is neither decoded nor looked at past it.
"""

from __future__ import annotations

import datetime as _dt
import email.header
import email.message
import email.utils
import ipaddress
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import attrs

from tbes.errors import InvalidBuildError, InvalidValueError, NaiveDatetimeError
from tbes.version import ExchangeBuild, Product

__all__ = [
    "MAX_RECEIVED",
    "Hop",
    "SenderEvidence",
    "find_sender",
    "parse_received",
    "received_values",
]

MAX_RECEIVED = 200
"""At most this many Received values, the top ones, of one message are collected and judged.

The one cap of every adapter (milter, aiosmtpd) and of :func:`received_values`: the sender
hop is near the top, and a message with a million Received lines must not hold the MTA up.
"""

# Hosts under these names belong to Exchange Online (SPEC section 2, step 1).
_EXCHANGE_ONLINE_SUFFIXES = (
    "outlook.com",
    "office365.com",
    "outlook.cn",
    "exchangelabs.com",
    "microsoft.com",
)
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
# Bounds on what is handed to the standard library; see the module docstring.
_MAX_ID = 64
_MAX_ADDRESS = 64
_MAX_ADDRESS_TRIES = 16
_MAX_DATE = 256

_Text = TypeVar("_Text", str, bytes)


def _optional_str(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidValueError(f"{attribute.name} must be a str or None, got {value!r:.80}")


def _optional_build(
    instance: object, attribute: attrs.Attribute[ExchangeBuild | None], value: object
) -> None:
    if value is not None:
        _check_build(instance, attribute, value)


def _check_build(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, ExchangeBuild):
        raise InvalidBuildError(f"{attribute.name} must be an ExchangeBuild, got {value!r:.80}")


def _check_hop(instance: object, attribute: attrs.Attribute[Hop], value: object) -> None:
    if not isinstance(value, Hop):
        raise InvalidValueError(f"{attribute.name} must be a Hop, got {value!r:.80}")


def _check_bool(instance: object, attribute: attrs.Attribute[bool], value: object) -> None:
    if type(value) is not bool:
        raise InvalidValueError(f"{attribute.name} must be a bool, got {value!r:.80}")


def _optional_aware(
    instance: object, attribute: attrs.Attribute[_dt.datetime | None], value: object
) -> None:
    if value is None:
        return
    if not isinstance(value, _dt.datetime):
        raise InvalidValueError(f"{attribute.name} must be a datetime or None, got {value!r:.80}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(f"{attribute.name} must be timezone-aware, got {value!r}")


@attrs.frozen
class Hop:
    """One Received header, read into its parts; unknown parts are None."""

    from_host: str | None = attrs.field(default=None, validator=_optional_str)
    from_ip: str | None = attrs.field(default=None, validator=_optional_str)
    by_host: str | None = attrs.field(default=None, validator=_optional_str)
    by_ip: str | None = attrs.field(default=None, validator=_optional_str)
    protocol: str | None = attrs.field(default=None, validator=_optional_str)
    tls: str | None = attrs.field(default=None, validator=_optional_str)
    build: ExchangeBuild | None = attrs.field(default=None, validator=_optional_build)
    via: str | None = attrs.field(default=None, validator=_optional_str)
    date: _dt.datetime | None = attrs.field(default=None, validator=_optional_aware)


def _non_negative_index(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 0:
        raise InvalidValueError(f"{attribute.name} must be an int >= 0, got {value!r}")


@attrs.frozen
class SenderEvidence:
    """The build claimed by the hop that the sending server wrote, and where it was found."""

    build: ExchangeBuild = attrs.field(validator=_check_build)
    host: str | None = attrs.field(validator=_optional_str)
    ip: str | None = attrs.field(validator=_optional_str)
    index: int = attrs.field(validator=_non_negative_index)
    hop: Hop = attrs.field(validator=_check_hop)
    matched: bool = attrs.field(validator=_check_bool)


# ---------------------------------------------------------------------------------------------
# parse_received


def parse_received(value: str) -> Hop:
    """Read one Received header value into a Hop; never raises on a str, linear in the input.

    A value that is not a ``str`` (``None``, undecoded ``bytes``) raises
    :class:`~tbes.errors.InvalidValueError`.
    """
    if not isinstance(value, str):
        raise InvalidValueError(f"a Received value must be a str, got {value!r:.80}")
    return _Scan(value).hop()


_UNREAD: Any = object()


class _Scan:
    """One Received value, its fields read on first use.

    :func:`find_sender` needs only the writer (``by``) of most hops above the sender, not
    their dates, TLS or addresses, so it reads that and nothing more: the name after the
    first ``by`` that opens a clause is found among the words outside comments
    (:func:`_clause_name`) without
    cutting them into clauses, which is done only for the fields that need it. Most fields
    need only the words outside comments (a comment stands there as ``"("``); the addresses
    and TLS are read from the comments' text, which is put in place only for them.
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
        self._build: ExchangeBuild | None = _UNREAD
        self.by_host = _host_named(_clause_name(self._words, "by"))

    def _cut(self) -> dict[str, tuple[int, int]]:
        # Where each clause lies among the words (and where the date begins).
        if self._bounds is None:
            self._bounds, self._date = _clauses(self._words)
        return self._bounds

    def _clause(self, keyword: str) -> list[str] | None:
        # The clause's words, each comment standing as "(".
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
            self._build = _build(_leading_words(self._clause("with")), self._clause("id"))
        return self._build

    def client_host(self) -> str | None:
        """``from_host``: the client the hop's writer took the message from, by name."""
        return _host_named(_clause_name(self._words, "from"))

    def client_ip(self) -> str | None:
        """``from_ip``: the client's address, as the hop's writer saw it."""
        return _ip(self._full_clause("from"))

    def hop(self) -> Hop:
        """Every field, as a Hop."""
        self._cut()
        return _hop(
            self.client_host(),
            self.client_ip(),
            self.by_host,
            _ip(self._full_clause("by")),
            _leading_words(self._clause("with")),
            _tls([self._full_clause(keyword) for keyword in _TLS_CLAUSES]),
            self.build,
            _leading_words(self._clause("via")),
            None if self._date is None else _date(self._words[self._date :]),
        )


# The parser makes a Hop and a SenderEvidence for every message, valid by construction (the
# property tests hold them to the classes' checks, attrs.validate), so it fills their slots
# directly: the frozen classes' checked __init__ costs more than the rest of a hop's fields.
_new = object.__new__
(
    _SET_FROM_HOST,
    _SET_FROM_IP,
    _SET_BY_HOST,
    _SET_BY_IP,
    _SET_PROTOCOL,
    _SET_TLS,
    _SET_BUILD,
    _SET_VIA,
    _SET_DATE,
) = tuple(getattr(Hop, field.name).__set__ for field in attrs.fields(Hop))
(
    _SET_EVIDENCE_BUILD,
    _SET_HOST,
    _SET_IP,
    _SET_INDEX,
    _SET_HOP,
    _SET_MATCHED,
) = tuple(getattr(SenderEvidence, field.name).__set__ for field in attrs.fields(SenderEvidence))


def _hop(
    from_host: str | None,
    from_ip: str | None,
    by_host: str | None,
    by_ip: str | None,
    protocol: str | None,
    tls: str | None,
    build: ExchangeBuild | None,
    via: str | None,
    date: _dt.datetime | None,
) -> Hop:
    hop: Hop = _new(Hop)
    _SET_FROM_HOST(hop, from_host)
    _SET_FROM_IP(hop, from_ip)
    _SET_BY_HOST(hop, by_host)
    _SET_BY_IP(hop, by_ip)
    _SET_PROTOCOL(hop, protocol)
    _SET_TLS(hop, tls)
    _SET_BUILD(hop, build)
    _SET_VIA(hop, via)
    _SET_DATE(hop, date)
    return hop


def _evidence(
    build: ExchangeBuild, host: str | None, ip: str | None, index: int, hop: Hop, matched: bool
) -> SenderEvidence:
    evidence: SenderEvidence = _new(SenderEvidence)
    _SET_EVIDENCE_BUILD(evidence, build)
    _SET_HOST(evidence, host)
    _SET_IP(evidence, ip)
    _SET_INDEX(evidence, index)
    _SET_HOP(evidence, hop)
    _SET_MATCHED(evidence, matched)
    return evidence


def _outside(value: str) -> tuple[str, list[str]]:
    """The text outside comments, each comment standing as a word ``(``; the comments.

    No "(" is left outside comments, so " ( " can stand for "a comment was here"; a stray
    ")" has nothing to close and is white space; ";" is made a word of its own. Splitting
    the text at white space then gives the words (and unfolds: CR/LF are spaces).
    """
    outside, comments = _split_comments(value)
    return " ( ".join(outside).replace(")", " ").replace(";", " ; "), comments


def _clause_name(words: list[str], keyword: str) -> str | None:
    # The first word of the clause that `keyword` ("from" or "by") opens that is no
    # comment, or None: _first_word of the clause as _clauses cuts it, found without cutting
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


def _split_comments(value: str) -> tuple[list[str], list[str]]:
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


def _first_word(clause: list[str] | None) -> str | None:
    # The name of a from/by clause: its first word that is no comment.
    for token in clause or ():
        if not token.startswith("("):
            return token
    return None


def _host_named(name: str | None) -> str | None:
    # The host a from/by clause names by its first word; None for none or an address
    # literal ("[192.0.2.1]").
    if name is None or name.startswith("[") or _address(name) is not None:
        return None
    return name.rstrip(".").lower() or None


def _ip(clause: list[str] | None) -> str | None:
    # The address in a comment of the clause (what the writer saw) wins over a literal name
    # (what the client claimed in its greeting).
    if not clause:
        return None
    name = _first_word(clause)
    return _comment_address(clause) or (None if name is None else _address(name))


def _comment_address(clause: list[str]) -> str | None:
    tries = 0
    for token in clause:
        if not token.startswith("("):
            continue
        for word in token[1:].split(maxsplit=_MAX_ADDRESS_TRIES):
            tries += 1
            if tries > _MAX_ADDRESS_TRIES:
                return None
            found = _address(word.strip("(),;"))
            if found is not None:
                return found
    return None


# What an IPv4 or IPv6 address (before any %zone) is written with.
_ADDRESS_CHARS = frozenset("0123456789abcdefABCDEF.:")
_ADDRESS_STARTS = frozenset("[0123456789")


def _address(text: str) -> str | None:
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


# ---------------------------------------------------------------------------------------------
# find_sender


def find_sender(
    received: Sequence[str],
    *,
    own_hosts: Iterable[str] = (),
    skip_exchange_online: bool = True,
    client: str | None = None,
) -> SenderEvidence | None:
    """Find the build of the server that handed the message over, from Received values.

    ``received`` is top (newest) first. Leading hops written by the receiver (``own_hosts``
    and their subdomains, and Exchange Online when ``skip_exchange_online``) are dropped, and
    hops without a ``by_host`` are never the sender hop; the first hop left that has one is
    the sender hop. Its build is returned, or None if it has none.
    Arguments of the wrong type (``received`` not a sequence of ``str``, a host that is no
    ``str``) raise :class:`~tbes.errors.InvalidValueError` naming the argument.
    """
    finder = SenderFinder(own_hosts, skip_exchange_online=skip_exchange_online)
    return finder.find(received, client=client)


def _texts(values: Iterable[str], name: str) -> tuple[str, ...]:
    # A bare str or bytes is iterable too, but one value read letter by letter is a mistake.
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidValueError(f"{name} must be a sequence of str, got {values!r:.80}")
    items = tuple(values)
    for item in items:
        if not isinstance(item, str):
            raise InvalidValueError(f"{name} must hold only str values, got {item!r:.80}")
    return items


def _own_names(own_hosts: Iterable[str]) -> Iterator[str]:
    # A bare str is one host name, not an iterable of one-letter names.
    names = (own_hosts,) if isinstance(own_hosts, str) else _texts(own_hosts, "own_hosts")
    return filter(None, map(_host_key, names))


class _LazyHops:
    """Received values scanned on first use: the sender hop is usually among the first few."""

    __slots__ = ("_scans", "_texts")

    def __init__(self, texts: tuple[str, ...]) -> None:
        self._texts = texts
        self._scans: list[_Scan | None] = [None] * len(texts)

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, index: int) -> _Scan:
        scan = self._scans[index]
        if scan is None:
            scan = self._scans[index] = _Scan(self._texts[index])
        return scan


def _first_foreign(hops: _LazyHops, owners: _Domains, skip_online: bool) -> int | None:
    # SPEC section 10 (section 2 amended): a hop without by_host belongs to the writer of the
    # hop below it and is never the sender hop, so the sender hop is the first hop that has a
    # by_host not written by the receiver. Walking down parses only as far as that hop.
    for index in range(len(hops)):
        hop = hops[index]
        if hop.by_host is not None and not _written_by_receiver(hop, owners, skip_online):
            return index
    return None


def _writer_above(hops: _LazyHops, index: int) -> _Scan | None:
    # The nearest hop above `index` that has a writer: the receiver's record of who
    # connected (the hops without by_host between belong to the sender hop's writer).
    for above in range(index - 1, -1, -1):
        if hops[above].by_host is not None:
            return hops[above]
    return None


def _written_by_receiver(hop: _Scan, owners: _Domains, skip_online: bool) -> bool:
    # by_host is already a host key (lower case, no trailing dot, no white space).
    host = hop.by_host
    if host is not None and _under(host, owners):
        return True
    if not skip_online:
        return False
    if host is not None and _under(host, _EXCHANGE_ONLINE):
        return True
    return hop.build is not None and hop.build.product is Product.EXCHANGE_ONLINE


_Domains = tuple[frozenset[str], tuple[str, ...]]


def _domains(names: Iterable[str]) -> _Domains:
    # The names, and the suffixes their subdomains end with, for one C-level test each.
    keys = frozenset(names)
    return keys, tuple("." + name for name in keys)


def _under(host: str, domains: _Domains) -> bool:
    names, suffixes = domains
    return host in names or host.endswith(suffixes)


_EXCHANGE_ONLINE = _domains(_EXCHANGE_ONLINE_SUFFIXES)


def _host_key(host: str) -> str:
    return host.strip().rstrip(".").lower()


def _same_host(left: str | None, right: str | None) -> bool:
    return left is not None and right is not None and _host_key(left) == _host_key(right) != ""


def _same_ip(left: str | None, right: str | None) -> bool:
    if left is None or right is None:
        return False
    first, second = _address(left.strip()), _address(right.strip())
    if first is None or second is None:
        return False
    # Equal text is the same address; IPv6 may also be written in several ways.
    return first == second or ipaddress.ip_address(first) == ipaddress.ip_address(second)


# ---------------------------------------------------------------------------------------------
# received_values


def received_values(
    message: email.message.Message | bytes | str, *, limit: int | None = MAX_RECEIVED
) -> list[str]:
    """The Received header values of a message, top first, unfolded; the body is not read.

    At most ``limit`` values, the top ones, are returned (:data:`MAX_RECEIVED` by default;
    ``None`` for all of them). From ``bytes`` the scan stops at the ``limit``-th value: the
    rest of the header section is neither decoded nor examined. Anything but a message,
    ``bytes`` or ``str``, or a ``limit`` that is no ``int >= 0`` or ``None``, raises
    :class:`~tbes.errors.InvalidValueError`.
    """
    if limit is not None and (type(limit) is not int or limit < 0):
        raise InvalidValueError(f"limit must be an int >= 0 or None, got {limit!r:.80}")
    if isinstance(message, email.message.Message):
        values = (message.get_all("Received") or [])[:limit]
        return [_unfold(_clean(_header_text(value))) for value in values]
    if isinstance(message, bytes | bytearray | memoryview):
        # Cut and decoded value by value: a huge header section is never decoded whole.
        return _received_fields(bytes(message), _BYTES_SYNTAX, limit)
    if not isinstance(message, str):
        raise InvalidValueError(
            f"message must be an email.message.Message, bytes or str, got {message!r:.80}"
        )
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
# A line that matters: a Received field (group 1 set), or a line that may end the header
# section, one that neither continues a field (white space first) nor plainly starts one (a
# printable ASCII name, then ":"). Suspects are few (the empty line that ends the section
# always is one) and each is then judged exactly.
_NOTABLE_LINE = rf"\n(?:({_RECEIVED_NAME})|(?![ \t]|[!-9;-~]+:))"
# A field's value: its first line's rest, then its continuation lines and the CR-only lines
# between them, which say nothing.
_VALUE = r".*(?:\n(?:\r\r+\n)*[ \t].*)*"
# The characters [^\S\n] matches in a str (white space but LF; a test checks every code
# point): in bytes, their UTF-8 forms, so that bytes are cut exactly as their decoded text.
_SPACE_BUT_NEWLINE = (
    "\t\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_BYTES_SPACE = b"(?:" + b"|".join(re.escape(c.encode()) for c in _SPACE_BUT_NEWLINE) + b")"
_BYTES_RECEIVED_NAME = rb"[Rr][Ee][Cc][Ee][Ii][Vv][Ee][Dd]" + _BYTES_SPACE + b"*:"


def _syntax(name: _Text, notable: _Text, value: _Text, newline: _Text) -> _Syntax[_Text]:
    return re.compile(name), re.compile(notable), re.compile(value), newline


_Syntax = tuple[re.Pattern[_Text], re.Pattern[_Text], re.Pattern[_Text], _Text]
_STR_SYNTAX = _syntax(_RECEIVED_NAME, _NOTABLE_LINE, _VALUE, "\n")
_BYTES_SYNTAX = _syntax(
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
        if line.group(1) is not None:
            values.append(_unfold(_decoded(value.match(head, line.end()).group())))  # type: ignore[union-attr]
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


# ---------------------------------------------------------------------------------------------
# SenderFinder


class SenderFinder:
    """:func:`find_sender` with its receiver settings checked and prepared once.

    For a caller that finds many senders with the same ``own_hosts`` and
    ``skip_exchange_online`` (the enforcer: one per message): the names are checked and their
    lookup sets built here, not per message. Arguments of the wrong type raise
    :class:`~tbes.errors.InvalidValueError` naming the argument.
    """

    __slots__ = ("_owners", "_skip_online")

    def __init__(self, own_hosts: Iterable[str] = (), *, skip_exchange_online: bool = True) -> None:
        self._owners = _domains(_own_names(own_hosts))
        if type(skip_exchange_online) is not bool:
            raise InvalidValueError(
                f"skip_exchange_online must be a bool, got {skip_exchange_online!r:.80}"
            )
        self._skip_online = skip_exchange_online

    def find(self, received: Sequence[str], *, client: str | None = None) -> SenderEvidence | None:
        """The sender's evidence in ``received`` (top first), as :func:`find_sender` finds it."""
        hops = _LazyHops(_texts(received, "received"))
        if client is not None and not isinstance(client, str):
            raise InvalidValueError(f"client must be a str or None, got {client!r:.80}")
        first = _first_foreign(hops, self._owners, self._skip_online)
        build = None if first is None else hops[first].build
        if first is None or build is None:
            return None
        hop = hops[first].hop()
        if client is not None:
            matched = _same_host(client, hop.by_host) or _same_ip(client, hop.by_ip)
        elif (above := _writer_above(hops, first)) is not None:
            # The address is read only if the name does not match.
            matched = _same_host(above.client_host(), hop.by_host) or _same_ip(
                above.client_ip(), hop.by_ip
            )
        else:
            matched = False
        return _evidence(build, hop.by_host, hop.by_ip, first, hop, matched)


# Added here rather than in the list at the top, which other changes touch.
__all__ += ["SenderFinder"]
