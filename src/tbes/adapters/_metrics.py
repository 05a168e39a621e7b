"""Prometheus metrics of a daemon: what ``--metrics HOST:PORT`` serves (extra ``metrics``).

The adapters report to :func:`active`, which is a do-nothing sink until a daemon calls
:func:`enable`, so that a library user who embeds an adapter needs no prometheus-client
and pays one attribute lookup per event. The metrics live in a registry of their own, so
the process's default collectors (and anything else the embedding program registered)
stay out of tbes's page unless asked for.
"""

from __future__ import annotations

import threading
from typing import Any

from tbes.adapters.listen import ListenAddress, parse_listen_address
from tbes.errors import TbesError

__all__ = ["Metrics", "active", "enable", "parse_metrics_address", "serve_metrics"]

# Seconds: a check is normally well under a millisecond; the store's deadline is 2 s.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The sink the adapters report to; this base class records nothing."""

    def decision(
        self,
        adapter: str,
        action: str,
        stage: int | None,
        fault: str | None,
        *,
        would: str | None = None,
    ) -> None:
        """One decision answered (with the fault that made it, if any).

        ``would`` is the action enforcement would have given a decision that is not
        enforced (monitor mode, an exemption); ``None`` for an enforced one.
        """

    def latency(self, adapter: str, seconds: float) -> None:
        """How long one check took."""

    def store_error(self) -> None:
        """The store raised an error (not a lost compare-and-swap race)."""

    def connections(self, adapter: str, delta: int) -> None:
        """An MTA connection opened (+1) or closed (-1)."""

    def reload(self, ok: bool) -> None:
        """A configuration reload succeeded or failed."""

    def event(self, kind: str) -> None:
        """An enforcement event (DETECTED, FULLY_BLOCKED, ...) announced by this process."""


class _Prometheus(Metrics):
    def __init__(self) -> None:
        import prometheus_client as prom

        # The process is tbes's: its start time is enough, no *_created series per metric.
        prom.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self._decisions = prom.Counter(
            "tbes_decisions", "Decisions answered", ["adapter", "action", "stage"], registry=r
        )
        self._not_enforced = prom.Counter(
            "tbes_decisions_not_enforced",
            "Decisions accepted without enforcing (monitor mode, exemptions), by the action "
            "enforcement would have given",
            ["adapter", "would_action", "stage"],
            registry=r,
        )
        self._faults = prom.Counter(
            "tbes_faults",
            "Decisions made by a fault (fail open or closed)",
            ["adapter", "kind"],
            registry=r,
        )
        self._latency = prom.Histogram(
            "tbes_check_seconds", "Time of one check", ["adapter"], buckets=_BUCKETS, registry=r
        )
        self._store_errors = prom.Counter("tbes_store_errors", "Store errors", registry=r)
        self._open = prom.Gauge(
            "tbes_open_connections", "Open MTA connections", ["adapter"], registry=r
        )
        self._reloads = prom.Counter(
            "tbes_config_reloads", "Configuration reloads (SIGHUP)", ["result"], registry=r
        )
        self._events = prom.Counter(
            "tbes_events", "Enforcement events announced by this process", ["kind"], registry=r
        )
        for result in ("ok", "failed"):
            self._reloads.labels(result)
        self._store_errors.inc(0)

    def decision(
        self,
        adapter: str,
        action: str,
        stage: int | None,
        fault: str | None,
        *,
        would: str | None = None,
    ) -> None:
        number = "none" if stage is None else str(stage)
        self._decisions.labels(adapter, action, number).inc()
        if would is not None:
            self._not_enforced.labels(adapter, would, number).inc()
        if fault is not None:
            self._faults.labels(adapter, fault).inc()

    def latency(self, adapter: str, seconds: float) -> None:
        self._latency.labels(adapter).observe(seconds)

    def store_error(self) -> None:
        self._store_errors.inc()

    def connections(self, adapter: str, delta: int) -> None:
        self._open.labels(adapter).inc(delta)

    def reload(self, ok: bool) -> None:
        self._reloads.labels("ok" if ok else "failed").inc()

    def event(self, kind: str) -> None:
        self._events.labels(kind).inc()


_NOTHING = Metrics()
_active: Metrics = _NOTHING
_lock = threading.Lock()


def active() -> Metrics:
    """The sink to report to: the enabled metrics, else one that records nothing."""
    return _active


def enable() -> Metrics:
    """Start recording (once per process); ImportError without prometheus-client."""
    global _active
    with _lock:
        if _active is _NOTHING:
            _active = _Prometheus()
        return _active


class MetricsAddressError(TbesError, ValueError):
    """A ``--metrics`` address that is not ``HOST:PORT``."""


def parse_metrics_address(text: str) -> ListenAddress:
    """``HOST:PORT`` (or ``[IPv6]:PORT``) for the metrics page; a unix socket is refused."""
    address = parse_listen_address(text)
    if address.path is not None:
        raise MetricsAddressError(f"metrics are served over HTTP on HOST:PORT, not {text!r}")
    return address


def serve_metrics(metrics: Metrics, address: ListenAddress) -> Any:
    """Serve ``metrics`` at ``http://address/metrics`` in a thread; OSError if it cannot bind."""
    import prometheus_client as prom

    assert isinstance(metrics, _Prometheus)
    assert address.port is not None
    server, _thread = prom.start_http_server(
        address.port, addr=address.host or "0.0.0.0", registry=metrics.registry
    )
    return server
