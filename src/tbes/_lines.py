"""Lines: the CU or service-pack line a build is on, by which every build is judged.

Decision: a build is judged by its line, never by an exact lookup, so an unpublished or newer
build gets the same answer as its published neighbours. The line is ``major.minor.build`` for
Exchange 2013 and later; for Exchange 2007 and 2010, whose rollups raise the build number, it
is the service pack ``major.minor``. Shared by the catalog, baselines and assessment.
"""

from __future__ import annotations

from collections.abc import Mapping

from tbes.version import ExchangeBuild, Product

__all__ = ["ON_PREMISES", "PRODUCT_RANK", "SERVICE_PACK_MAJORS", "Line", "line_of"]

Line = tuple[int, ...]
"""A line: ``(major, minor, build)``, or ``(major, minor)`` for a service pack."""

SERVICE_PACK_MAJORS = frozenset({8, 14})
"""The majors (Exchange 2007 and 2010) whose line is the service pack."""

ON_PREMISES: tuple[Product, ...] = tuple(product for product in Product if product.on_premises)
"""The on-premises products, oldest first."""

PRODUCT_RANK: Mapping[Product, int] = {product: rank for rank, product in enumerate(Product)}
"""Each product's place in :class:`~tbes.version.Product` order (oldest first)."""


def line_of(build: ExchangeBuild) -> Line:
    """The line ``build`` is on."""
    if build.major in SERVICE_PACK_MAJORS:
        return (build.major, build.minor)
    return (build.major, build.minor, build.build)
