"""The commands for a live system: ``config check``, ``server show``, ``forget``, ``store copy``.

Expected facts are worked out independently of the code under test: which rule a peer gets
from the configuration written here, which minutes are blocked or throttled from
:func:`~tbes.decision.decide` asked at each of the 60 minutes of an hour, what a copy holds
by reading the target store back.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner, Result
from hypothesis import example, given, settings
from hypothesis import strategies as st

from integration.pg import PostgresServer
from report_support import fabrikam_state
from support import STORE_KINDS, make_store
from tbes.cli import cli
from tbes.decision import Action, decide
from tbes.errors import StoreConflictError
from tbes.ledger import PauseLedger
from tbes.policy import DEFAULT_POLICY
from tbes.store import MemoryStore, PostgresStore, SQLiteStore
from tbes.store.protocol import StateStore

UTC = dt.UTC
FIRST = dt.datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
BUILD = "15.1.2507.39"  # Exchange 2016, outdated under exchange_online_2026

CONFIG = """\
tenant = "contoso"
own_hosts = ["mx.contoso.example"]

[[connector]]
name = "fabrikam-edge"
kind = "on_premises"
tenant = "fabrikam"
networks = ["203.0.113.0/28"]
hosts = [".fabrikam.example"]

[[connector]]
name = "woodgrove-partner"
kind = "partner"
tenant = "woodgrove"
networks = ["198.51.100.0/24"]
"""


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def one_error_line(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tbes: error: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "adapters.toml"
    path.write_text(CONFIG)
    return path


# ---- tbes config check --------------------------------------------------------------------


def test_config_check_shows_rules_own_hosts_policy_and_schedule(config_file: Path) -> None:
    result = run("config", "check", str(config_file))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "valid configuration" in out
    assert (
        "  1. fabrikam-edge: on_premises, tenant fabrikam, server fabrikam-edge; "
        "networks 203.0.113.0/28; hosts .fabrikam.example"
    ) in out
    assert "Own hosts: mx.contoso.example." in out
    assert "Policy exchange_online" in out
    # The 2026 preset's table (SPEC section 4): the terminal stage 8 blocks all 60 minutes
    # from day 91 on.
    assert re.search(r"│ 8\s+│ 91\s+│ for ever\s+│ yes\s+│ 0\s+│ 60\s+│", out), out
    # Partner connectors are not enforced by the preset.
    assert "  2. woodgrove-partner: partner (not enforced), tenant woodgrove" in out


@pytest.mark.parametrize(
    ("peer", "extra", "expected"),
    [
        (
            "203.0.113.5",
            ["--name", "mail.fabrikam.example"],
            "rule 1 (fabrikam-edge): connector on_premises, server fabrikam-edge, "
            "tenant fabrikam: enforced.",
        ),
        # The rule needs a verified name under .fabrikam.example too: without one, no rule.
        ("203.0.113.5", [], "no rule: never enforced (tenant contoso)."),
        (
            "198.51.100.7",
            [],
            "rule 2 (woodgrove-partner): connector partner, server woodgrove-partner, "
            "tenant woodgrove: not enforced by this policy.",
        ),
        ("192.0.2.1", [], "no rule: never enforced (tenant contoso)."),
    ],
)
def test_config_check_says_what_a_peer_gets(
    config_file: Path, peer: str, extra: list[str], expected: str
) -> None:
    result = run("config", "check", str(config_file), "--peer", peer, *extra)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].endswith(expected)


def test_config_check_names_the_line_of_a_toml_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('tenant = "contoso"\nown_hosts = [1 2]\npolicy = "x"\n')
    assert "(at line 2, column" in one_error_line(run("config", "check", str(path)))


def test_config_check_refuses_an_invalid_configuration(tmp_path: Path) -> None:
    path = tmp_path / "twice.toml"
    path.write_text(CONFIG + CONFIG.split("\n\n", 1)[1])  # the rules again: same names
    assert "same name" in one_error_line(run("config", "check", str(path)))
    assert "No such file" in one_error_line(run("config", "check", str(tmp_path / "none")))


def test_config_check_refuses_a_name_without_a_peer_and_a_bad_peer(config_file: Path) -> None:
    one_error_line(run("config", "check", str(config_file), "--name", "x.example"))
    assert "not an IP" in one_error_line(
        run("config", "check", str(config_file), "--peer", "not-an-ip")
    )


def test_config_check_escapes_foreign_text(tmp_path: Path) -> None:
    path = tmp_path / "esc.toml"
    path.write_text(CONFIG.replace('name = "fabrikam-edge"', 'name = "evil\\u001b[31m"'))
    result = run(
        "config", "check", str(path), "--peer", "203.0.113.1", "--name", "a.fabrikam.example"
    )
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout
    assert "evil\\x1b[31m" in result.stdout


# ---- tbes server show ---------------------------------------------------------------------

_RANGE = re.compile(r":(\d\d)\u2013:(\d\d) (blocked|throttled|accepted)")
_ACTIONS = {"blocked": Action.BLOCK, "throttled": Action.THROTTLE, "accepted": Action.ACCEPT}


def shown_minutes(output: str) -> dict[int, Action]:
    """The action of each minute of the hour, from the ranges `server show` prints."""
    line = next(line for line in output.splitlines() if "each UTC hour" in line)
    every = re.search(r"every minute (blocked|throttled|accepted)", line)
    if every:
        return dict.fromkeys(range(60), _ACTIONS[every.group(1)])
    minutes: dict[int, Action] = {}
    for first, last, what in _RANGE.findall(line):
        minute = int(first)
        while True:  # a range may wrap past :59
            assert minute not in minutes, f"minute {minute} in two ranges: {line}"
            minutes[minute] = _ACTIONS[what]
            if minute == int(last):
                break
            minute = (minute + 1) % 60
    return minutes


def _show(db: Path, server: str, at: dt.datetime) -> Result:
    # "--" ends the options: an id may start with "-" (Hypothesis finds "-0").
    return run("server", "show", "--db", str(db), "--at", at.isoformat(), "--", server)


@settings(max_examples=40)
# Offset 24, stage 6 (10 blocked, 30 throttled): the throttle window wraps past :59.
@example(server="ex2007.fabrikam.example", day=75)
@given(
    server=st.text(min_size=1, max_size=12),
    day=st.integers(min_value=30, max_value=120),
)
def test_server_show_minutes_match_decide_at_every_minute(server: str, day: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        db = Path(work) / "tbes.db"
        store = SQLiteStore(db)
        state = fabrikam_state(server, BUILD, FIRST)
        store.put(state, expected_version=None)
        store.close()
        # 12:00 to 13:00: no stage starts within the hour (stages start at 09:30).
        hour = FIRST.replace(hour=12, minute=0) + dt.timedelta(days=day)
        result = _show(db, server, hour + dt.timedelta(minutes=7))
    assert result.exit_code == 0, result.output
    shown = shown_minutes(result.stdout)
    expected = {m: decide(state, hour.replace(minute=m), DEFAULT_POLICY).action for m in range(60)}
    assert shown == expected


def test_server_show_says_state_stage_next_change_and_pauses(tmp_path: Path) -> None:
    db = tmp_path / "tbes.db"
    store = SQLiteStore(db)
    state = fabrikam_state("ex1\x1b", BUILD, FIRST, [(dt.date(2026, 2, 10), 5)])
    store.put(state, expected_version=None)
    store.close()
    at = dt.datetime(2026, 2, 12, 12, 0, tzinfo=UTC)
    result = _show(db, "ex1\x1b", at)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "\x1b" not in out
    assert "ex1\\x1b" in out
    assert "ACCEPT" in out
    assert "paused until 2026-02-15 00:00" in out
    # Paused: the next change is the pause's end, midnight after its last day.
    assert "Next change: 2026-02-15 00:00 UTC." in out
    assert "2026-02-10" in out
    assert "2026-02-14" in out


def test_server_show_refuses_an_unknown_server(tmp_path: Path) -> None:
    db = tmp_path / "tbes.db"
    SQLiteStore(db).close()
    assert "no stored state" in one_error_line(run("server", "show", "nobody", "--db", str(db)))


# ---- tbes forget --------------------------------------------------------------------------


def _paused_db(tmp_path: Path) -> Path:
    db = tmp_path / "tbes.db"
    store = SQLiteStore(db)
    store.put(fabrikam_state("ex1", BUILD, FIRST), expected_version=None)
    store.put(fabrikam_state("ex2", BUILD, FIRST), expected_version=None)
    store.close()
    result = run("pause", "--db", str(db), "--tenant", "fabrikam", "ex1", "10",
                 "--at", "2026-03-01T00:00Z")  # fmt: skip
    assert result.exit_code == 0, result.output
    return db


def test_forget_removes_the_state_and_keeps_the_pause_days_charged(tmp_path: Path) -> None:
    db = _paused_db(tmp_path)
    result = run("forget", "ex1", "--db", str(db), "--yes")
    assert result.exit_code == 0, result.output
    assert "10 pause days stay charged" in result.stdout
    store = SQLiteStore(db, read_only=True)
    try:
        assert store.get("ex1") is None
        assert store.get("ex2") is not None
        ledger = store.get_ledger("fabrikam")
        assert ledger is not None
        assert ledger.value.used(2026) == 10
    finally:
        store.close()


def test_forget_asks_first(tmp_path: Path) -> None:
    db = _paused_db(tmp_path)
    result = run("forget", "ex1", "--db", str(db), input="n\n")
    assert result.exit_code == 1
    store = SQLiteStore(db, read_only=True)
    assert store.get("ex1") is not None
    store.close()
    result = run("forget", "ex1", "--db", str(db), input="y\n")
    assert result.exit_code == 0, result.output
    assert "no stored state" in one_error_line(run("forget", "ex1", "--db", str(db), "--yes"))


# ---- the store methods copy and forget use ------------------------------------------------


@pytest.fixture(params=STORE_KINDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    store = make_store(request, request.param, tmp_path / "tbes.db")
    yield store
    store.close()


def test_stores_list_ledgers_and_delete_by_version(any_store: StateStore) -> None:
    store = any_store
    assert isinstance(store, MemoryStore | SQLiteStore | PostgresStore)
    for tenant in ("b", "a"):
        store.put_ledger(PauseLedger(tenant, 90), expected_version=None)
    assert [ledger.tenant for ledger in store.ledgers()] == ["a", "b"]
    version = store.put(fabrikam_state("ex1", BUILD, FIRST), expected_version=None)
    with pytest.raises(StoreConflictError):
        store.delete("ex1", expected_version=version + 1)
    assert store.get("ex1") is not None
    store.delete("ex1", expected_version=version)
    assert store.get("ex1") is None
    with pytest.raises(StoreConflictError):
        store.delete("ex1", expected_version=version)
    assert [ledger.tenant for ledger in store.ledgers()] == ["a", "b"]


# ---- tbes store copy ----------------------------------------------------------------------


def _source(tmp_path: Path) -> tuple[Path, list[str]]:
    db = tmp_path / "from.db"
    store = SQLiteStore(db)
    ids = [f"ex{n}.fabrikam.example" for n in range(5)]
    for n, server in enumerate(ids):
        store.put(
            fabrikam_state(server, BUILD, FIRST + dt.timedelta(days=n)), expected_version=None
        )
    store.put_ledger(
        PauseLedger("fabrikam", 90).grant(
            ids[0], dt.date(2026, 2, 1), 3, today=dt.date(2026, 2, 1)
        ),
        expected_version=None,
    )
    store.close()
    return db, ids


def _contents(store: SQLiteStore | PostgresStore) -> tuple[list[object], list[object]]:
    return list(store.states()), list(store.ledgers())


def test_store_copy_copies_every_state_and_ledger(tmp_path: Path) -> None:
    source, ids = _source(tmp_path)
    target = tmp_path / "to.db"
    result = run("store", "copy", str(source), str(target))
    assert result.exit_code == 0, result.output
    assert "Copied 5 server states and 1 pause ledgers" in result.stdout
    before, after = SQLiteStore(source, read_only=True), SQLiteStore(target, read_only=True)
    try:
        assert _contents(after) == _contents(before)
        assert [state.server_id for state in after.states()] == ids
    finally:
        before.close()
        after.close()


def test_store_copy_refuses_a_non_empty_target_unless_forced(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    target = tmp_path / "to.db"
    store = SQLiteStore(target)
    store.put(fabrikam_state("other", BUILD, FIRST), expected_version=None)
    store.close()
    assert "already holds 1 rows" in one_error_line(run("store", "copy", str(source), str(target)))
    store = SQLiteStore(target, read_only=True)
    assert [state.server_id for state in store.states()] == ["other"]
    store.close()
    result = run("store", "copy", str(source), str(target), "--force")
    assert result.exit_code == 0, result.output
    store = SQLiteStore(target, read_only=True)
    assert len(list(store.states())) == 6
    store.close()


def test_store_copy_refuses_the_same_file_and_an_unreadable_row(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    assert "same database" in one_error_line(run("store", "copy", str(source), str(source)))
    conn = sqlite3.connect(source)
    conn.execute(
        "UPDATE tbes_servers SET data = 'garbage' WHERE server_id = 'ex3.fabrikam.example'"
    )
    conn.commit()
    conn.close()
    target = tmp_path / "to.db"
    assert "nothing copied" in one_error_line(run("store", "copy", str(source), str(target)))
    assert not target.exists() or not list(SQLiteStore(target, read_only=True).states())


def as_url(dsn: str) -> str:
    """The test server's key=value DSN as the postgresql:// URL `store copy` takes."""
    parts = dict(part.split("=", 1) for part in dsn.split())
    options = quote(parts["options"], safe="")
    return (
        f"postgresql://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"
        f"?options={options}"
    )


@pytest.mark.service("postgresql")
def test_store_copy_from_sqlite_to_postgresql(tmp_path: Path, pg_server: PostgresServer) -> None:
    source, ids = _source(tmp_path)
    dsn = as_url(pg_server.fresh_dsn())
    result = run("store", "copy", str(source), dsn)
    assert result.exit_code == 0, result.output
    assert "PostgreSQL postgresql://" in result.stdout
    before, after = SQLiteStore(source, read_only=True), PostgresStore(dsn)
    try:
        assert _contents(after) == _contents(before)
    finally:
        before.close()
        after.close()
    # And back again, into a fresh SQLite file.
    back = tmp_path / "back.db"
    result = run("store", "copy", dsn, str(back))
    assert result.exit_code == 0, result.output
    assert len(list(SQLiteStore(back, read_only=True).states())) == len(ids)


def test_store_copy_never_prints_a_password(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    # Nothing listens on loopback port 1: the connection is refused at once.
    line = one_error_line(
        run("store", "copy", str(source), "postgresql://tbes:s3cret@127.0.0.1:1/tbes")
    )
    assert "s3cret" not in line


# ---- tbes timeline --at -------------------------------------------------------------------


def test_timeline_at_says_what_a_connection_then_gets() -> None:
    first = dt.datetime(2026, 1, 1, tzinfo=UTC)
    at = dt.datetime(2026, 3, 5, 10, 25, tzinfo=UTC)
    result = run(
        "timeline", "--build", BUILD, "--first-detected", "2026-01-01", "--server", "EX01",
        "--at", "2026-03-05T10:25:00Z",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # Day 64 (63 days after 2026-01-01): stage 5 of the default table (days 61 to 70).
    expected = decide(fabrikam_state("EX01", BUILD, first), at, DEFAULT_POLICY).action
    last = result.stdout.splitlines()[-1]
    assert last.startswith(f"At 2026-03-05 10:25 UTC: {expected.value}. ")
    assert "stage 5 (day 64)" in last
