"""The ``tbes store`` commands: whole-store operations such as copying."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from tbes.cli._app import Fail, cli, guarded
from tbes.ledger import PauseLedger
from tbes.render._common import printable
from tbes.state import ServerState
from tbes.store import UnreadableRow
from tbes.store.sqlite import SQLiteStore

# ---- tbes store copy ----------------------------------------------------------------------


@cli.group("store")
def store_group() -> None:
    """The state store: copy it to another one."""


def _is_url(spec: str) -> bool:
    return spec.startswith(("postgresql://", "postgres://"))


def _store_label(spec: str) -> str:
    """How a store is named in messages: a URL without its password."""
    if not _is_url(spec):
        return f"SQLite {spec}"
    scheme, _, rest = spec.partition("://")
    credentials, at, place = rest.rpartition("@")
    user = credentials.partition(":")[0]
    return f"PostgreSQL {scheme}://{user + at if at else ''}{place}"


def _open_any(spec: str, *, source: bool) -> Any:
    from tbes.store.postgres import PostgresStore

    if _is_url(spec):
        return guarded(lambda: PostgresStore(spec))
    if source and not Path(spec).is_file():
        raise Fail(f"{spec}: no such SQLite database")
    return guarded(lambda: SQLiteStore(spec, read_only=source))


@store_group.command("copy")
@click.argument("source", metavar="FROM")
@click.argument("target", metavar="TO")
@click.option("--force", is_flag=True, help="Copy into a store that already holds rows.")
def store_copy(source: str, target: str, force: bool) -> None:
    """Copy every server state and pause ledger from the store FROM to the store TO.

    Each is a SQLite file or a postgresql:// URL. TO must be empty unless --force (then
    its rows of the same servers and tenants are replaced). Counts and values are verified.
    """
    if (
        not _is_url(source)
        and not _is_url(target)
        and Path(source).resolve() == Path(target).resolve()
    ):
        raise Fail("FROM and TO are the same database")
    origin = _open_any(source, source=True)
    try:
        entries = guarded(lambda: list(origin.entries()))
        ledgers = guarded(lambda: list(origin.ledgers()))
    finally:
        origin.close()
    broken = [entry for entry in entries if isinstance(entry, UnreadableRow)]
    if broken:
        raise Fail(f"nothing copied: {broken[0].error}")
    states = [entry for entry in entries if isinstance(entry, ServerState)]
    store = _open_any(target, source=False)
    try:
        held = guarded(lambda: sum(1 for _ in store.entries()) + sum(1 for _ in store.ledgers()))
        if held and not force:
            raise Fail(
                f"nothing copied: {_store_label(target)} already holds {held} rows "
                "(use --force to replace those of the same servers and tenants)"
            )
        guarded(lambda: _copy_rows(store, states, ledgers))
        guarded(lambda: _verify_copy(store, states, ledgers))
    finally:
        store.close()
    click.echo(
        printable(
            f"Copied {len(states)} server states and {len(ledgers)} pause ledgers from "
            f"{_store_label(source)} to {_store_label(target)}; read back and verified."
        )
    )


def _copy_rows(store: Any, states: Sequence[ServerState], ledgers: Sequence[PauseLedger]) -> None:
    from tbes.store import LedgerWrite, StateWrite

    for ledger in ledgers:
        found = store.get_ledger(ledger.tenant)
        store.put_many([LedgerWrite(ledger, None if found is None else found.version)])
    for state in states:
        had = store.get(state.server_id)
        store.put_many([StateWrite(state, None if had is None else had.version)])


def _verify_copy(store: Any, states: Sequence[ServerState], ledgers: Sequence[PauseLedger]) -> None:
    copied = {state.server_id: state for state in states}
    found = {state.server_id: state for state in store.states() if state.server_id in copied}
    tenants = {ledger.tenant: ledger for ledger in ledgers}
    stored = {ledger.tenant: ledger for ledger in store.ledgers() if ledger.tenant in tenants}
    if found != copied or stored != tenants:
        raise ValueError(
            f"verification failed: {len(found)} of {len(copied)} states and {len(stored)} "
            f"of {len(tenants)} ledgers read back equal"
        )
