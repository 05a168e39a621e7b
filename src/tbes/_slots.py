"""Filling a frozen attrs instance's slots directly, for values valid by construction.

Decision: a few values are built on the hot path of every message from parts that are already
checked (a :class:`~tbes.decision.Decision`, a parsed hop); attrs' frozen ``__init__`` with its
checks costs more than the rest of making them. :func:`slot_filler` makes a keyword-only maker
that binds each argument to the slot of the same name, so reordering the class's fields can
never bind a value to the wrong field; property tests hold what the maker makes to the class's
own checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

__all__ = ["slot_filler"]

_T = TypeVar("_T")


def slot_filler(cls: type[_T]) -> Callable[..., _T]:
    """A keyword-only function taking every field of the slotted attrs class ``cls`` by name
    and returning an instance with those slots set, without running validators or converters.
    """
    names = [field.name for field in attrs.fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    body = ["    made = _new(_cls)"]
    for name in names:
        namespace[f"_set_{name}"] = getattr(cls, name).__set__
        body.append(f"    _set_{name}(made, {name})")
    # Generated once per class, as attrs generates its own __init__: a loop over the fields
    # at each call costs more than the straight-line code.
    source = "\n".join([f"def make(*, {', '.join(names)}):", *body, "    return made"])
    exec(source, namespace)  # the source holds only the class's own field names
    maker: Callable[..., _T] = namespace["make"]
    return maker
