"""Fuzz tbes.received with Hypothesis for a given time: ``python fuzz/hypothesis_received.py``.

Runs rounds of generated inputs (header-shaped text and arbitrary text, up to several
hundred characters, plus a few large adversarial ones) through ``parse_received`` and
``find_sender`` and asserts the contract in ``fuzz/contract.py``. Prints the number of
executions at the end; exits 1 with Hypothesis's falsifying example on the first finding.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "tests" / "property")]
sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from fuzz.contract import check_hop, check_sender  # noqa: E402
from fuzz.loop import fuzz_for  # noqa: E402
from strategies import received_texts  # noqa: E402

_ROUND = 200  # examples per round; the time limit is checked between rounds
_executions = 0

_texts = st.one_of(received_texts, st.text(max_size=400))
# Long inputs built from a repeated piece: deep nesting, endless clauses, runs of dots.
_large = st.builds(
    lambda piece, count: piece * count,
    st.sampled_from(["(", "by ", "with Microsoft SMTP Server (", "1.", ")", ";", "(\\(", "()"]),
    st.integers(1_000, 20_000),
)
_hosts = st.lists(st.sampled_from(["receiver.example", "Contoso.Example.", "", "."]), max_size=3)
_clients = st.one_of(st.none(), st.sampled_from(["smtp.example", "192.0.2.1", "[::1]", ""]))


@settings(
    max_examples=_ROUND,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    values=st.lists(st.one_of(_texts, _texts, _texts, _large), max_size=6),
    own_hosts=_hosts,
    client=_clients,
    skip_online=st.booleans(),
)
def _round(values: list[str], own_hosts: list[str], client: str | None, skip_online: bool) -> None:
    global _executions
    _executions += 1
    for value in values:
        check_hop(value)
    check_sender(values, own_hosts, client, skip_online)


def main() -> int:
    """Fuzz until the time is up; report executions, exit 1 on a finding."""
    return fuzz_for("hypothesis_received", __doc__.splitlines()[0], _round, lambda: _executions)


if __name__ == "__main__":
    sys.exit(main())
