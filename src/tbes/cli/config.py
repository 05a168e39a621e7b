"""The ``tbes config`` commands: check a configuration file before a daemon loads it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from tbes.cli._app import Fail, cli, guarded, make_console, make_table, text_cell, text_line
from tbes.policy import Policy
from tbes.render._common import instant

# ---- tbes config check --------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """The adapters' configuration file (read by tbes milter, policy and serve)."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--peer", metavar="IP", default=None, help="Show what a connection from IP gets.")
@click.option("--name", "peer_name", metavar="HOST", default=None, help="Its verified host name.")
@click.option("--tls-subject", metavar="S", default=None, help="Its TLS client cert subject.")
def config_check(
    file: Path, peer: str | None, peer_name: str | None, tls_subject: str | None
) -> None:
    """Validate the configuration FILE and show what it resolves to.

    Prints the connector rules, own hosts, policy and its stage schedule; with --peer,
    which rule, connector, tenant and mode a connection from there gets.
    """
    from tbes.adapters.config import load_config

    if peer is None and (peer_name is not None or tls_subject is not None):
        raise click.UsageError("--name and --tls-subject describe a --peer: give --peer IP")
    config = guarded(lambda: load_config(file))
    catalog = guarded(config.load_catalog)
    policy = guarded(lambda: config.make_policy(catalog))
    console = make_console()
    console.print(text_line(f"{file}: valid configuration."))
    enforced = ", ".join(sorted(kind.value.lower() for kind in policy.connectors)) or "none"
    console.print(
        text_line(
            f"Policy {config.policy}"
            + (
                ""
                if config.final_step_from is None
                else f" (final step from {config.final_step_from})"
            )
            + f": enforces {enforced} connectors; pause quota "
            f"{policy.pause_quota_days} days a year. Catalog: "
            f"{config.catalog or 'packaged'} (as of {catalog.as_of})."
        )
    )
    console.print(text_line(f"Own hosts: {', '.join(config.own_hosts) or 'none'}."))
    console.print(
        text_line(
            f"Faults: {'defer (fail_closed)' if config.fail_closed else 'accept (fail open)'} "
            f"after {config.check_timeout:g} s. Unmatched connections: tenant {config.tenant}, "
            "never enforced."
        )
    )
    console.print(text_line(_discovery_line(config.discovery)))
    if config.fixed_time is not None:
        console.print(
            text_line(f"[testing] fixed_time = {instant(config.fixed_time)} UTC: tests only!")
        )
    for line in _rules_lines(config.connectors, policy, config.monitor_connectors):
        console.print(line)
    for line in _exemption_lines(config.exemptions):
        console.print(line)
    console.print(_schedule_table(policy))
    if peer is not None:
        console.print(_peer_line(config, policy, peer, peer_name, tls_subject))


def _discovery_line(settings: Any) -> str:
    if not settings.enabled:
        return "Discovery: off."
    return (
        "Discovery: unmatched on-premises Exchange senders are recorded, at most "
        f"{settings.max_servers:,}, written every {settings.flush_seconds:g} s "
        "(tbes report --discovered)."
    )


def _rules_lines(
    rules: Sequence[Any], policy: Policy, monitored: frozenset[str] = frozenset()
) -> list[Text]:
    """One line per connector rule, in order: greppable, never folded like a table cell."""
    lines = [text_line(f"Connector rules ({len(rules)}, first match wins):")]
    for number, rule in enumerate(rules, start=1):
        kind = rule.kind.value.lower()
        kind += "" if rule.kind in policy.connectors else " (not enforced)"
        kind += " (monitor mode: accepts every connection)" if rule.name in monitored else ""
        criteria = "; ".join(
            f"{label} {', '.join(str(v) for v in values)}"
            for label, values in (
                ("networks", rule.networks),
                ("hosts", rule.hosts),
                ("TLS subjects", rule.tls_subjects),
            )
            if values
        )
        lines.append(
            text_line(
                f"  {number}. {rule.name}: {kind}, tenant {rule.tenant}, server "
                f"{rule.connector_id}; {criteria}"
            )
        )
    return lines


def _exemption_lines(exemptions: Sequence[Any]) -> list[Text]:
    """One line per exemption: whom it names, its days and its reason."""
    if not exemptions:
        return []
    lines = [text_line(f"Exemptions ({len(exemptions)}, outside the pause quota):")]
    for number, each in enumerate(exemptions, start=1):
        named = ", ".join(
            f"{label} {value}"
            for label, value in (
                ("connector", each.connector),
                ("server", each.server),
                ("network", each.network),
            )
            if value is not None
        )
        since = "" if each.since is None else f" from {each.since.isoformat()}"
        lines.append(text_line(f"  {number}. {named}{since}: {each.describe()}"))
    return lines


def _schedule_table(policy: Policy) -> Table:
    table = make_table(
        "stage", "from day", "days", "reported", "throttle min/h", "block min/h",
        title="Schedule (days since first detection, pauses excluded)",
    )  # fmt: skip
    for stage in policy.stage_table:
        start = policy.stage_table.start_of(stage.number).days + 1
        table.add_row(
            text_cell(stage.number),
            text_cell(start),
            text_cell("for ever" if stage.days is None else stage.days),
            text_cell("yes" if stage.report else "no"),
            text_cell(stage.throttle_minutes),
            text_cell(stage.block_minutes),
        )
    return table


def _peer_line(
    config: Any, policy: Policy, peer: str, name: str | None, subject: str | None
) -> Text:
    from tbes.adapters.config import normalise_ip

    if normalise_ip(peer) is None:
        raise Fail(f"--peer {peer!r} is not an IP address")
    who = f"A connection from {peer}" + (f" ({name})" if name else "")
    who += f" with TLS subject {subject!r}" if subject else ""
    conn = config.connection(peer_ip=peer, peer_host=name, tls_subject=subject)
    number = next(
        (
            n
            for n, rule in enumerate(config.connectors, start=1)
            if rule.connector_id == conn.server_id and rule.kind is conn.kind
            and rule.tenant == conn.tenant
        ),
        None,
    )  # fmt: skip
    if number is None:
        return text_line(f"{who}: no rule: never enforced (tenant {conn.tenant}).")
    rule = config.connectors[number - 1]
    mode = "enforced" if conn.kind in policy.connectors else "not enforced by this policy"
    return text_line(
        f"{who}: rule {number} ({rule.name}): connector {conn.kind.value.lower()}, server "
        f"{conn.server_id}, tenant {conn.tenant}: {mode}."
    )
