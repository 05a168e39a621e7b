"""The ``tbes pause``, ``unpause`` and ``quota`` commands: pauses and the yearly quota."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import click
from rich.console import Console

from tbes.cli._app import (
    DATE,
    at_option,
    catalog_of,
    cli,
    count,
    db_option,
    guarded,
    make_console,
    make_table,
    open_store,
    policy_of,
    policy_option,
    quota_line,
    resolve_server,
    text_cell,
    text_line,
)
from tbes.enforcer import Enforcer, utc_now
from tbes.ledger import PauseLedger
from tbes.policy import Policy
from tbes.store.sqlite import SQLiteStore

# ---- tbes quota ---------------------------------------------------------------------------


@cli.command()
@db_option
@click.option("--tenant", required=True, help="The tenant whose pause quota to show.")
@click.option("--year", type=click.IntRange(1, 9999), default=None, help="Default: this year.")
@at_option("Take 'this year' from this instant (default: now).")
@policy_option
@click.pass_context
def quota(
    ctx: click.Context,
    db: Path,
    tenant: str,
    year: int | None,
    at: dt.datetime | None,
    policy_name: str,
) -> None:
    """Show a tenant's pause quota for a calendar year: days used, remaining, and the pauses."""
    at = at or utc_now()
    year = year or at.year
    ledger, servers = _ledger(db, tenant, policy_of(ctx, policy_name, at))
    _print_quota(make_console(), ledger, year, servers)


def _ledger(db: Path, tenant: str, policy: Policy) -> tuple[PauseLedger, int]:
    """The tenant's ledger and, if it has tenant pauses, how many servers of it are stored."""
    store = open_store(db, read_only=True)
    try:
        ledger = _stored_ledger(store, tenant, policy.pause_quota_days)
        if not ledger.tenant_pauses:
            return ledger, 0  # the count is only for what tenant pauses save: not read
        return ledger, guarded(lambda: sum(1 for _ in store.states(tenant)))
    finally:
        store.close()


def _print_quota(console: Console, ledger: PauseLedger, year: int, servers: int) -> None:
    console.print(
        text_line(
            f"Tenant {ledger.tenant}, {year}: {ledger.used(year)} of {ledger.quota_days} pause "
            f"days used, {ledger.remaining(year)} remaining."
        )
    )
    charged = [pause for pause in ledger.pauses if pause.days_in_year(year)]
    tenant_days = sum(pause.days_in_year(year) for pause in ledger.tenant_pauses)
    if not charged and not tenant_days:
        console.print(f"No pauses in {year}.")
        return
    table = make_table("server", "first day", "last day", "days", f"days in {year}")
    # Both kinds in order of start; a tenant pause's row names no server but all of them.
    rows = [(p.server_id, p.start, p.last_day, p.days, p.days_in_year(year)) for p in charged]
    rows += [
        ("(every server)", p.start, p.last_day, p.days, p.days_in_year(year))
        for p in ledger.tenant_pauses
        if p.days_in_year(year)
    ]
    for row in sorted(rows, key=lambda row: (row[1], row[0] == "(every server)", row[0])):
        table.add_row(*(text_cell(cell) for cell in row))
    console.print(table)
    if tenant_days and servers > 1:
        # The refund made visible: what the same days would cost paused server by server.
        console.print(
            text_line(
                f"Tenant pauses in {year}: {count(tenant_days, 'day')} charged for {servers} "
                f"stored servers, {tenant_days * (servers - 1)} fewer than pausing each server."
            )
        )


# ---- tbes pause / unpause -----------------------------------------------------------------


@cli.command()
@db_option
@click.option("--tenant", required=True, help="The tenant the server belongs to.")
@click.argument("server", required=False)
@click.argument("days", type=click.IntRange(min=1), required=False)
@click.option(
    "--all",
    "all_days",
    type=click.IntRange(min=1),
    default=None,
    metavar="DAYS",
    help="Pause every server of the tenant, also servers first seen during the pause, for "
    "DAYS days: one tenant pause, charged one day per day (give no SERVER).",
)
@click.option("--start", type=DATE, default=None, help="First paused UTC day (default: today).")
@click.option(
    "--force",
    is_flag=True,
    help="Pause a server tbes has not seen yet (without it, an unknown SERVER is refused).",
)
@at_option("Act as if now were this instant (default: now); today is its UTC date.")
@policy_option
@click.pass_context
def pause(
    ctx: click.Context,
    db: Path,
    tenant: str,
    server: str | None,
    days: int | None,
    all_days: int | None,
    start: dt.date | None,
    force: bool,
    at: dt.datetime | None,
    policy_name: str,
) -> None:
    """Pause enforcement of SERVER for DAYS days, paid from the tenant's yearly quota.

    With --all DAYS (and no SERVER), pause every server of the tenant instead.
    """
    at = at or utc_now()
    first = start or at.date()
    if all_days is not None:
        if server is not None or days is not None or force:
            raise click.UsageError(
                "--all DAYS pauses every server: give no SERVER, DAYS or --force"
            )
        _pause_tenant(ctx, db, policy_name, at, tenant, all_days, first)
        return
    if server is None or days is None:
        raise click.UsageError(f"Missing argument '{'SERVER' if server is None else 'DAYS'}'.")
    with _enforcer(ctx, db, policy_name, at) as (enforcer, store):
        named = resolve_server(store, server)
        ledger = guarded(lambda: enforcer.pause(tenant, named, days, first, force=force))
        enforced = _enforced(store, named)
    server = named
    last = first + dt.timedelta(days=days - 1)
    ends = f"{last + dt.timedelta(days=1)} 00:00 UTC"
    console = make_console()
    console.print(
        text_line(
            f"Paused {server} (tenant {tenant}) for {count(days, 'day')}: {first} to {last} "
            f"(UTC days); "
            + (
                f"enforcement resumes {ends}."
                if enforced
                else f"{_NOT_ENFORCED}; the pause holds until {ends}."
            )
        )
    )
    for year in range(first.year, last.year + 1):
        console.print(quota_line(ledger, year))


def _pause_tenant(
    ctx: click.Context,
    db: Path,
    policy_name: str,
    at: dt.datetime,
    tenant: str,
    days: int,
    first: dt.date,
) -> None:
    with _enforcer(ctx, db, policy_name, at) as (enforcer, store):
        before = _stored_ledger(store, tenant, enforcer.policy.pause_quota_days)
        after = guarded(lambda: enforcer.pause_tenant(tenant, days, first))
    last = first + dt.timedelta(days=days - 1)
    # An overlapping or adjoining tenant pause was extended: the whole pause says when it ends.
    ends = next(p.end for p in after.tenant_pauses if p.start <= first < p.end)
    console = make_console()
    console.print(
        text_line(
            f"Paused every server of tenant {tenant} for {count(days, 'day')}: {first} to {last} "
            f"(UTC days); enforcement resumes {ends} 00:00 UTC."
        )
    )
    for year in range(first.year, last.year + 1):
        # Server-pause days the tenant pause took over are charged once now: returned.
        refund = _server_days(before, year) - _server_days(after, year)
        console.print(quota_line(after, year, returned=refund))


def _server_days(ledger: PauseLedger, year: int) -> int:
    return sum(pause.days_in_year(year) for pause in ledger.pauses)


@cli.command()
@db_option
@click.option("--tenant", required=True, help="The tenant the server belongs to.")
@click.argument("server", required=False)
@click.option(
    "--all",
    "every_server",
    is_flag=True,
    help="End the tenant pause (of every server) instead of one server's pauses.",
)
@at_option("Act as if now were this instant (default: now); today is its UTC date.")
@policy_option
@click.pass_context
def unpause(
    ctx: click.Context,
    db: Path,
    tenant: str,
    server: str | None,
    every_server: bool,
    at: dt.datetime | None,
    policy_name: str,
) -> None:
    """End SERVER's current and future pauses; unused days return to the quota.

    With --all (and no SERVER), end the tenant's current and future tenant pauses.
    """
    if every_server == (server is not None):
        raise click.UsageError("give either SERVER or --all")
    at = at or utc_now()
    enforced = False
    with _enforcer(ctx, db, policy_name, at) as (enforcer, store):
        before = _stored_ledger(store, tenant, enforcer.policy.pause_quota_days)
        if server is None:
            after = guarded(lambda: enforcer.unpause_tenant(tenant))
            enforced = guarded(lambda: any(state.in_episode for state in store.states(tenant)))
        else:
            named = resolve_server(store, server)
            after = guarded(lambda: enforcer.end_pause(tenant, named))
            stored = guarded(lambda: store.get(named))
            enforced = stored is not None and stored.value.in_episode
            server = named
    today = at.date()
    returned = {
        year: before.used(year) - after.used(year)
        for year in range(today.year, min(today.year + 2, dt.MAXYEAR + 1))
        if before.used(year) != after.used(year)
    }
    console = make_console()
    who = f"{server} (tenant {tenant})" if server is not None else f"Tenant {tenant}"
    if not returned:
        what = "pause" if server is not None else "tenant pause"
        pauses = before.pauses_for(server) if server is not None else before.tenant_pauses
        if any(p.start <= today < p.end for p in pauses):
            # Its last day is today, which a begun pause keeps: nothing left to end.
            ends = f"{today + dt.timedelta(days=1)} 00:00 UTC"
            console.print(
                text_line(f"{who}: the {what} ends with today, which it keeps, at {ends}.")
            )
        else:
            console.print(text_line(f"{who} had no current or future {what}."))
        return
    if server is None:
        started = any(p.start <= today < p.end for p in before.tenant_pauses)
        resumes = f"{today + dt.timedelta(days=1)} 00:00 UTC" if started else "now"
        after_text = (
            f"enforcement resumes {resumes}"
            if enforced
            else "every server of it is compliant (no enforcement episode), so nothing is enforced"
        )
        console.print(text_line(f"Ended the tenant pause of {tenant}; {after_text}."))
    elif enforced:
        console.print(
            text_line(
                f"Ended the pauses of {who}; enforcement resumes {_resumes(before, server, at)}."
            )
        )
    else:
        # Nothing is enforced on a server outside an episode: no enforcement to resume.
        console.print(text_line(f"Ended the pauses of {who}; {_NOT_ENFORCED}."))
    for year in returned:
        console.print(quota_line(after, year, returned=returned[year]))


def _resumes(ledger: PauseLedger, server: str, at: dt.datetime) -> str:
    # A pause that has begun keeps today (docs/pauses.md): enforcement resumes at midnight.
    started = any(p.start <= at.date() < p.end for p in ledger.pauses_for(server))
    if started:
        return f"{at.date() + dt.timedelta(days=1)} 00:00 UTC"
    return "now"


_NOT_ENFORCED = "it is compliant (no enforcement episode), so nothing is enforced on it"


def _enforced(store: SQLiteStore, server: str) -> bool:
    """Whether ``server`` is in an enforcement episode; True when unknown (never seen)."""
    stored = guarded(lambda: store.get(server))
    return stored is None or stored.value.in_episode


def _stored_ledger(store: SQLiteStore, tenant: str, quota_days: int) -> PauseLedger:
    """The tenant's stored ledger, or an empty one with the policy's quota."""
    stored = guarded(lambda: store.get_ledger(tenant))
    return PauseLedger(tenant, quota_days) if stored is None else stored.value


@contextlib.contextmanager
def _enforcer(
    ctx: click.Context, db: Path, policy_name: str, at: dt.datetime
) -> Iterator[tuple[Enforcer, SQLiteStore]]:
    """An Enforcer over the database with its clock fixed at ``at``; closes the store after."""
    policy, catalog = policy_of(ctx, policy_name, at), catalog_of(ctx)
    store = open_store(db)
    try:
        yield Enforcer(store, policy, catalog, clock=lambda: at), store
    finally:
        store.close()
