"""Every script in examples/ runs and prints the facts it is there to show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# script -> (arguments, lines its output must contain). Expected facts are worked out
# from the SPEC by hand, not copied from the scripts' output.
EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    "01_builds.py": (
        [],
        [
            "15.01.2507.039   -> 15.1.2507.39",
            "Exchange 2016 (on-premises)",
            "15.2.2562.17     -> 15.2.2562.17   15.02.2562.017  Exchange SE (on-premises)",
            "Exchange Online (not enforced)",
            "16.0.0.0         -> 16.0.0.0       16.00.0000.000  unknown product (not enforced)",
            "15.1.x.23        -> not an Exchange build number: '15.1.x.23'",
        ],
    ),
    "02_inspect_message.py": (
        [str(EXAMPLES / "data" / "ex2016-outdated.eml")],
        [
            "ex2016-outdated.eml: 5 Received headers",
            "sender hop 3: mail.fabrikam.example (203.0.113.16)",
            "claimed build: 15.1.2507.39 (Exchange 2016)",
            "matches the hop above or the client: yes",
        ],
    ),
    "03_timeline.py": (
        [],
        [
            "Stage 2 from 2025-12-03 09:00 UTC (day 31): throttle 5 min/h, block 0 min/h",
            "2026-01-02  day 61  stage 5  throttle 30 min/h  block  5 min/h  "
            + "." * 14
            + "B" * 5
            + "t" * 30
            + "." * 11,
            "  550 5.7.230 Connecting Exchange server version is out-of-date; connection to "
            "Exchange Online blocked for 20 mins/hr. For more information see "
            "https://aka.ms/BlockUnsafeExchange.",
            "Stage 8 from 2026-02-01 09:00 UTC (day 91): throttle 0 min/h, block 60 min/h",
        ],
    ),
    "04_pause_quota.py": (
        [],
        [
            "granted EX02: 60 days from 2024-04-01 to 2024-05-30 (2024: 90 used, 0 remaining)",
            "refused: pause of 10 days for EX03 needs 10 days in 2024, "
            "but only 0 of 90 remain (90 used)",
            "after 31 December the unused days expire: 2025: 0 used, 90 remaining",
        ],
    ),
    "05_enforcer_sqlite.py": (
        [],
        [
            "day  91 2026-04-06  ex2016.contoso.example   15.1.2507.39  stage 8           BLOCK  "
            "550 5.7.230 Connecting Exchange server version is out-of-date; connection to "
            "Exchange Online blocked for 60 mins/hr. For more information see "
            "https://aka.ms/BlockUnsafeExchange.",
            "day  76 2026-03-22  ex2013.contoso.example   15.0.1497.48  stage 5 ",
            "day  76 2026-03-22  ex2016.contoso.example   15.1.2507.39  stage 6 ",
            "event REMEDIATED: ex2013.contoso.example",
            "ex2019.contoso.example   COMPLIANT   never enforced",
        ],
    ),
}


def test_every_example_script_has_expectations() -> None:
    scripts = {path.name for path in EXAMPLES.glob("*.py")}
    assert scripts == set(EXPECTED), "register each example's expected output here"


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_and_prints_its_facts(script: str, tmp_path: Path) -> None:
    args, expected = EXPECTED[script]
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for line in expected:
        assert line in result.stdout, f"{script}: missing {line!r} in:\n{result.stdout}"
