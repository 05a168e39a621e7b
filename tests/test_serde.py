"""The package converter: builds as short strings, instants with their offset."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tbes import ExchangeBuild, InvalidBuildError, NaiveDatetimeError
from tbes.serde import converter, dumps, loads


def test_build_is_stored_as_its_short_string() -> None:
    assert converter.unstructure(ExchangeBuild.parse("15.01.2507.039")) == "15.1.2507.39"


def test_build_is_read_back_from_the_long_form_too() -> None:
    assert loads('"15.01.2507.039"', ExchangeBuild) == ExchangeBuild(15, 1, 2507, 39)


def test_a_bad_stored_build_raises_invalid_build_error() -> None:
    with pytest.raises(InvalidBuildError):
        loads('"15.1.x"', ExchangeBuild)


def test_instants_keep_their_offset() -> None:
    at = dt.datetime(2024, 3, 4, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert json.loads(dumps(at)) == "2024-03-04T10:00:00+02:00"
    assert loads(dumps(at), dt.datetime) == at


def test_naive_instants_are_refused_both_ways() -> None:
    with pytest.raises(NaiveDatetimeError):
        dumps(dt.datetime(2024, 1, 1))
    with pytest.raises(NaiveDatetimeError):
        loads('"2024-01-01T00:00:00"', dt.datetime)


def test_timedeltas_are_seconds_and_dates_are_iso() -> None:
    assert converter.unstructure(dt.timedelta(days=1, seconds=1)) == 86401.0
    assert loads("86401", dt.timedelta) == dt.timedelta(days=1, seconds=1)
    assert converter.unstructure(dt.date(2024, 2, 29)) == "2024-02-29"
    assert loads('"2024-02-29"', dt.date) == dt.date(2024, 2, 29)
