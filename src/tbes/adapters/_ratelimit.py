"""A rate-limited logger: one record per kind of event per interval, with a count of the rest.

Decision: an adapter facing the network logs what peers do to it (resets, garbage,
timeouts, refusals). A misbehaving or hostile peer can make that happen thousands of times
a second, so each *kind* of event is logged at most once per ``interval``; the record that
ends a quiet period says how many like it were suppressed before it. Counts wait for the
next record of their kind (nothing runs in the background), so a burst that is never
followed by another event of its kind leaves its count unreported. Keys must come from a
small fixed set chosen by the caller (never a peer address): the logger keeps one entry
per key. Thread-safe, so the threaded milter can share one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

__all__ = ["RateLimitedLogger"]


class RateLimitedLogger:
    """Log through ``logger`` at most once per ``interval`` seconds per key."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval >= 0:  # also refuses NaN
            raise ValueError(f"interval must be >= 0 seconds, got {interval!r}")
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (when it was last logged, how many were suppressed since)
        self._seen: dict[Hashable, tuple[float, int]] = {}

    def log(
        self,
        key: Hashable,
        level: int,
        msg: str,
        *args: object,
        exc_info: bool = False,
    ) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval`` ago.

        Returns whether a record was emitted. ``exc_info`` applies to emitted records only,
        so a flood of faults gives at most one traceback per interval.
        """
        if not self._logger.isEnabledFor(level):
            return False
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self._interval:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            suppressed = 0 if last is None else last[1]
            self._seen[key] = (now, 0)
        if suppressed:
            msg += " (%d more like this suppressed in the last %.0f s)"
            args = (*args, suppressed, now - last[0] if last is not None else 0.0)
        self._logger.log(level, msg, *args, exc_info=exc_info, stacklevel=2)
        return True
