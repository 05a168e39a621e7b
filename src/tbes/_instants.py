"""Instants: the one place that checks a datetime names an instant and brings it to UTC.

Decision: every public entry point that takes an instant checks it here, once, and the rest
of the core computes in UTC only; a :class:`datetime.date` is refused because which instant
it names depends on a time zone nobody gave.
"""

from __future__ import annotations

import datetime as dt

from tbes.errors import InvalidValueError, NaiveDatetimeError

__all__ = ["as_utc", "as_utc_or_none", "midnight", "require_aware"]


def require_aware(
    value: object, name: str, error: type[InvalidValueError] = InvalidValueError
) -> dt.datetime:
    """``value`` unchanged if it is a timezone-aware datetime.

    A naive datetime raises :class:`~tbes.errors.NaiveDatetimeError`; anything else (a date
    included) ``error``, naming ``name``.
    """
    if not isinstance(value, dt.datetime):
        raise error(f"{name} must be a timezone-aware datetime, got {value!r:.80}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(
            f"{name} must be timezone-aware, got naive {value!r}; attach a tzinfo such as "
            "datetime.UTC"
        )
    return value


def as_utc(
    value: object, name: str, error: type[InvalidValueError] = InvalidValueError
) -> dt.datetime:
    """``value`` in UTC; checked as :func:`require_aware` checks it."""
    if type(value) is dt.datetime and value.tzinfo is dt.UTC:  # the common case, at no cost
        return value
    return require_aware(value, name, error).astimezone(dt.UTC)


def as_utc_or_none(value: object, name: str) -> dt.datetime | None:
    """``value`` in UTC, or ``None``; see :func:`as_utc`."""
    return None if value is None else as_utc(value, name)


def midnight(day: dt.date) -> dt.datetime:
    """The instant at which the UTC day ``day`` begins."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
