"""Example-based tests of the enforcement stages and the stage table's rules."""

from __future__ import annotations

import datetime as dt

import pytest

from tbes.errors import StageTableError
from tbes.serde import converter, dumps, loads
from tbes.stages import DEFAULT_STAGE_TABLE, Stage, StageTable

DAY = dt.timedelta(days=1)
US = dt.timedelta(microseconds=1)

# The SPEC's table, written out by hand: (number, report, throttle, block, days).
SPEC_TABLE = [
    (1, True, 0, 0, 30),
    (2, True, 5, 0, 10),
    (3, True, 10, 0, 10),
    (4, True, 20, 0, 10),
    (5, True, 30, 5, 10),
    (6, True, 30, 10, 10),
    (7, True, 30, 20, 10),
    (8, True, 0, 60, None),
]


def test_default_table_is_exactly_the_spec_table() -> None:
    rows = [
        (s.number, s.report, s.throttle_minutes, s.block_minutes, s.days)
        for s in DEFAULT_STAGE_TABLE
    ]
    assert rows == SPEC_TABLE
    assert len(DEFAULT_STAGE_TABLE) == 8


@pytest.mark.parametrize(
    ("number", "start_days"),
    [(1, 0), (2, 30), (3, 40), (4, 50), (5, 60), (6, 70), (7, 80), (8, 90)],
)
def test_default_stage_starts_at_the_sum_of_the_days_before_it(
    number: int, start_days: int
) -> None:
    start = dt.timedelta(days=start_days)
    assert DEFAULT_STAGE_TABLE.start_of(number) == start
    assert DEFAULT_STAGE_TABLE.stage_at(start).number == number
    if number > 1:
        assert DEFAULT_STAGE_TABLE.stage_at(start - US).number == number - 1


@pytest.mark.parametrize(
    ("elapsed", "number"),
    [
        (-365 * DAY, 1),
        (-US, 1),
        (dt.timedelta(0), 1),
        (30 * DAY - US, 1),
        (30 * DAY, 2),
        (39 * DAY + dt.timedelta(hours=23, minutes=59, seconds=59), 2),
        (40 * DAY, 3),
        (59 * DAY, 4),
        (60 * DAY - US, 4),
        (60 * DAY, 5),
        (89 * DAY, 7),
        (90 * DAY - US, 7),
        (90 * DAY, 8),
        (10_000 * DAY, 8),
    ],
)
def test_stage_at_picks_the_stage_in_force(elapsed: dt.timedelta, number: int) -> None:
    assert DEFAULT_STAGE_TABLE.stage_at(elapsed).number == number


def test_stage_at_returns_the_stage_with_its_minutes() -> None:
    assert DEFAULT_STAGE_TABLE.stage_at(65 * DAY) == Stage(5, True, 30, 5, 10)
    assert DEFAULT_STAGE_TABLE.stage_at(95 * DAY) == Stage(8, True, 0, 60, None)


def test_default_table_throttles_at_30_blocks_at_60_blocks_fully_at_90_days() -> None:
    assert DEFAULT_STAGE_TABLE.first_throttle == 30 * DAY
    assert DEFAULT_STAGE_TABLE.first_block == 60 * DAY
    assert DEFAULT_STAGE_TABLE.full_block == 90 * DAY


def test_milestones_are_none_when_a_table_never_reaches_them() -> None:
    report_only = StageTable((Stage(1, True, 0, 0, None),))
    assert report_only.first_throttle is None
    assert report_only.first_block is None
    assert report_only.full_block is None
    partial = StageTable((Stage(1, True, 10, 0, 5), Stage(2, False, 20, 30, None)))
    assert partial.first_throttle == dt.timedelta(0)
    assert partial.first_block == 5 * DAY
    assert partial.full_block is None


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [(-DAY, 30 * DAY), (dt.timedelta(0), 30 * DAY), (30 * DAY, 40 * DAY), (89 * DAY, 90 * DAY)],
)
def test_next_start_is_the_start_of_the_following_stage(
    elapsed: dt.timedelta, expected: dt.timedelta
) -> None:
    assert DEFAULT_STAGE_TABLE.next_start(elapsed) == expected


def test_next_start_is_none_in_the_terminal_stage() -> None:
    assert DEFAULT_STAGE_TABLE.next_start(90 * DAY) is None
    assert StageTable((Stage(1, True, 0, 0, None),)).next_start(dt.timedelta(0)) is None


@pytest.mark.parametrize("number", [0, 9, -1])
def test_start_of_an_unknown_stage_raises_stage_table_error(number: int) -> None:
    with pytest.raises(
        StageTableError, match=rf"no stage {number} in this table: stages run 1\.\.8"
    ):
        DEFAULT_STAGE_TABLE.start_of(number)


def test_a_table_accepts_any_iterable_of_stages_and_keeps_a_tuple() -> None:
    table = StageTable([Stage(1, True, 0, 0, 3), Stage(2, True, 0, 60, None)])
    assert table.stages == (Stage(1, True, 0, 0, 3), Stage(2, True, 0, 60, None))
    assert list(table) == list(table.stages)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ((), r"at least one stage, got none"),
        (
            (Stage(2, True, 0, 0, None),),
            r"numbers must run 1\.\.1 in order: expected 1 at position 1, got 2",
        ),
        (
            (Stage(1, True, 0, 0, 5), Stage(3, True, 0, 0, None)),
            r"expected 2 at position 2, got 3",
        ),
        (
            (Stage(1, True, 0, 0, 5), Stage(1, True, 0, 0, None)),
            r"expected 2 at position 2, got 1",
        ),
        (
            (Stage(1, True, -1, 0, None),),
            r"stage 1: throttle_minutes must be >= 0, got -1",
        ),
        (
            (Stage(1, True, 0, 0, 5), Stage(2, True, 0, -5, None)),
            r"stage 2: block_minutes must be >= 0, got -5",
        ),
        (
            (Stage(1, True, 31, 30, None),),
            r"stage 1: throttle_minutes \+ block_minutes must be <= 60, got 31 \+ 30 = 61",
        ),
        (
            (Stage(1, True, 0, 61, None),),
            r"stage 1: throttle_minutes \+ block_minutes must be <= 60, got 0 \+ 61 = 61",
        ),
        (
            (Stage(1, True, 0, 0, 0), Stage(2, True, 0, 60, None)),
            r"stage 1: every stage but the last must have days >= 1, got days=0",
        ),
        (
            (Stage(1, True, 0, 0, None), Stage(2, True, 0, 60, None)),
            r"stage 1: every stage but the last must have days >= 1, got days=None",
        ),
        (
            (Stage(1, True, 0, 0, 5), Stage(2, True, 0, 60, 10)),
            r"stage 2: the last stage must be terminal \(days=None\), got days=10",
        ),
    ],
)
def test_invalid_tables_raise_stage_table_error_naming_the_rule(
    stages: tuple[Stage, ...], message: str
) -> None:
    with pytest.raises(StageTableError, match=message):
        StageTable(stages)


def test_a_table_longer_than_a_timedelta_holds_is_refused() -> None:
    stages = (
        Stage(1, True, 0, 0, 999_999_999),
        Stage(2, True, 0, 0, 1),
        Stage(3, True, 0, 60, None),
    )
    with pytest.raises(StageTableError, match=r"add up to 1000000000 days, more than"):
        StageTable(stages)


def test_a_table_entry_that_is_not_a_stage_is_refused() -> None:
    with pytest.raises(StageTableError, match=r"entries must be Stage, got \(1, True"):
        StageTable(((1, True, 0, 0, None),))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"number": "1"}, r"stage number must be an int, got '1'"),
        ({"report": 1}, r"stage report must be a bool, got 1"),
        ({"throttle_minutes": True}, r"stage throttle_minutes must be an int, got True"),
        ({"block_minutes": 1.5}, r"stage block_minutes must be an int, got 1\.5"),
        ({"days": 2.0}, r"stage days must be an int or None, got 2\.0"),
    ],
)
def test_a_stage_refuses_fields_of_the_wrong_type(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "number": 1,
        "report": True,
        "throttle_minutes": 0,
        "block_minutes": 0,
        "days": None,
    }
    with pytest.raises(StageTableError, match=message):
        Stage(**{**fields, **kwargs})  # type: ignore[arg-type]


def test_terminal_stage_has_no_duration() -> None:
    assert Stage(8, True, 0, 60, None).terminal
    assert Stage(8, True, 0, 60, None).duration is None
    assert not Stage(1, True, 0, 0, 30).terminal
    assert Stage(1, True, 0, 0, 30).duration == 30 * DAY


def test_stage_table_serialises_as_its_stages_only() -> None:
    data = converter.unstructure(
        StageTable((Stage(1, False, 0, 0, 2), Stage(2, True, 0, 60, None)))
    )
    assert data == {
        "stages": [
            {"number": 1, "report": False, "throttle_minutes": 0, "block_minutes": 0, "days": 2},
            {"number": 2, "report": True, "throttle_minutes": 0, "block_minutes": 60, "days": None},
        ]
    }


def test_default_table_round_trips_through_json_and_keeps_working() -> None:
    again = loads(dumps(DEFAULT_STAGE_TABLE), StageTable)
    assert again == DEFAULT_STAGE_TABLE
    assert again.stage_at(60 * DAY).number == 5
    assert again.full_block == 90 * DAY


def test_tables_with_the_same_stages_are_equal() -> None:
    stages = [Stage(1, True, 0, 0, 1), Stage(2, True, 0, 60, None)]
    assert StageTable(stages) == StageTable(tuple(stages))
    assert StageTable(stages) != DEFAULT_STAGE_TABLE
