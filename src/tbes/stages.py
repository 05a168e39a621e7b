"""The enforcement timeline: stages, each with its report, throttle and block minutes per hour.

A :class:`StageTable` is validated once, at construction, so every table that exists is
usable: numbers run 1..n, minutes fit in an hour, and only the last (terminal) stage has no
length. The stage starts are precomputed then, because :meth:`StageTable.stage_at` sits on
the hot path of every enforcement decision; the precomputed field stays out of equality and
of the serialised form, which is just the stages.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable, Iterable, Iterator

import attrs

from tbes.errors import InvalidValueError, StageTableError

__all__ = ["DEFAULT_STAGE_TABLE", "Stage", "StageTable"]

_MINUTES_PER_HOUR = 60


def _int_field(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    # bool is an int subclass, but True is no count of minutes.
    if type(value) is not int:
        raise StageTableError(f"stage {attribute.name} must be an int, got {value!r}")


def _bool_field(instance: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    if type(value) is not bool:
        raise StageTableError(f"stage {attribute.name} must be a bool, got {value!r}")


def _days_field(
    instance: object, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None and type(value) is not int:
        raise StageTableError(f"stage days must be an int or None, got {value!r}")


@attrs.frozen
class Stage:
    """One stage of enforcement: whether to report, and minutes per UTC hour to throttle and block.

    ``days`` is how long the stage lasts; ``None`` marks the terminal stage, which never
    ends. The rules that relate a stage to its table (numbering, limits on minutes, which
    stage may be terminal) are checked by :class:`StageTable`.
    """

    number: int = attrs.field(validator=_int_field)
    report: bool = attrs.field(validator=_bool_field)
    throttle_minutes: int = attrs.field(validator=_int_field)
    block_minutes: int = attrs.field(validator=_int_field)
    days: int | None = attrs.field(validator=_days_field)

    @property
    def terminal(self) -> bool:
        """Whether the stage never ends (its ``days`` is ``None``)."""
        return self.days is None

    @property
    def duration(self) -> dt.timedelta | None:
        """The stage's length as a timedelta, or ``None`` for the terminal stage."""
        return None if self.days is None else dt.timedelta(days=self.days)


def _check_stage(stage: Stage, position: int, count: int) -> None:
    """Raise :class:`StageTableError` when ``stage`` breaks a rule at ``position`` of ``count``."""
    where = f"stage {stage.number}"
    if stage.number != position:
        raise StageTableError(
            f"stage numbers must run 1..{count} in order: expected {position} at position "
            f"{position}, got {stage.number}"
        )
    if stage.throttle_minutes < 0:
        raise StageTableError(
            f"{where}: throttle_minutes must be >= 0, got {stage.throttle_minutes}"
        )
    if stage.block_minutes < 0:
        raise StageTableError(f"{where}: block_minutes must be >= 0, got {stage.block_minutes}")
    total = stage.throttle_minutes + stage.block_minutes
    if total > _MINUTES_PER_HOUR:
        raise StageTableError(
            f"{where}: throttle_minutes + block_minutes must be <= {_MINUTES_PER_HOUR}, got "
            f"{stage.throttle_minutes} + {stage.block_minutes} = {total}"
        )
    last = position == count
    if last and stage.days is not None:
        raise StageTableError(
            f"{where}: the last stage must be terminal (days=None), got days={stage.days}"
        )
    if not last and (stage.days is None or stage.days < 1):
        raise StageTableError(
            f"{where}: every stage but the last must have days >= 1, got days={stage.days}"
        )


def _check_stages(instance: object, attribute: object, stages: tuple[Stage, ...]) -> None:
    if not stages:
        raise StageTableError("a stage table needs at least one stage, got none")
    for position, stage in enumerate(stages, start=1):
        if not isinstance(stage, Stage):
            raise StageTableError(f"stage table entries must be Stage, got {stage!r}")
        _check_stage(stage, position, len(stages))
    total = sum(stage.days or 0 for stage in stages)
    if total > dt.timedelta.max.days:
        raise StageTableError(
            f"the stages before the last add up to {total} days, more than a timedelta holds "
            f"({dt.timedelta.max.days})"
        )


def _to_tuple(stages: Iterable[Stage]) -> tuple[Stage, ...]:
    if not isinstance(stages, Iterable) or isinstance(stages, str | bytes):
        raise StageTableError(f"a stage table needs a sequence of Stage, got {stages!r:.80}")
    return tuple(stages)


def _require_elapsed(elapsed: object) -> None:
    if not isinstance(elapsed, dt.timedelta):
        raise InvalidValueError(f"elapsed must be a timedelta, got {elapsed!r:.80}")


def _starts(stages: tuple[Stage, ...]) -> tuple[dt.timedelta, ...]:
    """The offset at which each stage starts: the sum of the days of the stages before it."""
    offsets = [dt.timedelta(0)]
    for stage in stages[:-1]:
        offsets.append(offsets[-1] + dt.timedelta(days=stage.days or 0))
    return tuple(offsets)


@attrs.frozen
class StageTable:
    """A validated sequence of stages from the first detection to the terminal stage.

    Construction raises :class:`~tbes.errors.StageTableError`, naming the rule and the
    stage or value, unless: there is at least one stage; numbers run 1..n in order;
    throttle and block minutes are >= 0 and add up to at most 60; every stage but the last
    has ``days`` >= 1; the last has ``days=None``. A table iterates over its stages and has
    their count as its ``len``.
    """

    stages: tuple[Stage, ...] = attrs.field(converter=_to_tuple, validator=_check_stages)
    # Derived from ``stages``; outside eq, repr and the serialised form (cattrs skips
    # init=False fields).
    _start_offsets: tuple[dt.timedelta, ...] = attrs.field(
        init=False, eq=False, repr=False, default=()
    )

    def __attrs_post_init__(self) -> None:
        # The class is frozen; this is the one write, made while constructing.
        object.__setattr__(self, "_start_offsets", _starts(self.stages))

    def __iter__(self) -> Iterator[Stage]:
        """Iterate over the stages, first to last."""
        return iter(self.stages)

    def __len__(self) -> int:
        """The number of stages."""
        return len(self.stages)

    def stage_at(self, elapsed: dt.timedelta) -> Stage:
        """The stage in force ``elapsed`` after first detection (negative ``elapsed`` means 0)."""
        _require_elapsed(elapsed)
        index = bisect.bisect_right(self._start_offsets, elapsed) - 1
        return self.stages[max(index, 0)]

    def start_of(self, number: int) -> dt.timedelta:
        """The offset from the first detection at which stage ``number`` starts.

        Raises :class:`~tbes.errors.StageTableError` when the table has no such stage.
        """
        if type(number) is not int or not 1 <= number <= len(self.stages):
            raise StageTableError(
                f"no stage {number!r} in this table: stages run 1..{len(self.stages)}"
            )
        return self._start_offsets[number - 1]

    def next_start(self, elapsed: dt.timedelta) -> dt.timedelta | None:
        """The start of the stage after the one at ``elapsed``; ``None`` from the terminal stage."""
        _require_elapsed(elapsed)
        index = max(bisect.bisect_right(self._start_offsets, elapsed), 1)
        return self._start_offsets[index] if index < len(self._start_offsets) else None

    @property
    def first_throttle(self) -> dt.timedelta | None:
        """When throttling first starts: the start of the first stage with throttle minutes.

        ``None`` when no stage throttles.
        """
        return self._first_start(lambda stage: stage.throttle_minutes > 0)

    @property
    def first_block(self) -> dt.timedelta | None:
        """When blocking first starts: the start of the first stage with block minutes.

        ``None`` when no stage blocks.
        """
        return self._first_start(lambda stage: stage.block_minutes > 0)

    @property
    def full_block(self) -> dt.timedelta | None:
        """When blocking becomes total: the start of the first stage blocking all 60 minutes.

        ``None`` when no stage blocks the whole hour.
        """
        return self._first_start(lambda stage: stage.block_minutes == _MINUTES_PER_HOUR)

    def _first_start(self, wanted: Callable[[Stage], bool]) -> dt.timedelta | None:
        for stage, start in zip(self.stages, self._start_offsets, strict=True):
            if wanted(stage):
                return start
        return None


DEFAULT_STAGE_TABLE: StageTable = StageTable(
    (
        Stage(1, True, 0, 0, 30),
        Stage(2, True, 5, 0, 10),
        Stage(3, True, 10, 0, 10),
        Stage(4, True, 20, 0, 10),
        Stage(5, True, 30, 5, 10),
        Stage(6, True, 30, 10, 10),
        Stage(7, True, 30, 20, 10),
        Stage(8, True, 0, 60, None),
    )
)
"""Microsoft's published timeline: report for 30 days, throttle from day 30, block from day
60, block fully from day 90."""
