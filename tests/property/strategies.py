"""Hypothesis strategies for tbes values, shared by the property tests."""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from tbes.version import ExchangeBuild

# Plausible Exchange majors and minors, plus a tail of arbitrary ones.
builds: st.SearchStrategy[ExchangeBuild] = st.builds(
    ExchangeBuild,
    st.one_of(st.sampled_from([6, 8, 14, 15, 16]), st.integers(0, 99)),
    st.one_of(st.sampled_from([0, 1, 2, 3, 5, 20, 21]), st.integers(0, 99)),
    st.integers(0, 9999),
    st.integers(0, 999),
)

# Aware instants in UTC within the years the enforcement system cares about.
instants: st.SearchStrategy[dt.datetime] = st.datetimes(
    min_value=dt.datetime(2020, 1, 1),
    max_value=dt.datetime(2035, 12, 31),
    timezones=st.just(dt.UTC),
)
