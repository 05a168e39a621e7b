"""Received headers: parsing real-world hop shapes, finding the sender hop, reading messages.

Every expected value below was worked out by hand from the header text and SPEC section 2.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import load_vectors
from tbes.errors import InvalidValueError, NaiveDatetimeError
from tbes.received import (
    Hop,
    SenderEvidence,
    SenderFinder,
    find_sender,
    parse_received,
    received_values,
)
from tbes.version import ExchangeBuild

DATA = Path(__file__).parent / "data" / "received"
UTC = dt.UTC


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    """An instant in UTC."""
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --- the shared vectors -----------------------------------------------------------------------

VECTORS: list[dict[str, Any]] = load_vectors("received.json")


@pytest.mark.parametrize("case", VECTORS, ids=[case["name"] for case in VECTORS])
def test_shared_vector_gives_the_expected_sender_evidence(case: dict[str, Any]) -> None:
    found = find_sender(
        case["received"],
        own_hosts=case["own_hosts"],
        skip_exchange_online=case["skip_exchange_online"],
        client=case["client"],
    )
    expect = case["expect"]
    if expect is None:
        assert found is None
        return
    assert found is not None
    got = {
        "build": str(found.build),
        "host": found.host,
        "ip": found.ip,
        "index": found.index,
        "matched": found.matched,
    }
    assert got == expect


# --- parse_received: one hop per real-world shape ---------------------------------------------

HOPS: dict[str, tuple[str, Hop]] = {
    "exchange-2007-smtp": (
        "from EXHUB01.fabrikam.local ([10.1.2.3]) by mail.fabrikam.example ([10.1.2.4]) with"
        " Microsoft SMTP Server id 8.3.83.6; Mon, 3 Jul 2023 09:12:40 +0200",
        Hop(
            from_host="exhub01.fabrikam.local",
            from_ip="10.1.2.3",
            by_host="mail.fabrikam.example",
            by_ip="10.1.2.4",
            protocol="Microsoft SMTP Server",
            build=ExchangeBuild(8, 3, 83, 6),
            date=at(2023, 7, 3, 7, 12, 40),
        ),
    ),
    "exchange-2007-mapi-without-id": (
        "from EXMBX01.fabrikam.local ([10.1.2.7]) by EXHUB01.fabrikam.local ([10.1.2.3]) with"
        " mapi; Mon, 3 Jul 2023 09:12:39 +0200",
        Hop(
            from_host="exmbx01.fabrikam.local",
            from_ip="10.1.2.7",
            by_host="exhub01.fabrikam.local",
            by_ip="10.1.2.3",
            protocol="mapi",
            date=at(2023, 7, 3, 7, 12, 39),
        ),
    ),
    "exchange-2010-tls-folded-lf": (
        "from CAS01.woodgrove.example (192.0.2.10) by edge.woodgrove.example\n (192.0.2.11)"
        " with Microsoft SMTP Server (TLS) id 14.3.439.0; Tue, 12 Sep\n 2023 12:59:58 +0200",
        Hop(
            from_host="cas01.woodgrove.example",
            from_ip="192.0.2.10",
            by_host="edge.woodgrove.example",
            by_ip="192.0.2.11",
            protocol="Microsoft SMTP Server",
            tls="TLS",
            build=ExchangeBuild(14, 3, 439, 0),
            date=at(2023, 9, 12, 10, 59, 58),
        ),
    ),
    "exchange-2010-mapi-long-id-isatap": (
        "from EXMBX01.woodgrove.local ([fe80::5efe:10.1.1.5]) by EXCAS01.woodgrove.local"
        " ([::1]) with mapi id 14.03.0468.000; Wed, 20 Mar 2024 09:15:00 +0100",
        Hop(
            from_host="exmbx01.woodgrove.local",
            from_ip="fe80::5efe:10.1.1.5",
            by_host="excas01.woodgrove.local",
            by_ip="::1",
            protocol="mapi",
            build=ExchangeBuild(14, 3, 468, 0),
            date=at(2024, 3, 20, 8, 15),
        ),
    ),
    "exchange-2013-frontend": (
        "from EX13MBX.tailspin.example (10.0.0.5) by EX13FE.tailspin.example (203.0.113.40)"
        " with Microsoft SMTP Server id 15.0.1497.2 via Frontend Transport; Wed, 10 Jan 2024"
        " 09:00:01 +0100",
        Hop(
            from_host="ex13mbx.tailspin.example",
            from_ip="10.0.0.5",
            by_host="ex13fe.tailspin.example",
            by_ip="203.0.113.40",
            protocol="Microsoft SMTP Server",
            build=ExchangeBuild(15, 0, 1497, 2),
            via="Frontend Transport",
            date=at(2024, 1, 10, 8, 0, 1),
        ),
    ),
    "exchange-2013-mailbox-transport": (
        "from EX13FE.tailspin.example (10.0.0.4) by EX13MBX.tailspin.example (10.0.0.5) with"
        " Microsoft SMTP Server (TLS) id 15.0.847.32 via Mailbox Transport; Wed, 10 Jan 2024"
        " 09:00:02 +0100",
        Hop(
            from_host="ex13fe.tailspin.example",
            from_ip="10.0.0.4",
            by_host="ex13mbx.tailspin.example",
            by_ip="10.0.0.5",
            protocol="Microsoft SMTP Server",
            tls="TLS",
            build=ExchangeBuild(15, 0, 847, 32),
            via="Mailbox Transport",
            date=at(2024, 1, 10, 8, 0, 2),
        ),
    ),
    "exchange-2016-cipher-folded-crlf-tabs": (
        "from EX16A.northwind.example (10.9.9.8) by EX16B.northwind.example\r\n\t(10.9.9.9)"
        " with Microsoft SMTP Server (version=TLS1_2,\r\n\tcipher=TLS_ECDHE_RSA_WITH_AES_256_"
        "GCM_SHA384) id\r\n\t15.1.2507.39 via Frontend Transport; Thu, 5 Sep 2024 12:00:07 +0200",
        Hop(
            from_host="ex16a.northwind.example",
            from_ip="10.9.9.8",
            by_host="ex16b.northwind.example",
            by_ip="10.9.9.9",
            protocol="Microsoft SMTP Server",
            tls="version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            build=ExchangeBuild(15, 1, 2507, 39),
            via="Frontend Transport",
            date=at(2024, 9, 5, 10, 0, 7),
        ),
    ),
    "exchange-2016-mapi-long-form": (
        "from ex.contoso.example ([::1]) by ex.contoso.example ([::1]) with mapi id"
        " 15.01.2507.039; Mon, 4 Mar 2024 11:00:00 +0100",
        Hop(
            from_host="ex.contoso.example",
            from_ip="::1",
            by_host="ex.contoso.example",
            by_ip="::1",
            protocol="mapi",
            build=ExchangeBuild(15, 1, 2507, 39),
            date=at(2024, 3, 4, 10),
        ),
    ),
    "exchange-online-mapi-zone-index": (
        "from BL0PR04MB4866.namprd04.prod.outlook.com\n ([fe80::b6:a4a1:2f36:8284]) by"
        " BL0PR04MB4866.namprd04.prod.outlook.com\n ([fe80::b6:a4a1:2f36:8284%7]) with mapi id"
        " 15.20.3412.029; Tue, 29 Sep 2020\n 22:22:59 +0000",
        Hop(
            from_host="bl0pr04mb4866.namprd04.prod.outlook.com",
            from_ip="fe80::b6:a4a1:2f36:8284",
            by_host="bl0pr04mb4866.namprd04.prod.outlook.com",
            by_ip="fe80::b6:a4a1:2f36:8284%7",
            protocol="mapi",
            build=ExchangeBuild(15, 20, 3412, 29),
            date=at(2020, 9, 29, 22, 22, 59),
        ),
    ),
    "iis-smtpsvc-is-no-exchange-build": (
        "from EX2003.litware.local ([10.10.10.10]) by old.litware.example with Microsoft"
        " SMTPSVC(6.0.3790.4675);\n\t Fri, 1 Mar 2024 10:00:00 +0100",
        Hop(
            from_host="ex2003.litware.local",
            from_ip="10.10.10.10",
            by_host="old.litware.example",
            protocol="Microsoft SMTPSVC",
            date=at(2024, 3, 1, 9),
        ),
    ),
    "postfix-with-tls-comments": (
        "from mail.fabrikam.example (mail.fabrikam.example [203.0.113.25])\n\t(using TLSv1.3"
        " with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\t key-exchange X25519"
        " server-signature RSA-PSS (2048 bits) server-digest SHA256)\n\t(No client certificate"
        " requested)\n\tby mx1.contoso.example (Postfix) with ESMTPS id 4Y2kLm0QzXz9sWx\n\tfor"
        " <alice@contoso.example>; Mon, 3 Jul 2023 09:12:44 +0200 (CEST)",
        Hop(
            from_host="mail.fabrikam.example",
            from_ip="203.0.113.25",
            by_host="mx1.contoso.example",
            protocol="ESMTPS",
            date=at(2023, 7, 3, 7, 12, 44),
        ),
    ),
    "sendmail-ipv6-literal-and-tls-after-id": (
        "from mail.adatum.example (mail.adatum.example [IPv6:2001:db8::1])\n\tby"
        " mx.example.net (8.17.1/8.17.1) with ESMTPS id 4ABCD123456789\n\t(version=TLSv1.3"
        " cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NOT)\n\tfor <bob@example.net>; Tue, 2"
        " Jan 2024 10:11:12 -0500",
        Hop(
            from_host="mail.adatum.example",
            from_ip="2001:db8::1",
            by_host="mx.example.net",
            protocol="ESMTPS",
            tls="version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NOT",
            date=at(2024, 1, 2, 15, 11, 12),
        ),
    ),
    "sendmail-claimed-literal-loses-to-seen-address": (
        "from [IPv6:2001:db8::7] (unknown [IPv6:2001:DB8::8]) by mx.example.net with ESMTP id"
        " 1; Tue, 2 Jan 2024 10:11:12 -0500",
        Hop(
            from_ip="2001:db8::8",
            by_host="mx.example.net",
            protocol="ESMTP",
            date=at(2024, 1, 2, 15, 11, 12),
        ),
    ),
    "exim-port-helo-and-tls-word": (
        "from mail.example.org ([192.0.2.55]:41234 helo=smtp.example.org)\n\tby mx.example.net"
        " with esmtps  (TLS1.3) tls TLS_AES_256_GCM_SHA384\n\t(Exim 4.96)\n\t(envelope-from"
        " <a@example.org>)\n\tid 1rXyZa-000ABC-2k\n\tfor b@example.net; Wed, 07 Feb 2024"
        " 14:00:00 +0000",
        Hop(
            from_host="mail.example.org",
            from_ip="192.0.2.55",
            by_host="mx.example.net",
            protocol="esmtps",
            date=at(2024, 2, 7, 14),
        ),
    ),
    "exim-address-literal-as-name": (
        "from [198.51.100.23] (port=50412 helo=client.example)\n\tby mx.example.net with esmtp"
        " (Exim 4.96)\n\tid 1rXyZb-000ABD-3m; Wed, 07 Feb 2024 14:00:01 +0000",
        Hop(
            from_ip="198.51.100.23",
            by_host="mx.example.net",
            protocol="esmtp",
            date=at(2024, 2, 7, 14, 0, 1),
        ),
    ),
    "gmail-address-only-by": (
        "by 2002:a05:6a10:8f0e:b0:5a4:1c2b:7e3f with SMTP id d14csp123456pxz;\r\n        Mon,"
        " 1 Jan 2024 10:00:00 -0800 (PST)",
        Hop(
            by_ip="2002:a05:6a10:8f0e:b0:5a4:1c2b:7e3f",
            protocol="SMTP",
            date=at(2024, 1, 1, 18),
        ),
    ),
    "gmail-mx-trailing-dot-and-tls-after-for": (
        "from mail-sor-f41.google.com (mail-sor-f41.google.com. [209.85.220.41])\r\n       "
        " by mx.google.com. with SMTPS id a1sor123.2024.01.01.10.00.00\r\n        for"
        " <x@example.com>\r\n        (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384"
        " bits=256/256);\r\n        Mon, 01 Jan 2024 10:00:00 -0800 (PST)",
        Hop(
            from_host="mail-sor-f41.google.com",
            from_ip="209.85.220.41",
            by_host="mx.google.com",
            protocol="SMTPS",
            tls="version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256",
            date=at(2024, 1, 1, 18),
        ),
    ),
    "yahoo-bare-addresses": (
        "from 209.85.128.170 (EHLO mail-yw1-f170.google.com)\n    by 10.197.33.76 with SMTPs"
        " (version=TLS1_3);\n    Wed, 29 May 2024 00:48:47 +0000",
        Hop(
            from_ip="209.85.128.170",
            by_ip="10.197.33.76",
            protocol="SMTPs",
            tls="version=TLS1_3",
            date=at(2024, 5, 29, 0, 48, 47),
        ),
    ),
    "qmail-helo-comment-and-minus-zero-zone": (
        "from unknown (HELO mail.example.com) (192.0.2.1)\n  by mx.example.net with SMTP; 1"
        " Jan 2024 10:00:00 -0000",
        Hop(
            from_host="unknown",
            from_ip="192.0.2.1",
            by_host="mx.example.net",
            protocol="SMTP",
            date=at(2024, 1, 1, 10),
        ),
    ),
    "qmail-invoked-by-uid-has-no-by": (
        "(qmail 12345 invoked by uid 89); 1 Jan 2024 10:00:00 -0000",
        Hop(date=at(2024, 1, 1, 10)),
    ),
    "list-manager-semicolon-inside-comment": (
        "with ECARTIS (v1.0.0; list dev); Tue, 02 Jan 2024 10:00:00 +0000 (UTC)",
        Hop(protocol="ECARTIS", date=at(2024, 1, 2, 10)),
    ),
    "upper-case-keywords-and-names": (
        "FROM Mail.Example.COM. (192.0.2.77) BY MX.Example.NET. WITH ESMTP ID 77; Tue, 02 Jan"
        " 2024 10:00:00 +0000",
        Hop(
            from_host="mail.example.com",
            from_ip="192.0.2.77",
            by_host="mx.example.net",
            protocol="ESMTP",
            date=at(2024, 1, 2, 10),
        ),
    ),
    "missing-date": (
        "from a.example (a.example [192.0.2.9]) by b.example with ESMTP id 42",
        Hop(from_host="a.example", from_ip="192.0.2.9", by_host="b.example", protocol="ESMTP"),
    ),
    "date-without-zone-is-utc": (
        "by b.example with ESMTP; Fri, 21 Apr 2023 10:55:05",
        Hop(by_host="b.example", protocol="ESMTP", date=at(2023, 4, 21, 10, 55, 5)),
    ),
    "unreadable-date": (
        "by b.example with ESMTP; sometime last Tuesday",
        Hop(by_host="b.example", protocol="ESMTP"),
    ),
    "impossible-date": (
        "by b.example with ESMTP; 31 Feb 2024 25:61:00 +0000",
        Hop(by_host="b.example", protocol="ESMTP"),
    ),
    "escaped-parenthesis-inside-comment": (
        "from a.example (a\\) b [192.0.2.4]) by c.example with SMTP; Mon, 1 Jan 2024 10:00:00"
        " +0000",
        Hop(
            from_host="a.example",
            from_ip="192.0.2.4",
            by_host="c.example",
            protocol="SMTP",
            date=at(2024, 1, 1, 10),
        ),
    ),
    "nested-comment": (
        "from a.example (x (y; z) [192.0.2.4]) by c.example with SMTP; Mon, 1 Jan 2024"
        " 10:00:00 +0000",
        Hop(
            from_host="a.example",
            from_ip="192.0.2.4",
            by_host="c.example",
            protocol="SMTP",
            date=at(2024, 1, 1, 10),
        ),
    ),
    "sendmail-version-comment-is-no-address": (
        "by mx.example.net (8.14.4/8.14.4) with ESMTP id q1; Mon, 1 Jan 2024 10:00:00 +0000",
        Hop(by_host="mx.example.net", protocol="ESMTP", date=at(2024, 1, 1, 10)),
    ),
    "id-without-exchange-protocol-has-no-build": (
        "from a.example by b.example with ESMTP id 15.1.2507.23; Mon, 1 Jan 2024 10:00:00 +0000",
        Hop(from_host="a.example", by_host="b.example", protocol="ESMTP", date=at(2024, 1, 1, 10)),
    ),
    "bare-id-has-no-build": ("id 15.1.2507.23", Hop()),
    "exchange-id-that-is-no-build": (
        "by ex.example with Microsoft SMTP Server id 15.1.x.23; Mon, 1 Jan 2024 10:00:00 +0000",
        Hop(by_host="ex.example", protocol="Microsoft SMTP Server", date=at(2024, 1, 1, 10)),
    ),
    "repeated-clause-counts-once": (
        "from first.example by b.example from second.example with ESMTP; Mon, 1 Jan 2024"
        " 10:00:00 +0000",
        Hop(
            from_host="first.example",
            by_host="b.example",
            protocol="ESMTP",
            date=at(2024, 1, 1, 10),
        ),
    ),
    "empty": ("", Hop()),
    "unclosed-comment-swallows-the-rest": (
        "from a.example by b.example with Microsoft SMTP Server (TLS id 15.1.2507.23; Mon, 1"
        " Jan 2024 10:00:00 +0000",
        Hop(from_host="a.example", by_host="b.example", protocol="Microsoft SMTP Server"),
    ),
    "stray-close-parenthesis-is-space": (
        "from a.example) by b.example with ESMTP; Mon, 1 Jan 2024 10:00:00 +0000",
        Hop(from_host="a.example", by_host="b.example", protocol="ESMTP", date=at(2024, 1, 1, 10)),
    ),
    "non-ascii-host-kept-lower-cased": (
        "from HÔTE.example (192.0.2.3) by mx.example with ESMTP; Mon, 1 Jan 2024 10:00:00 +0000",
        Hop(
            from_host="hôte.example",
            from_ip="192.0.2.3",
            by_host="mx.example",
            protocol="ESMTP",
            date=at(2024, 1, 1, 10),
        ),
    ),
    "surrogate-escaped-bytes-survive": (
        "from h\udcc3\udca9.example (192.0.2.3) by mx.example with ESMTP",
        Hop(
            from_host="h\udcc3\udca9.example",
            from_ip="192.0.2.3",
            by_host="mx.example",
            protocol="ESMTP",
        ),
    ),
}


@pytest.mark.parametrize(("value", "expected"), HOPS.values(), ids=HOPS.keys())
def test_parse_received_reads_real_world_hop_shapes(value: str, expected: Hop) -> None:
    assert parse_received(value) == expected


def test_dates_are_normalised_to_utc() -> None:
    hop = parse_received("by b.example; Tue, 12 Sep 2023 12:59:58 +0200")
    assert hop.date is not None
    assert hop.date.utcoffset() == dt.timedelta(0)
    assert hop.date == dt.datetime(
        2023, 9, 12, 12, 59, 58, tzinfo=dt.timezone(dt.timedelta(hours=2))
    )


def test_folding_with_crlf_lf_or_tabs_gives_the_same_hop() -> None:
    flat = (
        "from EX16A.northwind.example (10.9.9.8) by EX16B.northwind.example (10.9.9.9) with"
        " Microsoft SMTP Server (version=TLS1_2, cipher=TLS_AES_256_GCM_SHA384) id 15.1.2507.39"
        " via Frontend Transport; Thu, 5 Sep 2024 12:00:07 +0200"
    )
    for fold in ("\r\n ", "\n\t", "\r\n\t ", "\n  "):
        assert parse_received(flat.replace(" ", fold)) == parse_received(flat)


# --- Hop and SenderEvidence are validated values ----------------------------------------------


def test_hop_rejects_a_naive_date() -> None:
    with pytest.raises(NaiveDatetimeError, match="2024"):
        Hop(date=dt.datetime(2024, 1, 1))


def test_hop_rejects_a_host_that_is_not_text() -> None:
    with pytest.raises(InvalidValueError, match="by_host"):
        Hop(by_host=42)  # type: ignore[arg-type]


def test_sender_evidence_rejects_a_negative_index() -> None:
    with pytest.raises(ValueError, match="-1"):
        SenderEvidence(ExchangeBuild(15, 1, 2507, 23), None, None, -1, Hop(), matched=False)


# --- find_sender -----------------------------------------------------------------------------

EX16 = (
    "from EX16.fabrikam.example (10.0.0.16) by smtp.fabrikam.example (203.0.113.16) with"
    " Microsoft SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id"
    " 15.1.2507.23; Mon, 4 Mar 2024 11:00:00 +0100"
)


def by(host: str, *, client: str = "smtp.fabrikam.example", ip: str = "203.0.113.16") -> str:
    """A Postfix hop written by `host` that received the message from `client`."""
    return (
        f"from {client} ({client} [{ip}]) by {host} (Postfix) with ESMTPS id 1A;"
        " Mon, 4 Mar 2024 10:00:01 +0000"
    )


def sender(received: list[str], **options: Any) -> tuple[str, int, bool] | None:
    found = find_sender(received, **options)
    return None if found is None else (str(found.build), found.index, found.matched)


def test_own_hosts_match_the_host_and_its_subdomains() -> None:
    own = {"own_hosts": ["receiver.example"]}
    assert sender([by("receiver.example"), EX16], **own) == ("15.1.2507.23", 1, True)
    assert sender([by("mx.receiver.example"), EX16], **own) == ("15.1.2507.23", 1, True)
    assert sender([by("a.b.receiver.example"), EX16], **own) == ("15.1.2507.23", 1, True)


def test_own_hosts_do_not_match_a_name_that_merely_ends_alike() -> None:
    # notreceiver.example is someone else: its Postfix hop is the sender hop, with no build.
    assert sender([by("notreceiver.example"), EX16], own_hosts=["receiver.example"]) is None


def test_own_hosts_compare_case_insensitively_and_ignore_a_trailing_dot() -> None:
    found = sender([by("MX.Receiver.EXAMPLE."), EX16], own_hosts=["Receiver.Example."])
    assert found == ("15.1.2507.23", 1, True)


def test_own_hosts_given_as_one_string_is_one_host() -> None:
    assert sender([by("mx.receiver.example"), EX16], own_hosts="receiver.example") == (
        "15.1.2507.23",
        1,
        True,
    )


def test_an_empty_own_host_drops_nothing() -> None:
    assert sender([by("mx.receiver.example"), EX16], own_hosts=["", "."]) is None


def test_only_leading_receiver_hops_are_dropped() -> None:
    # A hop by the receiver further down (an earlier pass through it) does not hide the sender.
    found = sender([EX16, by("mx.receiver.example")], own_hosts=["receiver.example"])
    assert found == ("15.1.2507.23", 0, False)


@pytest.mark.parametrize(
    "host",
    [
        "outlook.com",
        "AM5EUR02FT012.mail.protection.outlook.com",
        "smtp.office365.com",
        "mail.outlook.cn",
        "CY1PR00MB0001.exchangelabs.com",
        "relay.microsoft.com",
    ],
)
def test_exchange_online_hosts_are_dropped(host: str) -> None:
    assert sender([by(host), EX16]) == ("15.1.2507.23", 1, True)


@pytest.mark.parametrize("host", ["mail.notoutlook.com", "outlook.com.evil.example"])
def test_names_that_only_resemble_exchange_online_are_not_dropped(host: str) -> None:
    assert sender([by(host), EX16]) is None


def test_an_exchange_online_build_is_dropped_whatever_the_host() -> None:
    online = (
        "from smtp.fabrikam.example (203.0.113.16) by relay.partner.example (198.51.100.1) with"
        " Microsoft SMTP Server id 15.20.7472.13; Mon, 4 Mar 2024 10:00:02 +0000"
    )
    assert sender([online, EX16]) == ("15.1.2507.23", 1, True)


def test_exchange_online_is_the_sender_when_not_skipped() -> None:
    online = (
        "from smtp.fabrikam.example (203.0.113.16) by AM5EUR02FT012.mail.protection.outlook.com"
        " (10.152.8.100) with Microsoft SMTP Server id 15.20.7472.13; Mon, 4 Mar 2024 10:00:02"
        " +0000"
    )
    found = find_sender([online, EX16], skip_exchange_online=False)
    assert found is not None
    assert (str(found.build), found.index, found.host, found.ip) == (
        "15.20.7472.13",
        0,
        "am5eur02ft012.mail.protection.outlook.com",
        "10.152.8.100",
    )
    assert found.matched is False  # no hop above it, no client


def test_a_hop_without_by_belongs_to_the_hop_below_and_is_dropped_with_it() -> None:
    received = [
        "(qmail 4242 invoked by uid 89); 4 Mar 2024 10:00:03 -0000",
        "with ECARTIS (v1.0.0; list dev); Mon, 4 Mar 2024 10:00:02 +0000",
        by("mx.receiver.example"),
        EX16,
    ]
    assert sender(received, own_hosts=["receiver.example"]) == ("15.1.2507.23", 3, True)


def test_an_address_only_by_belongs_to_the_hop_below() -> None:
    received = [
        "by 2002:a05:6a10:8f0e::1 with SMTP id d14csp1; Mon, 4 Mar 2024 02:00:03 -0800 (PST)",
        by("mx.google.com"),
        EX16,
    ]
    assert sender(received, own_hosts=["google.com"]) == ("15.1.2507.23", 2, True)


def test_a_hop_without_by_above_the_sender_is_never_the_sender_hop() -> None:
    # SPEC section 10: the list-manager line belongs to the hop below it, so the sender hop
    # is the first hop that has a by_host (the list-manager line used to end in None).
    received = ["with ECARTIS (v1.0.0; list dev); Mon, 4 Mar 2024 10:00:02 +0000", EX16]
    assert sender(received) == ("15.1.2507.23", 1, False)


def test_a_hop_without_by_with_a_build_is_never_the_sender_hop() -> None:
    # A forged hop with a compliant build but no writer does not hide the one below it.
    forged = "with Microsoft SMTP Server id 15.2.2562.20; Mon, 4 Mar 2024 10:00:02 +0000"
    received = [by("mx.receiver.example"), forged, EX16]
    assert sender(received, own_hosts=["receiver.example"]) == ("15.1.2507.23", 2, True)


def test_the_hop_above_that_has_a_writer_decides_matched() -> None:
    # The qmail line between belongs to the sender's writer; the receiver's hop above it is
    # the record of who connected.
    received = [by("mx.receiver.example"), "(qmail 4242 invoked by uid 89)", EX16]
    assert sender(received, own_hosts=["receiver.example"]) == ("15.1.2507.23", 2, True)


def test_a_lone_hop_without_by_is_no_evidence() -> None:
    assert sender(["(qmail 4242 invoked by uid 89); 4 Mar 2024 10:00:03 -0000"]) is None


def test_an_exchange_hop_written_under_an_address_only_name_is_never_the_sender_hop() -> None:
    # SPEC section 10: a `by` part that is only an address names no writer; the hop belongs
    # to the hop below it, and there is none.
    bare = (
        "from EX16.fabrikam.local (10.0.0.16) by 203.0.113.16 with Microsoft SMTP Server id"
        " 15.1.2507.23; Mon, 4 Mar 2024 11:00:00 +0100"
    )
    assert find_sender([by("mx.receiver.example"), bare], own_hosts=["receiver.example"]) is None
    found = find_sender([by("mx.receiver.example"), bare, EX16], own_hosts=["receiver.example"])
    assert found is not None
    assert (str(found.build), found.index) == ("15.1.2507.23", 2)


@pytest.mark.parametrize(
    ("client", "matched"),
    [
        ("SMTP.Fabrikam.Example.", True),
        ("203.0.113.16", True),
        ("[203.0.113.16]", True),
        # The client wins over the hop above, which does name the sender here.
        ("other.example", False),
        ("203.0.113.17", False),
    ],
)
def test_client_decides_matched_by_host_or_address(client: str, matched: bool) -> None:
    received = [by("mx.receiver.example"), EX16]
    found = sender(received, own_hosts=["receiver.example"], client=client)
    assert found == ("15.1.2507.23", 1, matched)


def test_ipv6_client_matches_a_differently_written_address() -> None:
    hop = (
        "from EXSE.adatum.example (2001:db8::10) by mail.adatum.example (2001:db8::25) with"
        " Microsoft SMTP Server id 15.2.2562.20; Tue, 2 Sep 2025 16:22:10 +0200"
    )
    found = find_sender([hop], client="2001:DB8:0:0:0:0:0:25")
    assert found is not None
    assert found.matched is True


def test_without_client_an_address_match_with_the_hop_above_is_enough() -> None:
    received = [by("mx.receiver.example", client="renamed.example", ip="203.0.113.16"), EX16]
    assert sender(received, own_hosts=["receiver.example"]) == ("15.1.2507.23", 1, True)


def test_without_client_a_different_host_and_address_above_do_not_match() -> None:
    received = [by("mx.receiver.example", client="relay.example", ip="198.51.100.200"), EX16]
    assert sender(received, own_hosts=["receiver.example"]) == ("15.1.2507.23", 1, False)


def test_sender_hop_on_top_without_client_is_not_matched() -> None:
    assert sender([EX16]) == ("15.1.2507.23", 0, False)


def test_evidence_carries_the_hop_it_came_from() -> None:
    found = find_sender([by("mx.receiver.example"), EX16], own_hosts=["receiver.example"])
    assert found == SenderEvidence(
        build=ExchangeBuild(15, 1, 2507, 23),
        host="smtp.fabrikam.example",
        ip="203.0.113.16",
        index=1,
        hop=parse_received(EX16),
        matched=True,
    )


def test_everything_dropped_gives_none() -> None:
    assert sender([by("mx.receiver.example")], own_hosts=["receiver.example"]) is None


# --- received_values --------------------------------------------------------------------------

MESSAGE = (
    "From alice@fabrikam.example Mon Mar  4 10:00:04 2024\r\n"
    "Return-Path: <alice@fabrikam.example>\r\n"
    "Received: from mx.receiver.example (mx.receiver.example [198.51.100.9])\r\n"
    "\tby store.receiver.example (Postfix) with LMTP id 9;\r\n"
    "\tMon, 4 Mar 2024 10:00:03 +0000\r\n"
    "Subject: Quarterly numbers\r\n"
    "received: from smtp.fabrikam.example (smtp.fabrikam.example [203.0.113.16])\r\n"
    " by mx.receiver.example (Postfix) with ESMTPS id 8;\r\n"
    " Mon, 4 Mar 2024 10:00:02 +0000\r\n"
    "X-Note: Received: inside another header\r\n"
    "RECEIVED: from EX16 (10.0.0.16) by smtp.fabrikam.example (203.0.113.16) with Microsoft"
    " SMTP Server id 15.1.2507.23; Mon, 4 Mar 2024 11:00:00 +0100\r\n"
    "\r\n"
    "Received: this line is in the body\r\n"
)
EXPECTED_VALUES = [
    "from mx.receiver.example (mx.receiver.example [198.51.100.9])\tby store.receiver.example"
    " (Postfix) with LMTP id 9;\tMon, 4 Mar 2024 10:00:03 +0000",
    "from smtp.fabrikam.example (smtp.fabrikam.example [203.0.113.16]) by mx.receiver.example"
    " (Postfix) with ESMTPS id 8; Mon, 4 Mar 2024 10:00:02 +0000",
    "from EX16 (10.0.0.16) by smtp.fabrikam.example (203.0.113.16) with Microsoft SMTP Server"
    " id 15.1.2507.23; Mon, 4 Mar 2024 11:00:00 +0100",
]


def test_received_values_from_text_are_unfolded_in_order_without_the_body() -> None:
    assert received_values(MESSAGE) == EXPECTED_VALUES
    assert received_values(MESSAGE.replace("\r\n", "\n")) == EXPECTED_VALUES


def test_received_values_from_bytes_match_text() -> None:
    assert received_values(MESSAGE.encode("ascii")) == EXPECTED_VALUES


@pytest.mark.parametrize("policy", [email.policy.compat32, email.policy.default])
def test_received_values_from_a_parsed_message_match_text(policy: email.policy.Policy) -> None:
    message = email.message_from_bytes(MESSAGE.encode("ascii"), policy=policy)
    assert received_values(message) == EXPECTED_VALUES


def test_received_values_decode_utf8_and_replace_invalid_bytes() -> None:
    raw = b"Received: from h\xc3\xb4te.example by mx\xff.example with ESMTP\r\n\r\nbody\r\n"
    assert received_values(raw) == ["from hôte.example by mx\ufffd.example with ESMTP"]


def test_received_values_turn_surrogate_escaped_text_back_into_characters() -> None:
    text = "Received: from h\udcc3\udcb4te.example by mx\udcff.example\n\n"
    assert received_values(text) == ["from hôte.example by mx\ufffd.example"]


def test_received_values_stop_at_a_line_that_is_no_header() -> None:
    text = "Received: from a by b\nthis is not a header\nReceived: from c by d\n"
    assert received_values(text) == ["from a by b"]


def test_received_values_without_a_blank_line_read_every_header() -> None:
    assert received_values("Subject: x\nReceived: from a by b") == ["from a by b"]


def test_received_values_of_a_message_without_received_is_empty() -> None:
    assert received_values(b"Subject: nothing here\r\n\r\nReceived: body\r\n") == []
    assert received_values(email.message_from_string("Subject: x\n\nbody\n")) == []


def test_received_values_feed_find_sender() -> None:
    values = received_values(MESSAGE)
    found = find_sender(values, own_hosts=["receiver.example"])
    assert found is not None
    assert (str(found.build), found.index, found.matched) == ("15.1.2507.23", 2, True)


def test_received_values_of_a_real_header_fixture() -> None:
    raw = (DATA / "ex2010-via-postfix.eml").read_bytes()
    values = received_values(raw)
    assert len(values) == 3
    found = find_sender(values, own_hosts=["receiver.example"])
    assert found is not None
    assert (str(found.build), found.host, found.ip, found.index, found.matched) == (
        "14.3.498.0",
        "mail.woodgrove.example",
        "192.0.2.11",
        1,
        True,
    )


# --- linear time on adversarial input ----------------------------------------------------------

MIB = 1 << 20
ADVERSARIAL = {
    "deep-parentheses": "(" * MIB,
    "deep-then-closed": "(" * (MIB // 2) + ")" * (MIB // 2),
    "many-by": "by " * (MIB // 3),
    "unclosed-exchange-comment": "with Microsoft SMTP Server (" + "x " * (MIB // 2),
    "dots": "." * MIB,
    "digits-and-dots-as-id": "with mapi id " + "1." * (MIB // 2),
    "address-like-words": "from x (" + "1.1.1.1.1 " * (MIB // 10) + ")",
    "semicolons": ";" * MIB,
    "empty-comments": "()" * (MIB // 2),
    "escapes-in-comments": "(\\(" * (MIB // 3),
    "endless-date": "x; " + "Mon " * (MIB // 4),
    "keywords": "from by with id via for " * (MIB // 24),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("value", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_adversarial_mebibyte_is_parsed_without_blowing_up(value: str) -> None:
    hop = parse_received(value)
    assert hop.build is None
    assert hop.date is None


# ---- SenderFinder: the receiver's settings checked once -------------------------------------


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: SenderFinder([None]), "own_hosts"),  # type: ignore[list-item]
        (lambda: SenderFinder(b"receiver.example"), "own_hosts"),  # type: ignore[arg-type]
        (lambda: SenderFinder(5), "own_hosts"),  # type: ignore[arg-type]
        (lambda: SenderFinder(skip_exchange_online=1), "skip_exchange_online"),  # type: ignore[arg-type]
    ],
)
def test_a_sender_finder_refuses_bad_settings_when_built(make: Any, name: str) -> None:
    with pytest.raises(InvalidValueError, match=name):
        make()


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda finder: finder.find(EX16), "received"),
        (lambda finder: finder.find([EX16, b"by x"]), "received"),
        (lambda finder: finder.find([EX16], client=5), "client"),
    ],
)
def test_a_sender_finder_refuses_bad_messages(call: Any, name: str) -> None:
    with pytest.raises(InvalidValueError, match=name):
        call(SenderFinder(["receiver.example"]))


def test_a_sender_finder_drops_the_receivers_hops_of_every_message() -> None:
    finder = SenderFinder("receiver.example")
    for _ in range(2):
        found = finder.find([by("mx.receiver.example"), EX16])
        assert found is not None
        assert (str(found.build), found.index) == ("15.1.2507.23", 1)


# ---- SenderFinder.build_and_host: the enforcer's lean path ----------------------------------

_HOP_POOL = [
    EX16,
    by("mx.receiver.example"),
    by("relay.receiver.example", client="mx.receiver.example"),
    by("smtp.fabrikam.example", client="ex.fabrikam.example"),
    "from EXMBX01.fabrikam.local ([10.1.2.7]) by EXHUB01.fabrikam.local ([10.1.2.3]) with mapi;"
    " Mon, 3 Nov 2025 08:59:59 +0100",
    "from AM0PR01MB1234.eurprd01.prod.exchangelabs.com (2603:10a6:208::1) by"
    " AM0PR01MB5678.eurprd01.prod.exchangelabs.com (2603:10a6:208::2) with Microsoft SMTP"
    " Server (version=TLS1_2) id 15.20.7452.49; Mon, 4 Mar 2024 10:00:00 +0000",
    "from mail.fabrikam.example by [203.0.113.9] with Microsoft SMTP Server id 8.3.83.6",
    "from x.example (x.example [192.0.2.1]) with ESMTP id 77; Mon, 4 Mar 2024 10:00:00 +0000",
    "by mail.fabrikam.example (Postfix, from userid 0) id 5A; Mon, 4 Mar 2024 10:00:00 +0000",
    "",
]


@settings(max_examples=300)
@given(
    st.lists(st.one_of(st.sampled_from(_HOP_POOL), st.text(max_size=60)), max_size=6),
    st.sampled_from([(), ("receiver.example",), ("fabrikam.example",)]),
    st.booleans(),
)
def test_build_and_host_is_what_find_finds(
    received: list[str], own_hosts: tuple[str, ...], skip_online: bool
) -> None:
    finder = SenderFinder(own_hosts, skip_exchange_online=skip_online)
    found = finder.find(received)
    expected = None if found is None else (found.build, found.host)
    assert finder.build_and_host(received) == expected


@pytest.mark.parametrize("case", VECTORS, ids=[case["name"] for case in VECTORS])
def test_build_and_host_agrees_with_every_shared_vector(case: dict[str, Any]) -> None:
    finder = SenderFinder(case["own_hosts"], skip_exchange_online=case["skip_exchange_online"])
    found = finder.find(case["received"], client=case["client"])
    expected = None if found is None else (found.build, found.host)
    assert finder.build_and_host(case["received"]) == expected


def test_build_and_host_refuses_what_find_refuses() -> None:
    with pytest.raises(InvalidValueError, match="received"):
        SenderFinder().build_and_host(EX16)
    with pytest.raises(InvalidValueError, match="received"):
        SenderFinder().build_and_host([EX16, b"by x"])  # type: ignore[list-item]
