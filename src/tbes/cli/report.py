"""The ``tbes report`` command: every stored server, one row each."""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from tbes.cli._app import (
    at_option,
    catalog_of,
    cli,
    config_option,
    controls,
    db_option,
    guarded,
    open_store,
    policy_of,
    policy_option,
    unreadable_line,
    utc_text,
)
from tbes.cli._discovered import report_discovered
from tbes.enforcer import utc_now
from tbes.render import FORMATS, Sink, write_report
from tbes.render._common import printable
from tbes.state import ServerState
from tbes.store import UnreadableRow

# ---- tbes report --------------------------------------------------------------------------


@cli.command()
@db_option
@click.option("--tenant", default=None, help="Only this tenant's servers (default: all).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report to this file instead of standard output.",
)
@at_option("Report as of this instant (default: now).")
@policy_option
@config_option
@click.option(
    "--discovered",
    is_flag=True,
    help="List the unmapped on-premises Exchange senders seen instead, each peer network "
    "with a [[connector]] rule to paste (table, csv or json).",
)
@click.pass_context
def report(
    ctx: click.Context,
    db: Path,
    tenant: str | None,
    fmt: str,
    output: Path | None,
    at: dt.datetime | None,
    policy_name: str,
    config_file: Path | None,
    discovered: bool = False,
) -> int | None:
    """Report every server in the database, one row per server.

    The table, JSON and CSV are written as the rows are read, in constant memory. A row
    that cannot be read is left out and named on stderr, and the exit status is 1. With
    --output the report goes to a temporary file renamed over FILE at the end, so a report
    that fails leaves no partial file. With --config, the status shows each server's
    exemption or monitor mode. With --discovered, the unmapped Exchange senders instead
    (docs/discovery.md).
    """
    at = at or utc_now()
    config = controls(config_file)
    if discovered:
        report_discovered(db, fmt, output, config, _write_whole)
        return None
    operator: dict[str, Any] = (
        {} if config is None else {"exemptions": config.exemptions_for, "monitors": config.monitors}
    )
    policy = policy_of(ctx, policy_name, at)
    catalog = catalog_of(ctx)
    subtitle = f"as of {utc_text(at)} · policy {policy_name}" + (
        f" · tenant {tenant}" if tenant else ""
    )
    tally = _Tally()
    store = open_store(db, read_only=True)
    try:

        def render_to(out: Sink) -> None:
            states = tally.readable(store.entries(tenant))
            write_report(
                states,
                fmt,
                out,
                now=at,
                policy=policy,
                catalog=catalog,
                subtitle=subtitle,
                **operator,
            )

        if output is None:
            guarded(lambda: render_to(sys.stdout))
        else:
            guarded(lambda: _write_whole(output, render_to))
    finally:
        store.close()
    if output is not None:
        click.echo(printable(f"Wrote the {fmt} report of {tally.states} servers to {output}."))
    return 1 if tally.unreadable else None


class _Tally:
    """Counts what a report reads, and marks each unreadable row on stderr as it passes."""

    def __init__(self) -> None:
        self.states = 0
        self.unreadable = 0

    def readable(self, entries: Iterable[ServerState | UnreadableRow]) -> Iterator[ServerState]:
        for entry in entries:
            if isinstance(entry, UnreadableRow):
                self.unreadable += 1
                click.echo(unreadable_line(entry), err=True)
            else:
                self.states += 1
                yield entry


def _write_whole(output: Path, write: Callable[[Sink], None]) -> None:
    """Run ``write`` on a temporary file beside ``output`` and rename it over ``output`` only
    once it succeeded: a failed report never leaves half a file. A FILE that is no regular
    file (``/dev/stdout``, a pipe) is written directly, as it cannot be replaced; a symbolic
    link keeps pointing where it did, and the file it names is replaced."""
    if output.exists() and not output.is_file():
        with output.open("w", encoding="utf-8", newline="") as out:
            write(out)
        return
    if output.is_symlink():
        output = output.resolve()
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            write(out)
        # mkstemp makes the file private; the report gets the mode a new file would have.
        umask = os.umask(0)
        os.umask(umask)
        temporary.chmod(0o666 & ~umask)
        temporary.replace(output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
