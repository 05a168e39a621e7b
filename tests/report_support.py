"""Server states for the report, render and CLI tests: one builder, so that all three agree.

Every state belongs to the tenant ``fabrikam``; builds are given as text and pauses as
``(start, days)`` pairs, which is how the tests' hand-worked timelines are written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from tbes.compliance import Compliance
from tbes.ledger import Pause
from tbes.state import ServerState
from tbes.version import ExchangeBuild

__all__ = ["JAN_1", "fabrikam_state"]

JAN_1 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
"""The instant a state without a first detection was last seen, unless told otherwise."""


def fabrikam_state(
    server_id: str,
    build: str,
    first: dt.datetime | None,
    pauses: Iterable[tuple[dt.date, int]] = (),
    *,
    status: Compliance = Compliance.OUTDATED,
    last_seen: dt.datetime | None = None,
    compliant_since: dt.datetime | None = None,
) -> ServerState:
    """The state of fabrikam's ``server_id`` on ``build``, first detected at ``first``.

    ``last_seen`` defaults to ``first`` or, for a server never detected, :data:`JAN_1`.
    """
    return ServerState(
        server_id=server_id,
        tenant="fabrikam",
        build=ExchangeBuild.parse(build),
        status=status,
        first_detected=first,
        last_seen=last_seen or first or JAN_1,
        compliant_since=compliant_since,
        pauses=tuple(Pause(server_id, start, days) for start, days in pauses),
    )
