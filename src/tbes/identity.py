"""Server identity: the canonical id of one sending server behind a named connector.

A connector rule's ``name`` is the transport identity, which the MTA vouches for. Behind it
stand one or more Exchange servers (an edge, a hybrid server, a relay), told apart by the
sender hop's ``by`` host: ``NAME/HOST``. The host comes from a header, so it only ever
*splits* a connector's enforcement, never escapes it: the connector name in front is the
MTA's. A name that is not a plausible host name, and every name past the connector's
``max_servers``, share one overflow state, ``NAME/~overflow`` (``~`` is in no host name).
"""

from __future__ import annotations

import enum
import re

__all__ = ["OVERFLOW", "Identity", "belongs_to", "connector_of", "host_of", "server_key"]

OVERFLOW = "~overflow"
"""The host part of a connector's overflow state."""

_HOST = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?")


class Identity(enum.Enum):
    """What a connector's stored state stands for: each server behind it, or the connector."""

    SERVER = "server"
    CONNECTOR = "connector"


def server_key(connector: str, host: str | None) -> str:
    """The canonical id of the server ``host`` behind ``connector``: ``CONNECTOR/HOST``.

    ``host`` is lower-cased without a trailing dot; anything that is not a host name (an
    empty value, a ``/``, control characters, more than 253 characters) is the overflow
    state ``CONNECTOR/~overflow``, so a forged name never reaches a key, a log or a terminal.
    """
    name = (host or "").rstrip(".").lower()
    if _HOST.fullmatch(name) is None:
        name = OVERFLOW
    return f"{connector}/{name}"


def connector_of(server_id: str) -> str:
    """The connector part of a canonical id (the id itself for a connector-level one)."""
    return server_id.split("/", 1)[0]


def host_of(server_id: str) -> str | None:
    """The host part of a canonical id, ``None`` for a connector-level id."""
    parts = server_id.split("/", 1)
    return parts[1] if len(parts) == 2 else None


def belongs_to(server_id: str, connector: str) -> bool:
    """Whether ``server_id`` is ``connector``'s own (connector-level) id or one of its servers."""
    return server_id == connector or server_id.startswith(connector + "/")
