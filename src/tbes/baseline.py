"""Baselines: which builds of which products a policy accepts.

A :class:`Baseline` is a value: minimum builds per product (one per CU or service-pack line)
and the products that are unsupported outright. The presets are Microsoft's fixed rules of
2023 and 2026, and :meth:`Baseline.supported_only`, computed from a catalog it is given for a
given day. The verdict on one build against a baseline is :func:`tbes.compliance.assess`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Iterator, Mapping

import attrs

from tbes._checks import require_type
from tbes._lines import ON_PREMISES, PRODUCT_RANK
from tbes.catalog import Catalog, Release
from tbes.errors import CatalogError, NaiveDatetimeError
from tbes.version import ExchangeBuild, Product

__all__ = ["Baseline"]


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
    items.sort(key=lambda item: PRODUCT_RANK[item[0]])
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
    def supported_only(cls, on: _dt.date, catalog: Catalog) -> Baseline:
        """Products past end of support unsupported; minimum = latest SU per CU line.

        A product is unsupported once its end of support is before ``on``. For the others,
        each line still serviced on ``on`` needs its newest build released on or before
        ``on``. A line is still serviced when it is the product's newest line, or the one
        before it (Microsoft's N-1) as long as it got an update in the same month as the
        newest line's latest update. The lines and their updates come from ``catalog``
        (required: pass :meth:`Catalog.default() <tbes.catalog.Catalog.default>` for the
        packaged one).
        """
        day = _utc_day(on)
        require_type(catalog, Catalog, "catalog")
        unsupported = {
            product
            for product in ON_PREMISES
            if (end := catalog.end_of_support(product)) is not None and end < day
        }
        minimum = {
            product: _serviced_minimums(catalog.lines(product), day)
            for product in ON_PREMISES
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
