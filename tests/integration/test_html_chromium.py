"""The HTML report in a real browser: headless Chromium renders it, and the picture shows it.

The PNG is decoded with the standard library (zlib and the PNG filters), so the test can
check that the timelines were really drawn: the flat fills of the stage bands appear as
exact colours, which a blank or unstyled page would not have.
"""

from __future__ import annotations

import datetime as dt
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from tbes.catalog import Catalog
from tbes.compliance import Compliance
from tbes.ledger import Pause
from tbes.policy import Policy
from tbes.render import render_report
from tbes.state import ServerState
from tbes.version import ExchangeBuild

UTC = dt.UTC
NOW = dt.datetime(2027, 2, 15, 18, tzinfo=UTC)
WIDTH, HEIGHT = 1400, 1000

# Fill colours of the page (tbes.render.html): report-only stage, full block, not enforced.
REPORT_ONLY = (0xBC, 0xD7, 0xF2)
FULL_BLOCK = (0x7F, 0x1D, 0x1D)
NOT_ENFORCED = (0xC9, 0xE7, 0xC9)


def states() -> list[ServerState]:
    first = dt.datetime(2026, 10, 15, 9, 36, tzinfo=UTC)

    def server(
        name: str,
        build: str,
        status: Compliance,
        detected: dt.datetime | None,
        healed: dt.datetime | None = None,
        *pauses: Pause,
    ) -> ServerState:
        return ServerState(
            name, "fabrikam", ExchangeBuild.parse(build), status, detected, NOW, healed, pauses
        )

    ex16 = "ex2016.fabrikam.example"
    return [
        server("ex2007.fabrikam.example", "8.3.517.0", Compliance.UNSUPPORTED, first),
        server(
            ex16,
            "15.1.2507.69",
            Compliance.COMPLIANT,
            first,
            dt.datetime(2027, 1, 9, 12, tzinfo=UTC),
            Pause(ex16, dt.date(2026, 12, 5), 30),
        ),
        server("ex2019.fabrikam.example", "15.2.1748.39", Compliance.COMPLIANT, None),
    ]


def screenshot(page: Path, out: Path, profile: Path) -> None:
    # The service marker has already made sure chromium is on PATH.
    chromium = shutil.which("chromium")
    assert chromium is not None
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={WIDTH},{HEIGHT}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def decode_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """Width, height, unfiltered rows and bytes per pixel of an 8-bit RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8, depth
    assert colour in (2, 6), colour  # RGB or RGBA
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        row = _unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, bpp)
        rows.append(row)
        previous = row
    return width, height, rows, bpp


def _unfilter(kind: int, row: bytearray, above: bytes, bpp: int) -> bytes:
    if kind == 1:  # Sub
        for i in range(bpp, len(row)):
            row[i] = (row[i] + row[i - bpp]) & 0xFF
    elif kind == 2:  # Up
        row = bytearray((a + b) & 0xFF for a, b in zip(row, above, strict=True))
    elif kind == 3:  # Average
        for i in range(len(row)):
            left = row[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + (left + above[i]) // 2) & 0xFF
    elif kind == 4:  # Paeth
        for i in range(len(row)):
            a = row[i - bpp] if i >= bpp else 0
            b, c = above[i], above[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            row[i] = (row[i] + pred) & 0xFF
    return bytes(row)


def colours(rows: list[bytes], bpp: int) -> set[tuple[int, int, int]]:
    found: set[tuple[int, int, int]] = set()
    for row in rows:
        found.update((row[i], row[i + 1], row[i + 2]) for i in range(0, len(row), bpp))
    return found


@pytest.mark.service("chromium")
def test_chromium_renders_the_report_with_its_coloured_timelines(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    policy = Policy()
    html = render_report(
        states(), "html", now=NOW, policy=policy, catalog=Catalog.default(), subtitle="test"
    )
    page.write_text(html, encoding="utf-8")
    out = tmp_path / "report.png"
    screenshot(page, out, tmp_path / "profile")
    data = out.read_bytes()
    assert len(data) > 20_000  # a blank 1400x1000 page compresses to a few kB
    width, height, rows, bpp = decode_png(data)
    assert (width, height) == (WIDTH, HEIGHT)
    seen = colours(rows, bpp)
    assert len(seen) > 100  # text, anti-aliasing, bands: far from blank
    assert {REPORT_ONLY, FULL_BLOCK, NOT_ENFORCED} <= seen
    # The page is mostly white background, but not all of it.
    white = sum(
        1
        for row in rows[::10]
        for i in range(0, len(row), bpp)
        if row[i : i + 3] == b"\xff\xff\xff"
    )
    total = len(rows[::10]) * width
    assert 0.3 < white / total < 0.98
