"""The ``tbes responder`` command."""

from __future__ import annotations

from pathlib import Path

import click

from tbes.cli._app import Fail, cli, guarded

# ---- tbes responder -----------------------------------------------------------------------


@cli.command("responder")
@click.option("--listen", required=True, metavar="HOST:PORT", help="Where to accept check mail.")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The TOML file with the [responder] table (docs/self-check.md).",
)
@click.option(
    "--reply-via", required=True, metavar="HOST:PORT", help="The MTA that sends the replies."
)
@click.option(
    "--db",
    default=None,
    metavar="FILE|URL",
    help="SQLite file or postgresql:// URL whose tbes_counters table the rate limits share "
    "(default: in memory).",
)
def responder(listen: str, config_path: Path, reply_via: str, db: str | None) -> None:
    """Answer mail to the check addresses with what tbes reads from it (docs/self-check.md).

    Needs the smtp extra (aiosmtpd). Replies go to the envelope sender through --reply-via;
    never to a null sender, automatic or list mail, and at most once per sender per interval.
    """
    import logging

    from tbes.adapters.listen import parse_listen_address

    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        raise Fail("tbes responder needs aiosmtpd: pip install 'tbes[smtp]'") from None
    from tbes.adapters import responder as service
    from tbes.store.counters import open_counters

    address = guarded(lambda: parse_listen_address(listen))
    via = guarded(lambda: parse_listen_address(reply_via))
    if via.port is None or via.host is None:
        raise Fail(f"--reply-via must be HOST:PORT, got {reply_via!r}")
    config = guarded(lambda: service.load_responder_config(config_path))
    counters = guarded(lambda: open_counters(db))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    service.serve(address, config, counters, via)
