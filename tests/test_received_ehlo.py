"""The client's EHLO name cannot hide the Exchange build (issue 13, item 1).

The word after ``from`` is the name the client chose in EHLO, and the word after ``by`` the
name the writer chose: both are names whatever they spell (SPEC section 10, positional
clauses). Before, an EHLO of ``with`` lost the hop's build and an EHLO of ``by`` its
writer, and two hops the client wrote below its real one (a fake receiver hop and a forged
Exchange SE hop) then passed a server at stage 8 as compliant and remediated it.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tbes.catalog import Catalog
from tbes.decision import Action
from tbes.enforcer import Connection, Enforcer
from tbes.policy import DEFAULT_POLICY, ConnectorKind
from tbes.received import find_sender, parse_received
from tbes.store import MemoryStore

KEYWORDS = ["from", "by", "with", "id", "via", "for"]
EHLO_WORDS = [
    *KEYWORDS,
    *(word.upper() for word in KEYWORDS),
    *(word.title() for word in KEYWORDS),
    "wItH",
    "bY",
]
SERVER = "ex2010.fabrikam.example"
REAL_BUILD = "14.3.439.0"  # Exchange 2010 SP3: long out of support
FORGED_BUILD = "15.2.2562.20"  # Exchange SE RTM


def real_hop(ehlo: str) -> str:
    """The hop the Exchange 2010 server wrote on taking the message from a client."""
    return (
        f"from {ehlo} (10.0.0.5) by {SERVER} (10.0.0.1) with Microsoft SMTP Server id"
        f" {REAL_BUILD}; Mon, 5 Jan 2026 10:59:58 +0000"
    )


def forged_stack(ehlo: str) -> list[str]:
    """The receiver's hop, the real hop, then two hops the client wrote itself."""
    return [
        f"from {SERVER} ({SERVER} [192.0.2.10]) by mx.receiver.example (Postfix) with ESMTPS"
        " id 4QxYz; Mon, 5 Jan 2026 11:00:00 +0000",
        real_hop(ehlo),
        "from x.fabrikam.example (x.fabrikam.example [10.0.0.9]) by mx.receiver.example"
        " (Postfix) with ESMTPS id 1A; Mon, 5 Jan 2026 10:59:57 +0000",
        f"from y.fabrikam.example (10.0.0.8) by {SERVER} (10.0.0.1) with Microsoft SMTP Server"
        f" id {FORGED_BUILD}; Mon, 5 Jan 2026 10:59:56 +0000",
    ]


@pytest.mark.parametrize("ehlo", EHLO_WORDS)
def test_an_ehlo_keyword_is_the_from_name_and_the_hop_keeps_its_build(ehlo: str) -> None:
    hop = parse_received(real_hop(ehlo))
    assert hop.from_host == ehlo.lower()
    assert (hop.from_ip, hop.by_host, hop.by_ip) == ("10.0.0.5", SERVER, "10.0.0.1")
    assert (hop.protocol, str(hop.build)) == ("Microsoft SMTP Server", REAL_BUILD)


@pytest.mark.parametrize("name", EHLO_WORDS)
def test_a_keyword_written_as_the_by_name_is_the_writer(name: str) -> None:
    hop = parse_received(
        f"from a.example (192.0.2.1) by {name} (10.0.0.1) with Microsoft SMTP Server id"
        f" {REAL_BUILD}; Mon, 5 Jan 2026 10:59:58 +0000"
    )
    assert (hop.from_host, hop.by_host, hop.by_ip) == ("a.example", name.lower(), "10.0.0.1")
    assert str(hop.build) == REAL_BUILD


def test_keywords_after_the_names_still_open_their_clauses() -> None:
    hop = parse_received(
        "from by by with with Microsoft SMTP Server (TLS) id 15.0.1497.2 via Frontend"
        " Transport; Mon, 5 Jan 2026 10:59:58 +0000"
    )
    assert (hop.from_host, hop.by_host) == ("by", "with")
    assert (hop.protocol, hop.tls, str(hop.build), hop.via) == (
        "Microsoft SMTP Server",
        "TLS",
        "15.0.1497.2",
        "Frontend Transport",
    )


@pytest.mark.parametrize("ehlo", EHLO_WORDS)
def test_the_forged_stack_gives_the_real_old_build(ehlo: str) -> None:
    found = find_sender(forged_stack(ehlo), own_hosts=["receiver.example"])
    assert found is not None
    assert (str(found.build), found.host, found.index, found.matched) == (
        REAL_BUILD,
        SERVER,
        1,
        True,
    )


@pytest.mark.parametrize("ehlo", ["by", "BY", "with", "WITH", "id"])
def test_the_forged_stack_neither_passes_nor_remediates_a_server_at_stage_8(ehlo: str) -> None:
    detected = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)
    clock = [detected]
    store = MemoryStore()
    enforcer = Enforcer(
        store,
        DEFAULT_POLICY,
        Catalog.default(),
        clock=lambda: clock[0],
        own_hosts=["receiver.example"],
    )
    conn = Connection(SERVER, "fabrikam", ConnectorKind.ON_PREMISES, peer_ip="192.0.2.10")
    first = enforcer.check(conn, forged_stack("mail.fabrikam.example"))
    assert first.stage is not None
    assert first.stage.number == 1
    clock[0] = detected + dt.timedelta(days=95)  # stage 8 blocks every minute
    decision = enforcer.check(conn, forged_stack(ehlo))
    assert decision.action is Action.BLOCK
    assert decision.stage is not None
    assert decision.stage.number == 8
    stored = store.get(SERVER)
    assert stored is not None
    assert stored.value.first_detected == detected
    assert stored.value.compliant_since is None
    assert str(stored.value.build) == REAL_BUILD
