"""Discovery of unmapped Exchange senders: the record, its merge, the suggestion and the check path.

An unmapped connection whose sender hop carries an on-premises Exchange build is recorded
(through the enforcer's discovery queue, off the mail path); Exchange Online, non-Exchange
and mapped senders are not; decisions never change; a full queue never blocks a check. The
suggested ``[[connector]]`` rules are read back by the configuration parser, which is how
an operator uses them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import threading
import time
import tomllib
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tbes.adapters.config import (
    AdapterConfig,
    AdapterConfigError,
    make_discovery,
    make_enforcer,
    parse_config,
)
from tbes.compliance import Compliance
from tbes.decision import Action
from tbes.discovery import (
    DiscoveredServer,
    evicted,
    from_json,
    merge,
    network_of,
    sighting,
    suggest,
    to_json,
)
from tbes.enforcer import Connection, Enforcer
from tbes.errors import InvalidValueError
from tbes.policy import ConnectorKind
from tbes.store import DiscoveryQueue, MemoryStore
from tbes.version import ExchangeBuild

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
EX2013 = (
    "from EX01.fabrikam.local (10.1.2.3) by mail.fabrikam.example (10.1.2.4) with "
    "Microsoft SMTP Server (TLS) id 15.0.1497.2; Tue, 3 Nov 2026 09:00:00 +0100"
)
EX2019 = (
    "from EX02.fabrikam.local (10.1.2.5) by mail2.fabrikam.example (10.1.2.6) with "
    "Microsoft SMTP Server (version=TLS1_2) id 15.2.1748.10; Tue, 3 Nov 2026 09:00:00 +0100"
)
EXO = (
    "from AM0PR01MB1234.eurprd01.prod.exchangelabs.com (2603:10a6:208:1::1) by "
    "AM0PR01MB5678.eurprd01.prod.exchangelabs.com (2603:10a6:208:2::2) with Microsoft SMTP "
    "Server (version=TLS1_2) id 15.20.6319.25; Tue, 3 Nov 2026 08:00:00 +0000"
)
# Exchange 2013 behind Exchange Online: the peer is Exchange Online, not the 2013 server.
EX2013_VIA_EXO = [EXO, EX2013]
POSTFIX = (
    "from mail.example.org (mail.example.org [192.0.2.9]) by mx.example.net (Postfix) "
    "with ESMTPS id 4Xyz; Tue, 3 Nov 2026 09:00:00 +0100"
)
B2013 = ExchangeBuild.parse("15.0.1497.2")
B2019 = ExchangeBuild.parse("15.2.1748.10")
OUT = Compliance.OUTDATED


def _config(extra: str = "") -> AdapterConfig:
    return parse_config(
        'tenant = "contoso"\n'
        '[[connector]]\nname = "fabrikam-edge"\nkind = "on_premises"\ntenant = "fabrikam"\n'
        'networks = ["198.51.100.0/24"]\n'
        f"{extra}\n[testing]\nfixed_time = {T0.isoformat()}\n"
    )


def _checks(
    config: AdapterConfig, messages: Sequence[tuple[str, str | None, list[str]]]
) -> tuple[MemoryStore, list[Action]]:
    """Check each ``(peer_ip, verified name, received)`` and write the queue out."""
    store = MemoryStore()
    queue = make_discovery(config, store)
    assert queue is not None
    enforcer = make_enforcer(config, store, discovery=queue)
    actions = []
    for peer, name, received in messages:
        conn = config.connection(peer_ip=peer, peer_host=name, tls_subject=None)
        actions.append(enforcer.check(conn, received).action)
    queue.close()
    return store, actions


def _record(peer: str = "203.0.113.5", at: dt.datetime = T0, **changes: object) -> DiscoveredServer:
    fields: dict[str, object] = {
        "peer_ip": peer,
        "verified_name": "mail.fabrikam.example",
        "sender_host": "mail.fabrikam.example",
        "build": B2013,
        "status": Compliance.UNSUPPORTED,
        "at": at,
    }
    fields.update(changes)
    return sighting(**fields)  # type: ignore[arg-type]


# ---- the check path ----------------------------------------------------------------------------


def test_an_unmapped_exchange_2013_appears_with_its_peer_names_build_and_status() -> None:
    store, actions = _checks(
        _config(),
        [("203.0.113.5", "mail.fabrikam.example", [EX2013])] * 3,
    )
    assert actions == [Action.ACCEPT] * 3
    [found] = store.discovered()
    assert found.peer_ip == "203.0.113.5"
    assert found.verified_name == "mail.fabrikam.example"
    assert found.sender_host == "mail.fabrikam.example"
    assert found.build == B2013
    assert found.first_status is found.last_status is Compliance.UNSUPPORTED
    assert found.first_seen == found.last_seen == T0
    assert found.messages == 3
    assert list(store.states()) == []  # nothing enforced


def test_exchange_online_non_exchange_and_mapped_senders_are_not_discovered() -> None:
    store, actions = _checks(
        _config(),
        [
            ("192.0.2.20", "mail.tailspin.example", [EXO]),
            ("192.0.2.21", "relay.tailspin.example", EX2013_VIA_EXO),
            ("192.0.2.9", "mail.example.org", [POSTFIX]),
            ("192.0.2.10", None, []),
            ("198.51.100.7", "mail.fabrikam.example", [EX2013]),  # the connector's network
        ],
    )
    assert store.discovered() == []
    assert actions[:4] == [Action.ACCEPT] * 4
    assert [state.server_id for state in store.states()] == ["fabrikam-edge/mail.fabrikam.example"]


def _replay(discovery: bool) -> tuple[list[Action], MemoryStore]:
    """Two hundred days of mail from a mapped and an unmapped 2013 and a Postfix sender."""
    config = _config()
    store = MemoryStore()
    now = [T0]
    queue = DiscoveryQueue(store) if discovery else None
    enforcer = Enforcer(
        store, config.make_policy(), config.load_catalog(), clock=lambda: now[0], discovery=queue
    )
    actions = []
    for day in range(0, 200, 5):
        now[0] = T0 + dt.timedelta(days=day, minutes=day)
        for peer, name, received in (
            ("203.0.113.5", "mail.fabrikam.example", [EX2013]),
            ("198.51.100.7", "mail.fabrikam.example", [EX2013]),
            ("192.0.2.9", "mail.example.org", [POSTFIX]),
        ):
            conn = config.connection(peer_ip=peer, peer_host=name, tls_subject=None)
            actions.append(enforcer.check(conn, received).action)
    if queue is not None:
        queue.close()
    return actions, store


def test_discovery_never_changes_a_decision_nor_the_enforcement_state() -> None:
    with_discovery, on = _replay(True)
    without, off = _replay(False)
    assert with_discovery == without
    assert list(on.states()) == list(off.states())
    assert Action.BLOCK in without  # the mapped 2013 is enforced, in both
    assert set(with_discovery[0::3]) == {Action.ACCEPT}  # the unmapped one never is
    [found] = on.discovered()
    assert (found.peer_ip, found.messages) == ("203.0.113.5", 40)
    assert found.last_seen - found.first_seen == dt.timedelta(days=195, minutes=195)
    assert off.discovered() == []


def test_a_full_queue_never_blocks_a_check_and_counts_what_it_drops() -> None:
    entered, release = threading.Event(), threading.Event()

    class Stalled(MemoryStore):
        def record_discovered(
            self, records: Sequence[DiscoveredServer], *, max_servers: int
        ) -> None:
            entered.set()
            release.wait(30)  # a store that hangs: the queue's thread waits, no check does
            super().record_discovered(records, max_servers=max_servers)

    store = Stalled()
    queue = DiscoveryQueue(store, flush_seconds=0.01, capacity=2, max_servers=10)
    config = _config()
    enforcer = make_enforcer(config, store, discovery=queue)
    conn = config.connection(peer_ip="203.0.113.5", peer_host=None, tls_subject=None)
    enforcer.check(conn, [EX2013])
    assert entered.wait(10)  # the thread is stuck in the store now
    started = time.monotonic()
    actions = {enforcer.check(conn, [EX2013]).action for _ in range(50)}
    took = time.monotonic() - started
    assert actions == {Action.ACCEPT}
    assert queue.dropped == 48  # two waited in the queue, the rest were refused
    release.set()
    queue.close()
    assert took < 10  # generous: fifty refused puts, not fifty waits
    [found] = store.discovered()
    assert found.messages == 3


def test_an_offer_after_close_is_dropped_and_close_writes_what_was_pending() -> None:
    store = MemoryStore()
    queue = DiscoveryQueue(store, flush_seconds=3600)
    assert queue.offer(lambda: _record())
    queue.close()  # long before the hour: close writes it
    assert [each.peer_ip for each in store.discovered()] == ["203.0.113.5"]
    assert not queue.offer(lambda: _record())
    assert queue.dropped == 1


def test_a_failing_sighting_or_store_loses_only_its_own_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(MemoryStore):
        fail = True

        def record_discovered(
            self, records: Sequence[DiscoveredServer], *, max_servers: int
        ) -> None:
            if self.fail:
                raise OSError("disk gone")
            super().record_discovered(records, max_servers=max_servers)

    def bad() -> DiscoveredServer:
        raise ValueError("forged header")

    store = Broken()
    queue = DiscoveryQueue(store, flush_seconds=3600)
    queue.offer(bad)
    queue.offer(lambda: _record())
    with caplog.at_level(logging.WARNING):
        assert queue.flush() == 0
    assert queue.failed == 1
    assert "could not record 1 discovered server" in caplog.text
    store.fail = False
    queue.offer(lambda: _record("203.0.113.6"))
    assert queue.flush() == 1
    queue.close()
    assert [each.peer_ip for each in store.discovered()] == ["203.0.113.6"]


def test_a_queue_refuses_a_store_without_discovered_servers_and_config_turns_it_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Bare:
        pass

    bare: Any = Bare()
    with pytest.raises(InvalidValueError, match="keeps no discovered servers"):
        DiscoveryQueue(bare)
    with caplog.at_level(logging.WARNING):
        assert make_discovery(_config(), bare) is None
    assert "discovery is off" in caplog.text
    for bad in ({"max_servers": 0}, {"flush_seconds": 0}, {"capacity": True}):
        with pytest.raises(InvalidValueError):
            DiscoveryQueue(MemoryStore(), **bad)
    config = _config()
    wrong: Any = 3
    with pytest.raises(InvalidValueError, match="discovery"):
        Enforcer(MemoryStore(), config.make_policy(), config.load_catalog(), discovery=wrong)


def test_no_peer_address_no_headers_or_a_connector_offers_nothing() -> None:
    offered: list[object] = []

    class Counting(DiscoveryQueue):
        def offer(self, sight: object) -> bool:
            offered.append(sight)
            return True

    config = _config()
    enforcer = make_enforcer(config, MemoryStore(), discovery=Counting(MemoryStore()))
    internet = ConnectorKind.INTERNET
    enforcer.check(
        Connection("x", "contoso", internet, peer_host="mail.fabrikam.example"), [EX2013]
    )
    enforcer.check(Connection("x", "contoso", internet, "203.0.113.5", connector="web"), [EX2013])
    assert offered == []
    # No Received value (the policy service's envelope check): no sender hop to discover.
    enforcer.check(Connection("x", "contoso", internet, "203.0.113.5"), [])
    enforcer.check_envelope(Connection("x", "contoso", internet, "203.0.113.5"))
    assert offered == []
    enforcer.check(Connection("x", "contoso", internet, "203.0.113.5"), [EX2013])
    assert len(offered) == 1


def test_a_flood_of_forged_names_from_many_addresses_stays_within_the_bound() -> None:
    # 600 addresses of one /64, each message with a different forged sender host: the store
    # keeps the 50 seen last, whatever the names.
    store = MemoryStore()
    queue = DiscoveryQueue(store, max_servers=50, flush_seconds=3600)
    config = _config()
    now = [T0]
    enforcer = Enforcer(
        store, config.make_policy(), config.load_catalog(), clock=lambda: now[0], discovery=queue
    )
    for n in range(600):
        now[0] = T0 + dt.timedelta(seconds=n)
        forged = EX2013.replace("mail.fabrikam.example", f"x{n}\x1b]0;{'y' * 300}.example")
        conn = config.connection(peer_ip=f"2001:db8::{n:x}", peer_host=None, tls_subject=None)
        assert enforcer.check(conn, [forged]).action is Action.ACCEPT
        if n % 97 == 0:
            queue.flush()  # several writes, each within the bound
            assert len(store.discovered()) <= 50
    queue.close()
    found = store.discovered()
    assert [each.peer_ip for each in found] == [f"2001:db8::{n:x}" for n in range(599, 549, -1)]
    assert all(each.sender_host is None or len(each.sender_host) <= 253 for each in found)


def test_the_aiosmtpd_handler_discovers_an_unmapped_exchange_2013() -> None:
    pytest.importorskip("aiosmtpd", reason="the smtp extra (aiosmtpd) is not installed")
    from aiosmtpd.controller import Controller

    from adapter_support import free_port, smtp_send
    from tbes.adapters.aiosmtpd import EnforcingHandler

    config = _config()
    store = MemoryStore()
    queue = DiscoveryQueue(store, flush_seconds=3600)
    port = free_port()
    handler = EnforcingHandler(make_enforcer(config, store, discovery=queue), config)
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        message = f"Received: {EX2013}\r\nSubject: hello\r\n\r\nbody\r\n".encode()
        sent = smtp_send(port, message, source="127.0.0.5")
        assert sent.line.startswith("250")
    finally:
        controller.stop()
    queue.close()
    [found] = store.discovered()
    # aiosmtpd verifies no name: only the address and the header's host are known.
    assert (found.peer_ip, found.verified_name, found.sender_host) == (
        "127.0.0.5",
        None,
        "mail.fabrikam.example",
    )


# ---- the [discovery] table --------------------------------------------------------------------


def test_the_discovery_table_sets_the_queue_and_refuses_unknown_keys_and_bad_values() -> None:
    config = _config("[discovery]\nmax_servers = 50\nflush_seconds = 0.5")
    assert (config.discovery.enabled, config.discovery.max_servers) == (True, 50)
    queue = make_discovery(config, MemoryStore())
    assert queue is not None
    assert (queue.max_servers, queue.flush_seconds) == (50, 0.5)
    assert AdapterConfig().discovery.max_servers == 10_000
    for text, words in (
        ("maximum = 5", "unknown key 'maximum' in [discovery]"),
        ("max_servers = 0", "max_servers must be an integer >= 1"),
        ("max_servers = true", "max_servers must be an integer >= 1"),
        ("flush_seconds = -1", "flush_seconds must be a number of seconds"),
        ('enabled = "yes"', "enabled must be a bool"),
    ):
        with pytest.raises(AdapterConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
            _config(f"[discovery]\n{text}")


# ---- the record and its merge -----------------------------------------------------------------

_peers = st.sampled_from(["203.0.113.5", "203.0.113.6", "2001:db8::5"])
_instants = st.datetimes(
    min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2026, 1, 2), timezones=st.just(UTC)
)
_names = st.one_of(st.none(), st.text(min_size=1, max_size=300))
_builds = st.sampled_from([B2013, B2019, ExchangeBuild.parse("8.3.83.6")])
_statuses = st.sampled_from([Compliance.UNSUPPORTED, Compliance.OUTDATED, Compliance.COMPLIANT])


@st.composite
def sightings(draw: st.DrawFn, peer: str | None = None) -> DiscoveredServer:
    return sighting(
        peer_ip=peer or draw(_peers),
        verified_name=draw(_names),
        sender_host=draw(_names),
        build=draw(_builds),
        status=draw(_statuses),
        at=draw(_instants),
    )


@given(st.lists(sightings("203.0.113.5"), min_size=1, max_size=8))
def test_merging_sightings_counts_them_and_keeps_the_first_and_last(
    seen: list[DiscoveredServer],
) -> None:
    merged = None
    for each in seen:
        merged = merge(merged, each)
    assert merged is not None
    assert merged.messages == len(seen)
    assert merged.first_seen == min(each.first_seen for each in seen)
    assert merged.last_seen == max(each.last_seen for each in seen)
    # The last sighting at the latest instant gives the build and status.
    latest = [each for each in seen if each.last_seen == merged.last_seen][-1]
    assert (merged.build, merged.last_status) == (latest.build, latest.last_status)
    earliest = next(each for each in seen if each.first_seen == merged.first_seen)
    assert merged.first_status is earliest.first_status
    assert from_json(to_json(merged)) == merged


@given(sightings())
def test_a_sighting_keeps_names_short_and_reads_back(seen: DiscoveredServer) -> None:
    for name in (seen.verified_name, seen.sender_host):
        assert name is None or 0 < len(name) <= 253
    assert from_json(to_json(seen)) == seen


def test_records_of_two_peers_do_not_merge_and_bad_records_are_refused() -> None:
    with pytest.raises(InvalidValueError, match="cannot merge"):
        merge(_record("203.0.113.5"), _record("203.0.113.6"))
    with pytest.raises(InvalidValueError, match="IP address"):
        _record("not-an-address")
    with pytest.raises(InvalidValueError, match="canonical"):
        DiscoveredServer("2001:DB8::5", None, None, B2013, OUT, OUT, T0, T0, 1)
    with pytest.raises(InvalidValueError, match="before first_seen"):
        DiscoveredServer(
            "203.0.113.5",
            None,
            None,
            B2013,
            OUT,
            OUT,
            T0,
            T0 - dt.timedelta(1),
            1,
        )
    for text in ("", "[]", '{"peer_ip": 3}', "{"):
        with pytest.raises(InvalidValueError):
            from_json(text)


def test_eviction_drops_the_oldest_by_last_seen_then_by_address() -> None:
    records = [
        _record("203.0.113.5", T0),
        _record("203.0.113.6", T0 + dt.timedelta(minutes=1)),
        _record("203.0.113.4", T0),
    ]
    assert evicted(records, 3) == set()
    assert evicted(records, 2) == {"203.0.113.4"}
    assert evicted(records, 1) == {"203.0.113.4", "203.0.113.5"}


# ---- suggestions --------------------------------------------------------------------------------


def test_suggestions_group_by_network_name_safely_and_parse_as_rules_matching_the_peers() -> None:
    records = [
        _record("203.0.113.5", verified_name="mail.fabrikam.example"),
        _record("203.0.113.77", verified_name="mail2.fabrikam.example"),
        _record("203.0.114.9", verified_name='evil".example\n[[connector]]\x1b[31m'),
        _record("2001:db8:1:2::5", verified_name=None),
        _record("198.51.100.3", verified_name="mx.fabrikam.example"),
    ]
    suggestions = suggest(records, taken=["Fabrikam-Example"])
    networks = [str(each.network) for each in suggestions]
    assert networks == ["198.51.100.0/24", "203.0.113.0/24", "203.0.114.0/24", "2001:db8:1:2::/64"]
    names = [each.name for each in suggestions]
    assert names == [
        "fabrikam-example-2",
        "fabrikam-example-3",
        "evil-example-connector-31m",
        "discovered-2001-db8-1-2",
    ]
    text = "\n".join(each.toml() for each in suggestions)
    assert "\x1b" not in text
    assert 'evil".example' not in text
    parsed = tomllib.loads(text)
    assert len(parsed["connector"]) == 4
    config = parse_config(text)
    for suggestion in suggestions:
        for server in suggestion.servers:
            conn = config.connection(peer_ip=server.peer_ip, peer_host=None, tls_subject=None)
            assert conn.connector == suggestion.name
            assert conn.kind is ConnectorKind.ON_PREMISES
    # Only the addresses seen are mapped, never the rest of the network.
    stranger = config.connection(peer_ip="203.0.113.6", peer_host=None, tls_subject=None)
    assert stranger.connector is None


@given(st.lists(sightings(), max_size=6), st.lists(st.text(max_size=20), max_size=3))
def test_every_suggestion_is_valid_toml_with_unique_safe_names(
    records: list[DiscoveredServer], taken: list[str]
) -> None:
    suggestions = suggest(records, taken=taken)
    names = [each.name for each in suggestions]
    assert len(set(names)) == len(names)
    assert not {name.casefold() for name in names} & {name.casefold() for name in taken}
    for each in suggestions:
        assert set(each.name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
        assert each.name
        assert all(network_of(server.peer_ip) == each.network for server in each.servers)
        [rule] = tomllib.loads(each.toml())["connector"]
        assert rule["networks"] == [
            str(ipaddress.ip_network(server.peer_ip)) for server in each.servers
        ]
