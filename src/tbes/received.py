"""Received headers: what each hop says, and which hop names the sending Exchange server.

A ``Received`` header is written by every server a message passes through; the newest is on
top. :func:`parse_received` reads one header value into a :class:`Hop`, and
:func:`find_sender` walks the hops to the one written by the server that handed the message
to the receiver (docs/received.md). The build found there is only what that server *claims*:
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
  are case-insensitive) counts the first time it appears. Clauses are positional: the
  word right after ``from`` is the from-domain (the name the *client* chose in EHLO) and
  the word right after ``by`` the by-domain, whatever they spell (``with``, ``BY``,
  ``id``, ...); only keywords after those positions open clauses, so a client cannot
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
  ``mapi`` (case-insensitive) with an ``id`` that :meth:`ExchangeBuild.parse` accepts. A hop
  whose lower-cased text holds neither ``microsoft`` nor ``mapi`` names none, so the sender
  rule learns that of most hops without cutting them into clauses.
* **The sender rule** follows docs/received.md: a hop without
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
import email.message
import ipaddress
import itertools
from collections.abc import Iterable, Iterator, Sequence

import attrs

from tbes._checks import of_type
from tbes._header_section import received_fields
from tbes._received_scan import Scan, address
from tbes._slots import slot_filler
from tbes.errors import InvalidValueError, NaiveDatetimeError
from tbes.version import ExchangeBuild, Product

__all__ = [
    "MAX_RECEIVED",
    "Hop",
    "SenderEvidence",
    "SenderFinder",
    "find_sender",
    "parse_received",
    "received_values",
]

MAX_RECEIVED = 200
"""At most this many Received values, the top ones, of one message are collected and judged.

The one cap of every adapter (milter, aiosmtpd) and of :func:`received_values`: the sender
hop is near the top, and a message with a million Received lines must not hold the MTA up.
"""

# Hosts under these names belong to Exchange Online (docs/received.md, step 1).
_EXCHANGE_ONLINE_SUFFIXES = (
    "outlook.com",
    "office365.com",
    "outlook.cn",
    "exchangelabs.com",
    "microsoft.com",
)

_optional_str = of_type(str, optional=True)


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
    build: ExchangeBuild | None = attrs.field(
        default=None, validator=of_type(ExchangeBuild, optional=True)
    )
    via: str | None = attrs.field(default=None, validator=_optional_str)
    date: _dt.datetime | None = attrs.field(default=None, validator=_optional_aware)


def _non_negative_index(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 0:
        raise InvalidValueError(f"{attribute.name} must be an int >= 0, got {value!r}")


@attrs.frozen
class SenderEvidence:
    """The build claimed by the hop that the sending server wrote, and where it was found."""

    build: ExchangeBuild = attrs.field(validator=of_type(ExchangeBuild))
    host: str | None = attrs.field(validator=_optional_str)
    ip: str | None = attrs.field(validator=_optional_str)
    index: int = attrs.field(validator=_non_negative_index)
    hop: Hop = attrs.field(validator=of_type(Hop))
    matched: bool = attrs.field(validator=of_type(bool))


# The parser makes a Hop and a SenderEvidence for every message, valid by construction (the
# property tests hold them to the classes' checks, attrs.validate), so it fills their slots
# by field name: the frozen classes' checked __init__ costs more than the rest of a hop.
_make_hop = slot_filler(Hop)
_make_evidence = slot_filler(SenderEvidence)


# ---------------------------------------------------------------------------------------------
# parse_received


def parse_received(value: str) -> Hop:
    """Read one Received header value into a Hop; never raises on a str, linear in the input.

    A value that is not a ``str`` (``None``, undecoded ``bytes``) raises
    :class:`~tbes.errors.InvalidValueError`.
    """
    if not isinstance(value, str):
        raise InvalidValueError(f"a Received value must be a str, got {value!r:.80}")
    return _make_hop(**Scan(value).fields())


# ---------------------------------------------------------------------------------------------
# find_sender


class SenderFinder:
    """The sender rule for one receiver: :func:`find_sender` with its settings checked once.

    For a caller that finds the senders of many messages for the same ``own_hosts`` and
    ``skip_exchange_online`` (the enforcer: one per message): the names are checked and their
    lookup sets built here, once, not per message. Arguments of the wrong type raise
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
        """The sender's evidence in ``received`` (top first), as :func:`find_sender` finds it.

        ``received`` that is no sequence of ``str``, or a ``client`` that is no ``str`` or
        ``None``, raises :class:`~tbes.errors.InvalidValueError` naming the argument.
        """
        values = _texts(received, "received")
        if client is not None and not isinstance(client, str):
            raise InvalidValueError(f"client must be a str or None, got {client!r:.80}")
        return self.find_checked(values, client=client)

    def build_and_host(self, received: Sequence[str]) -> tuple[ExchangeBuild, str] | None:
        """The ``build`` and ``host`` of :meth:`find`'s evidence, or None when it finds none.

        For a caller that needs no more of the sender hop (the enforcer, once per message):
        the rest of that hop (addresses, TLS, date) is not read. ``received`` is checked as
        :meth:`find` checks it.
        """
        hops = _LazyHops(_texts(received, "received"))
        first = _first_foreign(hops, self._owners, self._skip_online)
        if first is None:
            return None
        hop = hops[first]
        build, host = hop.build, hop.by_host
        return None if build is None or host is None else (build, host)

    def find_checked(
        self, received: Sequence[str], *, client: str | None = None
    ) -> SenderEvidence | None:
        """:meth:`find` for arguments the caller has already checked at its own boundary.

        Nothing is checked here: ``received`` must be a sequence of ``str`` and ``client`` a
        ``str`` or ``None`` (the enforcer checks both where a message enters it).
        """
        hops = _LazyHops(received)
        first = _first_foreign(hops, self._owners, self._skip_online)
        build = None if first is None else hops[first].build
        if first is None or build is None:
            return None
        hop = _make_hop(**hops[first].fields())
        if client is not None:
            matched = _same_host(client, hop.by_host) or _same_ip(client, hop.by_ip)
        elif (above := _writer_above(hops, first)) is not None:
            # The address is read only if the name does not match.
            matched = _same_host(above.client_host(), hop.by_host) or _same_ip(
                above.client_ip(), hop.by_ip
            )
        else:
            matched = False
        return _make_evidence(
            build=build, host=hop.by_host, ip=hop.by_ip, index=first, hop=hop, matched=matched
        )


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
    ``str``) raise :class:`~tbes.errors.InvalidValueError` naming the argument. A caller
    with fixed ``own_hosts`` builds one :class:`SenderFinder` instead.
    """
    values = _texts(received, "received")
    if type(own_hosts) is tuple and not own_hosts and type(skip_exchange_online) is bool:
        finder = _NO_OWN_HOSTS[skip_exchange_online]  # the default: nothing to prepare
    else:
        finder = SenderFinder(own_hosts, skip_exchange_online=skip_exchange_online)
    if client is not None and not isinstance(client, str):
        raise InvalidValueError(f"client must be a str or None, got {client!r:.80}")
    return finder.find_checked(values, client=client)


def _texts(values: Iterable[str], name: str) -> tuple[str, ...]:
    # A bare str or bytes is iterable too, but one value read letter by letter is a mistake.
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidValueError(f"{name} must be a sequence of str, got {values!r:.80}")
    items = tuple(values)
    if not all(map(isinstance, items, itertools.repeat(str))):  # the loop at C speed
        wrong = next(item for item in items if not isinstance(item, str))
        raise InvalidValueError(f"{name} must hold only str values, got {wrong!r:.80}")
    return items


def _own_names(own_hosts: Iterable[str]) -> Iterator[str]:
    # A bare str is one host name, not an iterable of one-letter names.
    names = (own_hosts,) if isinstance(own_hosts, str) else _texts(own_hosts, "own_hosts")
    return filter(None, map(_host_key, names))


class _LazyHops:
    """Received values scanned on first use: the sender hop is usually among the first few."""

    __slots__ = ("_scans", "_texts")

    def __init__(self, texts: Sequence[str]) -> None:
        self._texts = texts
        self._scans: list[Scan | None] = [None] * len(texts)

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, index: int) -> Scan:
        scan = self._scans[index]
        if scan is None:
            scan = self._scans[index] = Scan(self._texts[index])
        return scan


def _first_foreign(hops: _LazyHops, owners: _Domains, skip_online: bool) -> int | None:
    # docs/received.md: a hop without by_host belongs to the writer of the
    # hop below it and is never the sender hop, so the sender hop is the first hop that has a
    # by_host not written by the receiver. Walking down parses only as far as that hop.
    for index in range(len(hops)):
        hop = hops[index]
        if hop.by_host is not None and not _written_by_receiver(hop, owners, skip_online):
            return index
    return None


def _writer_above(hops: _LazyHops, index: int) -> Scan | None:
    # The nearest hop above `index` that has a writer: the receiver's record of who
    # connected (the hops without by_host between belong to the sender hop's writer).
    for above in range(index - 1, -1, -1):
        if hops[above].by_host is not None:
            return hops[above]
    return None


def _written_by_receiver(hop: Scan, owners: _Domains, skip_online: bool) -> bool:
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
    first, second = address(left.strip()), address(right.strip())
    if first is None or second is None:
        return False
    if first == second:
        return True
    # address() takes IPv4 only as written canonically (no leading zeros), so unequal IPv4
    # text is another address; IPv6 may be written in several ways.
    if ":" not in first or ":" not in second:
        return False
    return ipaddress.ip_address(first) == ipaddress.ip_address(second)


# find_sender's finders for its default own_hosts (none), built once.
_NO_OWN_HOSTS = {flag: SenderFinder(skip_exchange_online=flag) for flag in (False, True)}


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
    if isinstance(message, bytes | bytearray | memoryview):
        return received_fields(bytes(message), limit)
    if not isinstance(message, email.message.Message | str):
        raise InvalidValueError(
            f"message must be an email.message.Message, bytes or str, got {message!r:.80}"
        )
    return received_fields(message, limit)
