"""Reading a SQLite database without writing to it: the read-only store and the commands
that only read (``tbes report``, ``tbes quota``), and a report that shows every readable
row when one is not.

A read-only file must really be read-only to the process: as root (where permission bits
do not stop a write) the child runs without the capabilities that override them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tbes.cli import cli
from tbes.errors import StoreError
from tbes.ledger import Pause, PauseLedger
from tbes.serde import dumps
from tbes.store import SQLiteStore, Versioned
from test_sqlite_store import write_locked_elsewhere
from test_store_contract import state

AT = "2026-04-01T00:00:00Z"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def siblings(path: Path) -> set[str]:
    return {p.name for p in path.parent.iterdir()}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "tbes.db"
    with SQLiteStore(path) as store:
        store.put(state(), expected_version=None)
        store.put(state("mx2.contoso.com"), expected_version=None)
        ledger = PauseLedger("contoso", 90, (Pause("mx1.contoso.com", dt.date(2026, 3, 10), 5),))
        store.put_ledger(ledger, expected_version=None)
    return path


@pytest.fixture
def foreign(tmp_path: Path) -> Path:
    """Another application's SQLite database (rollback journal, its own table)."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE mail (id INTEGER PRIMARY KEY, subject TEXT)")
    conn.execute("INSERT INTO mail (subject) VALUES ('hello')")
    conn.commit()
    conn.close()
    return path


# ---- the read-only store --------------------------------------------------------------------


def test_a_read_only_store_reads_and_refuses_every_write(db: Path) -> None:
    before = digest(db)
    store = SQLiteStore(db, read_only=True)
    assert store.get("mx1.contoso.com") == Versioned(state(), 1)
    assert [s.server_id for s in store.states()] == ["mx1.contoso.com", "mx2.contoso.com"]
    assert store.get_ledger("contoso") is not None
    assert store.schema_version() == 4
    with pytest.raises(StoreError, match="read-only"):
        store.put(state(notified_stage=1), expected_version=1)
    with pytest.raises(StoreError, match="read-only"):
        store.put_ledger(PauseLedger("fabrikam", 90), expected_version=None)
    store.close()
    assert digest(db) == before
    assert SQLiteStore(db).get("mx1.contoso.com") == Versioned(state(), 1)


def test_a_read_only_store_refuses_another_applications_database_untouched(
    foreign: Path,
) -> None:
    before, files = digest(foreign), siblings(foreign)
    with pytest.raises(StoreError, match="is not a tbes database"):
        SQLiteStore(foreign, read_only=True)
    assert digest(foreign) == before  # no tbes tables, journal mode unchanged
    assert siblings(foreign) == files  # no -wal or -shm beside it
    conn = sqlite3.connect(foreign)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()


def test_a_read_only_store_never_creates_a_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"missing\.db"):
        SQLiteStore(tmp_path / "missing.db", read_only=True)
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_store_refuses_a_newer_tbes(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("UPDATE tbes_schema SET version = 9")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="upgrade tbes"):
        SQLiteStore(db, read_only=True)


def test_a_read_only_store_reads_an_older_schema_without_migrating_it(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP INDEX tbes_servers_by_tenant")
    conn.execute("UPDATE tbes_schema SET version = 1")
    conn.commit()
    conn.close()
    store = SQLiteStore(db, read_only=True)
    assert [s.server_id for s in store.states("contoso")] == [
        "mx1.contoso.com",
        "mx2.contoso.com",
    ]
    assert store.schema_version() == 1
    store.close()


def test_a_read_only_store_reads_while_another_process_writes(db: Path) -> None:
    with write_locked_elsewhere(db):
        store = SQLiteStore(db, read_only=True)
        assert store.get("mx1.contoso.com") == Versioned(state(), 1)
        store.close()


# ---- a read-only file in a read-only directory --------------------------------------------

_READ = """
import sys
from tbes.errors import StoreError
from tbes.store import SQLiteStore
try:
    store = SQLiteStore(sys.argv[1], read_only=True)
    print(",".join(s.server_id for s in store.states()))
except StoreError as exc:
    print("StoreError:", exc)
"""


def _unprivileged(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``args`` so that file permissions bind: as root, without the override."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "running as root needs setpriv (util-linux) to drop rights"
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def locked_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory to make read-only; writable again afterwards, for the clean-up."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    yield folder
    folder.chmod(0o755)
    for each in folder.iterdir():
        each.chmod(0o644)


def _freeze(folder: Path) -> None:
    for each in folder.iterdir():
        each.chmod(0o444)
    folder.chmod(0o555)


def test_the_child_really_cannot_write(locked_dir: Path) -> None:
    # Guards the tests below: without this, a root child would write anyway.
    _freeze(locked_dir)
    probe = "import sys; open(sys.argv[1], 'w')"
    done = _unprivileged([sys.executable, "-c", probe, str(locked_dir / "x")])
    assert done.returncode != 0
    assert "Permission denied" in done.stderr


def test_a_cleanly_closed_database_in_a_read_only_directory_is_read(
    db: Path, locked_dir: Path
) -> None:
    copy = locked_dir / "tbes.db"
    shutil.copy(db, copy)
    _freeze(locked_dir)
    done = _unprivileged([sys.executable, "-c", _READ, str(copy)])
    assert done.stdout.strip() == "mx1.contoso.com,mx2.contoso.com", done.stderr
    assert siblings(copy) == {"tbes.db"}
    report = _unprivileged(
        [
            sys.executable,
            "-c",
            "from tbes.cli import main; main()",
            "report",
            "--db",
            str(copy),
            "--format",
            "csv",
            "--at",
            AT,
        ]
    )
    assert report.returncode == 0, report.stderr
    assert "mx1.contoso.com" in report.stdout
    assert "mx2.contoso.com" in report.stdout
    quota = _unprivileged(
        [
            sys.executable,
            "-c",
            "from tbes.cli import main; main()",
            "quota",
            "--db",
            str(copy),
            "--tenant",
            "contoso",
            "--year",
            "2026",
            "--at",
            AT,
        ]
    )
    assert quota.returncode == 0, quota.stderr
    assert "5 of 90 pause days used" in quota.stdout


def _live_copy(db: Path, folder: Path) -> Path:
    """A copy of ``db`` in ``folder`` with one more server committed only to its -wal."""
    copy = folder / "tbes.db"
    shutil.copy(db, copy)
    writer = sqlite3.connect(copy, isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute(
        "INSERT INTO tbes_servers VALUES ('mx3.contoso.com', 'contoso', 1, 1, ?)",
        (dumps(state("mx3.contoso.com")),),
    )
    # Keep the log: copy the three files aside before the writer's close checkpoints them.
    for suffix in ("", "-wal", "-shm"):
        shutil.copy(folder / f"tbes.db{suffix}", folder / f"keep.db{suffix}")
    writer.close()
    for suffix in ("", "-wal", "-shm"):
        os.replace(folder / f"keep.db{suffix}", folder / f"tbes.db{suffix}")
    return copy


def test_a_read_only_directory_with_the_log_and_shm_reads_the_log_too(
    db: Path, locked_dir: Path
) -> None:
    copy = _live_copy(db, locked_dir)
    _freeze(locked_dir)
    done = _unprivileged([sys.executable, "-c", _READ, str(copy)])
    assert done.stdout.strip() == "mx1.contoso.com,mx2.contoso.com,mx3.contoso.com", done.stderr


def test_a_log_that_cannot_be_read_is_refused_not_skipped(db: Path, locked_dir: Path) -> None:
    copy = _live_copy(db, locked_dir)
    (locked_dir / "tbes.db-shm").unlink()
    _freeze(locked_dir)
    done = _unprivileged([sys.executable, "-c", _READ, str(copy)])
    assert done.stdout.startswith("StoreError:"), done.stdout + done.stderr
    assert "write-ahead log" in done.stdout


# ---- the commands ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["report"], ["report", "--format", "json"], ["quota", "--tenant", "contoso"]],
    ids=["report", "report json", "quota"],
)
def test_reading_commands_refuse_another_applications_database_untouched(
    foreign: Path, command: list[str]
) -> None:
    before, files = digest(foreign), siblings(foreign)
    result = run(command[0], "--db", str(foreign), *command[1:])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert "is not a tbes database" in lines[0]
    assert digest(foreign) == before
    assert siblings(foreign) == files


def test_reading_commands_work_on_a_read_only_file(db: Path) -> None:
    db.chmod(0o444)  # in a writable directory: SQLite may make its -wal and -shm there
    cli_main = "from tbes.cli import main; main()"
    report = _unprivileged(
        [sys.executable, "-c", cli_main, "report", "--db", str(db), "--format", "csv", "--at", AT]
    )
    assert report.returncode == 0, report.stderr
    assert "mx2.contoso.com" in report.stdout
    db.chmod(0o644)


# ---- a report with an unreadable row (extra B) ----------------------------------------------


def _plant(db: Path, server_id: str, version: object, data: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO tbes_servers VALUES (?, 'contoso', ?, 1, ?)", (server_id, version, data)
    )
    conn.commit()
    conn.close()


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_a_report_shows_every_readable_row_and_marks_the_unreadable_one(db: Path, fmt: str) -> None:
    _plant(db, "mx15.contoso.com", 1, '{"not": "a state"}\x1b[31m')
    _plant(db, "mx16.contoso.com", 0, dumps(state("mx16.contoso.com")))
    result = run("report", "--db", str(db), "--format", fmt, "--at", AT)
    assert result.exit_code == 1
    for readable in ("mx1.contoso.com", "mx2.contoso.com"):
        assert readable in result.stdout
    assert "mx15" not in result.stdout
    assert "mx16" not in result.stdout
    marks = result.stderr.splitlines()
    assert len(marks) == 2
    assert "server 'mx15.contoso.com'" in marks[0]
    assert "server 'mx16.contoso.com'" in marks[1]
    assert "version 0" in marks[1]
    assert "\x1b" not in result.stderr  # stored text reaches the terminal escaped


def test_a_report_without_unreadable_rows_exits_0(db: Path) -> None:
    result = run("report", "--db", str(db), "--at", AT)
    assert result.exit_code == 0
    assert result.stderr == ""
