"""``tbes pause`` refuses a server never seen unless ``--force`` (issue 13, item 5)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from tbes.cli import cli
from tbes.store import SQLiteStore

SERVER = "ex16.fabrikam.example"
AT = "2026-01-05T09:00:00Z"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def empty_db(tmp_path: Path) -> Path:
    db = tmp_path / "tbes.db"
    SQLiteStore(db).close()
    return db


def stored(db: Path) -> tuple[object, object]:
    store = SQLiteStore(db)
    try:
        return store.get(SERVER), store.get_ledger("Fabrikam")
    finally:
        store.close()


def test_pausing_a_server_never_seen_is_one_line_error_and_charges_nothing(tmp_path: Path) -> None:
    db = empty_db(tmp_path)
    result = run("pause", "--db", str(db), "--tenant", "Fabrikam", SERVER, "10", "--at", AT)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tbes: error: ")
    assert f"no server {SERVER} has been seen" in lines[0]
    assert "Traceback" not in result.output
    assert stored(db) == (None, None)


def test_force_pauses_a_server_not_seen_yet(tmp_path: Path) -> None:
    db = empty_db(tmp_path)
    result = run(
        "pause", "--db", str(db), "--tenant", "Fabrikam", SERVER, "10", "--at", AT, "--force"
    )
    assert result.exit_code == 0, result.output
    assert f"Paused {SERVER} (tenant Fabrikam) for 10 days" in result.output
    state, ledger = stored(db)
    assert state is not None
    assert ledger is not None
