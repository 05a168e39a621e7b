"""The discovered-servers report: the unmapped Exchange senders and the rules that would map them.

``tbes report --discovered`` writes it as a text table followed by the suggested
``[[connector]]`` rules, as JSON (``{"discovered": [...], "suggestions": [...]}``) or as
CSV (one row per server, its suggested connector named in a column). Everything read from
DNS or a header goes through :func:`~tbes.render._common.printable` (table, CSV) or
:func:`~tbes.render.json.dumps` (JSON), and a CSV cell that a spreadsheet would take for
a formula gets a leading ``'``, as in the main report; the TOML is safe by construction
(:func:`tbes.discovery.suggest`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence

from tbes.discovery import ConnectorSuggestion, DiscoveredServer, suggest
from tbes.errors import InvalidValueError
from tbes.render._common import NONE, Sink, instant, printable
from tbes.render.csv import FORMULA_STARTS
from tbes.render.json import dumps

__all__ = ["DISCOVERED_COLUMNS", "DISCOVERED_FORMATS", "write_discovered"]

DISCOVERED_FORMATS = ("table", "json", "csv")
"""The formats of the discovered-servers report."""

DISCOVERED_COLUMNS = (
    "peer",
    "verified_name",
    "sender_host",
    "build",
    "product",
    "first_status",
    "status",
    "first_seen",
    "last_seen",
    "messages",
    "suggested_connector",
)
"""The CSV header and the JSON keys of a server, in order."""

_HEADINGS = (
    "PEER",
    "VERIFIED NAME",
    "SENDER HOST",
    "BUILD",
    "PRODUCT",
    "FIRST STATUS",
    "STATUS",
    "FIRST SEEN",
    "LAST SEEN",
    "MESSAGES",
    "CONNECTOR",
)


def write_discovered(
    servers: Sequence[DiscoveredServer], fmt: str, out: Sink, *, taken: Iterable[str] = ()
) -> None:
    """Write ``servers`` (as :meth:`~tbes.store.base.RowStore.discovered` lists them) in
    format ``fmt`` to ``out``, with one suggestion per peer network (names not in
    ``taken``, the configured connectors). An unknown format raises InvalidValueError."""
    if fmt not in DISCOVERED_FORMATS:
        raise InvalidValueError(
            f"unknown format {fmt!r} for discovered servers: choose one of "
            + ", ".join(DISCOVERED_FORMATS)
        )
    suggestions = suggest(servers, taken=taken)
    named = {server.peer_ip: each.name for each in suggestions for server in each.servers}
    records = [_fields(server, named[server.peer_ip]) for server in servers]
    if fmt == "json":
        data = {
            "discovered": [dict(zip(DISCOVERED_COLUMNS, each, strict=True)) for each in records],
            "suggestions": [
                {"name": each.name, "network": str(each.network), "toml": each.toml()}
                for each in suggestions
            ],
        }
        out.write(dumps(data) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(DISCOVERED_COLUMNS)
        for each in records:
            writer.writerow(_csv_cell(value) for value in each)
    else:
        _table([_text_cells(server, named[server.peer_ip]) for server in servers], suggestions, out)


def _fields(server: DiscoveredServer, connector: str) -> tuple[str | int | None, ...]:
    return (
        server.peer_ip,
        server.verified_name,
        server.sender_host,
        str(server.build),
        server.build.product.label,
        server.first_status.value,
        server.last_status.value,
        server.first_seen.isoformat(),
        server.last_seen.isoformat(),
        server.messages,
        connector,
    )


def _csv_cell(value: str | int | None) -> str:
    if value is None:
        return ""
    text = str(value)
    escaped = printable(text)
    return "'" + escaped if text.startswith(FORMULA_STARTS) else escaped


def _table(cells: list[tuple[str, ...]], suggestions: list[ConnectorSuggestion], out: Sink) -> None:
    if not cells:
        out.write("No unmapped Exchange servers discovered.\n")
        return
    rows = [_HEADINGS, *cells]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADINGS))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        out.write("\n")
    out.write(
        f"\n{len(suggestions)} suggested [[connector]] rule"
        f"{'' if len(suggestions) == 1 else 's'}, one per peer network "
        "(paste into the configuration, then reload):\n\n"
    )
    out.write("\n".join(each.toml() for each in suggestions))


def _text_cells(server: DiscoveredServer, connector: str) -> tuple[str, ...]:
    return (
        server.peer_ip,
        NONE if server.verified_name is None else printable(server.verified_name),
        NONE if server.sender_host is None else printable(server.sender_host),
        str(server.build),
        server.build.product.label,
        server.first_status.value,
        server.last_status.value,
        instant(server.first_seen),
        instant(server.last_seen),
        str(server.messages),
        connector,
    )
