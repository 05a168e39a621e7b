"""The self-check reply: what tbes reads from one message, as text an administrator can read.

An administrator on the sending side mails a check address; the responder
(:mod:`tbes.adapters.responder`) answers with what tbes makes of the message. This module is
the pure part: :func:`suppressed` says whether a message must get no reply at all (RFC 3834:
no reply to a null sender, to automatic mail, to list and bulk mail), and :func:`compose`
builds the reply (subject, RFC 3834 headers, a plain-text and an HTML body) from the
message's headers, an instant, a policy and a catalog. No I/O and no clock.

Decisions: every piece of text that comes from the message goes through the ``escape``
function the caller passes (the service passes :func:`tbes.render._common.printable`'s escape of
control characters; the core may not import the renderers), and the HTML part is the text
part passed through :func:`html.escape`, so the two never disagree and nothing from the
message reaches the HTML unescaped. The baselines over time come from :func:`policy_phases`,
the one place that knows how a :class:`~tbes.policy.Policy` exposes its schedule.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable, Iterable, Sequence

import attrs

from tbes._instants import as_utc
from tbes.baseline import Baseline
from tbes.catalog import Catalog
from tbes.compliance import Assessment, Compliance, assess
from tbes.decision import decide
from tbes.errors import InvalidValueError
from tbes.policy import Policy
from tbes.received import MAX_RECEIVED, Hop, SenderEvidence, find_sender, parse_received
from tbes.state import ServerState
from tbes.version import ExchangeBuild

__all__ = ["Phase", "SelfCheckReply", "compose", "policy_phases", "suppressed"]

_ENFORCED = frozenset({Compliance.OUTDATED, Compliance.UNSUPPORTED})
# Precedence values that mark mail no one should answer automatically (RFC 3834 section 2).
_BULK = frozenset({"bulk", "list", "junk"})
# A header shown back is cut here: the reply stays small whatever the message carries.
_MAX_SHOWN = 300
_MAX_SUBJECT = 120
_MAX_HOPS = 30  # hops shown; the sender hop is named whatever its position
_MAX_IDS = 900
# Printable ASCII without space or angle brackets: the id goes back into a header.
_MSG_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,250}>")
CAVEATS = (
    "tbes sees the Received: headers only as the receiving side got them: a hop added or "
    "changed on the way is read as it arrived.",
    "In real enforcement the server's identity (and whether it is enforced at all) comes "
    "from the connector the mail arrives through, not from these headers; the SMTP reply "
    "above assumes a server first detected now on an enforced connector.",
    "Builds are judged by their CU line; a build the catalog does not list is judged like "
    "its published neighbours.",
)
"""What the reply says about its own limits, at its end."""


@attrs.frozen
class Phase:
    """A baseline of the policy and the instant from which it is in force."""

    effective_from: dt.datetime
    baseline: Baseline


def policy_phases(policy: Policy, now: dt.datetime) -> tuple[Phase, ...]:
    """The baseline in force at ``now``, then each later phase of ``policy``'s schedule.

    A policy with a single baseline has one phase, from ``now``; a dated schedule
    (:attr:`~tbes.policy.Policy.schedule`) gives one more phase per step after ``now``.
    """
    now = as_utc(now, "now")
    phases = [Phase(now, policy.baseline_at(now))]
    for step in policy.schedule.steps:
        if step.effective_from > now:
            phases.append(Phase(step.effective_from, policy.baseline_at(step.effective_from)))
    return tuple(phases)


def suppressed(sender: str | None, headers: Sequence[tuple[str, str]]) -> str | None:
    """Why a message must get no automatic reply, or None if it may get one (RFC 3834).

    No reply to a null or missing envelope sender, to list or mail system software
    (``owner-*``, ``*-request``, ``MAILER-DAEMON``), to a message with ``Auto-Submitted``
    other than ``no``, with ``Precedence: bulk``, ``list`` or ``junk``, or with a
    ``List-Id`` header. ``headers`` are ``(name, value)`` pairs as the message has them.
    """
    if not sender or not sender.strip() or sender.strip() == "<>":
        return "the envelope sender is null"
    local = sender.strip().strip("<>").rpartition("@")[0].lower()
    if local.startswith("owner-") or local.endswith("-request") or local == "mailer-daemon":
        return "the envelope sender is list or mail system software (RFC 3834 section 2)"
    for name, value in headers:
        key, text = name.strip().lower(), _unfold(value).strip().lower()
        if key == "auto-submitted" and text.split(";", 1)[0].strip() != "no":
            return "the message is automatic (Auto-Submitted)"
        if key == "precedence" and text in _BULK:
            return f"the message has Precedence: {text}"
        if key == "list-id":
            return "the message is list mail (List-Id)"
    return None


@attrs.frozen
class SelfCheckReply:
    """The reply to one check message: its subject, RFC 3834 threading and the two bodies."""

    subject: str
    in_reply_to: str | None
    references: str | None
    text: str
    html: str


def compose(
    headers: Sequence[tuple[str, str]],
    received: Sequence[str],
    *,
    now: dt.datetime,
    policy: Policy,
    catalog: Catalog,
    escape: Callable[[str], str],
    own_hosts: Iterable[str] = (),
    server_id: str = "self-check",
) -> SelfCheckReply:
    """The reply to a check message with ``headers`` and ``received`` (top first) at ``now``.

    ``escape`` makes foreign text safe to show (control characters as visible escapes); it
    is applied to every header text before it is placed in the reply. ``own_hosts`` are the
    receiving side's hosts, skipped when the sender hop is looked for (as the enforcer does).
    ``server_id`` names the imagined fresh server whose minute offset the SMTP reply uses.
    """
    now = as_utc(now, "now")
    if not isinstance(policy, Policy) or not isinstance(catalog, Catalog):
        raise InvalidValueError("compose needs a Policy and a Catalog")
    received = list(received)[:MAX_RECEIVED]
    own = tuple(own_hosts)
    evidence = find_sender(received, own_hosts=own)
    lines = [
        "tbes self-check",
        "",
        f"Checked at {_instant(now)} UTC.",
        "",
        *_hops_section(received, evidence, own, escape),
        "",
        *_verdict_section(evidence, now, policy, catalog, server_id),
        "",
        "Caveats:",
        *(f"  - {caveat}" for caveat in CAVEATS),
        "",
    ]
    text = "\n".join(lines)
    original = _header(headers, "subject")
    subject = "Auto: tbes self-check"
    if original:
        subject += f" - {_cut(escape(_unfold(original)), _MAX_SUBJECT)}"
    message_id = _message_id(_header(headers, "message-id"))
    references = _references(_header(headers, "references"), message_id)
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>tbes self-check</title>'
        f"</head><body><pre>{html.escape(text)}</pre></body></html>\n"
    )
    return SelfCheckReply(subject, message_id, references, text, page)


# ---- sections ----------------------------------------------------------------------------


def _hops_section(
    received: Sequence[str],
    evidence: SenderEvidence | None,
    own: tuple[str, ...],
    escape: Callable[[str], str],
) -> list[str]:
    if not received:
        return ["Received hops: none (the message has no Received: headers)."]
    lines = ["Received hops, newest first, as tbes parsed them:"]
    for number, value in enumerate(received[:_MAX_HOPS], start=1):
        hop = parse_received(value)
        mark = "  <- sender hop" if evidence is not None and evidence.index == number - 1 else ""
        lines.append(f"  {number}. {_hop_line(hop, escape)}{mark}")
        lines.append(f"     raw: {_cut(escape(_unfold(value)), _MAX_SHOWN)}")
    if len(received) > _MAX_HOPS:
        lines.append(f"  ... and {len(received) - _MAX_HOPS} older hop(s), not shown.")
    lines.append("")
    if evidence is None:
        lines.append(
            "Sender hop: none. No hop outside the receiving side carries an Exchange build "
            "(a 'with Microsoft SMTP Server id X' clause), so tbes would not enforce."
        )
        return lines
    skipped = evidence.index
    why = (
        f"the {skipped} hop(s) above it were written by the receiving side"
        if skipped
        else "it is the newest hop"
    )
    receivers = ", ".join(escape(host) for host in own) or "none configured"
    lines.append(
        f"Sender hop: hop {skipped + 1}, written by "
        f"{escape(evidence.host or evidence.ip or 'an unnamed host')}: {why} (own hosts: "
        f"{receivers}; Exchange Online hops skipped), and it is the first with a 'by' host."
    )
    lines.append(
        "  The hop above it names this host as its client."
        if evidence.matched
        else "  The hop above it does not name this host as its client (not confirmed)."
    )
    return lines


def _hop_line(hop: Hop, escape: Callable[[str], str]) -> str:
    parts = [
        f"from {_endpoint(hop.from_host, hop.from_ip)}",
        f"by {_endpoint(hop.by_host, hop.by_ip)}",
        f"with {hop.protocol or '-'}",
    ]
    if hop.build is not None:
        parts.append(f"build {hop.build}")
    if hop.date is not None:
        parts.append(f"at {_instant(hop.date)} UTC")
    return escape("; ".join(parts))


def _verdict_section(
    evidence: SenderEvidence | None,
    now: dt.datetime,
    policy: Policy,
    catalog: Catalog,
    server_id: str,
) -> list[str]:
    if evidence is None:
        return [
            "Build: none found.",
            "Verdict: not enforced (no Exchange build).",
            "Stage timeline: not enforced.",
            "SMTP reply tbes would give now: 250 (accepted; nothing to enforce).",
        ]
    build = evidence.build
    phases = policy_phases(policy, now)
    today = assess(build, baseline=phases[0].baseline, catalog=catalog)
    lines = [f"Build: {build} ({_release_name(build, today, catalog)})"]
    lines.append(f"Verdict today under the policy in force: {today.status.value}. {today.reason}")
    for phase in phases[1:]:
        later = assess(build, baseline=phase.baseline, catalog=catalog)
        lines.append(
            f"Verdict from {_day(phase.effective_from)}: {later.status.value}. {later.reason}"
        )
    if len(phases) == 1:
        lines.append("Later phases: none (the policy schedules no later baseline).")
    lines.append("")
    lines.extend(_timeline(today, now, policy))
    lines.append("")
    lines.append(f"Recommended builds: {_recommended(today, catalog)}")
    lines.append("")
    lines.append(_smtp_line(build, today, now, policy, server_id))
    return lines


def _timeline(today: Assessment, now: dt.datetime, policy: Policy) -> list[str]:
    if today.status not in _ENFORCED:
        return ["Stage timeline: not enforced (the build is compliant or not enforceable)."]
    table = policy.stage_table
    lines = [f"Stage timeline for a server first detected now ({_day(now)}):"]
    for label, offset in (
        ("throttling from", table.first_throttle),
        ("blocking from", table.first_block),
        ("full block from", table.full_block),
    ):
        when = "never" if offset is None else f"{_day(now + offset)} (day {offset.days})"
        lines.append(f"  {label}: {when}")
    return lines


def _recommended(today: Assessment, catalog: Catalog) -> str:
    if not today.recommended:
        return "none needed."
    names = []
    for build in today.recommended:
        release = catalog.release(build)
        names.append(f"{build} ({release.title})" if release is not None else str(build))
    return "; ".join(names)


def _smtp_line(
    build: ExchangeBuild, today: Assessment, now: dt.datetime, policy: Policy, server_id: str
) -> str:
    first = now if today.status in _ENFORCED else None
    state = ServerState(server_id, "self-check", build, today.status, first, now, None)
    decision = decide(state, now, policy)
    if decision.reply is not None:
        return f"SMTP reply tbes would give now: {decision.reply}"
    return f"SMTP reply tbes would give now: 250 (accepted). {decision.reason}"


# ---- small helpers -----------------------------------------------------------------------


def _release_name(build: ExchangeBuild, today: Assessment, catalog: Catalog) -> str:
    release = today.release
    if release is None:
        return f"{build.product.label}, a build the catalog does not list"
    exact = catalog.release(build) is not None
    return release.title if exact else f"{release.title} line; this exact build is not listed"


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.strip().lower() == name:
            return value
    return None


def _message_id(value: str | None) -> str | None:
    found = _MSG_ID.search(_unfold(value)) if value else None
    return found.group() if found else None


def _references(value: str | None, message_id: str | None) -> str | None:
    ids = _MSG_ID.findall(_unfold(value)) if value else []
    if message_id is not None:
        ids.append(message_id)
    while ids and len(" ".join(ids)) > _MAX_IDS:
        ids.pop(0)  # keep the newest: RFC 5322 lets a long chain drop its middle
    return " ".join(ids) or None


def _unfold(value: str) -> str:
    return value.replace("\r\n", "").replace("\n", "")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _endpoint(host: str | None, ip: str | None) -> str:
    if host and ip:
        return f"{host} [{ip}]"
    return host or (f"[{ip}]" if ip else "-")


def _instant(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "minutes")


def _day(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).date().isoformat()
