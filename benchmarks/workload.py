"""The inputs every benchmark measures: a realistic header block, server states, connections.

Each input is built deterministically (a seeded :class:`random.Random`, a fixed instant), so
two runs measure the same work and the smoke test can check that the work is what it claims
to be (the header block's sender hop is worked out by hand below, not taken from tbes).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator

from tbes.compliance import Compliance
from tbes.enforcer import Connection
from tbes.ledger import Pause
from tbes.policy import ConnectorKind
from tbes.state import ServerState
from tbes.version import ExchangeBuild

__all__ = [
    "BUILDS",
    "EXPECTED_SENDER",
    "HEADER_BLOCK",
    "NOW",
    "OWN_HOSTS",
    "connection",
    "decide_cases",
    "received_for",
    "scale_state",
    "scale_states",
    "server_id",
    "tenant_of",
]

NOW = dt.datetime(2026, 11, 3, 9, 17, 31, 250_000, tzinfo=dt.UTC)
"""The instant the generated states are relative to (and decided at)."""

OWN_HOSTS = ("contoso.example",)
"""The receiving organisation: the receiver's own hops are under this name."""

# Eight hops, newest first, in the shapes real servers write them: the receiver's Postfix
# after an amavisd-new content filter, its Postfix MX (with Postfix's TLS comment), the
# sender's Exchange 2016 edge of the internet, a Frontend Transport hop, a mailbox-to-mailbox
# hop, an anonymous receive connector taking mail from an application server, and that
# server's own Postfix. Around them the headers Exchange, DKIM and a spam filter add, folded
# as they are on the wire (CRLF, continuation lines), ending with the empty line.
HEADER_BLOCK = (
    "Return-Path: <bob@fabrikam.example>\r\n"
    "Delivered-To: alice@contoso.example\r\n"
    "Received: from localhost (localhost [127.0.0.1])\r\n"
    "\tby mx1.contoso.example (Postfix) with ESMTP id 4bQm7d2Xk8z1xyz\r\n"
    "\tfor <alice@contoso.example>; Tue,  3 Nov 2026 10:17:31 +0100 (CET)\r\n"
    "X-Virus-Scanned: amavisd-new at contoso.example\r\n"
    "X-Spam-Flag: NO\r\n"
    "X-Spam-Score: -2.1\r\n"
    "X-Spam-Status: No, score=-2.1 tagged_above=-999 required=5\r\n"
    "\ttests=[BAYES_00=-1.9, DKIM_SIGNED=0.1, DKIM_VALID=-0.1, DKIM_VALID_AU=-0.1,\r\n"
    "\tSPF_HELO_NONE=0.001, SPF_PASS=-0.001] autolearn=ham autolearn_force=no\r\n"
    "Received: from mx1.contoso.example ([127.0.0.1])\r\n"
    "\tby mx1.contoso.example (mx1.contoso.example [127.0.0.1]) (amavisd-new, port 10024)\r\n"
    "\twith ESMTP id Xk2v9QpLm3aB; Tue,  3 Nov 2026 10:17:31 +0100 (CET)\r\n"
    "Received: from mail.fabrikam.example (mail.fabrikam.example [203.0.113.25])\r\n"
    "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n"
    "\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n"
    "\t(No client certificate requested)\r\n"
    "\tby mx1.contoso.example (Postfix) with ESMTPS id 4bQm7c6RtJz1abc\r\n"
    "\tfor <alice@contoso.example>; Tue,  3 Nov 2026 10:17:30 +0100 (CET)\r\n"
    "Authentication-Results: mx1.contoso.example (amavisd-new);\r\n"
    "\tdkim=pass (2048-bit key) header.d=fabrikam.example\r\n"
    "Authentication-Results: mx1.contoso.example; dmarc=pass (p=quarantine dis=none)\r\n"
    " header.from=fabrikam.example; spf=pass smtp.mailfrom=fabrikam.example\r\n"
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=fabrikam.example;\r\n"
    "\ts=selector1; t=1793697449; bh=4D7nN3w9JbH5xk2Qk5m0m4wQ3r7c0bq0zXz8v1Ykq6s=;\r\n"
    "\th=From:To:Subject:Date:Message-ID:MIME-Version:Content-Type;\r\n"
    "\tb=Qm9l3sYw3kqk2x0N1Lw5n6Hq7fR8yT2pV4cZ9bX1eA3gD5hJ7kL0mN2oP4qR6sT8uV0w\r\n"
    "\t Y2zA4bC6dE8fG0hI2jK4lM6nO8pQ0rS2tU4vW6xY8zA0bC2dE4fG6hI8jK0lM2nO4pQ6rS8\r\n"
    "\t tU0vW2xY4zA6bC8dE0fG2hI4jK6lM8nO0pQ2rS4tU6vW8xY0zA2bC4dE6fG8hI0jK2lM4nO6\r\n"
    "Received: from EXCH-FE01.fabrikam.local (10.20.1.11) by mail.fabrikam.example\r\n"
    " (203.0.113.25) with Microsoft SMTP Server (version=TLS1_2,\r\n"
    " cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.1.2507.39; Tue, 3 Nov\r\n"
    " 2026 10:17:29 +0100\r\n"
    "Received: from EXCH-MBX02.fabrikam.local (10.20.2.12) by EXCH-FE01.fabrikam.local\r\n"
    " (10.20.1.11) with Microsoft SMTP Server (version=TLS1_2,\r\n"
    " cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.1.2507.39 via Frontend\r\n"
    " Transport; Tue, 3 Nov 2026 10:17:29 +0100\r\n"
    "Received: from EXCH-MBX01.fabrikam.local (10.20.2.11) by EXCH-MBX02.fabrikam.local\r\n"
    " (10.20.2.12) with Microsoft SMTP Server (version=TLS1_2,\r\n"
    " cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.1.2507.39; Tue, 3 Nov 2026\r\n"
    " 10:17:28 +0100\r\n"
    "Received: from app01.fabrikam.local (10.20.5.20) by EXCH-MBX01.fabrikam.local\r\n"
    " (10.20.2.11) with Microsoft SMTP Server id 15.1.2507.39; Tue, 3 Nov 2026\r\n"
    " 10:17:27 +0100\r\n"
    "Received: from localhost (localhost [127.0.0.1])\r\n"
    "\tby app01.fabrikam.local (Postfix) with ESMTP id 4bQm7b1ZyQz5def\r\n"
    "\tfor <alice@contoso.example>; Tue,  3 Nov 2026 10:17:26 +0100 (CET)\r\n"
    "From: Bob Example <bob@fabrikam.example>\r\n"
    "To: Alice Example <alice@contoso.example>\r\n"
    "Subject: Quarterly figures for the review on Thursday\r\n"
    "Thread-Topic: Quarterly figures for the review on Thursday\r\n"
    "Thread-Index: AdpNq3WQ6eVfYQm1T5yB8w2pHkR7Zw==\r\n"
    "Date: Tue, 3 Nov 2026 09:17:26 +0000\r\n"
    "Message-ID: <a3f1c2d4e5b6479880a1b2c3d4e5f607@EXCH-MBX01.fabrikam.local>\r\n"
    "Accept-Language: en-GB, en-US\r\n"
    "Content-Language: en-GB\r\n"
    "X-MS-Has-Attach:\r\n"
    "X-MS-TNEF-Correlator:\r\n"
    "x-originating-ip: [10.20.7.41]\r\n"
    "X-MS-Exchange-Organization-AuthSource: EXCH-MBX01.fabrikam.local\r\n"
    "X-MS-Exchange-Organization-AuthAs: Internal\r\n"
    "X-MS-Exchange-Organization-AuthMechanism: 04\r\n"
    "X-MS-Exchange-Organization-SCL: -1\r\n"
    "X-MS-Exchange-Transport-EndToEndLatency: 00:00:02.8416913\r\n"
    'Content-Type: multipart/alternative; boundary="_000_a3f1c2d4e5b6479880a1b2c3_"\r\n'
    "MIME-Version: 1.0\r\n"
    "\r\n"
)

EXPECTED_SENDER = {
    "build": "15.1.2507.39",
    "host": "mail.fabrikam.example",
    "ip": "203.0.113.25",
    "index": 3,
    "matched": True,
}
"""The sender hop of :data:`HEADER_BLOCK`, worked out by hand from the SPEC (section 2).

Hops 0 to 2 are written *by* ``mx1.contoso.example`` (own host), so they are dropped; hop
3 is written by ``mail.fabrikam.example`` with Exchange 2016's ``id 15.1.2507.39``, and the
hop above it names ``mail.fabrikam.example`` ``[203.0.113.25]`` as its client: matched.
"""

# (build, share of servers): the mix the enforcer and scale benchmarks see. Compliant 2016,
# 2019 and SE, an outdated 2016 CU23 and an unsupported 2013 and 2010.
BUILDS: tuple[tuple[ExchangeBuild | None, float], ...] = (
    (ExchangeBuild(15, 1, 2507, 61), 0.30),
    (ExchangeBuild(15, 2, 1748, 39), 0.20),
    (ExchangeBuild(15, 2, 2562, 17), 0.15),
    (ExchangeBuild(15, 1, 2507, 39), 0.20),
    (ExchangeBuild(15, 0, 1497, 48), 0.05),
    (ExchangeBuild(14, 3, 513, 0), 0.05),
    (None, 0.05),  # a gateway in between: no Exchange evidence
)

_TENANTS = 1000
_OUTDATED = ExchangeBuild(15, 1, 2507, 39)
_UNSUPPORTED = (ExchangeBuild(15, 0, 1497, 48), ExchangeBuild(14, 3, 513, 0))
# What a remediated server runs now: 2016 updated in place, 2013 and 2010 migrated to SE.
_REMEDIES = {
    _OUTDATED: ExchangeBuild(15, 1, 2507, 61),
    _UNSUPPORTED[0]: ExchangeBuild(15, 2, 2562, 17),
    _UNSUPPORTED[1]: ExchangeBuild(15, 2, 2562, 17),
}


def server_id(index: int) -> str:
    """The id of the ``index``-th generated server."""
    return f"ex{index:07d}.t{index % _TENANTS:03d}.example"


def tenant_of(index: int) -> str:
    """The tenant of the ``index``-th generated server."""
    return f"tenant{index % _TENANTS:03d}"


def _build_of(index: int) -> ExchangeBuild | None:
    # A fixed point in [0, 1) per server, then the build whose share covers it.
    point = random.Random(index).random()
    for build, share in BUILDS:
        if point < share:
            return build
        point -= share
    return BUILDS[-1][0]


def received_for(index: int, build: ExchangeBuild | None = None) -> list[str]:
    """Received values, newest first, for a message from the ``index``-th server.

    Three hops: the receiver's MX, the sender's Exchange (or, without a build, a Postfix
    gateway whose hop carries none) and its mailbox server's Frontend Transport hop.
    """
    build = _build_of(index) if build is None else build
    host = server_id(index)
    top = (
        f"from {host} ({host} [198.51.100.{index % 250 + 1}]) by mx1.contoso.example "
        f"(Postfix) with ESMTPS id 4bQm7c{index:08d} for <alice@contoso.example>; "
        "Tue, 3 Nov 2026 10:17:30 +0100 (CET)"
    )
    if build is None:
        sender = (
            f"from mbx.{host} (mbx.{host} [10.0.0.2]) by {host} (Postfix) with ESMTP id "
            f"4bQm7d{index:08d}; Tue, 3 Nov 2026 10:17:29 +0100 (CET)"
        )
    else:
        sender = (
            f"from mbx.{host} (10.0.0.2) by {host} (198.51.100.{index % 250 + 1}) with "
            "Microsoft SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_"
            f"SHA384) id {build}; Tue, 3 Nov 2026 10:17:29 +0100"
        )
    inner = (
        f"from mbx.{host} (10.0.0.2) by mbx.{host} (10.0.0.2) with Microsoft SMTP Server "
        f"(version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id "
        f"{build or '15.1.2507.39'} via Frontend Transport; Tue, 3 Nov 2026 10:17:28 +0100"
    )
    return [top, sender, inner]


def connection(index: int) -> Connection:
    """The connection the ``index``-th server's messages arrive on (an on-premises connector)."""
    host = server_id(index)
    return Connection(
        host, tenant_of(index), ConnectorKind.ON_PREMISES, f"198.51.100.{index % 250 + 1}", host
    )


def scale_state(index: int, now: dt.datetime = NOW) -> ServerState:
    """A stored state for the ``index``-th server, as a deployment accumulates them.

    Compliant servers were never detected; most outdated and unsupported ones are in an
    episode that started up to 120 days before ``now``; one in five of those was remediated
    since, and one in ten has a pause.
    """
    rng = random.Random(index * 7919 + 1)
    build = _build_of(index)
    sid, tenant = server_id(index), tenant_of(index)
    if build is None:
        return ServerState(sid, tenant, None, Compliance.NOT_APPLICABLE, None, now, None)
    if build in _UNSUPPORTED:
        status = Compliance.UNSUPPORTED
    elif build == _OUTDATED:
        status = Compliance.OUTDATED
    else:
        return ServerState(sid, tenant, build, Compliance.COMPLIANT, None, now, None)
    first = now - dt.timedelta(minutes=rng.randrange(120 * 24 * 60))
    roll = rng.random()
    if roll < 0.2:  # remediated since: updated to a compliant build
        healed = first + (now - first) / 2
        return ServerState(
            sid, tenant, _REMEDIES[build], Compliance.COMPLIANT, first, healed, healed
        )
    pauses: tuple[Pause, ...] = ()
    if roll < 0.3:
        start = (now - dt.timedelta(days=rng.randrange(20))).date()
        pauses = (Pause(sid, start, rng.randrange(1, 40)),)
    return ServerState(sid, tenant, build, status, first, now, None, pauses)


def scale_states(start: int, stop: int, now: dt.datetime = NOW) -> Iterator[ServerState]:
    """:func:`scale_state` for every index in ``range(start, stop)``."""
    for index in range(start, stop):
        yield scale_state(index, now)


def decide_cases(count: int = 64) -> list[tuple[ServerState, dt.datetime]]:
    """``count`` (state, instant) pairs in the mix ``decide`` sees: mostly episodes.

    Every stage of the default table is present (episodes of 0 to 120 days), some paused,
    some remediated, some compliant; the instants fall on every minute of the hour, so
    block, throttle and accept windows are all taken.
    """
    cases = []
    for index in range(count):
        state = scale_state(index * 13)
        if state.first_detected is None:
            # Twice as many episodes as in the stored mix: decide's work is in episodes.
            state = scale_state(index * 13 + 3)
        at = NOW + dt.timedelta(minutes=index * 7, seconds=index)
        cases.append((state, at))
    return cases
