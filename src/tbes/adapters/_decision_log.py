"""The decision log: every adapter's one check path, and the one line it logs per decision.

:func:`run_check` is how the milter, the policy service and the aiosmtpd handler ask a
:class:`~tbes.adapters.config.Checker`: it names the connection through the configuration,
times the check, turns any fault into the fault decision (accept, or ``451 4.3.0`` with
``fail_closed``) and never raises; each decision is logged once at INFO on the logger
``tbes.decisions`` and counted in the metrics. The line's keys are always the same
(:data:`KEYS`): ``adapter``, ``connector`` (the matching ``[[connector]]`` rule's name,
``-`` for none), ``kind``, ``tenant``, ``server``, ``build`` and ``status`` (the server's
as the check left them in the store, seen through
:class:`~tbes.adapters._store_watch.WatchedStore`; without a watched store, the sender
hop's; ``-`` without one), ``stage``, ``action``, ``code`` (the reply code, ``-`` for
accept), ``enforced`` (``False`` in monitor mode and under an exemption), ``would`` and
``would_code`` (the action and reply code enforcement would have given: those of
``action`` and ``code`` when enforced), ``fault`` (``store``, ``timeout``, ``busy`` or
``error``; ``-`` for none) and ``micros``, the check's time. No header body or message
text beyond the sender hop's build is logged, and :mod:`tbes.adapters._log_output`
escapes every value.

An adapter that answers before the check ends (a timeout) holds an :class:`Attempt`: the
first of the check and the timeout to settle it logs, so a message gets one line.
:class:`EventLogNotifier` logs the enforcer's events (DETECTED, STAGE_CHANGED,
FULLY_BLOCKED, ...) at WARNING on ``tbes.events``, with keys of the same kind, through the
same formatter.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from tbes.adapters import _metrics
from tbes.adapters._ratelimit import RateLimitedLogger
from tbes.adapters._store_watch import Watched, take
from tbes.adapters.config import AdapterConfig, Checker
from tbes.catalog import Catalog
from tbes.compliance import assess
from tbes.decision import Action, Decision
from tbes.enforcer import FAIL_CLOSED_REPLY, Connection, utc_now
from tbes.policy import Policy
from tbes.received import find_sender
from tbes.version import ExchangeBuild

__all__ = [
    "KEYS",
    "Announced",
    "Attempt",
    "EventLogNotifier",
    "fault_decision",
    "log_fault",
    "run_check",
]

_decisions = logging.getLogger("tbes.decisions")
_events = logging.getLogger("tbes.events")
_log = logging.getLogger(__name__)
_ZERO = dt.timedelta(0)
_LOGGERS = {
    "milter": "tbes.adapters.milter",
    "policy": "tbes.adapters.postfix_policy",
    "aiosmtpd": "tbes.adapters.aiosmtpd",
}

KEYS = (
    "adapter",
    "connector",
    "kind",
    "tenant",
    "server",
    "build",
    "status",
    "stage",
    "action",
    "code",
    "enforced",
    "would",
    "would_code",
    "fault",
    "micros",
)
"""The keys of every decision line, in order."""

FAULTS = ("store", "timeout", "busy", "error")
"""What can make a fault decision: the store failed, the check took too long, no check
thread was free in time, or anything else went wrong (a bug, a bad value)."""


class Attempt:
    """One check that is answered once: by its result, or by a timeout that came first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled = False

    def settle(self) -> bool:
        """True for the first caller only: that one answers and logs."""
        with self._lock:
            if self._settled:
                return False
            self._settled = True
            return True


def fault_decision(config: AdapterConfig, why: str, conn: Connection | None = None) -> Decision:
    """The decision a fault makes: accept (fail open), or ``451 4.3.0`` with ``fail_closed``
    unless ``conn``'s connector (or, without one, the configuration) is in monitor mode."""
    if conn is not None and conn.connector is not None:
        monitored = conn.connector in config.monitor_connectors
    else:
        monitored = config.mode == "monitor"
    if config.fail_closed and not monitored:
        return Decision(Action.THROTTLE, None, FAIL_CLOSED_REPLY, False, False, _ZERO, None, why)
    return Decision(Action.ACCEPT, None, None, False, False, _ZERO, None, why)


def run_check(
    adapter: str,
    checker: Checker,
    config: AdapterConfig,
    ask: Callable[[], tuple[Connection, Sequence[str]]],
    *,
    peer: object = None,
    attempt: Attempt | None = None,
    faults: RateLimitedLogger | None = None,
) -> Decision:
    """Decide for the connection and Received values ``ask`` returns; never raises.

    Runs in a worker thread. Any exception (from ``ask`` or the check) is logged at WARNING
    on the adapter's logger naming ``peer``, with its traceback (through ``faults`` when
    given, so at most once per its interval), and answered with :func:`fault_decision`.
    """
    take()  # what a check that raised past the enforcer left on this thread is not ours
    conn: Connection | None = None
    received: Sequence[str] = ()
    started = time.perf_counter()
    fault: str | None = None
    try:
        conn, received = ask()
        decision = checker.check(conn, received)
    except Exception:
        fault = "error"
        if faults is None:
            faults = RateLimitedLogger(logging.getLogger(_LOGGERS.get(adapter, __name__)), 0.0)
        faults.log(
            "fault",
            logging.WARNING,
            "tbes %s: deciding for %r failed; %s the message",
            adapter,
            peer,
            "accepting"
            if fault_decision(config, "", conn).action is Action.ACCEPT
            else "deferring",
            exc_info=True,
        )
        decision = fault_decision(config, "the check failed", conn)
    seconds = time.perf_counter() - started
    seen = take()
    if seen.failed and fault is None:
        fault = "store"
    _metrics.active().latency(adapter, seconds)
    if attempt is None or attempt.settle():
        _emit(adapter, checker, config, conn, received, seen, decision, fault, seconds)
    return decision


def log_fault(
    adapter: str, config: AdapterConfig, conn: Connection | None, kind: str, decision: Decision
) -> None:
    """Log and count a fault decision an adapter made without a check result (``kind``)."""
    _emit(adapter, None, config, conn, (), Watched(), decision, kind, None)


def _emit(
    adapter: str,
    checker: Checker | None,
    config: AdapterConfig,
    conn: Connection | None,
    received: Sequence[str],
    seen: Watched,
    decision: Decision,
    fault: str | None,
    seconds: float | None,
) -> None:
    stage = None if decision.stage is None else decision.stage.number
    _metrics.active().decision(
        adapter,
        decision.action.value,
        stage,
        fault,
        would=None if decision.enforced else decision.would_action.value,
    )
    if not _decisions.isEnabledFor(logging.INFO):
        return
    try:
        fields = _fields(adapter, checker, config, conn, received, seen, decision, fault, seconds)
    except Exception:  # the log line must never cost the answer
        _log.warning("tbes %s: cannot build the decision log line", adapter, exc_info=True)
        return
    # Logger.handle on a record of its own making: what Logger.info does, without looking up
    # the caller's file and line in the stack (no formatter prints them), a tenth of a check.
    _decisions.handle(
        _decisions.makeRecord(
            _decisions.name,
            logging.INFO,
            __file__,
            0,
            "decision",
            (),
            None,
            extra={"tbes": fields},
        )
    )


def _fields(
    adapter: str,
    checker: Checker | None,
    config: AdapterConfig,
    conn: Connection | None,
    received: Sequence[str],
    seen: Watched,
    decision: Decision,
    fault: str | None,
    seconds: float | None,
) -> dict[str, object]:
    build = status = None
    # The server the check judged: with server identity, NAME/HOST from the state it left.
    server = None if conn is None else conn.server_id
    if seen.consulted:
        # The server's state as the check left it: no second look at the headers.
        if seen.state is not None:
            build = None if seen.state.build is None else str(seen.state.build)
            status = seen.state.status.value
            server = seen.state.server_id
    elif conn is not None and received and conn.kind in _policy_connectors(checker):
        # A store that is not watched (an embedding program's): read the sender hop again.
        evidence = find_sender(
            received, own_hosts=config.own_hosts, client=conn.peer_ip or conn.peer_host
        )
        if evidence is not None:
            build = str(evidence.build)
            status = _status(checker, evidence.build)
    # The line's fields, in the order of KEYS.
    return {
        "adapter": adapter,
        "connector": None if conn is None else conn.connector,
        "kind": None if conn is None else conn.kind.value.lower(),
        "tenant": None if conn is None else conn.tenant,
        "server": server,
        "build": build,
        "status": status,
        "stage": None if decision.stage is None else decision.stage.number,
        "action": decision.action.value,
        "code": None if decision.reply is None else decision.reply.code,
        "enforced": decision.enforced,
        "would": decision.would_action.value,
        "would_code": None if decision.would_reply is None else decision.would_reply.code,
        "fault": fault,
        "micros": None if seconds is None else round(seconds * 1e6),
    }


def _policy_connectors(checker: Checker | None) -> frozenset[object]:
    policy = getattr(checker, "policy", None)
    return frozenset(policy.connectors) if isinstance(policy, Policy) else frozenset()


def _status(checker: Checker | None, build: ExchangeBuild) -> str | None:
    policy, catalog = getattr(checker, "policy", None), getattr(checker, "catalog", None)
    if not isinstance(policy, Policy) or not isinstance(catalog, Catalog):
        return None
    baseline = policy.baseline_at(utc_now())
    return assess(build, baseline=baseline, catalog=catalog).status.value


class Announced(Protocol):
    """What the event log reads of an enforcement event (:class:`tbes.enforcer.Event`)."""

    @property
    def kind(self) -> enum.Enum: ...

    @property
    def server_id(self) -> str: ...

    @property
    def tenant(self) -> str: ...

    @property
    def at(self) -> dt.datetime: ...

    @property
    def stage(self) -> int | None: ...

    @property
    def build(self) -> object: ...

    @property
    def detail(self) -> str: ...


class EventLogNotifier:
    """Logs each enforcement event at WARNING on ``tbes.events`` and counts it.

    Only the process whose write announced the event hears of it (the enforcer notifies
    the compare-and-swap winner), so each event is logged once across MTA processes.
    """

    def notify(self, event: Announced) -> None:
        """Log ``event``: kind, server, tenant, stage, build, time and its sentence."""
        kind = str(event.kind.value)
        _metrics.active().event(kind)
        fields = {
            "event": kind,
            "server": event.server_id,
            "tenant": event.tenant,
            "stage": event.stage,
            "build": None if event.build is None else str(event.build),
            "at": event.at.isoformat(),
            "detail": event.detail,
        }
        _events.warning("event", extra={"tbes": fields})
