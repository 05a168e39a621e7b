"""The responder's rate-limit counters in PostgreSQL: shared by connections, all or nothing."""

from __future__ import annotations

import threading

import pytest

from integration.pg import PostgresServer
from tbes.store.counters import Limit, PostgresCounters

pytestmark = [pytest.mark.service("postgresql"), pytest.mark.timeout(120)]


def _limits(sender: str) -> list[Limit]:
    return [Limit(f"sender:{sender}", 1, 600.0), Limit("all", 3, 60.0)]


def test_two_connections_share_the_limits_and_windows_expire(pg_server: PostgresServer) -> None:
    dsn = pg_server.fresh_dsn()
    first, second = PostgresCounters(dsn), PostgresCounters(dsn)
    try:
        assert first.take(_limits("a"), 1000.0)
        assert not second.take(_limits("a"), 1001.0)  # one reply per sender per interval
        assert second.take(_limits("b"), 1002.0)
        assert first.take(_limits("c"), 1003.0)
        assert not second.take(_limits("d"), 1004.0)  # three a minute in all
        assert second.take(_limits("d"), 1061.0)  # the minute is over
        assert first.take(_limits("a"), 1601.0)  # and so is a's interval
    finally:
        first.close()
        second.close()


def test_concurrent_takes_never_exceed_the_limit(pg_server: PostgresServer) -> None:
    dsn = pg_server.fresh_dsn()
    results: list[bool] = []
    lock = threading.Lock()

    def worker(number: int) -> None:
        counters = PostgresCounters(dsn)
        try:
            for round_ in range(5):
                answer = counters.take(_limits(f"s{number}-{round_}"), 5000.0)
                with lock:
                    results.append(answer)
        finally:
            counters.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 20
    assert results.count(True) == 3
