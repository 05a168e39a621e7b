"""Properties of assess() and the baselines that SPEC section 3 states for every build."""

from __future__ import annotations

import datetime as dt

import attrs
from hypothesis import given
from hypothesis import strategies as st
from strategies import builds

from tbes.baseline import Baseline
from tbes.catalog import Catalog, Release
from tbes.compliance import Assessment, Compliance, assess
from tbes.serde import dumps, loads
from tbes.version import ExchangeBuild, Product

CATALOG = Catalog.default()
ON_PREMISES = [product for product in Product if product.on_premises]
_REVISIONS = st.integers(0, 80)


def _spread(known: list[int], low: int, high: int) -> st.SearchStrategy[int]:
    # Mostly real line numbers, so builds and minimums share lines often.
    return st.one_of(st.sampled_from(known), st.integers(low, high))


# Builds of each on-premises product: (major, minor choices, build numbers).
_PARTS: dict[Product, tuple[int, list[int], st.SearchStrategy[int]]] = {
    Product.EXCHANGE_2000: (6, [0], _spread([6249, 6620], 0, 9999)),
    Product.EXCHANGE_2003: (6, [5], _spread([6944, 7638], 0, 9999)),
    Product.EXCHANGE_2007: (8, [0, 1, 2, 3], _spread([83, 517], 0, 999)),
    Product.EXCHANGE_2010: (14, [0, 1, 2, 3], _spread([123, 439, 513], 0, 999)),
    Product.EXCHANGE_2013: (15, [0], _spread([1473, 1497], 0, 9999)),
    Product.EXCHANGE_2016: (15, [1], _spread([2375, 2507], 0, 9999)),
    Product.EXCHANGE_2019: (15, [2], _spread([1258, 1544, 1748], 0, 2561)),
    Product.EXCHANGE_SE: (15, [2], _spread([2562, 2600], 2562, 9999)),
}


def builds_of(product: Product) -> st.SearchStrategy[ExchangeBuild]:
    """Builds that belong to one on-premises product."""
    major, minors, numbers = _PARTS[product]
    return st.builds(ExchangeBuild, st.just(major), st.sampled_from(minors), numbers, _REVISIONS)


on_premises_builds = st.one_of(*(builds_of(product) for product in ON_PREMISES))
any_builds = st.one_of(on_premises_builds, builds)


def _by_product(minimums: list[ExchangeBuild]) -> dict[Product, list[ExchangeBuild]]:
    grouped: dict[Product, list[ExchangeBuild]] = {}
    for build in minimums:
        grouped.setdefault(build.product, []).append(build)
    return grouped


_random_baselines = st.builds(
    Baseline,
    minimum=st.lists(on_premises_builds, max_size=6).map(_by_product),
    unsupported=st.frozensets(st.sampled_from(list(Product)), max_size=4),
)
_days = st.dates(dt.date(2005, 1, 1), dt.date(2028, 12, 31))
baselines = st.one_of(
    st.just(Baseline.exchange_online_2023()),
    st.just(Baseline.exchange_online_2026()),
    _days.map(lambda day: Baseline.supported_only(day, CATALOG)),
    _random_baselines,
)


def _line(build: ExchangeBuild) -> tuple[int, ...]:
    # SPEC: the line is major.minor.build; for 2007 (8.x) and 2010 (14.x) the service pack.
    if build.major in (8, 14):
        return (build.major, build.minor)
    return (build.major, build.minor, build.build)


def spec_status(build: ExchangeBuild, baseline: Baseline) -> Compliance:
    """SPEC section 3's rule, written out literally as the model to check assess against."""
    product = build.product
    if not product.on_premises:
        return Compliance.NOT_APPLICABLE
    if product in baseline.unsupported:
        return Compliance.UNSUPPORTED
    minimums = baseline.minimum.get(product, ())
    same_line = [m for m in minimums if _line(m) == _line(build)]
    if same_line:
        met = any(build >= m for m in same_line)
        return Compliance.COMPLIANT if met else Compliance.OUTDATED
    newer_line = any(_line(m) > _line(build) for m in minimums)
    return Compliance.OUTDATED if newer_line else Compliance.COMPLIANT


def judge(build: ExchangeBuild, baseline: Baseline) -> Assessment:
    return assess(build, baseline=baseline, catalog=CATALOG)


@given(any_builds, baselines)
def test_assess_follows_the_spec_rule_for_every_build(
    build: ExchangeBuild, baseline: Baseline
) -> None:
    result = judge(build, baseline)
    assert result.status is spec_status(build, baseline)
    assert result.product is build.product
    assert result.reason


@st.composite
def same_line_pairs(draw: st.DrawFn) -> tuple[ExchangeBuild, ExchangeBuild]:
    """A build and a newer (or equal) build on the same line."""
    older = draw(on_premises_builds)
    if older.major in (8, 14):  # a rollup moves the build number within the service pack
        number = older.build + draw(st.integers(0, 300))
        low = older.revision if number == older.build else 0
        return older, attrs.evolve(older, build=number, revision=draw(st.integers(low, 999)))
    return older, attrs.evolve(older, revision=older.revision + draw(st.integers(0, 999)))


@given(same_line_pairs(), baselines)
def test_a_newer_build_on_a_compliant_line_stays_compliant(
    pair: tuple[ExchangeBuild, ExchangeBuild], baseline: Baseline
) -> None:
    older, newer = pair
    if judge(older, baseline).status is Compliance.COMPLIANT:
        assert judge(newer, baseline).status is Compliance.COMPLIANT


@given(any_builds, baselines)
def test_an_unsupported_product_is_never_compliant(
    build: ExchangeBuild, baseline: Baseline
) -> None:
    marked = attrs.evolve(baseline, unsupported=baseline.unsupported | {build.product})
    expected = Compliance.UNSUPPORTED if build.product.on_premises else Compliance.NOT_APPLICABLE
    assert judge(build, marked).status is expected


cloud_builds = st.builds(
    ExchangeBuild, st.just(15), st.integers(20, 10**4), st.integers(0, 10**5), st.integers(0, 999)
)
unknown_builds = st.one_of(
    builds.filter(lambda build: build.product is Product.UNKNOWN),
    st.builds(ExchangeBuild, st.integers(16, 10**6), st.integers(0, 99), st.integers(0, 10**5)),
)


@given(st.one_of(cloud_builds, unknown_builds), baselines)
def test_cloud_and_unknown_builds_are_never_enforced(
    build: ExchangeBuild, baseline: Baseline
) -> None:
    everything = attrs.evolve(baseline, unsupported=frozenset(Product))
    for candidate in (baseline, everything):
        result = judge(build, candidate)
        assert (result.status, result.recommended) == (Compliance.NOT_APPLICABLE, ())


@given(
    st.builds(
        ExchangeBuild,
        st.integers(0, 10**9),
        st.integers(0, 10**9),
        st.integers(0, 10**9),
        st.integers(0, 10**9),
    ),
    baselines,
)
def test_assess_never_raises(build: ExchangeBuild, baseline: Baseline) -> None:
    assert isinstance(judge(build, baseline), Assessment)


@given(on_premises_builds, baselines)
def test_recommended_builds_are_the_products_minimums_newest_first(
    build: ExchangeBuild, baseline: Baseline
) -> None:
    result = judge(build, baseline)
    assert list(result.recommended) == sorted(set(result.recommended), reverse=True)
    if build.product not in baseline.unsupported:
        assert set(result.recommended) <= set(baseline.minimum.get(build.product, ()))
        lines = {_line(m) for m in baseline.minimum.get(build.product, ())}
        assert {_line(r) for r in result.recommended} == lines


@given(any_builds)
def test_lookups_return_the_build_itself_or_the_base_of_its_line(build: ExchangeBuild) -> None:
    exact = CATALOG.release(build)
    assert exact is None or exact.build == build
    base = CATALOG.base_release(build)
    if base is not None:
        assert base.is_base
        assert base.product is build.product
        assert _line(base.build) == _line(build)


@given(_days)
def test_supported_only_holds_each_serviced_line_to_its_latest_update(day: dt.date) -> None:
    baseline = Baseline.supported_only(day, CATALOG)
    ended = {
        product
        for product in ON_PREMISES
        if (end := CATALOG.end_of_support(product)) is not None and end < day
    }
    assert baseline.unsupported == ended
    for product, minimums in baseline.minimum.items():
        assert product not in ended
        assert 1 <= len({_line(m) for m in minimums}) == len(minimums) <= 2
        for minimum in minimums:
            release = CATALOG.release(minimum)
            assert release is not None
            assert release.date <= day
            line = [
                r for r in CATALOG.releases if _line(r.build) == _line(minimum) and r.date <= day
            ]
            assert minimum == max(r.build for r in line)


@given(_random_baselines)
def test_baselines_round_trip_through_json(baseline: Baseline) -> None:
    back = loads(dumps(baseline), Baseline)
    assert back == baseline
    assert hash(back) == hash(baseline)


@given(st.sampled_from(CATALOG.releases), baselines)
def test_releases_and_assessments_round_trip_through_json(
    release: Release, baseline: Baseline
) -> None:
    assert loads(dumps(release), Release) == release
    result = judge(release.build, baseline)
    assert loads(dumps(result), Assessment) == result
