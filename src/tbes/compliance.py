"""Compliance: the verdict on one build against a baseline, and why.

:func:`assess` judges a build by its *line* (:mod:`tbes._lines`) against a
:class:`~tbes.baseline.Baseline`, with names and dates from a :class:`~tbes.catalog.Catalog`;
it gives an :class:`Assessment`. Decision: anything that is not on-premises Exchange fails
open (``NOT_APPLICABLE``): a forged or cloud build is never enforced.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

import attrs

from tbes._lines import ON_PREMISES, SERVICE_PACK_MAJORS, Line, line_of
from tbes.baseline import Baseline
from tbes.catalog import Catalog, Release
from tbes.errors import CatalogError, InvalidBuildError, InvalidValueError
from tbes.version import ExchangeBuild, Product

__all__ = ["Assessment", "Compliance", "assess"]

_SP_RTM = re.compile(r"^(SP\d+) RTM$")


class Compliance(enum.Enum):
    """How a build stands against a baseline."""

    COMPLIANT = "COMPLIANT"
    OUTDATED = "OUTDATED"
    UNSUPPORTED = "UNSUPPORTED"
    NOT_APPLICABLE = "NOT_APPLICABLE"


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


def _line_floors(minimums: tuple[ExchangeBuild, ...]) -> dict[Line, ExchangeBuild]:
    # Two minimums on one line: the lower one is the line's floor (the rule says "one of").
    floors: dict[Line, ExchangeBuild] = {}
    for build in sorted(minimums, reverse=True):
        floors[line_of(build)] = build
    return floors


def _judge(
    build: ExchangeBuild,
    subject: str,
    word: str,
    floors: dict[Line, ExchangeBuild],
    catalog: Catalog,
) -> tuple[Compliance, str]:
    line = line_of(build)
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
    for target in reversed(ON_PREMISES[ON_PREMISES.index(product) + 1 :]):
        if target in baseline.unsupported:
            continue
        floors = _line_floors(baseline.minimum.get(target, ()))
        latest = _latest(catalog, target)
        recommended = tuple(sorted(floors.values(), reverse=True)) or (
            (latest.build,) if latest else ()
        )
        if recommended:
            wanted = _alternatives(recommended, catalog)
            return recommended, f"{reason}; upgrade to {target.label}, {wanted} or later."
    return (), reason + "."


def _line_word(build: ExchangeBuild, base: Release | None) -> str:
    if build.major in SERVICE_PACK_MAJORS:
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


def _latest(catalog: Catalog, product: Product) -> Release | None:
    try:
        return catalog.latest(product)
    except CatalogError:  # a catalog without that product (an operator's partial one)
        return None
