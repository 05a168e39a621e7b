"""The ``tbes`` command at the edges: hostile text from mail, stores and the command line, and
instants at the calendar's end (issue 13 items 7 and 9).

Hostile text must reach the terminal with its control characters as visible escapes
(``\\x1b``) and its brackets as text, never as rich markup; an instant near 9999-12-31 gives
an answer or one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from report_support import fabrikam_state
from tbes.cli import cli
from tbes.store.sqlite import SQLiteStore

UTC = dt.UTC
# ESC starting a colour change, CSI as one C1 character, DEL, BEL, and rich markup.
HOSTILE = "ev\x1b[31mil\x9b2J\x7f\x07[bold]x"
SHOWN = "ev\\x1b[31mil\\x9b2J\\x7f\\x07[bold]x"
# Every C0 character but the newline that ends lines, DEL and every C1 character.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_clean(result: Result) -> None:
    """No raw control character anywhere in what the command wrote, and no traceback."""
    for stream in (result.stdout, result.stderr):
        found = RAW_CONTROL.search(stream)
        assert found is None, (found, stream)
    assert "Traceback" not in result.output


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tbes: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert_clean(result)


# ---- hostile text -------------------------------------------------------------------------


def hostile_message(tmp_path: Path) -> Path:
    """A message whose sending Exchange server's name carries ESC and C1 sequences."""
    host = "ex\x1b[31m16\x9b2J.fabrikam.example"
    text = (
        f"Received: from {host} (mail.fabrikam.example [203.0.113.16]) by mx.contoso.example "
        "with ESMTP\x1b[2J[bold]x id 1; Thu, 15 Oct 2026 10:12:41 +0200\r\n"
        f"Received: from EX16MBX01.fabrikam.local (10.20.0.16) by {host} (203.0.113.16) "
        "with Microsoft SMTP Server id 15.1.2507.39; Thu, 15 Oct 2026 10:12:40 +0200\r\n"
        "From: a@fabrikam.example\r\n\r\nHello.\r\n"
    )
    path = tmp_path / "hostile.eml"
    path.write_bytes(text.encode())
    return path


@pytest.fixture
def hostile_db(tmp_path: Path) -> Path:
    """A database whose only server's id and tenant are hostile, with one pause granted."""
    path = tmp_path / "hostile.db"
    store = SQLiteStore(path)
    try:
        state = fabrikam_state(HOSTILE, "15.1.2507.39", dt.datetime(2026, 1, 1, tzinfo=UTC))
        store.put(state, expected_version=None)
    finally:
        store.close()
    return path


def test_inspect_shows_escape_sequences_from_received_headers_as_visible_escapes(
    tmp_path: Path,
) -> None:
    result = run(
        "inspect", str(hostile_message(tmp_path)),
        "--own-host", "mx.contoso.example", "--at", "2026-10-15T09:00:00Z",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert_clean(result)
    # The sender's line and the decision name the server (host names are lower-cased),
    # escaped; the hop table shows the protocol words escaped and their brackets as text.
    assert "Sender: hop 1, ex\\x1b[31m16\\x9b2j.fabrikam.example" in result.stdout
    assert "Decision: ACCEPT in stage 1. ex\\x1b[31m16\\x9b2j.fabrikam.example" in result.stdout
    assert "ESMTP\\x1b[2J[bold]x" in result.stdout


def test_inspect_json_keeps_the_text_but_escapes_every_control_character(
    tmp_path: Path,
) -> None:
    result = run(
        "inspect", str(hostile_message(tmp_path)), "--json",
        "--own-host", "mx.contoso.example", "--at", "2026-10-15T09:00:00Z",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert_clean(result)
    assert "ex\\u001b[31m16\\u009b2j.fabrikam.example" in result.stdout


@pytest.mark.parametrize("fmt", ["table", "csv", "html"])
def test_report_shows_a_hostile_server_id_escaped_in_every_text_format(
    hostile_db: Path, fmt: str
) -> None:
    result = run("report", "--db", str(hostile_db), "--format", fmt, "--at", "2026-02-01")
    assert result.exit_code == 0, result.output
    assert_clean(result)
    assert "ev\\x1b[31mil\\x9b2J\\x7f\\x07" in result.stdout


def test_report_json_escapes_c1_and_del_too(hostile_db: Path) -> None:
    result = run("report", "--db", str(hostile_db), "--format", "json", "--at", "2026-02-01")
    assert result.exit_code == 0, result.output
    assert_clean(result)
    assert '"server": "ev\\u001b[31mil\\u009b2J\\u007f\\u0007[bold]x"' in result.stdout


def test_pause_quota_and_unpause_show_hostile_ids_escaped(hostile_db: Path) -> None:
    common = ["--db", str(hostile_db), "--tenant", "fabrikam"]
    paused = run("pause", *common, HOSTILE, "10", "--start", "2026-03-10", "--at", "2026-03-01")
    assert paused.exit_code == 0, paused.output
    assert_clean(paused)
    assert f"Paused {SHOWN} (tenant fabrikam) for 10 days" in paused.stdout
    quota = run("quota", *common, "--year", "2026")
    assert quota.exit_code == 0, quota.output
    assert_clean(quota)
    assert SHOWN in quota.stdout
    ended = run("unpause", *common, HOSTILE, "--at", "2026-03-05")
    assert ended.exit_code == 0, ended.output
    assert_clean(ended)
    assert f"Ended the pauses of {SHOWN} (tenant fabrikam)" in ended.stdout


def test_a_hostile_tenant_is_escaped_in_quota_and_unpause(hostile_db: Path) -> None:
    quota = run("quota", "--db", str(hostile_db), "--tenant", HOSTILE, "--year", "2026")
    assert quota.exit_code == 0, quota.output
    assert_clean(quota)
    assert f"Tenant {SHOWN}, 2026: 0 of 90" in quota.stdout
    ended = run("unpause", "--db", str(hostile_db), "--tenant", HOSTILE, "x", "--at", "2026-03-05")
    assert_clean(ended)
    assert f"(tenant {SHOWN})" in ended.output


def test_an_error_that_echoes_a_stored_or_given_id_escapes_it(hostile_db: Path) -> None:
    # The server belongs to fabrikam: the refusal names it and both tenants.
    result = run(
        "pause", "--db", str(hostile_db), "--tenant", "tailspin", HOSTILE, "5", "--at", "2026-01-05"
    )
    assert_one_line_error(result, "ev\\x1b[31mil\\x9b2J\\x7f\\x07[bold]x", "tailspin")


def test_an_error_that_echoes_a_file_name_escapes_it(tmp_path: Path) -> None:
    missing = tmp_path / "no\x1b[2Jsuch\x9b.eml"
    assert_one_line_error(run("inspect", str(missing)), "no\\x1b[2Jsuch\\x9b.eml")


def test_an_error_that_echoes_an_option_value_escapes_it() -> None:
    result = run("timeline", "--build", "15.1.2507.39", "--first-detected", "20\x1b[2J26-01-01")
    assert_one_line_error(result, "--first-detected", "\\x1b[2J")


def test_a_written_report_names_a_hostile_output_path_escaped(
    hostile_db: Path, tmp_path: Path
) -> None:
    output = tmp_path / "rep\x1b[2Jort.csv"
    result = run("report", "--db", str(hostile_db), "--format", "csv", "-o", str(output))
    assert result.exit_code == 0, result.output
    assert_clean(result)
    assert "rep\\x1b[2Jort.csv" in result.stdout


# ---- the calendar's end -------------------------------------------------------------------


MESSAGE = (
    "Received: from EX16MBX01.fabrikam.local (10.20.0.16) by ex2016.fabrikam.example\r\n"
    " (203.0.113.16) with Microsoft SMTP Server id 15.1.2507.39; Thu, 15 Oct 2026\r\n"
    " 10:12:40 +0200\r\n"
    "From: a@fabrikam.example\r\n\r\nHello.\r\n"
)


def milestones(output: str) -> dict[str, str]:
    cells = (
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    )
    return {row[0]: row[1] for row in cells if len(row) == 2}


@pytest.fixture
def eml(tmp_path: Path) -> Path:
    path = tmp_path / "message.eml"
    path.write_bytes(MESSAGE.encode())
    return path


@pytest.fixture
def far_db(tmp_path: Path) -> Path:
    """Servers first detected in December 9999, one with a pause that ends on its last day."""
    path = tmp_path / "far.db"
    store = SQLiteStore(path)
    try:
        store.put(
            fabrikam_state(
                "ex16.fabrikam.example",
                "15.1.2507.39",
                dt.datetime(9999, 12, 1, tzinfo=UTC),
                [(dt.date(9999, 12, 20), 11)],
            ),
            expected_version=None,
        )
        store.put(
            fabrikam_state(
                "ex16b.fabrikam.example",
                "15.1.2507.39",
                dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            ),
            expected_version=None,
        )
    finally:
        store.close()
    return path


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59.999999+00:00"])
def test_inspect_at_the_calendars_last_second_answers(eml: Path, at: str) -> None:
    result = run("inspect", str(eml), "--at", at)
    assert result.exit_code == 0, result.output
    assert "Sender: hop 0, ex2016.fabrikam.example" in result.stdout
    assert "Decision: ACCEPT in stage 1." in result.stdout


def test_inspect_first_detected_in_december_9999_stops_the_timeline_at_the_calendars_end(
    eml: Path,
) -> None:
    result = run(
        "inspect", str(eml), "--at", "9999-12-31T23:59:59Z", "--first-detected", "9999-12-01"
    )
    assert result.exit_code == 0, result.output
    # Throttling starts 30 days after 1 Dec; blocking would start after the calendar ends.
    assert milestones(result.stdout) == {
        "first detected": "9999-12-01 00:00",
        "throttling from": "9999-12-31 00:00",
        "blocking from": "-",
        "fully blocked": "-",
    }


def test_timeline_first_detected_in_december_9999_answers() -> None:
    result = run("timeline", "--build", "15.1.2507.39", "--first-detected", "9999-12-01")
    assert result.exit_code == 0, result.output
    assert milestones(result.stdout)["throttling from"] == "9999-12-31 00:00"
    stages = [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in result.stdout.splitlines()
        if line.startswith("│") and line.count("│") == 8
    ]
    # Stage 2 runs into the calendar's end: it has no end to show.
    assert [row[:4] for row in stages] == [
        ["1", "9999-12-01 00:00", "9999-12-31 00:00", "30 days"],
        ["2", "9999-12-31 00:00", "-", "-"],
    ]


def test_timeline_first_detected_at_the_calendars_last_instant_answers() -> None:
    result = run(
        "timeline", "--build", "15.1.2507.39",
        "--first-detected", "9999-12-31T23:59:59.999999Z",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert milestones(result.stdout)["first detected"] == "9999-12-31 23:59"


def test_timeline_of_year_one_pads_the_year() -> None:
    # The fixed 2026 rules: under the default phases nothing was enforced in year one.
    result = run(
        "timeline", "--build", "15.1.2507.39", "--first-detected", "0001-01-01",
        "--policy", "exchange_online_2026",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert milestones(result.stdout)["throttling from"] == "0001-01-31 00:00"


@pytest.mark.parametrize("value", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"])
@pytest.mark.parametrize("command", ["timeline", "inspect", "report", "quota", "pause"])
def test_an_instant_outside_the_calendar_in_utc_is_one_line_and_exit_2(
    command: str, value: str, eml: Path, far_db: Path
) -> None:
    option = "--first-detected" if command == "timeline" else "--at"
    args = {
        "timeline": ["--build", "15.1.2507.39"],
        "inspect": [str(eml)],
        "report": ["--db", str(far_db)],
        "quota": ["--db", str(far_db), "--tenant", "fabrikam"],
        "pause": ["--db", str(far_db), "--tenant", "fabrikam", "x", "1"],
    }[command]
    assert_one_line_error(run(command, *args, option, value), option, "outside the calendar")


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "html"])
@pytest.mark.parametrize("at", [None, "9999-12-31", "9999-12-31T23:59:59.999999Z"])
def test_report_of_states_near_the_calendars_end_answers(
    far_db: Path, fmt: str, at: str | None
) -> None:
    result = run("report", "--db", str(far_db), "--format", fmt, *(["--at", at] if at else []))
    assert result.exit_code == 0, result.output
    assert "ex16.fabrikam.example" in result.stdout
    assert "ex16b.fabrikam.example" in result.stdout


def test_report_at_the_calendars_end_cuts_milestones_beyond_it(far_db: Path) -> None:
    result = run("report", "--db", str(far_db), "--format", "csv", "--at", "9999-12-31")
    rows = {line.split(",")[0]: line.split(",") for line in result.stdout.splitlines()}
    ex16 = rows["ex16.fabrikam.example"]
    # Detected 1 Dec, paused 20..30 Dec with a frozen clock: 19 days run by the 31st, so
    # stage 1 holds and throttling (day 30) would come after the calendar ends.
    assert ex16[8:11] == ["", "", ""]  # throttle_enabled, blocking_enabled, full_block
    assert ex16[11] == "1"


def test_report_html_near_the_calendars_end_labels_the_axis(far_db: Path, tmp_path: Path) -> None:
    output = tmp_path / "far.html"
    result = run(
        "report", "--db", str(far_db), "--format", "html", "-o", str(output),
        "--at", "9999-12-31T23:59:59Z",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "today 9999-12-31" in output.read_text(encoding="utf-8")


def test_pause_quota_and_unpause_in_the_calendars_last_days_answer(far_db: Path) -> None:
    common = ["--db", str(far_db), "--tenant", "fabrikam"]
    server = "ex16b.fabrikam.example"
    # A pause ends at the midnight after its last day, so 30 December is the last day it
    # can cover: no midnight follows 31 December 9999.
    result = run("pause", *common, server, "1", "--start", "9999-12-30", "--at", "9999-12-29")
    assert result.exit_code == 0, result.output
    assert "9999-12-30 to 9999-12-30 (UTC days); enforcement resumes 9999-12-31" in result.stdout
    assert "Quota of fabrikam in 9999: 1 of 90 days used, 89 remaining." in result.stdout
    refused = run("pause", *common, server, "1", "--start", "9999-12-31", "--at", "9999-12-29")
    assert_one_line_error(refused, "9999-12-31")
    quota = run("quota", *common, "--year", "9999")
    assert quota.exit_code == 0, quota.output
    assert "Tenant fabrikam, 9999: 1 of 90 pause days used, 89 remaining." in quota.stdout
    quota_at = run("quota", *common, "--at", "9999-12-31T23:59:59Z")
    assert quota_at.exit_code == 0, quota_at.output
    assert "Tenant fabrikam, 9999: 1 of 90 pause days used, 89 remaining." in quota_at.stdout
    assert_one_line_error(run("quota", *common, "--year", "10000"), "--year")
    # Unpausing looks at this year and the next, and 9999 has no next.
    ended = run("unpause", *common, server, "--at", "9999-12-29T12:00:00Z")
    assert ended.exit_code == 0, ended.output
    assert "enforcement resumes now" in ended.stdout
    assert "Quota of fabrikam in 9999: 0 of 90 days used, 90 remaining (1 day returned)." in (
        ended.stdout
    )
