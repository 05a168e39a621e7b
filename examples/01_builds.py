"""Parse a few Exchange build numbers and print the product each belongs to."""

from __future__ import annotations

from tbes import ExchangeBuild, InvalidBuildError

SAMPLES = [
    "8.3.83.6",
    "14.03.0513.000",
    "15.0.1497.48",
    "15.01.2507.039",
    "15.2.1748.39",
    "15.2.2562.17",
    "15.20.8835.7",
    "16.0.0.0",
    "15.1.x.23",
]


def main() -> None:
    """Print each sample's short form, long form and product, or why it is not a build."""
    for text in SAMPLES:
        try:
            build = ExchangeBuild.parse(text)
        except InvalidBuildError as error:
            print(f"{text:<16} -> {error}")
            continue
        where = "on-premises" if build.product.on_premises else "not enforced"
        print(f"{text:<16} -> {build!s:<14} {build.long:<15} {build.product.label} ({where})")


if __name__ == "__main__":
    main()
