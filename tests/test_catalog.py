"""The build catalog, the three baselines and assess(), against SPEC section 3 and Microsoft's list.

Expected values come from SPEC sections 3 and 7 and from reading Microsoft's CSV by hand
(tests/data/ExchangeBuildNumbers.csv), never from the code under test.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import attrs
import pytest

import tbes
import tbes.catalog
from support import BUILD_LIST_CSV, REPO_ROOT
from tbes.baseline import Baseline
from tbes.catalog import Catalog, Release
from tbes.compliance import Assessment, Compliance, assess
from tbes.errors import CatalogError, InvalidValueError, NaiveDatetimeError
from tbes.serde import dumps, loads
from tbes.version import ExchangeBuild, Product

B = ExchangeBuild.parse
P = Product
D = dt.date

CATALOG = Catalog.default()
CSV_PATH = BUILD_LIST_CSV

OK, OLD, UNSUP, NA = (
    Compliance.COMPLIANT,
    Compliance.OUTDATED,
    Compliance.UNSUPPORTED,
    Compliance.NOT_APPLICABLE,
)


def status(build: str, baseline: Baseline) -> Compliance:
    return assess(B(build), baseline=baseline, catalog=CATALOG).status


# --- the packaged catalog is Microsoft's list ----------------------------------------------------


def _csv_rows() -> list[dict[str, str]]:
    # Read independently of tbes's importer: csv.DictReader and strptime.
    with CSV_PATH.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def test_packaged_catalog_holds_every_csv_row_with_its_build_date_and_kb() -> None:
    differences = []
    for row in _csv_rows():
        title, build = row["Product Name"], B(row["Build Number"])
        day = dt.datetime.strptime(row["Date"], "%m/%d/%Y").date()  # noqa: DTZ007 - a date
        release = CATALOG.release(build)
        if release is None:
            differences.append(f"{title}: build {build} missing")
        elif (release.title, release.date, release.kb) != (title, day, row["KB"] or None):
            differences.append(f"{title}: catalog has {release!r}, CSV says {build} of {day}")
    assert differences == []


def test_packaged_catalog_holds_nothing_beyond_the_csv() -> None:
    listed = {B(row["Build Number"]) for row in _csv_rows()}
    extra = [release.title for release in CATALOG.releases if release.build not in listed]
    assert extra == []
    assert CATALOG.as_of == D(2026, 8, 11)  # the newest date in the CSV


def test_packaged_catalog_is_exactly_what_the_importer_makes_of_the_csv() -> None:
    assert Catalog.from_microsoft_csv(CSV_PATH) == CATALOG  # every field of every release


def test_the_packaged_catalog_is_built_once() -> None:
    assert Catalog.default() is Catalog.default()


def test_a_corrupt_packaged_module_raises_catalog_error(monkeypatch: pytest.MonkeyPatch) -> None:
    row = ("EXCHANGE_2016", "CU23", "15.1.2507.6", "2022-04-20", None)
    bad = types.ModuleType("tbes._catalog_data")
    bad.AS_OF, bad.RELEASES = "2026-08-11", (row, (*row[:3], "2022-13-01", None))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tbes._catalog_data", bad)
    monkeypatch.setattr(tbes, "_catalog_data", bad, raising=False)
    with pytest.raises(CatalogError, match=r"packaged catalog .*corrupt"):
        tbes.catalog._packaged_catalog.__wrapped__()


# --- make catalog-check: the committed module is what the importer writes ------------------------

_CHECKED = (
    "Makefile",
    "pyproject.toml",
    "tools/build_catalog.py",
    "tests/data/ExchangeBuildNumbers.csv",
    "src/tbes/_catalog_data.py",
)


def _catalog_check(root: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
    """Run `make catalog-check` in ``root`` with this interpreter, never (re)installing."""
    make = shutil.which("make")
    assert make is not None, "make is needed to run the Makefile's catalog-check"
    python = scratch / "bin" / "python"  # a wrapper, so a venv interpreter keeps its venv
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    stamp = scratch / "stamp"
    stamp.touch()  # newer than pyproject.toml: the install step is up to date
    command = [make, "-s", "-C", str(root), "catalog-check"]
    command += [f"BIN={python.parent}", f"STAMP={stamp}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_make_catalog_check_passes_on_the_committed_module(tmp_path: Path) -> None:
    done = _catalog_check(REPO_ROOT, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "_catalog_data.py is current (340 releases)" in done.stdout


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"2026-08-11", "KB5121573"', '"2026-08-12", "KB5121573"'),  # a release's date
        (
            '    ("EXCHANGE_2007", "RTM", "8.0.685.25", "2007-03-08", None, False),\n',
            "",
        ),  # a row gone
        ("# Generated by", "#  Generated by"),  # even a comment
    ],
    ids=["date", "row", "comment"],
)
def test_make_catalog_check_fails_when_the_module_is_edited_by_hand(
    tmp_path: Path, old: str, new: str
) -> None:
    root = tmp_path / "repo"
    for name in _CHECKED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / name, root / name)
    module = root / "src" / "tbes" / "_catalog_data.py"
    assert _catalog_check(root, tmp_path).returncode == 0  # the copy as committed passes
    text = module.read_text(encoding="utf-8")
    assert text.count(old) == 1
    module.write_text(text.replace(old, new), encoding="utf-8")
    done = _catalog_check(root, tmp_path)
    assert done.returncode != 0
    assert f"{module} is not what the importer makes of" in done.stdout


def test_exchange_2000_and_2003_have_no_releases_but_known_end_of_support() -> None:
    assert not [r for r in CATALOG.releases if r.product in (P.EXCHANGE_2000, P.EXCHANGE_2003)]
    with pytest.raises(CatalogError, match="Exchange 2000"):
        CATALOG.latest(P.EXCHANGE_2000)
    assert CATALOG.end_of_support(P.EXCHANGE_2000) == D(2011, 1, 11)
    assert CATALOG.end_of_support(P.EXCHANGE_2003) == D(2014, 4, 8)


# --- lifecycle and lookups -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product", "end"),
    [
        (P.EXCHANGE_2000, D(2011, 1, 11)),
        (P.EXCHANGE_2003, D(2014, 4, 8)),
        (P.EXCHANGE_2007, D(2017, 4, 11)),
        (P.EXCHANGE_2010, D(2020, 10, 13)),
        (P.EXCHANGE_2013, D(2023, 4, 11)),
        (P.EXCHANGE_2016, D(2025, 10, 14)),
        (P.EXCHANGE_2019, D(2025, 10, 14)),
        (P.EXCHANGE_SE, None),
        (P.EXCHANGE_ONLINE, None),
        (P.UNKNOWN, None),
    ],
)
def test_end_of_support_dates_are_microsofts(product: Product, end: dt.date | None) -> None:
    assert CATALOG.end_of_support(product) == end


@pytest.mark.parametrize(
    ("product", "build", "name"),
    [
        (P.EXCHANGE_2007, "8.3.517.0", "SP3 RU23"),
        (P.EXCHANGE_2010, "14.3.513.0", "SP3 RU32"),
        (P.EXCHANGE_2013, "15.0.1497.48", "CU23 Mar23SU"),
        (P.EXCHANGE_2016, "15.1.2507.72", "CU23 Aug26SU"),
        (P.EXCHANGE_2019, "15.2.1748.49", "CU15 Aug26SU"),
        (P.EXCHANGE_SE, "15.2.2562.46", "RTM Aug26SU"),
    ],
)
def test_latest_is_the_products_highest_published_build(
    product: Product, build: str, name: str
) -> None:
    latest = CATALOG.latest(product)
    assert (latest.build, latest.name) == (B(build), name)


def test_release_is_an_exact_lookup_with_microsofts_names() -> None:
    release = CATALOG.release(B("15.01.2507.061"))
    assert release == Release(
        P.EXCHANGE_2016, "CU23 Oct25SU", B("15.1.2507.61"), D(2025, 10, 14), "KB5066369"
    )
    assert release.title == "Exchange 2016 CU23 Oct25SU"
    assert CATALOG.release(B("15.1.2507.62")) is None
    assert CATALOG.release(B("8.3.83.0")) is None  # SP3 RTM is 8.3.83.6


@pytest.mark.parametrize(
    ("build", "base"),
    [
        ("15.1.2507.39", ("CU23", "15.1.2507.6")),
        ("15.2.1748.50", ("CU15", "15.2.1748.10")),  # a future SU still finds its CU
        ("15.2.1258.39", ("CU13 (2023H1)", "15.2.1258.12")),
        ("15.0.847.64", ("SP1", "15.0.847.32")),
        ("15.2.2562.99", ("RTM", "15.2.2562.17")),
        ("15.1.225.16", ("RTM", "15.1.225.42")),  # the preview shares the RTM's line
        ("8.3.83.0", ("SP3 RTM", "8.3.83.6")),  # between rollups: judged by the service pack
        ("14.3.439.0", ("SP3 RTM", "14.3.123.4")),
        ("8.0.813.0", ("RTM", "8.0.685.25")),
        ("14.0.9999.9", ("RTM", "14.0.639.21")),
        ("15.2.1800.1", None),  # a CU line the catalog does not know
        ("15.2.196.0", None),  # 2019 preview: no RTM, SP or CU on that line
        ("15.20.6319.25", None),
        ("16.0.0.0", None),
    ],
)
def test_base_release_is_the_rtm_sp_or_cu_of_the_builds_line(
    build: str, base: tuple[str, str] | None
) -> None:
    found = CATALOG.base_release(B(build))
    assert (None if found is None else (found.name, str(found.build))) == base


@pytest.mark.parametrize(
    ("name", "is_base", "update"),
    [
        ("CU23 Oct25SU", False, "Oct25SU"),
        ("CU23", True, None),
        ("CU13 (2023H1)", True, None),
        ("SP3 RU8v2", False, "RU8v2"),
        ("SP1 RTM", True, None),
        ("SP1", True, None),
        ("RTM", True, None),
        ("RTM Aug25SU", False, "Aug25SU"),
        ("RU5", False, "RU5"),
        ("Preview", False, None),
    ],
)
def test_release_names_split_into_line_and_update(
    name: str, is_base: bool, update: str | None
) -> None:
    release = Release(P.EXCHANGE_2016, name, B("15.1.2507.6"), D(2022, 4, 20))
    assert (release.is_base, release.update) == (is_base, update)


def test_catalog_is_immutable_and_sorted_by_build() -> None:
    assert isinstance(CATALOG.releases, tuple)
    assert [r.build for r in CATALOG.releases] == sorted(r.build for r in CATALOG.releases)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        CATALOG.as_of = D(2030, 1, 1)  # type: ignore[misc]
    shuffled = Catalog(releases=reversed(CATALOG.releases), as_of=CATALOG.as_of)
    assert shuffled == CATALOG
    assert hash(shuffled) == hash(CATALOG)


# --- assess: the three baselines -----------------------------------------------------------------

ONLINE_2026 = [
    ("15.2.1748.39", OK),  # 2019 CU15 Oct25SU: the minimum itself
    ("15.2.1748.49", OK),  # CU15 Aug26SU
    ("15.2.1748.50", OK),  # a future SU the catalog has never heard of
    ("15.2.1748.37", OLD),  # CU15 Sep25HU: one below
    ("15.2.1748.10", OLD),  # CU15 without any SU
    ("15.2.1544.36", OK),  # CU14 Oct25SU
    ("15.2.1544.34", OLD),  # CU14 Sep25HU
    ("15.2.1258.39", OLD),  # CU13: a line without minimum while newer lines have one
    ("15.2.1258.12", OLD),
    ("15.2.221.12", OLD),  # 2019 RTM
    ("15.2.2000.1", OK),  # a 2019 line newer than every minimum: compliant by the rule
    ("15.1.2507.39", OLD),  # 2016 CU23 Apr24HU
    ("15.1.2507.61", OK),
    ("15.1.2507.72", OK),
    ("15.1.2375.37", OLD),  # 2016 CU22, older line
    ("15.2.2562.17", OK),  # SE RTM
    ("15.2.2562.46", OK),
    ("15.2.2600.1", OK),  # a future SE CU
    ("15.0.1497.48", UNSUP),  # 2013: unsupported even fully patched
    ("14.3.513.0", UNSUP),
    ("14.3.439.0", UNSUP),
    ("8.3.83.0", UNSUP),
    ("6.5.7638.1", UNSUP),
    ("6.0.6249.0", UNSUP),
    ("15.20.6319.25", NA),
    ("15.20.8835.7", NA),
    ("16.0.0.0", NA),
    ("15.3.1.1", NA),
]

ONLINE_2023 = [
    ("8.3.517.0", UNSUP),  # 2007: unsupported under both
    ("8.3.83.0", UNSUP),
    ("6.5.7638.1", UNSUP),
    ("6.0.6249.0", UNSUP),
    ("14.3.439.0", OK),
    ("14.0.639.21", OK),
    ("15.0.1497.48", OK),  # 2013 compliant in 2023
    ("15.0.516.32", OK),
    ("15.1.2507.39", OK),
    ("15.2.1258.39", OK),
    ("15.2.2562.17", OK),
    ("15.20.6319.25", NA),
    ("16.0.0.0", NA),
]


@pytest.mark.parametrize(("build", "expected"), ONLINE_2026)
def test_exchange_online_2026_baseline(build: str, expected: Compliance) -> None:
    assert status(build, Baseline.exchange_online_2026()) is expected


@pytest.mark.parametrize(("build", "expected"), ONLINE_2023)
def test_exchange_online_2023_baseline(build: str, expected: Compliance) -> None:
    assert status(build, Baseline.exchange_online_2023()) is expected


SUPPORTED_ONLY = [
    # The last day of 2016/2019 support: the October 2025 SUs, as in the 2026 baseline.
    (D(2025, 10, 14), "15.1.2507.61", OK),
    (D(2025, 10, 14), "15.1.2507.59", OLD),
    (D(2025, 10, 14), "15.2.1544.36", OK),
    (D(2025, 10, 14), "15.2.1748.37", OLD),
    (D(2025, 10, 14), "15.2.2562.29", OK),
    (D(2025, 10, 14), "15.2.2562.27", OLD),
    (D(2025, 10, 14), "15.0.1497.48", UNSUP),
    (D(2025, 10, 15), "15.1.2507.72", UNSUP),  # the day after: 2016 and 2019 unsupported
    (D(2025, 10, 15), "15.2.1748.49", UNSUP),
    (D(2026, 8, 20), "15.2.2562.46", OK),  # SE Aug26SU is the newest SU by then
    (D(2026, 8, 20), "15.2.2562.45", OLD),
    (D(2026, 8, 20), "15.2.2562.47", OK),
    # Exchange 2013's last supported day, and the day after.
    (D(2023, 4, 11), "15.0.1497.48", OK),
    (D(2023, 4, 11), "15.0.1497.47", OLD),
    (D(2023, 4, 11), "15.0.1473.6", OLD),  # CU22 missed the 2023 SUs: out of support
    (D(2023, 4, 12), "15.0.1497.48", UNSUP),
    # 2019 CU14's release day: CU13 (N-1) keeps its Nov23SU minimum, CU12 is out.
    (D(2024, 2, 13), "15.2.1544.4", OK),
    (D(2024, 2, 13), "15.2.1258.28", OK),
    (D(2024, 2, 13), "15.2.1258.27", OLD),
    (D(2024, 2, 13), "15.2.1118.40", OLD),
    # Exchange 2007's last day: SP3 RU23; an id between rollups is judged by SP3.
    (D(2017, 4, 11), "8.3.517.0", OK),
    (D(2017, 4, 11), "8.3.83.0", OLD),
    (D(2017, 4, 11), "8.2.305.3", OLD),
    (D(2017, 4, 12), "8.3.517.0", UNSUP),
    # Exchange 2010 SP3 between rollups: 14.3.439.0 sits between RU25 (435) and RU26 (442).
    (D(2019, 1, 8), "14.3.439.0", OK),
    (D(2019, 2, 12), "14.3.439.0", OLD),
    (D(2020, 10, 13), "14.3.496.0", OK),
    (D(2020, 10, 13), "14.3.468.0", OLD),
    (D(2020, 10, 14), "14.3.513.0", UNSUP),
    (D(2010, 1, 1), "6.5.7638.1", OK),  # Exchange 2003 still supported, no minimum known
    (D(2014, 4, 9), "6.5.7638.1", UNSUP),
]


@pytest.mark.parametrize(("on", "build", "expected"), SUPPORTED_ONLY)
def test_supported_only_baseline_on_the_dates_that_matter(
    on: dt.date, build: str, expected: Compliance
) -> None:
    assert status(build, Baseline.supported_only(on, CATALOG)) is expected


@pytest.mark.parametrize(
    ("on", "product", "minimum"),
    [
        (D(2025, 10, 14), P.EXCHANGE_2016, ("15.1.2507.61",)),
        (D(2025, 10, 14), P.EXCHANGE_2019, ("15.2.1544.36", "15.2.1748.39")),
        (D(2025, 10, 14), P.EXCHANGE_SE, ("15.2.2562.29",)),
        (D(2023, 4, 11), P.EXCHANGE_2019, ("15.2.986.42", "15.2.1118.26")),
        # 2016 CU22 got Nov22SU alongside CU23, then no January 2023 SU: N-1 ends there.
        (D(2022, 11, 8), P.EXCHANGE_2016, ("15.1.2375.37", "15.1.2507.16")),
        (D(2023, 1, 10), P.EXCHANGE_2016, ("15.1.2507.17",)),
        # 2019 CU15's release day: CU14 keeps its Nov24SUv2 minimum.
        (D(2025, 2, 10), P.EXCHANGE_2019, ("15.2.1544.14", "15.2.1748.10")),
        # 2010 SP2 RU7 (3 Aug 2013) and SP3 RU2 (8 Aug 2013) were one wave: SP2 stays.
        (D(2013, 8, 8), P.EXCHANGE_2010, ("14.2.375.0", "14.3.158.1")),
    ],
)
def test_supported_only_minimum_is_the_latest_update_of_each_serviced_line(
    on: dt.date, product: Product, minimum: tuple[str, ...]
) -> None:
    assert Baseline.supported_only(on, CATALOG).minimum[product] == tuple(map(B, minimum))


def test_supported_only_on_the_last_supported_day_matches_the_2026_minimums() -> None:
    last_day = Baseline.supported_only(D(2025, 10, 14), CATALOG)
    online = Baseline.exchange_online_2026()
    for product in (P.EXCHANGE_2016, P.EXCHANGE_2019):
        assert last_day.minimum[product] == online.minimum[product]
    assert last_day.unsupported == online.unsupported


def test_supported_only_marks_products_past_end_of_support() -> None:
    later = Baseline.supported_only(D(2026, 8, 20), CATALOG)
    assert later.unsupported == {p for p in P if p.on_premises} - {P.EXCHANGE_SE}
    assert set(later.minimum) == {P.EXCHANGE_SE}


def test_supported_only_needs_its_catalog_given_and_never_reads_the_packaged_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Issue 14 item 6: no silent fall-back to the packaged catalog.
    monkeypatch.setattr(Catalog, "default", _no_packaged_catalog)
    with pytest.raises(TypeError):
        Baseline.supported_only(D(2025, 10, 14))  # type: ignore[call-arg]
    with pytest.raises(InvalidValueError, match="catalog"):
        Baseline.supported_only(D(2025, 10, 14), None)  # type: ignore[arg-type]
    assert Baseline.supported_only(D(2025, 10, 14), CATALOG).minimum


def _no_packaged_catalog() -> Catalog:
    raise AssertionError("the packaged catalog was read")


def test_supported_only_takes_an_aware_datetime_as_its_utc_day_and_refuses_a_naive_one() -> None:
    evening = dt.datetime(2025, 10, 14, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    assert Baseline.supported_only(evening, CATALOG) == Baseline.supported_only(
        D(2025, 10, 15), CATALOG
    )
    with pytest.raises(NaiveDatetimeError):
        Baseline.supported_only(dt.datetime(2025, 10, 14), CATALOG)


# --- assess: release, recommendation and reason --------------------------------------------------


def test_outdated_reason_names_build_line_and_minimum() -> None:
    result = assess(B("15.1.2507.39"), baseline=Baseline.exchange_online_2026(), catalog=CATALOG)
    assert result == Assessment(
        status=OLD,
        product=P.EXCHANGE_2016,
        release=CATALOG.release(B("15.1.2507.39")),
        recommended=(B("15.1.2507.61"),),
        reason="Exchange 2016 CU23 build 15.1.2507.39 is below the minimum 15.1.2507.61 (Oct25SU) "
        "for its CU line.",
    )


def test_recommended_lists_the_products_minimums_newest_first() -> None:
    result = assess(B("15.2.1258.39"), baseline=Baseline.exchange_online_2026(), catalog=CATALOG)
    assert result.recommended == (B("15.2.1748.39"), B("15.2.1544.36"))
    assert "15.2.1748.39 (CU15 Oct25SU)" in result.reason
    assert "15.2.1544.36 (CU14 Oct25SU)" in result.reason


def test_unknown_build_on_a_known_line_reports_the_lines_release() -> None:
    result = assess(B("15.2.1748.50"), baseline=Baseline.exchange_online_2026(), catalog=CATALOG)
    assert result.release is not None
    assert (result.release.name, result.status) == ("CU15", OK)
    assert "CU15" in result.reason


def test_unsupported_recommends_the_newest_supported_products_builds() -> None:
    result = assess(B("15.0.1497.48"), baseline=Baseline.exchange_online_2026(), catalog=CATALOG)
    # SE has no minimum in the 2026 baseline, so its newest published build is recommended.
    assert result.recommended == (B("15.2.2562.46"),)
    assert "Exchange 2013" in result.reason
    assert "2023-04-11" in result.reason
    assert "Exchange SE" in result.reason
    later = Baseline.supported_only(D(2025, 10, 14), CATALOG)
    assert assess(B("14.3.513.0"), baseline=later, catalog=CATALOG).recommended == (
        B("15.2.2562.29"),
    )


def test_supported_products_without_minimum_get_no_recommendation() -> None:
    result = assess(B("15.2.2562.17"), baseline=Baseline.exchange_online_2026(), catalog=CATALOG)
    assert (result.status, result.recommended) == (OK, ())


@pytest.mark.parametrize(
    ("build", "product"),
    [("15.20.6319.25", P.EXCHANGE_ONLINE), ("16.0.0.0", P.UNKNOWN), ("0.0.0.0", P.UNKNOWN)],
)
def test_cloud_and_unknown_builds_fail_open_even_if_marked_unsupported(
    build: str, product: Product
) -> None:
    everything = Baseline(minimum={}, unsupported=frozenset(P))
    result = assess(B(build), baseline=everything, catalog=CATALOG)
    assert (result.status, result.product, result.recommended) == (NA, product, ())
    assert build in result.reason


def test_a_line_with_two_minimums_is_held_to_the_lower() -> None:
    twice = Baseline(
        minimum={P.EXCHANGE_2019: (B("15.2.1748.39"), B("15.2.1748.46"))}, unsupported=()
    )
    assert status("15.2.1748.42", twice) is OK
    assert status("15.2.1748.37", twice) is OLD


# --- Baseline values -----------------------------------------------------------------------------


def test_baselines_compare_and_hash_by_value() -> None:
    first = Baseline(
        minimum={P.EXCHANGE_2019: [B("15.2.1748.39"), B("15.2.1544.36")]},
        unsupported={P.EXCHANGE_2013},
    )
    second = Baseline(
        minimum={P.EXCHANGE_2019: (B("15.2.1544.36"), B("15.2.1748.39"), B("15.2.1544.36"))},
        unsupported=frozenset({P.EXCHANGE_2013}),
    )
    assert first == second
    assert hash(first) == hash(second)
    assert first.minimum[P.EXCHANGE_2019] == (B("15.2.1544.36"), B("15.2.1748.39"))
    assert first != Baseline.exchange_online_2026()
    assert len({Baseline.exchange_online_2026(), Baseline.exchange_online_2026()}) == 1


def test_baseline_minimum_cannot_be_changed() -> None:
    baseline = Baseline.exchange_online_2026()
    with pytest.raises(TypeError):
        baseline.minimum[P.EXCHANGE_SE] = (B("15.2.2562.17"),)  # type: ignore[index]


def test_products_with_no_minimum_builds_are_dropped() -> None:
    assert Baseline(minimum={P.EXCHANGE_SE: ()}, unsupported=()) == Baseline(
        minimum={}, unsupported=()
    )


@pytest.mark.parametrize(
    ("minimum", "unsupported", "message"),
    [
        ({P.EXCHANGE_2019: (B("15.1.2507.61"),)}, (), "15.1.2507.61"),
        ({P.EXCHANGE_2019: (B("15.2.2562.17"),)}, (), "Exchange 2019"),  # an SE build
        ({P.EXCHANGE_2016: B("15.1.2507.61")}, (), "tuple of builds"),
        ({P.EXCHANGE_2016: ("15.1.2507.61",)}, (), "15.1.2507.61"),
        ({"EXCHANGE_2016": (B("15.1.2507.61"),)}, (), "EXCHANGE_2016"),
        ({P.EXCHANGE_ONLINE: (B("15.20.1.1"),)}, (), "on-premises"),
        ({}, ("EXCHANGE_2013",), "EXCHANGE_2013"),
    ],
)
def test_invalid_baselines_raise_catalog_error_naming_the_value(
    minimum: object, unsupported: object, message: str
) -> None:
    with pytest.raises(CatalogError, match=message):
        Baseline(minimum=minimum, unsupported=unsupported)  # type: ignore[arg-type]


# --- serialisation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "baseline",
    [
        Baseline.exchange_online_2023(),
        Baseline.exchange_online_2026(),
        Baseline.supported_only(D(2024, 2, 13), CATALOG),
    ],
    ids=["2023", "2026", "supported_only"],
)
def test_baselines_round_trip_through_serde(baseline: Baseline) -> None:
    assert loads(dumps(baseline), Baseline) == baseline


def test_baseline_serialises_in_a_canonical_order() -> None:
    data = json.loads(dumps(Baseline.exchange_online_2026()))
    assert data["unsupported"] == [
        "EXCHANGE_2000",
        "EXCHANGE_2003",
        "EXCHANGE_2007",
        "EXCHANGE_2010",
        "EXCHANGE_2013",
    ]
    assert data["minimum"] == {
        "EXCHANGE_2016": ["15.1.2507.61"],
        "EXCHANGE_2019": ["15.2.1544.36", "15.2.1748.39"],
    }


def test_release_assessment_and_catalog_round_trip_through_serde() -> None:
    release = CATALOG.latest(P.EXCHANGE_SE)
    assert json.loads(dumps(release)) == {
        "product": "EXCHANGE_SE",
        "name": "RTM Aug26SU",
        "build": "15.2.2562.46",
        "date": "2026-08-11",
        "kb": "KB5121573",
        "esu": False,
    }
    assert loads(dumps(release), Release) == release
    for build in ("15.1.2507.39", "15.0.1497.48", "16.0.0.0"):
        result = assess(B(build), baseline=Baseline.exchange_online_2026(), catalog=CATALOG)
        assert loads(dumps(result), Assessment) == result
    assert loads(dumps(CATALOG), Catalog) == CATALOG


def test_dump_and_load_give_back_the_same_catalog(tmp_path: Path) -> None:
    target = tmp_path / "override.json"
    CATALOG.dump(target)
    assert Catalog.load(target) == CATALOG
    assert json.loads(target.read_text(encoding="utf-8"))["schema"] == 1


# --- unreadable catalogs -------------------------------------------------------------------------

_GOOD_ROW = {
    "product": "EXCHANGE_2016",
    "name": "CU23",
    "build": "15.1.2507.6",
    "date": "2022-04-20",
    "kb": "KB5011155",
}


def _catalog_text(**changes: object) -> str:
    data: dict[str, object] = {"schema": 1, "as_of": "2026-08-11", "releases": [_GOOD_ROW]}
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        (_catalog_text(schema=2), "unsupported catalog schema 2"),
        (_catalog_text(schema="1"), "unsupported catalog schema '1'"),
        (json.dumps({"as_of": "2026-08-11", "releases": []}), "unsupported catalog schema None"),
        (_catalog_text(extra=1), "extra"),
        (_catalog_text(as_of="11/08/2026"), "as_of"),
        (_catalog_text(as_of="2020-01-01"), "older than the newest release"),
        (_catalog_text(releases={}), "releases must be a list"),
        (_catalog_text(releases=[{**_GOOD_ROW, "build": "15.1.x"}]), "release #1.*15.1.x"),
        (_catalog_text(releases=[{**_GOOD_ROW, "build": "15.2.1748.39"}]), "not Exchange 2016"),
        (_catalog_text(releases=[{**_GOOD_ROW, "product": "EXCHANGE_2099"}]), "EXCHANGE_2099"),
        (_catalog_text(releases=[{**_GOOD_ROW, "date": "2022-13-01"}]), "release #1.*date"),
        (_catalog_text(releases=[{**_GOOD_ROW, "kb": "5011155"}]), "5011155"),
        (_catalog_text(releases=[{**_GOOD_ROW, "name": ""}]), "release name"),
        (_catalog_text(releases=[_GOOD_ROW, {"product": "EXCHANGE_2016"}]), "release #2.*keys"),
        (_catalog_text(releases=[_GOOD_ROW, {**_GOOD_ROW, "name": "X"}]), "listed twice"),
    ],
)
def test_unreadable_catalog_file_raises_catalog_error_naming_file_and_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "broken.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError, match=problem) as caught:
        Catalog.load(path)
    assert str(path) in str(caught.value)


def test_missing_catalog_file_raises_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    with pytest.raises(CatalogError, match=f"cannot read the catalog file {path}"):
        Catalog.load(path)
    with pytest.raises(CatalogError, match=f"cannot read the CSV file {path}"):
        Catalog.from_microsoft_csv(path)


def test_catalog_error_when_writing_fails(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot write"):
        CATALOG.dump(tmp_path / "no-such-dir" / "catalog.json")


# --- Microsoft's CSV -----------------------------------------------------------------------------

_HEADER = "Product Name,Build Number,Date,KB,Blog\n"


def test_csv_import_reads_microsofts_forms(tmp_path: Path) -> None:
    path = tmp_path / "builds.csv"
    path.write_text(
        "\ufeff" + _HEADER + "Exchange 2016 CU23,15.01.2507.006,04/20/2022,KB5011155,https://x\n"
        "Exchange 2016 CU23 May22SU,15.1.2507.9,5/10/2022,,\n"
        '"Exchange 2019 CU13 (2023H1)",15.2.1258.12,5/3/2023,KB5020999,\n'
        "\n",
        encoding="utf-8",
    )
    catalog = Catalog.from_microsoft_csv(path)
    assert catalog.releases == (
        Release(P.EXCHANGE_2016, "CU23", B("15.1.2507.6"), D(2022, 4, 20), "KB5011155"),
        Release(P.EXCHANGE_2016, "CU23 May22SU", B("15.1.2507.9"), D(2022, 5, 10), None),
        Release(P.EXCHANGE_2019, "CU13 (2023H1)", B("15.2.1258.12"), D(2023, 5, 3), "KB5020999"),
    )
    assert catalog.as_of == D(2023, 5, 3)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("", "line 1: expected the header"),
        ("Name,Build,Date\n", "line 1: expected the header"),
        (_HEADER, "no releases"),
        (_HEADER + "Exchange 2016 CU23,15.1.2507.6,4/20/2022\n", "line 2: expected 5 columns"),
        (_HEADER + "Exchange 2016 CU23,15.1.x,4/20/2022,,\n", "line 2: .*15.1.x"),
        (_HEADER + "Exchange 2016 CU23,15.1.2507.6,2022-04-20,,\n", "line 2: date '2022-04-20'"),
        (_HEADER + "Exchange 2016 CU23,15.1.2507.6,13/20/2022,,\n", "line 2: date '13/20/2022'"),
        (_HEADER + "Exchange 2016 CU23,15.1.2507.6,2/30/2022,,\n", "line 2: date '2/30/2022'"),
        (_HEADER + "Exchange 2016 CU23,15.2.1748.39,4/20/2022,,\n", "line 2: .*Exchange 2019"),
        (_HEADER + "Exchange 2099 CU1,15.1.2507.6,4/20/2022,,\n", "line 2: .*Exchange 2099"),
        (_HEADER + "Exchange 2016,15.1.2507.6,4/20/2022,,\n", "line 2: .*release name"),
        (_HEADER + "Exchange 2016 CU23,15.1.2507.6,4/20/2022,5011155,\n", "line 2: .*5011155"),
        (
            _HEADER + "Exchange 2016 CU23,15.1.2507.6,4/20/2022,,\n"
            "Exchange 2016 CU23 again,15.01.2507.006,4/20/2022,,\n",
            "line 3: build 15.1.2507.6 is already listed on line 2",
        ),
        (_HEADER + 'Exchange 2016 CU23,"15.1.2507.6,4/20/2022,,\n', "line .*malformed CSV"),
    ],
)
def test_malformed_csv_raises_catalog_error_naming_file_line_and_problem(
    tmp_path: Path, body: str, problem: str
) -> None:
    path = tmp_path / "ExchangeBuildNumbers.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(CatalogError, match=problem) as caught:
        Catalog.from_microsoft_csv(path)
    assert str(path) in str(caught.value)


def test_csv_that_is_not_utf8_raises_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(_HEADER.encode() + b"Exchange 2016 CU23 \xe9,15.1.2507.6,4/20/2022,,\n")
    with pytest.raises(CatalogError, match=r"latin1\.csv: not utf-8"):
        Catalog.from_microsoft_csv(path)


# --- ESU-only releases -----------------------------------------------------------------------


def test_updates_of_2016_and_2019_after_their_end_of_support_are_marked_esu() -> None:
    # Microsoft's list names them like public updates; the ESU period began on 15 Oct 2025.
    imported = Catalog.from_microsoft_csv(BUILD_LIST_CSV)
    esu = {release.build for release in imported.releases if release.esu}
    assert B("15.1.2507.63") in esu  # 2016 CU23 Dec25SU
    assert B("15.1.2507.72") in esu  # 2016 CU23 Aug26SU, the ESU build the reference names
    assert B("15.2.1748.49") in esu  # 2019 CU15 Aug26SU
    assert B("15.1.2507.61") not in esu  # Oct25SU, the last public one
    assert B("15.2.2562.35") not in esu  # SE Dec25SU: SE is supported
    assert {CATALOG.release(build) for build in esu} == {r for r in CATALOG.releases if r.esu}
    assert all(
        r.product in {P.EXCHANGE_2016, P.EXCHANGE_2019} and r.date > D(2025, 10, 14)
        for r in CATALOG.releases
        if r.esu
    )


def test_a_catalog_file_without_the_esu_key_gets_the_mark_from_the_lifecycle() -> None:
    text = CATALOG.to_json()
    assert '"esu": true' in text
    older = text.replace(', "esu": true', "").replace(', "esu": false', "")
    assert '"esu"' not in older
    assert Catalog.loads(older) == CATALOG


def test_a_base_release_cannot_be_esu() -> None:
    with pytest.raises(CatalogError, match="starts a line"):
        Release(P.EXCHANGE_2016, "CU23", B("15.1.2507.6"), D(2025, 12, 9), esu=True)
