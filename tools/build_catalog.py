"""Regenerate the packaged build catalog from Microsoft's build list CSV.

Usage::

    python tools/build_catalog.py tests/data/ExchangeBuildNumbers.csv
    python tools/build_catalog.py CSV --check     # exit 1 if the packaged file is stale

The CSV (MIT, Microsoft) is read with tbes's own importer and never copied into the
repository; only the catalog in tbes's schema is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tbes.catalog import Catalog
from tbes.errors import CatalogError

PACKAGED = Path(__file__).resolve().parent.parent / "src" / "tbes" / "data" / "catalog.json"


def main(argv: list[str] | None = None) -> int:
    """Import the CSV and write (or, with --check, compare) the packaged catalog."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="Microsoft's ExchangeBuildNumbers.csv")
    parser.add_argument("--output", type=Path, default=PACKAGED, help="catalog file to write")
    parser.add_argument("--check", action="store_true", help="only check the output is current")
    args = parser.parse_args(argv)
    try:
        catalog = Catalog.from_microsoft_csv(args.csv)
        if args.check:
            current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
            if current != catalog.to_json():
                print(f"{args.output} is out of date; regenerate it from {args.csv}")
                return 1
            print(f"{args.output} is current ({len(catalog.releases)} releases)")
            return 0
        catalog.dump(args.output)
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {len(catalog.releases)} releases, as of {catalog.as_of}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
