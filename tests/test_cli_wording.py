"""What administrators read (issue 15 item 6): counts, durations, what-if errors, pauses.

Expected texts are written from the issue's wording, never copied from the commands' output.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from report_support import fabrikam_state
from tbes.cli import cli
from tbes.compliance import Compliance
from tbes.store import SQLiteStore

UTC = dt.UTC
OUTDATED = "ex2016.fabrikam.example"
COMPLIANT = "ex2019.fabrikam.example"
AT = "2026-03-02T09:00:00Z"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"TBES_CATALOG": None}, catch_exceptions=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """fabrikam: an outdated Exchange 2016 in its episode, and a compliant Exchange 2019."""
    path = tmp_path / "tbes.db"
    store = SQLiteStore(path)
    try:
        first = dt.datetime(2026, 1, 1, tzinfo=UTC)
        store.put(fabrikam_state(OUTDATED, "15.1.2507.39", first), expected_version=None)
        compliant = fabrikam_state(
            COMPLIANT, "15.2.1748.39", None, status=Compliance.COMPLIANT, last_seen=first
        )
        store.put(compliant, expected_version=None)
    finally:
        store.close()
    return path


def one_line(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


# ---- counts of days --------------------------------------------------------------------------


def test_a_one_day_pause_says_1_day(db: Path) -> None:
    common = ["--db", str(db), "--tenant", "fabrikam", "--at", AT]
    text = one_line(run("pause", *common, OUTDATED, "1", "--start", "2026-03-10"))
    assert "for 1 day: 2026-03-10 to 2026-03-10" in text
    assert "1 days" not in text
    ended = one_line(run("unpause", *common, OUTDATED))
    assert "(1 day returned)" in ended
    assert "1 days" not in ended
    tenant = one_line(run("pause", *common, "--all", "1", "--start", "2026-03-12"))
    assert "Paused every server of tenant fabrikam for 1 day: 2026-03-12 to 2026-03-12" in tenant
    assert "1 days" not in tenant
    quota = one_line(run("quota", "--db", str(db), "--tenant", "fabrikam", "--at", AT))
    assert "Tenant pauses in 2026: 1 day charged for 2 stored servers, 1 fewer" in quota
    assert "1 days" not in quota


# ---- a compliant server has no enforcement to resume ---------------------------------------


def test_unpause_of_a_compliant_server_does_not_say_enforcement_resumes(db: Path) -> None:
    common = ["--db", str(db), "--tenant", "fabrikam", "--at", AT]
    paused = one_line(run("pause", *common, COMPLIANT, "5", "--start", "2026-03-10"))
    assert "enforcement resumes" not in paused
    assert "compliant" in paused
    assert "2026-03-15 00:00 UTC" in paused  # the pause still says when it ends
    ended = one_line(run("unpause", *common, COMPLIANT))
    assert "Ended the pauses of ex2019.fabrikam.example (tenant fabrikam)" in ended
    assert "enforcement resumes" not in ended
    assert "compliant" in ended
    assert "(5 days returned)" in ended


def test_unpause_of_a_server_in_its_episode_still_says_when_enforcement_resumes(
    db: Path,
) -> None:
    common = ["--db", str(db), "--tenant", "fabrikam", "--at", AT]
    run("pause", *common, OUTDATED, "5", "--start", "2026-03-10")
    assert "enforcement resumes now" in one_line(run("unpause", *common, OUTDATED))


# ---- tbes timeline: lengths in days and hours, errors without a placeholder tenant ---------


def lengths(output: str) -> list[str]:
    rows = [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│") and line.count("│") == 8
    ]
    return [row[3] for row in rows if row[0]]


def test_timeline_shows_stage_lengths_in_whole_days_and_hours() -> None:
    # Detected 1 Jan 10:00, paused from 6 Jan: 4 days 14 hours before the pause (4.58333
    # days), then one day paused, then the rest of the 30 days of stage 1.
    result = run(
        "timeline", "--build", "8.3.517.0", "--first-detected", "2026-01-01T10:00:00Z",
        "--pause", "2026-01-06:1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert lengths(result.output)[:4] == ["4d 14h", "1d", "25d 10h", "10d"]
    assert not re.search(r"\d\.\d", "".join(lengths(result.output)))


def test_timeline_shows_minutes_only_where_a_stage_has_them() -> None:
    result = run(
        "timeline", "--build", "8.3.517.0", "--first-detected", "2026-10-15T09:36:00Z",
        "--pause", "2026-11-01:1",
    )  # fmt: skip
    assert lengths(result.output)[:3] == ["16d 14h 24min", "1d", "13d 9h 36min"]


@pytest.mark.parametrize(
    ("pauses", "fragments"),
    [
        (
            ["2026-11-01:60", "2026-02-01:40"],
            ["100 days in 2026", "quota of 90 days"],
        ),
        (
            ["2026-11-01:60", "2026-12-01:40"],
            ["--pause 2026-11-01:60 and --pause 2026-12-01:40 overlap"],
        ),
    ],
)
def test_timeline_errors_name_the_pause_options_and_no_placeholder_tenant(
    pauses: list[str], fragments: list[str]
) -> None:
    args = ["timeline", "--build", "8.3.517.0", "--first-detected", "2026-01-01"]
    for pause in pauses:
        args += ["--pause", pause]
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("tbes: error: ")
    for fragment in fragments:
        assert fragment in line
    assert "what-if" not in line
    assert "tenant" not in line
    assert "Pause(" not in line  # no Python repr reaches the terminal


def test_unpause_all_of_a_tenant_whose_servers_are_all_compliant_says_nothing_is_enforced(
    tmp_path: Path,
) -> None:
    path = tmp_path / "compliant.db"
    store = SQLiteStore(path)
    first = dt.datetime(2026, 1, 1, tzinfo=UTC)
    store.put(
        fabrikam_state(
            COMPLIANT, "15.2.1748.39", None, status=Compliance.COMPLIANT, last_seen=first
        ),
        expected_version=None,
    )
    store.close()
    common = ["--db", str(path), "--tenant", "fabrikam", "--at", AT]
    run("pause", *common, "--all", "5", "--start", "2026-03-10")
    ended = one_line(run("unpause", *common, "--all"))
    assert "Ended the tenant pause of fabrikam" in ended
    assert "enforcement resumes" not in ended
    assert "compliant" in ended


def test_unpause_all_of_a_tenant_with_a_server_in_its_episode_says_when_it_resumes(
    db: Path,
) -> None:
    common = ["--db", str(db), "--tenant", "fabrikam", "--at", AT]
    run("pause", *common, "--all", "5", "--start", "2026-03-10")
    assert "enforcement resumes now" in one_line(run("unpause", *common, "--all"))


@pytest.mark.parametrize("everyone", [False, True])
def test_unpause_on_the_last_day_of_a_pause_says_it_ends_tonight_not_that_there_is_none(
    db: Path, everyone: bool
) -> None:
    common = ["--db", str(db), "--tenant", "fabrikam", "--at", AT]
    which = ["--all"] if everyone else [OUTDATED]
    run("pause", *common, *(["--all", "1"] if everyone else [OUTDATED, "1"]))
    text = one_line(run("unpause", *common, *which))
    assert "no current or future" not in text
    assert "ends with today" in text
    assert "2026-03-03 00:00 UTC" in text
