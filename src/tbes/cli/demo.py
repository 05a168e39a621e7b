"""The ``tbes demo`` command: the main job end to end on the embedded SQLite store."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tbes import demo as scenario
from tbes.cli._app import (
    catalog_of,
    cli,
    guarded,
    make_console,
    make_table,
    quota_line,
    text_cell,
    text_line,
    utc_text,
)
from tbes.events import Event
from tbes.render._common import instant, printable, stage_cell
from tbes.report import ReportRow

# ---- tbes demo ----------------------------------------------------------------------------


@cli.command()
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("tbes-demo.db"),
    show_default=True,
    help="The SQLite database to create (an earlier demo database there is replaced).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("tbes-report.html"),
    show_default=True,
    help="Where to write the HTML report.",
)
@click.pass_context
def demo(ctx: click.Context, db: Path, report_path: Path) -> None:
    """Replay four months of a tenant's mail through the enforcer and write a report."""
    catalog = catalog_of(ctx)
    guarded(lambda: _fresh_database(db))
    console = make_console()
    senders = (*scenario.SENDERS, scenario.UNMAPPED, scenario.MONITORED, scenario.EXEMPTED)
    tenants = list(dict.fromkeys(sender.tenant for sender in senders))
    console.print(
        text_line(
            f"tbes demo: {len(senders)} sending servers of {len(tenants)} tenants "
            f"({', '.join(tenants)}), "
            f"{scenario.START:%Y-%m-%d} to {scenario.END:%Y-%m-%d} (simulated), "
            f"policy {scenario.POLICY_NAME}, database {db}",
            style="bold",
        ),
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("Replaying mail", total=1.0)
        say = progress.console.print
        result = guarded(
            lambda: scenario.run(
                db,
                report_path,
                on_event=lambda event: say(_event_line(event)),
                on_note=lambda at, text: say(_note_line(at, text)),
                on_progress=lambda share: progress.update(task, completed=share),
                catalog=catalog,
            )
        )
    console.print(_demo_stats(result))
    console.print(_demo_report(result.rows))
    for row in result.rows:
        if row.control is not None:  # the operator's controls change its answer
            console.print(text_line(f"{row.server}: {row.control}."))
    if result.ledger is not None:
        for year in sorted({y for p in result.ledger.pauses for y in p.years()}):
            console.print(quota_line(result.ledger, year))
    _print_delivered(console, guarded(lambda: scenario.deliver_events(db, catalog=catalog)))
    console.print(
        text_line(
            f"{result.checks} connections checked. Wrote {result.report} "
            f"({len(result.rows)} servers): open it in a browser. The database stays: try "
            f"tbes report --db {db} --at {scenario.END:%Y-%m-%dT%H:%MZ}"
        ),
    )


def _print_delivered(console: Any, delivered: scenario.Delivered) -> None:
    """Say what the demo's own webhook and SMTP sink received (docs/notifications.md)."""
    kinds = Counter(delivered.posts)
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    console.print(
        text_line(
            f"Delivered {len(delivered.posts)} events to the webhook at {delivered.webhook} "
            f"({summary}), each with its id as Idempotency-Key."
        )
    )
    if delivered.mail is None:
        console.print(
            text_line("No SMTP sink: install the smtp extra (aiosmtpd) to see the mails.")
        )
    else:
        console.print(
            text_line(
                f"Mailed {len(delivered.mails)} notices to the SMTP sink at {delivered.mail}, "
                f"e.g. {printable(delivered.mails[0]) if delivered.mails else '-'}"
            )
        )


def _fresh_database(db: Path) -> None:
    """Remove an earlier demo database at ``db``; refuse to touch any other file."""
    if not db.exists():
        return
    if not _is_tbes_database(db):
        raise ValueError(f"{db} exists and is not a tbes database: choose another --db")
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)


def _is_tbes_database(path: Path) -> bool:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tbes_schema'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return found is not None


def _event_line(event: Event) -> Text:
    line = Text(f"{instant(event.at)}  ", style="dim")
    line.append(f"{event.kind.value:<16}", style=_EVENT_STYLES.get(event.kind.value, ""))
    line.append(printable(f" {event.server_id}"))
    if event.detail:
        line.append(printable(f": {event.detail}"))
    return line


_EVENT_STYLES = {
    "DETECTED": "yellow",
    "RELAPSED": "yellow",
    "STAGE_CHANGED": "dark_orange",
    "BLOCKING_STARTED": "red",
    "FULLY_BLOCKED": "bold red",
    "PAUSED": "cyan",
    "RESUMED": "cyan",
    "REMEDIATED": "green",
}


def _note_line(at: dt.datetime, text: str) -> Text:
    line = Text(f"{instant(at)}  ", style="dim")
    line.append(f"{'NOTE':<16}", style="magenta")
    line.append(printable(f" {text}"))
    return line


def _demo_stats(result: scenario.DemoResult) -> Table:
    columns = {
        "messages": "messages",
        "delivered": "delivered",
        "delivered_late": "late",
        "deferrals": "450s",
        "bounced": "550 bounced",
        "expired": "expired",
        "queued": "queued",
    }
    every = [result.stats[sender.server_id] for sender in scenario.SENDERS]
    # Columns that stayed zero for every server say nothing.
    shown = [name for name in columns if any(getattr(stats, name) for stats in every)]
    table = make_table("server", "build", *(columns[name] for name in shown), title="Mail")
    table.box = box.SIMPLE_HEAD
    for sender, stats in zip(scenario.SENDERS, every, strict=True):
        builds = " -> ".join(str(build) for _, build in sender.builds)
        table.add_row(
            text_cell(sender.server_id),
            text_cell(builds),
            *(text_cell(getattr(stats, name)) for name in shown),
        )
    return table


def _demo_report(rows: Sequence[ReportRow]) -> Table:
    table = make_table(
        "server",
        "status",
        "stage",
        "throttling from",
        "blocking from",
        "fully blocked",
        title=f"Report as of {utc_text(scenario.END)}",
    )
    table.box = box.SIMPLE_HEAD
    table.columns[0].no_wrap = True  # a server's name, whole, even in 120 columns
    for row in rows:
        table.add_row(
            text_cell(row.server),
            text_cell(row.status.value),
            text_cell(stage_cell(row.stage)),
            text_cell(instant(row.throttle_enabled)),
            text_cell(instant(row.blocking_enabled)),
            text_cell(instant(row.full_block)),
        )
    return table
