"""Properties of tbes.received: totality, field invariants, round trips, the sender rule."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import ipaddress
import re

import attrs
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import builds, instants, received_texts

from tbes import serde
from tbes._received_scan import Scan, first_word, host_named, split_comments
from tbes.received import (
    Hop,
    SenderEvidence,
    SenderFinder,
    find_sender,
    parse_received,
    received_values,
)
from tbes.version import ExchangeBuild, Product

_ONLINE = ("outlook.com", "office365.com", "outlook.cn", "exchangelabs.com", "microsoft.com")
_any_text = st.one_of(received_texts, st.text())

# --- parse_received is total and keeps its field promises ------------------------------------


@given(_any_text)
def test_parse_received_never_raises_and_keeps_its_field_promises(value: str) -> None:
    hop = parse_received(value)
    assert isinstance(hop, Hop)
    attrs.validate(hop)  # the parser fills the slots directly: the class's checks must hold
    for host in (hop.from_host, hop.by_host):
        if host is not None:  # lower case, no trailing dot, never empty
            assert host == host.lower()
            assert host
            assert not host.endswith(".")
    for ip in (hop.from_ip, hop.by_ip):
        if ip is not None:  # a valid address, without brackets
            assert "[" not in ip
            ipaddress.ip_address(ip)
    if hop.build is not None:  # only Exchange's own forms carry a build
        assert hop.protocol is not None
        assert hop.protocol.lower() in ("microsoft smtp server", "mapi")
    if hop.date is not None:
        assert hop.date.utcoffset() == dt.timedelta(0)


@given(received_texts)
def test_folding_at_a_space_does_not_change_the_hop(value: str) -> None:
    assert parse_received(value.replace(" ", "\r\n ")) == parse_received(value)
    assert parse_received(value.replace(" ", "\n\t")) == parse_received(value)


# --- the comment splitter agrees with a plain character-by-character scanner -------------------


def _reference_split(value: str) -> tuple[list[str], list[str]]:
    """The obvious scanner: depth counter, backslash quotes the next character in comments."""
    outside: list[str] = []
    comments: list[str] = []
    current: list[str] = []
    depth, i = 0, 0
    while i < len(value):
        char = value[i]
        if depth == 0:
            if char == "(":
                outside.append("".join(current))
                current, depth = [], 1
            else:
                current.append(char)
        elif char == "\\":
            current.append(value[i : i + 2])
            i += 1
        elif char == ")" and depth == 1:
            comments.append("".join(current))
            current, depth = [], 0
        else:
            depth += {"(": 1, ")": -1}.get(char, 0)
            current.append(char)
        i += 1
    if depth:
        comments.append("".join(current))
        outside.append("")
    else:
        outside.append("".join(current))
    return outside, comments


@given(st.one_of(received_texts, st.text(alphabet="()\\ a;")))
def test_comment_splitting_matches_a_plain_scanner(value: str) -> None:
    assert split_comments(value) == _reference_split(value)


# --- a well-formed Exchange header reads back exactly what was written --------------------------

# Two or more labels, some upper-case, never a keyword or an address.
_hosts = st.lists(
    st.sampled_from(
        ["ex16", "EX19", "Mail", "smtp", "fabrikam", "contoso", "a1", "x-y", "Example"]
    ),
    min_size=2,
    max_size=4,
).map(".".join)
_addresses = st.ip_addresses().map(str)
_tls = st.sampled_from(
    [None, "TLS", "version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]
)
_via = st.sampled_from([None, "Frontend Transport", "Mailbox Transport"])
_exchange_builds = st.builds(
    ExchangeBuild,
    st.sampled_from([8, 14, 15]),
    st.integers(0, 3),
    st.integers(0, 9999),
    st.integers(0, 999),
)
_seconds = instants.map(lambda instant: instant.replace(microsecond=0))


@st.composite
def _exchange_headers(draw: st.DrawFn) -> tuple[str, Hop]:
    """A Received value as Exchange writes it, folded at random spaces, and its Hop."""
    hop = Hop(
        from_host=draw(_hosts),
        from_ip=draw(_addresses),
        by_host=draw(_hosts),
        by_ip=draw(_addresses),
        protocol=draw(st.sampled_from(["Microsoft SMTP Server", "mapi"])),
        tls=draw(_tls),
        build=draw(_exchange_builds),
        via=draw(_via),
        date=draw(_seconds),
    )
    assert hop.build is not None
    assert hop.date is not None
    build_text = draw(st.sampled_from([str(hop.build), hop.build.long]))
    words = [
        f"from {hop.from_host} ([{hop.from_ip}])",
        f"by {hop.by_host} ({hop.by_ip})",
        f"with {hop.protocol}",
        f"({hop.tls})" if hop.tls else "",
        f"id {build_text}",
        f"via {hop.via}" if hop.via else "",
        f"; {email.utils.format_datetime(hop.date)}",
    ]
    text = " ".join(word for word in words if word)
    folds = draw(st.lists(st.sampled_from([" ", "\r\n ", "\n\t", "\r\n\t "]), min_size=1))
    pieces = text.split(" ")
    folded = pieces[0] + "".join(folds[i % len(folds)] + p for i, p in enumerate(pieces[1:]))
    expected = Hop(
        from_host=hop.from_host.lower() if hop.from_host else None,
        from_ip=hop.from_ip,
        by_host=hop.by_host.lower() if hop.by_host else None,
        by_ip=hop.by_ip,
        protocol=hop.protocol,
        tls=hop.tls,
        build=hop.build,
        via=hop.via,
        date=hop.date,
    )
    return folded, expected


@given(_exchange_headers())
def test_exchange_header_reads_back_every_field(header: tuple[str, Hop]) -> None:
    value, expected = header
    assert parse_received(value) == expected


# The client's EHLO name stands after "from" whatever it spells (SPEC section 10).
_KEYWORD_CASES = st.sampled_from(["from", "by", "with", "id", "via", "for"]).flatmap(
    lambda word: st.tuples(*(st.sampled_from([c.lower(), c.upper()]) for c in word)).map("".join)
)
_ehlo_words = _KEYWORD_CASES | st.text(
    alphabet=st.characters(
        blacklist_categories=["Zs", "Zl", "Zp", "Cc", "Cs"], blacklist_characters="();"
    ),
    min_size=1,
    max_size=12,
).filter(lambda word: word.split() == [word])


@given(header=_exchange_headers(), ehlo=_ehlo_words, receiver=st.booleans())
def test_no_ehlo_word_changes_the_build_writer_or_sender_of_an_exchange_hop(
    header: tuple[str, Hop], ehlo: str, receiver: bool
) -> None:
    value, expected = header
    # The from-name is the second word of the value, whatever the fold before it.
    forged = re.sub(r"\Afrom(\s+)\S+", lambda m: f"from{m.group(1)}{ehlo}", value, count=1)
    assert forged != value or ehlo == value.split()[1]
    hop = parse_received(forged)
    assert (hop.build, hop.by_host, hop.by_ip) == (expected.build, expected.by_host, expected.by_ip)
    assert (hop.protocol, hop.tls, hop.via, hop.date) == (
        expected.protocol,
        expected.tls,
        expected.via,
        expected.date,
    )
    assert expected.by_host is not None
    if expected.build is None or expected.build.product is Product.EXCHANGE_ONLINE:
        return
    above = ["from c.example (c.example [192.0.2.9]) by mx.receiver.example with ESMTPS id 9"]
    forged_below = f"from x by {expected.by_host} with Microsoft SMTP Server id 16.0.0.0"
    stack = [*above[: int(receiver)], forged, "(qmail 1 invoked by uid 0)", forged_below]
    found = find_sender(stack, own_hosts=["receiver.example"])
    assert found is not None
    assert (found.build, found.host, found.index) == (
        expected.build,
        expected.by_host,
        int(receiver),
    )


# --- serialisation round trips -----------------------------------------------------------------

_offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
_aware = st.datetimes(
    min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=_offsets
)
_maybe_text = st.none() | st.text(max_size=30)
hops = st.builds(
    Hop,
    from_host=_maybe_text,
    from_ip=_maybe_text,
    by_host=_maybe_text,
    by_ip=_maybe_text,
    protocol=_maybe_text,
    tls=_maybe_text,
    build=st.none() | builds,
    via=_maybe_text,
    date=st.none() | _aware,
)
evidence = st.builds(
    SenderEvidence,
    build=builds,
    host=_maybe_text,
    ip=_maybe_text,
    index=st.integers(0, 50),
    hop=hops,
    matched=st.booleans(),
)


@given(hops)
def test_hop_round_trips_through_serde(hop: Hop) -> None:
    assert serde.converter.structure(serde.converter.unstructure(hop), Hop) == hop
    assert serde.loads(serde.dumps(hop), Hop) == hop


@given(evidence)
def test_sender_evidence_round_trips_through_serde(found: SenderEvidence) -> None:
    data = serde.converter.unstructure(found)
    assert serde.converter.structure(data, SenderEvidence) == found
    assert serde.loads(serde.dumps(found), SenderEvidence) == found


# --- find_sender -------------------------------------------------------------------------------

_receiver_hops = st.one_of(
    _hosts.map(lambda h: f"from {h} by mx.{h.split('.')[0]}.receiver.example with ESMTP id 1"),
    _hosts.map(lambda h: f"from {h} by mx.{h.split('.')[0]}.Receiver.Example. with LMTP"),
    st.sampled_from(
        [
            "(qmail 1 invoked by uid 89); 1 Jan 2024 10:00:00 -0000",
            "with ECARTIS (v1.0.0; list dev); Tue, 02 Jan 2024 10:00:00 +0000",
            "by 2002:a05:6a10::1 with SMTP id d1; Mon, 1 Jan 2024 10:00:00 -0800",
        ]
    ),
)


@given(
    header=_exchange_headers(),
    above=st.lists(_receiver_hops, max_size=5),
    below=st.lists(received_texts, max_size=3),
)
def test_leading_receiver_hops_are_skipped_to_the_sender(
    header: tuple[str, Hop], above: list[str], below: list[str]
) -> None:
    value, hop = header
    assert hop.build is not None
    # Keep the generated sender out of the receiver's and Exchange Online's names.
    if hop.build.product is Product.EXCHANGE_ONLINE or not hop.by_host:
        return
    if any(hop.by_host.endswith(suffix) for suffix in (*_ONLINE, "receiver.example")):
        return
    # A hop without `by` goes with the hop below: the last receiver hop must have one.
    if above and parse_received(above[-1]).by_host is None:
        above = [*above, "from x.example by mx.receiver.example with ESMTP id 2"]
    found = find_sender([*above, value, *below], own_hosts=["receiver.example"])
    assert found is not None
    assert found.index == len(above)
    assert found.build == hop.build
    assert (found.host, found.ip) == (hop.by_host, hop.by_ip)


@given(
    values=st.lists(_any_text, max_size=6),
    own=st.lists(st.sampled_from(["receiver.example", "Example.", "", "outlook.com"]), max_size=2),
    client=st.none() | st.sampled_from(["192.0.2.1", "mx.receiver.example", "::1"]),
    skip=st.booleans(),
)
def test_sender_evidence_is_the_hop_at_its_index_and_all_above_are_dropped(
    values: list[str], own: list[str], client: str | None, skip: bool
) -> None:
    found = find_sender(values, own_hosts=own, skip_exchange_online=skip, client=client)
    if found is None:
        return
    attrs.validate(found)  # filled directly too
    hops = [parse_received(value) for value in values]
    assert 0 <= found.index < len(values)
    assert found.hop == hops[found.index]
    assert found.build == found.hop.build
    assert (found.host, found.ip) == (found.hop.by_host, found.hop.by_ip)
    assert found.host is not None  # a hop without a writer is never the sender hop
    owners = tuple(name.rstrip(".").lower() for name in own if name.rstrip("."))
    for hop in hops[: found.index]:
        if hop.by_host is None:
            continue  # goes with the hop below it
        names = owners + (_ONLINE if skip else ())
        under = any(hop.by_host == n or hop.by_host.endswith("." + n) for n in names)
        online = skip and hop.build is not None and hop.build.product is Product.EXCHANGE_ONLINE
        assert under or online, hop


# --- received_values ---------------------------------------------------------------------------

_values = (
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20)
    .flatmap(
        lambda first: st.lists(
            st.text(
                alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20
            ),
            max_size=5,
        ).map(lambda rest: " ".join([first, *rest]))
    )
    .filter(lambda value: not value.startswith("=?"))
)


@given(values=st.lists(_values, max_size=5), fold=st.sampled_from(["\r\n ", "\n ", " "]))
def test_received_values_gives_back_each_value_in_order(values: list[str], fold: str) -> None:
    newline = "\r\n" if "\r" in fold else "\n"
    lines = [f"X-Before: 1{newline}"]
    lines += [f"Received: {value.replace(' ', fold)}{newline}" for value in values]
    text = "".join(lines) + f"Subject: s{newline}{newline}Received: body{newline}"
    assert received_values(text) == values
    assert received_values(text.encode("ascii")) == values
    message = email.message_from_string(text, policy=email.policy.compat32)
    assert received_values(message) == values


# ---- the sender-hop rule against a literal reading of SPEC section 2 -----------------------

_HOP_POOL = (
    "from a.example (a.example [192.0.2.1]) by mx.receiver.example (Postfix) with ESMTPS id 1",
    "from b.example ([192.0.2.2]) by relay.receiver.example with ESMTP id 2",
    "(qmail 4242 invoked by uid 0)",
    "with ECARTIS (v1.0.0; list users); Mon, 4 Mar 2024 10:00:00 +0000",
    "from x.outlook.com (10.0.0.1) by y.outlook.com with Microsoft SMTP Server id 15.20.8835.29",
    "from ex (10.1.1.1) by ex16.fabrikam.example (203.0.113.16) with Microsoft SMTP Server"
    " (version=TLS1_2, cipher=TLS_AES_256_GCM_SHA384) id 15.1.2507.39",
    "from gw (gw [198.51.100.7]) by gw.northwind.example (Postfix) with ESMTPS id 3",
    "by 2002:a05:6a10::1 with SMTP id abc; Mon, 4 Mar 2024 10:00:00 -0800",
)


def _reference_first_foreign(values: list[str]) -> int | None:
    # SPEC section 2 step 1, bottom-up: a hop without by_host belongs to the hop below it;
    # section 10: it is never the sender hop, which is the first one left with a by_host.
    hops = [parse_received(value) for value in values]
    receiver = [False] * len(hops)
    for index in range(len(hops) - 1, -1, -1):
        hop = hops[index]
        own = hop.by_host is not None and (
            hop.by_host == "receiver.example" or hop.by_host.endswith(".receiver.example")
        )
        online = (hop.build is not None and hop.build.product is Product.EXCHANGE_ONLINE) or (
            hop.by_host is not None and hop.by_host.endswith(".outlook.com")
        )
        below = index + 1 < len(hops) and receiver[index + 1]
        receiver[index] = own or online or (hop.by_host is None and below)
    return next(
        (
            index
            for index, mine in enumerate(receiver)
            if not mine and hops[index].by_host is not None
        ),
        None,
    )


@given(st.lists(st.sampled_from(_HOP_POOL), max_size=12), st.booleans())
def test_sender_hop_matches_the_literal_bottom_up_rule(values: list[str], bottom: bool) -> None:
    if bottom:  # an Exchange hop at the bottom makes most chains end in evidence
        values = [*values, _HOP_POOL[5]]
    first = _reference_first_foreign(values)
    found = find_sender(values, own_hosts=["receiver.example"])
    if first is None or parse_received(values[first]).build is None:
        assert found is None
    else:
        assert found is not None
        assert found.index == first


# ---- fast paths agree with the standard library they stand in for ---------------------------

_DAY_WORDS = st.sampled_from(["Tue,", "tue,", "Tue", "Mon,", ",", "x,"])
_DIGIT_WORDS = st.text(alphabet="0123456789", min_size=0, max_size=5)


_OCTET = st.integers(0, 300).map(str) | st.sampled_from(["0", "00", "01", "09", "010", "099"])


_ODD_DATE_WORDS = st.sampled_from(
    [
        *("November", "Xyz", "Nov,", "GMT", "EST", "-0000", "+0000", "+01000", "0100", "26"),
        *("70", "0099", "31", "32", "00", "10:17", "10::29", "10:17:29:00", "24:00:00", "Tue"),
    ]
) | st.text(alphabet="0123456789:+-", min_size=1, max_size=6)


@st.composite
def _date_words(draw: st.DrawFn) -> list[str]:
    # RFC 5322's layout for any instant and zone offset, then sometimes one word swapped for
    # an odd one (two-digit years, full month names, named or malformed zones, bad clocks),
    # or one word missing.
    moment = draw(st.datetimes(min_value=dt.datetime(100, 1, 1)))
    month = draw(st.sampled_from([str.lower, str.upper, str.title]))(f"{moment:%b}")
    sign, hours, minutes = (
        draw(st.sampled_from("+-")),
        draw(st.integers(0, 30)),
        draw(st.integers(0, 99)),
    )
    words = [str(moment.day), month, f"{moment.year:04d}", f"{moment:%H:%M:%S}"]
    words.append(f"{sign}{hours:02d}{minutes:02d}")
    if draw(st.booleans()):
        words.insert(0, draw(st.sampled_from(["Tue,", "tue,", "x,", ","])))
    change = draw(st.integers(0, 5))
    index = draw(st.integers(0, len(words) - 1))
    if change == 0:
        words[index] = draw(_ODD_DATE_WORDS)
    elif change == 1:
        del words[index]
    return words


def _stdlib_date(words: list[str]) -> dt.datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(" ".join(words))
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000": UTC, the sender's zone unknown
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        return None


@example(["Tue,", "3", "Nov", "26", "10:17:29", "+0100"])  # a two-digit year, widened
@example(["3", "Nov", "1970", "10:17:29", "-0000"])  # UTC, the zone unknown
@example(["Tue,", "3", "Nov", "2026", "10::29", "+0100"])  # an empty clock part
@example(["3", "Nov", "2026", "10:17", "+0100"])  # no seconds
@example(["Tue,", "31", "Nov", "2026", "10:17:29", "-2359"])  # no such day
@example(["Tue,", "3", "Nov", "2026", "10:17:29", "+2400"])  # no such zone
@given(_date_words())
def test_a_hops_date_is_what_email_utils_reads(words: list[str]) -> None:
    value = "from a by b with ESMTP id 1; " + " ".join(words)
    expected = _stdlib_date(words)
    date = parse_received(value).date
    assert date == expected
    if date is not None:
        assert date.tzinfo is dt.UTC


def _stdlib_address(word: str) -> str | None:
    text = word[1:].partition("]")[0] if word.startswith("[") else word
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return None
    return text.lower()


_address_words = st.one_of(
    st.text(alphabet="0123456789.", max_size=20),
    st.lists(_OCTET, min_size=1, max_size=6).map(".".join),
    st.lists(_OCTET, min_size=4, max_size=4).map(".".join),
    st.lists(_DIGIT_WORDS, min_size=3, max_size=5).map(".".join),
    st.text(alphabet="0123456789abcdefABCDEF.:%[]", max_size=24),
    st.ip_addresses().map(str),
)


@given(_address_words)
def test_an_address_in_a_comment_is_read_as_ipaddress_reads_it(word: str) -> None:
    # The address the hop's writer saw, in its comment; the name itself is a host name.
    hop = parse_received(f"from client.example ({word}) by mx.example with ESMTP id 1")
    expected = _stdlib_address(word)
    if expected is None:
        assert hop.from_ip is None
    else:
        assert hop.from_ip == expected


# ---- received_values against a literal, line-by-line reading of the header section ----------


def _literal_received_values(text: str) -> list[str]:
    # The rule in docs/received.md, one line at a time: the section ends at the first empty
    # (or "\r") line or at a line that is neither a continuation (white space first) nor a
    # field ("name:", the name without white space), CR-only lines and an mbox "From " line
    # first are passed over, and continuation lines belong to the field above them.
    fields: list[tuple[str, list[str]]] = []
    for number, line in enumerate(text.split("\n")):
        if line in ("", "\r"):
            break
        if line[0] in " \t":
            if fields:
                fields[-1][1].append(line)
            continue
        name, colon, rest = line.partition(":")
        name = name.rstrip()
        if colon and name and not any(char.isspace() for char in name):
            fields.append((name, [rest]))
        elif (number == 0 and line.startswith("From ")) or not line.strip("\r"):
            continue
        else:
            break
    return [
        "".join(lines).replace("\r", "").strip()
        for name, lines in fields
        if name.lower() == "received"
    ]


_header_lines = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "Received: from a by b",
                "received :x",
                "RECEIVED\t: y",
                "Received-SPF: pass",
                "Receive: no",
                "X-Received: no",
                "Subject: s",
                "From x@y",
                "From: z",
                " continued",
                "\tcontinued",
                "\r\r",
                "\r",
                "",
                "no header here",
                "bad name: v",
                "Recei\xa0ved: nbsp",
                "Re\u0130ceived: dotted",
                ":empty name",
                "Rec\x1ceived: odd",
                "Received\xa0: nbsp",
                "Received\u3000\x85: ideographic space, next line",
                "Received\u2028: line separator",
            ]
        ),
        st.booleans(),
    ).map(lambda pair: pair[0] + "\r" * pair[1]),  # a stray CR at the end
    max_size=12,
)


@example(["Received: a", "\r\r", " b", "Subject: s"], "\n", True)
@example(
    ["From x@y", "Received: a", "\r\r", "\r\r", "\tb", "bad line", "Received: c"], "\r\n", False
)
@given(_header_lines, st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_received_values_split_the_section_as_read_line_by_line(
    lines: list[str], newline: str, final_newline: bool
) -> None:
    text = newline.join(lines) + (newline if final_newline else "")
    expected = _literal_received_values(text)
    assert received_values(text) == expected
    assert received_values(text.encode("utf-8")) == expected


@given(
    values=st.lists(st.sampled_from(_HOP_POOL[:2] + _HOP_POOL[4:]), max_size=6),
    client=st.none() | st.sampled_from(["192.0.2.1", "203.0.113.16", "ex16.fabrikam.example"]),
)
def test_matched_compares_the_sender_hop_with_its_client(
    values: list[str], client: str | None
) -> None:
    values = [*values, _HOP_POOL[5]]
    found = find_sender(values, own_hosts=["receiver.example"], client=client)
    if found is None:
        return
    hops = [parse_received(value) for value in values]
    hop = hops[found.index]
    seen_host: str | None
    seen_ip: str | None
    if client is not None:
        seen_host, seen_ip = client, client
    elif writers := [hop for hop in hops[: found.index] if hop.by_host is not None]:
        # The nearest hop above with a writer: those without one go with the sender hop.
        seen_host, seen_ip = writers[-1].from_host, writers[-1].from_ip
    else:
        seen_host = seen_ip = None
    same_host = seen_host is not None and seen_host.lower() == hop.by_host
    same_ip = (
        seen_ip is not None
        and hop.by_ip is not None
        and _stdlib_address(seen_ip) is not None
        and ipaddress.ip_address(seen_ip) == ipaddress.ip_address(hop.by_ip)
    )
    assert found.matched == (same_host or same_ip)


@given(
    messages=st.lists(st.lists(st.sampled_from(_HOP_POOL), max_size=6), max_size=4),
    own=st.sampled_from([(), ("receiver.example",), "Receiver.Example.", ["gw.northwind.example"]]),
    skip=st.booleans(),
    client=st.none() | st.sampled_from(["192.0.2.1", "ex16.fabrikam.example"]),
)
def test_one_sender_finder_finds_for_every_message_what_find_sender_finds(
    messages: list[list[str]], own: object, skip: bool, client: str | None
) -> None:
    # Built once and reused: nothing of one message is kept for the next.
    finder = SenderFinder(own, skip_exchange_online=skip)  # type: ignore[arg-type]
    for values in messages:
        expected = find_sender(values, own_hosts=own, skip_exchange_online=skip, client=client)  # type: ignore[arg-type]
        assert finder.find(values, client=client) == expected
        assert finder.find_checked(values, client=client) == expected


# ---- the shortcuts find_sender takes agree with the clauses cut in full ----------------------


def test_only_ascii_letters_lower_case_to_the_letters_of_the_keywords() -> None:
    # The clause keywords are matched in their ASCII spellings and "received" by ASCII
    # character classes, which is exactly word.lower() == keyword only if no other code
    # point lower-cases to letters of theirs.
    letters = set("received" + "from" + "by" + "with" + "id" + "via" + "for")
    others = [chr(point) for point in range(0x80, 0x110000)]
    assert [c for c in others if set(c.lower()) <= letters] == []


_clause_texts = st.lists(
    st.sampled_from(
        [
            *("from", "FROM", "By", "by", "bY", "with", "id", ";", "(c)", "a.example"),
            *("[192.0.2.1]", "10.0.0.1", "\u0130d", "b\u0131", "x\u00a0by", "by\u00a0x", "("),
            *(")", "\r\n\t", "For"),
        ]
    ),
    max_size=14,
).map(" ".join)


@example("from a.example ; by b.example")  # after the last ";": no clause
@example("from (c) a.example by b.example ; x")
@given(st.one_of(_clause_texts, received_texts, st.text()))
def test_the_writer_and_client_names_are_those_of_the_clauses_cut_in_full(value: str) -> None:
    scan = Scan(value)
    assert scan.by_host == host_named(first_word(scan.clause("by")))
    assert scan.client_host() == host_named(first_word(scan.clause("from")))


# ---- the build shortcut: a hop told "no build" from its lower-cased text --------------------

_build_protocols = st.sampled_from(
    [
        *("Microsoft SMTP Server", "MICROSOFT smtp SERVER", "microsoft\r\n SMTP  Server"),
        *("mapi", "MAPI", "mApI", "Microsoft SMTPSVC", "ESMTP", "Micro\u017ffot SMTP Server"),
    ]
)


@given(
    st.one_of(
        received_texts,
        st.text(),
        st.tuples(st.text(max_size=30), _build_protocols, st.text(max_size=30)).map(
            lambda parts: (
                f"from a.example by b.example{parts[0]} with {parts[1]}{parts[2]} id 15.1.2507.23"
            )
        ),
    )
)
def test_the_build_shortcut_never_hides_a_protocol_that_carries_a_build(value: str) -> None:
    # The protocol is read from the clauses, which the shortcut does not use: whenever it
    # is one of Exchange's, the lower-cased text holds "microsoft" or "mapi", so the build
    # is still read from the clauses.
    hop = parse_received(value)
    if hop.protocol is not None and hop.protocol.lower() in ("microsoft smtp server", "mapi"):
        lowered = value.lower()
        assert "microsoft" in lowered or "mapi" in lowered


@given(
    _build_protocols.filter(
        lambda name: " ".join(name.split()).lower() in ("microsoft smtp server", "mapi")
    )
)
def test_every_spelling_of_an_exchange_protocol_still_gives_its_build(protocol: str) -> None:
    hop = parse_received(f"from a.example by b.example with {protocol} id 15.1.2507.23")
    assert hop.build == ExchangeBuild.parse("15.1.2507.23")
