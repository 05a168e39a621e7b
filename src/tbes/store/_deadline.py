"""The per-check deadline: one budget of time for a whole check, retries included.

Decision: the :class:`~tbes.enforcer.Enforcer` opens the budget around each check and every
store reads what is left of it (to set a lock, statement or busy timeout) through a context
variable, so the :class:`~tbes.store.StateStore` methods keep their signatures and a store used
outside a check keeps its own timeout.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DEFAULT_CHECK_TIMEOUT", "check_deadline", "expired", "remaining"]

#: Seconds a check may take, retries included: well under Postfix's milter and policy
#: timeouts and Sendmail's 10 s read timeout, so a stalled store fails open in time.
DEFAULT_CHECK_TIMEOUT = 2.0

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "tbes_check_deadline", default=None
)


@contextmanager
def check_deadline(seconds: float) -> Iterator[float]:
    """Give the work inside ``seconds`` of monotonic time; yields the deadline itself.

    Nested budgets never extend an outer one: the earlier deadline wins.
    """
    deadline = time.monotonic() + seconds
    outer = _DEADLINE.get()
    if outer is not None:
        deadline = min(deadline, outer)
    token = _DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        _DEADLINE.reset(token)


def remaining(default: float) -> float:
    """Seconds left in the current check (never negative), or ``default`` outside a check.

    Inside a check the result is also capped at ``default``: a store's own timeout still holds.
    """
    deadline = _DEADLINE.get()
    if deadline is None:
        return default
    return max(0.0, min(default, deadline - time.monotonic()))


def expired() -> bool:
    """True when a check is running and its deadline has passed."""
    deadline = _DEADLINE.get()
    return deadline is not None and time.monotonic() >= deadline
