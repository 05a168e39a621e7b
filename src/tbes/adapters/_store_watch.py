"""A store wrapper that watches what a check does to the store, for the decision log and metrics.

The enforcer turns a store error into a fail-open (or fail-closed) decision that looks like
any other, and its decision does not carry the server's build or status; a daemon wraps
its store in :class:`WatchedStore` to learn both without a second look at the headers or
the store. Each error the store raises (a lost compare-and-swap race,
:class:`~tbes.errors.StoreConflictError`, is no error: the enforcer retries it) is counted
in the ``store errors`` metric, and the last server state read or written is kept. Both
are marked on the calling thread, where :func:`take` finds them after the check: the check
and its store calls run on one worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import attrs

from tbes.adapters import _metrics
from tbes.errors import StoreConflictError
from tbes.state import ServerState
from tbes.store.protocol import StateWrite, Versioned

__all__ = ["Watched", "WatchedStore", "take"]

_marks = threading.local()


@attrs.frozen
class Watched:
    """What a watched store saw on this thread since the last :func:`take`.

    ``consulted``: a server state was read or written; ``state``: the last one (``None``
    when the read found none); ``failed``: the store raised an error.
    """

    consulted: bool = False
    state: ServerState | None = None
    failed: bool = False


_NOTHING = Watched()


def take() -> Watched:
    """What the watched stores saw on this thread since the last call; forgets it."""
    seen: Watched = getattr(_marks, "seen", _NOTHING)
    _marks.seen = _NOTHING
    return seen


def _mark(
    *, consulted: bool = False, state: ServerState | None = None, failed: bool = False
) -> None:
    # Called on every store call of a check: built directly, not through attrs.evolve.
    seen: Watched = getattr(_marks, "seen", _NOTHING)
    if consulted:
        _marks.seen = Watched(True, state, seen.failed)
    if failed:
        _marks.seen = Watched(seen.consulted, seen.state, True)


class WatchedStore:
    """``store``, with every call watched (see the module docstring)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value) or name.startswith("_"):
            return value
        watched = _watched(value)
        # Kept: __getattr__ is asked only for names the instance lacks, so the next call of
        # this method (every message calls get) finds it without wrapping it again.
        self.__dict__[name] = watched
        return watched


def _watched(call: Callable[..., Any]) -> Callable[..., Any]:
    def watched(*args: Any, **kwargs: Any) -> Any:
        try:
            result = call(*args, **kwargs)
        except StoreConflictError:
            raise
        except Exception:
            _mark(failed=True)
            _metrics.active().store_error()
            raise
        _note(call.__name__, args, result)
        return result

    return watched


def _note(name: str, args: tuple[Any, ...], result: object) -> None:
    """Keep the server state a ``get``, ``put`` or ``put_many`` read or wrote."""
    if name == "get":
        value = result.value if isinstance(result, Versioned) else None
        if result is None or isinstance(value, ServerState):
            _mark(consulted=True, state=value)
    elif name == "put" and args and isinstance(args[0], ServerState):
        _mark(consulted=True, state=args[0])
    elif name == "put_many" and args:
        for write in args[0]:
            if isinstance(write, StateWrite):
                _mark(consulted=True, state=write.state)
