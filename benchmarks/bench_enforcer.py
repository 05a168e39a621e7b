"""Enforcer.check end to end on a SQLite file (WAL), against raw SQLite doing the least work.

Every message is one :meth:`~tbes.enforcer.Enforcer.check`: find the sender in its Received
headers, assess, read the server's row, observe, decide and store by compare-and-swap. The
servers are :func:`benchmarks.workload.connection` with their own headers, in the build
mix of :data:`benchmarks.workload.BUILDS`; the clock is the real one, as in production.

Baselines, in the same run and the same directory: raw :mod:`sqlite3` with the store's
settings (WAL, ``synchronous = FULL``) doing one compare-and-swap per message (``BEGIN
IMMEDIATE``, read the row, update it, ``COMMIT``) — the floor for recording every message —
and a bare primary-key read. Two more tbes cases separate the costs: the same messages on
:class:`~tbes.store.MemoryStore` (no I/O) and on SQLite with the clock stopped (nothing
changes, so nothing is written). Latencies are taken per call with ``perf_counter_ns``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import Latency, file_system, latency
from benchmarks.workload import NOW, OWN_HOSTS, connection, received_for, scale_state
from tbes import serde
from tbes.catalog import Catalog
from tbes.enforcer import Connection, Enforcer, utc_now
from tbes.policy import DEFAULT_POLICY
from tbes.store import MemoryStore, SQLiteStore, StateStore

__all__ = ["main", "run"]

_Message = tuple[Connection, list[str]]


def _messages(servers: int, calls: int) -> list[_Message]:
    # Every server once (in a shuffled order), then calls in a shuffled cycle.
    rng = random.Random(9)
    order = list(range(servers))
    rng.shuffle(order)
    picks = [order[i % servers] for i in range(calls)]
    return [(connection(i), received_for(i)) for i in picks]


def _time_checks(enforcer: Enforcer, messages: list[_Message]) -> Latency:
    samples: list[int] = []
    clock, check = time.perf_counter_ns, enforcer.check
    wall, cpu = time.perf_counter(), time.thread_time()
    for conn, received in messages:
        start = clock()
        check(conn, received)
        samples.append(clock() - start)
    return latency(samples, time.perf_counter() - wall, time.thread_time() - cpu)


def _enforcer_case(
    store: StateStore, servers: int, calls: int, clock: Callable[[], dt.datetime]
) -> Latency:
    enforcer = Enforcer(store, DEFAULT_POLICY, Catalog.default(), clock=clock, own_hosts=OWN_HOSTS)
    _time_checks(enforcer, _messages(servers, servers))  # warm up: every row exists
    return _time_checks(enforcer, _messages(servers, calls))


def _raw_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, version INTEGER, data TEXT)")
    return conn


def _raw_case(path: Path, servers: int, calls: int, write: bool) -> Latency:
    conn = _raw_connection(path)
    rows = [(f"server{i}", 1, serde.dumps(scale_state(i))) for i in range(servers)]
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT OR REPLACE INTO t VALUES (?, ?, ?)", rows)
    conn.execute("COMMIT")
    rng = random.Random(9)
    keys = [f"server{rng.randrange(servers)}" for _ in range(calls)]
    samples: list[int] = []
    clock = time.perf_counter_ns
    wall, cpu = time.perf_counter(), time.thread_time()
    for key in keys:
        start = clock()
        if write:
            conn.execute("BEGIN IMMEDIATE")
        version, data = conn.execute("SELECT version, data FROM t WHERE id = ?", (key,)).fetchone()
        if write:
            conn.execute(
                "UPDATE t SET version = ?, data = ? WHERE id = ? AND version = ?",
                (version + 1, data, key, version),
            )
            conn.execute("COMMIT")
        samples.append(clock() - start)
    result = latency(samples, time.perf_counter() - wall, time.thread_time() - cpu)
    conn.close()
    return result


def run(calls: int, servers: int, workdir: Path) -> dict[str, object]:
    """Measure every case; return a JSON-ready summary (latencies in microseconds)."""
    cases: dict[str, Latency] = {}
    cases["raw-sqlite-cas"] = _raw_case(workdir / "raw.db", servers, calls, write=True)
    cases["raw-sqlite-read"] = _raw_case(workdir / "raw.db", servers, calls, write=False)
    with SQLiteStore(workdir / "tbes.db") as store:
        cases["sqlite"] = _enforcer_case(store, servers, calls, utc_now)
    with SQLiteStore(workdir / "frozen.db") as store:
        stopped = NOW + dt.timedelta(days=30)
        cases["sqlite-no-write"] = _enforcer_case(store, servers, calls, lambda: stopped)
    cases["memory"] = _enforcer_case(MemoryStore(), servers, calls, utc_now)
    return {
        "calls": calls,
        "servers": servers,
        "file_system": file_system(workdir),
        "cases": cases,
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--calls N --servers S [--workdir DIR] [--json FILE]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, help="where the SQLite files go (on disk)")
    parser.add_argument("--json", type=Path, help="write the summary here (default: stdout)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tbes-bench-", dir=args.workdir) as tmp:
        summary = run(args.calls, args.servers, Path(tmp))
    text = json.dumps(summary, indent=1)
    if args.json is None:
        print(text)
    else:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
