"""A writer killed with SIGKILL mid-stream leaves a store that opens, reads, and is a prefix.

A child process applies a deterministic stream of updates (update ``i`` either puts server
``mx1`` or writes server ``mx0`` and the tenant's ledger together in one batch) and
publishes how many have committed. The parent kills it at a random moment, reopens the
store, and checks that every row reads and that the contents are exactly what the first
``k`` updates produce, for some ``k`` at least the number published. Each round resumes
from the survivor's state, so recovery is followed by further writes and further kills.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from integration.pg import PostgresServer
from tbes.compliance import Compliance
from tbes.ledger import PauseLedger
from tbes.state import ServerState
from tbes.store import LedgerWrite, PostgresStore, SQLiteStore, StateStore, StateWrite, Versioned

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TENANT = "contoso"
ROUNDS = 3


def _state(server_id: str, i: int) -> ServerState:
    return ServerState(
        server_id, TENANT, None, Compliance.NOT_APPLICABLE, None, T0 + dt.timedelta(seconds=i), None
    )


def _expected(k: int) -> dict[str, Versioned[Any] | None]:
    """The store's contents after updates 1..k (update i touches mx0 and the ledger if 3 | i)."""
    pairs = k // 3  # updates 3, 6, ... <= k wrote mx0 and the ledger together
    singles = k - pairs  # the others wrote mx1
    last_single = max((i for i in range(1, k + 1) if i % 3), default=0)
    return {
        "mx0": Versioned(_state("mx0", 3 * pairs), pairs) if pairs else None,
        "mx1": Versioned(_state("mx1", last_single), singles) if singles else None,
        "ledger": Versioned(PauseLedger(TENANT, 3 * pairs), pairs) if pairs else None,
    }


def _observed(store: StateStore) -> dict[str, Versioned[Any] | None]:
    assert {s.server_id for s in store.states()} <= {"mx0", "mx1"}  # every row decodes
    return {"mx0": store.get("mx0"), "mx1": store.get("mx1"), "ledger": store.get_ledger(TENANT)}


def _open(kind: str, where: str) -> StateStore:
    return SQLiteStore(where) if kind == "sqlite" else PostgresStore(where)


def _writer(kind: str, where: str, committed: Any) -> None:
    """Apply updates after the stored prefix, forever, publishing each commit."""
    store = _open(kind, where)
    mx0, mx1 = store.get("mx0"), store.get("mx1")
    versions = {"mx0": mx0.version if mx0 else None, "mx1": mx1.version if mx1 else None}
    i = (versions["mx0"] or 0) + (versions["mx1"] or 0)  # the prefix already stored
    while True:
        i += 1
        if i % 3 == 0:
            v0, _ = store.put_many(
                [
                    StateWrite(_state("mx0", i), versions["mx0"]),
                    LedgerWrite(PauseLedger(TENANT, i), versions["mx0"]),
                ]
            )
            versions["mx0"] = v0
        else:
            versions["mx1"] = store.put(_state("mx1", i), expected_version=versions["mx1"])
        committed.value = i


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.service("postgresql"))]
)
def crash_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return ("sqlite", str(tmp_path / "crash.db"))
    server: PostgresServer = request.getfixturevalue("pg_server")
    return ("postgres", server.fresh_dsn())


def test_a_writer_killed_mid_stream_leaves_a_readable_committed_prefix(
    crash_store: tuple[str, str],
) -> None:
    kind, where = crash_store
    ctx = multiprocessing.get_context("spawn")
    rng = random.Random(20260101)
    previous = 0
    for _ in range(ROUNDS):
        committed = ctx.Value("q", 0, lock=False)
        writer = ctx.Process(target=_writer, args=(kind, where, committed))
        writer.start()
        deadline = time.monotonic() + 60
        while committed.value < previous + 20 and writer.is_alive():
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))  # somewhere in the middle of a transaction, likely
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(timeout=30)
        assert writer.exitcode == -signal.SIGKILL
        published = committed.value

        store = _open(kind, where)
        observed = _observed(store)
        store.close()
        stored_prefix = sum(v.version for v in (observed["mx0"], observed["mx1"]) if v)
        assert stored_prefix >= published  # nothing committed was lost
        assert observed == _expected(stored_prefix)  # and nothing half-written is visible
        previous = stored_prefix
    assert previous >= 20 * ROUNDS
