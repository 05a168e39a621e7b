"""Discovered servers: unmapped on-premises Exchange senders, merged, bounded, made rules.

A connection no ``[[connector]]`` rule maps is never enforced, but when its sender hop
carries an on-premises Exchange build the operator wants to know: it is probably a partner's
server that should have a rule. Each such message becomes a one-message
:class:`DiscoveredServer` (:func:`sighting`); :func:`merge` folds it into the stored record
of the same peer address; :func:`evicted` says which records a bounded table drops (the
oldest by last seen, then by address); :func:`suggest` groups the records by peer network
and writes a ready-to-paste ``[[connector]]`` rule for each group.

Decisions: a record is keyed by the peer address, the one thing the MTA vouches for (the
verified name comes from DNS, the sender host from a header). Suggestions group peers by
/24 (IPv4) or /64 (IPv6), but list only the addresses actually seen, never the whole
network, so a pasted rule never maps a stranger sharing the range. A suggested name is
built from the verified name's domain reduced to ``[a-z0-9-]``, so nothing read from DNS or
a message reaches the TOML raw. Pure: no I/O, no clock.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from tbes._checks import of_type, require_type
from tbes._instants import as_utc
from tbes.compliance import Compliance
from tbes.errors import InvalidBuildError, InvalidValueError
from tbes.version import ExchangeBuild

__all__ = [
    "MAX_NAME",
    "ConnectorSuggestion",
    "DiscoveredServer",
    "evicted",
    "from_json",
    "merge",
    "network_of",
    "sighting",
    "suggest",
    "to_json",
]

MAX_NAME = 253
"""The longest verified name or sender host kept (a DNS name's limit); longer ones are cut."""

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SAFE = re.compile(r"[^a-z0-9]+")
_MAX_RULE_NAME = 63


def _address(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise InvalidValueError(f"peer_ip must be a str, got {value!r:.80}")
    try:
        canonical = str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidValueError(f"peer_ip must be an IP address, got {value!r:.80}") from None
    if canonical != value:
        raise InvalidValueError(f"peer_ip must be in canonical form ({canonical}), got {value!r}")


def _name(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    require_type(value, str, attribute.name, optional=True)
    if isinstance(value, str) and not 0 < len(value) <= MAX_NAME:
        raise InvalidValueError(
            f"{attribute.name} must be 1 to {MAX_NAME} characters, got {value!r:.80}"
        )


def _utc(value: object) -> dt.datetime:
    return as_utc(value, "a discovered server's instant")


def _count(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 1:
        raise InvalidValueError(f"messages must be an int >= 1, got {value!r:.80}")


@attrs.frozen
class DiscoveredServer:
    """An unmapped on-premises Exchange sender, as seen from one peer address.

    ``peer_ip`` is the connecting address (canonical text, the record's key);
    ``verified_name`` the name the MTA verified by reverse and forward DNS (``None`` if it
    could not); ``sender_host`` the sender hop's ``by`` host (from a header: shown, never
    trusted); ``build`` the last build seen; ``first_status`` and ``last_status`` its
    compliance when first and last seen; ``messages`` how many messages were seen. Instants
    are brought to UTC; ``last_seen`` before ``first_seen`` raises
    :class:`~tbes.errors.InvalidValueError`.
    """

    peer_ip: str = attrs.field(validator=_address)
    verified_name: str | None = attrs.field(validator=_name)
    sender_host: str | None = attrs.field(validator=_name)
    build: ExchangeBuild = attrs.field(validator=of_type(ExchangeBuild))
    first_status: Compliance = attrs.field(validator=of_type(Compliance))
    last_status: Compliance = attrs.field(validator=of_type(Compliance))
    first_seen: dt.datetime = attrs.field(converter=_utc)
    last_seen: dt.datetime = attrs.field(converter=_utc)
    messages: int = attrs.field(validator=_count)

    def __attrs_post_init__(self) -> None:
        if self.last_seen < self.first_seen:
            raise InvalidValueError(
                f"{self.peer_ip}: last_seen {self.last_seen.isoformat()} is before first_seen "
                f"{self.first_seen.isoformat()}"
            )


def _cut(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip().rstrip(".").lower()[:MAX_NAME]
    return text or None


def sighting(
    *,
    peer_ip: str,
    verified_name: str | None,
    sender_host: str | None,
    build: ExchangeBuild,
    status: Compliance,
    at: dt.datetime,
) -> DiscoveredServer:
    """The record of one message: ``peer_ip`` in any form :mod:`ipaddress` reads.

    Names are lower-cased without a trailing dot and cut to :data:`MAX_NAME` characters (a
    forged header may be longer); an empty name is ``None``. Wrong values raise
    :class:`~tbes.errors.InvalidValueError` naming them.
    """
    try:
        address = str(ipaddress.ip_address(peer_ip))
    except ValueError:
        raise InvalidValueError(f"peer_ip must be an IP address, got {peer_ip!r:.80}") from None
    for name, value in (("verified_name", verified_name), ("sender_host", sender_host)):
        require_type(value, str, name, optional=True)
    return DiscoveredServer(
        address, _cut(verified_name), _cut(sender_host), build, status, status, at, at, 1
    )


def merge(old: DiscoveredServer | None, new: DiscoveredServer) -> DiscoveredServer:
    """``new`` folded into ``old``, the record of the same peer (``None``: ``new`` itself).

    The earlier first sighting gives ``first_seen`` and ``first_status``; the later last
    sighting (``new`` on a tie) gives ``last_seen``, ``last_status``, the build and the
    names (a verified name is kept when the later one has none); messages add up. Records
    of two peers raise :class:`~tbes.errors.InvalidValueError`.
    """
    if old is None:
        return new
    if old.peer_ip != new.peer_ip:
        raise InvalidValueError(f"cannot merge the records of {old.peer_ip} and {new.peer_ip}")
    first = new if new.first_seen < old.first_seen else old
    last = old if old.last_seen > new.last_seen else new
    other = new if last is old else old
    return DiscoveredServer(
        new.peer_ip,
        last.verified_name or other.verified_name,
        last.sender_host,
        last.build,
        first.first_status,
        last.last_status,
        first.first_seen,
        last.last_seen,
        old.messages + new.messages,
    )


def evicted(records: Iterable[DiscoveredServer], max_servers: int) -> set[str]:
    """The peers a table of ``records`` drops to keep at most ``max_servers``.

    The oldest by ``last_seen`` go first; on a tie, the smaller address text first (any
    fixed order would do; this one is cheap in SQL too).
    """
    if type(max_servers) is not int or max_servers < 1:
        raise InvalidValueError(f"max_servers must be an int >= 1, got {max_servers!r:.80}")
    ordered = sorted(records, key=lambda each: (each.last_seen, each.peer_ip))
    return {each.peer_ip for each in ordered[: max(0, len(ordered) - max_servers)]}


# ---- the stored form -------------------------------------------------------------------------


def to_json(record: DiscoveredServer) -> str:
    """The record as the JSON text the stores keep."""
    data = {
        "peer_ip": record.peer_ip,
        "verified_name": record.verified_name,
        "sender_host": record.sender_host,
        "build": str(record.build),
        "first_status": record.first_status.value,
        "last_status": record.last_status.value,
        "first_seen": record.first_seen.isoformat(),
        "last_seen": record.last_seen.isoformat(),
        "messages": record.messages,
    }
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def from_json(text: str) -> DiscoveredServer:
    """The record stored as ``text``; anything unreadable raises InvalidValueError."""
    try:
        data: Any = json.loads(text)
        if not isinstance(data, Mapping):
            raise InvalidValueError("not a JSON object")
        return DiscoveredServer(
            peer_ip=data["peer_ip"],
            verified_name=data["verified_name"],
            sender_host=data["sender_host"],
            build=ExchangeBuild.parse(data["build"]),
            first_status=Compliance(data["first_status"]),
            last_status=Compliance(data["last_status"]),
            first_seen=dt.datetime.fromisoformat(data["first_seen"]),
            last_seen=dt.datetime.fromisoformat(data["last_seen"]),
            messages=data["messages"],
        )
    except (InvalidValueError, InvalidBuildError):
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise InvalidValueError(f"not a discovered server record: {error!r:.120}") from None


# ---- suggestions -----------------------------------------------------------------------------


def network_of(peer_ip: str) -> _Network:
    """The network a peer is grouped by: its /24 (IPv4) or /64 (IPv6)."""
    address = ipaddress.ip_address(peer_ip)
    prefix = 24 if address.version == 4 else 64
    return ipaddress.ip_network(f"{address}/{prefix}", strict=False)


@attrs.frozen
class ConnectorSuggestion:
    """A ``[[connector]]`` rule for the discovered servers of one peer network.

    ``name`` is safe as it stands (``[a-z0-9-]``, unique among the suggestions and the
    ``taken`` names :func:`suggest` was given); ``network`` is the /24 or /64 the peers
    share; ``servers`` are their records, by address.
    """

    name: str
    network: _Network
    servers: tuple[DiscoveredServer, ...]

    @property
    def addresses(self) -> tuple[str, ...]:
        """The peers' addresses as host networks (``/32`` or ``/128``), the rule's networks."""
        return tuple(str(ipaddress.ip_network(each.peer_ip)) for each in self.servers)

    def toml(self) -> str:
        """The rule as TOML, ready to paste into the configuration (a comment above it)."""
        messages = sum(each.messages for each in self.servers)
        last = max(each.last_seen for each in self.servers)
        builds = ", ".join(sorted({str(each.build) for each in self.servers}))
        statuses = ", ".join(sorted({each.last_status.value for each in self.servers}))
        count = len(self.servers)
        networks = ", ".join(_toml_string(each) for each in self.addresses)
        return (
            f"# {count} Exchange server{'s' if count != 1 else ''} in {self.network}: "
            f"{messages} message{'s' if messages != 1 else ''}, last seen "
            f"{last:%Y-%m-%d %H:%M} UTC, build {builds}, {statuses}.\n"
            "# Check the tenant, and widen networks to the sender's whole range if you know it.\n"
            "[[connector]]\n"
            f"name = {_toml_string(self.name)}\n"
            'kind = "on_premises"\n'
            f"tenant = {_toml_string(self.name)}\n"
            f"networks = [{networks}]\n"
        )


def suggest(
    records: Iterable[DiscoveredServer], *, taken: Iterable[str] = ()
) -> list[ConnectorSuggestion]:
    """One :class:`ConnectorSuggestion` per peer network of ``records``, by network.

    Each name is the most common verified domain of the group (the verified name without
    its first label when it has three or more; ties go to the first alphabetically),
    reduced to ``[a-z0-9-]`` and cut to 63 characters; a group with no verified name is
    named after its network (``discovered-203-0-113-0``). A name already in ``taken`` (the
    configuration's connector names, compared case-insensitively) or given to an earlier
    group gets ``-2``, ``-3``, ...
    """
    groups: dict[_Network, list[DiscoveredServer]] = {}
    for record in records:
        groups.setdefault(network_of(record.peer_ip), []).append(record)
    used = {name.casefold() for name in taken}
    suggestions = []
    for network in sorted(groups, key=lambda net: (net.version, net.network_address)):
        servers = tuple(
            sorted(groups[network], key=lambda each: ipaddress.ip_address(each.peer_ip))
        )
        base = _group_name(network, servers)
        name, number = base, 1
        while name in used:
            number += 1
            suffix = f"-{number}"
            name = base[: _MAX_RULE_NAME - len(suffix)] + suffix
        used.add(name)
        suggestions.append(ConnectorSuggestion(name, network, servers))
    return suggestions


def _group_name(network: _Network, servers: tuple[DiscoveredServer, ...]) -> str:
    domains = Counter(
        _safe(_domain(each.verified_name)) for each in servers if each.verified_name is not None
    )
    domains.pop("", None)
    if domains:
        return min(domains, key=lambda name: (-domains[name], name))
    return _safe(f"discovered-{network.network_address}") or "discovered"


def _domain(name: str) -> str:
    labels = name.split(".")
    return ".".join(labels[1:]) if len(labels) >= 3 else name


def _safe(text: str) -> str:
    return _SAFE.sub("-", text.lower()).strip("-")[:_MAX_RULE_NAME].strip("-")


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string: anything but printable ASCII as a ``\\u`` escape."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\' or not 0x20 <= code < 0x7F:
            # Surrogates are no Unicode scalar values, which TOML's escapes must be.
            out.append("\\uFFFD" if 0xD800 <= code < 0xE000 else f"\\U{code:08X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
