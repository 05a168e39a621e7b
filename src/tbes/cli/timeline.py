"""The ``tbes timeline`` command: the stages a server would go through, as a forecast."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import click
from rich.table import Table

from tbes.cli._app import (
    BUILD,
    INSTANT,
    PAUSE,
    Fail,
    at_option,
    catalog_of,
    cli,
    count,
    guarded,
    make_console,
    make_table,
    milestones,
    policy_of,
    policy_option,
    text_cell,
    text_line,
    utc_text,
)
from tbes.compliance import Assessment, assess
from tbes.decision import decide
from tbes.ledger import Pause, PauseLedger
from tbes.policy import Policy
from tbes.render._common import instant, minutes
from tbes.report import END, Segment, forecast, horizon, report_row
from tbes.state import ServerState, observe
from tbes.version import ExchangeBuild

# ---- tbes timeline ------------------------------------------------------------------------


@cli.command()
@click.option("--build", type=BUILD, required=True, help="The server's build, e.g. 15.1.2507.39.")
@click.option(
    "--first-detected",
    type=INSTANT,
    required=True,
    help="When the server was first seen non-compliant (a date is UTC midnight).",
)
@click.option(
    "--pause",
    "pauses",
    type=PAUSE,
    multiple=True,
    help="A pause as DATE:DAYS (first UTC day, length). Repeatable.",
)
@policy_option
@click.option("--server", default="server", show_default=True, help="The server's id.")
@at_option("Also say what the server gets at this instant (its stage and action).")
@click.pass_context
def timeline(
    ctx: click.Context,
    build: ExchangeBuild,
    first_detected: dt.datetime,
    pauses: tuple[tuple[dt.date, int], ...],
    policy_name: str,
    server: str,
    at: dt.datetime | None,
) -> None:
    """Forecast when a server is throttled, blocked and fully blocked, stage by stage."""
    policy = policy_of(ctx, policy_name, first_detected)
    catalog = catalog_of(ctx)
    assessment = assess(build, baseline=policy.baseline_at(first_detected), catalog=catalog)
    state = guarded(lambda: _what_if(server, build, assessment, first_detected, pauses, policy))
    console = make_console()
    release = "" if assessment.release is None else f" ({assessment.release.title})"
    console.print(
        text_line(f"Build {build}{release}: {assessment.status.value} under {policy_name}."),
    )
    console.print(text_line(assessment.reason))
    if state.first_detected is None:
        console.print("Nothing is enforced: the server is never throttled or blocked.")
        return
    row = report_row(state, first_detected, policy, catalog)
    console.print(milestones(row))
    # The horizon is a day into the terminal stage: enough to show where it begins.
    until = horizon(state, policy, first_detected)
    segments = forecast(state, policy, until=until)
    if segments:  # none when detected at the calendar's very end
        console.print(_stages_table(segments, until))
    if at is not None:
        decision = guarded(lambda: decide(state, at, policy))
        console.print(text_line(f"At {utc_text(at)}: {decision.action.value}. {decision.reason}"))


def _what_if(
    server: str,
    build: ExchangeBuild,
    assessment: Assessment,
    first_detected: dt.datetime,
    pauses: Iterable[tuple[dt.date, int]],
    policy: Policy,
) -> ServerState:
    """A fresh server's state with the given pauses, checked against the pause quota."""
    granted = tuple(Pause(server, day, days) for day, days in pauses)
    # Checked here, not by a ledger, whose error would name the placeholder tenant below.
    for year in sorted({y for p in granted for y in range(p.start.year, p.last_day.year + 1)}):
        used = sum(p.days_in_year(year) for p in granted)
        if used > policy.pause_quota_days:
            raise Fail(
                f"the --pause options use {count(used, 'day')} in {year}, above the yearly "
                f"pause quota of {count(policy.pause_quota_days, 'day')}"
            )
    # The ledger refuses overlapping pauses, as a real one would.
    PauseLedger("what-if", policy.pause_quota_days, granted)
    state = observe(
        None,
        server_id=server,
        tenant="what-if",
        assessment=assessment,
        build=build,
        at=first_detected,
        policy=policy,
    )
    return ServerState(
        server_id=state.server_id,
        tenant=state.tenant,
        build=state.build,
        status=state.status,
        first_detected=state.first_detected,
        last_seen=state.last_seen,
        compliant_since=state.compliant_since,
        pauses=granted,
    )


def _length(duration: dt.timedelta) -> str:
    """A span in whole days and hours (``4 days 14 hours``), the minutes rounded away."""
    hours = round(duration / dt.timedelta(hours=1))
    days, hours = divmod(hours, 24)
    parts = [count(days, "day")] if days else []
    if hours or not days:
        parts.append(count(hours, "hour"))
    return " ".join(parts)


def _stages_table(segments: Sequence[Segment], until: dt.datetime) -> Table:
    table = make_table(
        "stage", "from (UTC)", "until (UTC)", "length", "throttle min/h", "block min/h", "each hour"
    )
    for segment in segments:
        stage = segment.stage
        # The terminal stage, or any stage the calendar's end cuts short, has no end.
        open_ended = segment.end == until and stage is not None and (stage.terminal or until == END)
        table.add_row(
            text_cell(None if stage is None else stage.number),
            text_cell(instant(segment.start)),
            text_cell("-" if open_ended else instant(segment.end)),
            text_cell("-" if open_ended else _length(segment.duration)),
            text_cell(None if stage is None else stage.throttle_minutes),
            text_cell(None if stage is None else stage.block_minutes),
            text_cell("paused" if segment.paused else "" if stage is None else minutes(stage)),
        )
    return table
