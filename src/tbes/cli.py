"""The ``tbes`` command: inspect messages, forecast timelines, report, pause, and run the demo.

A thin shell over the library (click for the command line, rich for the terminal): every
fact it prints comes from the core (:func:`~tbes.report.forecast`,
:func:`~tbes.report.report_row`, :func:`~tbes.decision.decide`, …) or the store. Two
decisions shaped it. Bad input never shows a traceback: every error the library or the
operating system raises for it (and every usage error) becomes one line on stderr and exit
code 2. And times are explicit: an instant needs a time zone (``Z`` or an offset), a date
alone means UTC midnight, so a forecast never depends on the machine's local zone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tbes import demo as scenario
from tbes.catalog import Assessment, Catalog, Release, assess
from tbes.decision import Decision, decide, monitored
from tbes.enforcer import Enforcer, utc_now
from tbes.errors import TbesError
from tbes.events import Event
from tbes.ledger import Pause, PauseLedger
from tbes.policy import Policy
from tbes.received import Hop, SenderEvidence, find_sender, parse_received, received_values
from tbes.render import FORMATS, render_report
from tbes.render._common import instant, minutes, printable, stage_cell
from tbes.render.json import dumps
from tbes.report import END, ReportRow, Segment, forecast, horizon, report_row
from tbes.serde import converter
from tbes.state import ServerState, observe
from tbes.store import UnreadableRow
from tbes.store.sqlite import SQLiteStore
from tbes.version import ExchangeBuild, Product

__all__ = ["cli", "main"]

_T = TypeVar("_T")

POLICIES = ("exchange_online_2026", "exchange_online_2023", "supported_only")
"""The policy presets ``--policy`` accepts (see :meth:`tbes.policy.Policy.named`)."""

_DEFAULT_POLICY = "exchange_online_2026"
_DEFAULT_CATALOG_OUT = "tbes-catalog.json"
# Subcommands that live beside their shell module and are imported only when used, so that
# `tbes` works without their optional dependencies: name -> (module, attribute holding the
# click.Command, the extra that installs what it needs). Add new adapters' commands here.
_LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "milter": ("tbes.adapters.milter", "command", "milter"),
    "serve": ("tbes.adapters.milter", "serve_command", "milter"),
}


# ---- errors: one line, exit code 2 --------------------------------------------------------


class _Fail(click.ClickException):
    """Bad input or a failed operation: one line on stderr, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        # Messages echo input (file names, server ids, option values): escaped, and one line.
        click.echo(f"tbes: error: {printable(self.format_message())}", err=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


class _Group(click.Group):
    """The top-level group: lazy subcommands, and every failure as one line with exit 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _LAZY_COMMANDS:
            command = _load_command(cmd_name, *_LAZY_COMMANDS[cmd_name])
        return command

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command; in standalone mode turn every failure into one line and exit 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            _Fail(_one_line(exc.format_message())).show()
            sys.exit(2)
        except click.ClickException as exc:
            _Fail(_one_line(exc.format_message())).show()
            sys.exit(2)
        except click.Abort:
            click.echo("tbes: aborted", err=True)
            sys.exit(1)
        except (TbesError, OSError, ValueError, sqlite3.Error) as exc:
            _Fail(_one_line(_message(exc))).show()
            sys.exit(2)
        sys.exit(result if isinstance(result, int) else 0)


def _load_command(name: str, module: str, attribute: str, extra: str) -> click.Command:
    """The subcommand ``name`` from ``module``, or a stand-in naming the missing extra."""
    try:
        loaded = getattr(importlib.import_module(module), attribute)
    except ImportError as exc:
        missing = exc.name or module

        @click.command(name, help=f"(not installed: pip install 'tbes[{extra}]')")
        def unavailable() -> None:
            raise _Fail(f"tbes {name} needs {missing}: install it with pip install 'tbes[{extra}]'")

        return unavailable
    assert isinstance(loaded, click.Command)
    return loaded


def _guard(work: Callable[[], _T]) -> _T:
    """Run ``work``, turning library and OS errors into :class:`_Fail`."""
    try:
        return work()
    except (TbesError, OSError, ValueError, sqlite3.Error) as exc:
        raise _Fail(_one_line(_message(exc))) from exc


# ---- parameter types ----------------------------------------------------------------------

if TYPE_CHECKING:
    # click 8.2 and later type ParamType by its value and input types; older click is not
    # generic at run time, so the arguments exist for the type checker only.
    _ParamType: TypeAlias = click.ParamType[Any, Any]
else:
    _ParamType = click.ParamType

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


class _Instant(_ParamType):
    """An ISO 8601 instant with ``Z`` or an offset; a date alone is UTC midnight."""

    name = "ISO-TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dt.datetime):
            return value
        text = str(value).strip()
        if _DATE_ONLY.fullmatch(text):
            day = _parse_date(text, self, param, ctx)
            return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{text!r} is not an ISO 8601 time (like 2026-10-15T08:30:00Z or "
                "2026-10-15T10:30:00+02:00) nor a date (2026-10-15, UTC midnight)",
                param,
                ctx,
            )
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            self.fail(
                f"{text!r} has no time zone: add Z or an offset such as +02:00 "
                "(a date alone, like 2026-10-15, means UTC midnight)",
                param,
                ctx,
            )
        try:
            return parsed.astimezone(dt.UTC)
        except OverflowError:
            self.fail(
                f"{text!r} lies outside the calendar in UTC "
                "(0001-01-01T00:00Z to 9999-12-31T23:59:59Z)",
                param,
                ctx,
            )


class _Date(_ParamType):
    """A calendar date, ``YYYY-MM-DD``."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dt.date):
            return value
        return _parse_date(str(value).strip(), self, param, ctx)


def _parse_date(
    text: str, kind: _ParamType, param: click.Parameter | None, ctx: click.Context | None
) -> dt.date:
    try:
        if not _DATE_ONLY.fullmatch(text):
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        kind.fail(f"{text!r} is not a date like 2026-10-15", param, ctx)


class _Build(_ParamType):
    """An Exchange build number such as ``15.1.2507.39``."""

    name = "BUILD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, ExchangeBuild):
            return value
        try:
            return ExchangeBuild.parse(str(value))
        except TbesError as exc:
            self.fail(str(exc), param, ctx)


class _PauseSpec(_ParamType):
    """A pause as ``DATE:DAYS``: its first UTC day and its length in days."""

    name = "DATE:DAYS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        day, sep, days = str(value).strip().rpartition(":")
        if not sep or not days.isdigit() or int(days) < 1:
            self.fail(f"{value!r} is not DATE:DAYS, like 2026-01-10:10", param, ctx)
        return (_parse_date(day, self, param, ctx), int(days))


_INSTANT = _Instant()
_DATE = _Date()
_BUILD = _Build()
_PAUSE = _PauseSpec()


# ---- shared pieces ------------------------------------------------------------------------


def _console() -> Console:
    # A fixed width off a terminal keeps tables whole in files, pipes and tests.
    stream = sys.stdout
    width = None if stream.isatty() else 120
    # Lines of text never wrap (they stay greppable); tables fit the width.
    return Console(file=stream, highlight=False, width=width, soft_wrap=True)


def _catalog(ctx: click.Context) -> Catalog:
    root = ctx.find_root()
    cached: Catalog | None = root.meta.get("tbes.catalog")
    if cached is not None:
        return cached
    path: Path | None = root.params.get("catalog_path")
    loaded = _guard(Catalog.default if path is None else lambda: Catalog.load(path))
    root.meta["tbes.catalog"] = loaded
    return loaded


def _policy(ctx: click.Context, name: str, at: dt.datetime) -> Policy:
    # supported_only judges support on the day of the decision, by the operator's catalog;
    # the fixed presets need no catalog, so none is read for them.
    catalog = _catalog(ctx) if name == "supported_only" else None
    return _guard(lambda: Policy.named(name, on=at.astimezone(dt.UTC).date(), catalog=catalog))


def _policy_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--policy",
        "policy_name",
        type=click.Choice(POLICIES),
        default=_DEFAULT_POLICY,
        show_default=True,
        help="Policy preset: what is compliant and how enforcement proceeds.",
    )(function)


def _at_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--at", type=_INSTANT, default=None, help=help_text)


def _db_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        required=True,
        help="The tbes SQLite database.",
    )(function)


def _config_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="The adapter configuration (TOML): show its exemptions and monitor mode.",
    )(function)


def _controls(config_file: Path | None) -> Any:
    """The adapter configuration whose operator controls to show, or ``None``."""
    if config_file is None:
        return None
    from tbes.adapters.config import load_config

    return _guard(lambda: load_config(config_file))


def _open_store(path: Path, *, read_only: bool = False) -> SQLiteStore:
    # Reading commands open read-only: they never add tables to, or change the journal mode
    # of, whatever file --db names, and they work on a read-only file.
    return _guard(lambda: SQLiteStore(path, read_only=read_only))


def _unreadable_line(row: UnreadableRow) -> str:
    """The stderr line marking a row the report could not show; control characters escaped."""
    return "tbes: unreadable row, not in the report: " + printable(_one_line(row.error))


def _t(value: object) -> Text:
    """Data as rich Text, so that brackets in server ids are never read as markup, with
    control characters shown as escapes (:func:`~tbes.render._common.printable`)."""
    return Text("-" if value is None else printable(str(value)))


def _line(text: str, style: str = "") -> Text:
    """A line to print that holds foreign text: escaped, and never read as markup."""
    return Text(printable(text), style=style)


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _utc(at: dt.datetime | None) -> str:
    return "-" if at is None else f"{instant(at)} UTC"


# ---- the group ----------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--catalog",
    "catalog_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="TBES_CATALOG",
    help="Build catalog file to use instead of the packaged one "
    "(written by `tbes catalog import`; also read from $TBES_CATALOG).",
)
@click.version_option(package_name="tbes", prog_name="tbes")
def cli(catalog_path: Path | None) -> None:
    """Transport-based enforcement against outdated Exchange servers.

    Times are UTC. Options that take an instant accept ISO 8601 with Z or an offset
    (2026-10-15T08:30:00Z); a date alone (2026-10-15) means UTC midnight.
    """


def main() -> None:
    """Entry point of the ``tbes`` console script."""
    cli.main(prog_name="tbes")


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
@_policy_option
@_at_option("Decide as if the message arrived at this instant (default: now).")
@click.option(
    "--first-detected",
    type=_INSTANT,
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
    policy = _policy(ctx, policy_name, at)
    catalog = _catalog(ctx)
    values = received_values(_guard(message.read_bytes))
    hops = [parse_received(value) for value in values]
    evidence = find_sender(values, own_hosts=own_hosts)
    found = _inspect_sender(evidence, at, first_detected, policy, catalog)
    if as_json:
        click.echo(_inspect_json(hops, evidence, found))
        return
    console = _console()
    console.print(_hops_table(hops))
    _print_sender(console, evidence, found, policy_name)


def _inspect_sender(
    evidence: SenderEvidence | None,
    at: dt.datetime,
    first_detected: dt.datetime | None,
    policy: Policy,
    catalog: Catalog,
) -> tuple[Assessment, Decision, ReportRow] | None:
    if evidence is None:
        return None
    assessment = assess(evidence.build, baseline=policy.baseline, catalog=catalog)
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
    table = _table(
        "#", "from", "by", "with", "build", "date (UTC)", title="Received hops, newest first"
    )
    for index, hop in enumerate(hops):
        table.add_row(
            _t(index),
            _t(hop.from_host or hop.from_ip),
            _t(hop.by_host or hop.by_ip),
            _t(hop.protocol),
            _t(hop.build),
            _t(None if hop.date is None else instant(hop.date)),
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
        "Recommended: " + (" ".join(str(b) for b in assessment.recommended) or "-"),
        f"Decision: {decision.action.value}"
        + ("" if decision.stage is None else f" in stage {decision.stage.number}")
        + f". {decision.reason}",
    ]
    if decision.reply is not None:
        lines.append(f"Reply: {decision.reply}")
    for line in lines:
        console.print(_line(line))
    if row.throttle_enabled is not None:
        console.print(_milestones(row))


def _milestones(row: ReportRow, title: str | None = None) -> Table:
    table = _table("milestone", "instant (UTC)", title=title)
    table.add_row("first detected", _t(instant(row.first_detected)))
    table.add_row("throttling from", _t(instant(row.throttle_enabled)))
    table.add_row("blocking from", _t(instant(row.blocking_enabled)))
    table.add_row("fully blocked", _t(instant(row.full_block)))
    return table


# ---- tbes timeline ------------------------------------------------------------------------


@cli.command()
@click.option("--build", type=_BUILD, required=True, help="The server's build, e.g. 15.1.2507.39.")
@click.option(
    "--first-detected",
    type=_INSTANT,
    required=True,
    help="When the server was first seen non-compliant (a date is UTC midnight).",
)
@click.option(
    "--pause",
    "pauses",
    type=_PAUSE,
    multiple=True,
    help="A pause as DATE:DAYS (first UTC day, length). Repeatable.",
)
@_policy_option
@click.option("--server", default="server", show_default=True, help="The server's id.")
@_at_option("Also say what the server gets at this instant (its stage and action).")
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
    policy = _policy(ctx, policy_name, first_detected)
    catalog = _catalog(ctx)
    assessment = assess(build, baseline=policy.baseline, catalog=catalog)
    state = _guard(lambda: _what_if(server, build, assessment, first_detected, pauses, policy))
    console = _console()
    release = "" if assessment.release is None else f" ({assessment.release.title})"
    console.print(
        _line(f"Build {build}{release}: {assessment.status.value} under {policy_name}."),
    )
    console.print(_line(assessment.reason))
    if state.first_detected is None:
        console.print("Nothing is enforced: the server is never throttled or blocked.")
        return
    row = report_row(state, first_detected, policy, catalog)
    console.print(_milestones(row))
    # The horizon is a day into the terminal stage: enough to show where it begins.
    until = horizon(state, policy, first_detected)
    segments = forecast(state, policy, until=until)
    if segments:  # none when detected at the calendar's very end
        console.print(_stages_table(segments, until))
    if at is not None:
        decision = _guard(lambda: decide(state, at, policy))
        console.print(_line(f"At {_utc(at)}: {decision.action.value}. {decision.reason}"))


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
    # The ledger refuses overlapping pauses and years above the quota, as a real one would.
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


def _stages_table(segments: Sequence[Segment], until: dt.datetime) -> Table:
    table = _table(
        "stage", "from (UTC)", "until (UTC)", "days", "throttle min/h", "block min/h", "each hour"
    )
    for segment in segments:
        stage = segment.stage
        # The terminal stage, or any stage the calendar's end cuts short, has no end.
        open_ended = segment.end == until and stage is not None and (stage.terminal or until == END)
        days = segment.duration / dt.timedelta(days=1)
        table.add_row(
            _t(None if stage is None else stage.number),
            _t(instant(segment.start)),
            _t("-" if open_ended else instant(segment.end)),
            _t("-" if open_ended else f"{days:g}"),
            _t(None if stage is None else stage.throttle_minutes),
            _t(None if stage is None else stage.block_minutes),
            _t("paused" if segment.paused else "" if stage is None else minutes(stage)),
        )
    return table


# ---- tbes report --------------------------------------------------------------------------


@cli.command()
@_db_option
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
@_at_option("Report as of this instant (default: now).")
@_policy_option
@_config_option
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
) -> int | None:
    """Report every server in the database, one row per server.

    A row that cannot be read is left out and named on stderr, and the exit status is 1.
    With --config, the status shows each server's exemption or monitor mode.
    """
    at = at or utc_now()
    config = _controls(config_file)
    policy = _policy(ctx, policy_name, at)
    catalog = _catalog(ctx)
    store = _open_store(db, read_only=True)
    try:
        entries = _guard(lambda: list(store.entries(tenant)))
    finally:
        store.close()
    states = [entry for entry in entries if isinstance(entry, ServerState)]
    unreadable = [entry for entry in entries if isinstance(entry, UnreadableRow)]
    subtitle = f"as of {_utc(at)} · policy {policy_name}" + (
        f" · tenant {tenant}" if tenant else ""
    )
    controls: dict[str, Any] = (
        {} if config is None else {"exemptions": config.exemptions_for, "monitors": config.monitors}
    )
    text = render_report(
        states, fmt, now=at, policy=policy, catalog=catalog, subtitle=subtitle, **controls
    )
    if output is None:
        click.echo(text, nl=False)
    else:
        _guard(lambda: output.write_text(text, encoding="utf-8", newline=""))
        click.echo(printable(f"Wrote the {fmt} report of {len(states)} servers to {output}."))
    for row in unreadable:
        click.echo(_unreadable_line(row), err=True)
    return 1 if unreadable else None


# ---- tbes quota ---------------------------------------------------------------------------


@cli.command()
@_db_option
@click.option("--tenant", required=True, help="The tenant whose pause quota to show.")
@click.option("--year", type=click.IntRange(1, 9999), default=None, help="Default: this year.")
@_at_option("Take 'this year' from this instant (default: now).")
@_policy_option
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
    ledger, servers = _ledger(db, tenant, _policy(ctx, policy_name, at))
    _print_quota(_console(), ledger, year, servers)


def _ledger(db: Path, tenant: str, policy: Policy) -> tuple[PauseLedger, int]:
    """The tenant's ledger and, if it has tenant pauses, how many servers of it are stored."""
    store = _open_store(db, read_only=True)
    try:
        ledger = _stored_ledger(store, tenant, policy.pause_quota_days)
        if not ledger.tenant_pauses:
            return ledger, 0  # the count is only for what tenant pauses save: not read
        return ledger, _guard(lambda: sum(1 for _ in store.states(tenant)))
    finally:
        store.close()


def _print_quota(console: Console, ledger: PauseLedger, year: int, servers: int) -> None:
    console.print(
        _line(
            f"Tenant {ledger.tenant}, {year}: {ledger.used(year)} of {ledger.quota_days} pause "
            f"days used, {ledger.remaining(year)} remaining."
        )
    )
    charged = [pause for pause in ledger.pauses if pause.days_in_year(year)]
    tenant_days = sum(pause.days_in_year(year) for pause in ledger.tenant_pauses)
    if not charged and not tenant_days:
        console.print(f"No pauses in {year}.")
        return
    table = _table("server", "first day", "last day", "days", f"days in {year}")
    # Both kinds in order of start; a tenant pause's row names no server but all of them.
    rows = [(p.server_id, p.start, p.last_day, p.days, p.days_in_year(year)) for p in charged]
    rows += [
        ("(every server)", p.start, p.last_day, p.days, p.days_in_year(year))
        for p in ledger.tenant_pauses
        if p.days_in_year(year)
    ]
    for row in sorted(rows, key=lambda row: (row[1], row[0] == "(every server)", row[0])):
        table.add_row(*(_t(cell) for cell in row))
    console.print(table)
    if tenant_days and servers > 1:
        # The refund made visible: what the same days would cost paused server by server.
        console.print(
            _line(
                f"Tenant pauses in {year}: {tenant_days} days charged for {servers} stored "
                f"servers, {tenant_days * (servers - 1)} fewer than pausing each server."
            )
        )


# ---- tbes catalog -------------------------------------------------------------------------


@cli.group("catalog")
def catalog_group() -> None:
    """The build catalog: show it, or import Microsoft's build list as an override file.

    tbes uses its packaged catalog unless `tbes --catalog FILE` or $TBES_CATALOG names
    another one.
    """


_PRODUCT_NAMES = {
    product.label.lower().removeprefix("exchange").strip(): product
    for product in Product
    if product is not Product.UNKNOWN
}


@catalog_group.command("show")
@click.argument("product", required=False)
@click.pass_context
def catalog_show(ctx: click.Context, product: str | None) -> None:
    """Show each product's latest build, or every release of PRODUCT (e.g. 2016, SE)."""
    catalog = _catalog(ctx)
    console = _console()
    if product is None:
        console.print(_products_table(catalog))
        return
    wanted = _product(product)
    releases = [release for release in catalog.releases if release.product is wanted]
    console.print(_releases_table(wanted, releases, catalog))


def _product(text: str) -> Product:
    key = text.strip().lower().replace("_", " ").removeprefix("exchange").strip()
    if key in _PRODUCT_NAMES:
        return _PRODUCT_NAMES[key]
    names = ", ".join(_PRODUCT_NAMES)
    raise click.BadParameter(
        f"unknown product {text!r}: choose one of {names}", param_hint="PRODUCT"
    )


def _products_table(catalog: Catalog) -> Table:
    table = _table(
        "product",
        "latest release",
        "build",
        "date",
        "end of support",
        "releases",
        title=f"Catalog as of {catalog.as_of}",
    )
    for product in Product:
        releases = [release for release in catalog.releases if release.product is product]
        if not releases:
            continue
        latest = catalog.latest(product)
        table.add_row(
            _t(product.label),
            _t(latest.name),
            _t(latest.build),
            _t(latest.date),
            _t(catalog.end_of_support(product)),
            _t(len(releases)),
        )
    return table


def _releases_table(product: Product, releases: Sequence[Release], catalog: Catalog) -> Table:
    support = catalog.end_of_support(product)
    title = f"{product.label}: {len(releases)} releases" + (
        f", end of support {support}" if support else ""
    )
    table = _table("release", "build", "date", "KB", title=title)
    for release in releases:
        table.add_row(_t(release.name), _t(release.build), _t(release.date), _t(release.kb))
    return table


@catalog_group.command("import")
@click.argument(
    "csv_file", metavar="CSV", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(_DEFAULT_CATALOG_OUT),
    show_default=True,
    help="The catalog file to write.",
)
def catalog_import(csv_file: Path, output: Path) -> None:
    """Import Microsoft's build list (CSV) and write it as a tbes catalog file."""
    imported = _guard(lambda: Catalog.from_microsoft_csv(csv_file))
    _guard(lambda: imported.dump(output))
    click.echo(
        printable(
            f"Imported {len(imported.releases)} releases (as of {imported.as_of}) from "
            f"{csv_file} into {output}. Use it with `tbes --catalog {output} ...` or "
            f"TBES_CATALOG={output}."
        )
    )


# ---- tbes pause / unpause -----------------------------------------------------------------


@cli.command()
@_db_option
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
@click.option("--start", type=_DATE, default=None, help="First paused UTC day (default: today).")
@click.option(
    "--force",
    is_flag=True,
    help="Pause a server tbes has not seen yet (without it, an unknown SERVER is refused).",
)
@_at_option("Act as if now were this instant (default: now); today is its UTC date.")
@_policy_option
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
    with _enforcer(ctx, db, policy_name, at) as (enforcer, _):
        ledger = _guard(lambda: enforcer.pause(tenant, server, days, first, force=force))
    last = first + dt.timedelta(days=days - 1)
    console = _console()
    console.print(
        _line(
            f"Paused {server} (tenant {tenant}) for {days} days: {first} to {last} (UTC days); "
            f"enforcement resumes {last + dt.timedelta(days=1)} 00:00 UTC."
        )
    )
    for year in range(first.year, last.year + 1):
        console.print(_quota_line(ledger, year))


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
        after = _guard(lambda: enforcer.pause_tenant(tenant, days, first))
    last = first + dt.timedelta(days=days - 1)
    # An overlapping or adjoining tenant pause was extended: the whole pause says when it ends.
    ends = next(p.end for p in after.tenant_pauses if p.start <= first < p.end)
    console = _console()
    console.print(
        _line(
            f"Paused every server of tenant {tenant} for {days} days: {first} to {last} (UTC "
            f"days); enforcement resumes {ends} 00:00 UTC."
        )
    )
    for year in range(first.year, last.year + 1):
        # Server-pause days the tenant pause took over are charged once now: returned.
        refund = _server_days(before, year) - _server_days(after, year)
        console.print(_quota_line(after, year, returned=refund))


def _server_days(ledger: PauseLedger, year: int) -> int:
    return sum(pause.days_in_year(year) for pause in ledger.pauses)


@cli.command()
@_db_option
@click.option("--tenant", required=True, help="The tenant the server belongs to.")
@click.argument("server", required=False)
@click.option(
    "--all",
    "every_server",
    is_flag=True,
    help="End the tenant pause (of every server) instead of one server's pauses.",
)
@_at_option("Act as if now were this instant (default: now); today is its UTC date.")
@_policy_option
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
    with _enforcer(ctx, db, policy_name, at) as (enforcer, store):
        before = _stored_ledger(store, tenant, enforcer.policy.pause_quota_days)
        if server is None:
            after = _guard(lambda: enforcer.unpause_tenant(tenant))
        else:
            named = server
            after = _guard(lambda: enforcer.end_pause(tenant, named))
    today = at.date()
    returned = {
        year: before.used(year) - after.used(year)
        for year in range(today.year, min(today.year + 2, dt.MAXYEAR + 1))
        if before.used(year) != after.used(year)
    }
    console = _console()
    who = f"{server} (tenant {tenant})" if server is not None else f"Tenant {tenant}"
    if not returned:
        what = "pause" if server is not None else "tenant pause"
        console.print(_line(f"{who} had no current or future {what}."))
        return
    if server is None:
        started = any(p.start <= today < p.end for p in before.tenant_pauses)
        resumes = f"{today + dt.timedelta(days=1)} 00:00 UTC" if started else "now"
        console.print(_line(f"Ended the tenant pause of {tenant}; enforcement resumes {resumes}."))
    else:
        console.print(
            _line(f"Ended the pauses of {who}; enforcement resumes {_resumes(before, server, at)}.")
        )
    for year in returned:
        console.print(_quota_line(after, year, returned=returned[year]))


def _resumes(ledger: PauseLedger, server: str, at: dt.datetime) -> str:
    # A pause that has begun keeps today (SPEC section 5): enforcement resumes at midnight.
    started = any(p.start <= at.date() < p.end for p in ledger.pauses_for(server))
    if started:
        return f"{at.date() + dt.timedelta(days=1)} 00:00 UTC"
    return "now"


def _quota_line(ledger: PauseLedger, year: int, *, returned: int = 0) -> Text:
    back = f" ({returned} days returned)" if returned else ""
    return _line(
        f"Quota of {ledger.tenant} in {year}: {ledger.used(year)} of {ledger.quota_days} days "
        f"used, {ledger.remaining(year)} remaining{back}."
    )


def _stored_ledger(store: SQLiteStore, tenant: str, quota_days: int) -> PauseLedger:
    """The tenant's stored ledger, or an empty one with the policy's quota."""
    stored = _guard(lambda: store.get_ledger(tenant))
    return PauseLedger(tenant, quota_days) if stored is None else stored.value


@contextlib.contextmanager
def _enforcer(
    ctx: click.Context, db: Path, policy_name: str, at: dt.datetime
) -> Iterator[tuple[Enforcer, SQLiteStore]]:
    """An Enforcer over the database with its clock fixed at ``at``; closes the store after."""
    policy, catalog = _policy(ctx, policy_name, at), _catalog(ctx)
    store = _open_store(db)
    try:
        yield Enforcer(store, policy, catalog, clock=lambda: at), store
    finally:
        store.close()


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
    catalog = _catalog(ctx)
    _guard(lambda: _fresh_database(db))
    console = _console()
    console.print(
        _line(
            f"tbes demo: tenant {scenario.TENANT}, {len(scenario.SENDERS)} sending servers, "
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
        result = _guard(
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
    if result.ledger is not None:
        for year in sorted({y for p in result.ledger.pauses for y in p.years()}):
            console.print(_quota_line(result.ledger, year))
    console.print(
        _line(
            f"{result.checks} connections checked. Wrote {result.report} "
            f"({len(result.rows)} servers): open it in a browser. The database stays: try "
            f"tbes report --db {db} --at {scenario.END:%Y-%m-%dT%H:%MZ}"
        ),
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
    table = _table("server", "build", *(columns[name] for name in shown), title="Mail")
    table.box = box.SIMPLE_HEAD
    for sender, stats in zip(scenario.SENDERS, every, strict=True):
        builds = " -> ".join(str(build) for _, build in sender.builds)
        table.add_row(
            _t(sender.server_id), _t(builds), *(_t(getattr(stats, name)) for name in shown)
        )
    return table


def _demo_report(rows: Sequence[ReportRow]) -> Table:
    table = _table(
        "server",
        "status",
        "stage",
        "throttling from",
        "blocking from",
        "fully blocked",
        title=f"Report as of {_utc(scenario.END)}",
    )
    table.box = box.SIMPLE_HEAD
    for row in rows:
        table.add_row(
            _t(row.server),
            _t(row.status.value),
            _t(stage_cell(row.stage)),
            _t(instant(row.throttle_enabled)),
            _t(instant(row.blocking_enabled)),
            _t(instant(row.full_block)),
        )
    return table


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
    config = _guard(lambda: load_config(file))
    catalog = _guard(config.load_catalog)
    policy = _guard(lambda: config.make_policy(catalog))
    console = _console()
    console.print(_line(f"{file}: valid configuration."))
    enforced = ", ".join(sorted(kind.value.lower() for kind in policy.connectors)) or "none"
    console.print(
        _line(
            f"Policy {config.policy}: enforces {enforced} connectors; pause quota "
            f"{policy.pause_quota_days} days a year. Catalog: "
            f"{config.catalog or 'packaged'} (as of {catalog.as_of})."
        )
    )
    console.print(_line(f"Own hosts: {', '.join(config.own_hosts) or 'none'}."))
    console.print(
        _line(
            f"Faults: {'defer (fail_closed)' if config.fail_closed else 'accept (fail open)'} "
            f"after {config.check_timeout:g} s. Unmatched connections: tenant {config.tenant}, "
            "never enforced."
        )
    )
    if config.fixed_time is not None:
        console.print(
            _line(f"[testing] fixed_time = {instant(config.fixed_time)} UTC: tests only!")
        )
    for line in _rules_lines(config.connectors, policy, config.monitor_connectors):
        console.print(line)
    for line in _exemption_lines(config.exemptions):
        console.print(line)
    console.print(_schedule_table(policy))
    if peer is not None:
        console.print(_peer_line(config, policy, peer, peer_name, tls_subject))


def _rules_lines(
    rules: Sequence[Any], policy: Policy, monitored: frozenset[str] = frozenset()
) -> list[Text]:
    """One line per connector rule, in order: greppable, never folded like a table cell."""
    lines = [_line(f"Connector rules ({len(rules)}, first match wins):")]
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
            _line(
                f"  {number}. {rule.name}: {kind}, tenant {rule.tenant}, server "
                f"{rule.identity}; {criteria}"
            )
        )
    return lines


def _exemption_lines(exemptions: Sequence[Any]) -> list[Text]:
    """One line per exemption: whom it names, its days and its reason."""
    if not exemptions:
        return []
    lines = [_line(f"Exemptions ({len(exemptions)}, outside the pause quota):")]
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
        lines.append(_line(f"  {number}. {named}{since}: {each.describe()}"))
    return lines


def _schedule_table(policy: Policy) -> Table:
    table = _table(
        "stage", "from day", "days", "reported", "throttle min/h", "block min/h",
        title="Schedule (days since first detection, pauses excluded)",
    )  # fmt: skip
    for stage in policy.stage_table:
        start = policy.stage_table.start_of(stage.number).days + 1
        table.add_row(
            _t(stage.number),
            _t(start),
            _t("for ever" if stage.days is None else stage.days),
            _t("yes" if stage.report else "no"),
            _t(stage.throttle_minutes),
            _t(stage.block_minutes),
        )
    return table


def _peer_line(
    config: Any, policy: Policy, peer: str, name: str | None, subject: str | None
) -> Text:
    from tbes.adapters.config import normalise_ip

    if normalise_ip(peer) is None:
        raise _Fail(f"--peer {peer!r} is not an IP address")
    who = f"A connection from {peer}" + (f" ({name})" if name else "")
    who += f" with TLS subject {subject!r}" if subject else ""
    conn = config.connection(peer_ip=peer, peer_host=name, tls_subject=subject)
    number = next(
        (
            n
            for n, rule in enumerate(config.connectors, start=1)
            if rule.identity == conn.server_id and rule.kind is conn.kind
            and rule.tenant == conn.tenant
        ),
        None,
    )  # fmt: skip
    if number is None:
        return _line(f"{who}: no rule: never enforced (tenant {conn.tenant}).")
    rule = config.connectors[number - 1]
    mode = "enforced" if conn.kind in policy.connectors else "not enforced by this policy"
    return _line(
        f"{who}: rule {number} ({rule.name}): connector {conn.kind.value.lower()}, server "
        f"{conn.server_id}, tenant {conn.tenant}: {mode}."
    )


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
        return _guard(lambda: PostgresStore(spec))
    if source and not Path(spec).is_file():
        raise _Fail(f"{spec}: no such SQLite database")
    return _guard(lambda: SQLiteStore(spec, read_only=source))


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
        raise _Fail("FROM and TO are the same database")
    origin = _open_any(source, source=True)
    try:
        entries = _guard(lambda: list(origin.entries()))
        ledgers = _guard(lambda: list(origin.ledgers()))
    finally:
        origin.close()
    broken = [entry for entry in entries if isinstance(entry, UnreadableRow)]
    if broken:
        raise _Fail(f"nothing copied: {broken[0].error}")
    states = [entry for entry in entries if isinstance(entry, ServerState)]
    store = _open_any(target, source=False)
    try:
        held = _guard(lambda: sum(1 for _ in store.entries()) + sum(1 for _ in store.ledgers()))
        if held and not force:
            raise _Fail(
                f"nothing copied: {_store_label(target)} already holds {held} rows "
                "(use --force to replace those of the same servers and tenants)"
            )
        _guard(lambda: _copy_rows(store, states, ledgers))
        _guard(lambda: _verify_copy(store, states, ledgers))
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


# ---- tbes server show ---------------------------------------------------------------------


@cli.group("server")
def server_group() -> None:
    """One sending server as the store holds it."""


@server_group.command("show")
@click.argument("server")
@_db_option
@_at_option("Show the server as of this instant (default: now).")
@_policy_option
@_config_option
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

    With --config, also its exemptions and whether its connector is in monitor mode.
    """
    at = at or utc_now()
    config = _controls(config_file)
    policy = _policy(ctx, policy_name, at)
    store = _open_store(db, read_only=True)
    try:
        stored = _guard(lambda: store.get(server))
    finally:
        store.close()
    if stored is None:
        raise _Fail(f"no stored state for server {server!r} in {db}")
    state = stored.value
    exemptions = () if config is None else config.exemptions_for(state.server_id)
    decision = _guard(lambda: decide(state, at, policy, exemptions))
    if config is not None and config.monitors(state.server_id):
        decision = monitored(decision)
    console = _console()
    console.print(
        _line(
            f"Server {state.server_id} (tenant {state.tenant}): build {state.build or '-'}, "
            f"{state.status.value}; stored version {stored.version}."
        )
    )
    console.print(
        _line(
            f"First detected {_utc(state.first_detected)}, last seen {_utc(state.last_seen)}, "
            f"compliant since {_utc(state.compliant_since)}."
        )
    )
    console.print(_line(f"At {_utc(at)}: {decision.action.value}. {decision.reason}"))
    if decision.stage is not None:
        console.print(_line(_minutes_line(state.server_id, decision.stage, decision.paused)))
    change = "never" if decision.next_change is None else _utc(decision.next_change)
    console.print(_line(f"Next change: {change}."))
    if config is not None:
        mode = "monitor" if config.monitors(state.server_id) else "enforce"
        console.print(_line(f"Mode: {mode}."))
        for each in exemptions:
            since = "" if each.since is None else f" (from {each.since.isoformat()})"
            ended = " (ended)" if at >= each.end else ""
            console.print(_line(f"Exemption: {each.describe()}{since}{ended}."))
        if not exemptions:
            console.print("No exemptions.")
    if not state.pauses:
        console.print("No pauses.")
        return
    table = _table("first day", "last day", "days", "now", title="Pauses")
    for each in state.pauses:
        table.add_row(_t(each.start), _t(each.last_day), _t(each.days), _t(each.covers(at)))
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


# ---- tbes forget --------------------------------------------------------------------------


@cli.command()
@click.argument("server")
@_db_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def forget(server: str, db: Path, yes: bool) -> None:
    """Remove SERVER's stored state (a mistyped or decommissioned server).

    Its pause days stay charged to its tenant's quota: forgetting never refunds them. If
    the server sends again, it starts afresh.
    """
    store = _open_store(db)
    try:
        stored = _guard(lambda: store.get(server))
        if stored is None:
            raise _Fail(f"no stored state for server {server!r} in {db}: nothing forgotten")
        state = stored.value
        if not yes:
            click.confirm(
                printable(f"Forget server {server} (tenant {state.tenant}) in {db}?"), abort=True
            )
        _guard(lambda: store.delete(server, expected_version=stored.version))
        ledger = _guard(lambda: store.get_ledger(state.tenant))
    finally:
        store.close()
    charged = 0 if ledger is None else sum(p.days for p in ledger.value.pauses_for(server))
    click.echo(
        printable(
            f"Forgot server {server} (tenant {state.tenant}): its state is removed from {db}; "
            f"its {charged} pause days stay charged to tenant {state.tenant}."
        )
    )
