"""A store wrapper that notices the store's errors, for the metrics and the decision log.

The enforcer turns a store error into a fail-open (or fail-closed) decision that looks like
any other; a daemon wraps its store in :class:`WatchedStore` to tell them apart. Each error
the store raises (a lost compare-and-swap race, :class:`~tbes.errors.StoreConflictError`,
is no error: the enforcer retries it) is counted in the ``store errors`` metric and marked
on the calling thread, where :func:`take_fault` finds it after the check: the check and
its store calls run on one worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tbes.adapters import _metrics
from tbes.errors import StoreConflictError

__all__ = ["WatchedStore", "take_fault"]

_marks = threading.local()


def take_fault() -> bool:
    """Whether a watched store failed on this thread since the last call; clears the mark."""
    failed = bool(getattr(_marks, "failed", False))
    _marks.failed = False
    return failed


class WatchedStore:
    """``store``, with every failing call counted and marked (see the module docstring)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value) or name.startswith("_"):
            return value
        return _watched(value)


def _watched(call: Callable[..., Any]) -> Callable[..., Any]:
    def watched(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except StoreConflictError:
            raise
        except Exception:
            _marks.failed = True
            _metrics.active().store_error()
            raise

    return watched
