"""The command line under Microsoft's dated phases: `tbes inspect --at`, `tbes catalog phases`.

The seed slide's message comes from an Exchange 2016 at 15.1.2507.23 (CU23 Mar23SU) on
21 April 2023, handing over to Exchange Online: compliant then (before any phase), outdated
in May 2024 (the nine-month rule wants the Aug 2023 SU) and in October 2026 (below the
October 2025 SU).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from support import VECTORS
from tbes.cli import cli

SEED = str(VECTORS / "seed-slide-received.eml")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"TBES_CATALOG": None}, catch_exceptions=False)


@pytest.mark.parametrize(
    ("day", "status", "minimum"),
    [
        ("2023-04-21", "COMPLIANT", None),
        ("2024-05-10", "OUTDATED", "15.1.2507.31"),
        ("2026-10-01", "OUTDATED", "15.1.2507.61"),
    ],
)
def test_inspect_judges_the_seed_message_by_the_phase_of_its_instant(
    day: str, status: str, minimum: str | None
) -> None:
    result = run("inspect", SEED, "--at", day)
    assert result.exit_code == 0, result.output
    assert f"{status}" in result.output
    assessment = json.loads(run("inspect", SEED, "--at", day, "--json").output)["assessment"]
    assert assessment["status"] == status
    assert assessment["release"]["build"] == "15.1.2507.23"
    if minimum is not None:
        assert assessment["recommended"] == [minimum]
        assert f"below the minimum {minimum}" in assessment["reason"]


@pytest.mark.parametrize(
    ("day", "phase", "against"),
    [
        ("2023-04-21", "Phase: none before 2023-06-23 00:00 UTC, so nothing is enforced.", None),
        ("2024-05-10", "Phase: from 2024-03-01 00:00 UTC", "15.1.2507.31 (Aug23SU)"),
        ("2026-10-01", "Phase: from 2026-09-08 00:00 UTC", "15.1.2507.61 (Oct25SU)"),
    ],
)
def test_inspect_says_which_phase_judges_and_against_which_update(
    day: str, phase: str, against: str | None
) -> None:
    text = " ".join(run("inspect", SEED, "--at", day).output.split())
    assert phase in text
    if against is not None:
        assert f"below the minimum {against}" in text


def test_inspect_under_a_fixed_baseline_names_no_phase() -> None:
    result = run("inspect", SEED, "--at", "2026-10-01", "--policy", "exchange_online_2026")
    assert "Phase:" not in result.output


def test_inspect_names_the_phases_policy_as_its_default() -> None:
    assert "[default: exchange_online]" in " ".join(run("inspect", "--help").output.split())


def test_the_fixed_2026_preset_is_still_available() -> None:
    result = run(
        "inspect", SEED, "--at", "2023-04-21", "--policy", "exchange_online_2026", "--json"
    )
    assert json.loads(result.output)["assessment"]["status"] == "OUTDATED"


def test_catalog_phases_prints_each_phase_from_when_and_what_is_compliant() -> None:
    result = run("catalog", "phases")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Before 2023-06-23 00:00 UTC nothing is enforced." in text
    starts = ["2023-06-23 00:00", "2023-09-01 00:00", "2023-12-01 00:00", "2024-03-01 00:00"]
    starts.append("2026-09-08 00:00")
    positions = [result.output.index(start) for start in starts]
    assert positions == sorted(positions)
    assert "last 9 months" in text
    assert "15.1.2507.61 (CU23 Oct25SU)" in text
    assert "15.2.1748.39 (CU15 Oct25SU) or 15.2.1544.36 (CU14 Oct25SU)" in text
    assert "2027-" not in result.output  # the last step is off by default


def test_catalog_phases_shows_the_final_step_when_given_its_day() -> None:
    result = run("catalog", "phases", "--final-step-from", "2027-01-04")
    assert result.exit_code == 0, result.output
    assert "2027-01-04 00:00" in result.output
    assert "15.1.2507.63 (CU23 Dec25SU)" in " ".join(result.output.split())


# ---- tbes timeline of a build the phases reach later ----------------------------------------


def test_timeline_of_a_build_compliant_then_says_when_a_phase_reaches_it() -> None:
    # The seed slide's build on its own day: nothing enforced until the March 2024 phase,
    # whose nine-month window then starts in June 2023 (Jun23SU, 15.1.2507.27).
    result = run("timeline", "--build", "15.1.2507.23", "--first-detected", "2023-04-21")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "never" not in text
    assert "from 2024-03-01 00:00 UTC the build is OUTDATED under exchange_online" in text
    assert "below the minimum 15.1.2507.27" in text
    assert "--first-detected 2024-03-01T00:00Z" in text


def test_timeline_of_a_build_the_rolling_window_leaves_behind_names_the_month() -> None:
    # Apr24HU (15.1.2507.39): the nine-month window leaves April 2024 behind on 1 Feb 2025,
    # when the oldest CU23 update from May 2024 on is the Nov24SU.
    result = run("timeline", "--build", "15.1.2507.39", "--first-detected", "2024-04-30")
    text = " ".join(result.output.split())
    assert "from 2025-02-01 00:00 UTC the build is OUTDATED" in text


@pytest.mark.parametrize(
    ("build", "policy"),
    [
        ("15.1.2507.61", "exchange_online"),  # the Oct25SU passes every phase announced
        ("15.2.2562.17", "exchange_online"),  # Exchange SE is never in scope
        ("15.1.2507.61", "exchange_online_2026"),
    ],
)
def test_timeline_of_a_build_no_phase_reaches_says_it_is_never_enforced(
    build: str, policy: str
) -> None:
    result = run("timeline", "--build", build, "--first-detected", "2026-01-01", "--policy", policy)
    assert "Nothing is enforced: the server is never throttled or blocked." in result.output
