"""Properties of stage tables: valid tables keep their invariants, invalid ones are refused."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import stage_tables

from tbes.errors import StageTableError
from tbes.serde import converter
from tbes.stages import DEFAULT_STAGE_TABLE, Stage, StageTable

US = dt.timedelta(microseconds=1)

# Offsets from well before detection to well past any generated table's terminal stage.
elapsed = st.timedeltas(min_value=dt.timedelta(days=-100), max_value=dt.timedelta(days=5000))
tables = st.one_of(st.just(DEFAULT_STAGE_TABLE), stage_tables())


@given(tables, elapsed, elapsed)
def test_stage_at_never_goes_back_as_time_passes(
    table: StageTable, a: dt.timedelta, b: dt.timedelta
) -> None:
    early, late = sorted((a, b))
    assert table.stage_at(early).number <= table.stage_at(late).number


@given(tables, elapsed)
def test_the_stage_at_a_time_started_at_or_before_it_and_ends_after_it(
    table: StageTable, x: dt.timedelta
) -> None:
    stage = table.stage_at(x)
    clamped = max(x, dt.timedelta(0))
    assert table.start_of(stage.number) <= clamped
    if stage.days is None:
        assert stage.number == len(table)
        assert table.next_start(x) is None
    else:
        following = table.start_of(stage.number + 1)
        assert clamped < following
        assert table.next_start(x) == following


@given(tables, elapsed)
def test_negative_elapsed_counts_as_zero(table: StageTable, x: dt.timedelta) -> None:
    assert table.stage_at(-abs(x)) == table.stage_at(dt.timedelta(0)) == table.stages[0]


@given(tables)
def test_each_stage_starts_where_the_previous_one_ends(table: StageTable) -> None:
    assert table.start_of(1) == dt.timedelta(0)
    for stage in table.stages[:-1]:
        assert stage.days is not None
        nxt = table.start_of(stage.number + 1)
        assert nxt - table.start_of(stage.number) == dt.timedelta(days=stage.days)
        assert table.stage_at(nxt).number == stage.number + 1
        assert table.stage_at(nxt - US).number == stage.number


@given(tables)
def test_milestones_are_the_first_stage_starts_with_throttle_block_and_full_block(
    table: StageTable,
) -> None:
    checks: list[tuple[dt.timedelta | None, Callable[[Stage], bool]]] = [
        (table.first_throttle, lambda s: s.throttle_minutes > 0),
        (table.first_block, lambda s: s.block_minutes > 0),
        (table.full_block, lambda s: s.block_minutes == 60),
    ]
    for milestone, holds in checks:
        if milestone is None:
            assert not any(holds(s) for s in table)
            continue
        stage = table.stage_at(milestone)
        assert holds(stage)
        assert table.start_of(stage.number) == milestone
        assert not any(holds(s) for s in table.stages[: stage.number - 1])


@given(stage_tables())
def test_valid_tables_keep_the_rules(table: StageTable) -> None:
    assert [s.number for s in table] == list(range(1, len(table) + 1))
    for stage in table:
        assert stage.throttle_minutes >= 0
        assert stage.block_minutes >= 0
        assert stage.throttle_minutes + stage.block_minutes <= 60
    assert all(s.days is not None and s.days >= 1 for s in table.stages[:-1])
    assert table.stages[-1].days is None


# Rows over wider ranges than the rules allow, so that many tables break one or more rules.
raw_rows = st.lists(
    st.tuples(
        st.integers(-1, 12),
        st.booleans(),
        st.integers(-3, 65),
        st.integers(-3, 65),
        st.one_of(st.none(), st.integers(-2, 50)),
    ),
    max_size=8,
)


def _follows_the_rules(rows: list[tuple[int, bool, int, int, int | None]]) -> bool:
    """The SPEC's rules, written independently of the implementation."""
    if not rows:
        return False
    if [row[0] for row in rows] != list(range(1, len(rows) + 1)):
        return False
    if any(t < 0 or b < 0 or t + b > 60 for _, _, t, b, _ in rows):
        return False
    if rows[-1][4] is not None:
        return False
    return all(days is not None and days >= 1 for *_, days in rows[:-1])


@given(raw_rows)
def test_tables_are_refused_with_stage_table_error_exactly_when_they_break_a_rule(
    rows: list[tuple[int, bool, int, int, int | None]],
) -> None:
    if not _follows_the_rules(rows):
        with pytest.raises(StageTableError, match=r"\w"):
            StageTable(tuple(Stage(*row) for row in rows))
    else:
        table = StageTable(tuple(Stage(*row) for row in rows))
        assert [
            (s.number, s.report, s.throttle_minutes, s.block_minutes, s.days) for s in table
        ] == rows


@given(
    st.builds(
        Stage,
        st.integers(1, 20),
        st.booleans(),
        st.integers(0, 60),
        st.integers(0, 60),
        st.one_of(st.none(), st.integers(1, 400)),
    )
)
def test_stage_round_trips_through_serde(stage: Stage) -> None:
    assert converter.structure(converter.unstructure(stage), Stage) == stage


@given(stage_tables())
def test_stage_table_round_trips_through_serde_and_answers_alike(table: StageTable) -> None:
    again = converter.structure(converter.unstructure(table), StageTable)
    assert again == table
    assert [again.start_of(s.number) for s in again] == [table.start_of(s.number) for s in table]
