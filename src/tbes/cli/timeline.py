"""The ``tbes timeline`` command: the stages a server would go through, as a forecast."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence

import click
from rich.table import Table

from tbes.catalog import Catalog
from tbes.cli._app import (
    BUILD,
    INSTANT,
    PAUSE,
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
from tbes.compliance import Assessment, Compliance, assess
from tbes.decision import decide
from tbes.errors import PauseConflictError, QuotaExceededError
from tbes.ledger import Pause
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
        later = _first_enforced(build, first_detected, policy, catalog)
        if later is None:
            console.print("Nothing is enforced: the server is never throttled or blocked.")
            return
        when, verdict = later
        # A dated policy widens its scope: say when this build falls out of it, not "never".
        console.print(
            text_line(
                f"Nothing is enforced at {utc_text(first_detected)}, but from "
                f"{utc_text(when)} the build is {verdict.status.value} under {policy_name}: "
                f"{verdict.reason} For its timeline: tbes timeline --build {build} "
                f"--first-detected {when:%Y-%m-%dT%H:%MZ}"
            )
        )
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


_ENFORCED = frozenset({Compliance.OUTDATED, Compliance.UNSUPPORTED})


def _first_enforced(
    build: ExchangeBuild, since: dt.datetime, policy: Policy, catalog: Catalog
) -> tuple[dt.datetime, Assessment] | None:
    """The first instant after ``since`` at which the policy's schedule finds ``build``
    outdated or unsupported, with that assessment; ``None`` if none of its phases does."""
    for when, baseline in policy.schedule.changes_after(since):
        verdict = assess(build, baseline=baseline, catalog=catalog)
        if verdict.status in _ENFORCED:
            return when, verdict
    return None


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
    _check_what_if(granted, policy.pause_quota_days)
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


def _check_what_if(pauses: tuple[Pause, ...], quota_days: int) -> None:
    """Refuse overlapping pauses and years above the quota, as a tenant's ledger would.

    Checked here rather than by a :class:`~tbes.ledger.PauseLedger`, whose errors name a
    tenant: a forecast has none, and its errors name the ``--pause`` options instead.
    """
    ordered = sorted(pauses, key=lambda pause: pause.start)
    for before, after in itertools.pairwise(ordered):
        if after.start < before.end:
            raise PauseConflictError(
                f"--pause {_spec(before)} and --pause {_spec(after)} overlap: "
                "a server has one pause a day"
            )
    used: Counter[int] = Counter()
    for pause in pauses:
        for year in pause.years():
            used[year] += pause.days_in_year(year)
    for year, days in sorted(used.items()):
        if days > quota_days:
            raise QuotaExceededError(
                f"the --pause options use {count(days, 'day')} in {year}, above the pause quota "
                f"of {count(quota_days, 'day')} a year"
            )


def _spec(pause: Pause) -> str:
    return f"{pause.start}:{pause.days}"


def _length(duration: dt.timedelta) -> str:
    """A stage's length in whole days, hours and minutes: ``16d 14h 24min``, ``10d``."""
    minutes_total = int(duration.total_seconds() // 60)
    days, rest = divmod(minutes_total, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{mins}min" if mins else "",
    ]
    return " ".join(part for part in parts if part) or "0min"


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
