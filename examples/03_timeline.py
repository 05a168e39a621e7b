"""Follow one outdated Exchange server through the eight stages of enforcement, day by day.

EX01 sends with build 15.1.2507.39 (Exchange 2016 CU23 without the October 2025 security
update), so the default policy judges it outdated. It is first seen on 2025-11-03 at 09:00
UTC. For every day from then until full blocking, the script asks ``decide()`` about each
minute of that day's 09:00 UTC hour and prints the stage, the minutes throttled and blocked,
and a strip of the hour (``.`` accept, ``t`` throttle, ``B`` block, minute 00 first). When a
stage starts it prints the SMTP replies the server gets in it. Run it:
``python examples/03_timeline.py``.
"""

from __future__ import annotations

import datetime as dt

from tbes.catalog import Catalog
from tbes.compliance import assess
from tbes.decision import Action, Decision, decide
from tbes.policy import DEFAULT_POLICY
from tbes.state import ServerState, observe
from tbes.version import ExchangeBuild

SERVER = "EX01"
BUILD = ExchangeBuild.parse("15.1.2507.39")
FIRST_SEEN = dt.datetime(2025, 11, 3, 9, 0, tzinfo=dt.UTC)
DAYS = 92  # through day 92: stage 8, full blocking, starts on day 91
STRIP = {Action.ACCEPT: ".", Action.THROTTLE: "t", Action.BLOCK: "B"}


def _hour(state: ServerState, start: dt.datetime) -> list[Decision]:
    """The decisions for each minute of the UTC hour beginning at ``start``."""
    return [decide(state, start + dt.timedelta(minutes=minute)) for minute in range(60)]


def _stage_header(decisions: list[Decision], start: dt.datetime, day: int) -> None:
    stage = decisions[0].stage
    assert stage is not None
    print()
    print(
        f"Stage {stage.number} from {start:%Y-%m-%d %H:%M} UTC (day {day}): "
        f"throttle {stage.throttle_minutes} min/h, block {stage.block_minutes} min/h"
    )
    replies = sorted({str(d.reply) for d in decisions if d.reply is not None})
    for reply in replies or ["no reply: every connection is accepted (and reported)"]:
        print(f"  {reply}")


def main() -> None:
    """Print the server's enforcement, one line per day, with each stage's replies."""
    baseline = DEFAULT_POLICY.baseline_at(FIRST_SEEN)
    assessment = assess(BUILD, baseline=baseline, catalog=Catalog.default())
    state = observe(
        None, server_id=SERVER, tenant="contoso", assessment=assessment, build=BUILD, at=FIRST_SEEN
    )
    print(f"{SERVER} sends with {BUILD} ({BUILD.product.label}): {assessment.status.value}")
    print(f"first detected {FIRST_SEEN:%Y-%m-%d %H:%M} UTC; the strip is the 09:00 UTC hour")
    shown = None
    for day in range(1, DAYS + 1):
        start = FIRST_SEEN + dt.timedelta(days=day - 1)
        decisions = _hour(state, start)
        stage = decisions[0].stage
        assert stage is not None
        if stage != shown:
            _stage_header(decisions, start, day)
            shown = stage
        throttled = sum(d.action is Action.THROTTLE for d in decisions)
        blocked = sum(d.action is Action.BLOCK for d in decisions)
        strip = "".join(STRIP[d.action] for d in decisions)
        print(
            f"{start:%Y-%m-%d}  day {day:>2}  stage {stage.number}  "
            f"throttle {throttled:>2} min/h  block {blocked:>2} min/h  {strip}"
        )


if __name__ == "__main__":
    main()
