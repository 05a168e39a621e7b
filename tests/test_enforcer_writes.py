"""When the Enforcer writes: every change at once, a moving last_seen at most once a minute."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tbes import (
    DEFAULT_POLICY,
    Catalog,
    Connection,
    ConnectorKind,
    Enforcer,
    InvalidValueError,
    MemoryStore,
    ServerState,
)

CATALOG = Catalog.default()
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
CONN = Connection("ex16.fabrikam.example", "fabrikam", ConnectorKind.ON_PREMISES, None, None, None)


def _received(build: str) -> list[str]:
    return [
        "from ex16.fabrikam.example (10.0.0.16) by mail.fabrikam.example (203.0.113.16) "
        f"with Microsoft SMTP Server (version=TLS1_2, cipher=TLS_AES_256_GCM_SHA384) id {build}"
    ]


OUTDATED = _received("15.1.2507.39")  # Exchange 2016 CU23 below the Oct25SU minimum
COMPLIANT = _received("15.1.2507.61")  # Exchange 2016 CU23 Oct25SU


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def _enforcer(resolution: dt.timedelta | None = None) -> tuple[Enforcer, MemoryStore, _Clock]:
    store, clock = MemoryStore(), _Clock()
    # None: the enforcer's own default resolution.
    enforcer = (
        Enforcer(store, DEFAULT_POLICY, CATALOG, clock=clock)
        if resolution is None
        else Enforcer(store, DEFAULT_POLICY, CATALOG, clock=clock, seen_resolution=resolution)
    )
    return enforcer, store, clock


def _stored(store: MemoryStore) -> tuple[ServerState, int]:
    found = store.get(CONN.server_id)
    assert found is not None
    return found.value, found.version


def test_a_message_that_only_moves_last_seen_within_a_minute_is_not_written() -> None:
    enforcer, store, clock = _enforcer()
    enforcer.check(CONN, OUTDATED)
    clock.now = T0 + dt.timedelta(seconds=59)
    enforcer.check(CONN, OUTDATED)
    state, version = _stored(store)
    assert version == 1
    assert state.last_seen == T0


def test_last_seen_is_written_once_it_lags_by_a_minute() -> None:
    enforcer, store, clock = _enforcer()
    for seconds in (0, 30, 60):
        clock.now = T0 + dt.timedelta(seconds=seconds)
        enforcer.check(CONN, OUTDATED)
    state, version = _stored(store)
    assert version == 2
    assert state.last_seen == T0 + dt.timedelta(seconds=60)


def test_a_change_other_than_last_seen_is_written_at_once() -> None:
    enforcer, store, clock = _enforcer()
    enforcer.check(CONN, OUTDATED)
    clock.now = T0 + dt.timedelta(seconds=5)
    enforcer.check(CONN, COMPLIANT)
    state, version = _stored(store)
    assert version == 2
    assert state.compliant_since == T0 + dt.timedelta(seconds=5)


def test_a_zero_resolution_writes_every_message() -> None:
    enforcer, store, clock = _enforcer(dt.timedelta(0))
    for seconds in (0, 1, 2):
        clock.now = T0 + dt.timedelta(seconds=seconds)
        enforcer.check(CONN, OUTDATED)
    assert _stored(store)[1] == 3


@pytest.mark.parametrize("bad", [dt.timedelta(seconds=-1), 60, None])
def test_a_bad_seen_resolution_is_refused_by_name(bad: object) -> None:
    with pytest.raises(InvalidValueError, match="seen_resolution"):
        Enforcer(MemoryStore(), DEFAULT_POLICY, CATALOG, seen_resolution=bad)  # type: ignore[arg-type]


@given(
    st.lists(st.tuples(st.integers(0, 600), st.booleans()), min_size=1, max_size=12),
    st.integers(0, 300),
)
def test_coalescing_loses_nothing_but_a_bounded_lag_of_last_seen(
    steps: list[tuple[int, bool]], resolution_s: int
) -> None:
    lazy, lazy_store, lazy_clock = _enforcer(dt.timedelta(seconds=resolution_s))
    eager, eager_store, eager_clock = _enforcer(dt.timedelta(0))
    at = T0
    for gap, compliant in steps:
        at += dt.timedelta(seconds=gap)
        lazy_clock.now = eager_clock.now = at
        received = COMPLIANT if compliant else OUTDATED
        assert lazy.check(CONN, received) == eager.check(CONN, received)
    lazy_state, _ = _stored(lazy_store)
    eager_state, _ = _stored(eager_store)
    assert attrs.evolve(lazy_state, last_seen=eager_state.last_seen) == eager_state
    assert lazy_state.last_seen is not None
    assert eager_state.last_seen == at
    assert at - lazy_state.last_seen <= dt.timedelta(seconds=max(resolution_s - 1, 0))
