"""The build catalog: every Exchange release Microsoft published, with lifecycle dates.

:class:`Release` is one published build; :class:`Catalog` holds them all, sorted by build,
with lookups by build and by line (:mod:`tbes._lines`). Files are read and written only by
the explicit I/O entry points :meth:`Catalog.load`, :meth:`Catalog.from_microsoft_csv` and
:meth:`Catalog.dump` (the formats live in :mod:`tbes._catalog_files`); everything else is
pure. The packaged catalog is no file: it is the generated module ``tbes._catalog_data``
(``tools/build_catalog.py`` writes it from Microsoft's CSV), turned into a :class:`Catalog`
once, on first use of :meth:`Catalog.default`. Baselines live in :mod:`tbes.baseline`, the
verdict on a build in :mod:`tbes.compliance`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import cattrs

from tbes import _catalog_files as files
from tbes._checks import of_type
from tbes._lines import Line, line_of
from tbes.errors import CatalogError, InvalidBuildError, InvalidValueError, TbesError
from tbes.serde import converter
from tbes.version import ExchangeBuild, Product

__all__ = ["Catalog", "Release"]

# Release names as Microsoft writes them. A *base* release starts a line (RTM, SPn, "SPn RTM",
# CUn, optionally with a note such as "CU13 (2023H1)"); every other name is an update on one.
_BASE_NAME = re.compile(r"(?:RTM|SP\d+(?: RTM)?|CU\d+)(?: \([^()]*\))?")
_PREVIEW_NAME = re.compile(r"Preview\b.*")
_KB = re.compile(r"KB\d+")
_MAX_NAME = 100

# Microsoft's lifecycle dates (docs/catalog.md); SE follows the Modern Lifecycle Policy.
_END_OF_SUPPORT: Mapping[Product, _dt.date] = {
    Product.EXCHANGE_2000: _dt.date(2011, 1, 11),
    Product.EXCHANGE_2003: _dt.date(2014, 4, 8),
    Product.EXCHANGE_2007: _dt.date(2017, 4, 11),
    Product.EXCHANGE_2010: _dt.date(2020, 10, 13),
    Product.EXCHANGE_2013: _dt.date(2023, 4, 11),
    Product.EXCHANGE_2016: _dt.date(2025, 10, 14),
    Product.EXCHANGE_2019: _dt.date(2025, 10, 14),
}
# The products with a paid Extended Security Update period after their end of support: an
# update of theirs released after that date went to ESU customers only. Microsoft's list names
# those like public ones ("CU23 Dec25SU"), so the mark is derived from the date. (Exchange
# 2010's out-of-band SUs of March 2021, after its end of support, were public: no ESU there.)
_ESU_PRODUCTS = frozenset({Product.EXCHANGE_2016, Product.EXCHANGE_2019})


def esu_by_lifecycle(product: Product, name: str, date: _dt.date) -> bool:
    """Whether an update named ``name`` of ``product``, out on ``date``, was ESU-only."""
    end = _END_OF_SUPPORT.get(product)
    return (
        product in _ESU_PRODUCTS
        and end is not None
        and date > end
        and _BASE_NAME.fullmatch(name) is None
    )


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


def _check_date(_: object, attribute: attrs.Attribute[_dt.date], value: _dt.date) -> None:
    # A datetime is a date too, but comparing one with a date raises; refuse it here.
    if type(value) is not _dt.date:
        raise CatalogError(f"{attribute.name} must be a datetime.date, got {value!r}")


def _check_kb(_: object, __: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not (isinstance(value, str) and _KB.fullmatch(value)):
        raise CatalogError(f"a KB number looks like 'KB5066369', got {value!r}")


@attrs.frozen
class Release:
    """One published Exchange build: an RTM, service pack, rollup, CU, SU or hotfix update.

    ``esu`` marks an update that went to Extended Security Update customers only (Exchange
    2016 and 2019 updates after their end of support): no public update, so no rolling
    baseline ever takes one as the floor of its line.
    """

    product: Product = attrs.field(validator=_check_product)
    name: str = attrs.field(validator=_check_name)
    build: ExchangeBuild = attrs.field(validator=of_type(ExchangeBuild))
    date: _dt.date = attrs.field(validator=_check_date)
    kb: str | None = attrs.field(default=None, validator=_check_kb)
    esu: bool = attrs.field(default=False, validator=of_type(bool), kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.build.product is not self.product:
            raise CatalogError(
                f"release {self.name!r}: build {self.build} is {self.build.product.label}, "
                f"not {self.product.label}"
            )
        if self.esu and self.is_base:
            raise CatalogError(f"release {self.title!r} starts a line, so it is no ESU update")

    @property
    def title(self) -> str:
        """Product and release name as Microsoft's list writes them (``Exchange 2016 CU23``)."""
        return f"{self.product.label} {self.name}"

    @property
    def is_base(self) -> bool:
        """Whether this release starts a line: an RTM, a service pack or a cumulative update."""
        return _BASE_NAME.fullmatch(self.name) is not None

    @property
    def is_preview(self) -> bool:
        """Whether this is a preview build, which Microsoft never supports in production."""
        return _PREVIEW_NAME.fullmatch(self.name) is not None

    @property
    def update(self) -> str | None:
        """The update's own name (``Oct25SU``, ``RU8v2``); None for a base release or preview."""
        if self.is_base or self.is_preview:
            return None
        return self.name.rsplit(" ", 1)[-1]


# ---------------------------------------------------------------------------------------------
# Catalog


@attrs.frozen
class _Index:
    """Lookups precomputed once per catalog, so every query is a dict access."""

    by_build: Mapping[ExchangeBuild, Release]
    base_by_line: Mapping[Line, Release]
    # Per product, its lines oldest first, each line's releases by build; previews left out,
    # as Microsoft never supports a preview in production.
    lines: Mapping[Product, tuple[tuple[Release, ...], ...]]
    latest: Mapping[Product, Release]


def _index_of(catalog: Catalog) -> _Index:
    by_build: dict[ExchangeBuild, Release] = {}
    lines: dict[Product, dict[Line, list[Release]]] = {}
    for release in catalog.releases:  # sorted by build
        if release.build in by_build:
            raise CatalogError(
                f"build {release.build} is listed twice: as {by_build[release.build].name!r} "
                f"and as {release.name!r}"
            )
        by_build[release.build] = release
        if not release.is_preview:
            product_lines = lines.setdefault(release.product, {})
            product_lines.setdefault(line_of(release.build), []).append(release)
    base_by_line: dict[Line, Release] = {}
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
        return cls.loads(files.read_text(path, "catalog", "utf-8"), source=str(path))

    @classmethod
    def from_microsoft_csv(cls, path: str | os.PathLike[str]) -> Catalog:
        """Import Microsoft's build list CSV (``Product Name,Build Number,Date,KB,Blog``; I/O).

        Strict: a malformed row raises :class:`~tbes.errors.CatalogError` naming the file, the
        line and the problem. ``as_of`` is the newest release date in the file. Updates that
        went to ESU customers only are marked (:attr:`Release.esu`) from the lifecycle.
        """
        source = str(path)
        rows = files.parse_microsoft_csv(files.read_text(path, "CSV", "utf-8-sig"), source)
        releases = [_release_of_csv_row(row) for row in rows]
        return cls(releases=releases, as_of=max(release.date for release in releases))

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_json` to ``path``, replacing any file there atomically (I/O)."""
        files.write_atomically(path, self.to_json())

    # -- pure (de)serialisation ---------------------------------------------------------------

    @classmethod
    def loads(cls, text: str | bytes, *, source: str = "<string>") -> Catalog:
        """Parse catalog JSON; any problem raises CatalogError naming ``source`` and the fault.

        A release without the ``esu`` key (a file written before it existed) gets the mark
        from the lifecycle, as an import of Microsoft's CSV would.
        """
        rows, as_of = files.parse_catalog_json(text, source)
        releases = [
            _structure_release(row, f"{source}: release #{n}") for n, row in enumerate(rows, 1)
        ]
        try:
            return cls(releases=releases, as_of=as_of)
        except CatalogError as exc:
            raise CatalogError(f"{source}: {exc}") from exc

    def to_json(self) -> str:
        """The catalog as JSON in tbes's schema, one release per line so diffs stay readable."""
        return files.format_catalog_json(map(converter.unstructure, self.releases), self.as_of)

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
        return self._index.base_by_line.get(line_of(build))

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

    def lines(self, product: Product) -> tuple[tuple[Release, ...], ...]:
        """The product's lines, oldest first, each as its releases sorted by build.

        Previews are left out: Microsoft never supports one in production.
        """
        if not isinstance(product, Product):
            raise InvalidValueError(f"product must be a Product, got {product!r:.80}")
        return self._index.lines.get(product, ())


@functools.cache
def _packaged_catalog() -> Catalog:
    # Imported here, not at the top: only a caller of Catalog.default() pays for 340 rows.
    import tbes._catalog_data as packaged

    try:
        releases = [
            Release(
                Product(product),
                name,
                ExchangeBuild.parse(build),
                _dt.date.fromisoformat(day),
                kb,
                esu=esu,
            )
            for product, name, build, day, kb, esu in packaged.RELEASES
        ]
        return Catalog(releases=releases, as_of=_dt.date.fromisoformat(packaged.AS_OF))
    except (TbesError, ValueError) as exc:
        raise CatalogError(f"the packaged catalog (tbes._catalog_data) is corrupt: {exc}") from exc


def _release_of_csv_row(row: files.CsvRow) -> Release:
    esu = esu_by_lifecycle(row.product, row.name, row.date)
    try:
        return Release(row.product, row.name, row.build, row.date, row.kb, esu=esu)
    except TbesError as exc:
        raise CatalogError(f"{row.where}: {exc}") from exc


def _structure_release(row: dict[str, Any], where: str) -> Release:
    if "esu" not in row:
        row = {**row, "esu": _esu_of_row(row)}
    try:
        return converter.structure(row, Release)
    except cattrs.ClassValidationError as exc:
        problems = cattrs.transform_error(exc, path="release", format_exception=_describe_error)
        raise CatalogError(f"{where}: {'; '.join(problems)}") from exc
    except (TbesError, ValueError, TypeError) as exc:
        raise CatalogError(f"{where}: {exc}") from exc


def _esu_of_row(row: dict[str, Any]) -> bool:
    # Best effort on raw values: a malformed row is refused by structuring, not here.
    try:
        product = Product(row["product"])
        day = _dt.date.fromisoformat(row["date"])
    except (ValueError, TypeError):
        return False
    return isinstance(row["name"], str) and esu_by_lifecycle(product, row["name"], day)


def _describe_error(exc: BaseException, _: type | None) -> str:
    return str(exc) or type(exc).__name__
