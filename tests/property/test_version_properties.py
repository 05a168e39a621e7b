"""Properties of build parsing, printing, ordering and product mapping."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from strategies import builds

from tbes import ExchangeBuild, InvalidBuildError, Product

any_builds = st.builds(
    ExchangeBuild,
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)


@given(any_builds)
def test_parse_of_short_form_round_trips(build: ExchangeBuild) -> None:
    assert ExchangeBuild.parse(str(build)) == build


@given(any_builds)
def test_parse_of_long_form_round_trips(build: ExchangeBuild) -> None:
    assert ExchangeBuild.parse(build.long) == build


@given(any_builds, any_builds)
def test_ordering_equals_tuple_ordering(a: ExchangeBuild, b: ExchangeBuild) -> None:
    ta = (a.major, a.minor, a.build, a.revision)
    tb = (b.major, b.minor, b.build, b.revision)
    assert (a < b) == (ta < tb)
    assert (a == b) == (ta == tb)
    assert (a <= b) == (ta <= tb)


def _expected_product(major: int, minor: int, build: int) -> Product:
    # The table of SPEC section 1, written out independently of the implementation.
    table = {(6, 0): Product.EXCHANGE_2000, (6, 5): Product.EXCHANGE_2003}
    if (major, minor) in table:
        return table[(major, minor)]
    if major == 8:
        return Product.EXCHANGE_2007
    if major == 14:
        return Product.EXCHANGE_2010
    if major == 15 and minor >= 20:
        return Product.EXCHANGE_ONLINE
    if (major, minor) == (15, 0):
        return Product.EXCHANGE_2013
    if (major, minor) == (15, 1):
        return Product.EXCHANGE_2016
    if (major, minor) == (15, 2):
        return Product.EXCHANGE_SE if build >= 2562 else Product.EXCHANGE_2019
    return Product.UNKNOWN


@given(builds)
def test_product_mapping_agrees_with_the_table(build: ExchangeBuild) -> None:
    assert build.product is _expected_product(build.major, build.minor, build.build)


@given(st.text())
def test_parse_never_raises_anything_but_invalid_build_error(text: str) -> None:
    try:
        build = ExchangeBuild.parse(text)
    except InvalidBuildError:
        return
    assert isinstance(build, ExchangeBuild)


@given(st.from_regex(r"\A\s*[0-9]{1,6}(\.[0-9]{1,6}){2,3}\s*\Z"))
def test_every_dotted_number_text_parses(text: str) -> None:
    build = ExchangeBuild.parse(text)
    assert build == ExchangeBuild.parse(text.strip())
