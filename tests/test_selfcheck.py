"""The pure self-check: RFC 3834 suppression, the reply's content, phases and escaping."""

from __future__ import annotations

import datetime as dt
import html
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbes.baseline import Baseline
from tbes.catalog import Catalog
from tbes.errors import InvalidValueError
from tbes.policy import Policy
from tbes.render._common import printable
from tbes.schedule import Schedule
from tbes.selfcheck import Phase, compose, policy_phases, suppressed
from tbes.store.counters import (
    Limit,
    MemoryCounters,
    PostgresCounters,
    SQLiteCounters,
    open_counters,
)

NOW = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)
EX2013_HOP = (
    "from EX13.fabrikam.local (10.0.0.5) by mx.fabrikam.example (10.0.0.6) with Microsoft "
    "SMTP Server id 15.0.1497.48; Thu, 3 Dec 2026 09:59:00 +0000"
)
CATALOG = Catalog.default()
# What printable() must have escaped: C0/C1 controls, DEL, line separators, bidi controls.
_RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069]")


def reply_text(headers: list[tuple[str, str]], received: list[str], **kw: Any) -> str:
    policy = kw.pop("policy", Policy.exchange_online_2026())
    return compose(
        headers, received, now=NOW, policy=policy, catalog=CATALOG, escape=printable, **kw
    ).text


@pytest.mark.parametrize(
    ("sender", "headers", "why"),
    [
        ("", [], "null"),
        ("<>", [], "null"),
        (None, [], "null"),
        ("a@b.example", [("Auto-Submitted", "auto-replied")], "Auto-Submitted"),
        ("a@b.example", [("auto-submitted", " Auto-Generated; owner=x")], "Auto-Submitted"),
        ("a@b.example", [("Precedence", "BULK")], "bulk"),
        ("a@b.example", [("Precedence", "list")], "list"),
        ("a@b.example", [("Precedence", "junk")], "junk"),
        ("a@b.example", [("List-Id", "<x.example>")], "List-Id"),
        ("owner-admins@b.example", [], "software"),
        ("admins-request@b.example", [], "software"),
        ("MAILER-DAEMON@b.example", [], "software"),
    ],
)
def test_no_reply_to_null_automatic_or_list_mail(
    sender: str | None, headers: list[tuple[str, str]], why: str
) -> None:
    found = suppressed(sender, headers)
    assert found is not None
    assert why in found


@pytest.mark.parametrize(
    "headers",
    [[], [("Auto-Submitted", "no")], [("Precedence", "first-class")], [("Subject", "List-Id")]],
)
def test_ordinary_mail_may_be_answered(headers: list[tuple[str, str]]) -> None:
    assert suppressed("admin@fabrikam.example", headers) is None


def test_the_reply_names_build_release_verdict_dates_and_recommendation() -> None:
    text = reply_text([], [EX2013_HOP])
    assert "Build: 15.0.1497.48 (Exchange 2013 CU23 Mar23SU)" in text
    assert "UNSUPPORTED" in text
    assert "throttling from: 2027-01-02 (day 30)" in text
    assert "blocking from: 2027-02-01 (day 60)" in text
    assert "full block from: 2027-03-03 (day 90)" in text
    assert "Recommended builds: 15.2." in text
    assert "Exchange SE" in text


def test_the_smtp_reply_is_decides_on_a_fresh_state() -> None:
    # A fresh episode is in stage 1, which only reports: every minute is accepted.
    assert "SMTP reply tbes would give now: 250 (accepted)" in reply_text([], [EX2013_HOP])


def test_an_outdated_2019_build_is_named_with_its_cu_line() -> None:
    hop = EX2013_HOP.replace("15.0.1497.48", "15.2.1544.4")
    text = reply_text([], [hop])
    assert "OUTDATED" in text
    assert "Exchange 2019 CU14" in text


def test_a_policy_with_one_baseline_has_one_phase() -> None:
    policy = Policy.exchange_online_2026()
    assert policy_phases(policy, NOW) == (Phase(NOW, policy.baseline_at(NOW)),)
    assert "Later phases: none" in reply_text([], [EX2013_HOP])


def _ScheduledPolicy() -> Policy:
    """A policy whose schedule tightens on 2027-06-01."""
    return Policy(
        baseline=Schedule(
            [
                (dt.datetime(2023, 6, 23, tzinfo=dt.UTC), Baseline.exchange_online_2023()),
                (dt.datetime(2027, 6, 1, tzinfo=dt.UTC), Baseline.exchange_online_2026()),
            ]
        )
    )


def test_a_dated_schedule_gives_todays_phase_and_each_later_one() -> None:
    policy = _ScheduledPolicy()
    phases = policy_phases(policy, NOW)
    assert [phase.effective_from for phase in phases] == [
        NOW,
        dt.datetime(2027, 6, 1, tzinfo=dt.UTC),
    ]
    text = reply_text([], [EX2013_HOP], policy=policy)
    assert "Verdict today under the policy in force: COMPLIANT" in text
    assert "Verdict from 2027-06-01: UNSUPPORTED" in text


def test_threading_headers_follow_rfc_3834() -> None:
    reply = compose(
        [
            ("Subject", "Is my server ok?"),
            ("Message-ID", " <m2@fabrikam.example>"),
            ("References", "<m0@fabrikam.example>\r\n <m1@fabrikam.example>"),
        ],
        [EX2013_HOP],
        now=NOW,
        policy=Policy(),
        catalog=CATALOG,
        escape=printable,
    )
    assert reply.subject == "Auto: tbes self-check - Is my server ok?"
    assert reply.in_reply_to == "<m2@fabrikam.example>"
    assert reply.references == "<m0@fabrikam.example> <m1@fabrikam.example> <m2@fabrikam.example>"


def test_a_message_id_with_control_characters_is_not_echoed() -> None:
    reply = compose(
        [("Message-ID", "<a\x01b@x>")],
        [],
        now=NOW,
        policy=Policy(),
        catalog=CATALOG,
        escape=printable,
    )
    assert reply.in_reply_to is None
    assert reply.references is None


_FOREIGN = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from("\x1b\r\n<>&\u202e"),
    max_size=80,
)


@given(subject=_FOREIGN, host=_FOREIGN, message_id=_FOREIGN)
def test_nothing_foreign_reaches_the_reply_raw(subject: str, host: str, message_id: str) -> None:
    hop = f"from {host} (10.0.0.5) by {host} (10.0.0.6) with Microsoft SMTP Server id 15.0.1497.48"
    reply = compose(
        [("Subject", subject), ("Message-ID", message_id)],
        [hop, host],
        now=NOW,
        policy=Policy(),
        catalog=CATALOG,
        escape=printable,
    )
    for part in (reply.subject, reply.text, reply.html):
        assert _RAW_CONTROL.search(part) is None
    assert "\r" not in reply.subject
    assert "\n" not in reply.subject
    body = reply.html.split("<pre>", 1)[1].rsplit("</pre>", 1)[0]
    assert "<" not in body
    assert html.unescape(body) == reply.text
    for header in (reply.in_reply_to, reply.references):
        assert header is None or re.fullmatch(r"[\x21-\x7e]+( [\x21-\x7e]+)*", header)


# ---- counters ----------------------------------------------------------------------------


_TAKES = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.floats(min_value=0, max_value=5)), max_size=30
)


# Each example opens a new SQLite file: fewer examples than the profile's.
@settings(max_examples=100)
@given(takes=_TAKES)
def test_counters_allow_at_most_the_limit_per_window_and_agree(
    takes: list[tuple[str, float]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    path: Path = tmp_path_factory.mktemp("counters") / "c.db"
    memory, shared = MemoryCounters(), SQLiteCounters(path)
    now, allowed = 0.0, []
    try:
        for key, step in takes:
            now += step
            limits = [Limit(f"sender:{key}", 1, 10.0), Limit("all", 3, 6.0)]
            answer = memory.take(limits, now)
            assert shared.take(limits, now) == answer
            if answer:
                allowed.append((key, now))
    finally:
        shared.close()
    for key, at in allowed:
        same_sender = [t for k, t in allowed if k == key and at <= t < at + 10.0]
        assert same_sender == [at]
        assert len([t for _, t in allowed if at <= t < at + 6.0]) <= 3


def test_counters_are_a_table_beside_the_schema_and_expire(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    counters = SQLiteCounters(path)
    limit = [Limit("sender:a", 1, 600.0)]
    assert counters.take(limit, 1000.0)
    assert not counters.take(limit, 1599.0)
    assert counters.take(limit, 1600.0)
    counters.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT key, expires, count FROM tbes_counters").fetchall()
    conn.close()
    assert rows == [("sender:a", 2200.0, 1)]


def test_a_long_chain_of_hops_is_cut_but_the_sender_hop_still_named() -> None:
    own = "from a.contoso.example (a.contoso.example [10.9.9.9]) by b.contoso.example with ESMTP"
    text = reply_text([], [own] * 40 + [EX2013_HOP], own_hosts=["contoso.example"])
    assert "  30. from a.contoso.example" in text
    assert "  31. " not in text
    assert "... and 11 older hop(s), not shown." in text
    assert "Sender hop: hop 41" in text
    assert "UNSUPPORTED" in text


def test_open_counters_chooses_by_the_name(tmp_path: Path) -> None:
    assert isinstance(open_counters(None), MemoryCounters)
    # A postgresql:// URL opens PostgreSQL counters; they connect only on first use.
    assert isinstance(open_counters("postgresql://tbes@127.0.0.1:1/x"), PostgresCounters)
    opened = open_counters(tmp_path / "c.db")
    assert isinstance(opened, SQLiteCounters)
    opened.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda: Limit("", 1, 1.0),
        lambda: Limit("k", 0, 1.0),
        lambda: Limit("k", 1, 0),
        lambda: Limit("k", 1, True),
        lambda: SQLiteCounters("c.db", timeout=-1),
        lambda: PostgresCounters("postgresql://x/y", timeout=float("inf")),
        lambda: PostgresCounters(""),
    ],
)
def test_bad_counter_arguments_are_refused(make: Any) -> None:
    with pytest.raises(InvalidValueError):
        make()


def test_a_schedule_with_no_step_after_now_has_no_later_phase() -> None:
    later = dt.datetime(2027, 7, 1, tzinfo=dt.UTC)
    policy = _ScheduledPolicy()
    assert policy_phases(policy, later) == (Phase(later, Baseline.exchange_online_2026()),)
    text = compose(
        [], [EX2013_HOP], now=later, policy=policy, catalog=CATALOG, escape=printable
    ).text
    assert "Verdict today under the policy in force: UNSUPPORTED" in text
    assert "Later phases: none" in text
