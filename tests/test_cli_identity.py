"""The id-taking commands with servers behind connectors, and the wording of item 6.

``pause``, ``unpause``, ``server show`` and ``forget`` take a canonical id
(``CONNECTOR/HOST``) or a bare host name that exactly one stored server has; several
candidates are listed (exit 2). Expected texts are the sentences the issue asks for.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from click.testing import CliRunner, Result

from report_support import fabrikam_state
from tbes.cli import cli
from tbes.compliance import Compliance
from tbes.store import SQLiteStore

UTC = dt.UTC
FIRST = dt.datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
BUILD = "15.1.2507.39"  # Exchange 2016, outdated under exchange_online_2026
HOST = "ex01.fabrikam.example"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _db(tmp_path: Path, *ids: str) -> Path:
    db = tmp_path / "tbes.db"
    store = SQLiteStore(db)
    for server_id in ids:
        store.put(fabrikam_state(server_id, BUILD, FIRST), expected_version=None)
    store.close()
    return db


def _error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.stderr


def test_a_bare_host_name_names_the_one_server_that_has_it(tmp_path: Path) -> None:
    db = _db(tmp_path, f"edge/{HOST}", "edge/ex02.fabrikam.example")
    shown = run("server", "show", HOST.upper() + ".", "--db", str(db), "--at", "2026-01-05T12:00Z")
    assert shown.exit_code == 0, shown.output
    assert f"Server edge/{HOST} (tenant fabrikam)" in shown.stdout
    paused = run("pause", "--db", str(db), "--tenant", "fabrikam", HOST, "1",
                 "--at", "2026-01-05T12:00Z")  # fmt: skip
    assert paused.exit_code == 0, paused.output
    assert f"Paused edge/{HOST} (tenant fabrikam) for 1 day:" in paused.stdout
    store = SQLiteStore(db, read_only=True)
    try:
        ledger = store.get_ledger("fabrikam")
        assert ledger is not None
        assert [p.server_id for p in ledger.value.pauses] == [f"edge/{HOST}"]
    finally:
        store.close()
    forgot = run("forget", HOST, "--db", str(db), "--yes")
    assert forgot.exit_code == 0, forgot.output
    assert f"Forgot server edge/{HOST}" in forgot.stdout
    assert "its 1 pause day stays charged" in forgot.stdout


def test_a_host_behind_two_connectors_is_ambiguous_and_lists_the_candidates(
    tmp_path: Path,
) -> None:
    db = _db(tmp_path, f"edge-a/{HOST}", f"edge-b/{HOST}")
    for args in (
        ("server", "show", HOST, "--db", str(db)),
        ("forget", HOST, "--db", str(db), "--yes"),
        ("pause", "--db", str(db), "--tenant", "fabrikam", HOST, "3"),
        ("unpause", "--db", str(db), "--tenant", "fabrikam", HOST),
    ):
        error = _error(run(*args))
        assert f"edge-a/{HOST}" in error
        assert f"edge-b/{HOST}" in error
    # Nothing was changed.
    store = SQLiteStore(db, read_only=True)
    try:
        assert store.get_ledger("fabrikam") is None
        assert len(list(store.states())) == 2
    finally:
        store.close()
    # The canonical id still works.
    shown = run("server", "show", f"edge-b/{HOST}", "--db", str(db))
    assert shown.exit_code == 0, shown.output


def test_unpausing_a_compliant_server_does_not_say_enforcement_resumes(tmp_path: Path) -> None:
    db = tmp_path / "tbes.db"
    store = SQLiteStore(db)
    compliant = fabrikam_state(
        "edge/ex1.fabrikam.example",
        "15.1.2507.61",
        FIRST,
        status=Compliance.COMPLIANT,
        compliant_since=FIRST + dt.timedelta(days=3),
        last_seen=FIRST + dt.timedelta(days=3),
    )
    store.put(compliant, expected_version=None)
    store.close()
    at = "2026-01-10T12:00Z"
    assert run("pause", "--db", str(db), "--tenant", "fabrikam", "edge/ex1.fabrikam.example", "5",
               "--at", at).exit_code == 0  # fmt: skip
    result = run("unpause", "--db", str(db), "--tenant", "fabrikam", "edge/ex1.fabrikam.example",
                 "--at", at)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "enforcement resumes" not in result.stdout
    assert "nothing is enforced" in result.stdout


def test_a_pause_that_outlives_remediation_is_in_the_report(tmp_path: Path) -> None:
    db = tmp_path / "tbes.db"
    store = SQLiteStore(db)
    remediated = fabrikam_state(
        "edge/ex1.fabrikam.example",
        "15.1.2507.61",
        FIRST,
        [(dt.date(2026, 1, 10), 10)],
        status=Compliance.COMPLIANT,
        compliant_since=dt.datetime(2026, 1, 12, tzinfo=UTC),
        last_seen=dt.datetime(2026, 1, 12, tzinfo=UTC),
    )
    store.put(remediated, expected_version=None)
    store.close()
    result = run("report", "--db", str(db), "--format", "json", "--at", "2026-01-14T12:00Z")
    assert result.exit_code == 0, result.output
    text = result.stdout
    rows = json.loads(text)
    rows = rows if isinstance(rows, list) else rows.get("servers", rows.get("rows"))
    (row,) = rows
    assert row["paused_until"].startswith("2026-01-20")


def test_timeline_prints_whole_days_and_hours(tmp_path: Path) -> None:
    result = run("timeline", "--build", BUILD, "--first-detected", "2026-01-05T10:00Z",
                 "--pause", "2026-02-01:1")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.stdout
    # 2026-01-05 10:00 to 2026-02-01 00:00, and 2026-02-02 00:00 to 2026-02-05 10:00.
    assert "26d 14h" in out
    assert "3d 10h" in out
    assert "1d " in out
    assert "26.5833" not in out
    assert "3.41667" not in out


def test_what_if_errors_never_name_the_placeholder_tenant() -> None:
    quota = run("timeline", "--build", BUILD, "--first-detected", "2026-01-05",
                "--pause", "2026-02-01:60", "--pause", "2026-05-01:40")  # fmt: skip
    assert "what-if" not in _error(quota)
    assert "100 days in 2026" in quota.stderr
    overlap = run("timeline", "--build", BUILD, "--first-detected", "2026-01-05",
                  "--pause", "2026-02-01:10", "--pause", "2026-02-05:4")  # fmt: skip
    assert "what-if" not in _error(overlap)


def test_one_day_is_said_in_the_singular(tmp_path: Path) -> None:
    db = _db(tmp_path, "ex1")
    tenant = run("pause", "--db", str(db), "--tenant", "fabrikam", "--all", "1",
                 "--at", "2026-01-05T12:00Z")  # fmt: skip
    assert tenant.exit_code == 0, tenant.output
    assert "for 1 day:" in tenant.stdout
    assert "1 days" not in tenant.stdout
    ended = run("unpause", "--db", str(db), "--tenant", "fabrikam", "--all",
                "--at", "2026-01-04T12:00Z")  # fmt: skip
    assert "1 days" not in ended.stdout


def test_candidates_are_listed_escaped(tmp_path: Path) -> None:
    # Ids written before host names were checked, or forced by an operator, may hold
    # anything: the list of candidates never reaches the terminal raw.
    evil = "ex\x1b[31m.fabrikam.example"
    db = _db(tmp_path, f"edge-a/{evil}", f"edge-b/{evil}")
    error = _error(run("server", "show", evil, "--db", str(db)))
    assert "\x1b" not in error
    assert error.count("\\x1b[31m.fabrikam.example") == 3  # the name asked, two candidates
