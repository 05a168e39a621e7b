"""The SQLite store's own promises: reads never wait for a writer, every wait is bounded by
the check's deadline, and a file deleted or replaced under a running process is reported.

A real second process holds SQLite's write lock (``BEGIN IMMEDIATE``), as another MTA
process on the host would; the bounds on elapsed time are generous margins over the
deadline, not speed measurements.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.decision import Action
from tbes.enforcer import Connection, Enforcer
from tbes.errors import InvalidValueError, StoreError
from tbes.ledger import PauseLedger
from tbes.policy import DEFAULT_POLICY, ConnectorKind
from tbes.store import SQLiteStore, StateWrite, Versioned
from tbes.store._deadline import DEFAULT_CHECK_TIMEOUT, check_deadline
from test_store_contract import T0, state

MARGIN = 1.5  # seconds allowed past a deadline: scheduling on a busy machine, not speed

_HOLD_WRITE_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
conn.execute("ROLLBACK")
"""


@contextmanager
def write_locked_elsewhere(path: Path) -> Iterator[None]:
    """Another process holds the database's write lock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITE_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    db = tmp_path / "tbes.db"
    with SQLiteStore(db) as store:
        store.put(state(), expected_version=None)
        store.put_ledger(PauseLedger("contoso", 90), expected_version=None)
    return db


# ---- item 3: reads never wait for a writer; waits are bounded ----------------------------


def test_reads_go_on_while_a_write_of_this_process_waits_for_another_process(
    path: Path,
) -> None:
    store = SQLiteStore(path, timeout=20)
    outcome: list[object] = []

    def write() -> None:
        try:
            outcome.append(store.put(state(notified_stage=1), expected_version=1))
        except StoreError as exc:
            outcome.append(exc)

    with write_locked_elsewhere(path):
        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.3)  # let the writer take this store's write connection and wait
        # Every read answers while the writer still waits for the other process's lock.
        assert store.get("mx1.contoso.com") == Versioned(state(), 1)
        assert store.get_ledger("contoso") == Versioned(PauseLedger("contoso", 90), 1)
        assert list(store.states()) == [state()]
        assert store.schema_version() == 4
        assert writer.is_alive()
        assert outcome == []
    writer.join(timeout=30)
    assert outcome == [2]  # the lock came free well inside the writer's timeout
    assert store.get("mx1.contoso.com") == Versioned(state(notified_stage=1), 2)
    store.close()


def test_a_write_gives_up_at_the_checks_deadline(path: Path) -> None:
    store = SQLiteStore(path, timeout=30)  # the check's deadline is the shorter bound
    with write_locked_elsewhere(path):
        started = time.monotonic()
        with check_deadline(0.5), pytest.raises(StoreError, match="locked"):
            store.put(state(notified_stage=1), expected_version=1)
        assert time.monotonic() - started < 0.5 + MARGIN
        # The refused write left the row alone and the store still reads.
        assert store.get("mx1.contoso.com") == Versioned(state(), 1)
    assert store.put(state(notified_stage=1), expected_version=1) == 2
    store.close()


def test_the_default_timeout_is_the_check_timeout(path: Path) -> None:
    assert DEFAULT_CHECK_TIMEOUT == 2.0
    store = SQLiteStore(path)
    with write_locked_elsewhere(path):
        started = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            store.put(state(notified_stage=1), expected_version=1)
        assert time.monotonic() - started < DEFAULT_CHECK_TIMEOUT + MARGIN
    store.close()


def test_a_thread_waiting_for_another_threads_write_is_bounded_too(path: Path) -> None:
    store = SQLiteStore(path, timeout=20)
    first_waiting = threading.Event()
    results: list[object] = []

    def first() -> None:
        first_waiting.set()
        try:
            results.append(store.put(state(notified_stage=1), expected_version=1))
        except StoreError as exc:
            results.append(exc)

    with write_locked_elsewhere(path):
        thread = threading.Thread(target=first)
        thread.start()
        first_waiting.wait()
        time.sleep(0.3)  # the first thread now holds the write connection, waiting
        started = time.monotonic()
        with check_deadline(0.5), pytest.raises(StoreError):
            store.put_many([StateWrite(state("mx2"), None)])
        assert time.monotonic() - started < 0.5 + MARGIN
    thread.join(timeout=30)
    assert results == [2]
    assert store.get("mx2") is None
    store.close()


def _hop(build: str) -> str:
    return (
        "from EXMBX01.contoso.local (10.0.0.7) by mx1.contoso.com (192.0.2.10) with Microsoft "
        f"SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id {build}; "
        "Mon, 2 Mar 2026 10:00:00 +0000"
    )


def test_a_check_fails_open_while_another_process_holds_the_write_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path / "tbes.db", timeout=30)
    enforcer = Enforcer(store, DEFAULT_POLICY, Catalog.default(), clock=lambda: T0)
    conn = Connection("mx1.contoso.com", "contoso", ConnectorKind.ON_PREMISES)
    with write_locked_elsewhere(store.path), caplog.at_level(logging.WARNING):
        started = time.monotonic()
        with check_deadline(0.5):
            decision = enforcer.check(conn, [_hop("15.1.2507.39")])
        assert time.monotonic() - started < 0.5 + MARGIN
    assert (decision.action, decision.reply) == (Action.ACCEPT, None)
    assert "fail open" in caplog.text
    assert store.get("mx1.contoso.com") is None  # nothing was half-written
    # Once the lock is free the same check records the server.
    enforcer.check(conn, [_hop("15.1.2507.39")])
    stored = store.get("mx1.contoso.com")
    assert stored is not None
    assert stored.value.status is Compliance.OUTDATED
    store.close()


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), "2", True])
def test_timeouts_must_be_positive_finite_numbers(tmp_path: Path, value: object) -> None:
    for name in ("timeout", "file_check_interval"):
        with pytest.raises(InvalidValueError, match=name):
            SQLiteStore(tmp_path / "x.db", **{name: value})  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="read_only"):
        SQLiteStore(tmp_path / "x.db", read_only=1)  # type: ignore[arg-type]


# ---- extra A: the file deleted or replaced under a running process ------------------------


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _remove(path: Path) -> None:
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        each.unlink(missing_ok=True)


def test_a_deleted_file_is_reported_once(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(path, file_check_interval=0.05)
    with caplog.at_level(logging.INFO, logger="tbes.store"):
        store.get("mx1.contoso.com")
        time.sleep(0.1)
        store.get("mx1.contoso.com")
        assert _errors(caplog) == []  # the same file: nothing to say
        _remove(path)
        for _ in range(3):
            time.sleep(0.1)
            store.put(state(notified_stage=1 + _), expected_version=1 + _)
    errors = _errors(caplog)
    assert len(errors) == 1
    assert str(path) in errors[0]
    assert "deleted" in errors[0]
    store.close()


def test_a_replaced_file_is_reported(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(path, file_check_interval=0.05)
    store.get("mx1.contoso.com")
    other = path.with_name("other.db")
    SQLiteStore(other).close()
    with caplog.at_level(logging.INFO, logger="tbes.store"):
        os.replace(other, path)
        time.sleep(0.1)
        store.get("mx1.contoso.com")
    errors = _errors(caplog)
    assert len(errors) == 1
    assert "replaced" in errors[0]
    assert str(path) in errors[0]
    store.close()


def test_the_file_is_checked_at_most_once_per_interval(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # With the default interval, a deletion just after a check is reported at the next one
    # (a few seconds later), not on every access.
    store = SQLiteStore(path, file_check_interval=3600)
    store.get("mx1.contoso.com")
    with caplog.at_level(logging.INFO, logger="tbes.store"):
        _remove(path)
        store.get("mx1.contoso.com")
    assert _errors(caplog) == []
    store.close()
