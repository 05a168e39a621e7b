"""Exemptions: the operator's decision to accept a server outside the pause quota.

An :class:`Exemption` is configuration, not stored state: it names the servers it covers
(by connector, server id or host name, network) and the days it holds, ``[since, until)``
in UTC, with the reason people see. While it holds, the server is accepted and its
enforcement clock stands still, exactly as under a pause, but nothing is charged to a
quota; so when it ends the server resumes where it stood. :func:`~tbes.decision.decide`
takes the exemptions of the server it decides (``exemptions=``) and stays pure: the spans
are worked out from the exemptions alone, never from the clock.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

import attrs

from tbes._instants import midnight
from tbes.errors import InvalidValueError

__all__ = ["ENDING_NOTICE", "Exemption", "exempt_spans"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_START = dt.datetime.min.replace(tzinfo=dt.UTC)
_END = dt.datetime.max.replace(tzinfo=dt.UTC)

ENDING_NOTICE = dt.timedelta(days=7)
"""How long before an exemption ends people are warned (``EXEMPTION_ENDING``)."""


def _text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValueError(f"{attribute.name} must be a non-empty string, got {value!r:.80}")


def _optional_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _text(instance, attribute, value)


def _day(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (type(value) is not dt.date):
        raise InvalidValueError(f"{attribute.name} must be a date or None, got {value!r:.80}")


def _network(value: object) -> _Network | None:
    if value is None or isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise InvalidValueError(
            f"network must be a CIDR network such as '203.0.113.0/24', got {value!r:.80}"
        ) from None


def _server(value: object) -> object:
    # A host name is compared as MTAs and the identity rules write it: lower case, no dot.
    if not isinstance(value, str) or "/" in value:
        return value  # checked by the validator
    return value.strip().rstrip(".").lower() or value


@attrs.frozen
class Exemption:
    """An exemption from enforcement: which servers, from when to when, and why.

    ``connector`` is a connector rule's ``name``; ``server`` a server id (``ID/HOST`` or a
    connector-level id) or, with ``connector``, the sending server's host name (the server
    of that host behind the connector: the id ``ID/host``, ``ID`` being the rule's
    ``server_id``, else its ``name``); ``network`` a CIDR network of the
    peer's address. Every criterion given must match, and at least one is needed.
    ``since`` is the first exempt day (``None``: since ever), ``until`` the first day
    enforced again, at 00:00 UTC (``None``: no end). Wrong values raise
    :class:`~tbes.errors.InvalidValueError`.
    """

    reason: str = attrs.field(validator=_text)
    until: dt.date | None = attrs.field(default=None, validator=_day)
    since: dt.date | None = attrs.field(default=None, validator=_day)
    connector: str | None = attrs.field(default=None, validator=_optional_text)
    server: str | None = attrs.field(default=None, converter=_server, validator=_optional_text)
    network: _Network | None = attrs.field(default=None, converter=_network)

    def __attrs_post_init__(self) -> None:
        if self.connector is None and self.server is None and self.network is None:
            raise InvalidValueError(
                "an exemption names no connector, server or network: it would exempt everything"
            )
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise InvalidValueError(
                f"an exemption must end after it starts: since {self.since}, until {self.until}"
            )

    @property
    def start(self) -> dt.datetime:
        """The first exempt instant (the calendar's start when there is no ``since``)."""
        return _START if self.since is None else midnight(self.since)

    @property
    def end(self) -> dt.datetime:
        """The first instant enforced again (the calendar's end when there is no ``until``)."""
        return _END if self.until is None else midnight(self.until)

    def covers(self, at: dt.datetime) -> bool:
        """Whether the exemption holds at the instant ``at``."""
        return self.start <= at < self.end

    def applies(
        self, server_id: str, *, connector: str | None = None, peer_ip: str | None = None
    ) -> bool:
        """Whether it covers ``server_id``, reached through ``connector`` from ``peer_ip``.

        A network criterion never matches without a peer address (reports have none).
        """
        if self.connector is not None and (
            connector is None or connector.casefold() != self.connector.casefold()
        ):
            return False
        server = self.server
        # A host name names the server behind the connector it was reached through: the
        # host part of its id, ID/HOST, whose ID is the rule's ``server_id`` when it has one,
        # not always the ``connector`` name compared above.
        if (
            server is not None
            and server_id != server
            and (connector is None or "/" in server or server_id.rpartition("/")[2] != server)
        ):
            return False
        if self.network is not None:
            try:
                address = ipaddress.ip_address(peer_ip or "")
            except ValueError:
                return False
            if address not in self.network:
                return False
        return True

    def describe(self) -> str:
        """How reports say it: ``exempt until 2027-03-01: migration partner``."""
        until = "" if self.until is None else f" until {self.until.isoformat()}"
        return f"exempt{until}: {self.reason}"


def exempt_spans(exemptions: tuple[Exemption, ...]) -> tuple[tuple[dt.datetime, dt.datetime], ...]:
    """The exempt instants as sorted, disjoint ``[start, end)`` spans (touching ones merged)."""
    spans: list[tuple[dt.datetime, dt.datetime]] = []
    for start, end in sorted((e.start, e.end) for e in exemptions):
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return tuple(spans)
