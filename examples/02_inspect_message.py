"""Print which Exchange build handed a message over, from the message file's Received headers.

Usage: ``python examples/02_inspect_message.py [PATH.eml] [--own-host NAME ...] [--client NAME]``
(without a path it reads the sample ``examples/data/ex2016-outdated.eml``).

The hops written by the receiver (``--own-host`` names and their subdomains, and Exchange
Online) are skipped; the first hop left was written by the server that handed the message
over. The build it names is only a claim: a real enforcer takes the server's identity from
the SMTP connection, never from headers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tbes.received import find_sender, received_values

SAMPLE = Path(__file__).resolve().parent / "data" / "ex2016-outdated.eml"


def main(argv: list[str] | None = None) -> int:
    """Read the message file named on the command line and print its sender evidence."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, nargs="?", default=SAMPLE, help="a message file")
    parser.add_argument("--own-host", action="append", default=[], help="a receiver host name")
    parser.add_argument("--client", help="the host name or address that connected")
    options = parser.parse_args(argv)
    values = received_values(options.path.read_bytes())
    print(f"{options.path.name}: {len(values)} Received headers")
    found = find_sender(values, own_hosts=options.own_host, client=options.client)
    if found is None:
        print("no Exchange evidence: the server that handed this message over wrote no build")
        return 0
    address = f" ({found.ip})" if found.ip else ""
    print(f"sender hop {found.index}: {found.host or '(no host name)'}{address}")
    print(f"claimed build: {found.build} ({found.build.product.label})")
    print(f"matches the hop above or the client: {'yes' if found.matched else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
