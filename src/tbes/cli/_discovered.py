"""``tbes report --discovered``: the unmapped Exchange senders and a rule for each network."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from tbes.cli._app import Fail, guarded, open_store
from tbes.render._common import Sink, printable
from tbes.render.discovered import DISCOVERED_FORMATS, write_discovered

__all__ = ["report_discovered"]


def report_discovered(
    db: Path,
    fmt: str,
    output: Path | None,
    config: Any,
    write_whole: Any,
) -> None:
    """Write the discovered servers of ``db`` in ``fmt``; with ``config`` (an
    :class:`~tbes.adapters.config.AdapterConfig`), servers a rule now maps are left out and
    suggested names avoid its connectors'. ``write_whole(output, write)`` writes a file
    atomically."""
    if fmt not in DISCOVERED_FORMATS:
        raise Fail(f"--discovered writes {', '.join(DISCOVERED_FORMATS)}, not {fmt}")
    store = open_store(db, read_only=True)
    try:
        servers = guarded(store.discovered)
    finally:
        store.close()
    taken: tuple[str, ...] = ()
    if config is not None:
        taken = tuple(rule.name for rule in config.connectors)
        servers = [
            each
            for each in servers
            if config.connection(
                peer_ip=each.peer_ip, peer_host=each.verified_name, tls_subject=None
            ).connector
            is None
        ]

    def write(out: Sink) -> None:
        write_discovered(servers, fmt, out, taken=taken)

    if output is None:
        guarded(lambda: write(sys.stdout))
        return
    guarded(lambda: write_whole(output, write))
    click.echo(printable(f"Wrote the {fmt} list of {len(servers)} discovered servers to {output}."))
