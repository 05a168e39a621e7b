"""The exceptions tbes raises: one family under :class:`TbesError`.

Every error a caller can see derives from :class:`TbesError`, so one ``except`` clause
catches them all; the value errors also derive from :class:`ValueError` so that code
written against the standard library keeps working.
"""

from __future__ import annotations

__all__ = [
    "AdapterConfigError",
    "CatalogError",
    "DeliveryError",
    "InvalidBuildError",
    "InvalidPauseError",
    "InvalidValueError",
    "NaiveDatetimeError",
    "PauseConflictError",
    "PauseInPastError",
    "PolicyError",
    "PolicyProtocolError",
    "QuotaExceededError",
    "StageTableError",
    "StoreConflictError",
    "StoreError",
    "TbesError",
    "UnseenServerError",
]


class TbesError(Exception):
    """Base class of every error raised by tbes."""


class InvalidBuildError(TbesError, ValueError):
    """A text is not an Exchange build number."""


class InvalidValueError(TbesError, ValueError):
    """A value was given a field it cannot hold (an empty id, a negative count, …)."""


class PolicyError(InvalidValueError):
    """A policy name is unknown or a policy setting is invalid."""


class InvalidPauseError(InvalidValueError):
    """A pause or pause ledger was given a value it cannot hold (days < 1, an empty id, …)."""


class UnseenServerError(InvalidPauseError):
    """A pause names a server tbes has never seen, and was not forced (a typo charges no quota)."""


class NaiveDatetimeError(TbesError, ValueError):
    """A datetime without a time zone was given where an instant is required."""


class StageTableError(TbesError, ValueError):
    """A stage table breaks one of the rules a valid table must follow."""


class QuotaExceededError(TbesError):
    """A pause would use more days than a calendar year's quota allows."""


class PauseConflictError(TbesError):
    """A pause overlaps another pause of the same server."""


class PauseInPastError(TbesError):
    """A pause would start before today."""


class CatalogError(TbesError):
    """A build catalog could not be read or is inconsistent."""


class StoreConflictError(TbesError):
    """A compare-and-swap write lost a race: the stored version has changed."""


class StoreError(TbesError):
    """A store failed, or a stored row could not be decoded."""


class AdapterConfigError(TbesError, ValueError):
    """An adapter configuration is invalid: the message names the key and the value."""


class PolicyProtocolError(TbesError, ValueError):
    """Input that is not a Postfix policy request: a line too long, too many or bad lines."""


class DeliveryError(TbesError):
    """A notifier could not deliver an event (receiver down, refused, timed out): retried later."""
