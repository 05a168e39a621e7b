"""`tbes pause --all`, `tbes unpause --all` and `tbes quota` with tenant pauses."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner, Result

from report_support import fabrikam_state
from tbes.cli import cli
from tbes.ledger import Pause, TenantPause
from tbes.store import SQLiteStore

UTC = dt.UTC
EX16 = "ex2016.fabrikam.example"
EX19 = "ex2019.fabrikam.example"
EX13 = "ex2013.fabrikam.example"
TAILSPIN = "ex13.tailspin.example"
AT = "2026-01-05T09:00:00Z"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def table_rows(output: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tbes: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Three outdated fabrikam servers detected 1 January 2026, and one of tailspin."""
    path = tmp_path / "tbes.db"
    store = SQLiteStore(path)
    try:
        first = dt.datetime(2026, 1, 1, tzinfo=UTC)
        for server in (EX16, EX19, EX13):
            store.put(fabrikam_state(server, "15.1.2507.39", first), expected_version=None)
        tailspin = attrs.evolve(fabrikam_state(TAILSPIN, "15.1.2507.39", first), tenant="tailspin")
        store.put(tailspin, expected_version=None)
    finally:
        store.close()
    return path


def stored(db: Path, server: str) -> tuple[Pause, ...]:
    store = SQLiteStore(db)
    try:
        got = store.get(server)
        assert got is not None
        return got.value.pauses
    finally:
        store.close()


def test_pause_all_pauses_every_server_of_the_tenant_for_one_charge_per_day(db: Path) -> None:
    result = run(
        "pause", "--db", str(db), "--tenant", "fabrikam", "--all", "10",
        "--start", "2026-01-10", "--at", AT,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "Paused every server of tenant fabrikam for 10 days: 2026-01-10 to 2026-01-19 (UTC "
        "days); enforcement resumes 2026-01-20 00:00 UTC." in result.output
    )
    assert "Quota of fabrikam in 2026: 10 of 90 days used, 80 remaining." in result.output
    for server in (EX16, EX19, EX13):
        assert stored(db, server) == (Pause(server, dt.date(2026, 1, 10), 10),)
    assert stored(db, TAILSPIN) == ()
    report = run("report", "--db", str(db), "--format", "csv", "--at", "2026-01-15T00:00:00Z")
    rows = {r["server"]: r for r in csv.DictReader(io.StringIO(report.stdout))}
    for server in (EX16, EX19, EX13):
        assert rows[server]["paused_until"] == "2026-01-20T00:00:00+00:00"
    assert rows[TAILSPIN]["paused_until"] == ""


def test_pause_all_over_server_pauses_shows_the_refund(db: Path) -> None:
    for server in (EX16, EX19):
        run(
            "pause", "--db", str(db), "--tenant", "fabrikam", server, "10",
            "--start", "2026-01-10", "--at", AT,
        )  # fmt: skip
    result = run(
        "pause", "--db", str(db), "--tenant", "fabrikam", "--all", "10",
        "--start", "2026-01-10", "--at", AT,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # 20 server-pause days become 10 tenant-pause days: 20 returned, 10 charged.
    assert (
        "Quota of fabrikam in 2026: 10 of 90 days used, 80 remaining (20 days returned)."
        in result.output
    )


def test_quota_lists_both_kinds_and_what_the_tenant_pause_saves(db: Path) -> None:
    run(
        "pause", "--db", str(db), "--tenant", "fabrikam", EX16, "5",
        "--start", "2026-02-01", "--at", AT,
    )  # fmt: skip
    run(
        "pause", "--db", str(db), "--tenant", "fabrikam", "--all", "10",
        "--start", "2026-01-10", "--at", AT,
    )  # fmt: skip
    result = run("quota", "--db", str(db), "--tenant", "fabrikam", "--year", "2026")
    assert result.exit_code == 0, result.output
    assert "Tenant fabrikam, 2026: 15 of 90 pause days used, 75 remaining." in result.output
    assert table_rows(result.output) == [
        ["(every server)", "2026-01-10", "2026-01-19", "10", "10"],
        [EX16, "2026-02-01", "2026-02-05", "5", "5"],
    ]
    assert (
        "Tenant pauses in 2026: 10 days charged for 3 stored servers, 20 fewer than pausing "
        "each server." in result.output
    )


def test_a_second_pause_all_extends_the_first(db: Path) -> None:
    args = ("pause", "--db", str(db), "--tenant", "fabrikam", "--all")
    run(*args, "10", "--start", "2026-01-10", "--at", AT)
    result = run(*args, "10", "--start", "2026-01-15", "--at", AT)
    assert result.exit_code == 0, result.output
    assert "enforcement resumes 2026-01-25 00:00 UTC" in result.output
    assert "Quota of fabrikam in 2026: 15 of 90 days used, 75 remaining." in result.output


def test_unpause_all_returns_the_unused_days(db: Path) -> None:
    run(
        "pause", "--db", str(db), "--tenant", "fabrikam", "--all", "10",
        "--start", "2026-01-10", "--at", AT,
    )  # fmt: skip
    result = run(
        "unpause", "--db", str(db), "--tenant", "fabrikam", "--all",
        "--at", "2026-01-12T08:00:00Z",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "Ended the tenant pause of fabrikam; enforcement resumes 2026-01-13 00:00 UTC."
        in result.output
    )
    assert (
        "Quota of fabrikam in 2026: 3 of 90 days used, 87 remaining (7 days returned)."
        in result.output
    )
    for server in (EX16, EX19, EX13):
        assert stored(db, server) == (Pause(server, dt.date(2026, 1, 10), 3),)


def test_unpause_all_without_a_tenant_pause_says_so(db: Path) -> None:
    result = run("unpause", "--db", str(db), "--tenant", "fabrikam", "--all", "--at", AT)
    assert result.exit_code == 0, result.output
    assert "Tenant fabrikam had no current or future tenant pause." in result.output


def test_a_server_pause_inside_the_tenant_pause_is_one_line_and_exit_2(db: Path) -> None:
    run(
        "pause", "--db", str(db), "--tenant", "fabrikam", "--all", "10",
        "--start", "2026-01-10", "--at", AT,
    )  # fmt: skip
    result = run(
        "pause", "--db", str(db), "--tenant", "fabrikam", EX16, "3",
        "--start", "2026-01-12", "--at", AT,
    )  # fmt: skip
    assert_one_line_error(result, "tenant pause of fabrikam", "2026-01-10", "2026-01-19")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["pause", "--all", "10", EX16], ["--all DAYS", "SERVER"]),
        (["pause", "--all", "10", "--force"], ["--force"]),
        (["pause", "--all", "0"], ["--all", "x>=1"]),
        (["pause", "--all", "91"], ["91 days", "2026", "remain"]),
        (["pause"], ["SERVER"]),
        (["pause", EX16], ["DAYS"]),
        (["unpause"], ["SERVER or --all"]),
        (["unpause", EX16, "--all"], ["SERVER or --all"]),
    ],
)
def test_bad_pause_all_input_is_one_line_and_exit_2(
    db: Path, args: list[str], fragments: list[str]
) -> None:
    command, *rest = args
    result = run(command, "--db", str(db), "--tenant", "fabrikam", *rest, "--at", AT)
    assert_one_line_error(result, *fragments)


def test_the_stored_ledger_holds_the_tenant_pause(db: Path) -> None:
    run("pause", "--db", str(db), "--tenant", "fabrikam", "--all", "4", "--at", AT)
    store = SQLiteStore(db)
    try:
        got = store.get_ledger("fabrikam")
    finally:
        store.close()
    assert got is not None
    assert got.value.tenant_pauses == (TenantPause(dt.date(2026, 1, 5), 4),)
