"""The ``tbes server`` commands: one stored server, shown."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from tbes.cli._app import (
    Fail,
    at_option,
    cli,
    config_option,
    controls,
    db_option,
    guarded,
    make_console,
    make_table,
    open_store,
    policy_of,
    policy_option,
    resolve_server,
    text_cell,
    text_line,
    utc_text,
)
from tbes.decision import decide, monitored
from tbes.enforcer import utc_now

# ---- tbes server show ---------------------------------------------------------------------


@cli.group("server")
def server_group() -> None:
    """One sending server as the store holds it."""


@server_group.command("show")
@click.argument("server")
@db_option
@at_option("Show the server as of this instant (default: now).")
@policy_option
@config_option
@click.pass_context
def server_show(
    ctx: click.Context,
    server: str,
    db: Path,
    at: dt.datetime | None,
    policy_name: str,
    config_file: Path | None,
) -> None:
    """Show SERVER's stored state, stage, blocked and throttled minutes, next change, pauses.

    SERVER is its id (CONNECTOR/HOST), or a host name that exactly one stored server has.
    With --config, also its exemptions and whether its connector is in monitor mode.
    """
    at = at or utc_now()
    config = controls(config_file)
    policy = policy_of(ctx, policy_name, at)
    store = open_store(db, read_only=True)
    try:
        named = resolve_server(store, server)
        stored = guarded(lambda: store.get(named))
    finally:
        store.close()
    if stored is None:
        raise Fail(f"no stored state for server {server!r} in {db}")
    state = stored.value
    exemptions = () if config is None else config.exemptions_for(state.server_id)
    decision = guarded(lambda: decide(state, at, policy, exemptions))
    if config is not None and config.monitors(state.server_id):
        decision = monitored(decision)
    console = make_console()
    console.print(
        text_line(
            f"Server {state.server_id} (tenant {state.tenant}): build {state.build or '-'}, "
            f"{state.status.value}; stored version {stored.version}."
        )
    )
    console.print(
        text_line(
            f"First detected {utc_text(state.first_detected)}, "
            f"last seen {utc_text(state.last_seen)}, "
            f"compliant since {utc_text(state.compliant_since)}."
        )
    )
    console.print(text_line(f"At {utc_text(at)}: {decision.action.value}. {decision.reason}"))
    if decision.stage is not None:
        console.print(text_line(_minutes_line(state.server_id, decision.stage, decision.paused)))
    change = "never" if decision.next_change is None else utc_text(decision.next_change)
    console.print(text_line(f"Next change: {change}."))
    if config is not None:
        mode = "monitor" if config.monitors(state.server_id) else "enforce"
        console.print(text_line(f"Mode: {mode}."))
        for each in exemptions:
            since = "" if each.since is None else f" (from {each.since.isoformat()})"
            ended = " (ended)" if at >= each.end else ""
            console.print(text_line(f"Exemption: {each.describe()}{since}{ended}."))
        if not exemptions:
            console.print("No exemptions.")
    if not state.pauses:
        console.print("No pauses.")
        return
    table = make_table("first day", "last day", "days", "now", title="Pauses")
    for each in state.pauses:
        table.add_row(
            text_cell(each.start),
            text_cell(each.last_day),
            text_cell(each.days),
            # A marker, not a bool: "True"/"False" reads as program output, not an answer.
            text_cell("◀ now" if each.covers(at) else ""),
        )
    console.print(table)


def minute_ranges(offset: int, block: int, throttle: int) -> list[tuple[int, int, str]]:
    """The minutes of the UTC hour as ``(first, last, what)`` ranges, in window order.

    The block window starts at ``offset``, the throttle window follows it, and the rest
    of the hour is accepted; a range may wrap past :59 (``first > last``).
    """
    ranges = []
    start = offset
    for length, what in (
        (block, "blocked"),
        (throttle, "throttled"),
        (60 - block - throttle, "accepted"),
    ):
        if length > 0:
            ranges.append((start % 60, (start + length - 1) % 60, what))
        start += length
    return ranges


def _minutes_line(server: str, stage: Any, paused: bool) -> str:
    from tbes.decision import minute_offset

    ranges = minute_ranges(minute_offset(server), stage.block_minutes, stage.throttle_minutes)
    if len(ranges) == 1:
        parts = f"every minute {ranges[0][2]}"
    else:
        parts = ", ".join(f":{a:02d}\u2013:{b:02d} {what}" for a, b, what in ranges)
    note = " (once the pause ends)" if paused else ""
    return f"Stage {stage.number}, each UTC hour{note}: {parts}."
