"""Catalog files: our JSON schema and Microsoft's build list CSV, read and written as rows.

Decision: this module knows the file formats and nothing of :class:`~tbes.catalog.Release`
or :class:`~tbes.catalog.Catalog`; it turns text into checked rows (and rows into text), and
:mod:`tbes.catalog` makes releases of them. Every fault raises
:class:`~tbes.errors.CatalogError` naming the file (``source``), the line or release and the
problem. Only :func:`read_text` and :func:`write_atomically` touch the file system.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from tbes._lines import ON_PREMISES
from tbes.errors import CatalogError, InvalidBuildError
from tbes.version import ExchangeBuild, Product

__all__ = [
    "SCHEMA",
    "CsvRow",
    "format_catalog_json",
    "parse_catalog_json",
    "parse_microsoft_csv",
    "read_text",
    "write_atomically",
]

SCHEMA = 1
"""The catalog file's schema version; a file with another version is refused, not guessed at."""
_FILE_KEYS = frozenset({"schema", "as_of", "releases"})
_RELEASE_KEYS = frozenset({"product", "name", "build", "date", "kb"})
# "esu" came later: a file without it is still schema 1 (the mark is then derived).
_RELEASE_KEYS_ESU = _RELEASE_KEYS | {"esu"}

_CSV_HEADER = ("Product Name", "Build Number", "Date", "KB", "Blog")
_CSV_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")


# ---- I/O -------------------------------------------------------------------------------------


def read_text(path: str | os.PathLike[str], what: str, encoding: str) -> str:
    """The text of the ``what`` file at ``path`` (I/O); CatalogError if unreadable."""
    try:
        return Path(path).read_text(encoding=encoding)
    except OSError as exc:
        raise CatalogError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not {encoding} text: {exc}") from exc


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path``, replacing any file there atomically (I/O)."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise CatalogError(f"cannot write the catalog {target}: {exc}") from exc


# ---- our JSON schema -------------------------------------------------------------------------


def parse_catalog_json(text: str | bytes, source: str) -> tuple[list[dict[str, Any]], _dt.date]:
    """The release rows (each with exactly a release's keys) and ``as_of`` of a catalog file."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CatalogError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogError(
            f"{source}: expected a JSON object with 'schema', 'as_of' and 'releases', "
            f"got {type(data).__name__}"
        )
    schema = data.get("schema")
    if type(schema) is not int or schema != SCHEMA:
        raise CatalogError(
            f"{source}: unsupported catalog schema {schema!r} (this tbes reads schema {SCHEMA})"
        )
    if set(data) != _FILE_KEYS:
        raise CatalogError(
            f"{source}: expected exactly the keys {sorted(_FILE_KEYS)}, got {sorted(data)}"
        )
    as_of = data["as_of"]
    try:
        day = _dt.date.fromisoformat(as_of) if isinstance(as_of, str) else None
    except ValueError:
        day = None
    if day is None:
        raise CatalogError(f"{source}: as_of must be an ISO date like '2026-08-11', got {as_of!r}")
    rows = data["releases"]
    if not isinstance(rows, list):
        raise CatalogError(f"{source}: releases must be a list, got {rows!r:.80}")
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or set(row) not in (_RELEASE_KEYS, _RELEASE_KEYS_ESU):
            raise CatalogError(
                f"{source}: release #{n}: expected an object with exactly the keys "
                f"{sorted(_RELEASE_KEYS)} (and optionally 'esu'), got {row!r:.120}"
            )
    return rows, day


def format_catalog_json(rows: Iterable[Mapping[str, Any]], as_of: _dt.date) -> str:
    """A catalog file's text: one release per line, so that diffs stay readable."""
    lines = ",\n  ".join(json.dumps(dict(row), ensure_ascii=False) for row in rows)
    head = f'{{\n "schema": {SCHEMA},\n "as_of": "{as_of.isoformat()}",\n'
    return f'{head} "releases": [\n  {lines}\n ]\n}}\n'


# ---- Microsoft's CSV -------------------------------------------------------------------------


class CsvRow(NamedTuple):
    """One release row of Microsoft's list, parsed; ``where`` names its file and line."""

    where: str
    product: Product
    name: str
    build: ExchangeBuild
    date: _dt.date
    kb: str | None


def parse_microsoft_csv(text: str, source: str) -> list[CsvRow]:
    """The rows of Microsoft's build list (``Product Name,Build Number,Date,KB,Blog``).

    Strict: a malformed row, a build listed twice or a file without releases raises
    :class:`~tbes.errors.CatalogError` naming the file, the line and the problem.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = _next_row(reader, source)
    if header is None or tuple(cell.strip() for cell in header) != _CSV_HEADER:
        raise CatalogError(
            f"{source}, line 1: expected the header {','.join(_CSV_HEADER)!r}, "
            f"got {','.join(header or [])!r}"
        )
    rows: list[CsvRow] = []
    seen: dict[ExchangeBuild, int] = {}
    while (cells := _next_row(reader, source)) is not None:
        if not any(cell.strip() for cell in cells):
            continue
        row = _csv_row(cells, f"{source}, line {reader.line_num}")
        if row.build in seen:
            raise CatalogError(
                f"{row.where}: build {row.build} is already listed on line {seen[row.build]}"
            )
        seen[row.build] = reader.line_num
        rows.append(row)
    if not rows:
        raise CatalogError(f"{source}: no releases after the header")
    return rows


def _next_row(reader: Iterator[list[str]], source: str) -> list[str] | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        line = getattr(reader, "line_num", "?")
        raise CatalogError(f"{source}, line {line}: malformed CSV: {exc}") from exc


def _csv_row(cells: list[str], where: str) -> CsvRow:
    if len(cells) != len(_CSV_HEADER):
        raise CatalogError(
            f"{where}: expected {len(_CSV_HEADER)} columns ({','.join(_CSV_HEADER)}), "
            f"got {len(cells)}: {cells!r}"
        )
    title, build_text, date_text, kb, _blog = (cell.strip() for cell in cells)
    product, name = _split_title(title, where)
    try:
        build = ExchangeBuild.parse(build_text)
    except InvalidBuildError as exc:
        raise CatalogError(f"{where}: {exc}") from exc
    if build.product is not product:
        raise CatalogError(
            f"{where}: build {build} is {build.product.label}, but the row names {product.label}"
        )
    return CsvRow(where, product, name, build, _csv_date(date_text, where), kb or None)


def _split_title(title: str, where: str) -> tuple[Product, str]:
    for product in ON_PREMISES:
        prefix = product.label + " "
        if title.startswith(prefix) and title[len(prefix) :].strip():
            return product, title[len(prefix) :].strip()
    raise CatalogError(
        f"{where}: product name {title!r} is not an Exchange product followed by a release "
        "name (like 'Exchange 2016 CU23 Oct25SU')"
    )


def _csv_date(text: str, where: str) -> _dt.date:
    match = _CSV_DATE.fullmatch(text)
    try:
        if match is None:
            raise ValueError("not M/D/YYYY")
        month, day, year = (int(part) for part in match.groups())
        return _dt.date(year, month, day)
    except ValueError as exc:
        raise CatalogError(f"{where}: date {text!r} is not a valid M/D/YYYY date ({exc})") from exc
