"""decide per call, against a trivial function that reads the same fields and looks one up.

The cases are :func:`benchmarks.workload.decide_cases`: server states in every stage, some
paused, some remediated, decided at instants spread over the hour, so every branch of
:func:`~tbes.decision.decide` is taken. The baseline reads the fields decide reads and does
one dict lookup: the floor for any Python function answering from a state. A pyperf
script: run it directly (``python benchmarks/bench_decide.py -o out.json``) or through
``benchmarks/run.py``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyperf

from benchmarks.workload import decide_cases
from tbes.decision import Action, decide
from tbes.policy import DEFAULT_POLICY, Policy
from tbes.state import ServerState

__all__ = ["check", "main", "trivial"]

# The baseline's one lookup: an answer per minute of the hour.
_BY_MINUTE = {minute: Action.ACCEPT if minute % 2 else Action.BLOCK for minute in range(60)}

_Cases = list[tuple[ServerState, dt.datetime]]


def trivial(state: ServerState, now: dt.datetime, policy: Policy) -> tuple[object, ...]:
    """The baseline: read the fields decide reads, then one dict lookup."""
    return (
        state.server_id,
        state.first_detected,
        state.compliant_since,
        state.pauses,
        policy.stage_table,
        policy.pause_freezes_clock,
        _BY_MINUTE[now.minute],
    )


def check(cases: _Cases) -> None:
    """Fail loudly unless the cases take block, throttle and accept branches."""
    actions = {decide(state, now, DEFAULT_POLICY).action for state, now in cases}
    if actions != set(Action):
        raise AssertionError(f"decide cases must reach every action, got {actions}")


def _time_calls(
    loops: int, call: Callable[[ServerState, dt.datetime, Policy], object], cases: _Cases
) -> float:
    policy = DEFAULT_POLICY
    start = time.thread_time()
    for _ in itertools.repeat(None, loops):
        for state, now in cases:
            call(state, now, policy)
    return time.thread_time() - start


def main() -> None:
    """Run the pyperf benchmarks of this file (pyperf's own command line applies)."""
    cases = decide_cases()
    check(cases)
    runner = pyperf.Runner()
    runner.metadata["description"] = "decide per call vs a trivial field-reading function"
    inner = len(cases)
    runner.bench_time_func("decide-trivial", _time_calls, trivial, cases, inner_loops=inner)
    runner.bench_time_func("decide", _time_calls, decide, cases, inner_loops=inner)


if __name__ == "__main__":
    main()
