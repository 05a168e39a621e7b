"""Running tbes as a daemon: ``tbes policy``, ``tbes milter`` and ``tbes serve``.

One process, one event loop, one store and one enforcer shared by every service it runs.
What an administrator expects of a mail daemon, as of postgrey or policyd-spf:

* **Start**: the configuration, the catalog and the store (a SQLite file, or a
  ``postgresql://`` URL) are opened, then every address is bound; only when all are bound
  does the daemon log that it listens. An address in use or refused is one line on stderr
  and exit code 2, as is any other error at start: never a traceback.
* **SIGHUP** reloads the configuration (connectors, own_hosts, policy, catalog, ...): the
  new configuration and a new enforcer over the same store are built off the loop, then
  swapped into every service as one tuple, so a check sees the old pair or the new, never
  a mix; open connections stay. A configuration that does not load is one ERROR line
  naming the file and the reason, and the running one stays.
* The discovery queue of the unmapped Exchange senders (docs/discovery.md) is written
  out on a reload (the old one, once swapped) and on shutdown.
* **Notifications**: with ``[[notifier]]`` tables, a background thread
  (:class:`~tbes.outbox.OutboxSender`) delivers the store's outbox; it starts with the
  services, follows reloads, and stops after them (docs/notifications.md).
* **SIGTERM/SIGINT** stop accepting, let each connection finish the answer in hand for up
  to :data:`DRAIN_SECONDS`, close the rest and exit 0.

Log lines go where ``--log-target`` says, formatted by :mod:`tbes.adapters._log_output`;
``--metrics HOST:PORT`` serves Prometheus metrics (:mod:`tbes.adapters._metrics`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import socket
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs

from tbes.adapters import _metrics
from tbes.adapters._decision_log import EventLogNotifier
from tbes.adapters._store_watch import WatchedStore
from tbes.adapters.config import (
    AdapterConfig,
    Checker,
    load_config,
    make_discovery,
    make_enforcer,
    make_receivers,
)
from tbes.adapters.listen import ListenAddress, parse_listen_address
from tbes.errors import TbesError

__all__ = ["DRAIN_SECONDS", "Daemon", "DaemonError", "open_store", "reason"]

_log = logging.getLogger("tbes.daemon")

DRAIN_SECONDS = 5.0
"""How long a stopping daemon waits for its connections to finish the answer in hand."""

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class DaemonError(TbesError):
    """The daemon cannot start: the message is the one line an administrator reads."""


def open_store(db: str) -> Any:
    """The store ``--db`` names: a ``postgresql://`` URL, else a SQLite file path."""
    if db.startswith(_POSTGRES_SCHEMES):
        from tbes.store.postgres import PostgresStore

        return PostgresStore(db)
    from tbes.store.sqlite import SQLiteStore

    return SQLiteStore(Path(db))


@attrs.frozen
class _Source:
    """Where the configuration comes from, read again on each reload."""

    config_path: Path
    catalog_path: Path | None  # `tbes --catalog FILE` wins over the config's catalog

    def load(self, store: Any) -> tuple[AdapterConfig, Checker]:
        from tbes.catalog import Catalog

        config = load_config(self.config_path)
        catalog = (
            config.load_catalog() if self.catalog_path is None else Catalog.load(self.catalog_path)
        )
        discovery = make_discovery(config, store)
        enforcer = make_enforcer(
            config, store, catalog=catalog, notifier=EventLogNotifier(), discovery=discovery
        )
        return config, enforcer


class Daemon:
    """The milter and/or the policy service of one process (see the module docstring)."""

    def __init__(
        self,
        *,
        config_path: Path,
        db: str,
        catalog_path: Path | None = None,
        milter: str | None = None,
        policy: str | None = None,
        metrics: str | None = None,
    ) -> None:
        self._source = _Source(config_path, catalog_path)
        self._db = db
        self._milter_at = None if milter is None else parse_listen_address(milter)
        self._policy_at = None if policy is None else parse_listen_address(policy)
        self._metrics_at = None if metrics is None else _metrics.parse_metrics_address(metrics)
        self._store: Any = None
        self._loaded: tuple[AdapterConfig, Checker] | None = None
        self._sender: Any = None  # the outbox sender, with a store that keeps an outbox
        self._reloading: asyncio.Task[None] | None = None

    def open(self) -> None:
        """Open the store and load the configuration; DaemonError naming what failed."""
        if self._metrics_at is not None:
            try:
                _metrics.enable()
            except ImportError as error:
                raise DaemonError(
                    "--metrics needs prometheus-client: pip install 'tbes[metrics]'"
                ) from error
        try:
            self._store = WatchedStore(open_store(self._db))
        except (TbesError, ValueError, OSError, sqlite3.Error) as error:
            raise DaemonError(reason(error)) from error
        try:
            self._loaded = self._source.load(self._store)
            self._sender = _sender(self._store, *self._loaded)
        except (TbesError, ValueError, OSError) as error:
            self._store.close()
            raise DaemonError(reason(error)) from error

    def run(self) -> None:
        """Bind, serve until SIGTERM/SIGINT (reloading on SIGHUP), drain; after :meth:`open`."""
        assert self._loaded is not None, "open() first"
        if self._sender is not None:
            self._sender.start()
        try:
            asyncio.run(self._serve(*self._loaded))
        finally:
            _close_discovery(self._loaded[1])
            if self._sender is not None:
                self._sender.stop()
            self._store.close()

    async def _serve(self, config: AdapterConfig, checker: Checker) -> None:
        from tbes.adapters.milter import MilterLimits, MilterService
        from tbes.adapters.postfix_policy import PolicyLimits, PolicyService

        milter = MilterService(checker, config, limits=MilterLimits())
        policy = PolicyService(checker, config, PolicyLimits())
        servers: list[asyncio.Server] = []
        metrics_server: Any = None
        try:
            # Bind everything first: "listening" is said only once it is true.
            if self._milter_at is not None:
                servers.append(await _bind(self._milter_at, milter.start))
            if self._policy_at is not None:
                servers.append(await _bind(self._policy_at, policy.start))
            if self._metrics_at is not None:
                metrics_server = _bind_metrics(self._metrics_at)
        except BaseException:
            for server in servers:
                server.close()
            milter.close()
            policy.close()
            raise
        try:
            for name, at in (
                ("milter", self._milter_at),
                ("policy service", self._policy_at),
                ("metrics", self._metrics_at),
            ):
                if at is not None:
                    _log.info("tbes %s listening on %s", name, at)
            await self._until_stopped(milter, policy)
        finally:
            for server in servers:
                server.close()
            milter.drain()
            policy.drain()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DRAIN_SECONDS
            while (milter.connections or policy.open_connections) and loop.time() < deadline:
                await asyncio.sleep(0.02)
            milter.close()
            policy.close()
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            _log.info("tbes stopped")

    async def _until_stopped(self, milter: Any, policy: Any) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        for signum in signals[:2]:
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon, milter, policy)
        try:
            await stop.wait()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            if self._reloading is not None:
                self._reloading.cancel()

    def _reload_soon(self, *services: Any) -> None:
        if self._reloading is not None and not self._reloading.done():
            _log.warning("tbes: SIGHUP while a reload runs; reload again once it is done")
            return
        self._reloading = asyncio.get_running_loop().create_task(self._reload(services))

    async def _reload(self, services: tuple[Any, ...]) -> None:
        try:
            config, checker = await asyncio.to_thread(self._source.load, self._store)
            receivers = _receivers(config, checker)
        except Exception as error:  # any failure keeps the running configuration
            _metrics.active().reload(False)
            _log.error(
                "tbes: reloading %s failed, keeping the running configuration: %s",
                self._source.config_path,
                reason(error),
            )
            return
        old = self._loaded
        for service in services:
            service.replace(config, checker)
        self._loaded = (config, checker)
        if old is not None:
            # The old queue writes what it holds: nothing seen before the reload is lost.
            await asyncio.to_thread(_close_discovery, old[1])
        if self._sender is not None:
            self._sender.replace(receivers)
        _metrics.active().reload(True)
        _log.info("tbes: reloaded %s", self._source.config_path)


def _close_discovery(checker: Checker) -> None:
    """Write what the checker's discovery queue holds and stop its thread (if it has one)."""
    queue = getattr(checker, "discovery", None)
    if queue is not None:
        queue.close()


def _receivers(config: AdapterConfig, checker: Checker) -> list[Any]:
    return make_receivers(config, catalog=getattr(checker, "catalog", None))


def _sender(store: Any, config: AdapterConfig, checker: Checker) -> Any:
    """The outbox sender of ``config``'s notifiers (even none: it prunes), if the store has one."""
    if not getattr(store, "supports_outbox", False):
        return None
    from tbes.outbox import OutboxSender

    days = config.notifications
    return OutboxSender(
        store,
        _receivers(config, checker),
        clock=config.clock,
        keep=dt.timedelta(days=days.keep_days),
        expire=dt.timedelta(days=days.expire_days),
    )


def _osreason(error: OSError) -> str:
    # asyncio's bind error repeats the address; the system's words are enough. A name
    # that does not resolve (gaierror) has its own words and a negative number.
    if isinstance(error, socket.gaierror) or not error.errno or error.errno < 0:
        return error.strerror or str(error)
    return os.strerror(error.errno)


def reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return " ".join(str(error).split()) or type(error).__name__


async def _bind(
    address: ListenAddress, start: Callable[[ListenAddress], Awaitable[asyncio.Server]]
) -> asyncio.Server:
    try:
        return await start(address)
    except OSError as error:
        raise DaemonError(f"cannot listen on {address}: {_osreason(error)}") from None


def _bind_metrics(address: ListenAddress) -> Any:
    try:
        return _metrics.serve_metrics(_metrics.active(), address)
    except OSError as error:
        raise DaemonError(f"cannot listen on {address}: {_osreason(error)}") from None
