"""The ``tbes inspect`` command: what tbes reads from one message's headers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tbes.catalog import Catalog
from tbes.cli._app import (
    INSTANT,
    at_option,
    catalog_of,
    cli,
    guarded,
    make_console,
    make_table,
    milestones,
    policy_of,
    policy_option,
    text_cell,
    text_line,
)
from tbes.compliance import Assessment, assess
from tbes.decision import Decision, decide
from tbes.enforcer import utc_now
from tbes.policy import Policy
from tbes.received import Hop, SenderEvidence, find_sender, parse_received, received_values
from tbes.render._common import instant
from tbes.render.json import dumps
from tbes.report import ReportRow, report_row
from tbes.schedule import EARLIEST
from tbes.serde import converter
from tbes.state import observe

# ---- tbes inspect ---------------------------------------------------------------------------


@cli.command()
@click.argument("message", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--own-host",
    "own_hosts",
    multiple=True,
    metavar="HOST",
    help="A host name (or domain) of the receiving side; its hops are skipped. Repeatable.",
)
@policy_option
@at_option("Decide as if the message arrived at this instant (default: now).")
@click.option(
    "--first-detected",
    type=INSTANT,
    default=None,
    help="Decide as if the server had been first detected then (default: at --at).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def inspect(
    ctx: click.Context,
    message: Path,
    own_hosts: tuple[str, ...],
    policy_name: str,
    at: dt.datetime | None,
    first_detected: dt.datetime | None,
    as_json: bool,
) -> None:
    """Show what tbes reads from MESSAGE (an .eml file) and what it would decide.

    Prints the Received hops, the sending Exchange server's build, its assessment and the
    decision for a connection at --at, with the server's timeline.
    """
    at = at or utc_now()
    policy = policy_of(ctx, policy_name, at)
    catalog = catalog_of(ctx)
    values = received_values(guarded(message.read_bytes))
    hops = [parse_received(value) for value in values]
    evidence = find_sender(values, own_hosts=own_hosts)
    found = _inspect_sender(evidence, at, first_detected, policy, catalog)
    if as_json:
        click.echo(_inspect_json(hops, evidence, found))
        return
    console = make_console()
    console.print(_hops_table(hops))
    _print_sender(console, evidence, found, policy_name, _phase(policy, at))


def _phase(policy: Policy, at: dt.datetime) -> str | None:
    """Which phase of a dated schedule judges at ``at``; ``None`` for a fixed baseline."""
    schedule = policy.schedule
    if len(schedule.steps) == 1 and schedule.steps[0].effective_from == EARLIEST:
        return None
    step = schedule.step_at(at)
    if step is None:
        first = schedule.steps[0].effective_from
        return f"none before {first:%Y-%m-%d %H:%M} UTC, so nothing is enforced"
    return f"from {step.effective_from:%Y-%m-%d %H:%M} UTC (tbes catalog phases lists them)"


def _inspect_sender(
    evidence: SenderEvidence | None,
    at: dt.datetime,
    first_detected: dt.datetime | None,
    policy: Policy,
    catalog: Catalog,
) -> tuple[Assessment, Decision, ReportRow] | None:
    if evidence is None:
        return None
    assessment = assess(evidence.build, baseline=policy.baseline_at(at), catalog=catalog)
    server = evidence.host or evidence.ip or "sender"
    state = observe(
        None,
        server_id=server,
        tenant="-",
        assessment=assessment,
        build=evidence.build,
        at=first_detected or at,
        policy=policy,
    )
    return assessment, decide(state, at, policy), report_row(state, at, policy, catalog)


def _inspect_json(
    hops: list[Hop],
    evidence: SenderEvidence | None,
    found: tuple[Assessment, Decision, ReportRow] | None,
) -> str:
    data: dict[str, Any] = {
        "hops": converter.unstructure(hops, list[Hop]),
        "sender": converter.unstructure(evidence, SenderEvidence | None),
        "assessment": None,
        "decision": None,
        "report": None,
    }
    if found is not None:
        assessment, decision, row = found
        data["assessment"] = converter.unstructure(assessment, Assessment)
        data["decision"] = converter.unstructure(decision, Decision)
        data["decision"]["reply"] = None if decision.reply is None else str(decision.reply)
        data["report"] = converter.unstructure(row, ReportRow)
    return dumps(data)


def _hops_table(hops: list[Hop]) -> Table:
    table = make_table(
        "#", "from", "by", "with", "build", "date (UTC)", title="Received hops, newest first"
    )
    for index, hop in enumerate(hops):
        table.add_row(
            text_cell(index),
            text_cell(hop.from_host or hop.from_ip),
            text_cell(hop.by_host or hop.by_ip),
            text_cell(hop.protocol),
            text_cell(hop.build),
            text_cell(None if hop.date is None else instant(hop.date)),
        )
    return table


def _endpoint(host: str | None, ip: str | None) -> str | None:
    if host and ip:
        return f"{host} ({ip})"
    return host or ip


def _print_sender(
    console: Console,
    evidence: SenderEvidence | None,
    found: tuple[Assessment, Decision, ReportRow] | None,
    policy_name: str,
    phase: str | None,
) -> None:
    if evidence is None or found is None:
        console.print(
            "Sender: no Exchange build in the hop that handed the message over "
            "(no Exchange server, or a gateway in between): nothing to enforce."
        )
        return
    assessment, decision, row = found
    where = _endpoint(evidence.host, evidence.ip) or "?"
    release = "" if assessment.release is None else f" ({assessment.release.title})"
    matched = "yes" if evidence.matched else "no"
    lines = [
        f"Sender: hop {evidence.index}, {where}, build {evidence.build}{release}; "
        f"matches the hop above: {matched}",
        f"Assessment under {policy_name}: {assessment.status.value}. {assessment.reason}",
        *([] if phase is None else [f"Phase: {phase}."]),
        "Recommended: " + (" ".join(str(b) for b in assessment.recommended) or "-"),
        f"Decision: {decision.action.value}"
        + ("" if decision.stage is None else f" in stage {decision.stage.number}")
        + f". {decision.reason}",
    ]
    if decision.reply is not None:
        lines.append(f"Reply: {decision.reply}")
    for line in lines:
        console.print(text_line(line))
    if row.throttle_enabled is not None:
        console.print(milestones(row))
