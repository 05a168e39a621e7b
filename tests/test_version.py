"""Exchange build numbers: the shared vectors and hand-picked edge cases."""

from __future__ import annotations

from typing import Any

import pytest

from support import load_vectors
from tbes import ExchangeBuild, InvalidBuildError, Product

VECTORS = load_vectors("builds.json")


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: repr(c["text"]))
def test_valid_vector_parses_to_its_short_long_and_product(case: dict[str, Any]) -> None:
    build = ExchangeBuild.parse(case["text"])
    assert str(build) == case["short"]
    assert build.long == case["long"]
    assert build.product is Product[case["product"]]


@pytest.mark.parametrize("text", VECTORS["invalid"], ids=repr)
def test_invalid_vector_raises_invalid_build_error_naming_the_text(text: str) -> None:
    with pytest.raises(InvalidBuildError) as excinfo:
        ExchangeBuild.parse(text)
    assert repr(text) in str(excinfo.value)


def test_invalid_build_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not an Exchange build"):
        ExchangeBuild.parse("fifteen")


@pytest.mark.parametrize("value", [-1, True, 1.0, "1"])
def test_constructor_refuses_parts_that_are_not_non_negative_ints(value: Any) -> None:
    with pytest.raises(InvalidBuildError, match="major"):
        ExchangeBuild(value, 1, 2507, 23)


def test_parse_refuses_non_str() -> None:
    with pytest.raises(InvalidBuildError, match="must be a str"):
        ExchangeBuild.parse(15.1)  # type: ignore[arg-type]


def test_parse_refuses_absurdly_long_numbers() -> None:
    with pytest.raises(InvalidBuildError):
        ExchangeBuild.parse("1" * 5000 + ".1.1.1")


def test_long_form_sorts_with_short_form_by_value_not_text() -> None:
    padded = ExchangeBuild.parse("15.01.2507.039")
    short = ExchangeBuild.parse("15.1.2507.4")
    assert short < padded
    assert "15.01.2507.039" < "15.1.2507.4"  # the string order would get it wrong


@pytest.mark.parametrize(
    ("text", "product"),
    [
        ("15.2.2561.999", Product.EXCHANGE_2019),
        ("15.2.2562.0", Product.EXCHANGE_SE),
        ("15.19.1.1", Product.UNKNOWN),
        ("15.21.1.1", Product.EXCHANGE_ONLINE),
        ("6.1.1.1", Product.UNKNOWN),
        ("9.0.1.1", Product.UNKNOWN),
        ("0.0.0.0", Product.UNKNOWN),
    ],
)
def test_product_boundaries(text: str, product: Product) -> None:
    assert ExchangeBuild.parse(text).product is product


def test_only_online_and_unknown_are_not_on_premises() -> None:
    off_premises = {p for p in Product if not p.on_premises}
    assert off_premises == {Product.EXCHANGE_ONLINE, Product.UNKNOWN}


def test_builds_are_hashable_and_frozen() -> None:
    build = ExchangeBuild(15, 1, 2507, 23)
    assert {build: 1}[ExchangeBuild.parse("15.01.2507.023")] == 1
    with pytest.raises(AttributeError):
        build.major = 14  # type: ignore[misc]
