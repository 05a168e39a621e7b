"""The rate-limited logger the network adapters share: one record per kind per interval."""

from __future__ import annotations

import itertools
import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tbes.adapters._ratelimit import RateLimitedLogger

LOGGER = "tests.ratelimit"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limited(interval: float = 10.0) -> tuple[RateLimitedLogger, _Clock]:
    clock = _Clock()
    return RateLimitedLogger(logging.getLogger(LOGGER), interval, clock=clock), clock


def test_one_record_per_key_per_interval_then_the_count(caplog: pytest.LogCaptureFixture) -> None:
    limited, clock = _limited()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert limited.log("reset", logging.INFO, "reset by %s", "a")
        for _ in range(4):
            clock.now += 1
            assert not limited.log("reset", logging.INFO, "reset by %s", "b")
        # Another kind is not held back by the first.
        assert limited.log("garbage", logging.WARNING, "garbage")
        clock.now += 10
        assert limited.log("reset", logging.INFO, "reset by %s", "c")
    assert [r.getMessage() for r in caplog.records] == [
        "reset by a",
        "garbage",
        "reset by c (4 more like this suppressed in the last 14 s)",
    ]


def test_a_traceback_only_with_the_records_emitted(caplog: pytest.LogCaptureFixture) -> None:
    limited, _ = _limited()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(50):
            try:
                raise OSError("store down")
            except OSError:
                limited.log("fault", logging.WARNING, "fault", exc_info=True)
    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is not None


def test_disabled_levels_are_neither_logged_nor_counted(caplog: pytest.LogCaptureFixture) -> None:
    limited, _ = _limited()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert not limited.log("idle", logging.INFO, "idle")
        assert limited.log("idle", logging.WARNING, "idle")
    assert [r.getMessage() for r in caplog.records] == ["idle"]


@pytest.mark.parametrize("interval", [-1.0, float("nan")])
def test_the_interval_must_not_be_negative(interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        RateLimitedLogger(logging.getLogger(LOGGER), interval)


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.floats(0, 30, allow_nan=False)), max_size=60
    )
)
def test_every_event_is_logged_or_counted_and_records_are_spaced(
    steps: list[tuple[str, float]],
) -> None:
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(LOGGER + ".property")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = _Keep()
    logger.addHandler(handler)
    clock = _Clock()
    limited = RateLimitedLogger(logger, 10.0, clock=clock)
    times: dict[str, list[float]] = {"a": [], "b": []}
    pending = {"a": 0, "b": 0}  # events since the last record of their kind
    try:
        for key, wait in steps:
            clock.now += wait
            if limited.log(key, logging.INFO, key):
                times[key].append(clock.now)
                pending[key] = 0
            else:
                pending[key] += 1
    finally:
        logger.removeHandler(handler)
    for key, emitted in times.items():
        # Records of one kind are at least an interval apart ...
        assert all(b - a >= 10.0 for a, b in itertools.pairwise(emitted))
        # ... and every event is a record, counted in a later record, or still pending.
        counted = sum(
            1 + int(m.group(1)) if (m := re.search(r"\((\d+) more", r.getMessage())) else 1
            for r in records
            if r.getMessage().startswith(key)
        )
        assert counted + pending[key] == sum(1 for k, _ in steps if k == key)
