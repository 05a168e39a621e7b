"""The operator configuration: TOML in, connection identities and clocks out."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tbes.adapters.config import (
    AdapterConfig,
    AdapterConfigError,
    ConnectorRule,
    load_config,
    make_enforcer,
    normalise_host,
    normalise_ip,
    parse_config,
)
from tbes.catalog import Catalog
from tbes.decision import Action
from tbes.errors import NaiveDatetimeError, TbesError
from tbes.identity import Identity
from tbes.policy import ConnectorKind, Policy
from tbes.store._deadline import remaining
from tbes.store.memory import MemoryStore
from tbes.version import ExchangeBuild

EXAMPLE = """
tenant = "contoso"
own_hosts = ["MX.Contoso.Example."]
fail_closed = true
policy = "exchange_online_2023"

[[connector]]
name = "fabrikam edge"
kind = "on_premises"
tenant = "fabrikam"
server_id = "fabrikam-edge"
networks = ["203.0.113.0/28"]
hosts = [".fabrikam.example"]

[[connector]]
name = "partner relays"
kind = "PARTNER"
networks = ["198.51.100.0/24", "2001:db8::/32"]

[[connector]]
name = "adatum"
kind = "on_premises"
tenant = "adatum"
tls_subjects = ["Mail.Adatum.Example"]

[testing]
fixed_time = 2025-06-01T10:07:00+02:00
"""


@pytest.fixture
def config() -> AdapterConfig:
    return parse_config(EXAMPLE)


def test_example_file_reads_every_setting(config: AdapterConfig) -> None:
    assert config.tenant == "contoso"
    assert config.own_hosts == ("mx.contoso.example",)
    assert config.fail_closed is True
    assert config.policy == "exchange_online_2023"
    assert config.check_timeout == 2.0
    assert [rule.name for rule in config.connectors] == [
        "fabrikam edge",
        "partner relays",
        "adatum",
    ]
    assert [rule.kind for rule in config.connectors] == [
        ConnectorKind.ON_PREMISES,
        ConnectorKind.PARTNER,
        ConnectorKind.ON_PREMISES,
    ]
    # A rule without a tenant takes the file's.
    assert config.connectors[1].tenant == "contoso"
    assert config.fixed_time == dt.datetime(2025, 6, 1, 8, 7, tzinfo=dt.UTC)


def test_rule_needs_every_listed_criterion(config: AdapterConfig) -> None:
    inside_named = config.connection(
        peer_ip="203.0.113.5", peer_host="mail.fabrikam.example", tls_subject=None
    )
    assert (inside_named.server_id, inside_named.tenant) == ("fabrikam-edge", "fabrikam")
    assert inside_named.kind is ConnectorKind.ON_PREMISES
    # Right network, no verified name: the first rule does not match, nor any other.
    unnamed = config.connection(peer_ip="203.0.113.5", peer_host=None, tls_subject=None)
    assert unnamed.kind is ConnectorKind.INTERNET
    assert unnamed.tenant == "contoso"
    # Right name, wrong network.
    outside = config.connection(
        peer_ip="192.0.2.1", peer_host="mail.fabrikam.example", tls_subject=None
    )
    assert outside.kind is ConnectorKind.INTERNET


def test_leading_dot_matches_subdomains_only() -> None:
    rule = ConnectorRule(
        kind=ConnectorKind.PARTNER,
        tenant="t",
        hosts=(".fabrikam.example", "fabrikam.example"),
        name="r",
    )
    exact_only = ConnectorRule(
        kind=ConnectorKind.PARTNER, tenant="t", hosts=("fabrikam.example",), name="e"
    )
    assert rule.matches(None, "a.b.fabrikam.example", None)
    assert rule.matches(None, "fabrikam.example", None)
    assert not rule.matches(None, "evilfabrikam.example", None)
    assert not exact_only.matches(None, "mail.fabrikam.example", None)


def test_first_matching_rule_wins() -> None:
    config = AdapterConfig(
        connectors=(
            ConnectorRule(
                kind=ConnectorKind.PARTNER, tenant="first", networks=("10.0.0.0/8",), name="a"
            ),
            ConnectorRule(
                kind=ConnectorKind.ON_PREMISES,
                tenant="second",
                networks=("10.1.0.0/16",),
                name="b",
            ),
        )
    )
    conn = config.connection(peer_ip="10.1.2.3", peer_host=None, tls_subject=None)
    assert (conn.tenant, conn.kind) == ("first", ConnectorKind.PARTNER)


def test_tls_subject_matches_case_insensitively(config: AdapterConfig) -> None:
    conn = config.connection(
        peer_ip="192.0.2.9", peer_host=None, tls_subject=" mail.adatum.example "
    )
    assert (conn.tenant, conn.kind) == ("adatum", ConnectorKind.ON_PREMISES)
    assert conn.tls_subject == "mail.adatum.example"
    other = config.connection(peer_ip="192.0.2.9", peer_host=None, tls_subject="mail.evil.example")
    assert other.kind is ConnectorKind.INTERNET


def test_server_id_defaults_to_the_rules_name_whatever_the_peers_name_or_address(
    config: AdapterConfig,
) -> None:
    seen = {
        config.connection(peer_ip=ip, peer_host=host, tls_subject=None).server_id
        for ip, host in [
            ("198.51.100.7", "Relay.Partner.Example."),
            ("198.51.100.7", "relay2.partner.example"),  # its PTR changed
            ("198.51.100.7", "unknown"),  # ... or was lost
            ("198.51.100.9", None),  # ... and it moved
        ]
    }
    assert seen == {"partner relays"}
    # A peer no rule matches keeps its name or address, for logs: it is never enforced.
    unnamed = config.connection(peer_ip="192.0.2.7", peer_host="unknown", tls_subject=None)
    assert (unnamed.server_id, unnamed.kind) == ("192.0.2.7", ConnectorKind.INTERNET)
    assert unnamed.peer_host is None
    nothing = config.connection(peer_ip=None, peer_host=None, tls_subject=None)
    assert nothing.server_id == "unknown"


def test_mta_address_forms_are_normalised(config: AdapterConfig) -> None:
    assert normalise_ip("[203.0.113.5]") == "203.0.113.5"
    assert normalise_ip("IPv6:2001:DB8::1") == "2001:db8::1"
    assert normalise_ip("::ffff:203.0.113.5") == "203.0.113.5"
    assert normalise_ip("not an address") is None
    mapped = config.connection(
        peer_ip="::ffff:203.0.113.5", peer_host="mx.fabrikam.example", tls_subject=None
    )
    assert mapped.server_id == "fabrikam-edge"
    v6 = config.connection(peer_ip="IPv6:2001:db8::25", peer_host=None, tls_subject=None)
    assert v6.kind is ConnectorKind.PARTNER


def test_unverified_host_names_count_as_none() -> None:
    assert normalise_host("unknown") is None
    assert normalise_host("[192.0.2.1]") is None
    assert normalise_host("") is None
    assert normalise_host("MAIL.Example.") == "mail.example"


def test_fixed_time_freezes_the_clock(config: AdapterConfig) -> None:
    assert config.clock() == dt.datetime(2025, 6, 1, 8, 7, tzinfo=dt.UTC)
    assert config.clock() == config.clock()


def test_without_fixed_time_the_clock_is_the_utc_wall_clock() -> None:
    before = dt.datetime.now(dt.UTC)
    now = AdapterConfig().clock()
    after = dt.datetime.now(dt.UTC)
    assert now.utcoffset() == dt.timedelta(0)
    assert before <= now <= after


def test_fixed_time_may_be_an_iso_string() -> None:
    config = parse_config('[testing]\nfixed_time = "2025-01-02T03:04:05Z"\n')
    assert config.fixed_time == dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_naive_fixed_time_is_refused() -> None:
    with pytest.raises(NaiveDatetimeError, match="2025-01-02T03:04:05"):
        parse_config("[testing]\nfixed_time = 2025-01-02T03:04:05\n")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('tenat = "x"\n', "'tenat'"),
        ('[[connector]]\nkind = "on_premises"\nnetwork = ["10.0.0.0/8"]\n', "'network'"),
        (
            '[[connector]]\nname = "a"\nkind = "on_premises"\nnetworks = ["10.0.0.300/8"]\n',
            "10.0.0.300/8",
        ),
        ('[[connector]]\nname = "a"\nkind = "cloud"\nnetworks = ["10.0.0.0/8"]\n', "'cloud'"),
        ('[[connector]]\nnetworks = ["10.0.0.0/8"]\n', "needs kind"),
        ('[[connector]]\nname = "a"\nkind = "partner"\n', "would match every connection"),
        ("check_timeout = 0\n", "check_timeout"),
        ("check_timeout = -1.5\n", "check_timeout"),
        ("check_timeout = nan\n", "check_timeout"),
        ("check_timeout = inf\n", "check_timeout"),
        ('check_timeout = "2"\n', "check_timeout"),
        ("check_timeout = true\n", "check_timeout"),
        ('fail_closed = "yes"\n', "fail_closed"),
        ('own_hosts = "mx.example"\n', "own_hosts"),
        ('policy = "strict"\n', "strict"),
        ('policy = "supported_only"\n', "supported_only"),
        ("[testing]\nclock = 1\n", "'clock'"),
        ("tenant = \n", "not valid TOML"),
    ],
)
def test_invalid_configuration_names_the_offending_value(text: str, named: str) -> None:
    with pytest.raises(AdapterConfigError, match=named) as error:
        parse_config(text, source="adapters.toml")
    assert isinstance(error.value, TbesError)
    assert "adapters.toml" in str(error.value)


def test_supported_only_takes_its_date() -> None:
    config = parse_config('policy = "supported_only"\npolicy_on = 2025-01-15\n')
    assert config.policy_on == dt.date(2025, 1, 15)


def test_load_config_reads_a_file_and_names_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "adapters.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    assert load_config(path) == parse_config(EXAMPLE)
    with pytest.raises(AdapterConfigError, match=r"missing\.toml"):
        load_config(tmp_path / "missing.toml")


def test_make_enforcer_uses_the_configured_clock_policy_and_kinds() -> None:
    fixed = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)
    config = AdapterConfig(
        connectors=(
            ConnectorRule(
                kind=ConnectorKind.ON_PREMISES,
                tenant="t",
                networks=("192.0.2.0/24",),
                name="t-edge",
            ),
        ),
        fixed_time=fixed,
    )
    store = MemoryStore()
    enforcer = make_enforcer(config, store)
    conn = config.connection(peer_ip="192.0.2.10", peer_host=None, tls_subject=None)
    exchange_2007 = (
        "from EXHUB01.fabrikam.local (10.1.2.3) by mail.fabrikam.example (192.0.2.10) with "
        "Microsoft SMTP Server id 8.3.83.6; Mon, 3 Mar 2025 10:00:00 +0100"
    )
    decision = enforcer.check(conn, [exchange_2007])
    # First detection: stage 1 reports only.
    assert decision.action is Action.ACCEPT
    # Each server behind the connector has its own state: the sender hop's by host.
    stored = store.get("t-edge/mail.fabrikam.example")
    assert stored is not None
    assert stored.value.first_detected == fixed
    assert stored.value.build == ExchangeBuild(8, 3, 83, 6)


_networks = st.builds(
    lambda address, prefix: ipaddress.ip_network(f"{address}/{prefix}", strict=False),
    st.ip_addresses(v=4),
    st.integers(0, 32),
)


@given(network=_networks, address=st.ip_addresses(v=4))
def test_network_rule_matches_exactly_the_addresses_inside(
    network: ipaddress.IPv4Network, address: ipaddress.IPv4Address
) -> None:
    config = AdapterConfig(
        connectors=(
            ConnectorRule(kind=ConnectorKind.PARTNER, tenant="t", networks=(network,), name="n"),
        )
    )
    conn = config.connection(peer_ip=str(address), peer_host=None, tls_subject=None)
    inside = int(address) >> (32 - network.prefixlen) == int(network.network_address) >> (
        32 - network.prefixlen
    )
    assert (conn.kind is ConnectorKind.PARTNER) is inside


_PARSED = parse_config(EXAMPLE)


@given(peer_ip=st.text(), peer_host=st.text(), subject=st.text())
def test_any_peer_text_gives_a_connection(peer_ip: str, peer_host: str, subject: str) -> None:
    conn = _PARSED.connection(peer_ip=peer_ip, peer_host=peer_host, tls_subject=subject)
    assert conn.server_id
    assert conn.kind in set(ConnectorKind)


# ---- issue 13, item 12: a connector's identity is its name --------------------------------

V1_RULE = """
[[connector]]
kind = "on_premises"
tenant = "fabrikam"
server_id = "fabrikam-edge"
networks = ["203.0.113.0/28"]
"""


def test_a_v1_rule_takes_its_server_id_as_name_so_stored_states_keep_their_keys() -> None:
    (rule,) = parse_config(V1_RULE).connectors
    assert rule.name == "fabrikam-edge"
    conn = parse_config(V1_RULE).connection(
        peer_ip="203.0.113.2", peer_host="mail.fabrikam.example", tls_subject=None
    )
    assert conn.server_id == "fabrikam-edge"


def test_an_explicit_server_id_still_names_the_server() -> None:
    config = parse_config(V1_RULE.replace("[[connector]]", '[[connector]]\nname = "fabrikam"'))
    assert config.connectors[0].name == "fabrikam"
    conn = config.connection(peer_ip="203.0.113.2", peer_host=None, tls_subject=None)
    assert conn.server_id == "fabrikam-edge"


def test_a_rule_with_neither_name_nor_server_id_is_refused_with_what_to_add() -> None:
    text = '[[connector]]\nkind = "on_premises"\nnetworks = ["203.0.113.0/28"]\n'
    with pytest.raises(AdapterConfigError) as error:
        parse_config(text, source="adapters.toml")
    message = str(error.value)
    assert "adapters.toml" in message
    assert "[[connector]] number 1" in message
    assert 'add name = "' in message
    with pytest.raises(AdapterConfigError, match='add name = "'):
        ConnectorRule(kind=ConnectorKind.ON_PREMISES, tenant="t", networks=("10.0.0.0/8",))
    with pytest.raises(AdapterConfigError, match='add name = "'):
        ConnectorRule(
            kind=ConnectorKind.ON_PREMISES, tenant="t", networks=("10.0.0.0/8",), name="  "
        )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ('name = "edge"', 'name = "edge"'),
        ('name = "Edge"', 'name = "edge"'),  # one connector, misspelt
        ('server_id = "edge"', 'name = "edge"'),  # a v1 rule's server_id is its name
    ],
)
def test_duplicate_names_are_refused_naming_both_rules(first: str, second: str) -> None:
    text = (
        f'[[connector]]\n{first}\nkind = "on_premises"\nnetworks = ["10.0.0.0/8"]\n'
        '[[connector]]\nname = "other"\nkind = "partner"\nnetworks = ["10.2.0.0/16"]\n'
        f'[[connector]]\n{second}\nkind = "on_premises"\nnetworks = ["10.1.0.0/16"]\n'
    )
    with pytest.raises(AdapterConfigError) as error:
        parse_config(text, source="adapters.toml")
    message = str(error.value)
    assert "[[connector]] number 1" in message
    assert "number 3" in message
    assert "own name" in message


def test_unmatched_kind_is_refused_saying_it_was_removed_and_why() -> None:
    text = 'unmatched_kind = "on_premises"\n'
    with pytest.raises(AdapterConfigError) as error:
        parse_config(text, source="adapters.toml")
    message = str(error.value)
    assert "unmatched_kind was removed" in message
    assert "never enforced" in message
    assert "reverse DNS" in message


def test_a_peer_no_rule_names_is_never_enforced() -> None:
    config = parse_config(
        V1_RULE + "[testing]\nfixed_time = 2026-06-01T10:00:00Z\n", source="adapters.toml"
    )
    store = MemoryStore()
    enforcer = make_enforcer(config, store)
    exchange_2007 = (
        "from EXHUB01.stranger.local (10.1.2.3) by mail.stranger.example (192.0.2.10) with "
        "Microsoft SMTP Server id 8.3.83.6; Mon, 1 Jun 2026 10:00:00 +0000"
    )
    conn = config.connection(
        peer_ip="192.0.2.10", peer_host="mail.stranger.example", tls_subject=None
    )
    decision = enforcer.check(conn, [exchange_2007])
    assert (decision.action, decision.reply) == (Action.ACCEPT, None)
    assert list(store.states()) == []


def test_check_timeout_is_read_and_handed_to_the_enforcer() -> None:
    assert parse_config(V1_RULE).check_timeout == 2.0  # unset: the default
    config = parse_config("check_timeout = 0.5\n" + V1_RULE)
    assert config.check_timeout == 0.5
    budgets: list[float] = []

    class Recording(MemoryStore):
        def states(self, tenant: str | None = None) -> Any:
            # A message without headers reads the connector's servers.
            budgets.append(remaining(1000.0))
            return super().states(tenant)

    enforcer = make_enforcer(config, Recording())
    conn = config.connection(peer_ip="203.0.113.2", peer_host=None, tls_subject=None)
    enforcer.check(conn, [])
    assert len(budgets) == 1
    assert 0.0 < budgets[0] <= 0.5


@given(host=st.none() | st.text(max_size=40), address=st.ip_addresses(v=4), subject=st.text())
def test_a_matched_peers_server_id_is_its_rules_identity_whatever_it_reports(
    host: str | None, address: ipaddress.IPv4Address, subject: str
) -> None:
    named = ConnectorRule(
        kind=ConnectorKind.ON_PREMISES, tenant="t", networks=("0.0.0.0/0",), name="all of v4"
    )
    config = AdapterConfig(connectors=(named,))
    conn = config.connection(peer_ip=str(address), peer_host=host, tls_subject=subject)
    assert conn.server_id == "all of v4"


def test_the_default_policy_is_microsofts_dated_phases_over_the_named_catalog() -> None:
    config = parse_config("")
    assert config.policy == "exchange_online"
    catalog = Catalog.default()
    assert config.make_policy(catalog) == Policy.exchange_online(catalog)


# ---- identity: a state per server behind a connector (issue 15, item 1) --------------------

_RULE = """
[[connector]]
name = "{name}"
kind = "on_premises"
tenant = "fabrikam"
networks = ["203.0.113.0/28"]
"""


def test_identity_is_server_by_default_and_set_at_the_top_or_per_rule() -> None:
    default = parse_config(_RULE.format(name="edge"))
    peer = {"peer_ip": "203.0.113.2", "peer_host": None, "tls_subject": None}
    assert default.identity is Identity.SERVER
    assert default.connection(**peer).identity is Identity.SERVER
    top = parse_config('identity = "connector"\n' + _RULE.format(name="edge"))
    assert top.connection(**peer).identity is Identity.CONNECTOR
    rule = parse_config(_RULE.format(name="edge") + 'identity = "Connector"\n')
    assert rule.connection(**peer).identity is Identity.CONNECTOR
    assert rule.connection(**peer).server_id == "edge"


def test_a_name_with_a_slash_needs_connector_identity() -> None:
    with pytest.raises(AdapterConfigError, match="'/' separates the connector"):
        parse_config(_RULE.format(name="edge/one"))
    # Kept whole as one connector-level state, it is fine (at the top level or in the rule).
    assert parse_config('identity = "connector"\n' + _RULE.format(name="edge/one")).connectors
    assert parse_config(_RULE.format(name="edge/one") + 'identity = "connector"\n').connectors


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('identity = "host"', "is not 'server'"),
        ("max_servers = 0", "max_servers must be a whole number >= 1"),
        ("max_servers = true", "max_servers must be a whole number >= 1"),
        ("stale_after_days = 0", "stale_after_days must be a number of days above zero"),
        ('stale_after_days = "30"', "stale_after_days must be a number of days above zero"),
    ],
)
def test_bad_identity_settings_are_refused_by_name(line: str, error: str) -> None:
    with pytest.raises(AdapterConfigError, match=error):
        parse_config(line + "\n" + _RULE.format(name="edge"))


def test_max_servers_and_stale_after_reach_the_enforcer() -> None:
    config = parse_config("max_servers = 3\nstale_after_days = 7.5\n" + _RULE.format(name="e"))
    enforcer = make_enforcer(config, MemoryStore())
    assert enforcer.max_servers == 3
    assert enforcer.stale_after == dt.timedelta(days=7.5)
