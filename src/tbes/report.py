"""Reports and forecasts: what enforcement does to a server, now and on every future day.

:func:`forecast` turns a server's state into its timeline, a run of :class:`Segment` values
(stage and paused flag over a span of time); :func:`report_row` condenses state, timeline
and assessment into the row an administrator knows from Microsoft's report. Neither works
out a stage by itself: :func:`~tbes.decision.decide` is the source of truth, so the timeline
asks it for the stage, the paused flag and the (frozen) elapsed time at each point where
something can change, and only uses the stage table to know where the next stage starts.

Both stop at the calendar's end: an instant past :data:`END` (9999-12-31 23:59:59.999999
UTC, the last one a :class:`~datetime.datetime` holds) is taken as :data:`END`, and a
timeline or milestone that would lie beyond it is cut off there (a milestone past it is
``None``). So a state or an instant near the year 9999 gives an answer, never an
:class:`OverflowError`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from tbes._checks import of_type
from tbes._instants import as_utc, require_aware
from tbes._lines import ON_PREMISES, line_of
from tbes._slots import slot_filler
from tbes.baseline import Baseline
from tbes.catalog import Catalog
from tbes.compliance import Compliance, assess
from tbes.decision import Decision, decide
from tbes.errors import InvalidBuildError, InvalidValueError
from tbes.exemption import Exemption
from tbes.identity import connector_of, host_of
from tbes.ledger import clock_reaches, covering_end, pause_spans, paused_between
from tbes.policy import Policy
from tbes.serde import converter
from tbes.stages import Stage, StageTable
from tbes.state import ServerState
from tbes.version import ExchangeBuild, Product

__all__ = [
    "END",
    "ROW_FIELDS",
    "WIRE_FIELDS",
    "ReportRow",
    "Segment",
    "build_versions",
    "exchange_server",
    "forecast",
    "horizon",
    "recommended_builds",
    "report_row",
    "report_rows",
    "report_values",
]

END = dt.datetime.max.replace(tzinfo=dt.UTC)
"""The calendar's end, where forecasts and horizons stop."""
_START = dt.datetime.min.replace(tzinfo=dt.UTC)
_DAY = dt.timedelta(days=1)
_ZERO = dt.timedelta(0)
_MINUTES = 60


def _require_inputs(state: object, policy: object) -> None:
    if not isinstance(state, ServerState):
        raise InvalidValueError(f"state must be a ServerState, got {state!r:.80}")
    if not isinstance(policy, Policy):
        raise InvalidValueError(f"policy must be a Policy, got {policy!r:.80}")


def _aware_or_none(
    instance: object, attribute: attrs.Attribute[dt.datetime | None], value: dt.datetime | None
) -> None:
    if value is not None:
        require_aware(value, attribute.name)


def _clamped_utc(value: dt.datetime, name: str) -> dt.datetime:
    """An aware ``value`` in UTC; one whose UTC time lies outside the calendar (datetime.max
    at -05:00, say) is taken as the calendar's end (or start)."""
    require_aware(value, name)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        offset = value.utcoffset()
        return END if offset is not None and offset < dt.timedelta(0) else _START


def _later(at: dt.datetime, delta: dt.timedelta) -> dt.datetime:
    """``at + delta`` (``delta`` >= 0), or the calendar's end if that lies beyond it."""
    return END if delta > END - at else at + delta


def _start_utc(value: dt.datetime) -> dt.datetime:
    return as_utc(value, "start")


def _end_utc(value: dt.datetime) -> dt.datetime:
    return as_utc(value, "end")


def _after_start(
    instance: Segment, attribute: attrs.Attribute[dt.datetime], end: dt.datetime
) -> None:
    if end <= instance.start:
        raise InvalidValueError(f"a segment must end after it starts: {instance.start} .. {end}")


@attrs.frozen
class Segment:
    """A span ``[start, end)`` of a server's timeline with one stage and one paused flag.

    ``stage`` is ``None`` where nothing is enforced (the server is compliant again);
    ``paused`` is true while a pause or an exemption holds enforcement off. ``start`` and
    ``end`` are normalised to UTC (naive ones raise :class:`~tbes.errors.NaiveDatetimeError`).
    """

    start: dt.datetime = attrs.field(converter=_start_utc)
    end: dt.datetime = attrs.field(converter=_end_utc, validator=_after_start)
    stage: Stage | None = attrs.field(validator=of_type(Stage, optional=True))
    paused: bool = attrs.field(validator=of_type(bool))

    @property
    def duration(self) -> dt.timedelta:
        """How long the segment lasts."""
        return self.end - self.start


def _builds(value: Iterable[ExchangeBuild]) -> tuple[ExchangeBuild, ...]:
    if not isinstance(value, Iterable) or isinstance(value, str | bytes):
        raise InvalidValueError(f"recommended must be a sequence of builds, got {value!r:.80}")
    builds = tuple(value)
    for build in builds:
        if not isinstance(build, ExchangeBuild):
            raise InvalidBuildError(
                f"recommended must hold ExchangeBuild values, got {build!r:.80}"
            )
    return builds


def _minutes_or_none(
    instance: object, attribute: attrs.Attribute[int | None], value: object
) -> None:
    if value is not None and (type(value) is not int or not 0 <= value <= _MINUTES):
        raise InvalidValueError(
            f"{attribute.name} must be minutes per hour (0..60) or None, got {value!r:.80}"
        )


@attrs.frozen
class ReportRow:
    """One server's line in the enforcement report, in the terms of Microsoft's report.

    ``throttle_enabled``, ``blocking_enabled`` and ``full_block`` are the first instants at
    which the server is throttled, blocked at all, and blocked for the whole hour, with
    pauses taken into account; they are ``None`` when nothing is enforced (no episode, or
    compliant again). ``stage`` is the stage in force at the report's instant;
    ``next_stage_throttle`` and ``next_stage_block`` are the next stage's minutes per hour
    and ``next_stage_start`` when it begins. ``paused_until`` is when the pause in force at
    the report's instant ends, also for a server no longer enforced. ``control`` says how
    the operator's controls change the answer at the report's instant: ``exempt until
    2027-03-01: migration partner``, or in monitor mode ``monitor: would block 60 min/h``;
    ``None`` when enforced as it stands.
    """

    server: str = attrs.field(validator=of_type(str))
    tenant: str = attrs.field(validator=of_type(str))
    build: ExchangeBuild | None = attrs.field(validator=of_type(ExchangeBuild, optional=True))
    product: Product | None = attrs.field(validator=of_type(Product, optional=True))
    status: Compliance = attrs.field(validator=of_type(Compliance))
    first_detected: dt.datetime | None = attrs.field(validator=_aware_or_none)
    last_seen: dt.datetime | None = attrs.field(validator=_aware_or_none)
    recommended: tuple[ExchangeBuild, ...] = attrs.field(converter=_builds)
    throttle_enabled: dt.datetime | None = attrs.field(validator=_aware_or_none)
    blocking_enabled: dt.datetime | None = attrs.field(validator=_aware_or_none)
    full_block: dt.datetime | None = attrs.field(validator=_aware_or_none)
    stage: Stage | None = attrs.field(validator=of_type(Stage, optional=True))
    next_stage_throttle: int | None = attrs.field(validator=_minutes_or_none)
    next_stage_block: int | None = attrs.field(validator=_minutes_or_none)
    next_stage_start: dt.datetime | None = attrs.field(validator=_aware_or_none)
    paused_until: dt.datetime | None = attrs.field(validator=_aware_or_none)
    control: str | None = attrs.field(default=None, validator=of_type(str, optional=True))

    @property
    def connector(self) -> str:
        """The connector part of the server id (the whole id for a connector-level one)."""
        return connector_of(self.server)

    @property
    def server_fqdn(self) -> str:
        """Microsoft's ``ServerFQDN``: the host part of the server id, or the whole id for a
        connector-level one (no host is known)."""
        host = host_of(self.server)
        return self.server if host is None else host


# ---- the report's wire form: Microsoft's field names -----------------------------------------

WIRE_FIELDS: tuple[str, ...] = (
    "ServerFQDN",
    "Build",
    "ExchangeServer",
    "FirstDetectedDate",
    "RecommendedBuildVersions",
    "ThrottleEnabledDate",
    "BlockingEnabledDate",
    "NextStageThrottleRate",
    "NextStageBlockRate",
    "NextStageStartDate",
    "tenant",
    "connector",
    "server",
    "status",
    "stage",
    "paused_until",
    "fully_blocked",
    "last_seen",
    "control",
)
"""The keys of a report row in JSON and the columns of the CSV report, in order: the fields
of Microsoft's ``Get-OnPremServerReportInfo``, then tbes's own."""

# Microsoft's ExchangeServer values (ExchangeServer2016); products off premises keep tbes's name.
_EXCHANGE_SERVER = {
    product: "ExchangeServer" + product.label.removeprefix("Exchange ")
    for product in Product
    if product.on_premises
}
_PRODUCT_OF_NAME = {name: product for product, name in _EXCHANGE_SERVER.items()}


def exchange_server(product: Product) -> str:
    """Microsoft's ``ExchangeServer`` value of ``product``: ``ExchangeServer2016``,
    ``ExchangeServerSE`` (the enum's value for a product that is not on-premises)."""
    return _EXCHANGE_SERVER.get(product) or product.value


def build_versions(builds: Iterable[ExchangeBuild]) -> list[str]:
    """Builds as Microsoft's ``RecommendedBuildVersions`` lists them: each in its short form
    and then its long form (``15.1.2507.39``, ``15.01.2507.039``)."""
    return [form for build in builds for form in (str(build), build.long)]


def _instant_text(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _row_to_wire(row: ReportRow) -> dict[str, Any]:
    stage = row.stage
    return {
        "ServerFQDN": row.server_fqdn,
        "Build": None if row.build is None else str(row.build),
        "ExchangeServer": None if row.product is None else exchange_server(row.product),
        "FirstDetectedDate": _instant_text(row.first_detected),
        "RecommendedBuildVersions": build_versions(row.recommended),
        "ThrottleEnabledDate": _instant_text(row.throttle_enabled),
        "BlockingEnabledDate": _instant_text(row.blocking_enabled),
        "NextStageThrottleRate": row.next_stage_throttle,
        "NextStageBlockRate": row.next_stage_block,
        "NextStageStartDate": _instant_text(row.next_stage_start),
        "tenant": row.tenant,
        "connector": row.connector,
        "server": row.server,
        "status": row.status.value,
        "stage": None if stage is None else converter.unstructure(stage, Stage),
        "paused_until": _instant_text(row.paused_until),
        "fully_blocked": _instant_text(row.full_block),
        "last_seen": _instant_text(row.last_seen),
        "control": row.control,
    }


def _row_from_wire(data: Any, _: type) -> ReportRow:
    # The derived keys (ServerFQDN, connector) are the server id's parts: read, not trusted.
    if not isinstance(data, dict):
        raise InvalidValueError(f"a report row is a JSON object, got {data!r:.80}")
    name = data["ExchangeServer"]
    product = None if name is None else _PRODUCT_OF_NAME.get(name) or Product(name)
    versions = data["RecommendedBuildVersions"]
    if not isinstance(versions, list) or len(versions) % 2:
        raise InvalidValueError(
            f"RecommendedBuildVersions must list each build's short and long form, got "
            f"{versions!r:.80}"
        )
    builds = [ExchangeBuild.parse(text) for text in versions]
    if builds[0::2] != builds[1::2]:
        raise InvalidValueError(f"RecommendedBuildVersions pairs differ: {versions!r:.80}")

    def get(key: str, kind: Any) -> Any:
        value = data[key]
        if kind is str and not isinstance(value, str):  # cattrs would make "None" of None
            raise InvalidValueError(f"{key} must be a string, got {value!r:.80}")
        return converter.structure(value, kind)

    return ReportRow(
        server=get("server", str),
        tenant=get("tenant", str),
        build=get("Build", ExchangeBuild | None),
        product=product,
        status=get("status", Compliance),
        first_detected=get("FirstDetectedDate", dt.datetime | None),
        last_seen=get("last_seen", dt.datetime | None),
        recommended=builds[0::2],
        throttle_enabled=get("ThrottleEnabledDate", dt.datetime | None),
        blocking_enabled=get("BlockingEnabledDate", dt.datetime | None),
        full_block=get("fully_blocked", dt.datetime | None),
        stage=get("stage", Stage | None),
        next_stage_throttle=get("NextStageThrottleRate", int | None),
        next_stage_block=get("NextStageBlockRate", int | None),
        next_stage_start=get("NextStageStartDate", dt.datetime | None),
        paused_until=get("paused_until", dt.datetime | None),
        control=get("control", str | None),
    )


# The wire form belongs to the row, so it is registered where the row is defined (tbes.serde
# cannot import this module: the catalog it reads imports tbes.serde).
converter.register_unstructure_hook(ReportRow, _row_to_wire)
converter.register_structure_hook(ReportRow, _row_from_wire)


def forecast(
    state: ServerState,
    policy: Policy,
    *,
    until: dt.datetime,
    exemptions: tuple[Exemption, ...] = (),
) -> tuple[Segment, ...]:
    """The server's timeline from its first detection to ``until``, as contiguous segments.

    Each segment carries what :func:`~tbes.decision.decide` answers anywhere inside it (the
    stage and the paused flag); neighbours always differ in one of them. No episode, or
    ``until`` not after the first detection, gives an empty timeline. For a server that is
    compliant again, the segments before ``compliant_since`` are what ``decide`` answered
    while the episode ran (the same state without ``compliant_since``) and one unenforced
    segment (stage ``None``) follows, as ``decide`` answers for the state itself.
    ``exemptions`` are the server's (see :func:`~tbes.decision.decide`): their spans are
    ``paused`` segments. Arguments of the wrong type raise :class:`~tbes.errors.InvalidValueError`.
    """
    until = _clamped_utc(until, "until")
    _require_inputs(state, policy)
    return tuple(Segment(*span) for span in _timeline(state, policy, until, exemptions))


# A segment as (start, end, stage, paused): the report's fast path reads its milestones from
# these and never needs the checked Segment.
_Span = tuple[dt.datetime, dt.datetime, Stage | None, bool]


def _timeline(
    state: ServerState,
    policy: Policy,
    until: dt.datetime,
    exemptions: tuple[Exemption, ...] = (),
) -> list[_Span]:
    """:func:`forecast`'s segments as tuples; ``until`` in UTC, arguments checked already."""
    start = state.first_detected
    if start is None or until <= start:
        return []
    healed = state.compliant_since
    running = state if healed is None else attrs.evolve(state, compliant_since=None)
    cut = until if healed is None else min(until, max(healed, start))
    edges = _edges(state, start, cut, exemptions)
    pieces: list[_Span] = []
    for lo, hi in itertools.pairwise(edges):
        pieces.extend(_pieces(running, policy, lo, hi, exemptions))
    if cut < until:
        pieces.extend(_pieces(state, policy, cut, until, exemptions))
    return _merged(pieces)


def _edges(
    state: ServerState,
    start: dt.datetime,
    until: dt.datetime,
    exemptions: tuple[Exemption, ...] = (),
) -> list[dt.datetime]:
    """``start``, ``until`` and every pause (and exemption) edge between them, in order."""
    spans = [(p.start_instant, p.end_instant) for p in state.pauses]
    spans.extend((e.start, e.end) for e in exemptions)
    inner = {edge for span in spans for edge in span if start < edge < until}
    return [start, *sorted(inner), until]


def _pieces(
    state: ServerState,
    policy: Policy,
    lo: dt.datetime,
    hi: dt.datetime,
    exemptions: tuple[Exemption, ...] = (),
) -> Iterable[_Span]:
    """Segments of ``[lo, hi)``, a span in which the paused flag cannot change."""
    at = lo
    while at < hi:
        decision = decide(state, at, policy, exemptions)
        end = hi
        clock_runs = not ((decision.paused and policy.pause_freezes_clock) or decision.exempt)
        if decision.stage is not None and clock_runs:
            # Elapsed time grows one-for-one here, so the next stage starts exactly when
            # elapsed reaches the stage table's next start.
            following = policy.stage_table.next_start(decision.elapsed)
            if following is not None:
                end = min(hi, _later(at, following - decision.elapsed))
        yield (at, end, decision.stage, decision.paused or decision.exempt)
        at = end


def _merged(pieces: list[_Span]) -> list[_Span]:
    """Join neighbours with the same stage and paused flag."""
    merged: list[_Span] = []
    for piece in pieces:
        if merged and merged[-1][2:] == piece[2:]:
            merged[-1] = (merged[-1][0], piece[1], piece[2], piece[3])
        else:
            merged.append(piece)
    return merged


def report_row(
    state: ServerState,
    now: dt.datetime,
    policy: Policy,
    catalog: Catalog,
    *,
    exemptions: tuple[Exemption, ...] = (),
    monitor: bool = False,
) -> ReportRow:
    """The report line for ``state`` as of ``now``: status, timeline instants, next stage.

    ``exemptions`` (the server's) and ``monitor`` (its connector is in monitor mode) make
    the row's ``control``; exempt days hold the timeline as paused ones do.

    A naive ``now`` raises :class:`~tbes.errors.NaiveDatetimeError`, arguments of the wrong
    type :class:`~tbes.errors.InvalidValueError`. Near the calendar's end the timeline stops
    at :data:`END`: a milestone or next stage beyond it is ``None``.
    """
    now = _clamped_utc(now, "now")
    if not isinstance(catalog, Catalog):
        raise InvalidValueError(f"catalog must be a Catalog, got {catalog!r:.80}")
    _require_inputs(state, policy)
    decision = decide(state, now, policy, exemptions)
    # Once compliant, nothing lies ahead: the history a forecast keeps is not the schedule.
    ahead = state.compliant_since is None
    timeline = (
        forecast(
            state,
            policy,
            until=horizon(state, policy, now, exemptions=exemptions),
            exemptions=exemptions,
        )
        if ahead
        else ()
    )
    recommended = (
        ()
        if state.build is None
        else recommended_builds(state.build, policy.baseline_at(now), catalog, now.date())
    )
    following = _next_stage(decision.stage, policy)
    table = policy.stage_table
    return ReportRow(
        server=state.server_id,
        tenant=state.tenant,
        build=state.build,
        product=None if state.build is None else state.build.product,
        status=state.status,
        first_detected=state.first_detected,
        last_seen=state.last_seen,
        recommended=recommended,
        throttle_enabled=_enforced_from(timeline, table.first_throttle, policy),
        blocking_enabled=_enforced_from(timeline, table.first_block, policy),
        full_block=_enforced_from(timeline, table.full_block, policy),
        stage=decision.stage,
        next_stage_throttle=None if following is None else following.throttle_minutes,
        next_stage_block=None if following is None else following.block_minutes,
        next_stage_start=_start_of(timeline, following),
        paused_until=_paused_until(timeline, now) if decision.paused else _outlived(state, now),
        control=_control(decision, exemptions, monitor, now),
    )


def recommended_builds(
    build: ExchangeBuild, baseline: Baseline, catalog: Catalog, on: dt.date
) -> tuple[ExchangeBuild, ...]:
    """What Microsoft's report lists as ``RecommendedBuildVersions`` for ``build``, newest first.

    Every public build of ``build``'s line (no ESU-only update, no preview) released by
    ``on`` that ``baseline`` judges compliant. When its line has none (an unsupported
    line the baseline no longer accepts, a phase that only ESU builds pass), the builds
    :func:`~tbes.compliance.assess` recommends: the minimums of the accepted lines. For a
    product out of support, the upgrade target: the minimums of the newest supported
    product already released by ``on`` (its newest public build if it has no minimum). A
    build that is not on-premises Exchange gets none. Arguments of the wrong type raise as
    :func:`~tbes.compliance.assess` does; an ``on`` that is no date, InvalidValueError.
    """
    if not isinstance(on, dt.date):
        raise InvalidValueError(f"on must be a date, got {on!r:.80}")
    assessment = assess(build, baseline=baseline, catalog=catalog)
    if assessment.status is Compliance.NOT_APPLICABLE:
        return ()
    if assessment.status is Compliance.UNSUPPORTED:
        return _upgrade_target(build.product, baseline, catalog, on)
    line = line_of(build)
    own = [
        release.build
        for releases in catalog.lines(build.product)
        if releases and line_of(releases[0].build) == line
        for release in releases
        if not release.esu and release.date <= on and _compliant(release.build, baseline, catalog)
    ]
    return tuple(sorted(own, reverse=True)) or assessment.recommended


def _upgrade_target(
    product: Product, baseline: Baseline, catalog: Catalog, on: dt.date
) -> tuple[ExchangeBuild, ...]:
    """The builds to upgrade a product out of support to: the minimums of the newest product
    the baseline supports that had been released by ``on`` (its newest public build by
    then when the baseline sets it no minimum)."""
    for target in reversed(ON_PREMISES[ON_PREMISES.index(product) + 1 :]):
        if target in baseline.unsupported:
            continue
        public = [
            release.build
            for releases in catalog.lines(target)
            for release in releases
            if not release.esu and release.date <= on
        ]
        if not public:
            continue  # not released yet on that day (Exchange SE before July 2025)
        floors: dict[tuple[int, ...], ExchangeBuild] = {}
        for minimum in sorted(baseline.minimum.get(target, ()), reverse=True):
            floors[line_of(minimum)] = minimum  # two on one line: the lower one
        return tuple(sorted(floors.values(), reverse=True)) or (max(public),)
    return ()


def _compliant(build: ExchangeBuild, baseline: Baseline, catalog: Catalog) -> bool:
    return assess(build, baseline=baseline, catalog=catalog).status is Compliance.COMPLIANT


def _control(
    decision: Decision, exemptions: tuple[Exemption, ...], monitor: bool, now: dt.datetime
) -> str | None:
    """What the operator's controls do to the answer at ``now``, in the report's words."""
    holding = [each for each in exemptions if each.covers(now)]
    if decision.exempt and holding:
        return max(holding, key=lambda each: each.end).describe()
    if not monitor:
        return None
    stage = decision.stage
    if stage is None or decision.paused:
        return "monitor"
    parts = []
    if stage.throttle_minutes:
        parts.append(f"throttle {stage.throttle_minutes}")
    if stage.block_minutes:
        parts.append(f"block {stage.block_minutes}")
    return "monitor: would " + ", ".join(parts) + " min/h" if parts else "monitor"


def horizon(
    state: ServerState,
    policy: Policy,
    now: dt.datetime,
    *,
    exemptions: tuple[Exemption, ...] = (),
) -> dt.datetime:
    """An instant after ``now`` and the state's last pause by which nothing is left to change.

    During an episode that is also after the terminal stage starts: paused time delays a
    stage by at most its own length, so the terminal stage starts no later than the first
    detection plus the stage's offset plus the length of every pause. A forecast up to the
    horizon shows everything that will ever change for the state. The horizon never lies
    past :data:`END`: near the calendar's end it is :data:`END` (and may equal ``now``).
    """
    now = _clamped_utc(now, "now")
    _require_inputs(state, policy)
    return _horizon(state, policy, now, exemptions)


def _horizon(
    state: ServerState, policy: Policy, now: dt.datetime, exemptions: tuple[Exemption, ...] = ()
) -> dt.datetime:
    """:func:`horizon` for arguments checked already, ``now`` in UTC."""
    spans = [(p.start_instant, p.end_instant) for p in state.pauses]
    first = state.first_detected
    # An exemption counts from the first detection (one without since covers all before it).
    spans.extend((max(e.start, first or now), e.end) for e in exemptions)
    last_pause = max((end for _, end in spans), default=now)
    latest = max(now, last_pause)
    if first is not None and state.compliant_since is None:
        terminal = policy.stage_table.start_of(len(policy.stage_table))
        paused = sum((max(end - start, dt.timedelta()) for start, end in spans), dt.timedelta())
        latest = max(latest, END if paused > END - first else _later(first, terminal + paused))
    return _later(latest, _DAY)


def _enforced_from(
    timeline: tuple[Segment, ...], offset: dt.timedelta | None, policy: Policy
) -> dt.datetime | None:
    """First unpaused instant in a stage at or past the one starting at ``offset``."""
    if offset is None:
        return None
    number = policy.stage_table.stage_at(offset).number
    return _first(timeline, lambda s: not s.paused and _number(s) >= number)


def _first(timeline: tuple[Segment, ...], wanted: Callable[[Segment], bool]) -> dt.datetime | None:
    return next((segment.start for segment in timeline if wanted(segment)), None)


def _number(segment: Segment) -> int:
    # An unenforced segment ranks below every stage.
    return 0 if segment.stage is None else segment.stage.number


def _start_of(timeline: tuple[Segment, ...], stage: Stage | None) -> dt.datetime | None:
    """When the timeline reaches ``stage`` (or a later one); None for no stage."""
    if stage is None:
        return None
    number = stage.number
    return _first(timeline, lambda s: _number(s) >= number)


def _next_stage(stage: Stage | None, policy: Policy) -> Stage | None:
    stages = policy.stage_table.stages
    return None if stage is None or stage.number >= len(stages) else stages[stage.number]


def _outlived(state: ServerState, now: dt.datetime) -> dt.datetime | None:
    # A pause that outlives remediation still runs and is charged: the report shows it.
    return covering_end(pause_spans(state.pauses), now)


def _paused_until(timeline: tuple[Segment, ...], now: dt.datetime) -> dt.datetime | None:
    """Start of the first unpaused segment after ``now``."""
    return _first(timeline, lambda s: s.start > now and not s.paused)


# ---- many rows at once: the report's fast path -------------------------------------------

_BUILDS = 1024
"""How many builds' recommendations one :func:`report_rows` call keeps (a store has few)."""

ROW_FIELDS: tuple[str, ...] = tuple(field.name for field in attrs.fields(ReportRow))
""":class:`ReportRow`'s fields in order: what each place of a :func:`report_values` tuple holds."""

# Rows made by the fast path are valid by construction (every value comes from a checked
# state, policy or row); the property tests hold them equal to report_row's.
_make_row = slot_filler(ReportRow)
_values_of = operator.attrgetter(*ROW_FIELDS)


def _row_of(values: tuple[Any, ...]) -> ReportRow:
    """The row whose fields are ``values``, in :data:`ROW_FIELDS` order."""
    (
        server,
        tenant,
        build,
        product,
        status,
        first_detected,
        last_seen,
        recommended,
        throttle_enabled,
        blocking_enabled,
        full_block,
        stage,
        next_stage_throttle,
        next_stage_block,
        next_stage_start,
        paused_until,
        control,
    ) = values
    return _make_row(
        server=server,
        tenant=tenant,
        build=build,
        product=product,
        status=status,
        first_detected=first_detected,
        last_seen=last_seen,
        recommended=recommended,
        throttle_enabled=throttle_enabled,
        blocking_enabled=blocking_enabled,
        full_block=full_block,
        stage=stage,
        next_stage_throttle=next_stage_throttle,
        next_stage_block=next_stage_block,
        next_stage_start=next_stage_start,
        paused_until=paused_until,
        control=control,
    )


def report_rows(
    states: Iterable[ServerState],
    now: dt.datetime,
    policy: Policy,
    catalog: Catalog,
    *,
    exemptions: Callable[[str], tuple[Exemption, ...]] | None = None,
    monitors: Callable[[str], bool] | None = None,
) -> Iterator[ReportRow]:
    """:func:`report_row` of each of ``states`` in turn, made as the iterator is consumed.

    The rows are those :func:`report_row` gives, for less work each: the arguments are
    checked once, the builds to recommend are worked out once per build (the policy's
    baseline and the catalog are fixed for one call), and the milestones come in closed
    form from the state's pauses rather than from a timeline of decisions (see
    :class:`_RowMaker`). Nothing is kept per state, so a report of any size runs in
    constant memory. Errors as for :func:`report_row`; a state of the wrong type raises
    when its turn comes. ``exemptions`` and ``monitors`` give, per server id, what
    :func:`report_row` takes as ``exemptions`` and ``monitor``; a row they touch is
    :func:`report_row`'s own.
    """
    return map(_row_of, report_values(states, now, policy, catalog, exemptions, monitors))


def report_values(
    states: Iterable[ServerState],
    now: dt.datetime,
    policy: Policy,
    catalog: Catalog,
    exemptions: Callable[[str], tuple[Exemption, ...]] | None = None,
    monitors: Callable[[str], bool] | None = None,
) -> Iterator[tuple[Any, ...]]:
    """The fields of :func:`report_rows`' rows as tuples, in :data:`ROW_FIELDS` order.

    For a renderer that reads every field of every row of a large report (the CSV writer):
    a tuple costs less to make and to read than a :class:`ReportRow`. Arguments and errors
    as for :func:`report_rows`.
    """
    now = _clamped_utc(now, "now")
    if not isinstance(catalog, Catalog):
        raise InvalidValueError(f"catalog must be a Catalog, got {catalog!r:.80}")
    if not isinstance(policy, Policy):
        raise InvalidValueError(f"policy must be a Policy, got {policy!r:.80}")
    if not isinstance(states, Iterable) or isinstance(states, str | bytes):
        raise InvalidValueError(f"states must be an iterable of states, got {states!r:.80}")
    return map(_RowMaker(now, policy, catalog, exemptions, monitors).values, states)


def _stage_from(table: StageTable, offset: dt.timedelta | None) -> int | None:
    return None if offset is None else table.stage_at(offset).number


class _RowMaker:
    """:func:`report_row` for one instant, policy and catalog, with what they fix worked out.

    Decision: a report reads every stored server, so a row is computed in closed form rather
    than by asking :func:`~tbes.decision.decide` along a timeline. Without exemptions the
    timeline is simple: the stage where the clock stands rises with the clock, which runs
    one-for-one except inside pauses (when the policy freezes it); a pause only sets the
    paused flag. So the first instant in stage *k* or later is when the clock first shows
    stage *k*'s start (:func:`~tbes.ledger.clock_reaches`), and the first unpaused one
    from there is that instant or the end of the pause covering it; without pauses, that
    is the first detection plus stage *k*'s start. The stage at ``now`` is the policy's
    stage at the clock's reading, as ``decide`` reads it. Rows near the calendar's end
    (where the timeline is cut) and rows with the operator's controls are
    :func:`report_row`'s own; a property test holds every row equal to ``report_row``'s.
    """

    __slots__ = (
        "_by_id",
        "_catalog",
        "_exemptions",
        "_following",
        "_milestones",
        "_monitors",
        "_next",
        "_now",
        "_offsets",
        "_on",
        "_policy",
        "_recommended",
        "_starts",
        "_terminal",
    )

    def __init__(
        self,
        now: dt.datetime,
        policy: Policy,
        catalog: Catalog,
        exemptions: Callable[[str], tuple[Exemption, ...]] | None,
        monitors: Callable[[str], bool] | None,
    ) -> None:
        self._now, self._policy, self._catalog = now, policy, catalog
        self._exemptions, self._monitors = exemptions, monitors
        self._on = now.date()
        table = policy.stage_table
        # The stage numbers where throttling, blocking and the full block begin.
        self._milestones = (
            _stage_from(table, table.first_throttle),
            _stage_from(table, table.first_block),
            _stage_from(table, table.full_block),
        )
        self._following = {stage.number: _next_stage(stage, policy) for stage in table.stages}
        # Where each stage starts on the enforcement clock, by number.
        self._starts = {stage.number: table.start_of(stage.number) for stage in table.stages}
        self._terminal = table.start_of(len(table))
        # Without pauses: where the milestones lie on the clock, and per stage the next
        # stage's (throttle minutes, block minutes, start).
        self._offsets = tuple(
            None if number is None else self._starts[number] for number in self._milestones
        )
        self._next = {
            number: (None, None, None)
            if following is None
            else (
                following.throttle_minutes,
                following.block_minutes,
                self._starts[following.number],
            )
            for number, following in self._following.items()
        }
        # Per build: its product and the builds to recommend, by value and, in front, by
        # identity (the stores share one object per build; an object is kept beside its
        # entry, so its id is not reused meanwhile).
        self._recommended: dict[ExchangeBuild, tuple[Product, tuple[ExchangeBuild, ...]]] = {}
        self._by_id: dict[int, tuple[ExchangeBuild, Product, tuple[ExchangeBuild, ...]]] = {}

    def _recommend(self, build: ExchangeBuild) -> tuple[Product, tuple[ExchangeBuild, ...]]:
        known = self._by_id.get(id(build))
        if known is not None and known[0] is build:
            return known[1], known[2]
        found = self._recommended.get(build)
        if found is None:
            baseline = self._policy.baseline_at(self._now)
            recommended = recommended_builds(build, baseline, self._catalog, self._on)
            found = (build.product, recommended)
            if len(self._recommended) >= _BUILDS:
                self._recommended.clear()
            self._recommended[build] = found
        if len(self._by_id) >= _BUILDS:
            self._by_id.clear()
        self._by_id[id(build)] = (build, *found)
        return found

    def values(self, state: ServerState) -> tuple[Any, ...]:
        """The fields of ``state``'s row, in :data:`ROW_FIELDS` order."""
        now = self._now
        if type(state) is not ServerState:
            raise InvalidValueError(f"state must be a ServerState, got {state!r:.80}")
        if self._exemptions is not None or self._monitors is not None:
            held = () if self._exemptions is None else self._exemptions(state.server_id)
            monitor = False if self._monitors is None else self._monitors(state.server_id)
            if held or monitor:  # the operator's controls: report_row's own row
                return self._own(state, held, monitor)
        build = state.build
        product: Product | None
        recommended: tuple[ExchangeBuild, ...]
        if build is None:
            product, recommended = None, ()
        else:
            known = self._by_id.get(id(build))
            if known is not None and known[0] is build:
                _, product, recommended = known
            else:
                product, recommended = self._recommend(build)
        first = state.first_detected
        # Outside an episode decide() answers "no stage", and once compliant nothing lies
        # ahead (the history a forecast keeps is not the schedule): an empty timeline.
        if first is None or state.compliant_since is not None:
            # A pause that outlives remediation still runs and is charged: the report shows it.
            outlived = covering_end(pause_spans(state.pauses), now) if state.pauses else None
            return (
                state.server_id,
                state.tenant,
                build,
                product,
                state.status,
                first,
                state.last_seen,
                recommended,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                outlived,
                None,
            )
        if state.pauses:
            return self._paused(state, first, product, recommended)
        # An episode without pauses: the clock runs one-for-one from the first detection.
        horizon = _later(max(now, _later(first, self._terminal)), _DAY)
        if horizon >= END:  # the timeline is cut at the calendar's end
            return self._own(state, (), False)
        # Every milestone lies before first + terminal < horizon < END: no overflow, no cut.
        elapsed = now - first
        stage = self._policy.plan_at(elapsed if elapsed > _ZERO else _ZERO).stage
        next_throttle, next_block, next_start = self._next[stage.number]
        throttle, block, full = self._offsets
        return (
            state.server_id,
            state.tenant,
            build,
            product,
            state.status,
            first,
            state.last_seen,
            recommended,
            None if throttle is None else first + throttle,
            None if block is None else first + block,
            None if full is None else first + full,
            stage,
            next_throttle,
            next_block,
            None if next_start is None else first + next_start,
            None,
            None,
        )

    def _own(
        self, state: ServerState, held: tuple[Exemption, ...], monitor: bool
    ) -> tuple[Any, ...]:
        row = report_row(
            state, self._now, self._policy, self._catalog, exemptions=held, monitor=monitor
        )
        values: tuple[Any, ...] = _values_of(row)
        return values

    def _paused(
        self,
        state: ServerState,
        first: dt.datetime,
        product: Product | None,
        recommended: tuple[ExchangeBuild, ...],
    ) -> tuple[Any, ...]:
        """:meth:`values` of a state in an episode since ``first``, with pauses."""
        now, policy = self._now, self._policy
        horizon = _horizon(state, policy, now)
        if horizon >= END:  # the timeline is cut at the calendar's end
            return self._own(state, (), False)
        spans = pause_spans(state.pauses)
        frozen = spans if policy.pause_freezes_clock else ()
        elapsed = now - first
        if frozen:
            elapsed -= paused_between(frozen, first, now)
        stage = policy.plan_at(max(elapsed, _ZERO)).stage
        following = self._following[stage.number]

        def reached(number: int | None) -> dt.datetime | None:
            """When the clock first shows stage ``number``'s start (None: never)."""
            if number is None:
                return None
            at = clock_reaches(frozen, first, self._starts[number])
            return None if at is None or at >= horizon else at

        def unpaused(at: dt.datetime | None) -> dt.datetime | None:
            """The first instant from ``at`` that no pause covers."""
            if at is None:
                return at
            end = covering_end(spans, at)
            return at if end is None else end if end < horizon else None

        throttle_from, block_from, full_from = self._milestones
        paused_until = None
        if covering_end(spans, now) is not None:
            # Paused now: the first unpaused instant of the timeline after now.
            paused_until = unpaused(max(covering_end(spans, now) or now, first))
        return (
            state.server_id,
            state.tenant,
            state.build,
            product,
            state.status,
            first,
            state.last_seen,
            recommended,
            unpaused(reached(throttle_from)),
            unpaused(reached(block_from)),
            unpaused(reached(full_from)),
            stage,
            None if following is None else following.throttle_minutes,
            None if following is None else following.block_minutes,
            None if following is None else reached(following.number),
            paused_until,
            None,
        )
