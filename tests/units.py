"""The systemd units in ``contrib/systemd``, read as the tests need them: sections, ExecStart."""

from __future__ import annotations

import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "contrib" / "systemd"
SERVICES = ("tbes-milter", "tbes-policy", "tbes")
BINARY = "/opt/tbes/bin/tbes"


def unit_text(name: str) -> str:
    """The text of ``contrib/systemd/NAME.service``."""
    return (UNITS / f"{name}.service").read_text(encoding="utf-8")


def directives(name: str, section: str = "Service") -> dict[str, list[str]]:
    """Every ``Key=value`` of ``section`` in the unit, values in order (keys may repeat)."""
    found: dict[str, list[str]] = {}
    current = None
    for raw in unit_text(name).splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if current == section:
            found.setdefault(key, []).append(value)
    return found


def exec_start(name: str) -> list[str]:
    """The unit's ExecStart command line, split as systemd splits it."""
    (line,) = directives(name)["ExecStart"]
    return shlex.split(line)


def rewritten(argv: list[str], places: dict[str, str]) -> list[str]:
    """``argv`` with each documented path or port prefix replaced (for a test's own site)."""
    out = []
    for word in argv:
        for old, new in places.items():
            word = word.replace(old, new)
        out.append(word)
    return out
