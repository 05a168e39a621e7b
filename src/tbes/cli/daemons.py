"""The daemon commands: ``tbes milter``, ``tbes policy`` and ``tbes serve``.

Each parses its options and hands them to :class:`tbes.adapters._daemon.Daemon`, which binds
every address before it logs that it listens, reloads on SIGHUP and drains on SIGTERM; every
failure is one line on stderr and exit code 2. The option names are what the systemd units
in ``contrib/systemd`` rely on.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import click

from tbes.adapters._daemon import Daemon, DaemonError, reason
from tbes.adapters._log_output import (
    DEFAULT_SYSLOG_SOCKET,
    FORMATS,
    TARGETS,
    configure_logging,
    restore_logging,
)
from tbes.adapters.listen import FORMS
from tbes.cli._app import Fail
from tbes.errors import TbesError

__all__ = ["milter", "policy", "serve"]


# What the commands share; kept so that systemd units can rely on them.
_HELP_DB = "The store: a SQLite file (created if missing) or a postgresql:// URL."


def _fail(message: str) -> Fail:
    return Fail(" ".join(message.split()))


def _options(function: Any) -> Any:
    decorators = [
        click.option(
            "--config",
            "config_path",
            required=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help="The adapter configuration (TOML); SIGHUP reads it again.",
        ),
        click.option("--db", required=True, metavar="PATH|URL", help=_HELP_DB),
        click.option(
            "--log-format",
            type=click.Choice(FORMATS),
            default="text",
            show_default=True,
            help="text: key=value pairs; json: one object per line.",
        ),
        click.option(
            "--log-target",
            type=click.Choice(TARGETS),
            default="stderr",
            show_default=True,
            help="Where log lines go.",
        ),
        click.option(
            "--syslog-socket",
            default=DEFAULT_SYSLOG_SOCKET,
            show_default=True,
            metavar="PATH",
            help="The syslog socket (--log-target syslog).",
        ),
        click.option(
            "--syslog-facility",
            default="mail",
            show_default=True,
            metavar="NAME",
            help="The syslog facility (--log-target syslog).",
        ),
        click.option(
            "--metrics",
            "metrics_at",
            default=None,
            metavar="HOST:PORT",
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (extra 'metrics').",
        ),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def run_command(
    *,
    config_path: Path,
    db: str,
    log_format: str,
    log_target: str,
    syslog_socket: str,
    syslog_facility: str,
    metrics_at: str | None,
    milter: str | None = None,
    policy: str | None = None,
) -> None:
    """What each daemon command does once click parsed it: every failure is one line, exit 2."""
    root = click.get_current_context().find_root().params
    try:
        daemon = Daemon(
            db=db,
            config_path=config_path,
            catalog_path=root.get("catalog_path"),
            milter=milter,
            policy=policy,
            metrics=metrics_at,
        )
    except (TbesError, ValueError) as error:
        raise _fail(reason(error)) from None
    logger = logging.getLogger()
    previous, level = list(logger.handlers), logger.level
    try:
        handler = configure_logging(
            fmt=log_format, target=log_target, syslog_socket=syslog_socket, facility=syslog_facility
        )
    except (ValueError, OSError) as error:
        raise _fail(f"cannot log to {log_target}: {reason(error)}") from None
    # A reload asked for while the store is still opening (systemd's ExecReload right after
    # start) must not kill the daemon, SIGHUP's default; the event loop handles it later.
    hangup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        # Opened once the log lines have their form: its warnings are lines like the rest.
        daemon.open()
    except DaemonError as error:
        signal.signal(signal.SIGHUP, hangup)
        restore_logging(handler, previous, level)
        raise _fail(str(error)) from None
    try:
        daemon.run()
    except DaemonError as error:
        raise _fail(str(error)) from None


@click.command("milter")
@click.option("--listen", required=True, metavar="SOCKET", help=f"Where the MTA connects: {FORMS}.")
@_options
def milter(listen: str, **options: Any) -> None:
    """Run the milter for Postfix or Sendmail until SIGTERM (SIGHUP: reload)."""
    run_command(milter=listen, **options)


@click.command("policy")
@click.option("--listen", required=True, metavar="SOCKET", help=f"Where Postfix connects: {FORMS}.")
@_options
def policy(listen: str, **options: Any) -> None:
    """Run the Postfix policy service until SIGTERM (SIGHUP: reload)."""
    run_command(policy=listen, **options)


@click.command("serve")
@click.option("--milter", "milter_at", metavar="SOCKET", help=f"Serve the milter on: {FORMS}.")
@click.option(
    "--policy",
    "policy_at",
    metavar="SOCKET",
    help=f"Serve the Postfix policy service on: {FORMS}.",
)
@_options
def serve(milter_at: str | None, policy_at: str | None, **options: Any) -> None:
    """Run the milter and/or the Postfix policy service, one enforcer, until SIGTERM."""
    if milter_at is None and policy_at is None:
        raise click.UsageError("give --milter SOCKET, --policy SOCKET or both")
    run_command(milter=milter_at, policy=policy_at, **options)
