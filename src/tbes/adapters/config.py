"""Operator configuration of the adapters: who is connecting, and how to fail.

An MTA adapter knows only the connection: the peer's IP address, its verified host name
and the subject of its TLS client certificate. The operator's configuration maps these to a
connector kind, a server id and a tenant (docs/postfix.md: identity comes from the
connection, never from headers). Rules are tried in order; the first whose every given
criterion matches wins. Each rule has a unique ``name``, the connector's identity, chosen by
the operator so that it never changes under the server's feet: it is the server id a
connection through the rule gets unless the rule sets ``server_id`` (a v1 rule with only a
``server_id`` takes it as its name, so stored states keep their keys). A connection no rule
matches is never enforced: it gets the connector kind ``INTERNET``, which no policy preset
enforces. (v1's ``unmatched_kind`` is gone: it enforced peers named after their reverse DNS
or address, so a server that changed either started again at stage 1.)

``mode = "monitor"`` (at the top level for every connector, or in a ``[[connector]]``)
observes, stores, reports and announces everything as ``mode = "enforce"`` (the default)
does, but accepts every connection. ``[[exemption]]`` entries accept the servers they name
(by ``connector``, ``server`` or ``network``) with a ``reason`` and an optional ``until``
(and ``since``) date, outside the pause quota (docs/operator-controls.md). ``[discovery]``
(``enabled``, ``max_servers``, ``flush_seconds``) records the unmapped on-premises Exchange
senders (docs/discovery.md).

``[[notifier]]`` tables (``log``, ``webhook``, ``email``) name who is told of events, the
``[notifications]`` table when and for how long, and a ``[[connector]]`` may add its own
``recipients`` and ``info_url`` (docs/notifications.md; :func:`make_receivers`).

The file format is TOML read by :mod:`tomllib`; unknown keys are errors, because a typo in a
security setting must not pass silently. ``[testing] fixed_time`` freezes the clock, so that
tests (and demonstrations) can place a server in any stage at any minute; it is not meant
for production.

Example::

    tenant = "contoso"
    own_hosts = ["mx.contoso.example"]
    fail_closed = false
    check_timeout = 2.0                  # seconds per check, retries included
    policy = "exchange_online"          # Microsoft's dated phases (the default)
    catalog = "/etc/tbes/catalog.json"   # optional: written by `tbes catalog import`

    [[connector]]
    name = "fabrikam-edge"
    kind = "on_premises"
    tenant = "fabrikam"
    networks = ["203.0.113.0/28"]
    hosts = ["mail.fabrikam.example"]
    tls_subjects = ["mail.fabrikam.example"]
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import math
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from tbes.catalog import Catalog
from tbes.decision import Decision
from tbes.enforcer import Connection, Enforcer, utc_now
from tbes.errors import (
    AdapterConfigError,
    CatalogError,
    InvalidValueError,
    NaiveDatetimeError,
    PolicyError,
)
from tbes.exemption import Exemption
from tbes.identity import Identity
from tbes.notifiers import Notifier

if TYPE_CHECKING:
    from tbes.outbox import Receiver
from tbes.policy import ConnectorKind, Policy
from tbes.store._deadline import DEFAULT_CHECK_TIMEOUT
from tbes.store._discovery_queue import (
    DEFAULT_FLUSH_SECONDS,
    DEFAULT_MAX_SERVERS,
    DiscoveryQueue,
)
from tbes.store.protocol import StateStore

__all__ = [
    "MODES",
    "NOTIFIER_TYPES",
    "AdapterConfig",
    "AdapterConfigError",
    "Checker",
    "ConnectorRule",
    "DiscoverySettings",
    "NotificationSettings",
    "NotifierSpec",
    "load_config",
    "make_discovery",
    "make_enforcer",
    "make_receivers",
    "normalise_host",
    "normalise_ip",
    "normalise_subject",
    "parse_config",
]

_log = logging.getLogger(__name__)
_REQUIRED = object()
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# What MTAs write for a client whose name they could not verify.
_NO_NAME = frozenset({"", "unknown"})

MODES = ("enforce", "monitor")
"""The modes of a connector: ``enforce`` answers what enforcement decides, ``monitor``
observes and reports alike but accepts every connection."""


class Checker(Protocol):
    """What an adapter needs from an :class:`~tbes.enforcer.Enforcer`: ``check``."""

    def check(self, conn: Connection, received: Sequence[str]) -> Decision:
        """Decide for a message from ``conn`` with these Received values, top first."""
        ...


# ---- normalisation of what an MTA reports -------------------------------------------------


def normalise_ip(value: str | None) -> str | None:
    """The peer address in canonical form, or ``None`` if ``value`` is not an IP address.

    Accepts what MTAs write: ``[192.0.2.1]``, ``IPv6:2001:db8::1``, IPv4-mapped IPv6
    (given as the IPv4 address), surrounding white space.
    """
    address = _parse_address(value)
    return None if address is None else str(address)


def _parse_address(value: str | None) -> _Address | None:
    if value is None:
        return None
    text = value.strip().removeprefix("[").removesuffix("]")
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalise_host(value: str | None) -> str | None:
    """The peer's verified host name lower-cased without a trailing dot; ``None`` if unknown.

    ``unknown`` (Postfix, Sendmail) and an address literal such as ``[192.0.2.1]`` mean the
    MTA could not verify a name.
    """
    if value is None:
        return None
    text = value.strip().rstrip(".").lower()
    if text in _NO_NAME or text.startswith("["):
        return None
    return text


def normalise_subject(value: str | None) -> str | None:
    """A TLS client certificate subject with surrounding white space removed; ``None`` if empty."""
    if value is None:
        return None
    text = value.strip()
    return text or None


# ---- rules ---------------------------------------------------------------------------------


def _to_networks(values: Iterable[str | _Network]) -> tuple[_Network, ...]:
    networks: list[_Network] = []
    for value in values:
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(value)
            continue
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise AdapterConfigError(
                f"not an IP address or CIDR network: {value!r} (write e.g. '203.0.113.0/24')"
            ) from None
    return tuple(networks)


def _to_hosts(values: Iterable[str]) -> tuple[str, ...]:
    hosts = []
    for value in values:
        text = str(value).strip().rstrip(".").lower()
        if not text or text == ".":
            raise AdapterConfigError(f"empty host name in {list(values)!r}")
        hosts.append(text)
    return tuple(hosts)


def _to_subjects(values: Iterable[str]) -> tuple[str, ...]:
    subjects = []
    for value in values:
        text = str(value).strip()
        if not text:
            raise AdapterConfigError(f"empty TLS subject in {list(values)!r}")
        subjects.append(text)
    return tuple(subjects)


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _spec_tuple(values: Iterable[NotifierSpec]) -> tuple[NotifierSpec, ...]:
    return tuple(values)


def _non_empty_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise AdapterConfigError(f"{attribute.name} must be a non-empty string, got {value!r}")


def _optional_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _non_empty_text(instance, attribute, value)


def _mode(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in MODES:
        raise AdapterConfigError(f"mode = {value!r}: write one of {', '.join(map(repr, MODES))}")


def _has_criterion(rule: ConnectorRule) -> None:
    if not (rule.networks or rule.hosts or rule.tls_subjects):
        raise AdapterConfigError(
            f"connector rule {rule.name!r} names no "
            "networks, hosts or tls_subjects: it would match every connection"
        )


def _to_identity(value: object) -> Identity | None:
    if value is None or isinstance(value, Identity):
        return value
    try:
        return Identity(str(value).strip().lower())
    except ValueError:
        raise AdapterConfigError(
            f"identity = {value!r} is not 'server' (a state per sending server) or "
            "'connector' (one state for the connector)"
        ) from None


def _no_slash(rule: ConnectorRule) -> None:
    if "/" in rule.connector_id:
        raise AdapterConfigError(
            f"connector rule {rule.connector_id!r}: a name with '/' cannot have server "
            "identity ('/' separates the connector from the server): rename it, or set "
            'identity = "connector"'
        )


def _v1_name(rule: ConnectorRule) -> str:
    # A v1 rule named its server only: that id becomes the name, so its states keep their key.
    return rule.server_id or ""


def _check_name(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise AdapterConfigError(f"name must be a string, got {value!r}")
    if not value.strip():
        raise AdapterConfigError(
            'connector rule has no name: add name = "..." (a stable name of your choosing, '
            "unique among the rules: it identifies the connector and names its server in "
            "the store)"
        )


@attrs.frozen
class ConnectorRule:
    """One operator rule: which peers it matches and what connector, tenant and id they get.

    ``networks`` are CIDR networks of the peer address; ``hosts`` are verified peer host
    names, exact, or every subdomain when written with a leading dot (``.fabrikam.example``);
    ``tls_subjects`` are TLS client certificate subjects, compared case-insensitively. A
    rule matches when each kind of criterion it lists matches (any one entry of a list is
    enough). ``name`` is the connector's identity, unique among the rules (default: a v1
    ``server_id``; a rule with neither raises :class:`AdapterConfigError`). The server a
    connection through the rule comes from is ``server_id`` when set, else ``name``: never
    the peer's reverse DNS name or address, which change. ``mode`` (``"enforce"`` or
    ``"monitor"``) overrides the configuration's ``mode`` for this connector; ``None``
    follows it. ``identity`` says what the rule's stored states stand for: ``"server"``
    gives each Exchange server behind the connector its own state, ``ID/HOST`` (the sender
    hop's ``by`` host), ``"connector"`` one state for the whole connector, keyed ``ID``
    (earlier versions' behaviour); ``None`` follows :attr:`AdapterConfig.identity`. The id
    of a rule with ``server`` identity may not contain ``/``, which separates it from the
    host.
    """

    kind: ConnectorKind = attrs.field(validator=attrs.validators.instance_of(ConnectorKind))
    tenant: str = attrs.field(validator=_non_empty_text)
    server_id: str | None = attrs.field(default=None, validator=_optional_text)
    networks: tuple[_Network, ...] = attrs.field(default=(), converter=_to_networks)
    hosts: tuple[str, ...] = attrs.field(default=(), converter=_to_hosts)
    tls_subjects: tuple[str, ...] = attrs.field(default=(), converter=_to_subjects)
    name: str = attrs.field(default=attrs.Factory(_v1_name, takes_self=True), validator=_check_name)
    mode: str | None = attrs.field(default=None, validator=attrs.validators.optional(_mode))
    identity: Identity | None = attrs.field(default=None, converter=_to_identity)
    # docs/notifications.md: who hears of this connector's servers, and where to read more.
    recipients: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    info_url: str | None = attrs.field(default=None, validator=_optional_text)

    def __attrs_post_init__(self) -> None:
        _has_criterion(self)
        if self.identity is Identity.SERVER:
            _no_slash(self)

    @property
    def connector_id(self) -> str:
        """The id of a connection through this rule: ``server_id``, else ``name``.

        With ``server`` identity it is the prefix of its servers' ids, ``ID/HOST``.
        """
        return self.server_id or self.name

    def matches(self, address: _Address | None, host: str | None, subject: str | None) -> bool:
        """Whether a peer with this normalised address, host name and TLS subject matches."""
        if self.networks and (address is None or not any(address in n for n in self.networks)):
            return False
        if self.hosts and (host is None or not any(_host_matches(host, h) for h in self.hosts)):
            return False
        if self.tls_subjects:
            wanted = {s.casefold() for s in self.tls_subjects}
            if subject is None or subject.casefold() not in wanted:
                return False
        return True


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("."):
        return host.endswith(pattern)
    return host == pattern


# ---- the configuration ---------------------------------------------------------------------


def _aware(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, dt.datetime):
        raise AdapterConfigError(f"{attribute.name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(
            f"{attribute.name} has no time zone: {value.isoformat()!r} (add e.g. 'Z' or '+00:00')"
        )


def _rules(values: Iterable[ConnectorRule]) -> tuple[ConnectorRule, ...]:
    rules = tuple(values)
    seen: dict[str, int] = {}
    for number, rule in enumerate(rules, start=1):
        if not isinstance(rule, ConnectorRule):
            raise AdapterConfigError(f"connectors must be ConnectorRule values, got {rule!r}")
        # Names differing only in case are one connector misspelt, not two.
        first = seen.setdefault(rule.name.casefold(), number)
        if first != number:
            raise AdapterConfigError(
                f"[[connector]] number {first} ({rules[first - 1].name!r}) and number {number} "
                f"({rule.name!r}) have the same name: give each rule its own name"
            )
    return rules


def _exemptions(values: Iterable[Exemption]) -> tuple[Exemption, ...]:
    exemptions = tuple(values)
    for each in exemptions:
        if not isinstance(each, Exemption):
            raise AdapterConfigError(f"exemptions must be Exemption values, got {each!r}")
    return exemptions


def _timeout(instance: object, attribute: attrs.Attribute[float], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise AdapterConfigError(
            f"{attribute.name} must be a number of seconds above zero, got {value!r}"
        )


def _not_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        raise AdapterConfigError(f"{attribute.name} must be 'server' or 'connector', not None")


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or value < 1:
        raise AdapterConfigError(f"{attribute.name} must be a whole number >= 1, got {value!r}")


def _positive_days(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, dt.timedelta) or value <= dt.timedelta(0):
        raise AdapterConfigError(f"{attribute.name} must be a duration above zero, got {value!r}")


def _days(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 36500:
        raise AdapterConfigError(
            f"stale_after_days must be a number of days above zero (and under 36500), got {value!r}"
        )
    return float(value)


def _policy_name(instance: AdapterConfig, attribute: attrs.Attribute[str], value: str) -> None:
    # Policy.named's own checks, which need no catalog: the policy is built against the
    # catalog this configuration names (make_policy), never against the packaged one here.
    try:
        Policy.check_named(value, on=instance.policy_on)
    except PolicyError as error:
        raise AdapterConfigError(f"policy = {value!r}: {error}") from None


def _final_step(instance: AdapterConfig, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise AdapterConfigError(f"final_step_from must be a date, got {value!r:.80}")
    if instance.policy != "exchange_online":
        raise AdapterConfigError(
            f"final_step_from = {value}: only policy 'exchange_online' has a final step, "
            f"not {instance.policy!r}"
        )


def _max_servers(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 1:
        raise AdapterConfigError(f"max_servers must be an integer >= 1, got {value!r}")


@attrs.frozen
class DiscoverySettings:
    """The ``[discovery]`` table: whether unmapped Exchange senders are recorded, and how.

    ``enabled`` (default true) records them; ``max_servers`` (default 10,000) bounds the
    stored list, the oldest by last seen dropped first; ``flush_seconds`` (default 5) is
    how often they are written (docs/discovery.md).
    """

    enabled: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    max_servers: int = attrs.field(default=DEFAULT_MAX_SERVERS, validator=_max_servers)
    flush_seconds: float = attrs.field(default=DEFAULT_FLUSH_SECONDS, validator=_timeout)


# ---- notifications (docs/notifications.md) ------------------------------------------------

NOTIFIER_TYPES = ("log", "webhook", "email")
"""The kinds of ``[[notifier]]``."""


def _whole_days(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or not 1 <= value <= 366:
        raise AdapterConfigError(f"{attribute.name} must be a whole number of days in 1..366")


@attrs.frozen
class NotificationSettings:
    """The ``[notifications]`` table: when advance notices go, how long the outbox keeps events.

    ``advance_notice_days`` before a server's throttling starts, and before its blocking
    starts, people are told; delivered events stay in the outbox ``keep_days``, undelivered
    ones at most ``expire_days`` (a receiver down longer misses them).
    """

    advance_notice_days: int = attrs.field(default=7, validator=_whole_days)
    keep_days: int = attrs.field(default=7, validator=_whole_days)
    expire_days: int = attrs.field(default=30, validator=_whole_days)

    def __attrs_post_init__(self) -> None:
        if self.expire_days < self.keep_days:
            raise AdapterConfigError("expire_days must be at least keep_days")


@attrs.frozen
class NotifierSpec:
    """One ``[[notifier]]``: a receiver of events, as configured (built by :func:`make_sender`).

    ``name`` (unique) keys its deliveries in the store; ``type`` is one of
    :data:`NOTIFIER_TYPES`; ``connectors`` limits it to those connectors' events (empty:
    all); ``options`` are the type's own keys, checked when the spec is made.
    """

    name: str = attrs.field(validator=_non_empty_text)
    type: str
    connectors: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)

    def __attrs_post_init__(self) -> None:
        if self.type not in NOTIFIER_TYPES:
            raise AdapterConfigError(
                f"[[notifier]] {self.name!r}: type = {self.type!r}; write one of "
                + ", ".join(map(repr, NOTIFIER_TYPES))
            )
        known = _NOTIFIER_KEYS[self.type]
        unknown = sorted(set(self.options) - known)
        if unknown:
            raise AdapterConfigError(
                f"[[notifier]] {self.name!r}: unknown key {unknown[0]!r} for type "
                f"{self.type!r}; known keys: {', '.join(sorted(known | _COMMON_NOTIFIER_KEYS))}"
            )
        for key in _REQUIRED_NOTIFIER_KEYS[self.type]:
            if key not in self.options:
                raise AdapterConfigError(
                    f"[[notifier]] {self.name!r} of type {self.type!r} needs {key} = ..."
                )


_COMMON_NOTIFIER_KEYS = frozenset({"name", "type", "connectors"})
_NOTIFIER_KEYS = {
    "log": frozenset[str](),
    "webhook": frozenset({"url", "timeout"}),
    "email": frozenset(
        {
            "smtp_host",
            "smtp_port",
            "from",
            "to",
            "starttls",
            "username",
            "password",
            "timeout",
            "digest_hour",
        }
    ),
}
_REQUIRED_NOTIFIER_KEYS = {
    "log": (),
    "webhook": ("url",),
    "email": ("smtp_host", "from"),
}


def _check_notifiers(config: AdapterConfig) -> None:
    names = {rule.name for rule in config.connectors}
    seen: set[str] = set()
    for spec in config.notifiers:
        if not isinstance(spec, NotifierSpec):
            raise AdapterConfigError(f"notifiers must be NotifierSpec values, got {spec!r}")
        if spec.name in seen:
            raise AdapterConfigError(f"two [[notifier]] tables are named {spec.name!r}")
        seen.add(spec.name)
        for connector in spec.connectors:
            if connector not in names:
                raise AdapterConfigError(
                    f"[[notifier]] {spec.name!r} names connector {connector!r}, "
                    "which no [[connector]] has"
                )


@attrs.frozen
class AdapterConfig:
    """How an adapter names connections and behaves on faults (see the module docstring).

    ``tenant`` is the tenant of connections no rule matches and the default of rules that
    name none; ``own_hosts`` are this site's own host names, whose Received hops are skipped
    when looking for the sending server; ``fail_closed`` makes a fault answer "try again
    later" instead of accepting; ``check_timeout`` is each check's budget in seconds,
    retries included; ``policy``/``policy_on`` name a :meth:`Policy.named`
    preset; ``catalog`` is the path of a catalog written by ``tbes catalog import`` (the
    packaged one when unset), used for assessment and the ``supported_only`` baseline;
    ``fixed_time`` (testing only) freezes the clock. ``mode`` is the default mode of the
    connectors (:data:`MODES`); ``exemptions`` are the :class:`~tbes.exemption.Exemption`
    entries. An exemption naming a connector no rule has, or a server by host name
    without its connector, raises :class:`AdapterConfigError`. ``final_step_from`` dates
    the last phase of ``exchange_online`` (only ESU builds and SE pass; off by default,
    :meth:`Policy.exchange_online <tbes.policy.Policy.exchange_online>`).
    ``discovery`` is the :class:`DiscoverySettings`.
    ``identity`` is the default of the rules that set none (``server``: a state per sending
    server behind a connector); ``max_servers`` bounds the servers kept per connector (later
    names share ``NAME/~overflow``); ``stale_after`` is how long a server counts as active
    after its last message, for deciding messages without Exchange evidence (TOML:
    ``stale_after_days``).
    """

    connectors: tuple[ConnectorRule, ...] = attrs.field(default=(), converter=_rules)
    tenant: str = attrs.field(default="default", validator=_non_empty_text)
    own_hosts: tuple[str, ...] = attrs.field(default=(), converter=_to_hosts)
    fail_closed: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    check_timeout: float = attrs.field(default=DEFAULT_CHECK_TIMEOUT, validator=_timeout)
    policy_on: dt.date | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(dt.date))
    )
    policy: str = attrs.field(default="exchange_online", validator=_policy_name)
    fixed_time: dt.datetime | None = attrs.field(default=None, validator=_aware)
    catalog: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_non_empty_text)
    )
    mode: str = attrs.field(default="enforce", validator=_mode)
    exemptions: tuple[Exemption, ...] = attrs.field(default=(), converter=_exemptions)
    final_step_from: dt.date | None = attrs.field(default=None, validator=_final_step)
    discovery: DiscoverySettings = attrs.field(
        factory=DiscoverySettings, validator=attrs.validators.instance_of(DiscoverySettings)
    )
    identity: Identity = attrs.field(
        default=Identity.SERVER, converter=_to_identity, validator=_not_none
    )
    max_servers: int = attrs.field(default=1000, validator=_positive_int)
    stale_after: dt.timedelta = attrs.field(default=dt.timedelta(days=30), validator=_positive_days)
    notifiers: tuple[NotifierSpec, ...] = attrs.field(default=(), converter=_spec_tuple)
    notifications: NotificationSettings = attrs.field(
        factory=lambda: NotificationSettings(),
        validator=attrs.validators.instance_of(NotificationSettings),
    )

    def __attrs_post_init__(self) -> None:
        _check_notifiers(self)
        make_receivers(self)  # every value checked now, not first when a daemon starts
        for rule in self.connectors:
            if (rule.identity or self.identity) is Identity.SERVER:
                _no_slash(rule)
        names = {rule.name.casefold() for rule in self.connectors}
        identities = {rule.connector_id for rule in self.connectors}
        for number, each in enumerate(self.exemptions, start=1):
            where = f"[[exemption]] number {number} ({each.reason!r})"
            if each.connector is not None and each.connector.casefold() not in names:
                raise AdapterConfigError(
                    f"{where} names connector {each.connector!r}, which no [[connector]] has"
                )
            server = each.server
            by_host = server is not None and "/" not in server and server not in identities
            if by_host and each.connector is None:
                # A host name comes from a header: only with the connector the connection
                # came through does it name a server nobody can impersonate.
                raise AdapterConfigError(
                    f"{where} names server {server!r} by host name: add the connector it "
                    f'comes through (connector = "..."), or give its id (NAME/HOST)'
                )

    @property
    def monitor_connectors(self) -> frozenset[str]:
        """The names of the connectors in monitor mode."""
        return frozenset(
            rule.name for rule in self.connectors if (rule.mode or self.mode) == "monitor"
        )

    def connector_of(self, server_id: str) -> str | None:
        """The name of the connector whose servers ``server_id`` names, if a rule has it."""
        for rule in self.connectors:
            if server_id == rule.connector_id or server_id.startswith(rule.connector_id + "/"):
                return rule.name
        return None

    def monitors(self, server_id: str) -> bool:
        """Whether the server ``server_id`` is in monitor mode (by its connector)."""
        connector = self.connector_of(server_id)
        if connector is None:
            return self.mode == "monitor"
        return connector in self.monitor_connectors

    def exemptions_for(
        self, server_id: str, *, peer_ip: str | None = None
    ) -> tuple[Exemption, ...]:
        """The exemptions covering ``server_id`` (network ones only with ``peer_ip``)."""
        connector = self.connector_of(server_id)
        return tuple(
            each
            for each in self.exemptions
            if each.applies(server_id, connector=connector, peer_ip=peer_ip)
        )

    def connection(
        self, *, peer_ip: str | None, peer_host: str | None, tls_subject: str | None
    ) -> Connection:
        """The :class:`~tbes.enforcer.Connection` for a peer, by the first rule that matches.

        A peer no rule matches gets kind ``INTERNET`` (never enforced by a preset) and
        ``tenant``; its id, the peer's name or address, is for logs only.
        """
        address = _parse_address(peer_ip)
        host = normalise_host(peer_host)
        subject = normalise_subject(tls_subject)
        ip = None if address is None else str(address)
        for rule in self.connectors:
            if rule.matches(address, host, subject):
                return Connection(
                    server_id=rule.connector_id,
                    tenant=rule.tenant,
                    kind=rule.kind,
                    peer_ip=ip,
                    peer_host=host,
                    tls_subject=subject,
                    connector=rule.name,
                    identity=rule.identity or self.identity,
                )
        return Connection(
            server_id=host or ip or "unknown",
            tenant=self.tenant,
            kind=ConnectorKind.INTERNET,
            peer_ip=ip,
            peer_host=host,
            tls_subject=subject,
        )

    def fails_closed(
        self,
        *,
        peer_ip: str | None = None,
        peer_host: str | None = None,
        tls_subject: str | None = None,
    ) -> bool:
        """Whether a fault answers ``451 4.3.0`` for this peer: ``fail_closed``, unless the
        peer's connector (or, for a peer no rule matches, the configuration) is in monitor
        mode, which never refuses."""
        if not self.fail_closed:
            return False
        connector = self.connection(
            peer_ip=peer_ip, peer_host=peer_host, tls_subject=tls_subject
        ).connector
        if connector is None:
            return self.mode != "monitor"
        return connector not in self.monitor_connectors

    def clock(self) -> dt.datetime:
        """The current instant: ``fixed_time`` when set (testing), else the UTC wall clock."""
        return self.fixed_time if self.fixed_time is not None else utc_now()

    def load_catalog(self) -> Catalog:
        """The build catalog: the file ``catalog`` names, else the packaged one."""
        if self.catalog is None:
            return Catalog.default()
        try:
            return Catalog.load(self.catalog)
        except CatalogError as error:
            raise AdapterConfigError(f"catalog = {self.catalog!r}: {error}") from None

    def make_policy(self, catalog: Catalog | None = None) -> Policy:
        """The :class:`~tbes.policy.Policy` preset this configuration names.

        Its baselines read their releases from ``catalog``, by default the catalog this
        configuration names (:meth:`load_catalog`), never silently the packaged one.
        """
        known = catalog if catalog is not None else self.load_catalog()
        if self.final_step_from is not None:  # only exchange_online has one: checked above
            return Policy.exchange_online(known, final_step_from=self.final_step_from)
        try:
            return Policy.named(self.policy, on=self.policy_on, catalog=known)
        except PolicyError as error:
            raise AdapterConfigError(f"policy = {self.policy!r}: {error}") from None


def make_enforcer(
    config: AdapterConfig,
    store: StateStore,
    *,
    catalog: Catalog | None = None,
    notifier: Notifier | None = None,
    discovery: DiscoveryQueue | None = None,
) -> Enforcer:
    """An :class:`~tbes.enforcer.Enforcer` over ``store`` with this configuration's settings.

    ``discovery`` (from :func:`make_discovery`, owned and closed by the caller) records
    the unmapped Exchange senders.
    """
    if config.fixed_time is not None:
        _log.warning(
            "tbes: [testing] fixed_time = %s freezes the clock; never use it in production",
            config.fixed_time.isoformat(),
        )
    # One catalog for both, so an imported newer list moves assessment and baseline together.
    known = catalog if catalog is not None else config.load_catalog()
    return Enforcer(
        store,
        config.make_policy(known),
        known,
        clock=config.clock,
        notifier=notifier,
        fail_closed=config.fail_closed,
        own_hosts=config.own_hosts,
        check_timeout=config.check_timeout,
        monitor_connectors=config.monitor_connectors,
        exemptions=config.exemptions,
        discovery=discovery,
        max_servers=config.max_servers,
        stale_after=config.stale_after,
        advance_notice=dt.timedelta(days=config.notifications.advance_notice_days),
        outbox=bool(config.notifiers) and bool(getattr(store, "supports_outbox", False)),
    )


def make_receivers(config: AdapterConfig, *, catalog: Catalog | None = None) -> list[Receiver]:
    """The :class:`~tbes.outbox.Receiver` of each ``[[notifier]]``, in order.

    A webhook and a mail name the connector's ``info_url``; a mail goes to its ``to`` and
    to the ``recipients`` of the event's connector. A bad value raises AdapterConfigError
    naming the notifier.
    """
    from tbes.notifiers import EmailNotifier, LoggingNotifier, WebhookNotifier
    from tbes.outbox import Receiver

    info_urls = {rule.name: rule.info_url for rule in config.connectors if rule.info_url}
    recipients = {rule.name: rule.recipients for rule in config.connectors if rule.recipients}
    receivers = []
    for spec in config.notifiers:
        options = spec.options
        notifier: Notifier
        digest_hour = None
        try:
            if spec.type == "webhook":
                notifier = WebhookNotifier(
                    _option(options, "url", str),
                    timeout=_option(options, "timeout", (int, float), 10.0),
                    info_urls=info_urls,
                )
            elif spec.type == "email":
                notifier = EmailNotifier(
                    _option(options, "smtp_host", str),
                    _option(options, "smtp_port", int, 25),
                    sender=_option(options, "from", str),
                    to=_option(options, "to", list, []),
                    recipients=recipients,
                    starttls=_option(options, "starttls", bool, False),
                    username=_option(options, "username", str, None),
                    password=_option(options, "password", str, None),
                    timeout=_option(options, "timeout", (int, float), 30.0),
                    catalog=catalog,
                    info_urls=info_urls,
                )
                digest_hour = _option(options, "digest_hour", int, None)
            else:
                notifier = LoggingNotifier(logging.getLogger("tbes.notify"))
            receivers.append(
                Receiver(
                    spec.name,
                    notifier,
                    connectors=spec.connectors or None,
                    digest_hour=digest_hour,
                )
            )
        except (InvalidValueError, AdapterConfigError) as error:
            raise AdapterConfigError(f"[[notifier]] {spec.name!r}: {error}") from None
    return receivers


def _option(options: Mapping[str, Any], key: str, kind: Any, default: Any = _REQUIRED) -> Any:
    if key not in options:
        if default is _REQUIRED:
            raise AdapterConfigError(f"needs {key} = ...")
        return default
    value = options[key]
    if isinstance(value, bool) and kind is not bool:
        raise AdapterConfigError(f"{key} must not be true or false, got {value!r}")
    if not isinstance(value, kind):
        raise AdapterConfigError(f"{key} has the wrong type: {value!r:.80}")
    return value


def make_discovery(config: AdapterConfig, store: StateStore) -> DiscoveryQueue | None:
    """The :class:`~tbes.store.DiscoveryQueue` ``[discovery]`` asks for over ``store``, or
    ``None`` when it is disabled, or when ``store`` keeps no discovered servers (a custom
    store without ``record_discovered``: logged at WARNING). The caller closes it."""
    settings = config.discovery
    if not settings.enabled:
        return None
    try:
        return DiscoveryQueue(
            store, max_servers=settings.max_servers, flush_seconds=settings.flush_seconds
        )
    except InvalidValueError as error:
        _log.warning("tbes: discovery is off: %s", error)
        return None


# ---- TOML ----------------------------------------------------------------------------------

_TOP_KEYS = frozenset(
    {
        "tenant",
        "own_hosts",
        "fail_closed",
        "check_timeout",
        "policy",
        "policy_on",
        "catalog",
        "mode",
        "final_step_from",
        "identity",
        "max_servers",
        "stale_after_days",
    }
)
_NOTIFICATION_KEYS = frozenset({"advance_notice_days", "keep_days", "expire_days"})
_REMOVED_UNMATCHED = (
    "unmatched_kind was removed: a connection no [[connector]] rule matches is never "
    "enforced, because its only names, the peer's reverse DNS name and address, change and "
    "would restart enforcement at stage 1; delete the key, and add a [[connector]] rule with "
    "a name for each server to enforce"
)
_TABLE_KEYS = frozenset(
    {"connector", "testing", "exemption", "discovery", "notifier", "notifications"}
)
_DISCOVERY_KEYS = frozenset({"enabled", "max_servers", "flush_seconds"})
_RULE_KEYS = frozenset(
    {
        "kind",
        "tenant",
        "server_id",
        "networks",
        "hosts",
        "tls_subjects",
        "name",
        "mode",
        "identity",
        "recipients",
        "info_url",
    }
)
_EXEMPTION_KEYS = frozenset({"connector", "server", "network", "reason", "until", "since"})
_TESTING_KEYS = frozenset({"fixed_time"})


def load_config(path: str | os.PathLike[str]) -> AdapterConfig:
    """Read an adapter configuration from a TOML file (see the module docstring)."""
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8")
    except OSError as error:
        raise AdapterConfigError(
            f"cannot read adapter configuration {str(path)!r}: {error}"
        ) from error
    except UnicodeDecodeError as error:
        raise AdapterConfigError(f"{str(path)!r} is not UTF-8: {error}") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, *, source: str = "<string>") -> AdapterConfig:
    """Parse an adapter configuration from TOML text; ``source`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise AdapterConfigError(f"{source}: not valid TOML: {error}") from None
    try:
        return _from_mapping(data)
    except AdapterConfigError as error:
        raise AdapterConfigError(f"{source}: {error}") from None
    except NaiveDatetimeError as error:
        raise NaiveDatetimeError(f"{source}: {error}") from None


def _from_mapping(data: Mapping[str, Any]) -> AdapterConfig:
    if "unmatched_kind" in data:
        raise AdapterConfigError(_REMOVED_UNMATCHED)
    _no_unknown_keys("the top level", data, _TOP_KEYS | _TABLE_KEYS)
    tenant = _get(data, "tenant", str, "default")
    rules = _get(data, "connector", list, [])
    testing = _get(data, "testing", dict, {})
    _no_unknown_keys("[testing]", testing, _TESTING_KEYS)
    exemptions = _get(data, "exemption", list, [])
    discovery = _get(data, "discovery", dict, {})
    _no_unknown_keys("[discovery]", discovery, _DISCOVERY_KEYS)
    return AdapterConfig(
        connectors=tuple(_rule(item, index, tenant) for index, item in enumerate(rules)),
        tenant=tenant,
        own_hosts=_string_list(data, "own_hosts"),
        fail_closed=_get(data, "fail_closed", bool, False),
        check_timeout=_get(data, "check_timeout", object, DEFAULT_CHECK_TIMEOUT),
        policy_on=_get(data, "policy_on", dt.date, None),
        policy=_get(data, "policy", str, "exchange_online"),
        fixed_time=_instant(testing.get("fixed_time")),
        catalog=_get(data, "catalog", str, None),
        mode=_get(data, "mode", str, "enforce"),
        exemptions=tuple(_exemption(item, index) for index, item in enumerate(exemptions)),
        final_step_from=_get(data, "final_step_from", dt.date, None),
        discovery=_discovery(discovery),
        identity=_get(data, "identity", str, Identity.SERVER.value),
        max_servers=_get(data, "max_servers", int, 1000),
        stale_after=dt.timedelta(days=_days(_get(data, "stale_after_days", object, 30))),
        notifiers=tuple(
            _notifier(item, index) for index, item in enumerate(_get(data, "notifier", list, []))
        ),
        notifications=_notifications(_get(data, "notifications", dict, {})),
    )


def _discovery(table: Mapping[str, Any]) -> DiscoverySettings:
    try:
        return DiscoverySettings(
            enabled=_get(table, "enabled", bool, True),
            max_servers=_get(table, "max_servers", int, DEFAULT_MAX_SERVERS),
            flush_seconds=_get(table, "flush_seconds", object, DEFAULT_FLUSH_SECONDS),
        )
    except AdapterConfigError as error:
        raise AdapterConfigError(f"[discovery]: {error}") from None


def _notifications(table: Mapping[str, Any]) -> NotificationSettings:
    _no_unknown_keys("[notifications]", table, _NOTIFICATION_KEYS)
    try:
        return NotificationSettings(
            **{key: _get(table, key, int, default) for key, default in _NOTIFICATION_DEFAULTS}
        )
    except AdapterConfigError as error:
        raise AdapterConfigError(f"[notifications]: {error}") from None


_NOTIFICATION_DEFAULTS = (("advance_notice_days", 7), ("keep_days", 7), ("expire_days", 30))


def _notifier(item: object, index: int) -> NotifierSpec:
    where = f"[[notifier]] number {index + 1}"
    if not isinstance(item, dict):
        raise AdapterConfigError(f"{where} must be a table, got {item!r}")
    try:
        if "name" not in item or "type" not in item:
            raise AdapterConfigError('needs name = "..." and type = "log", "webhook" or "email"')
        options = {k: v for k, v in item.items() if k not in _COMMON_NOTIFIER_KEYS}
        return NotifierSpec(
            name=_get(item, "name", str, ""),
            type=_get(item, "type", str, ""),
            connectors=_string_list(item, "connectors"),
            options=options,
        )
    except AdapterConfigError as error:
        raise AdapterConfigError(f"{where}: {error}") from None


def _exemption(item: object, index: int) -> Exemption:
    where = f"[[exemption]] number {index + 1}"
    if not isinstance(item, dict):
        raise AdapterConfigError(f"{where} must be a table, got {item!r}")
    _no_unknown_keys(where, item, _EXEMPTION_KEYS)
    try:
        if "reason" not in item:
            raise AdapterConfigError('needs reason = "..." (reports and events show it)')
        return Exemption(
            reason=_get(item, "reason", str, ""),
            until=_get(item, "until", dt.date, None),
            since=_get(item, "since", dt.date, None),
            connector=_get(item, "connector", str, None),
            server=_get(item, "server", str, None),
            network=_get(item, "network", str, None),
        )
    except (AdapterConfigError, InvalidValueError) as error:
        raise AdapterConfigError(f"{where}: {error}") from None


def _rule(item: object, index: int, tenant: str) -> ConnectorRule:
    where = f"[[connector]] number {index + 1}"
    if not isinstance(item, dict):
        raise AdapterConfigError(f"{where} must be a table, got {item!r}")
    _no_unknown_keys(where, item, _RULE_KEYS)
    if "kind" not in item:
        raise AdapterConfigError(f"{where} needs kind = 'on_premises', 'partner' or 'internet'")
    try:
        return ConnectorRule(
            kind=_kind(_get(item, "kind", str, ""), "kind"),
            tenant=_get(item, "tenant", str, tenant),
            server_id=_get(item, "server_id", str, None),
            networks=_string_list(item, "networks"),
            hosts=_string_list(item, "hosts"),
            tls_subjects=_string_list(item, "tls_subjects"),
            name=_get(item, "name", str, _get(item, "server_id", str, "")),
            mode=_get(item, "mode", str, None),
            identity=_get(item, "identity", str, None),
            recipients=_string_list(item, "recipients"),
            info_url=_get(item, "info_url", str, None),
        )
    except AdapterConfigError as error:
        raise AdapterConfigError(f"{where}: {error}") from None


def _no_unknown_keys(where: str, data: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise AdapterConfigError(
            f"unknown key {unknown[0]!r} in {where}; known keys: {', '.join(sorted(known))}"
        )


def _get(data: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    if key not in data:
        return default
    value = data[key]
    # A TOML datetime is also a date: a date key must not take one silently.
    wrong_date = kind is dt.date and isinstance(value, dt.datetime)
    if not isinstance(value, kind) or wrong_date:
        raise AdapterConfigError(f"{key} must be a {kind.__name__}, got {value!r}")
    return value


def _string_list(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    values = _get(data, key, list, [])
    if not all(isinstance(v, str) for v in values):
        raise AdapterConfigError(f"{key} must be a list of strings, got {values!r}")
    return tuple(values)


def _kind(value: str, key: str) -> ConnectorKind:
    try:
        return ConnectorKind(value.strip().upper())
    except ValueError:
        names = ", ".join(repr(k.value.lower()) for k in ConnectorKind)
        raise AdapterConfigError(f"{key} = {value!r} is not a connector kind ({names})") from None


def _instant(value: object) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise AdapterConfigError(f"fixed_time = {value!r} is not an ISO 8601 instant") from None
    if not isinstance(value, dt.datetime):
        raise AdapterConfigError(f"fixed_time must be a date and time, got {value!r}")
    if value.tzinfo is None:
        raise NaiveDatetimeError(
            f"fixed_time has no time zone: {value.isoformat()!r} (add e.g. 'Z' or '+00:00')"
        )
    return value.astimezone(dt.UTC)
