"""``tbes report`` streams: rows go out as they are read, and --output is all or nothing."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from report_support import fabrikam_state
from tbes.cli import cli
from tbes.errors import StoreError
from tbes.state import ServerState
from tbes.store import UnreadableRow
from tbes.store.sqlite import SQLiteStore

AT = "2026-02-15T00:00:00Z"
SERVERS = [f"ex{index}.fabrikam.example" for index in range(5)]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "tbes.db"
    with SQLiteStore(path) as store:
        for server in SERVERS:
            state = fabrikam_state(server, "15.1.2507.39", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
            store.put(state, expected_version=None)
    return path


@pytest.fixture
def failing_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store lists two rows, then its back end fails."""
    entries = SQLiteStore.entries

    def two_then_fail(
        self: SQLiteStore, tenant: str | None = None
    ) -> Iterator[ServerState | UnreadableRow]:
        listed = entries(self, tenant)
        yield next(listed)
        yield next(listed)
        raise StoreError("disk I/O error while reading the next page")

    monkeypatch.setattr(SQLiteStore, "entries", two_then_fail)


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    """A directory of its own for the report, apart from the database's -wal and -shm."""
    path = tmp_path / "reports"
    path.mkdir()
    return path


def test_output_file_holds_the_whole_report_and_nothing_is_left_beside_it(
    db: Path, outdir: Path
) -> None:
    out = outdir / "report.csv"
    result = run("report", "--db", str(db), "--format", "csv", "--at", AT, "-o", str(out))
    assert result.exit_code == 0, result.output
    records = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert [record["server"] for record in records] == SERVERS
    assert sorted(path.name for path in outdir.iterdir()) == ["report.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as a new file, not a private temp


@pytest.mark.usefixtures("failing_store")
@pytest.mark.parametrize("fmt", ["table", "json", "csv", "html"])
def test_a_report_that_fails_midway_leaves_no_file(db: Path, outdir: Path, fmt: str) -> None:
    out = outdir / "report.out"
    result = run("report", "--db", str(db), "--format", fmt, "--at", AT, "-o", str(out))
    assert result.exit_code == 2
    assert "disk I/O error" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()
    assert list(outdir.iterdir()) == []


@pytest.mark.usefixtures("failing_store")
def test_a_report_that_fails_midway_keeps_the_previous_file(db: Path, outdir: Path) -> None:
    out = outdir / "report.csv"
    out.write_text("yesterday's report\n", encoding="utf-8")
    result = run("report", "--db", str(db), "--format", "csv", "--at", AT, "-o", str(out))
    assert result.exit_code == 2
    assert out.read_text(encoding="utf-8") == "yesterday's report\n"
    assert list(outdir.iterdir()) == [out]


@pytest.mark.usefixtures("failing_store")
def test_on_standard_output_the_rows_read_before_a_failure_are_out(db: Path) -> None:
    result = run("report", "--db", str(db), "--format", "csv", "--at", AT)
    assert result.exit_code == 2
    records = list(csv.reader(io.StringIO(result.stdout, newline="")))
    assert [record[0] for record in records[1:]] == SERVERS[:2]
    assert "disk I/O error" in result.stderr


def test_output_through_a_symbolic_link_replaces_the_file_it_names(db: Path, outdir: Path) -> None:
    target = outdir / "latest-2026.csv"
    target.write_text("old\n", encoding="utf-8")
    link = outdir / "latest.csv"
    link.symlink_to(target.name)
    result = run("report", "--db", str(db), "--format", "csv", "--at", AT, "-o", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    assert target.read_text(encoding="utf-8").startswith("ServerFQDN,Build,")
    assert sorted(path.name for path in outdir.iterdir()) == ["latest-2026.csv", "latest.csv"]
