"""The ``tbes`` command, run through click's CliRunner, checked against facts worked out by hand.

Timeline facts come from the default stage table (SPEC section 4): throttling 30 days after
the first detection, blocking after 60, full block after 90; a pause freezes the clock.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import tbes.cli
from report_support import fabrikam_state
from support import BUILD_LIST_CSV
from tbes.cli import cli
from tbes.compliance import Compliance
from tbes.events import EventKind
from tbes.ledger import Pause, PauseLedger
from tbes.report import ReportRow
from tbes.serde import loads
from tbes.state import ServerState
from tbes.store.sqlite import SQLiteStore
from tbes.version import ExchangeBuild

UTC = dt.UTC
EX16 = "ex2016.fabrikam.example"
EX19 = "ex2019.fabrikam.example"
REPLY_TAIL = "For more information see https://aka.ms/BlockUnsafeExchange."

MESSAGE = (
    "Received: from ex2016.fabrikam.example (ex2016.fabrikam.example [203.0.113.16])\r\n"
    "\tby mx1.contoso.example (Postfix) with ESMTPS id 4Zx1Lm0QzX;\r\n"
    "\tThu, 15 Oct 2026 08:12:41 +0000 (UTC)\r\n"
    "Received: from EX16MBX01.fabrikam.local (10.20.0.16) by ex2016.fabrikam.example\r\n"
    " (203.0.113.16) with Microsoft SMTP Server (version=TLS1_2,\r\n"
    " cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.1.2507.39; Thu, 15 Oct 2026\r\n"
    " 10:12:40 +0200\r\n"
    "From: Alice <alice@fabrikam.example>\r\n"
    "To: Bob <bob@contoso.example>\r\n"
    "Subject: quarterly figures\r\n"
    "\r\n"
    "Hello Bob.\r\n"
)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def table_rows(output: str) -> list[list[str]]:
    """The body cells of the rich tables in ``output`` (lines drawn with vertical bars)."""
    rows = []
    for line in output.splitlines():
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip().strip("│").split("│")])
    return rows


def milestones_of(output: str) -> dict[str, str]:
    """The two-cell rows of the tables in ``output``: milestone name to instant."""
    return {row[0]: row[1] for row in table_rows(output) if len(row) == 2}


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """Exit code 2, nothing on stdout, and one line on stderr naming what was wrong."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tbes: error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def offset(server_id: str) -> int:
    """The server's minute offset in the hour, by SPEC section 7's formula."""
    return int.from_bytes(hashlib.sha256(server_id.encode()).digest()[:8], "big") % 60


@pytest.fixture
def eml(tmp_path: Path) -> Path:
    path = tmp_path / "message.eml"
    path.write_bytes(MESSAGE.encode())
    return path


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with fabrikam's 2016 server (detected 1 Jan 2026) and its 2019 server."""
    path = tmp_path / "tbes.db"
    store = SQLiteStore(path)
    try:
        store.put(
            fabrikam_state(EX16, "15.1.2507.39", dt.datetime(2026, 1, 1, tzinfo=UTC)),
            expected_version=None,
        )
        store.put(
            fabrikam_state(EX19, "15.2.1748.39", None, status=Compliance.COMPLIANT),
            expected_version=None,
        )
        store.put(
            ServerState(
                "ex13.tailspin.example",
                "tailspin",
                ExchangeBuild.parse("15.0.1497.48"),
                Compliance.UNSUPPORTED,
                dt.datetime(2026, 2, 1, tzinfo=UTC),
                dt.datetime(2026, 2, 1, tzinfo=UTC),
                None,
            ),
            expected_version=None,
        )
    finally:
        store.close()
    return path


# ---- the group ------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in (
        "inspect",
        "timeline",
        "report",
        "pause",
        "unpause",
        "quota",
        "catalog",
        "demo",
    ):
        assert re.search(rf"^\s+{command}\s", result.output, re.MULTILINE), command


def test_an_unknown_command_is_one_line_and_exit_2() -> None:
    assert_one_line_error(run("frobnicate"), "frobnicate")


# ---- tbes timeline --------------------------------------------------------------------------


def test_timeline_shows_throttling_blocking_and_full_block_dates() -> None:
    result = run("timeline", "--build", "15.1.2507.39", "--first-detected", "2026-01-01")
    assert result.exit_code == 0, result.output
    milestones = milestones_of(result.output)
    assert milestones == {
        "first detected": "2026-01-01 00:00",
        "throttling from": "2026-01-31 00:00",
        "blocking from": "2026-03-02 00:00",
        "fully blocked": "2026-04-01 00:00",
    }


def test_timeline_lists_each_stage_with_its_minutes_per_hour() -> None:
    result = run("timeline", "--build", "15.1.2507.39", "--first-detected", "2026-01-01")
    stages = [row[:6] for row in table_rows(result.output) if len(row) == 7]
    assert stages == [
        ["1", "2026-01-01 00:00", "2026-01-31 00:00", "30d", "0", "0"],
        ["2", "2026-01-31 00:00", "2026-02-10 00:00", "10d", "5", "0"],
        ["3", "2026-02-10 00:00", "2026-02-20 00:00", "10d", "10", "0"],
        ["4", "2026-02-20 00:00", "2026-03-02 00:00", "10d", "20", "0"],
        ["5", "2026-03-02 00:00", "2026-03-12 00:00", "10d", "30", "5"],
        ["6", "2026-03-12 00:00", "2026-03-22 00:00", "10d", "30", "10"],
        ["7", "2026-03-22 00:00", "2026-04-01 00:00", "10d", "30", "20"],
        ["8", "2026-04-01 00:00", "-", "-", "0", "60"],
    ]


def test_timeline_with_a_ten_day_pause_shifts_each_milestone_by_ten_days() -> None:
    result = run(
        "timeline",
        "--build",
        "15.1.2507.39",
        "--first-detected",
        "2026-01-01",
        "--pause",
        "2026-01-10:10",
    )
    assert result.exit_code == 0, result.output
    milestones = milestones_of(result.output)
    assert milestones["throttling from"] == "2026-02-10 00:00"
    assert milestones["blocking from"] == "2026-03-12 00:00"
    assert milestones["fully blocked"] == "2026-04-11 00:00"
    paused = [row for row in table_rows(result.output) if len(row) == 7 and row[6] == "paused"]
    assert paused == [["1", "2026-01-10 00:00", "2026-01-20 00:00", "10d", "0", "0", "paused"]]


def test_timeline_keeps_the_time_and_converts_offsets_to_utc() -> None:
    result = run(
        "timeline", "--build", "8.3.517.0", "--first-detected", "2026-01-01T10:30:00+02:00"
    )
    milestones = milestones_of(result.output)
    assert milestones["throttling from"] == "2026-01-31 08:30"
    assert "UNSUPPORTED" in result.output


def test_timeline_of_a_compliant_build_says_nothing_is_enforced() -> None:
    result = run("timeline", "--build", "15.2.1748.39", "--first-detected", "2026-01-01")
    assert result.exit_code == 0
    assert "COMPLIANT" in result.output
    assert "never throttled or blocked" in result.output


def test_timeline_under_the_2023_policy_leaves_an_outdated_2016_alone() -> None:
    result = run(
        "timeline",
        "--build",
        "15.1.2507.39",
        "--first-detected",
        "2026-01-01",
        "--policy",
        "exchange_online_2023",
    )
    assert "COMPLIANT under exchange_online_2023" in result.output


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--build", "15.1.x", "--first-detected", "2026-01-01"], ["--build", "'15.1.x'"]),
        (["--build", "15.1.2507.39", "--first-detected", "2026-13-01"], ["'2026-13-01'"]),
        (
            ["--build", "15.1.2507.39", "--first-detected", "2026-01-01T10:00"],
            ["no time zone", "Z"],
        ),
        (
            ["--build", "15.1.2507.39", "--first-detected", "2026-01-01", "--policy", "nope"],
            ["--policy", "'nope'"],
        ),
        (
            ["--build", "15.1.2507.39", "--first-detected", "2026-01-01", "--pause", "soon"],
            ["DATE:DAYS", "'soon'"],
        ),
        (
            [
                "--build",
                "15.1.2507.39",
                "--first-detected",
                "2026-01-01",
                "--pause",
                "2026-01-10:0",
            ],
            ["DATE:DAYS"],
        ),
        (
            [
                "--build",
                "15.1.2507.39",
                "--first-detected",
                "2026-01-01",
                "--pause",
                "2026-01-10:91",
            ],
            ["quota", "2026"],
        ),
        (
            [
                "--build",
                "15.1.2507.39",
                "--first-detected",
                "2026-01-01",
                "--pause",
                "2026-01-10:10",
                "--pause",
                "2026-01-15:3",
            ],
            ["overlap"],
        ),
        (["--first-detected", "2026-01-01"], ["--build"]),
    ],
)
def test_timeline_bad_input_is_one_line_and_exit_2(args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(run("timeline", *args), *fragments)


# ---- tbes inspect ---------------------------------------------------------------------------


def test_inspect_finds_the_sending_exchange_server_behind_our_own_hop(eml: Path) -> None:
    result = run(
        "inspect", str(eml), "--own-host", "contoso.example", "--at", "2026-10-15T08:13:00Z"
    )
    assert result.exit_code == 0, result.output
    hops = [row for row in table_rows(result.output) if len(row) == 6]
    assert [row[4] for row in hops] == ["-", "15.1.2507.39"]
    assert (
        "Sender: hop 1, ex2016.fabrikam.example (203.0.113.16), build 15.1.2507.39" in result.output
    )
    assert "Exchange 2016 CU23 Apr24HU" in result.output
    assert "Assessment under exchange_online: OUTDATED." in result.output
    assert "Recommended: 15.1.2507.61" in result.output
    assert "Decision: ACCEPT in stage 1." in result.output
    milestones = milestones_of(result.output)
    assert milestones["throttling from"] == "2026-11-14 08:13"


def test_inspect_without_own_hosts_sees_only_the_gateway_and_enforces_nothing(eml: Path) -> None:
    result = run("inspect", str(eml), "--at", "2026-10-15T08:13:00Z")
    assert result.exit_code == 0
    assert "no Exchange build" in result.output
    assert "Decision" not in result.output


@pytest.mark.parametrize(
    ("shift", "action", "reply"),
    [
        (
            0,
            "BLOCK",
            "550 5.7.230 Connecting Exchange server version is out-of-date; connection "
            "to Exchange Online blocked for 5 mins/hr. " + REPLY_TAIL,
        ),
        (
            10,
            "THROTTLE",
            "450 4.7.230 Connecting Exchange server version is out-of-date; "
            "connection to Exchange Online throttled for 30 mins/hr. " + REPLY_TAIL,
        ),
        (40, None, None),
    ],
)
def test_inspect_decides_as_if_the_message_arrived_at_the_given_minute(
    eml: Path, shift: int, action: str | None, reply: str | None
) -> None:
    # Detected on 1 Jan, so 5 March is day 63: stage 5, 5 minutes blocked and 30 throttled
    # per hour, starting at the server's own offset.
    minute = (offset(EX16) + shift) % 60
    result = run(
        "inspect",
        str(eml),
        "--own-host",
        "mx1.contoso.example",
        "--first-detected",
        "2026-01-01",
        "--at",
        f"2026-03-05T10:{minute:02d}:30Z",
    )
    assert result.exit_code == 0, result.output
    if action is None:
        assert "Decision: ACCEPT in stage 5." in result.output
        assert "Reply:" not in result.output
    else:
        assert f"Decision: {action} in stage 5." in result.output
        assert f"Reply: {reply}" in result.output


def test_inspect_json_carries_hops_sender_assessment_and_decision(eml: Path) -> None:
    result = run(
        "inspect",
        str(eml),
        "--own-host",
        "contoso.example",
        "--at",
        "2026-10-15T08:13:00Z",
        "--json",
    )
    data = json.loads(result.stdout)
    assert len(data["hops"]) == 2
    assert data["hops"][0]["by_host"] == "mx1.contoso.example"
    assert data["sender"]["build"] == "15.1.2507.39"
    assert data["sender"]["index"] == 1
    assert data["assessment"]["status"] == "OUTDATED"
    assert data["decision"]["action"] == "ACCEPT"
    assert data["decision"]["stage"]["number"] == 1
    assert data["report"]["ThrottleEnabledDate"] == "2026-11-14T08:13:00+00:00"


def test_inspect_a_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(run("inspect", str(tmp_path / "nope.eml")), "nope.eml")


def test_inspect_a_naive_time_is_one_line_and_exit_2(eml: Path) -> None:
    assert_one_line_error(run("inspect", str(eml), "--at", "2026-03-05 10:00"), "no time zone")


# ---- tbes report ----------------------------------------------------------------------------


def test_report_table_has_one_row_per_server(db: Path) -> None:
    result = run("report", "--db", str(db), "--at", "2026-01-15T00:00:00Z")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["Tenant", "Server"]
    body = lines[2:]
    # Streamed in the store's order: by server id, whatever the tenant.
    assert [line.split()[:2] for line in body] == [
        ["tailspin", "ex13.tailspin.example"],
        ["fabrikam", "ex2016.fabrikam.example"],
        ["fabrikam", "ex2019.fabrikam.example"],
    ]
    assert "2026-01-31 00:00" in body[1]  # throttling from
    assert "UNSUPPORTED" in body[0]


def test_report_for_one_tenant_as_csv(db: Path) -> None:
    result = run(
        "report", "--db", str(db), "--tenant", "fabrikam", "--format", "csv", "--at", "2026-02-15"
    )
    assert result.exit_code == 0, result.output
    records = list(csv.DictReader(io.StringIO(result.stdout, newline="")))
    assert [r["server"] for r in records] == [EX16, EX19]
    assert records[0]["ThrottleEnabledDate"] == "2026-01-31T00:00:00+00:00"
    assert records[0]["stage"] == "3"  # day 45
    assert records[0]["NextStageStartDate"] == "2026-02-20T00:00:00+00:00"


def test_report_as_json_reads_back_as_report_rows(db: Path) -> None:
    result = run("report", "--db", str(db), "--format", "json", "--at", "2026-01-15T00:00:00Z")
    rows = loads(result.stdout, list[ReportRow])
    assert {row.server for row in rows} == {EX16, EX19, "ex13.tailspin.example"}


def test_report_as_html_to_a_file(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = run(
        "report",
        "--db",
        str(db),
        "--format",
        "html",
        "-o",
        str(out),
        "--at",
        "2026-01-15T00:00:00Z",
    )
    assert result.exit_code == 0, result.output
    assert f"Wrote the html report of 3 servers to {out}." in result.output
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('role="img"') == 3
    assert "today 2026-01-15" in page


def test_report_of_a_missing_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(run("report", "--db", str(tmp_path / "none.db")), "none.db")


def test_report_of_a_file_that_is_not_a_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("this is not SQLite\n" * 100)
    assert_one_line_error(run("report", "--db", str(junk)), "junk.db")


def test_report_refuses_an_unknown_format(db: Path) -> None:
    assert_one_line_error(run("report", "--db", str(db), "--format", "pdf"), "'pdf'")


# ---- tbes pause / unpause / quota -----------------------------------------------------------


def test_pause_charges_the_quota_and_shifts_the_reported_timeline(db: Path) -> None:
    result = run(
        "pause", "--db", str(db), "--tenant", "fabrikam", EX16, "10",
        "--start", "2026-01-10", "--at", "2026-01-05T09:00:00Z",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"Paused {EX16} (tenant fabrikam) for 10 days: 2026-01-10 to 2026-01-19" in result.output
    assert "Quota of fabrikam in 2026: 10 of 90 days used, 80 remaining." in result.output
    report = run("report", "--db", str(db), "--format", "csv", "--at", "2026-01-15T00:00:00Z")
    (record,) = [r for r in csv.DictReader(io.StringIO(report.stdout)) if r["server"] == EX16]
    assert record["paused_until"] == "2026-01-20T00:00:00+00:00"
    assert record["ThrottleEnabledDate"] == "2026-02-10T00:00:00+00:00"
    assert record["fully_blocked"] == "2026-04-11T00:00:00+00:00"


def test_a_pause_across_the_year_end_charges_both_years(db: Path) -> None:
    run(
        "pause", "--db", str(db), "--tenant", "fabrikam", EX16, "30",
        "--start", "2026-12-20", "--at", "2026-12-01T00:00:00Z",
    )  # fmt: skip
    r2026 = run("quota", "--db", str(db), "--tenant", "fabrikam", "--year", "2026")
    r2027 = run("quota", "--db", str(db), "--tenant", "fabrikam", "--year", "2027")
    assert "Tenant fabrikam, 2026: 12 of 90 pause days used, 78 remaining." in r2026.output
    assert "Tenant fabrikam, 2027: 18 of 90 pause days used, 72 remaining." in r2027.output
    assert table_rows(r2027.output) == [[EX16, "2026-12-20", "2027-01-18", "30", "18"]]


def test_quota_of_a_tenant_without_pauses_is_all_remaining(db: Path) -> None:
    result = run("quota", "--db", str(db), "--tenant", "fabrikam", "--at", "2026-06-01T00:00:00Z")
    assert result.exit_code == 0
    assert "Tenant fabrikam, 2026: 0 of 90 pause days used, 90 remaining." in result.output
    assert "No pauses in 2026." in result.output


def test_unpause_returns_the_days_not_yet_paused(db: Path) -> None:
    run(
        "pause", "--db", str(db), "--tenant", "fabrikam", EX16, "30",
        "--start", "2026-12-20", "--at", "2026-12-01T00:00:00Z",
    )  # fmt: skip
    # On 25 Dec the pause keeps 20..25 Dec (6 days) and gives back 6 days of 2026 and 18 of 2027.
    result = run(
        "unpause", "--db", str(db), "--tenant", "fabrikam", EX16, "--at", "2026-12-25T12:00:00Z"
    )
    assert result.exit_code == 0, result.output
    assert "enforcement resumes 2026-12-26 00:00 UTC" in result.output
    assert (
        "Quota of fabrikam in 2026: 6 of 90 days used, 84 remaining (6 days returned)."
        in result.output
    )
    assert (
        "Quota of fabrikam in 2027: 0 of 90 days used, 90 remaining (18 days returned)."
        in result.output
    )


def test_unpause_without_a_pause_says_so(db: Path) -> None:
    result = run(
        "unpause", "--db", str(db), "--tenant", "fabrikam", EX16, "--at", "2026-01-05T00:00:00Z"
    )
    assert result.exit_code == 0
    assert "had no current or future pause" in result.output


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["91"], ["91 days", "2026", "remain"]),
        (["10", "--start", "2026-01-01"], ["before today", "2026-01-05"]),
        (["0"], ["DAYS"]),
        (["10", "--start", "tomorrow"], ["--start", "'tomorrow'"]),
    ],
)
def test_pause_bad_input_is_one_line_and_exit_2(
    db: Path, args: list[str], fragments: list[str]
) -> None:
    result = run(
        "pause",
        "--db",
        str(db),
        "--tenant",
        "fabrikam",
        EX16,
        *args,
        "--at",
        "2026-01-05T00:00:00Z",
    )
    assert_one_line_error(result, *fragments)


def test_a_second_overlapping_pause_is_one_line_and_exit_2(db: Path) -> None:
    args = ["pause", "--db", str(db), "--tenant", "fabrikam", EX16]
    run(*args, "10", "--start", "2026-01-10", "--at", "2026-01-05T00:00:00Z")
    result = run(*args, "5", "--start", "2026-01-15", "--at", "2026-01-05T00:00:00Z")
    assert_one_line_error(result, "overlaps")


def test_pausing_a_server_of_another_tenant_is_one_line_and_exit_2(db: Path) -> None:
    result = run(
        "pause", "--db", str(db), "--tenant", "tailspin", EX16, "5", "--at", "2026-01-05T00:00:00Z"
    )
    assert_one_line_error(result, "fabrikam", "tailspin")


# ---- tbes catalog ---------------------------------------------------------------------------


def test_catalog_show_lists_each_product_with_its_latest_build_and_end_of_support() -> None:
    result = run("catalog", "show")
    assert result.exit_code == 0
    rows = {row[0]: row for row in table_rows(result.output)}
    assert rows["Exchange 2007"][2] == "8.3.517.0"  # SP3 RU23, the last one
    assert rows["Exchange 2016"][4] == "2025-10-14"
    assert rows["Exchange 2010"][4] == "2020-10-13"
    assert rows["Exchange SE"][4] == "-"


def test_catalog_show_product_lists_its_releases() -> None:
    result = run("catalog", "show", "2016")
    rows = {row[0]: row for row in table_rows(result.output)}
    assert rows["CU23 Oct25SU"] == ["CU23 Oct25SU", "15.1.2507.61", "2025-10-14", "KB5066369"]
    assert rows["CU23 Apr24HU"][1] == "15.1.2507.39"
    assert all(row[1].startswith("15.1.") for row in rows.values())


def test_catalog_show_an_unknown_product_is_one_line_and_exit_2() -> None:
    assert_one_line_error(run("catalog", "show", "2099"), "'2099'", "2016")


def test_catalog_import_writes_a_file_that_catalog_option_and_env_read(tmp_path: Path) -> None:
    out = tmp_path / "catalog.json"
    source = BUILD_LIST_CSV
    result = run("catalog", "import", str(source), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert f"into {out}" in result.output
    assert "--catalog" in result.output
    assert out.exists()
    by_option = run("--catalog", str(out), "catalog", "show", "SE")
    by_env = run("catalog", "show", "Exchange SE", env={"TBES_CATALOG": str(out)})
    for shown in (by_option, by_env):
        assert shown.exit_code == 0, shown.output
        rows = {row[0]: row for row in table_rows(shown.output)}
        assert rows["RTM"][1] == "15.2.2562.17"  # Exchange SE RTM, 1 July 2025


def test_catalog_import_of_a_malformed_csv_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Product Name,Build Number,Date,KB,Blog\nExchange 2016 CU23,not-a-build,x,,\n")
    assert_one_line_error(
        run("catalog", "import", str(bad), "-o", str(tmp_path / "c.json")), "bad.csv"
    )


def test_a_missing_catalog_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(
        run("--catalog", str(tmp_path / "none.json"), "catalog", "show"), "none.json"
    )


def test_a_corrupt_catalog_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    assert_one_line_error(run("--catalog", str(corrupt), "catalog", "show"), "corrupt.json")


# ---- tbes demo ------------------------------------------------------------------------------


def test_demo_replays_the_scenario_and_writes_the_report(tmp_path: Path) -> None:
    db, report = tmp_path / "demo.db", tmp_path / "report.html"
    result = run("demo", "--db", str(db), "--report", str(report))
    assert result.exit_code == 0, result.output
    out = result.output
    for event in (
        "DETECTED",
        "STAGE_CHANGED",
        "BLOCKING_STARTED",
        "FULLY_BLOCKED",
        "PAUSED",
        "REMEDIATED",
    ):
        assert event in out
    # The pause runs 5 Dec 2026 for 30 days: 27 days charged to 2026 and 3 to 2027.
    assert "Quota of fabrikam in 2026: 27 of 90 days used, 63 remaining." in out
    assert "Quota of fabrikam in 2027: 3 of 90 days used, 87 remaining." in out
    page = report.read_text(encoding="utf-8")
    # A timeline chart per stored on-premises server (fabrikam's four, contoso's, woodgrove's).
    for server in (
        "ex2007.fabrikam.example",
        "ex2016.fabrikam.example",
        "ex2019.fabrikam.example",
        "exse.fabrikam.example",
        "mail.contoso.example",
        "mail.woodgrove.example",
        "northwind-edge/ex2013.northwind.example",
        "northwind-edge/exse.northwind.example",
    ):
        assert f'role="img" aria-label="timeline of {server}' in page
    # Every event went through the outbox to the webhook and the SMTP sink the demo started
    # on loopback, advance notices included, each once.
    posted = re.search(r"Delivered (\d+) events to the webhook at http://127\.0\.0\.1:\d+/", out)
    mailed = re.search(r"Mailed (\d+) notices to the SMTP sink at 127\.0\.0\.1:\d+", out)
    assert posted is not None, out
    assert mailed is not None, out
    kinds = "|".join(kind.value for kind in EventKind)
    announced = re.findall(rf"^\S+ \S+\s+({kinds}) ", out, flags=re.MULTILINE)
    assert int(posted[1]) == int(mailed[1]) == len(announced) > 0
    # fabrikam's 2007 and 2016, northwind's 2013, contoso's and woodgrove's: a notice each.
    assert announced.count("THROTTLING_SOON") == 5
    assert "5 THROTTLING_SOON" in out
    # The database stays for `tbes report`; the 2007 server, detected on the first day, has
    # been fully blocked since 90 days after its first message.
    csv_report = run("report", "--db", str(db), "--format", "csv", "--at", "2027-02-15T18:00Z")
    records = {r["server"]: r for r in csv.DictReader(io.StringIO(csv_report.stdout))}
    ex2007 = records["ex2007.fabrikam.example"]
    first = dt.datetime.fromisoformat(ex2007["FirstDetectedDate"])
    assert first.date() == dt.date(2026, 10, 15)
    assert dt.datetime.fromisoformat(ex2007["fully_blocked"]) == first + dt.timedelta(days=90)
    assert ex2007["stage"] == "8"
    assert records["ex2016.fabrikam.example"]["status"] == "COMPLIANT"
    assert records["ex2016.fabrikam.example"]["Build"] == "15.1.2507.69"
    assert "tailspin-partner" not in records  # cloud-only: nothing on-premises to record
    # Two servers behind northwind's one connector, each with its own state: the 2013 one
    # enforced on schedule, the SE one never; the tenant pause covers both, charged once.
    ex2013 = records["northwind-edge/ex2013.northwind.example"]
    assert dt.datetime.fromisoformat(ex2013["FirstDetectedDate"]).date() == dt.date(2026, 10, 15)
    assert ex2013["stage"] == "8"
    assert ex2013["paused_until"] == "2027-02-20T00:00:00+00:00"
    exse = records["northwind-edge/exse.northwind.example"]
    assert (exse["status"], exse["FirstDetectedDate"]) == ("COMPLIANT", "")
    assert "enforcement of every server of tenant northwind paused for 10 days" in out
    assert "REMEDIATED northwind" not in out
    ledger = SQLiteStore(db)
    try:
        stored = ledger.get_ledger("fabrikam")
    finally:
        ledger.close()
    assert stored is not None
    assert stored.value == PauseLedger("fabrikam", 90, (Pause(EX16, dt.date(2026, 12, 5), 30),))


def test_demo_refuses_to_overwrite_a_file_that_is_not_a_tbes_database(tmp_path: Path) -> None:
    precious = tmp_path / "precious.db"
    precious.write_text("my notes\n")
    result = run("demo", "--db", str(precious), "--report", str(tmp_path / "r.html"))
    assert_one_line_error(result, "precious.db", "not a tbes database")
    assert precious.read_text() == "my notes\n"


# ---- subcommands of optional extras ---------------------------------------------------------


def test_a_subcommand_whose_extra_is_missing_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(
        tbes.cli._app._LAZY_COMMANDS, "smtpd", ("tbes_no_such_module", "command", "smtp")
    )
    listed = run("--help")
    assert re.search(
        r"^\s+smtpd\s+\(not installed: pip install 'tbes\[smtp\]'\)", listed.output, re.M
    )
    assert_one_line_error(run("smtpd"), "tbes_no_such_module", "pip install 'tbes[smtp]'")


def test_tbes_milter_and_serve_need_no_extra_beyond_the_cli() -> None:
    # The milter is pure Python: no extra to name, the commands are always there.
    milter = run("milter", "--help")
    assert milter.exit_code == 0
    assert "--listen" in milter.output
    serve = run("serve", "--help")
    assert serve.exit_code == 0
    assert "--milter" in serve.output
    assert "--policy" in serve.output
