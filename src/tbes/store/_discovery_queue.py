"""The discovery queue: sightings of unmapped Exchange senders, written to a store in batches.

Decision: discovery must cost the mail path nothing it can feel. A check hands over one
callable per unmapped message (:meth:`DiscoveryQueue.offer`): a non-blocking put into a
bounded queue, dropped and counted when the queue is full, never an exception. A
background thread runs the callables (reading the headers and assessing the build happen
there, not in the check), merges what they find per peer in memory, and writes the batch
with one :meth:`~tbes.store.base.RowStore.record_discovered` every ``flush_seconds`` (or
sooner, when ``max_servers`` peers are pending). A store fault loses that batch, logged at
WARNING: discovery is a report, and never holds mail or enforcement state. :meth:`close`
(a daemon's shutdown or reload) writes what is pending before it returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from tbes.discovery import DiscoveredServer, merge
from tbes.errors import InvalidValueError

__all__ = ["DEFAULT_CAPACITY", "DEFAULT_FLUSH_SECONDS", "DEFAULT_MAX_SERVERS", "DiscoveryQueue"]

_log = logging.getLogger(__name__)

DEFAULT_MAX_SERVERS = 10_000
"""How many discovered servers a store keeps unless configured otherwise."""

DEFAULT_FLUSH_SECONDS = 5.0
"""How often pending sightings are written unless configured otherwise."""

DEFAULT_CAPACITY = 4096
"""How many messages may wait for the background thread before more are dropped."""

Sight = Callable[[], DiscoveredServer | None]
"""What a check offers: called off the mail path, it returns the sighting or ``None``."""

_POLL = 0.25  # seconds between the thread's looks at the queue (4,096 fit: 16k messages/s)


def _number(name: str, value: object, *, integer: bool) -> None:
    wrong = (
        type(value) is not int
        if integer
        else isinstance(value, bool) or not isinstance(value, int | float)
    )
    if wrong or not 0 < value < float("inf"):  # type: ignore[operator]
        kind = "an int >= 1" if integer else "a finite number of seconds > 0"
        raise InvalidValueError(f"{name} must be {kind}, got {value!r:.80}")


class DiscoveryQueue:
    """Sightings offered by checks, merged and written to ``store`` by a background thread.

    ``store`` needs :meth:`~tbes.store.base.RowStore.record_discovered` (every
    :class:`~tbes.store.base.RowStore` has it; a store without it raises
    :class:`~tbes.errors.InvalidValueError` here). ``max_servers`` bounds the stored table
    and the pending batch; ``flush_seconds`` is how often the batch is written;
    ``capacity`` how many offers may wait. The thread starts on the first offer.
    ``dropped`` counts offers refused because the queue was full (or closed), ``recorded``
    the sightings written, ``failed`` those lost to a store fault.
    """

    def __init__(
        self,
        store: Any,
        *,
        max_servers: int = DEFAULT_MAX_SERVERS,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if not callable(getattr(store, "record_discovered", None)):
            raise InvalidValueError(
                f"store {type(store).__name__} keeps no discovered servers (it has no "
                "record_discovered): build it on tbes.store.RowStore, or turn discovery off"
            )
        _number("max_servers", max_servers, integer=True)
        _number("flush_seconds", flush_seconds, integer=False)
        _number("capacity", capacity, integer=True)
        self.store = store
        self.max_servers = max_servers
        self.flush_seconds = float(flush_seconds)
        self._queue: queue.Queue[Sight] = queue.Queue(maxsize=capacity)
        self._pending: dict[str, DiscoveredServer] = {}
        self._pending_count = 0  # sightings merged into _pending
        self._work = threading.Lock()  # held while sightings are merged or written
        self._counts = threading.Lock()
        self._dropped = 0
        self._reported_drops = 0
        self.recorded = 0
        self.failed = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    @property
    def dropped(self) -> int:
        """Offers refused because the queue was full or closed."""
        return self._dropped

    def offer(self, sight: Sight) -> bool:
        """Queue ``sight`` without waiting; False (and counted) if full or closed. Never raises."""
        try:
            if self._stopping.is_set():
                raise queue.Full
            self._queue.put_nowait(sight)
        except queue.Full:
            with self._counts:
                self._dropped += 1
            return False
        if self._thread is None:
            self._start_thread()
        return True

    def flush(self) -> int:
        """Run every queued sighting and write the pending batch now; how many were written."""
        with self._work:
            while True:
                try:
                    sight = self._queue.get_nowait()
                except queue.Empty:
                    break
                self._take(sight)
            return self._write()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is pending; later offers are dropped."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self.flush()

    # ---- the background thread ------------------------------------------------------------

    def _start_thread(self) -> None:
        with self._start:
            if self._thread is None and not self._stopping.is_set():
                thread = threading.Thread(target=self._loop, name="tbes-discovery", daemon=True)
                thread.start()
                self._thread = thread

    def _loop(self) -> None:
        # Wakes every _POLL seconds and takes what queued meanwhile, in one go: waiting on
        # the queue instead would wake this thread for every offer, and each wake-up takes
        # the interpreter's lock from the event loop serving the mail (a futex round trip).
        due = time.monotonic() + self.flush_seconds
        while not self._stopping.wait(min(_POLL, max(0.0, due - time.monotonic()))):
            with self._work:
                while True:
                    try:
                        sight = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    self._take(sight)
                if time.monotonic() >= due or len(self._pending) >= self.max_servers:
                    self._write()
                    due = time.monotonic() + self.flush_seconds

    def _take(self, sight: Sight) -> None:
        """With ``_work`` held: run one sighting and merge it into the pending batch."""
        try:
            record = sight()
        except Exception:  # a bad header or a bad value loses one sighting, nothing else
            _log.debug("tbes: a discovery sighting failed", exc_info=True)
            return
        if record is None:
            return
        if record.peer_ip not in self._pending and len(self._pending) >= self.max_servers:
            self._write()  # bounded memory: write the full batch, start another
        self._pending[record.peer_ip] = merge(self._pending.get(record.peer_ip), record)
        self._pending_count += 1

    def _write(self) -> int:
        """With ``_work`` held: write the pending batch; how many sightings it held."""
        self._report_drops()
        if not self._pending:
            return 0
        batch, count = list(self._pending.values()), self._pending_count
        self._pending, self._pending_count = {}, 0
        try:
            self.store.record_discovered(batch, max_servers=self.max_servers)
        except Exception as error:  # a store fault loses a report batch, never mail
            self.failed += count
            _log.warning(
                "tbes: could not record %d discovered server%s: %s",
                len(batch),
                "" if len(batch) == 1 else "s",
                error,
            )
            return 0
        self.recorded += count
        return count

    def _report_drops(self) -> None:
        dropped = self._dropped
        if dropped > self._reported_drops:
            _log.warning(
                "tbes: discovery queue full: %d sighting%s dropped since the last write",
                dropped - self._reported_drops,
                "" if dropped - self._reported_drops == 1 else "s",
            )
            self._reported_drops = dropped
