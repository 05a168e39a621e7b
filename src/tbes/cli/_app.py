"""The ``tbes`` command group and what its commands share: errors, parameter types,
options and output helpers.

A thin shell over the library (click for the command line, rich for the terminal): every
fact it prints comes from the core (:func:`~tbes.report.forecast`,
:func:`~tbes.report.report_row`, :func:`~tbes.decision.decide`, …) or the store. Two
decisions shaped it. Bad input never shows a traceback: every error the library or the
operating system raises for it (and every usage error) becomes one line on stderr and exit
code 2. And times are explicit: an instant needs a time zone (``Z`` or an offset), a date
alone means UTC midnight, so a forecast never depends on the machine's local zone.
"""

from __future__ import annotations

import datetime as dt
import importlib
import re
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tbes.catalog import Catalog
from tbes.errors import TbesError
from tbes.identity import host_of
from tbes.ledger import PauseLedger
from tbes.policy import Policy
from tbes.render._common import instant, printable
from tbes.report import ReportRow
from tbes.store import UnreadableRow
from tbes.store.sqlite import SQLiteStore
from tbes.version import ExchangeBuild

__all__ = ["cli", "main"]

_T = TypeVar("_T")

POLICIES = ("exchange_online", "exchange_online_2026", "exchange_online_2023", "supported_only")
"""The policy presets ``--policy`` accepts (see :meth:`tbes.policy.Policy.named`)."""

_DEFAULT_POLICY = "exchange_online"
DEFAULT_CATALOG_OUT = "tbes-catalog.json"
# Subcommands that live beside their shell module and are imported only when used, so that
# `tbes` works without their optional dependencies: name -> (module, attribute holding the
# click.Command, the extra that installs what it needs). Add new adapters' commands here.
_LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "milter": ("tbes.cli.daemons", "milter", "milter"),
    "policy": ("tbes.cli.daemons", "policy", "cli"),
    "serve": ("tbes.cli.daemons", "serve", "milter"),
}


# ---- errors: one line, exit code 2 --------------------------------------------------------


class Fail(click.ClickException):
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
            Fail(_one_line(exc.format_message())).show()
            sys.exit(2)
        except click.ClickException as exc:
            Fail(_one_line(exc.format_message())).show()
            sys.exit(2)
        except click.Abort:
            click.echo("tbes: aborted", err=True)
            sys.exit(1)
        except (TbesError, OSError, ValueError, sqlite3.Error) as exc:
            Fail(_one_line(_message(exc))).show()
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
            raise Fail(f"tbes {name} needs {missing}: install it with pip install 'tbes[{extra}]'")

        return unavailable
    assert isinstance(loaded, click.Command)
    return loaded


def guarded(work: Callable[[], _T]) -> _T:
    """Run ``work``, turning library and OS errors into :class:`Fail`."""
    try:
        return work()
    except (TbesError, OSError, ValueError, sqlite3.Error) as exc:
        raise Fail(_one_line(_message(exc))) from exc


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


INSTANT = _Instant()
DATE = _Date()
BUILD = _Build()
PAUSE = _PauseSpec()


# ---- shared pieces ------------------------------------------------------------------------


def make_console() -> Console:
    # A fixed width off a terminal keeps tables whole in files, pipes and tests.
    stream = sys.stdout
    width = None if stream.isatty() else 120
    # Lines of text never wrap (they stay greppable); tables fit the width.
    return Console(file=stream, highlight=False, width=width, soft_wrap=True)


def catalog_of(ctx: click.Context) -> Catalog:
    root = ctx.find_root()
    cached: Catalog | None = root.meta.get("tbes.catalog")
    if cached is not None:
        return cached
    path: Path | None = root.params.get("catalog_path")
    loaded = guarded(Catalog.default if path is None else lambda: Catalog.load(path))
    root.meta["tbes.catalog"] = loaded
    return loaded


def policy_of(ctx: click.Context, name: str, at: dt.datetime) -> Policy:
    # Presets read their releases from the operator's catalog (--catalog / $TBES_CATALOG);
    # supported_only judges support on the day of the decision.
    catalog = catalog_of(ctx)
    return guarded(lambda: Policy.named(name, on=at.astimezone(dt.UTC).date(), catalog=catalog))


def policy_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--policy",
        "policy_name",
        type=click.Choice(POLICIES),
        default=_DEFAULT_POLICY,
        show_default=True,
        help="Policy preset: what is compliant and how enforcement proceeds.",
    )(function)


def at_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--at", type=INSTANT, default=None, help=help_text)


def db_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        required=True,
        help="The tbes SQLite database.",
    )(function)


def config_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="The adapter configuration (TOML): show its exemptions and monitor mode.",
    )(function)


def controls(config_file: Path | None) -> Any:
    """The adapter configuration whose operator controls to show, or ``None``."""
    if config_file is None:
        return None
    from tbes.adapters.config import load_config

    return guarded(lambda: load_config(config_file))


def open_store(path: Path, *, read_only: bool = False) -> SQLiteStore:
    # Reading commands open read-only: they never add tables to, or change the journal mode
    # of, whatever file --db names, and they work on a read-only file.
    return guarded(lambda: SQLiteStore(path, read_only=read_only))


def resolve_server(store: SQLiteStore, server: str) -> str:
    """The canonical id ``server`` names: itself if stored, else the one server of that host.

    A server behind a connector is ``CONNECTOR/HOST``; a bare ``HOST`` is accepted when
    exactly one stored server has it. With several, the candidates are listed (escaped) and
    the command fails (exit 2); with none, ``server`` is returned as given, for the caller
    to refuse (or force).
    """
    if "/" in server or guarded(lambda: store.get(server)) is not None:
        return server
    host = server.strip().rstrip(".").lower()
    found = [
        entry.server_id
        for entry in guarded(lambda: list(store.entries()))
        if not isinstance(entry, UnreadableRow) and host_of(entry.server_id) == host
    ]
    if len(found) > 1:
        raise Fail(
            printable(
                f"{len(found)} stored servers have the host name {server!r}: "
                + ", ".join(found)
                + "; give one of these ids"
            )
        )
    return found[0] if found else server


def count(number: int, word: str) -> str:
    """``1 day``, ``2 days``: a count with its noun in the right number."""
    return f"{number} {word}" if number == 1 else f"{number} {word}s"


def unreadable_line(row: UnreadableRow) -> str:
    """The stderr line marking a row the report could not show; control characters escaped."""
    return "tbes: unreadable row, not in the report: " + printable(_one_line(row.error))


def text_cell(value: object) -> Text:
    """Data as rich Text, so that brackets in server ids are never read as markup, with
    control characters shown as escapes (:func:`~tbes.render._common.printable`)."""
    return Text("-" if value is None else printable(str(value)))


def text_line(text: str, style: str = "") -> Text:
    """A line to print that holds foreign text: escaped, and never read as markup."""
    return Text(printable(text), style=style)


def make_table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def utc_text(at: dt.datetime | None) -> str:
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


def milestones(row: ReportRow, title: str | None = None) -> Table:
    table = make_table("milestone", "instant (UTC)", title=title)
    table.add_row("first detected", text_cell(instant(row.first_detected)))
    table.add_row("throttling from", text_cell(instant(row.throttle_enabled)))
    table.add_row("blocking from", text_cell(instant(row.blocking_enabled)))
    table.add_row("fully blocked", text_cell(instant(row.full_block)))
    return table


def quota_line(ledger: PauseLedger, year: int, *, returned: int = 0) -> Text:
    back = f" ({count(returned, 'day')} returned)" if returned else ""
    return text_line(
        f"Quota of {ledger.tenant} in {year}: {ledger.used(year)} of {ledger.quota_days} days "
        f"used, {ledger.remaining(year)} remaining{back}."
    )
