"""The benchmarks still run: each once, tiny, through ``benchmarks/run.py --smoke``.

Nothing here judges a timing (benchmarks are not tests). What is checked is that every
benchmark runs, that each checks its own workload first (the header block's sender, worked
out by hand in ``benchmarks/workload.py``; every decide action; every stored row reported),
and that the page it writes names the machine, the Python and the date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


def _run(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, str(RUNNER), *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_smoke_run_measures_every_benchmark_and_describes_the_machine(tmp_path: Path) -> None:
    page, raw = tmp_path / "performance.md", tmp_path / "results.json"
    _run("--smoke", "--output", str(page), "--json", str(raw), "--workdir", str(tmp_path))

    results = json.loads(raw.read_text())
    assert set(results["received"]) == {
        "received-stdlib",
        "received-tbes",
        "received-values",
        "received-hops",
    }
    assert set(results["decide"]) == {"decide", "decide-trivial"}
    assert set(results["enforcer"]["cases"]) == {
        "sqlite",
        "sqlite-no-write",
        "memory",
        "raw-sqlite-cas",
        "raw-sqlite-read",
    }
    assert results["enforcer"]["cases"]["sqlite"]["calls"] == 40
    assert [point["size"] for point in results["scale"]["curve"]] == [200, 1000]

    text = page.read_text()
    assert text.startswith("# Performance\n")
    for heading in ("## Machine", "## Micro-benchmarks", "## Enforcer.check", "## Scale"):
        assert f"\n{heading}" in text
    assert f"| Python | CPython {platform.python_version()} |" in text
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert f"| CPUs available (nproc) | {cpus} |" in text
    # The run started and ended within this test: today's date, or yesterday's at midnight.
    today = dt.datetime.now(dt.UTC).date()
    assert any(f"| Date | {day:%Y-%m-%d} " in text for day in (today, today - dt.timedelta(1)))
    assert "`--smoke` run: its figures mean nothing" in text

    # Saved results render the same page again, without running anything.
    again = tmp_path / "again.md"
    _run("--from-json", str(raw), "--output", str(again))
    assert again.read_text() == text
