"""The slot filler binds by field name and makes what the class's own constructor makes."""

from __future__ import annotations

import attrs
import pytest

from tbes._slots import slot_filler


@attrs.frozen
class _Pair:
    first: int = attrs.field(validator=attrs.validators.instance_of(int))
    second: str = attrs.field(validator=attrs.validators.instance_of(str))


def test_arguments_bind_by_field_name_whatever_their_order() -> None:
    make = slot_filler(_Pair)
    assert make(second="b", first=1) == _Pair(1, "b")


def test_positional_arguments_are_refused() -> None:
    make = slot_filler(_Pair)
    with pytest.raises(TypeError):
        make(1, "b")


def test_a_missing_field_is_refused() -> None:
    make = slot_filler(_Pair)
    with pytest.raises(TypeError):
        make(first=1)


def test_the_instance_stays_frozen() -> None:
    made = slot_filler(_Pair)(first=1, second="b")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.first = 2  # type: ignore[misc]
