"""The loop every Hypothesis fuzz harness runs: rounds until the time is up, then a summary."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable


def fuzz_for(
    name: str, description: str, run_round: Callable[[], None], executions: Callable[[], int]
) -> int:
    """Run ``run_round`` until ``--seconds`` have passed; report executions, re-raise a finding."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz")
    seconds = parser.parse_args().seconds
    started = time.monotonic()
    rounds = 0
    while time.monotonic() - started < seconds:
        try:
            run_round()
        except Exception:
            print(f"FINDING after {executions()} executions", file=sys.stderr)
            raise
        rounds += 1
    elapsed = time.monotonic() - started
    print(f"{name}: {executions()} executions, {rounds} rounds, {elapsed:.0f} s, 0 findings")
    return 0
