"""The milter: enforcement inside Postfix or Sendmail, at the end of the message headers.

libmilter (through pymilter, extra ``milter``) creates one :class:`TbesMilter` per SMTP
connection and calls it from that connection's thread; the object keeps only that
connection's peer identity and the message's ``Received`` values, while the
:class:`~tbes.enforcer.Enforcer` behind it is shared by all threads. The identity comes
from the MTA, never from the headers: ``{client_addr}``, ``{client_name}`` (the verified
name, ``unknown`` when there is none; a name Sendmail's ``{client_resolve}`` does not call
``OK`` is dropped) and ``{cert_subject}`` (the TLS client certificate subject), which the
milter asks for itself (``setsymlist``) so the MTA needs no macro configuration; the
connect arguments are the fallback for MTAs that cannot negotiate it.

The decision is taken at end of headers (``eoh``): every ``Received`` value has been seen,
top first, as :func:`~tbes.received.find_sender` wants them, and the body need not be
sent at all. A throttle or block is answered with the decision's own code, enhanced code
and text (``setreply`` and ``TEMPFAIL``/``REJECT``); the MTA replies to the client's
end-of-data with it. libmilter refuses a reply text with a lone ``%``, so ``%`` is sent as
``%%``; Postfix shows it single again.

Any fault (configuration, store, bug) is logged at WARNING and the message accepted (fail
open), or deferred with ``451 4.3.0`` when the configuration says ``fail_closed``: the MTA
must never see a milter exception, which it would turn into its own default action.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import Milter

from tbes.adapters.config import AdapterConfig, Checker
from tbes.decision import Action, Decision
from tbes.enforcer import FAIL_CLOSED_REPLY
from tbes.policy import SmtpReply

# ``command`` (the ``tbes milter`` click command) is built on first access; see __getattr__.
__all__ = ["MAX_RECEIVED", "TbesMilter", "run_milter", "validate_socket"]

_log = logging.getLogger(__name__)

MAX_RECEIVED = 200
"""At most this many Received values (the top ones) of one message are kept and judged."""

# What libmilter's smfi_setconn accepts (Postfix writes inet:host:port on its side).
_SOCKET = re.compile(r"^(?:(?:inet6?):\d{1,5}(?:@\S+)?|(?:unix|local):/\S+)$")


class TbesMilter(Milter.Base):  # type: ignore[misc]
    """One SMTP connection's milter: gathers its identity and Received headers, then decides."""

    def __init__(self, checker: Checker, config: AdapterConfig) -> None:
        self._checker = checker
        self._config = config
        self._peer_ip: str | None = None
        self._peer_host: str | None = None
        self._tls_subject: str | None = None
        self._received: list[str] = []

    @Milter.symlist("{client_addr}", "{client_name}", "{client_resolve}")  # type: ignore[untyped-decorator]
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        """Record the peer: the MTA's macros, else the connect arguments."""
        try:
            address = hostaddr[0] if isinstance(hostaddr, tuple) and hostaddr else hostaddr
            self._peer_ip = self._macro("{client_addr}") or (
                address if isinstance(address, str) else None
            )
            self._peer_host = self._macro("{client_name}") or hostname
            # Sendmail's reverse name may be forged; it says so in {client_resolve}.
            if self._macro("{client_resolve}") not in (None, "OK"):
                self._peer_host = None
        except Exception:
            _log.warning("tbes milter: reading the connection failed", exc_info=True)
        return int(Milter.CONTINUE)

    @Milter.symlist("{cert_subject}")  # type: ignore[untyped-decorator]
    def hello(self, hostname: str) -> int:
        """Record the TLS client certificate subject (known after STARTTLS, at EHLO)."""
        try:
            self._tls_subject = self._macro("{cert_subject}") or self._tls_subject
        except Exception:
            _log.warning("tbes milter: reading the TLS subject failed", exc_info=True)
        return int(Milter.CONTINUE)

    @Milter.noreply  # type: ignore[untyped-decorator]
    def envfrom(self, sender: str, *params: str) -> int:
        """Start a new message on this connection."""
        self._received = []
        return int(Milter.CONTINUE)

    @Milter.noreply  # type: ignore[untyped-decorator]
    def header(self, name: str, value: str) -> int:
        """Keep the value of each Received header, in the order the MTA sends them."""
        if name.lower() == "received" and len(self._received) < MAX_RECEIVED:
            self._received.append(_plain(value))
        return int(Milter.CONTINUE)

    def eoh(self) -> int:
        """Decide for this message and answer: reply + TEMPFAIL/REJECT, or ACCEPT."""
        received, self._received = self._received, []
        try:
            conn = self._config.connection(
                peer_ip=self._peer_ip, peer_host=self._peer_host, tls_subject=self._tls_subject
            )
            return self._answer(self._checker.check(conn, received))
        except Exception:
            fallback = "deferring" if self._config.fail_closed else "accepting"
            _log.warning(
                "tbes milter: deciding for %s failed; %s the message",
                self._peer_ip,
                fallback,
                exc_info=True,
            )
            return self._fault()

    def abort(self) -> int:
        """Forget the message the client gave up on."""
        self._received = []
        return int(Milter.CONTINUE)

    def _macro(self, name: str) -> str | None:
        value = self.getsymval(name)
        return value if isinstance(value, str) and value else None

    def _answer(self, decision: Decision) -> int:
        if decision.action is Action.ACCEPT or decision.reply is None:
            return int(Milter.ACCEPT)
        return self._reply(decision.reply)

    def _reply(self, reply: SmtpReply) -> int:
        # libmilter drops a reply text with a lone '%'; MTAs print '%%' as '%'.
        self.setreply(str(reply.code), reply.enhanced, reply.text.replace("%", "%%"))
        return int(Milter.TEMPFAIL if reply.code < 500 else Milter.REJECT)

    def _fault(self) -> int:
        if not self._config.fail_closed:
            return int(Milter.ACCEPT)
        try:
            return self._reply(FAIL_CLOSED_REPLY)
        except Exception:
            # Without our text the MTA still defers, with its own 4xx wording.
            _log.warning("tbes milter: setting the fault reply failed", exc_info=True)
            return int(Milter.TEMPFAIL)


def _plain(value: str) -> str:
    """A header value as plain text: bytes pymilter could not decode become U+FFFD."""
    if value.isascii():
        return value
    # pymilter keeps undecodable bytes as lone surrogates; "surrogatepass" never fails.
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def validate_socket(socket: str) -> str:
    """Return ``socket`` if libmilter can listen on it, else raise ValueError naming it.

    libmilter's forms: ``inet:PORT@HOST``, ``inet6:PORT@HOST``, ``unix:/path``.
    """
    if not _SOCKET.match(socket):
        raise ValueError(
            f"not a milter socket: {socket!r} (write inet:PORT@HOST, inet6:PORT@HOST "
            "or unix:/path/to/socket)"
        )
    return socket


def run_milter(
    socket: str,
    config: AdapterConfig,
    checker: Checker,
    *,
    name: str = "tbes",
    timeout: int = 600,
) -> None:
    """Serve the milter on ``socket`` until SIGTERM/SIGINT (blocks; one per process).

    ``checker`` is normally ``make_enforcer(config, store)``; it is shared by every
    connection's thread. ``timeout`` is libmilter's I/O timeout towards the MTA, seconds.
    """
    validate_socket(socket)
    # libmilter keeps one filter per process; pymilter's factory is its module global.
    Milter.factory = lambda: TbesMilter(checker, config)
    _log.info("tbes milter %r listening on %s", name, socket)
    Milter.runmilter(name, socket, timeout)
    _log.info("tbes milter %r stopped", name)


def _click_command() -> Any:
    """Build ``tbes milter`` (click is the ``cli`` extra, so it is imported only here)."""
    import click

    from tbes.adapters.config import load_config, make_enforcer
    from tbes.catalog import Catalog
    from tbes.errors import TbesError
    from tbes.store.sqlite import SQLiteStore

    @click.command("milter")
    @click.option(
        "--listen",
        required=True,
        metavar="SOCKET",
        help="Where the MTA connects: inet:PORT@HOST, inet6:PORT@HOST or unix:/path.",
    )
    @click.option(
        "--db",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="The SQLite state file (created if missing).",
    )
    @click.option(
        "--config",
        "config_path",
        required=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="The adapter configuration (TOML): connectors, own_hosts, fail_closed.",
    )
    def milter(listen: str, db: Path, config_path: Path) -> None:
        """Run the milter for Postfix or Sendmail until SIGTERM."""
        # `tbes --catalog FILE milter ...` (or $TBES_CATALOG) wins over the config's catalog.
        override = click.get_current_context().find_root().params.get("catalog_path")
        try:
            validate_socket(listen)
            config = load_config(config_path)
            catalog = config.load_catalog() if override is None else Catalog.load(override)
            store = SQLiteStore(db)
            enforcer = make_enforcer(config, store, catalog=catalog)
        except (TbesError, ValueError) as error:
            raise click.ClickException(str(error)) from error
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        run_milter(listen, config, enforcer)

    return milter


def __getattr__(name: str) -> Any:
    # ``command`` is built on first use so that importing this module needs no click.
    if name == "command":
        return _click_command()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
