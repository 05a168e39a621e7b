"""The benchmarks still run: each once, tiny, through ``benchmarks/run.py --smoke``.

Nothing here judges a timing (benchmarks are not tests). What is checked is that every
benchmark runs, that each checks its own workload first (the header block's sender, worked
out by hand in ``benchmarks/workload.py``; every decide action; every stored row reported),
that the page it writes names the machine, the Python and the date, and that the corpus of
real header blocks is what ``benchmarks/corpus/SOURCES.md`` says it is.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tbes.received import find_sender, received_values

RUNNER = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
CORPUS = RUNNER.parent / "corpus"
MIN_CORPUS = 40
_EXPECTED: list[dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())["expectations"]


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
        "received-corpus-stdlib",
        "received-corpus-tbes",
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
    policy = results["policy"]
    assert set(policy["cpu_us"]) == {"floor", "noop", "tbes"}
    assert all(set(loads) == {"short", "persistent"} for loads in policy["cpu_us"].values())
    # Every request the deployed server answered is one line of its decision log.
    assert policy["decision_lines"] == policy["answered"]["tbes"]

    text = page.read_text()
    assert text.startswith("# Performance\n")
    for heading in (
        "## Machine",
        "## Micro-benchmarks",
        "## Enforcer.check",
        "## Scale",
        "## Postfix policy service",
    ):
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


# ---- the corpus of real header blocks ----------------------------------------------------------


def _blocks() -> list[Path]:
    return sorted(CORPUS.glob("*.eml"))


def test_the_corpus_holds_enough_blocks_each_with_its_source_named() -> None:
    blocks = _blocks()
    assert len(blocks) >= MIN_CORPUS
    sources = (CORPUS / "SOURCES.md").read_text()
    for block in blocks:
        assert f"| `{block.name}` |" in sources


@pytest.mark.parametrize("path", _blocks(), ids=lambda path: path.name)
def test_each_block_is_a_multi_hop_header_section_read_alike_by_the_stdlib_and_tbes(
    path: Path,
) -> None:
    data = path.read_bytes()
    message = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
    stdlib = [str(value) for value in message.get_all("Received") or []]
    assert len(stdlib) >= 2
    # Unfolded, the standard library's values are tbes's.
    assert received_values(data) == [
        value.replace("\r", "").replace("\n", "").strip() for value in stdlib
    ]


@pytest.mark.parametrize("case", _EXPECTED, ids=lambda case: f"{case['file']}-{case['build']}")
def test_the_sender_of_the_exchange_blocks_is_the_one_worked_out_by_hand(
    case: dict[str, Any],
) -> None:
    values = received_values((CORPUS / case["file"]).read_bytes())
    found = find_sender(
        values,
        own_hosts=case["own_hosts"],
        skip_exchange_online=case["skip_exchange_online"],
    )
    if case["build"] is None:
        assert found is None
    else:
        assert found is not None
        assert (str(found.build), found.index) == (case["build"], case["index"])


def test_the_policy_section_sets_postfix_with_tbes_against_postfix_alone() -> None:
    sys.path.insert(0, str(RUNNER.parent.parent))
    from benchmarks.run import _policy_section

    loads = {"short": 200.0, "persistent": 50.0}
    policy: dict[str, Any] = {
        "rounds": 1,
        "short": 10,
        "persistent": 2,
        "requests": 5,
        "concurrency": 2,
        "cpu_us": {"floor": loads, "noop": loads, "tbes": {"short": 400.0, "persistent": 90.0}},
    }
    lines = _policy_section({"policy": policy})
    assert "Through Postfix: not measured in this run" in "\n".join(lines)
    assert any(
        line.startswith("Target ≤ 100 µs") and line.endswith("yes (90 µs).") for line in lines
    )
    policy["postfix"] = {
        "messages": 100,
        "sessions": 4,
        "rounds": 1,
        "per_s": {"alone": 400.0, "policy": 360.0, "milter+policy": 240.0},
        "tbes_cpu_us": {"alone": 0.0, "policy": 100.0, "milter+policy": 500.0},
    }
    text = "\n".join(_policy_section({"policy": policy}))
    assert (
        "| the tbes policy service (`check_policy_service` at RCPT) | 360 | 0.90x | 100 µs |"
        in text
    )
    assert "| the tbes milter and policy service | 240 | 0.60x | 500 µs |" in text
    assert "≥ 0.70x Postfix alone: **no**" in text
