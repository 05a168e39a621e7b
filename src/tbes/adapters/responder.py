"""The self-check responder: an SMTP service that answers mail to check addresses (extra ``smtp``).

An administrator on the sending side mails a check address (``tbes-check@contoso.example``)
and gets back what tbes reads from the message (:mod:`tbes.selfcheck` builds the text). The
service accepts mail only for the configured addresses (any other recipient: ``550 5.1.1``),
so it can never relay, and only up to ``max_size`` bytes (SMTP ``SIZE``). It never becomes a
backscatter source: no reply to a null sender, to automatic, bulk or list mail (RFC 3834),
to a check address itself, and at most one reply per sender per ``per_sender_seconds`` and
``per_minute`` replies in all. Those counts live in the store's database, SQLite or
PostgreSQL (:mod:`tbes.store.counters`), so that several responders share them. The reply is sent
with a null envelope sender (RFC 3834 section 3.3) through the configured MTA with
:mod:`smtplib`, in a worker thread, off the event loop. Every message gets ``250`` once it
is in, whether a reply goes out or not: the sender learns nothing from the status, and a
failed reply is logged, never retried. The check reads only: no server state is written.

Configuration, a TOML file with one table (unknown keys are errors)::

    [responder]
    addresses = ["tbes-check@contoso.example"]
    from = "tbes-check@contoso.example"
    policy = "exchange_online_2026"      # optional, a Policy.named preset
    catalog = "/etc/tbes/catalog.json"   # optional
    own_hosts = ["mx.contoso.example"]   # the receiving side's hosts, skipped in Received
    per_sender_seconds = 600             # one reply per sender per interval
    per_minute = 30                      # replies per minute, all senders together
    max_size = 1000000                   # bytes accepted per message
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.policy
import email.utils
import logging
import re
import signal
import smtplib
import tomllib
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import attrs

from tbes._checks import of_type
from tbes.adapters.listen import ListenAddress
from tbes.catalog import Catalog
from tbes.enforcer import utc_now
from tbes.errors import AdapterConfigError, InvalidValueError
from tbes.policy import Policy
from tbes.received import MAX_RECEIVED, received_values
from tbes.render._common import printable
from tbes.selfcheck import SelfCheckReply, compose, suppressed
from tbes.store.counters import Counters, Limit

__all__ = ["ResponderConfig", "ResponderHandler", "load_responder_config", "send_reply"]

_log = logging.getLogger(__name__)
_KEYS = frozenset(
    {
        "addresses",
        "from",
        "policy",
        "catalog",
        "own_hosts",
        "per_sender_seconds",
        "per_minute",
        "max_size",
    }
)
# A plain ASCII addr-spec: what a reply may be addressed to (nothing that could smuggle a
# second recipient, a route or a header into the SMTP dialogue).
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9.-]{1,253}")
_SEND_TIMEOUT = 30.0


def _address(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise AdapterConfigError(f"responder: {what} must be a plain address, got {value!r:.80}")
    return value.lower()


def _addresses(value: object) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise AdapterConfigError(
            f"responder: addresses must be a non-empty list of addresses, got {value!r:.80}"
        )
    return frozenset(_address(each, "each of addresses") for each in value)


def _hosts(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(h, str) and h for h in value):
        raise AdapterConfigError(f"responder: own_hosts must be a list of names, got {value!r:.80}")
    return tuple(value)


def _number(value: object, what: str, low: float, high: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise AdapterConfigError(
            f"responder: {what} must be a number from {low:g} to {high:g}, got {value!r:.80}"
        )
    return value


def _whole(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int:
        raise AdapterConfigError(f"responder: {what} must be a whole number, got {value!r:.80}")
    number: int = _number(value, what, low, high)
    return number


def _check_addresses(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, frozenset) or not value:
        raise InvalidValueError(f"addresses must be a non-empty frozenset, got {value!r:.80}")
    for each in value:
        _check_sender(instance, attribute, each)


def _check_sender(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value) or value != value.lower():
        raise InvalidValueError(f"{attribute.name}: not a lower-case address: {value!r:.80}")


def _check_positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidValueError(f"{attribute.name} must be a number > 0, got {value!r:.80}")


@attrs.frozen
class ResponderConfig:
    """The responder's settings (module docstring); :func:`load_responder_config` builds it."""

    addresses: frozenset[str] = attrs.field(validator=_check_addresses)
    sender: str = attrs.field(validator=_check_sender)
    policy: Policy = attrs.field(validator=of_type(Policy))
    catalog: Catalog = attrs.field(validator=of_type(Catalog))
    own_hosts: tuple[str, ...] = attrs.field(default=(), validator=of_type(tuple))
    per_sender_seconds: float = attrs.field(default=600.0, validator=_check_positive)
    per_minute: int = attrs.field(default=30, validator=_check_positive)
    max_size: int = attrs.field(default=1_000_000, validator=_check_positive)


def load_responder_config(path: str | Path) -> ResponderConfig:
    """Read the responder's TOML file; any bad key or value raises AdapterConfigError naming it."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AdapterConfigError(f"responder config {path}: {exc}") from exc
    return parse_responder_config(data, source=str(path))


def parse_responder_config(data: dict[str, Any], *, source: str = "<config>") -> ResponderConfig:
    """A :class:`ResponderConfig` from the parsed TOML ``data``."""
    extra = sorted(set(data) - {"responder"})
    if extra:
        raise AdapterConfigError(f"{source}: unknown key {extra[0]!r} (only [responder])")
    table = data.get("responder")
    if not isinstance(table, dict):
        raise AdapterConfigError(f"{source}: a [responder] table is required")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise AdapterConfigError(f"{source}: unknown key responder.{unknown[0]}")
    if "addresses" not in table or "from" not in table:
        raise AdapterConfigError(f"{source}: responder.addresses and responder.from are required")
    catalog_path = table.get("catalog")
    if catalog_path is not None and not isinstance(catalog_path, str):
        raise AdapterConfigError(f"responder: catalog must be a path, got {catalog_path!r:.80}")
    catalog = Catalog.default() if catalog_path is None else Catalog.load(catalog_path)
    preset = table.get("policy", "exchange_online_2026")
    if not isinstance(preset, str):
        raise AdapterConfigError(f"responder: policy must be a preset name, got {preset!r:.80}")
    policy = Policy.named(preset, on=utc_now().date(), catalog=catalog)
    return ResponderConfig(
        addresses=_addresses(table["addresses"]),
        sender=_address(table["from"], "from"),
        policy=policy,
        catalog=catalog,
        own_hosts=_hosts(table.get("own_hosts", [])),
        per_sender_seconds=float(
            _number(table.get("per_sender_seconds", 600), "per_sender_seconds", 1, 86400 * 7)
        ),
        per_minute=_whole(table.get("per_minute", 30), "per_minute", 1, 100_000),
        max_size=_whole(table.get("max_size", 1_000_000), "max_size", 1024, 100_000_000),
    )


def build_message(reply: SelfCheckReply, *, sender: str, to: str) -> EmailMessage:
    """The reply as a MIME message: plain text with an HTML alternative, RFC 3834 headers."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = reply.subject
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-replied"
    if reply.in_reply_to is not None:
        message["In-Reply-To"] = reply.in_reply_to
    if reply.references is not None:
        message["References"] = reply.references
    message.set_content(reply.text)
    message.add_alternative(reply.html, subtype="html")
    return message


def send_reply(via: ListenAddress, message: EmailMessage, to: str) -> None:
    """Hand ``message`` to the MTA at ``via`` for ``to``, with a null envelope sender."""
    # The command refuses a --reply-via without host and port (a unix socket).
    with smtplib.SMTP(via.host or "127.0.0.1", via.port or 25, timeout=_SEND_TIMEOUT) as client:
        client.send_message(message, from_addr="", to_addrs=[to])


class ResponderHandler:
    """aiosmtpd handler: accepts mail for the check addresses and answers it once allowed."""

    def __init__(
        self,
        config: ResponderConfig,
        counters: Counters,
        reply_via: ListenAddress,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        send: Callable[[ListenAddress, EmailMessage, str], None] = send_reply,
    ) -> None:
        self._config = config
        self._counters = counters
        self._via = reply_via
        self._clock = clock
        self._send = send

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        """Only the check addresses are recipients: the responder never relays."""
        if not isinstance(address, str) or address.lower() not in self._config.addresses:
            return "550 5.1.1 Not a tbes check address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Answer the message if the rules allow it; always ``250`` once it is in."""
        try:
            await self._answer(envelope)
        except Exception:
            _log.warning("tbes responder: answering a check message failed", exc_info=True)
        return "250 2.0.0 OK"

    async def _answer(self, envelope: Any) -> None:
        content: bytes = envelope.original_content or envelope.content or b""
        sender = envelope.mail_from if isinstance(envelope.mail_from, str) else None
        headers = _headers(content)
        why = suppressed(sender, headers)
        if why is None and (sender is None or not _ADDRESS.fullmatch(sender)):
            why = "the envelope sender is not a plain address"
        if why is None and sender is not None and sender.lower() in self._config.addresses:
            why = "the envelope sender is a check address"
        if why is not None or sender is None:
            _log.info("tbes responder: no reply: %s", why)
            return
        now = self._clock()
        limits = [
            Limit(f"responder-sender:{sender.lower()}", 1, self._config.per_sender_seconds),
            Limit("responder-all", self._config.per_minute, 60.0),
        ]
        allowed = await asyncio.to_thread(self._counters.take, limits, now.timestamp())
        if not allowed:
            _log.info("tbes responder: no reply to %s: rate limit", printable(sender))
            return
        reply = compose(
            headers,
            received_values(content, limit=MAX_RECEIVED),
            now=now,
            policy=self._config.policy,
            catalog=self._config.catalog,
            escape=printable,
            own_hosts=self._config.own_hosts,
        )
        message = build_message(reply, sender=self._config.sender, to=sender)
        await asyncio.to_thread(self._send, self._via, message, sender)
        _log.info("tbes responder: replied to %s", printable(sender))


def _headers(content: bytes) -> Sequence[tuple[str, str]]:
    """The header fields of ``content`` as (name, raw value) pairs, never raising."""
    parsed = BytesHeaderParser(policy=email.policy.compat32).parsebytes(content)
    return [(str(name), str(value)) for name, value in parsed.items()]


def smtp_factory(handler: ResponderHandler, config: ResponderConfig) -> Callable[[], Any]:
    """A protocol factory of aiosmtpd SMTP sessions for the handler, with the size limit."""
    from aiosmtpd.smtp import SMTP

    def make() -> Any:
        return SMTP(
            handler,
            data_size_limit=config.max_size,
            enable_SMTPUTF8=False,
            ident="tbes responder",
        )

    return make


def serve(
    listen: ListenAddress, config: ResponderConfig, counters: Counters, reply_via: ListenAddress
) -> None:
    """Run the responder on ``listen`` until interrupted."""
    from tbes.adapters.listen import create_server

    handler = ResponderHandler(config, counters, reply_via)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)  # a clean exit, status 0
        server = await create_server(listen, smtp_factory(handler, config))
        _log.warning("tbes responder: listening on %s", listen)
        async with server:
            await stop.wait()

    try:
        asyncio.run(main())
    finally:
        counters.close()
