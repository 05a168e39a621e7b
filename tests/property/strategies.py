"""Hypothesis strategies for tbes values, shared by the property tests."""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from tbes.ledger import Pause
from tbes.stages import Stage, StageTable
from tbes.version import ExchangeBuild

# Plausible Exchange majors and minors, plus a tail of arbitrary ones.
builds: st.SearchStrategy[ExchangeBuild] = st.builds(
    ExchangeBuild,
    st.one_of(st.sampled_from([6, 8, 14, 15, 16]), st.integers(0, 99)),
    st.one_of(st.sampled_from([0, 1, 2, 3, 5, 20, 21]), st.integers(0, 99)),
    st.integers(0, 9999),
    st.integers(0, 999),
)

# Aware instants in UTC within the years the enforcement system cares about.
instants: st.SearchStrategy[dt.datetime] = st.datetimes(
    min_value=dt.datetime(2020, 1, 1),
    max_value=dt.datetime(2035, 12, 31),
    timezones=st.just(dt.UTC),
)


# --- issue 5: stage tables and pauses ---------------------------------------------------------


@st.composite
def stage_tables(draw: st.DrawFn, max_stages: int = 10) -> StageTable:
    """Any valid stage table: 1..max_stages stages, minutes within the hour, a terminal last."""
    count = draw(st.integers(1, max_stages))
    stages = []
    for number in range(1, count + 1):
        throttle = draw(st.integers(0, 60))
        block = draw(st.integers(0, 60 - throttle))
        days = None if number == count else draw(st.integers(1, 400))
        stages.append(Stage(number, draw(st.booleans()), throttle, block, days))
    return StageTable(tuple(stages))


# Pauses of a handful of servers, starting in the years the enforcement system cares about.
pauses: st.SearchStrategy[Pause] = st.builds(
    Pause,
    st.sampled_from(["EX01", "EX02", "ex03.contoso.com"]),
    st.dates(min_value=dt.date(2020, 1, 1), max_value=dt.date(2035, 12, 31)),
    st.integers(1, 400),
)


# --- Received headers (issue 3) -----------------------------------------------------------------
# Pieces of real Received headers; joined in any order with arbitrary text between them they
# reach the parser's corners (clauses, comments, literals, builds, dates) far more often than
# uniform text would.
_RECEIVED_PIECES = (
    "from ",
    "by ",
    "with ",
    "id ",
    "via ",
    "for ",
    "FROM ",
    "Microsoft SMTP Server ",
    "Microsoft SMTPSVC(6.0.3790.4675)",
    "mapi ",
    "ESMTPS ",
    "15.1.2507.23",
    "15.01.2507.039",
    "15.20.8835.29",
    "8.3.83.6",
    "1.",
    "(",
    ")",
    "((",
    "))",
    "\\",
    "\\(",
    "[",
    "]",
    "(TLS)",
    "(version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)",
    "via Frontend Transport",
    "; ",
    ";",
    "Mon, 4 Mar 2024 10:00:00 +0000",
    "Fri, 21 Apr 2023 10:55:05 -0000",
    "31 Feb 99999 25:61:61 +9999",
    "\r\n ",
    "\n\t",
    "\r",
    " ",
    "192.0.2.1",
    "[10.1.2.3]",
    "[::1]",
    "2001:db8::25",
    "[IPv6:2001:db8::1]",
    "fe80::1%5",
    "mx.receiver.example",
    "EX16.Contoso.Example.",
    "mail.protection.outlook.com",
    "for <alice@contoso.example>",
    "\udcff",
    "\x00",
)
received_texts: st.SearchStrategy[str] = st.lists(
    st.one_of(st.sampled_from(_RECEIVED_PIECES), st.text(max_size=12)), max_size=40
).map("".join)
