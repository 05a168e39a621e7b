"""`tbes server show`: the pauses table marks the pause in force at --at, readably."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from click.testing import CliRunner, Result
from hypothesis import example, given, settings
from hypothesis import strategies as st

from report_support import fabrikam_state
from tbes.cli import cli
from tbes.store import SQLiteStore

UTC = dt.UTC
FIRST = dt.datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
BUILD = "15.1.2507.39"  # Exchange 2016, outdated under exchange_online_2026
MARKER = "◀ now"


def _show(db: Path, server: str, at: dt.datetime) -> Result:
    # "--" ends the options: an id may start with "-" (Hypothesis finds "-0").
    return CliRunner().invoke(
        cli,
        ["server", "show", "--db", str(db), "--at", at.isoformat(), "--", server],
        catch_exceptions=False,
    )


@settings(max_examples=25)
@example(server="-0", gap=0, days=3, offset=1)  # the first pause in force
@example(server="ex2007.fabrikam.example", gap=2, days=1, offset=9)  # the second one
@example(server="ex2007.fabrikam.example", gap=2, days=2, offset=3)  # between them: none
@given(
    server=st.text(min_size=1, max_size=12),
    gap=st.integers(min_value=0, max_value=5),
    days=st.integers(min_value=1, max_value=5),
    offset=st.integers(min_value=-2, max_value=14),
)
def test_the_pause_in_force_is_marked_and_no_other(
    server: str, gap: int, days: int, offset: int
) -> None:
    first_start = dt.date(2026, 3, 1)
    second_start = first_start + dt.timedelta(days=days + gap)
    pauses = ((first_start, days), (second_start, 3))
    at = dt.datetime.combine(first_start + dt.timedelta(days=offset), dt.time(12), UTC)
    with tempfile.TemporaryDirectory() as work:
        db = Path(work) / "tbes.db"
        store = SQLiteStore(db)
        state = fabrikam_state(server, BUILD, FIRST, pauses)
        store.put(state, expected_version=None)
        store.close()
        result = _show(db, server, at)
    assert result.exit_code == 0, result.output
    table = result.output.split("Pauses", 1)[1]  # the table, after its title
    assert "True" not in table
    assert "False" not in table
    for start, length in pauses:
        last = start + dt.timedelta(days=length - 1)
        row = next(
            line
            for line in table.splitlines()
            if start.isoformat() in line and last.isoformat() in line
        )
        in_force = start <= at.date() <= last
        assert (MARKER in row) == in_force, row
