"""Exchange build numbers and the products they belong to.

A build is four non-negative integers ordered as a tuple, like :mod:`packaging.version`
but far smaller: Exchange writes its builds in a short form (``15.1.2507.23``) and a
zero-padded long form (``15.01.2507.023``), and both parse to the same value. Parsing is
total: any text either gives a build or raises :class:`~tbes.errors.InvalidBuildError`.
"""

from __future__ import annotations

import enum
import re

import attrs

from tbes.errors import InvalidBuildError

__all__ = ["ExchangeBuild", "Product"]

# Three or four dot-separated numbers of ASCII digits ([0-9], not \d: no other scripts).
_BUILD_TEXT = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)(?:\.([0-9]+))?")
# Longer texts are not builds; the bound keeps int() far from its digit limit.
_MAX_TEXT = 200


class Product(enum.Enum):
    """The Exchange product a build belongs to."""

    EXCHANGE_2000 = "EXCHANGE_2000"
    EXCHANGE_2003 = "EXCHANGE_2003"
    EXCHANGE_2007 = "EXCHANGE_2007"
    EXCHANGE_2010 = "EXCHANGE_2010"
    EXCHANGE_2013 = "EXCHANGE_2013"
    EXCHANGE_2016 = "EXCHANGE_2016"
    EXCHANGE_2019 = "EXCHANGE_2019"
    EXCHANGE_SE = "EXCHANGE_SE"
    EXCHANGE_ONLINE = "EXCHANGE_ONLINE"
    UNKNOWN = "UNKNOWN"

    @property
    def on_premises(self) -> bool:
        """Whether servers of this product run on a customer's premises."""
        return self not in (Product.EXCHANGE_ONLINE, Product.UNKNOWN)

    @property
    def label(self) -> str:
        """The product's name as an administrator writes it (``Exchange 2016``)."""
        return _LABELS[self]


_LABELS = {
    Product.EXCHANGE_2000: "Exchange 2000",
    Product.EXCHANGE_2003: "Exchange 2003",
    Product.EXCHANGE_2007: "Exchange 2007",
    Product.EXCHANGE_2010: "Exchange 2010",
    Product.EXCHANGE_2013: "Exchange 2013",
    Product.EXCHANGE_2016: "Exchange 2016",
    Product.EXCHANGE_2019: "Exchange 2019",
    Product.EXCHANGE_SE: "Exchange SE",
    Product.EXCHANGE_ONLINE: "Exchange Online",
    Product.UNKNOWN: "unknown product",
}

# The first Subscription Edition build; 15.2 builds below it are Exchange 2019.
_SE_FIRST_BUILD = 2562
# Exchange Online writes 15.20 and above; on-premises Exchange 15 never passed 15.2.
_ONLINE_FIRST_MINOR = 20


def _non_negative_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    # bool is an int subclass, but True is no build part.
    if type(value) is not int or value < 0:
        raise InvalidBuildError(f"{attribute.name} must be an int >= 0, got {value!r}")


@attrs.frozen(order=True)
class ExchangeBuild:
    """An Exchange build number such as ``15.1.2507.23``, ordered as a tuple."""

    major: int = attrs.field(validator=_non_negative_int)
    minor: int = attrs.field(validator=_non_negative_int)
    build: int = attrs.field(validator=_non_negative_int)
    revision: int = attrs.field(default=0, validator=_non_negative_int)

    @classmethod
    def parse(cls, text: str) -> ExchangeBuild:
        """Parse a short, long or three-part build number, else raise InvalidBuildError."""
        if not isinstance(text, str):
            raise InvalidBuildError(f"a build number must be a str, got {type(text).__name__}")
        stripped = text.strip()
        found = _BUILD_TEXT.fullmatch(stripped) if len(stripped) <= _MAX_TEXT else None
        if found is None:
            raise InvalidBuildError(
                f"not an Exchange build number: {text!r} "
                "(expected three or four dot-separated numbers, like '15.1.2507.23')"
            )
        major, minor, build, revision = found.groups("0")
        return cls(int(major), int(minor), int(build), int(revision))

    @property
    def long(self) -> str:
        """The zero-padded long form, ``15.01.2507.023``."""
        return f"{self.major}.{self.minor:02d}.{self.build:04d}.{self.revision:03d}"

    @property
    def product(self) -> Product:
        """The product this build belongs to, by Microsoft's numbering."""
        return _product_of(self.major, self.minor, self.build)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.build}.{self.revision}"


def _product_of(major: int, minor: int, build: int) -> Product:
    if major == 6:
        return {0: Product.EXCHANGE_2000, 5: Product.EXCHANGE_2003}.get(minor, Product.UNKNOWN)
    if major == 8:
        return Product.EXCHANGE_2007
    if major == 14:
        return Product.EXCHANGE_2010
    if major != 15:
        return Product.UNKNOWN
    if minor >= _ONLINE_FIRST_MINOR:
        return Product.EXCHANGE_ONLINE
    if minor == 2:
        return Product.EXCHANGE_SE if build >= _SE_FIRST_BUILD else Product.EXCHANGE_2019
    return {0: Product.EXCHANGE_2013, 1: Product.EXCHANGE_2016}.get(minor, Product.UNKNOWN)
