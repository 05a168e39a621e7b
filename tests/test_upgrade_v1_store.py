"""A store written before states were kept per server, opened by this tbes (issue 15, item 1).

``tests/data/v1-store.db`` was written by tbes as of main ``0c2c7cb`` (how: its ``.md``
beside it): one state per connector, rows at row schema 1. Tenant fabrikam's connector
``fabrikam-edge`` has an Exchange 2013 (15.0.1497.48) first detected 2026-02-01 10:00 UTC,
last seen 2026-03-20 09:00, and a 10-day pause from 2026-04-01; tenant northwind's
``northwind-hub`` an Exchange SE that is compliant. Expected stages follow the SPEC's stage
table (2 from day 30, one more every 10 days; stage 4 throttles 20 min/h, stage 5 also
blocks 5) and window rule (offset = SHA-256 of the server id, first 8 bytes, mod 60).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tbes.catalog import Catalog
from tbes.decision import Action
from tbes.enforcer import Connection, Enforcer
from tbes.identity import Identity
from tbes.ledger import Pause
from tbes.policy import ConnectorKind, Policy
from tbes.store import SQLiteStore

UTC = dt.UTC
FIXTURE = Path(__file__).parent / "data" / "v1-store.db"
EDGE = "fabrikam-edge"
FIRST = dt.datetime(2026, 2, 1, 10, 0, tzinfo=UTC)
OLD_ID = f"{EDGE}/ex2013.fabrikam.example"
NEW_ID = f"{EDGE}/exse.fabrikam.example"


def hop(build: str, by: str) -> str:
    return (
        f"from EXMBX01.fabrikam.local (10.0.0.7) by {by} (192.0.2.10) with Microsoft SMTP "
        f"Server id {build}; Wed, 25 Mar 2026 10:00:00 +0000"
    )


OLD_HOP = hop("15.0.1497.48", "ex2013.fabrikam.example")
NEW_HOP = hop("15.2.2562.35", "exse.fabrikam.example")


def window(day: dt.date, server_id: str) -> dt.datetime:
    """The first minute of ``server_id``'s window in the 10:00 UTC hour of ``day``."""
    offset = int.from_bytes(hashlib.sha256(server_id.encode()).digest()[:8], "big") % 60
    return dt.datetime(day.year, day.month, day.day, 10, offset, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 3, 25, 10, 0, tzinfo=UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The fixture copied, so the committed file is never written."""
    target = tmp_path / "v1-store.db"
    shutil.copyfile(FIXTURE, target)
    return target


@pytest.fixture
def store(copy: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(copy)
    yield opened
    opened.close()


def schemas(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT server_id, row_schema FROM tbes_servers").fetchall())


def enforcer_on(store: SQLiteStore, clock: Clock) -> Enforcer:
    catalog = Catalog.default()
    return Enforcer(store, Policy.exchange_online_2026(), catalog, clock=clock)


CONN = Connection(
    EDGE, "fabrikam", ConnectorKind.ON_PREMISES, "192.0.2.10", connector=EDGE,
    identity=Identity.SERVER,
)  # fmt: skip


def test_the_fixture_holds_rows_of_row_schema_1(copy: Path) -> None:
    assert schemas(copy) == {EDGE: 1, "northwind-hub": 1}


def test_old_rows_are_read_as_connector_level_states(store: SQLiteStore) -> None:
    assert [state.server_id for state in store.states()] == [EDGE, "northwind-hub"]
    stored = store.get(EDGE)
    assert stored is not None
    assert stored.value.first_detected == FIRST
    assert stored.value.pauses == (Pause(EDGE, dt.date(2026, 4, 1), 10),)


def test_a_server_behind_an_old_connector_row_keeps_its_episode_and_pauses(
    store: SQLiteStore, copy: Path
) -> None:
    clock = Clock()
    enforcer = enforcer_on(store, clock)
    # Day 52 of the connector's episode: stage 4, throttled in the server's window.
    clock.now = window(dt.date(2026, 3, 25), OLD_ID)
    decision = enforcer.check(CONN, [OLD_HOP])
    assert decision.stage is not None
    assert (decision.action, decision.stage.number) == (Action.THROTTLE, 4)
    stored = store.get(OLD_ID)
    assert stored is not None
    assert stored.value.first_detected == FIRST  # not a fresh episode from 2026-03-25
    assert stored.value.pauses == (Pause(OLD_ID, dt.date(2026, 4, 1), 10),)
    # The connector's pause holds for the server.
    clock.now = window(dt.date(2026, 4, 5), OLD_ID)
    paused = enforcer.check(CONN, [OLD_HOP])
    assert (paused.action, paused.paused) == (Action.ACCEPT, True)
    # After it: day 70, less 10 paused = day 60, stage 5, blocked in the window.
    clock.now = window(dt.date(2026, 4, 12), OLD_ID)
    after = enforcer.check(CONN, [OLD_HOP])
    assert after.stage is not None
    assert (after.action, after.stage.number) == (Action.BLOCK, 5)
    # New rows are written at row schema 2; the connector's old row is untouched.
    assert schemas(copy) == {EDGE: 1, "northwind-hub": 1, OLD_ID: 2}


def test_a_compliant_server_behind_the_old_connector_inherits_nothing(
    store: SQLiteStore,
) -> None:
    clock = Clock()
    enforcer = enforcer_on(store, clock)
    clock.now = window(dt.date(2026, 3, 25), NEW_ID)
    assert enforcer.check(CONN, [NEW_HOP]).action is Action.ACCEPT
    stored = store.get(NEW_ID)
    assert stored is not None
    assert stored.value.first_detected is None


def test_the_old_connector_row_decides_header_less_mail_until_stale(store: SQLiteStore) -> None:
    clock = Clock()
    enforcer = enforcer_on(store, clock)
    # Day 52, in the connector row's own window: its answer is the most severe.
    clock.now = window(dt.date(2026, 3, 25), EDGE)
    assert enforcer.check(CONN, []).action is Action.THROTTLE
    # Last seen 2026-03-20 09:00: more than 30 days later it no longer counts.
    clock.now = window(dt.date(2026, 4, 20), EDGE)
    assert enforcer.check(CONN, []).action is Action.ACCEPT
