"""Build catalog, baselines and compliance assessment.

The catalog holds every Exchange build Microsoft published (:class:`Release`, :class:`Catalog`);
a :class:`Baseline` says which builds a policy accepts; :func:`assess` gives the verdict for
one build. Two decisions shape it. A build is judged by its *line* — ``major.minor.build``
for Exchange 2013 and later, the service pack ``major.minor`` for 2007 and 2010, whose rollups
change the build number — never by an exact lookup, so an unpublished or newer build gets the
same answer as its published neighbours. And anything that is not on-premises Exchange fails
open (``NOT_APPLICABLE``): a forged or cloud build is never enforced. The catalog file uses
our own JSON schema; files are read only by the explicit I/O entry points :meth:`Catalog.load`
and :meth:`Catalog.from_microsoft_csv`, everything else is pure. The packaged catalog is no
file: it is the generated module ``tbes._catalog_data`` (``tools/build_catalog.py`` writes it
from Microsoft's CSV), turned into a :class:`Catalog` once, on first use of
:meth:`Catalog.default`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import enum
import functools
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs

from tbes.errors import (
    CatalogError,
    InvalidBuildError,
    InvalidValueError,
    NaiveDatetimeError,
    TbesError,
)
from tbes.version import ExchangeBuild, Product

__all__ = ["Assessment", "Baseline", "Catalog", "Compliance", "Release", "assess"]

# The catalog file's schema version; a file with another version is refused, not guessed at.
_SCHEMA = 1
_FILE_KEYS = frozenset({"schema", "as_of", "releases"})
_RELEASE_KEYS = frozenset({"product", "name", "build", "date", "kb"})

_CSV_HEADER = ("Product Name", "Build Number", "Date", "KB", "Blog")
_CSV_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")

# Release names as Microsoft writes them. A *base* release starts a line (RTM, SPn, "SPn RTM",
# CUn, optionally with a note such as "CU13 (2023H1)"); every other name is an update on one.
_BASE_NAME = re.compile(r"(?:RTM|SP\d+(?: RTM)?|CU\d+)(?: \([^()]*\))?")
_PREVIEW_NAME = re.compile(r"Preview\b.*")
_SP_RTM = re.compile(r"^(SP\d+) RTM$")
_KB = re.compile(r"KB\d+")
_MAX_NAME = 100

# Exchange 2007 and 2010 rollups raise the build number, so their line is the service pack.
_SERVICE_PACK_MAJORS = frozenset({8, 14})

_ON_PREMISES = tuple(product for product in Product if product.on_premises)  # oldest first
_PRODUCT_RANK = {product: rank for rank, product in enumerate(Product)}

# Microsoft's lifecycle dates (SPEC section 3); SE follows the Modern Lifecycle Policy.
_END_OF_SUPPORT: Mapping[Product, _dt.date] = {
    Product.EXCHANGE_2000: _dt.date(2011, 1, 11),
    Product.EXCHANGE_2003: _dt.date(2014, 4, 8),
    Product.EXCHANGE_2007: _dt.date(2017, 4, 11),
    Product.EXCHANGE_2010: _dt.date(2020, 10, 13),
    Product.EXCHANGE_2013: _dt.date(2023, 4, 11),
    Product.EXCHANGE_2016: _dt.date(2025, 10, 14),
    Product.EXCHANGE_2019: _dt.date(2025, 10, 14),
}

_Line = tuple[int, ...]


def _line_of(build: ExchangeBuild) -> _Line:
    if build.major in _SERVICE_PACK_MAJORS:
        return (build.major, build.minor)
    return (build.major, build.minor, build.build)


class Compliance(enum.Enum):
    """How a build stands against a baseline."""

    COMPLIANT = "COMPLIANT"
    OUTDATED = "OUTDATED"
    UNSUPPORTED = "UNSUPPORTED"
    NOT_APPLICABLE = "NOT_APPLICABLE"


# ---------------------------------------------------------------------------------------------
# Releases


def _check_product(_: object, __: attrs.Attribute[Product], value: Product) -> None:
    if not isinstance(value, Product) or not value.on_premises:
        raise CatalogError(f"a release's product must be an on-premises Product, got {value!r}")


def _check_name(_: object, __: attrs.Attribute[str], value: str) -> None:
    valid = (
        isinstance(value, str)
        and 0 < len(value) <= _MAX_NAME
        and value == value.strip()
        and value.isprintable()
    )
    if not valid:
        raise CatalogError(
            f"a release name must be 1 to {_MAX_NAME} printable characters without surrounding "
            f"white space (like 'CU23 Oct25SU'), got {value!r}"
        )


def _check_build(_: object, __: attrs.Attribute[ExchangeBuild], value: ExchangeBuild) -> None:
    if not isinstance(value, ExchangeBuild):
        raise CatalogError(f"a release's build must be an ExchangeBuild, got {value!r}")


def _check_date(_: object, attribute: attrs.Attribute[_dt.date], value: _dt.date) -> None:
    # A datetime is a date too, but comparing one with a date raises; refuse it here.
    if type(value) is not _dt.date:
        raise CatalogError(f"{attribute.name} must be a datetime.date, got {value!r}")


def _check_kb(_: object, __: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not (isinstance(value, str) and _KB.fullmatch(value)):
        raise CatalogError(f"a KB number looks like 'KB5066369', got {value!r}")


@attrs.frozen
class Release:
    """One published Exchange build: an RTM, service pack, rollup, CU, SU or hotfix update."""

    product: Product = attrs.field(validator=_check_product)
    name: str = attrs.field(validator=_check_name)
    build: ExchangeBuild = attrs.field(validator=_check_build)
    date: _dt.date = attrs.field(validator=_check_date)
    kb: str | None = attrs.field(default=None, validator=_check_kb)

    def __attrs_post_init__(self) -> None:
        if self.build.product is not self.product:
            raise CatalogError(
                f"release {self.name!r}: build {self.build} is {self.build.product.label}, "
                f"not {self.product.label}"
            )

    @property
    def title(self) -> str:
        """Product and release name as Microsoft's list writes them (``Exchange 2016 CU23``)."""
        return f"{self.product.label} {self.name}"

    @property
    def is_base(self) -> bool:
        """Whether this release starts a line: an RTM, a service pack or a cumulative update."""
        return _BASE_NAME.fullmatch(self.name) is not None

    @property
    def update(self) -> str | None:
        """The update's own name (``Oct25SU``, ``RU8v2``); None for a base release or preview."""
        if self.is_base or _is_preview(self):
            return None
        return self.name.rsplit(" ", 1)[-1]


def _is_preview(release: Release) -> bool:
    return _PREVIEW_NAME.fullmatch(release.name) is not None


# ---------------------------------------------------------------------------------------------
# Catalog


@attrs.frozen
class _Index:
    """Lookups precomputed once per catalog, so every query is a dict access."""

    by_build: Mapping[ExchangeBuild, Release]
    base_by_line: Mapping[_Line, Release]
    # Per product, its lines oldest first, each line's releases by build; previews left out,
    # as Microsoft never supports a preview in production.
    lines: Mapping[Product, tuple[tuple[Release, ...], ...]]
    latest: Mapping[Product, Release]


def _index_of(catalog: Catalog) -> _Index:
    by_build: dict[ExchangeBuild, Release] = {}
    lines: dict[Product, dict[_Line, list[Release]]] = {}
    for release in catalog.releases:  # sorted by build
        if release.build in by_build:
            raise CatalogError(
                f"build {release.build} is listed twice: as {by_build[release.build].name!r} "
                f"and as {release.name!r}"
            )
        by_build[release.build] = release
        if not _is_preview(release):
            product_lines = lines.setdefault(release.product, {})
            product_lines.setdefault(_line_of(release.build), []).append(release)
    base_by_line: dict[_Line, Release] = {}
    for product_lines in lines.values():
        for line, members in product_lines.items():
            bases = [release for release in members if release.is_base]
            if bases:
                base_by_line[line] = bases[0]
    latest = {release.product: release for release in catalog.releases}
    return _Index(
        by_build=by_build,
        base_by_line=base_by_line,
        lines={
            product: tuple(tuple(members) for _, members in sorted(product_lines.items()))
            for product, product_lines in lines.items()
        },
        latest=latest,
    )


def _sorted_releases(value: Iterable[Release]) -> tuple[Release, ...]:
    releases = tuple(value)
    for release in releases:
        if not isinstance(release, Release):
            raise CatalogError(f"a catalog holds Release values, got {release!r}")
    return tuple(sorted(releases, key=lambda release: release.build))


def _count(releases: tuple[Release, ...]) -> str:
    return f"<{len(releases)} releases>"


@attrs.frozen
class Catalog:
    """Every published Exchange build, with lifecycle dates and fast lookups by build.

    Build one from the packaged data (:meth:`default`), an override file (:meth:`load`) or
    Microsoft's CSV (:meth:`from_microsoft_csv`); the last two read files, nothing else here
    does. Releases are kept sorted by build; ``as_of`` is the day the catalog was current.
    """

    releases: tuple[Release, ...] = attrs.field(converter=_sorted_releases, repr=_count)
    as_of: _dt.date = attrs.field(validator=_check_date)
    _index: _Index = attrs.field(
        init=False, eq=False, repr=False, default=attrs.Factory(_index_of, takes_self=True)
    )

    @as_of.validator
    def _as_of_covers_releases(self, _: attrs.Attribute[_dt.date], value: _dt.date) -> None:
        newest = max((release.date for release in self.releases), default=value)
        if newest > value:
            raise CatalogError(f"as_of {value} is older than the newest release, of {newest}")

    # -- I/O entry points ---------------------------------------------------------------------

    @classmethod
    def default(cls) -> Catalog:
        """The catalog packaged with tbes: built on the first call, the same object after."""
        return _packaged_catalog()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Catalog:
        """Read a catalog file written by :meth:`dump`, such as an operator's override (I/O)."""
        return cls.loads(_read_text(path, "catalog", "utf-8"), source=str(path))

    @classmethod
    def from_microsoft_csv(cls, path: str | os.PathLike[str]) -> Catalog:
        """Import Microsoft's build list CSV (``Product Name,Build Number,Date,KB,Blog``; I/O).

        Strict: a malformed row raises :class:`~tbes.errors.CatalogError` naming the file, the
        line and the problem. ``as_of`` is the newest release date in the file.
        """
        return _parse_microsoft_csv(_read_text(path, "CSV", "utf-8-sig"), source=str(path))

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_json` to ``path``, replacing any file there atomically (I/O)."""
        target = Path(path)
        temporary = target.with_name(f".{target.name}.tmp")
        try:
            temporary.write_text(self.to_json(), encoding="utf-8")
            os.replace(temporary, target)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise CatalogError(f"cannot write the catalog {target}: {exc}") from exc

    # -- pure (de)serialisation ---------------------------------------------------------------

    @classmethod
    def loads(cls, text: str | bytes, *, source: str = "<string>") -> Catalog:
        """Parse catalog JSON; any problem raises CatalogError naming ``source`` and the fault."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CatalogError(f"{source}: not valid JSON: {exc}") from exc
        rows, as_of = _check_file(data, source)
        releases = [
            _structure_release(row, f"{source}: release #{n}") for n, row in enumerate(rows, 1)
        ]
        try:
            return cls(releases=releases, as_of=as_of)
        except CatalogError as exc:
            raise CatalogError(f"{source}: {exc}") from exc

    def to_json(self) -> str:
        """The catalog as JSON in tbes's schema, one release per line so diffs stay readable."""
        from tbes.serde import converter  # lazily: serde may import this module

        rows = ",\n  ".join(
            json.dumps(converter.unstructure(release), ensure_ascii=False)
            for release in self.releases
        )
        head = f'{{\n "schema": {_SCHEMA},\n "as_of": "{self.as_of.isoformat()}",\n'
        return f'{head} "releases": [\n  {rows}\n ]\n}}\n'

    # -- lookups ------------------------------------------------------------------------------

    def release(self, build: ExchangeBuild) -> Release | None:
        """The release published as exactly this build, or None (InvalidBuildError if no build)."""
        if not isinstance(build, ExchangeBuild):
            raise InvalidBuildError(f"build must be an ExchangeBuild, got {build!r:.80}")
        return self._index.by_build.get(build)

    def base_release(self, build: ExchangeBuild) -> Release | None:
        """The RTM, service pack or CU whose line ``build`` is on, or None if no line matches.

        The line is ``major.minor.build`` (``15.1.2507.*`` is 2016 CU23), or for Exchange 2007
        and 2010 the service pack ``major.minor`` (``14.3.*`` is 2010 SP3). Builds the catalog
        never heard of (a newer SU, an id between two rollups) still find their line.
        A ``build`` that is no :class:`ExchangeBuild` raises :class:`InvalidBuildError`.
        """
        if not isinstance(build, ExchangeBuild):
            raise InvalidBuildError(f"build must be an ExchangeBuild, got {build!r:.80}")
        return self._index.base_by_line.get(_line_of(build))

    def latest(self, product: Product) -> Release:
        """The product's highest published build; CatalogError if the catalog has none."""
        if not isinstance(product, Product):
            raise InvalidValueError(f"product must be a Product, got {product!r:.80}")
        latest = self._index.latest.get(product)
        if latest is None:
            raise CatalogError(
                f"the catalog (as of {self.as_of}) has no releases of {product.label}"
            )
        return latest

    def end_of_support(self, product: Product) -> _dt.date | None:
        """Microsoft's end-of-support date for the product, or None (SE, cloud, unknown)."""
        if not isinstance(product, Product):
            raise InvalidValueError(f"product must be a Product, got {product!r:.80}")
        return _END_OF_SUPPORT.get(product)

    def _latest(self, product: Product) -> Release | None:
        return self._index.latest.get(product)

    def _lines(self, product: Product) -> tuple[tuple[Release, ...], ...]:
        return self._index.lines.get(product, ())


@functools.cache
def _packaged_catalog() -> Catalog:
    # Imported here, not at the top: only a caller of Catalog.default() pays for 340 rows.
    import tbes._catalog_data as packaged

    try:
        releases = [
            Release(
                Product(product), name, ExchangeBuild.parse(build), _dt.date.fromisoformat(day), kb
            )
            for product, name, build, day, kb in packaged.RELEASES
        ]
        return Catalog(releases=releases, as_of=_dt.date.fromisoformat(packaged.AS_OF))
    except (TbesError, ValueError) as exc:
        raise CatalogError(f"the packaged catalog (tbes._catalog_data) is corrupt: {exc}") from exc


def _read_text(path: str | os.PathLike[str], what: str, encoding: str) -> str:
    try:
        return Path(path).read_text(encoding=encoding)
    except OSError as exc:
        raise CatalogError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not {encoding} text: {exc}") from exc


def _check_file(data: Any, source: str) -> tuple[list[Any], _dt.date]:
    if not isinstance(data, dict):
        raise CatalogError(
            f"{source}: expected a JSON object with 'schema', 'as_of' and 'releases', "
            f"got {type(data).__name__}"
        )
    schema = data.get("schema")
    if type(schema) is not int or schema != _SCHEMA:
        raise CatalogError(
            f"{source}: unsupported catalog schema {schema!r} (this tbes reads schema {_SCHEMA})"
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
    if not isinstance(data["releases"], list):
        raise CatalogError(f"{source}: releases must be a list, got {data['releases']!r:.80}")
    return data["releases"], day


def _structure_release(row: Any, where: str) -> Release:
    from tbes.serde import converter  # lazily: serde may import this module

    if not isinstance(row, dict) or set(row) != _RELEASE_KEYS:
        raise CatalogError(
            f"{where}: expected an object with exactly the keys {sorted(_RELEASE_KEYS)}, "
            f"got {row!r:.120}"
        )
    try:
        return converter.structure(row, Release)
    except cattrs.ClassValidationError as exc:
        problems = cattrs.transform_error(exc, path="release", format_exception=_describe_error)
        raise CatalogError(f"{where}: {'; '.join(problems)}") from exc
    except (TbesError, ValueError, TypeError) as exc:
        raise CatalogError(f"{where}: {exc}") from exc


def _describe_error(exc: BaseException, _: type | None) -> str:
    return str(exc) or type(exc).__name__


def _parse_microsoft_csv(text: str, *, source: str) -> Catalog:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = _next_row(reader, source)
    if header is None or tuple(cell.strip() for cell in header) != _CSV_HEADER:
        raise CatalogError(
            f"{source}, line 1: expected the header {','.join(_CSV_HEADER)!r}, "
            f"got {','.join(header or [])!r}"
        )
    releases: list[Release] = []
    seen: dict[ExchangeBuild, int] = {}
    while (row := _next_row(reader, source)) is not None:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{source}, line {reader.line_num}"
        release = _release_from_row(row, where)
        if release.build in seen:
            raise CatalogError(
                f"{where}: build {release.build} is already listed on line {seen[release.build]}"
            )
        seen[release.build] = reader.line_num
        releases.append(release)
    if not releases:
        raise CatalogError(f"{source}: no releases after the header")
    return Catalog(releases=releases, as_of=max(release.date for release in releases))


def _next_row(reader: Iterator[list[str]], source: str) -> list[str] | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        line = getattr(reader, "line_num", "?")
        raise CatalogError(f"{source}, line {line}: malformed CSV: {exc}") from exc


def _release_from_row(row: list[str], where: str) -> Release:
    if len(row) != len(_CSV_HEADER):
        raise CatalogError(
            f"{where}: expected {len(_CSV_HEADER)} columns ({','.join(_CSV_HEADER)}), "
            f"got {len(row)}: {row!r}"
        )
    title, build_text, date_text, kb, _blog = (cell.strip() for cell in row)
    product, name = _split_title(title, where)
    try:
        build = ExchangeBuild.parse(build_text)
    except InvalidBuildError as exc:
        raise CatalogError(f"{where}: {exc}") from exc
    if build.product is not product:
        raise CatalogError(
            f"{where}: build {build} is {build.product.label}, but the row names {product.label}"
        )
    try:
        return Release(product, name, build, _csv_date(date_text, where), kb or None)
    except CatalogError as exc:
        raise CatalogError(f"{where}: {exc}") from exc


def _split_title(title: str, where: str) -> tuple[Product, str]:
    for product in _ON_PREMISES:
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


# ---------------------------------------------------------------------------------------------
# Baselines


class _Minimum(Mapping[Product, tuple[ExchangeBuild, ...]]):
    """An immutable, hashable mapping of product to minimum builds, in product order."""

    __slots__ = ("_items", "_lookup")

    def __init__(self, items: tuple[tuple[Product, tuple[ExchangeBuild, ...]], ...]) -> None:
        self._items = items
        self._lookup = dict(items)

    def __getitem__(self, product: Product) -> tuple[ExchangeBuild, ...]:
        return self._lookup[product]

    def __iter__(self) -> Iterator[Product]:
        return (product for product, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Minimum):
            return self._items == other._items
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return repr(self._lookup)


def _freeze_minimum(
    value: Mapping[Product, Iterable[ExchangeBuild]],
) -> Mapping[Product, tuple[ExchangeBuild, ...]]:
    if isinstance(value, _Minimum):
        return value
    if not isinstance(value, Mapping):
        raise CatalogError(f"a baseline minimum maps products to builds, got {value!r}")
    items = []
    for product, builds in value.items():
        if not isinstance(product, Product) or not product.on_premises:
            raise CatalogError(
                f"a baseline minimum is keyed by on-premises products, got {product!r}"
            )
        frozen = _minimum_builds(product, builds)
        if frozen:  # a product without minimum builds has no minimum at all
            items.append((product, frozen))
    items.sort(key=lambda item: _PRODUCT_RANK[item[0]])
    return _Minimum(tuple(items))


def _minimum_builds(product: Product, builds: Iterable[ExchangeBuild]) -> tuple[ExchangeBuild, ...]:
    if isinstance(builds, ExchangeBuild | str) or not isinstance(builds, Iterable):
        raise CatalogError(
            f"the minimum of {product.label} must be a tuple of builds, got {builds!r}"
        )
    found = tuple(builds)
    for build in found:
        if not isinstance(build, ExchangeBuild):
            raise CatalogError(f"the minimum of {product.label} holds {build!r}, not a build")
        if build.product is not product:
            raise CatalogError(
                f"minimum {build} listed under {product.label} is a build of {build.product.label}"
            )
    return tuple(sorted(set(found)))


def _freeze_products(value: Iterable[Product]) -> frozenset[Product]:
    products = frozenset(value)
    for product in products:
        if not isinstance(product, Product):
            raise CatalogError(f"unsupported products must be Product values, got {product!r}")
    return products


@attrs.frozen
class Baseline:
    """What counts as compliant: minimum builds per product and unsupported products.

    ``minimum`` is an immutable mapping (builds sorted, products without builds dropped), so
    baselines compare and hash by value.
    """

    minimum: Mapping[Product, tuple[ExchangeBuild, ...]] = attrs.field(converter=_freeze_minimum)
    unsupported: frozenset[Product] = attrs.field(converter=_freeze_products)

    @classmethod
    def exchange_online_2023(cls) -> Baseline:
        """Exchange 2007 and older unsupported; everything newer compliant."""
        return cls(
            minimum={},
            unsupported=frozenset(
                {Product.EXCHANGE_2000, Product.EXCHANGE_2003, Product.EXCHANGE_2007}
            ),
        )

    @classmethod
    def exchange_online_2026(cls) -> Baseline:
        """Exchange 2013 and older unsupported; 2016/2019 need the October 2025 SU."""
        return cls(
            minimum={
                Product.EXCHANGE_2016: (ExchangeBuild(15, 1, 2507, 61),),
                Product.EXCHANGE_2019: (
                    ExchangeBuild(15, 2, 1544, 36),
                    ExchangeBuild(15, 2, 1748, 39),
                ),
            },
            unsupported=frozenset(
                {
                    Product.EXCHANGE_2000,
                    Product.EXCHANGE_2003,
                    Product.EXCHANGE_2007,
                    Product.EXCHANGE_2010,
                    Product.EXCHANGE_2013,
                }
            ),
        )

    @classmethod
    def supported_only(cls, on: _dt.date, catalog: Catalog | None = None) -> Baseline:
        """Products past end of support unsupported; minimum = latest SU per CU line.

        A product is unsupported once its end of support is before ``on``. For the others,
        each line still serviced on ``on`` needs its newest build released on or before
        ``on``. A line is still serviced when it is the product's newest line, or the one
        before it (Microsoft's N-1) as long as it got an update in the same month as the
        newest line's latest update. ``catalog`` defaults to :meth:`Catalog.default`, the
        packaged catalog.
        """
        day = _utc_day(on)
        known = Catalog.default() if catalog is None else catalog
        unsupported = {
            product
            for product in _ON_PREMISES
            if (end := known.end_of_support(product)) is not None and end < day
        }
        minimum = {
            product: _serviced_minimums(known._lines(product), day)
            for product in _ON_PREMISES
            if product not in unsupported
        }
        return cls(minimum=minimum, unsupported=unsupported)


def _utc_day(on: _dt.date) -> _dt.date:
    if isinstance(on, _dt.datetime):
        if on.utcoffset() is None:
            raise NaiveDatetimeError(f"expected a date or an aware datetime, got {on!r}")
        return on.astimezone(_dt.UTC).date()
    if not isinstance(on, _dt.date):
        raise CatalogError(f"expected a date, got {on!r}")
    return on


def _serviced_minimums(
    lines: tuple[tuple[Release, ...], ...], day: _dt.date
) -> tuple[ExchangeBuild, ...]:
    released = [kept for line in lines if (kept := tuple(r for r in line if r.date <= day))]
    if not released:
        return ()
    serviced = [released[-1]]
    if len(released) > 1 and _still_serviced(released[-2], newest=released[-1]):
        serviced.append(released[-2])
    # Each line's releases are sorted by build: its last one is its newest update.
    return tuple(line[-1].build for line in serviced)


def _still_serviced(previous: tuple[Release, ...], *, newest: tuple[Release, ...]) -> bool:
    updates = [release.date for release in newest if not release.is_base]
    if not updates:
        return True  # the newest line is brand new: N-1 is what most servers still run
    last, previous_last = max(updates), max(release.date for release in previous)
    # Same month, not same day: the 2007/2010 rollups of one wave came out days apart.
    return (previous_last.year, previous_last.month) >= (last.year, last.month)


# ---------------------------------------------------------------------------------------------
# Assessment


def _build_tuple(value: Iterable[ExchangeBuild]) -> tuple[ExchangeBuild, ...]:
    builds = tuple(value)
    for build in builds:
        if not isinstance(build, ExchangeBuild):
            raise CatalogError(f"recommended builds must be ExchangeBuild values, got {build!r}")
    return builds


@attrs.frozen
class Assessment:
    """The verdict on one build: status, product, known release, what to install, and why."""

    status: Compliance = attrs.field(validator=attrs.validators.instance_of(Compliance))
    product: Product = attrs.field(validator=attrs.validators.instance_of(Product))
    release: Release | None = attrs.field(
        validator=attrs.validators.optional(attrs.validators.instance_of(Release))
    )
    recommended: tuple[ExchangeBuild, ...] = attrs.field(converter=_build_tuple)
    reason: str = attrs.field(validator=attrs.validators.instance_of(str))


def assess(build: ExchangeBuild, *, baseline: Baseline, catalog: Catalog) -> Assessment:
    """Judge one build against a baseline; never raises for a build, fails open for non-Exchange.

    ``release`` is the catalog's release for the build: the exact one, else the RTM/SP/CU of
    its line, else None. ``recommended`` lists the minimum builds of the product's lines,
    newest first; for an unsupported product, those of the newest product the baseline
    supports (or that product's latest build when it has no minimum). Arguments of the wrong
    type raise :class:`InvalidBuildError` (``build``) or :class:`InvalidValueError`.
    """
    if not isinstance(build, ExchangeBuild):
        raise InvalidBuildError(f"build must be an ExchangeBuild, got {build!r:.80}")
    if not isinstance(baseline, Baseline) or not isinstance(catalog, Catalog):
        raise InvalidValueError(
            f"assess needs a Baseline and a Catalog, got baseline={baseline!r:.80}, "
            f"catalog={catalog!r:.80}"
        )
    product = build.product
    base = catalog.base_release(build)
    release = catalog.release(build) or base
    if not product.on_premises:
        return Assessment(Compliance.NOT_APPLICABLE, product, release, (), _fail_open(build))
    subject = _subject(build, base)
    if product in baseline.unsupported:
        recommended, reason = _unsupported(subject, product, baseline, catalog)
        return Assessment(Compliance.UNSUPPORTED, product, release, recommended, reason)
    floors = _line_floors(baseline.minimum.get(product, ()))
    status, reason = _judge(build, subject, _line_word(build, base), floors, catalog)
    recommended = tuple(sorted(floors.values(), reverse=True))
    return Assessment(status, product, release, recommended, reason)


def _subject(build: ExchangeBuild, base: Release | None) -> str:
    if base is None:
        return f"{build.product.label} build {build}"
    # "SP3 RTM" names the service pack's first build; the line itself is just "SP3".
    line = _SP_RTM.sub(r"\1", base.name)
    return f"{build.product.label} {line} build {build}"


def _fail_open(build: ExchangeBuild) -> str:
    if build.product is Product.EXCHANGE_ONLINE:
        return f"{build} is an Exchange Online build; Exchange Online is never enforced."
    return (
        f"{build} is not a build of a known Exchange product; unknown builds are never "
        "enforced (fail open)."
    )


def _line_floors(minimums: tuple[ExchangeBuild, ...]) -> dict[_Line, ExchangeBuild]:
    # Two minimums on one line: the lower one is the line's floor (the rule says "one of").
    floors: dict[_Line, ExchangeBuild] = {}
    for build in sorted(minimums, reverse=True):
        floors[_line_of(build)] = build
    return floors


def _judge(
    build: ExchangeBuild,
    subject: str,
    word: str,
    floors: dict[_Line, ExchangeBuild],
    catalog: Catalog,
) -> tuple[Compliance, str]:
    line = _line_of(build)
    floor = floors.get(line)
    if floor is not None:
        named = _named(floor, catalog, full=False)
        if build >= floor:
            return Compliance.COMPLIANT, f"{subject} meets the minimum {named} for its {word}."
        return Compliance.OUTDATED, f"{subject} is below the minimum {named} for its {word}."
    if any(other > line for other in floors):
        wanted = _alternatives(sorted(floors.values(), reverse=True), catalog)
        return (
            Compliance.OUTDATED,
            f"{subject} is on an older {word} than the baseline accepts; "
            f"install {wanted} or later.",
        )
    if floors:
        return (
            Compliance.COMPLIANT,
            f"{subject} is compliant: its {word} is newer than every line with a minimum.",
        )
    product = build.product.label
    return (
        Compliance.COMPLIANT,
        f"{subject} is compliant: the baseline sets no minimum for {product}.",
    )


def _unsupported(
    subject: str, product: Product, baseline: Baseline, catalog: Catalog
) -> tuple[tuple[ExchangeBuild, ...], str]:
    reason = f"{subject} is unsupported by the baseline"
    end = catalog.end_of_support(product)
    if end is not None:
        reason += f" ({product.label} end of support: {end.isoformat()})"
    for target in reversed(_ON_PREMISES[_ON_PREMISES.index(product) + 1 :]):
        if target in baseline.unsupported:
            continue
        floors = _line_floors(baseline.minimum.get(target, ()))
        latest = catalog._latest(target)
        recommended = tuple(sorted(floors.values(), reverse=True)) or (
            (latest.build,) if latest else ()
        )
        if recommended:
            wanted = _alternatives(recommended, catalog)
            return recommended, f"{reason}; upgrade to {target.label}, {wanted} or later."
    return (), reason + "."


def _line_word(build: ExchangeBuild, base: Release | None) -> str:
    if build.major in _SERVICE_PACK_MAJORS:
        return "service pack line"
    kind = base.name[:2] if base else ""
    return {"CU": "CU line", "SP": "service pack line", "RT": "RTM line"}.get(kind, "line")


def _named(build: ExchangeBuild, catalog: Catalog, *, full: bool) -> str:
    release = catalog.release(build)
    if release is None:
        return str(build)
    label = release.name if full or release.update is None else release.update
    return f"{build} ({label})"


def _alternatives(builds: Iterable[ExchangeBuild], catalog: Catalog) -> str:
    names = [_named(build, catalog, full=True) for build in builds]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
