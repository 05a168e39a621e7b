"""Argument checks shared by every public boundary: ids, types, and attrs validators for them.

Decision: a value is checked once, where it enters tbes (a constructor's validator or a public
function's first lines), by the helpers here, so every boundary refuses the same wrong value
with the same kind of error and message; the code behind the boundary trusts its input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from tbes.errors import InvalidBuildError, InvalidValueError
from tbes.version import ExchangeBuild

__all__ = ["id_field", "of_type", "require_id", "require_type"]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]
"""The signature of an attrs validator."""


def require_id(value: object, name: str, error: type[InvalidValueError] = InvalidValueError) -> str:
    """``value`` if it is a non-empty ``str`` of valid Unicode (a server id, a tenant, a name).

    Anything else raises ``error`` naming ``name``. Ids are hashed and stored as UTF-8, so a
    lone surrogate, which has no UTF-8 form, is refused too.
    """
    if not isinstance(value, str) or not value:
        raise error(f"{name} must be a non-empty str, got {value!r:.80}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise error(f"{name} must be valid Unicode text, got {value!r:.80}") from None
    return value


def id_field(error: type[InvalidValueError] = InvalidValueError) -> Validator:
    """An attrs validator applying :func:`require_id` to the field, named after it."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        require_id(value, attribute.name, error)

    return check


def _error_for(kind: type, error: type[InvalidValueError]) -> type[InvalidValueError]:
    # A value where a build belongs is reported as a build error, as parsing one would be.
    return InvalidBuildError if kind is ExchangeBuild else error  # type: ignore[return-value]


def require_type(
    value: object,
    kind: type,
    name: str,
    *,
    optional: bool = False,
    error: type[InvalidValueError] = InvalidValueError,
) -> None:
    """Raise ``error`` naming ``name`` unless ``value`` is a ``kind`` (or ``None`` if optional).

    ``bool`` is exact: ``1`` and ``0`` are no flags. A wrong value where an
    :class:`~tbes.version.ExchangeBuild` belongs raises :class:`~tbes.errors.InvalidBuildError`.
    """
    if optional and value is None:
        return
    wrong = type(value) is not bool if kind is bool else not isinstance(value, kind)
    if wrong:
        allowed = f"a {kind.__name__} or None" if optional else f"a {kind.__name__}"
        raise _error_for(kind, error)(f"{name} must be {allowed}, got {value!r:.80}")


def of_type(
    kind: type, *, optional: bool = False, error: type[InvalidValueError] = InvalidValueError
) -> Validator:
    """An attrs validator applying :func:`require_type` to the field, named after it."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        require_type(value, kind, attribute.name, optional=optional, error=error)

    return check
