"""The enforcer: the core's decisions applied to live connections, with state kept in a store.

For each connection it finds the sending Exchange server's build in the Received headers,
assesses it, records the observation in a :class:`~tbes.store.StateStore` by
compare-and-swap (retrying a bounded number of times when another process got there
first) and decides. Three decisions shaped it. Mail keeps flowing when tbes cannot work: a
store fault or an unreadable row accepts the connection and logs a warning, unless the
operator chose ``fail_closed``. The connector comes from the connection, never from a
header (a header only tells apart the servers behind it: :mod:`tbes.identity`), so
stripping headers never evades enforcement: the stored states still decide. And people
hear of each change exactly once, even with many MTA processes sharing one store, because
only the writer whose compare-and-swap stored the change notifies (:mod:`tbes.events`
works out what is news from the stored marker, ``notified_stage``).
Failing open covers faults, not mistakes: an argument of the wrong type is the caller's
bug and raises :class:`~tbes.errors.InvalidValueError` naming it, before the store is
touched. :func:`utc_now` is the only place tbes reads the clock.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import itertools
import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import attrs

from tbes._checks import id_field, of_type
from tbes._instants import as_utc
from tbes.baseline import Baseline
from tbes.catalog import Catalog
from tbes.compliance import Assessment, Compliance, assess
from tbes.decision import Action, Decision, decide, monitored
from tbes.discovery import DiscoveredServer, sighting
from tbes.errors import (
    InvalidPauseError,
    InvalidValueError,
    StoreConflictError,
    StoreError,
    TbesError,
    UnseenServerError,
)
from tbes.events import ADVANCE_NOTICE, Event, EventKind, announcement, state_event
from tbes.exemption import ENDING_NOTICE, Exemption
from tbes.identity import OVERFLOW, Identity, belongs_to, connector_of, server_key
from tbes.ledger import Pause, PauseLedger
from tbes.notifiers import Notifier
from tbes.policy import ConnectorKind, Policy, SmtpReply
from tbes.received import SenderFinder
from tbes.state import ServerState, observe
from tbes.store._deadline import DEFAULT_CHECK_TIMEOUT, check_deadline, expired
from tbes.store._discovery_queue import DiscoveryQueue
from tbes.store.protocol import (
    EventWrite,
    LedgerWrite,
    StateStore,
    StateWrite,
    Versioned,
    Write,
)
from tbes.version import ExchangeBuild

__all__ = ["FAIL_CLOSED_REPLY", "Connection", "Enforcer", "Identity", "utc_now"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_ZERO = dt.timedelta(0)
_MAX_VERDICTS = 1024
_SEEN_RESOLUTION = dt.timedelta(minutes=1)
_DISCOVERY_HOPS = 16
_STALE_AFTER = dt.timedelta(days=30)
_MAX_SERVERS = 1000
# How long (by the enforcer's clock) a connector's list of servers is reused before the
# store is read again: the per-message path must not list the store, and a few seconds'
# lag only delays counting a server another node has just stored.
_ROSTER_TTL = dt.timedelta(seconds=5)
_MAX_ROSTERS = 1024
# More new non-compliant names than this in a UTC day behind one connector looks like a
# server renaming itself to restart at stage 1.
_NEW_NAMES_PER_DAY = 10
_SEVERITY = {Action.ACCEPT: 0, Action.THROTTLE: 1, Action.BLOCK: 2}
# The stored fields that make a state what it is; last_seen is compared on its own.
_STATE_FIELDS = tuple(
    field.name for field in attrs.fields(ServerState) if field.eq and field.name != "last_seen"
)

FAIL_CLOSED_REPLY = SmtpReply(
    451, "4.3.0", "Temporary failure checking the sending Exchange server; try again later"
)
"""The reply when the store fails and the enforcer (or an adapter) fails closed.

The one fault reply of tbes: the adapters answer it too when a check itself fails."""


def utc_now() -> dt.datetime:
    """The current instant in UTC: the only clock read in tbes."""
    return dt.datetime.now(dt.UTC)


@attrs.frozen
class Connection:
    """Who is connecting, as the MTA knows it: never taken from the message's headers.

    ``server_id`` is the stable name the operator gives the connection (the connector's
    name, or a server's); ``tenant`` owns its pause quota; ``kind`` says which kind of
    connector it came through; the peer fields are for logs and evidence matching;
    ``connector`` is the name of the connector it came through (``None`` if unnamed), which
    the events of its checks carry. ``identity`` says what ``server_id`` names: with
    :attr:`Identity.SERVER <tbes.identity.Identity.SERVER>` it is a connector and each
    Exchange server behind it has its own state, ``SERVER_ID/HOST`` (the sender hop's ``by``
    host); with ``Identity.CONNECTOR`` (the default here, as in earlier versions; the
    adapters' configuration defaults to ``server``) it is the state's key itself.
    """

    server_id: str = attrs.field(validator=id_field())
    tenant: str = attrs.field(validator=id_field())
    kind: ConnectorKind = attrs.field(validator=of_type(ConnectorKind))
    peer_ip: str | None = attrs.field(default=None, validator=of_type(str, optional=True))
    peer_host: str | None = attrs.field(default=None, validator=of_type(str, optional=True))
    tls_subject: str | None = attrs.field(default=None, validator=of_type(str, optional=True))
    connector: str | None = attrs.field(default=None, validator=of_type(str, optional=True))
    identity: Identity = attrs.field(default=Identity.CONNECTOR, validator=of_type(Identity))


@attrs.frozen
class _Roster:
    """The stored states of one connector's servers, as read at ``fetched`` (enforcer clock)."""

    fetched: dt.datetime
    states: tuple[ServerState, ...]
    ids: frozenset[str]


def _accept(reason: str) -> Decision:
    return Decision(Action.ACCEPT, None, None, False, False, _ZERO, None, reason)


class Enforcer:
    """Decides connections from Exchange servers and keeps their state in a store.

    ``clock`` returns the current instant (default :func:`utc_now`); ``retries`` is how
    many times a lost compare-and-swap is retried; ``notifier`` hears of every change
    (:class:`~tbes.events.Event`); ``fail_closed`` answers :data:`FAIL_CLOSED_REPLY` instead of
    accepting when the store fails. ``own_hosts`` are the receiving side's host names, whose
    Received hops :func:`~tbes.received.find_sender` skips (checked here, once: a
    :class:`~tbes.received.SenderFinder` holds them). ``seen_resolution`` (one
    minute by default, ``timedelta(0)`` to write every message) is how far ``last_seen`` may
    lag before it is written: a message that changes nothing else is not stored, because
    :func:`~tbes.decision.decide` never reads ``last_seen`` and a busy server would otherwise
    cost one synchronous write per message. ``check_timeout`` (seconds, default 2) bounds
    each :meth:`check`, retries included: past it the check stops retrying and fails like
    any store fault, so a stalled or contended store never holds the MTA past its own
    timeout. ``monitor`` (all connections) and ``monitor_connectors`` (connector names)
    select monitor mode: everything is observed, stored and announced as in enforcement,
    but the decision returned always accepts (:func:`~tbes.decision.monitored`), and a store
    fault never fails closed. ``exemptions`` (:class:`~tbes.exemption.Exemption`) accept the
    servers they cover and stop their clock, with no quota charged; an ``EXEMPTION_ENDING``
    event warns once, at the first check within seven days of the end.
    ``discovery`` (a :class:`~tbes.store.DiscoveryQueue`) hears of every connection no
    connector maps (``conn.connector`` is ``None``, its kind not enforced, its ``peer_ip``
    known): the check only queues it, and the queue's thread records it if its sender hop
    carries an on-premises Exchange build (docs/discovery.md); the decision never changes.
    ``policy``, ``catalog``, ``monitor``, ``monitor_connectors`` and ``exemptions`` may be
    replaced at any time (a configuration
    reload); the verdict per build that the enforcer keeps (at most 1,024 builds) is never
    used under another policy or catalog than its own. An argument of the wrong kind (a
    store without the :class:`~tbes.store.StateStore` methods, a policy that is no
    :class:`~tbes.policy.Policy`, a clock that is not callable, a ``check_timeout`` that is
    no finite number above zero, …) raises
    :class:`~tbes.errors.InvalidValueError` naming it.

    For a connection with :attr:`~tbes.identity.Identity.SERVER` identity, ``max_servers``
    (default 1,000) bounds the servers kept per connector: later names share the state
    ``NAME/~overflow`` (one WARNING); ``stale_after`` (default 30 days) is how long after its
    last message a server still counts among its connector's *active* servers, which decide a
    message without Exchange evidence.
    """

    def __init__(
        self,
        store: StateStore,
        policy: Policy,
        catalog: Catalog,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        retries: int = 5,
        notifier: Notifier | None = None,
        fail_closed: bool = False,
        own_hosts: Iterable[str] = (),
        seen_resolution: dt.timedelta = _SEEN_RESOLUTION,
        check_timeout: float = DEFAULT_CHECK_TIMEOUT,
        monitor: bool = False,
        monitor_connectors: Iterable[str] = (),
        exemptions: Iterable[Exemption] = (),
        discovery: DiscoveryQueue | None = None,
        max_servers: int = _MAX_SERVERS,
        stale_after: dt.timedelta = _STALE_AFTER,
        advance_notice: dt.timedelta | None = ADVANCE_NOTICE,
        outbox: bool = False,
    ) -> None:
        _require(type(retries) is int and retries >= 0, "retries", "an int >= 0", retries)
        _require(
            type(max_servers) is int and max_servers >= 1, "max_servers", "an int >= 1", max_servers
        )
        _require(
            isinstance(stale_after, dt.timedelta) and stale_after > _ZERO,
            "stale_after",
            "a timedelta > 0",
            stale_after,
        )
        _require(
            advance_notice is None
            or (isinstance(advance_notice, dt.timedelta) and advance_notice > _ZERO),
            "advance_notice",
            "a timedelta > 0 or None",
            advance_notice,
        )
        _require(
            outbox is False or (outbox is True and getattr(store, "supports_outbox", False)),
            "outbox",
            "False, or True with a store that keeps an outbox",
            outbox,
        )
        _require(
            _is_timeout(check_timeout),
            "check_timeout",
            "a finite number of seconds > 0",
            check_timeout,
        )
        _require(
            isinstance(seen_resolution, dt.timedelta) and seen_resolution >= _ZERO,
            "seen_resolution",
            "a timedelta >= 0",
            seen_resolution,
        )
        _require(_is_store(store), "store", "a StateStore (" + ", ".join(_STORE_API) + ")", store)
        _require(isinstance(policy, Policy), "policy", "a Policy", policy)
        _require(isinstance(catalog, Catalog), "catalog", "a Catalog", catalog)
        _require(callable(clock), "clock", "callable (returning an aware datetime)", clock)
        _require(
            notifier is None or isinstance(notifier, Notifier), "notifier", "a Notifier", notifier
        )
        _require(type(fail_closed) is bool, "fail_closed", "a bool", fail_closed)
        _require(type(monitor) is bool, "monitor", "a bool", monitor)
        monitor_connectors = frozenset(_items(monitor_connectors, str, "monitor_connectors"))
        exemptions = tuple(_items(exemptions, Exemption, "exemptions"))
        _require(
            discovery is None or isinstance(discovery, DiscoveryQueue),
            "discovery",
            "a DiscoveryQueue or None",
            discovery,
        )
        self.discovery = discovery
        # Discovery reads the hop the peer wrote, Exchange Online's too: a relayed message
        # must not credit the peer with the build of a server behind Exchange Online.
        self._discovery_finder = SenderFinder(own_hosts, skip_exchange_online=False)
        self.store = store
        self.policy = policy
        self.catalog = catalog
        self.notifier = notifier
        self.fail_closed = fail_closed
        self.monitor = monitor
        self.monitor_connectors = monitor_connectors
        self.exemptions = exemptions
        self.advance_notice = advance_notice
        self.outbox = outbox
        # EXEMPTION_ENDING ids this process has sent: the id itself is deterministic, so
        # other processes (and restarts) send the same id, which notifiers can deduplicate.
        self._warned: set[str] = set()
        self._clock = clock
        self._retries = retries
        self._finder = SenderFinder(own_hosts)
        self._seen_resolution = seen_resolution
        self._check_timeout = float(check_timeout)
        # Verdicts per build, each with the baseline and catalog it was judged against: a
        # handful of builds makes nearly all the traffic, and assess is pure.
        self._verdicts: dict[ExchangeBuild, tuple[Baseline, Catalog, Assessment]] = {}
        self.max_servers = max_servers
        self.stale_after = stale_after
        # Per (tenant, connector): its servers, read from the store at most every few seconds.
        self._rosters: dict[tuple[str, str], _Roster] = {}
        self._roster_lock = threading.Lock()
        self._overflow_warned: set[str] = set()
        self._new_names: dict[str, tuple[dt.date, int]] = {}

    # ---- checking connections ---------------------------------------------------------

    def check(self, conn: Connection, received: Sequence[str]) -> Decision:
        """Decide a connection: ``received`` are its Received header values, newest first.

        Connections of a kind the policy does not enforce are accepted without touching the
        store. Otherwise the sender's build is found, assessed and recorded, and the stored
        state decides; without Exchange evidence nothing about the server is recorded, but a
        stored state of ``conn.server_id`` still decides, and a stage it has reached since the
        last announcement is announced (only ``notified_stage`` is written). A stored state of
        another tenant moves to ``conn.tenant`` when observed (logged at WARNING; its episode
        and pauses stay). A store failure, or a check still retrying when ``check_timeout``
        runs out, accepts (logged at WARNING), or answers :data:`FAIL_CLOSED_REPLY` when the
        enforcer fails closed. With :attr:`~tbes.identity.Identity.SERVER` identity the state
        is the sending server's, ``CONNECTOR/HOST`` by the sender hop's ``by`` host, and a
        message without Exchange evidence gets the most severe answer of the connector's
        active servers (not paused, not exempt, seen within ``stale_after``), recording
        nothing. A ``conn`` that is no :class:`Connection`, or ``received`` that is no
        sequence of ``str``, is the caller's mistake, not a fault: it raises
        :class:`~tbes.errors.InvalidValueError` naming the argument.
        """
        if not isinstance(conn, Connection):
            raise InvalidValueError(f"conn must be a Connection, got {conn!r:.80}")
        # The values are type-checked once: by the finder, or here when nothing reads them.
        enforced = conn.kind in self.policy.connectors
        _check_received(received, values=not enforced)
        if not enforced:
            # Without Received values (a policy request) there is no sender hop to discover.
            if self.discovery is not None and conn.connector is None and conn.peer_ip and received:
                # docs/discovery.md: one non-blocking put; the headers are read off the path.
                # The sender hop is among the first few: a queued message holds no more.
                values = tuple(itertools.islice(received, _DISCOVERY_HOPS))
                sight = functools.partial(self._discovered, conn, values, self._now())
                self.discovery.offer(sight)
            return _accept(f"{conn.kind.value} connections are not enforced by the policy.")
        with check_deadline(self._check_timeout):
            evidence = self._finder.build_and_host(received)
            now = self._now()
            monitor = self._monitors(conn)
            try:
                if conn.identity is Identity.CONNECTOR:
                    observation = (
                        None if evidence is None else self._observation(conn, evidence, now)
                    )
                    exemptions = self._exemptions_of(conn, conn.server_id)
                    decision = self._settle(conn, conn.server_id, now, observation, exemptions)
                elif evidence is None:
                    decision = self._without_evidence(conn, now, certain=False)
                else:
                    server_id = self._server_id(conn, evidence[1], now)
                    observation = self._observation(conn, evidence, now, server_id)
                    exemptions = self._exemptions_of(conn, server_id)
                    decision = self._settle(conn, server_id, now, observation, exemptions)
            except StoreError as exc:
                return self._store_fault(conn, exc, monitor)
            return monitored(decision) if monitor else decision

    def _discovered(
        self, conn: Connection, received: tuple[str, ...], at: dt.datetime
    ) -> DiscoveredServer | None:
        """Off the mail path: the sighting of an unmapped on-premises Exchange sender, or None."""
        evidence = self._discovery_finder.find_checked(received, client=conn.peer_ip)
        if evidence is None or not evidence.build.product.on_premises or conn.peer_ip is None:
            return None
        return sighting(
            peer_ip=conn.peer_ip,
            verified_name=conn.peer_host,
            sender_host=evidence.host,
            build=evidence.build,
            status=self._assess(evidence.build, at).status,
            at=at,
        )

    def check_envelope(self, conn: Connection) -> Decision:
        """Decide from the envelope alone (no headers): refuse only what is certain.

        For an MTA's early check, such as Postfix's policy service at RCPT time, where no
        header is known yet. With :attr:`~tbes.identity.Identity.SERVER` identity it refuses
        only when every server of the connector seen within ``stale_after`` would be refused
        at this instant (and then gives the mildest of their answers; a paused or exempt one
        would be accepted); otherwise it accepts, and the check of the message's headers
        decides. With ``CONNECTOR`` identity it is :meth:`check`
        without headers. Faults and monitor mode as :meth:`check`.
        """
        if not isinstance(conn, Connection):
            raise InvalidValueError(f"conn must be a Connection, got {conn!r:.80}")
        if conn.identity is Identity.CONNECTOR or conn.kind not in self.policy.connectors:
            return self.check(conn, ())
        with check_deadline(self._check_timeout):
            monitor = self._monitors(conn)
            try:
                decision = self._without_evidence(conn, self._now(), certain=True)
            except StoreError as exc:
                return self._store_fault(conn, exc, monitor)
            return monitored(decision) if monitor else decision

    # ---- servers behind a connector -------------------------------------------------

    def _server_id(self, conn: Connection, host: str | None, now: dt.datetime) -> str:
        """The canonical id of the server ``host`` behind ``conn``'s connector."""
        key = server_key(conn.server_id, host)
        if key.endswith("/" + OVERFLOW):
            return key
        roster = self._roster(conn, now, fresh=False)
        if key in roster.ids:
            return key
        roster = self._roster(conn, now, fresh=True)
        with self._roster_lock:
            roster = self._rosters.get((conn.tenant, conn.server_id), roster)
            if key in roster.ids:
                return key
            counted = sum(1 for sid in roster.ids if _is_counted(sid, conn.server_id))
            if counted >= self.max_servers:
                if conn.server_id not in self._overflow_warned:
                    self._overflow_warned.add(conn.server_id)
                    _log.warning(
                        "tbes: connector %s has %d servers, its max_servers: further server "
                        "names share the state %s/%s",
                        conn.server_id,
                        counted,
                        conn.server_id,
                        OVERFLOW,
                    )
                return server_key(conn.server_id, None)
            # Counted at once, so this process never lets more than max_servers in.
            self._rosters[(conn.tenant, conn.server_id)] = attrs.evolve(
                roster, ids=roster.ids | {key}
            )
        return key

    def _roster(self, conn: Connection, now: dt.datetime, *, fresh: bool) -> _Roster:
        """The stored servers of ``conn``'s connector, read again when ``fresh`` and old."""
        key = (conn.tenant, conn.server_id)
        cached = self._rosters.get(key)
        if cached is not None and (not fresh or _ZERO <= now - cached.fetched < _ROSTER_TTL):
            return cached
        name = conn.server_id
        states = tuple(
            state
            for state in self._guard(lambda: list(self.store.states(conn.tenant)))
            if belongs_to(state.server_id, name)
        )
        roster = _Roster(now, states, frozenset(state.server_id for state in states))
        with self._roster_lock:
            if len(self._rosters) >= _MAX_ROSTERS and key not in self._rosters:
                self._rosters.clear()  # names come from the caller: never grow for ever
            self._rosters[key] = roster
        return roster

    def _forget_rosters(self, tenant: str) -> None:
        """Drop the cached servers of ``tenant``'s connectors: their pauses just changed."""
        with self._roster_lock:
            for key in [key for key in self._rosters if key[0] == tenant]:
                del self._rosters[key]

    def _note(self, conn: Connection, state: ServerState) -> None:
        """Keep the cached servers of ``conn``'s connector up to date with what was stored."""
        key = (conn.tenant, conn.server_id)
        with self._roster_lock:
            roster = self._rosters.get(key)
            if roster is None:
                return
            states = [s for s in roster.states if s.server_id != state.server_id]
            states.append(state)
            self._rosters[key] = _Roster(
                roster.fetched, tuple(states), roster.ids | {state.server_id}
            )

    def _without_evidence(self, conn: Connection, now: dt.datetime, *, certain: bool) -> Decision:
        """The answer for a message from ``conn`` whose sending server is not known.

        Every server of the connector seen within ``stale_after`` is decided at ``now``.
        For a message, the most severe answer of the *active* ones (not paused, not exempt)
        wins, so stripping the headers never evades enforcement, and a paused or exempt
        server shields nobody. With ``certain`` (no headers at all yet: the envelope) the
        mildest answer of all of them wins, a paused or exempt one counting as accepted, so
        only what every server that may be sending would be refused is refused: the mail of
        a paused server is never refused before its headers are seen.
        """
        roster = self._roster(conn, now, fresh=True)
        decisions = []
        for state in roster.states:
            if state.last_seen is None or now - state.last_seen > self.stale_after:
                continue  # stale: a decommissioned server stops counting
            decision = decide(state, now, self.policy, self._exemptions_of(conn, state.server_id))
            if (decision.paused or decision.exempt) and not certain:
                continue
            decisions.append((decision, state.server_id))
        if not decisions:
            return _accept(
                f"{conn.server_id}: no Exchange build in the headers and no active server "
                "behind the connector."
            )
        pick = min if certain else max
        decision, server = pick(decisions, key=lambda pair: _SEVERITY[pair[0].action])
        which = "mildest" if certain else "most severe"
        count = len(decisions)
        return attrs.evolve(
            decision,
            reason=(
                f"{conn.server_id}: no Exchange build in the headers; the {which} answer of its "
                f"{count} server{'s' if count != 1 else ''} seen lately ({server}): "
                f"{decision.reason}"
            ),
        )

    def _observation(
        self,
        conn: Connection,
        evidence: tuple[ExchangeBuild, str],
        now: dt.datetime,
        server_id: str = "",
    ) -> Callable[[ServerState | None], ServerState]:
        """The change one message with Exchange evidence (its build, its sender's host name)
        makes to the stored state."""
        build = evidence[0]
        assessment = self._assess(build, now)
        return functools.partial(
            observe,
            server_id=server_id or conn.server_id,
            tenant=conn.tenant,
            assessment=assessment,
            build=build,
            at=now,
            policy=self.policy,
        )

    def _settle(
        self,
        conn: Connection,
        server_id: str,
        now: dt.datetime,
        observation: Callable[[ServerState | None], ServerState] | None,
        exemptions: tuple[Exemption, ...] = (),
    ) -> Decision:
        """Read, observe (if there is evidence), announce, compare-and-swap; retry a lost race.

        Without evidence the state itself is kept and only the notification marker can
        change, so stage changes are still announced (once) when headers are stripped.
        """
        decision: Decision | None = None
        for attempt in range(self._retries + 1):
            if attempt and expired():
                raise StoreError(
                    f"{server_id}: the check's deadline of {self._check_timeout:g} s passed "
                    f"after {attempt} compare-and-swap attempt{'s' if attempt != 1 else ''}"
                )
            current = self._state(server_id)
            old = None if current is None else current.value
            if old is None and observation is None:
                return _accept(f"{server_id}: no Exchange build in the headers and no record.")
            observed: ServerState | None
            if old is not None and old.tenant != conn.tenant:
                if observation is None:
                    # Nothing observed, so nothing to record: the stored state still decides.
                    _log.warning(
                        "tbes: %s belongs to tenant %s, not %s: no Exchange evidence, decided "
                        "on the stored state",
                        server_id,
                        old.tenant,
                        conn.tenant,
                    )
                    return self._decide(old, now, exemptions, conn)
                _log.warning(
                    "tbes: %s moves from tenant %s to %s, the connection's; its episode "
                    "continues and its granted pauses stay charged to %s",
                    server_id,
                    old.tenant,
                    conn.tenant,
                    old.tenant,
                )
                # docs/enforcement.md, "tenant follows the connection": a mistyped pause or a
                # renamed tenant must never freeze the server's state.
                observed = observation(attrs.evolve(old, tenant=conn.tenant))
            else:
                observed = observation(old) if observation is not None else old
            assert observed is not None  # no observation means a stored state (checked above)
            if old is None and observed.in_episode and server_id != conn.server_id:
                observed = self._inherit(conn, observed)
            # Tenant pauses reach a server through its state: a state new to the tenant reads
            # them here (only then: the per-message path reads no ledger); see _sync_tenant.
            joined = old is None or old.tenant != observed.tenant
            ledger_read = self._tenant_pauses_into(observed) if joined else None
            if ledger_read is not None:
                observed = ledger_read[0]
            decision = self._decide(observed, now, exemptions, conn)
            told = announcement(
                old,
                observed,
                self.policy,
                now,
                connector=conn.connector,
                exemptions=exemptions,
                notice=self.advance_notice,
                decided=decision,
            )
            new, events = told.state, told.events
            if new == old or (not events and _only_seen(old, new, self._seen_resolution)):
                return decision  # nothing to store or announce
            try:
                self._put(new, _version(current), events)
            except StoreConflictError:
                continue  # another writer won: recompute from its state, which may announce
            if server_id != conn.server_id:
                self._note(conn, new)
                if old is None and observed.in_episode:
                    self._count_new_name(conn, now)
            self._emit(events, queued=True)
            if ledger_read is not None:
                self._resync_if_ledger_moved(new.tenant, ledger_read[1])
            return decision
        _log.warning(
            "tbes: %s: lost %d compare-and-swap races in a row; decided without recording",
            server_id,
            self._retries + 1,
        )
        assert decision is not None  # the loop ran at least once
        return decision

    def _inherit(self, conn: Connection, state: ServerState) -> ServerState:
        """A server first seen non-compliant takes over its connector's open episode.

        Rows written before states were kept per server (row schema 1) are the connector's,
        keyed by its name; a server behind it must not get a fresh episode by the upgrade,
        so it starts from that episode's ``first_detected`` (its pauses reach it through the
        ledger: :func:`_covering`).
        """
        legacy = self._state(conn.server_id)
        if legacy is None or not legacy.value.in_episode:
            return state
        first = legacy.value.first_detected
        assert first is not None  # in an episode (checked above)
        assert state.first_detected is not None
        return attrs.evolve(state, first_detected=min(first, state.first_detected))

    def _count_new_name(self, conn: Connection, now: dt.datetime) -> None:
        """Count a new non-compliant server name; warn once a day past the threshold."""
        today = now.date()
        with self._roster_lock:
            day, count = self._new_names.get(conn.server_id, (today, 0))
            count = count + 1 if day == today else 1
            if len(self._new_names) >= _MAX_ROSTERS and conn.server_id not in self._new_names:
                self._new_names.clear()
            self._new_names[conn.server_id] = (today, count)
        if count == _NEW_NAMES_PER_DAY + 1:
            _log.warning(
                "tbes: connector %s saw more than %d new non-compliant server names on %s: a "
                "server renaming itself restarts at stage 1; check its servers (tbes report)",
                conn.server_id,
                _NEW_NAMES_PER_DAY,
                today,
            )

    def _assess(self, build: ExchangeBuild, now: dt.datetime) -> Assessment:
        # The baseline in force at ``now``: one object per day, so no verdict of another day.
        baseline, catalog = self.policy.baseline_at(now), self.catalog
        cached = self._verdicts.get(build)
        # Checked by identity, so a new policy or catalog is never answered from an old
        # verdict, even by a thread that raced the change.
        if cached is not None and cached[0] is baseline and cached[1] is catalog:
            return cached[2]
        if len(self._verdicts) >= _MAX_VERDICTS:  # forged builds must not grow it for ever
            self._verdicts.clear()
        verdict = assess(build, baseline=baseline, catalog=catalog)
        self._verdicts[build] = (baseline, catalog, verdict)
        return verdict

    def _monitors(self, conn: Connection) -> bool:
        return self.monitor or (
            conn.connector is not None and conn.connector in self.monitor_connectors
        )

    def _exemptions_of(self, conn: Connection, server_id: str) -> tuple[Exemption, ...]:
        if not self.exemptions:
            return ()
        return tuple(
            each
            for each in self.exemptions
            if each.applies(server_id, connector=conn.connector, peer_ip=conn.peer_ip)
        )

    def _decide(
        self,
        state: ServerState,
        now: dt.datetime,
        exemptions: tuple[Exemption, ...],
        conn: Connection,
    ) -> Decision:
        """decide(), and the warning that an exemption of the server ends within a week."""
        decision = decide(state, now, self.policy, exemptions)
        if decision.exempt:
            self._warn_ending(state, now, exemptions, conn)
        return decision

    def _warn_ending(
        self,
        state: ServerState,
        now: dt.datetime,
        exemptions: tuple[Exemption, ...],
        conn: Connection,
    ) -> None:
        for each in exemptions:
            if each.until is None or not each.covers(now) or each.end - now > ENDING_NOTICE:
                continue
            # The end and the reason name the exemption: one id per server and exemption.
            occasion = f"{each.until.isoformat()}/{each.reason}"
            detail = f"{each.describe()}; enforcement resumes on {each.until.isoformat()}"
            event = state_event(
                EventKind.EXEMPTION_ENDING,
                state,
                self.policy,
                now,
                detail,
                connector=conn.connector,
                occasion=occasion,
                exemptions=exemptions,
            )
            if event.id in self._warned:
                continue
            if len(self._warned) >= _MAX_VERDICTS:
                self._warned.clear()
            self._warned.add(event.id)
            self._emit([event])

    def _store_fault(self, conn: Connection, exc: StoreError, monitor: bool = False) -> Decision:
        if monitor:
            # Monitor mode never refuses, so it never fails closed either.
            _log.warning(
                "tbes: store failed for %s; accepting (monitor mode): %s", conn.server_id, exc
            )
            reason = f"{conn.server_id}: monitor mode, the store failed, so accepted: {exc}"
            if not self.fail_closed:
                return monitored(_accept(reason))
            return Decision(
                Action.ACCEPT,
                None,
                None,
                False,
                False,
                _ZERO,
                None,
                reason,
                enforced=False,
                would_action=Action.THROTTLE,
                would_reply=FAIL_CLOSED_REPLY,
            )
        if self.fail_closed:
            _log.warning(
                "tbes: store failed for %s; deferring (fail closed): %s", conn.server_id, exc
            )
            reason = f"{conn.server_id}: the store failed, so the connection is deferred: {exc}"
            return Decision(
                Action.THROTTLE, None, FAIL_CLOSED_REPLY, False, False, _ZERO, None, reason
            )
        _log.warning("tbes: store failed for %s; accepting (fail open): %s", conn.server_id, exc)
        return _accept(f"{conn.server_id}: the store failed, so the connection is accepted: {exc}")

    # ---- pauses -----------------------------------------------------------------------

    def pause(
        self,
        tenant: str,
        server_id: str,
        days: int,
        start: dt.date | None = None,
        *,
        force: bool = False,
    ) -> PauseLedger:
        """Pause enforcement of ``server_id`` for ``days`` days from ``start`` (default today).

        Charges the tenant's ledger and records the pause in the server's state in one
        atomic write. A server with no stored state is refused with
        :class:`~tbes.errors.UnseenServerError` (a mistyped id or tenant would otherwise
        charge a quota for nothing), unless ``force`` is true: then it gets a state without a
        build, and the tenant of its first connection takes it over. Errors of the
        ledger propagate (:class:`~tbes.errors.QuotaExceededError`,
        :class:`~tbes.errors.PauseConflictError`, :class:`~tbes.errors.PauseInPastError`),
        and so do store errors. Returns the tenant's new ledger. Arguments of the wrong kind
        (an empty id, ``days`` < 1, a ``start`` that is no date) raise
        :class:`~tbes.errors.InvalidPauseError` naming the argument.
        """
        _check_pause_ids(tenant, server_id)
        if type(days) is not int or days < 1:
            raise InvalidPauseError(f"days must be an int >= 1, got {days!r:.80}")
        if start is not None and (type(start) is dt.datetime or not isinstance(start, dt.date)):
            raise InvalidPauseError(f"start must be a date or None, got {start!r:.80}")
        if type(force) is not bool:
            raise InvalidPauseError(f"force must be a bool, got {force!r:.80}")
        now = self._now()
        today = now.date()
        first = today if start is None else start
        ledger, state, _ = self._change_pauses(
            tenant,
            server_id,
            lambda ledger: ledger.grant(server_id, first, days, today=today),
            unseen=force,
        )
        self._spread(tenant, server_id)
        last = first + dt.timedelta(days=days - 1)
        detail = (
            f"enforcement paused for {days} day{'s' if days != 1 else ''}, {first} to {last}; "
            f"{ledger.used(first.year)} of {ledger.quota_days} pause days used in {first.year}"
        )
        # The pause granted tells this PAUSED from another of the same episode and stage.
        occasion = f"{first.isoformat()}/{days}"
        self._emit(
            [state_event(EventKind.PAUSED, state, self.policy, now, detail, occasion=occasion)]
        )
        return ledger

    def end_pause(self, tenant: str, server_id: str) -> PauseLedger:
        """End ``server_id``'s current and future pauses as of today; return the new ledger.

        A pause that has started keeps today (enforcement resumes at the next UTC
        midnight); the days given up return to the quota. With nothing to end, nothing is
        written and no event is sent. An empty or non-``str`` id raises
        :class:`~tbes.errors.InvalidPauseError` naming it.
        """
        _check_pause_ids(tenant, server_id)
        now = self._now()
        today = now.date()
        ledger, state, changed = self._change_pauses(
            tenant, server_id, lambda ledger: ledger.end(server_id, today=today)
        )
        if changed:
            self._spread(tenant, server_id)
            resumes = today + dt.timedelta(days=1) if ledger.paused_at(server_id, now) else today
            detail = (
                f"pause ended early; enforcement resumes on {resumes}"
                if state.in_episode
                else "pause ended early; the server is not enforced (no open episode)"
            )
            occasion = now.isoformat()  # a pause is ended once: the instant names the ending
            self._emit(
                [state_event(EventKind.RESUMED, state, self.policy, now, detail, occasion=occasion)]
            )
        return ledger

    def pause_tenant(self, tenant: str, days: int, start: dt.date | None = None) -> PauseLedger:
        """Pause enforcement of every server of ``tenant`` for ``days`` days from ``start``.

        ``start`` defaults to today. One tenant pause covers every stored server of the
        tenant and every server first seen while it runs; a day of it costs one quota day
        whatever the number of servers. A pause overlapping or adjoining a tenant pause
        already granted extends it (only new days are charged), and the days of server
        pauses under it stop being charged. The ledger and every state of the tenant are
        written in one atomic :meth:`~tbes.store.StateStore.put_many`, retried on a lost race.
        Errors as :meth:`pause` (no server need have been seen). Returns the new ledger.
        """
        _check_tenant(tenant)
        if type(days) is not int or days < 1:
            raise InvalidPauseError(f"days must be an int >= 1, got {days!r:.80}")
        if start is not None and (type(start) is dt.datetime or not isinstance(start, dt.date)):
            raise InvalidPauseError(f"start must be a date or None, got {start!r:.80}")
        now = self._now()
        today = now.date()
        first = today if start is None else start
        ledger, states = self._sync_tenant(
            tenant, lambda ledger: ledger.grant_tenant(first, days, today=today)
        )
        last = first + dt.timedelta(days=days - 1)
        detail = (
            f"enforcement of every server of tenant {tenant} paused for {days} "
            f"day{'s' if days != 1 else ''}, {first} to {last}; {ledger.used(first.year)} of "
            f"{ledger.quota_days} pause days used in {first.year}"
        )
        occasion = f"tenant/{first.isoformat()}/{days}"
        self._emit(
            [
                state_event(EventKind.PAUSED, state, self.policy, now, detail, occasion=occasion)
                for state in states
            ]
        )
        return ledger

    def unpause_tenant(self, tenant: str) -> PauseLedger:
        """End ``tenant``'s current and future tenant pauses as of today; return the ledger.

        As :meth:`end_pause` for one server: a tenant pause that has started keeps today, and
        the days given up return to the quota. Server pauses are not touched. With nothing
        to end, nothing is written and no event is sent.
        """
        _check_tenant(tenant)
        now = self._now()
        today = now.date()
        ledger, states = self._sync_tenant(tenant, lambda ledger: ledger.end_tenant(today=today))
        events = []
        for state in states:
            paused = ledger.paused_at(state.server_id, now)
            resumes = today + dt.timedelta(days=1) if paused else today
            detail = (
                f"tenant pause of {tenant} ended early; enforcement resumes on {resumes}"
                if state.in_episode
                else f"tenant pause of {tenant} ended early; the server is not enforced "
                "(no open episode)"
            )
            events.append(
                state_event(
                    EventKind.RESUMED,
                    state,
                    self.policy,
                    now,
                    detail,
                    occasion=f"tenant/{now.isoformat()}",
                )
            )
        self._emit(events)
        return ledger

    def _sync_tenant(
        self, tenant: str, change: Callable[[PauseLedger], PauseLedger] = lambda ledger: ledger
    ) -> tuple[PauseLedger, list[ServerState]]:
        """Apply ``change`` to ``tenant``'s ledger and copy its pauses into every state of it.

        Each stored state of the tenant gets :meth:`~tbes.ledger.PauseLedger.covering` of
        the new ledger as its pauses. The ledger (even unchanged: its version guards the
        states read) and the states that change are written in one ``put_many``, retried
        on a lost race. Nothing is written when nothing changes. Returns the ledger and the
        states written. A second pass after the write catches a server first stored between
        the listing and the write (the check path, in turn, re-reads the ledger after
        storing a new server: one of the two sees the other).
        """
        ledger, written = self._sync_tenant_once(tenant, change)
        if written:
            _, repaired = self._sync_tenant_once(tenant)
            written = [*written, *repaired]
        return ledger, written

    def _sync_tenant_once(
        self, tenant: str, change: Callable[[PauseLedger], PauseLedger] = lambda ledger: ledger
    ) -> tuple[PauseLedger, list[ServerState]]:
        for _ in range(self._retries + 1):
            stored_ledger = self._ledger(tenant)
            ledger = (
                stored_ledger.value
                if stored_ledger is not None
                else PauseLedger(tenant, self.policy.pause_quota_days)
            )
            changed = change(ledger)
            state_writes: list[Write] = []
            for listed in self._guard(lambda: list(self.store.states(tenant))):
                stored = self._state(listed.server_id)
                if stored is None or stored.value.tenant != tenant:
                    continue
                new_state = attrs.evolve(
                    stored.value, pauses=_covering(changed, stored.value.server_id)
                )
                if new_state != stored.value:
                    state_writes.append(StateWrite(new_state, stored.version))
            if changed == ledger and not state_writes:
                return ledger, []
            writes = [LedgerWrite(changed, _version(stored_ledger)), *state_writes]
            try:
                self._guard(functools.partial(self.store.put_many, writes))
            except StoreConflictError:
                continue
            self._forget_rosters(tenant)
            return changed, [w.state for w in state_writes if isinstance(w, StateWrite)]
        raise StoreConflictError(
            f"changing the tenant pauses of {tenant} lost {self._retries + 1} "
            "compare-and-swap races in a row; try again"
        )

    def _tenant_pauses_into(self, state: ServerState) -> tuple[ServerState, int | None]:
        """``state`` with its tenant's pauses added, and the version of the ledger read."""
        stored = self._ledger(state.tenant)
        if stored is None:
            return state, None
        covering = _covering(stored.value, state.server_id)
        pauses = (*state.pauses, *(p for p in covering if p not in state.pauses))
        return attrs.evolve(state, pauses=pauses), stored.version

    def _spread(self, tenant: str, server_id: str) -> None:
        """Copy a connector-level pause into the states of the servers behind it."""
        if connector_of(server_id) != server_id:
            return
        try:
            # One read, and writes only when servers stand behind it: a connector-level id
            # with none (identity = "connector") must not pay a tenant-wide sync per pause.
            listed = self._guard(lambda: list(self.store.states(tenant)))
            if any(belongs_to(s.server_id, server_id) and s.server_id != server_id for s in listed):
                self._sync_tenant_once(tenant)
        except (StoreError, StoreConflictError):
            # The pause is granted; the next check of a new server or sync copies it.
            _log.warning("tbes: could not copy the pauses of %s to its servers", server_id)

    def _resync_if_ledger_moved(self, tenant: str, version_read: int | None) -> None:
        """After storing a server new to ``tenant``: catch a tenant pause granted meanwhile."""
        try:
            if _version(self._ledger(tenant)) != version_read:
                self._sync_tenant_once(tenant)
        except (StoreError, StoreConflictError):
            # The state is stored and decided; the next grant or sync copies the pause.
            _log.warning("tbes: could not copy the tenant pauses of %s", tenant, exc_info=True)

    def _change_pauses(
        self,
        tenant: str,
        server_id: str,
        change: Callable[[PauseLedger], PauseLedger],
        *,
        unseen: bool = True,
    ) -> tuple[PauseLedger, ServerState, bool]:
        """Apply ``change`` to the ledger and copy the server's pauses into its state.

        A server with no stored state gets one without a build when ``unseen`` allows it,
        else :class:`~tbes.errors.UnseenServerError`. Both rows are written in one
        :meth:`~tbes.store.StateStore.put_many`, retried on a lost race. Returns the ledger,
        the state and whether anything changed.
        """
        for _ in range(self._retries + 1):
            stored_ledger = self._ledger(tenant)
            stored_state = self._state(server_id)
            ledger = (
                stored_ledger.value
                if stored_ledger is not None
                else PauseLedger(tenant, self.policy.pause_quota_days)
            )
            if stored_state is None and not unseen:
                raise UnseenServerError(
                    f"no server {server_id} has been seen (tenant {tenant}): check the server id "
                    "and the tenant's spelling, or force the pause of a server not seen yet"
                )
            state = stored_state.value if stored_state is not None else _unseen(server_id, tenant)
            if state.tenant != tenant:
                raise InvalidValueError(
                    f"server {server_id} belongs to tenant {state.tenant}, not {tenant}"
                )
            changed = change(ledger)
            if changed == ledger:
                return ledger, state, False
            new_state = attrs.evolve(state, pauses=_covering(changed, server_id))
            writes: list[Write] = [
                LedgerWrite(changed, _version(stored_ledger)),
                StateWrite(new_state, _version(stored_state)),
            ]
            try:
                self._guard(functools.partial(self.store.put_many, writes))
            except StoreConflictError:
                continue
            self._forget_rosters(tenant)
            return changed, new_state, True
        raise StoreConflictError(
            f"changing the pauses of {server_id} (tenant {tenant}) lost {self._retries + 1} "
            "compare-and-swap races in a row; try again"
        )

    # ---- helpers ----------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        return as_utc(self._clock(), "the clock's time")

    def _guard(self, call: Callable[[], _T]) -> _T:
        """Call the store; an exception outside tbes's family becomes a StoreError."""
        try:
            return call()
        except TbesError:
            raise
        except Exception as exc:  # a custom store's own failure is still a store fault
            raise StoreError(f"store {type(self.store).__name__} failed: {exc!r}") from exc

    def _state(self, server_id: str) -> Versioned[ServerState] | None:
        return self._guard(lambda: self.store.get(server_id))

    def _ledger(self, tenant: str) -> Versioned[PauseLedger] | None:
        return self._guard(lambda: self.store.get_ledger(tenant))

    def _put(
        self, state: ServerState, expected_version: int | None, events: Sequence[Event] = ()
    ) -> None:
        if self.outbox and events:
            # docs/notifications.md: the events go into the outbox in the state's transaction.
            writes: list[Write] = [StateWrite(state, expected_version)]
            writes += (EventWrite(event) for event in events)
            self._guard(lambda: self.store.put_many(writes))
            return
        self._guard(lambda: self.store.put(state, expected_version=expected_version))

    def _emit(self, events: Sequence[Event], *, queued: bool = False) -> None:
        if self.outbox and events and not queued:
            # Off the mail path (pauses, warnings): the outbox gets its own write, after the
            # change; an event already there is kept, so a repeat changes nothing.
            try:
                self._guard(lambda: self.store.put_many([EventWrite(event) for event in events]))
            except (StoreError, StoreConflictError):
                _log.warning(
                    "tbes: could not put %d events in the outbox", len(events), exc_info=True
                )
        if self.notifier is None:
            return
        for event in events:
            try:
                self.notifier.notify(event)
            except Exception:  # a broken notifier must never stop mail
                _log.warning("tbes: notifier failed on %s", event, exc_info=True)


_STORE_API = ("get", "put", "get_ledger", "put_ledger", "put_many", "states", "close")
_MISSING = object()


def _require(ok: bool, name: str, what: str, value: object) -> None:
    if not ok:
        raise InvalidValueError(f"{name} must be {what}, got {value!r:.80}")


def _items(values: object, kind: type[_T], name: str) -> list[_T]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidValueError(
            f"{name} must be an iterable of {kind.__name__}, got {values!r:.80}"
        )
    items = list(values)
    for item in items:
        _require(isinstance(item, kind), name, f"made of {kind.__name__} values", item)
    return items


def _is_timeout(value: object) -> bool:
    """Whether ``value`` is a usable number of seconds: finite and above zero."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _is_store(store: object) -> bool:
    """Whether ``store`` has the StateStore methods, looked up without touching the store."""
    if isinstance(store, type):
        return False  # the class, not a store: every call would fail, and fail open
    # A proxy answering through __getattr__ (a wrapper of another store) cannot be looked at
    # without calling it, so it is trusted; its own failures are store faults later.
    if inspect.getattr_static(store, "__getattr__", _MISSING) is not _MISSING:
        return True
    return all(inspect.getattr_static(store, name, _MISSING) is not _MISSING for name in _STORE_API)


def _check_received(received: object, *, values: bool) -> None:
    """Refuse ``received`` unless it is a sequence (of ``str``: checked only with ``values``)."""
    # A bare str is a sequence too, but of letters: one header value passed by mistake.
    if isinstance(received, str | bytes) or not isinstance(received, Sequence):
        raise InvalidValueError(
            f"received must be a sequence of Received header values, got {received!r:.80}"
        )
    if values:
        for value in received:
            if not isinstance(value, str):
                raise InvalidValueError(f"received must hold only str values, got {value!r:.80}")


def _check_pause_ids(tenant: object, server_id: object) -> None:
    for name, value in (("tenant", tenant), ("server_id", server_id)):
        if not isinstance(value, str) or not value:
            raise InvalidPauseError(f"{name} must be a non-empty str, got {value!r:.80}")


def _only_seen(old: ServerState | None, new: ServerState, resolution: dt.timedelta) -> bool:
    """Whether ``new`` differs from ``old`` only by ``last_seen``, moved by under ``resolution``."""
    if old is None or old.last_seen is None or new.last_seen is None:
        return False
    if not _ZERO <= new.last_seen - old.last_seen < resolution:
        return False
    return all(getattr(old, name) == getattr(new, name) for name in _STATE_FIELDS)


def _version(stored: Versioned[object] | None) -> int | None:
    return None if stored is None else stored.version


def _check_tenant(tenant: object) -> None:
    if not isinstance(tenant, str) or not tenant:
        raise InvalidPauseError(f"tenant must be a non-empty str, got {tenant!r:.80}")


def _unseen(server_id: str, tenant: str) -> ServerState:
    """The state of a server paused before it was first seen: no build, no episode."""
    return ServerState(server_id, tenant, None, Compliance.NOT_APPLICABLE, None, None, None)


def _is_counted(server_id: str, connector: str) -> bool:
    """Whether ``server_id`` counts towards ``connector``'s ``max_servers``."""
    return server_id != connector and server_id != f"{connector}/{OVERFLOW}"


def _covering(ledger: PauseLedger, server_id: str) -> tuple[Pause, ...]:
    """The pauses of ``server_id``: its own, its tenant's, and its connector's.

    A pause granted to a connector-level id (every pause granted before states were kept
    per server) covers every server behind that connector, so the upgrade frees nobody and
    unpauses nobody.
    """
    own = ledger.covering(server_id)
    connector = connector_of(server_id)
    if connector == server_id:
        return own
    inherited = (attrs.evolve(p, server_id=server_id) for p in ledger.pauses_for(connector))
    return (*own, *(p for p in inherited if p not in own))
