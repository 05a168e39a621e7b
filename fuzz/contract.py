"""The documented contract of tbes.received, checked on one input by every fuzz harness."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence

from tbes.received import Hop, SenderEvidence, find_sender, parse_received
from tbes.serde import converter

_BUILD_PROTOCOLS = ("microsoft smtp server", "mapi")


def check_hop(value: str) -> Hop:
    """Parse one value and assert every field keeps the promises of SPEC section 2."""
    hop = parse_received(value)
    assert isinstance(hop, Hop), hop
    assert parse_received(value) == hop, "parsing is not deterministic"
    for host in (hop.from_host, hop.by_host):
        assert host is None or (host == host.lower() and host and not host.endswith(".")), host
    for ip in (hop.from_ip, hop.by_ip):
        if ip is not None:
            assert "[" not in ip, ip
            assert "]" not in ip, ip
            ipaddress.ip_address(ip)  # raises if the parser let a non-address through
    if hop.build is not None:
        assert hop.protocol is not None, hop
        assert hop.protocol.lower() in _BUILD_PROTOCOLS, hop
    if hop.date is not None:
        assert hop.date.utcoffset() == dt.timedelta(0), hop.date
    assert converter.structure(converter.unstructure(hop), Hop) == hop
    return hop


def check_sender(
    values: Sequence[str], own_hosts: Sequence[str], client: str | None, skip_online: bool
) -> SenderEvidence | None:
    """Run find_sender and assert its result is consistent with the hops it came from."""
    hops = [check_hop(value) for value in values]
    found = find_sender(
        values, own_hosts=own_hosts, skip_exchange_online=skip_online, client=client
    )
    if found is None:
        return None
    assert isinstance(found, SenderEvidence), found
    assert 0 <= found.index < len(values), (found.index, len(values))
    assert found.hop == hops[found.index], "evidence hop is not the hop at its index"
    assert found.build == found.hop.build, "evidence build differs from its hop's build"
    assert (found.host, found.ip) == (found.hop.by_host, found.hop.by_ip), found
    assert isinstance(found.matched, bool), found.matched
    assert converter.structure(converter.unstructure(found), SenderEvidence) == found
    return found
