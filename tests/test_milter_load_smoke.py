"""The milter load benchmark still runs (tiny, without Postfix); nothing about speed is asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "milter_load.py"


@pytest.mark.timeout(120)
def test_milter_load_measures_both_milters() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--messages", "10", "--concurrency", "2"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # One table per transport, TCP first, each with a direct figure for both milters.
    tables = re.split(r"^(TCP on loopback|unix socket) \(", result.stdout, flags=re.M)[1:]
    assert tables[0::2] == ["TCP on loopback", "unix socket"], result.stdout
    for text in tables[1::2]:
        rows = re.findall(r"^\| (noop|tbes milter)[^|]*\| ([\d,]+) µs", text, re.M)
        assert [name for name, _ in rows] == ["noop", "tbes milter"], result.stdout
