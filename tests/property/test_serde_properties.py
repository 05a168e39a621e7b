"""Round-trip properties of the package converter."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st
from strategies import builds, instants

from tbes import ExchangeBuild
from tbes.serde import dumps, loads


@given(builds)
def test_build_round_trips_through_json(build: ExchangeBuild) -> None:
    assert loads(dumps(build), ExchangeBuild) == build


@given(instants, st.integers(-14 * 60, 14 * 60))
def test_instant_round_trips_with_any_offset(at: dt.datetime, minutes: int) -> None:
    local = at.astimezone(dt.timezone(dt.timedelta(minutes=minutes)))
    back = loads(dumps(local), dt.datetime)
    assert back == local
    assert back.utcoffset() == local.utcoffset()


@given(st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=3650)))
def test_timedelta_round_trips_to_the_microsecond(delta: dt.timedelta) -> None:
    assert loads(dumps(delta), dt.timedelta) == delta
