"""Where a tbes daemon listens: one address syntax for the milter and the policy service.

Accepted forms (the first two are libmilter's and Postfix's, so an operator can copy either):

* ``inet:PORT@HOST`` (also ``inet6:``; ``inet:PORT`` alone listens on every interface),
* ``inet:HOST:PORT``, ``HOST:PORT``, ``[IPv6]:PORT`` (an IPv6 host is written in brackets),
* ``unix:/path`` or ``local:/path`` (an absolute path).

:func:`parse_listen_address` checks the text once, at the boundary, and names it in the error;
:func:`start_server` (streams) and :func:`create_server` (a protocol) open an asyncio server
on the result. A stale unix socket left by a
crashed daemon is removed first, but only if nothing answers on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Awaitable, Callable

import attrs

from tbes.errors import TbesError

__all__ = [
    "FORMS",
    "ListenAddress",
    "ListenAddressError",
    "create_server",
    "parse_listen_address",
    "start_server",
]

FORMS = "inet:PORT@HOST, HOST:PORT, [IPv6]:PORT or unix:/path"
"""The accepted forms, for help texts and error messages."""


class ListenAddressError(TbesError, ValueError):
    """A listen address in none of the accepted forms; the message quotes it."""


def _port(value: int | None) -> int | None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535
    ):
        raise ListenAddressError(f"port must be an int in 0..65535, got {value!r}")
    return value


@attrs.frozen
class ListenAddress:
    """A TCP ``host``/``port`` (``host`` ``None``: every interface) or a unix socket ``path``."""

    host: str | None = None
    port: int | None = attrs.field(default=None, converter=_port)
    path: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.path is None) == (self.port is None):
            raise ListenAddressError("a listen address is a TCP port or a unix socket path")

    def __str__(self) -> str:
        """The address in a form :func:`parse_listen_address` reads back to it."""
        if self.path is not None:
            return f"unix:{self.path}"
        if self.host is None:
            return f"inet:{self.port}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen_address(text: str) -> ListenAddress:
    """The address ``text`` names, or :class:`ListenAddressError` quoting it."""
    if not isinstance(text, str):
        raise ListenAddressError(f"a listen address is a string, got {type(text).__name__}")
    try:
        return _parse(text.strip())
    except ValueError:
        raise ListenAddressError(f"not a listen address: {text!r} (write {FORMS})") from None


def _parse(text: str) -> ListenAddress:
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if colon and scheme in ("unix", "local"):
        if not rest.startswith("/") or "\0" in rest:
            raise ValueError(text)
        return ListenAddress(path=rest)
    if colon and scheme in ("inet", "inet6"):
        if "@" in rest:
            port, _, host = rest.partition("@")
            return ListenAddress(host=_host(host, bare_ipv6=True), port=_number(port))
        if rest.isdigit():
            return ListenAddress(port=_number(rest))
        text = rest
    host, colon, port = text.rpartition(":")
    if not colon:
        raise ValueError(text)
    return ListenAddress(host=_host(host), port=_number(port))


def _number(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        raise ValueError(text)
    return int(text)


def _host(text: str, *, bare_ipv6: bool = False) -> str:
    """A host name or address; IPv6 in brackets (bare only after ``@``, where it is clear)."""
    bracketed = text.startswith("[") and text.endswith("]")
    host = text[1:-1] if bracketed else text
    if not host or not host.isascii() or any(c.isspace() or c in "[]@/" for c in host):
        raise ValueError(text)
    if ":" in host:
        if not (bracketed or bare_ipv6):
            raise ValueError(text)
        try:
            socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        except OSError:
            raise ValueError(text) from None
    return host


async def start_server(
    address: ListenAddress,
    client: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    *,
    limit: int = 2**16,
) -> asyncio.Server:
    """Open an asyncio stream server on ``address`` calling ``client`` for each connection."""
    if address.path is None:
        return await asyncio.start_server(client, address.host, address.port, limit=limit)
    _remove_stale_socket(address.path)
    return await asyncio.start_unix_server(client, address.path, limit=limit)


async def create_server(
    address: ListenAddress, protocol: Callable[[], asyncio.BaseProtocol]
) -> asyncio.Server:
    """Open an asyncio server on ``address`` with a ``protocol`` instance per connection."""
    loop = asyncio.get_running_loop()
    if address.path is None:
        assert address.port is not None  # a ListenAddress has a port or a path
        return await loop.create_server(protocol, address.host, address.port)
    _remove_stale_socket(address.path)
    return await loop.create_unix_server(protocol, address.path)


def _remove_stale_socket(path: str) -> None:
    """Unlink ``path`` if it is a unix socket nothing listens on (a crashed daemon's)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        return  # binding fails and names the file: never delete what is not ours
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    finally:
        probe.close()
