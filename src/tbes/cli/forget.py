"""The ``tbes forget`` command: remove a stored server."""

from __future__ import annotations

from pathlib import Path

import click

from tbes.cli._app import Fail, cli, count, db_option, guarded, open_store, resolve_server
from tbes.render._common import printable

# ---- tbes forget --------------------------------------------------------------------------


@cli.command()
@click.argument("server")
@db_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def forget(server: str, db: Path, yes: bool) -> None:
    """Remove SERVER's stored state (a mistyped or decommissioned server).

    SERVER is its id (CONNECTOR/HOST), or a host name that exactly one stored server has.

    Its pause days stay charged to its tenant's quota: forgetting never refunds them. If
    the server sends again, it starts afresh.
    """
    store = open_store(db)
    try:
        server = resolve_server(store, server)
        stored = guarded(lambda: store.get(server))
        if stored is None:
            raise Fail(f"no stored state for server {server!r} in {db}: nothing forgotten")
        state = stored.value
        if not yes:
            click.confirm(
                printable(f"Forget server {server} (tenant {state.tenant}) in {db}?"), abort=True
            )
        guarded(lambda: store.delete(server, expected_version=stored.version))
        ledger = guarded(lambda: store.get_ledger(state.tenant))
    finally:
        store.close()
    charged = 0 if ledger is None else sum(p.days for p in ledger.value.pauses_for(server))
    click.echo(
        printable(
            f"Forgot server {server} (tenant {state.tenant}): its state is removed from {db}; "
            f"its {count(charged, 'pause day')} {'stays' if charged == 1 else 'stay'} charged "
            f"to tenant {state.tenant}."
        )
    )
