"""Where a daemon's log lines go and how they look: ``text`` or ``json``, stderr or syslog.

Every record becomes exactly one line. ``text`` writes ``key=value`` pairs; a value that is
not a plain word (letters, digits, ``_.:/@+-``) is quoted, with ``"`` and ``\\`` escaped and
everything outside printable ASCII written as a Python escape (``\\n``, ``\\x1b``,
``\\u202e``), so nothing a peer or a header sent can end a line, forge another, or drive a
terminal. ``json`` writes one object per line (ASCII only, by :func:`json.dumps`). A
record's structured fields travel in its ``tbes`` attribute (``extra={"tbes": {...}}``,
see :mod:`tbes.adapters._decision_log`); its message becomes ``msg``, and an exception's
traceback the one escaped value ``exc``.

``syslog`` goes through :class:`logging.handlers.SysLogHandler` to ``/dev/log`` (or
another socket) with facility ``mail`` by default, tagged ``tbes[PID]:``, so the lines land
next to Postfix's; syslog stamps the time itself, so the line carries none.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import os
import re
from collections.abc import Mapping

__all__ = [
    "FACILITIES",
    "FORMATS",
    "TARGETS",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "escape",
    "restore_logging",
]

FORMATS = ("text", "json")
TARGETS = ("stderr", "syslog")
FACILITIES = tuple(sorted(logging.handlers.SysLogHandler.facility_names))
DEFAULT_SYSLOG_SOCKET = "/dev/log"

_WORD = r"[A-Za-z0-9_.:/@+\-]+"
_PLAIN = re.compile(_WORD)
_PLAIN_PAIRS = re.compile(rf"{_WORD}={_WORD}(?: {_WORD}={_WORD})*")


def escape(value: object) -> str:
    """``value`` as one ``text`` token: bare if it is a plain word, else quoted and escaped."""
    text = "-" if value is None else str(value)
    if _PLAIN.fullmatch(text):
        return text
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    out.append('"')
    return "".join(out)


def _fields(record: logging.LogRecord) -> Mapping[str, object]:
    fields = getattr(record, "tbes", None)
    return fields if isinstance(fields, Mapping) else {}


def _time(record: logging.LogRecord) -> str:
    # One datetime per second of log lines, not one per line: a busy daemon logs hundreds.
    second = int(record.created)
    millis = int((record.created - second) * 1000)
    global _second_text
    if _second_text[0] != second:
        instant = dt.datetime.fromtimestamp(second, dt.UTC)
        _second_text = (second, instant.strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second_text[1]}.{millis:03d}Z"


_second_text: tuple[int, str] = (-1, "")


class TextFormatter(logging.Formatter):
    """``[time=…] level=… logger=… msg=… key=value …``, one line (see the module docstring)."""

    def __init__(self, *, with_time: bool = True) -> None:
        super().__init__()
        self._with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        head = f"level={record.levelname} logger={escape(record.name)}"
        parts = [f"time={_time(record)} {head}" if self._with_time else head]
        parts.append(f"msg={escape(record.getMessage())}")
        fields = _fields(record)
        pairs = [f"{key}={'-' if value is None else value}" for key, value in fields.items()]
        line = " ".join(pairs)
        # Every key and value a plain word (a decision line, mostly): one match for the line.
        # No plain word holds a space or "=", so a line that matches with one space fewer
        # than its pairs cannot hold a value that poses as another pair.
        if pairs and not (_PLAIN_PAIRS.fullmatch(line) and line.count(" ") == len(pairs) - 1):
            line = " ".join(f"{escape(key)}={escape(value)}" for key, value in fields.items())
        if line:
            parts.append(line)
        if record.exc_info:
            parts.append(f"exc={escape(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, the record's fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            line[key] = value if value is None or isinstance(value, int | float) else str(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=True, separators=(",", ":"))


def configure_logging(
    *,
    fmt: str = "text",
    target: str = "stderr",
    syslog_socket: str = DEFAULT_SYSLOG_SOCKET,
    facility: str = "mail",
    level: int = logging.INFO,
) -> logging.Handler:
    """Send every record of the process to ``target`` in ``fmt``; return the handler.

    Replaces the root logger's handlers, so each record is written once. An unknown format,
    target or facility is a ValueError naming it; a syslog socket that cannot be reached is
    the OSError of :class:`~logging.handlers.SysLogHandler`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if target not in TARGETS:
        raise ValueError(f"log target must be one of {', '.join(TARGETS)}, got {target!r}")
    handler: logging.Handler
    if target == "syslog":
        codes = logging.handlers.SysLogHandler.facility_names
        if facility not in codes:
            raise ValueError(f"syslog facility must be one of {', '.join(FACILITIES)}")
        syslog = logging.handlers.SysLogHandler(address=syslog_socket, facility=codes[facility])
        connected = getattr(syslog, "socket", None)
        if connected is None or connected.fileno() < 0:
            # The handler would drop every line in silence until syslog appears.
            raise OSError(f"nothing receives log lines at {syslog_socket}")
        syslog.ident = f"tbes[{os.getpid()}]: "
        syslog.append_nul = False
        handler = syslog
    else:
        handler = logging.StreamHandler()
    with_time = target != "syslog"
    formatter = JsonFormatter() if fmt == "json" else TextFormatter(with_time=with_time)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def restore_logging(handler: logging.Handler, previous: list[logging.Handler], level: int) -> None:
    """Undo :func:`configure_logging` (a daemon that failed to start, in a test process)."""
    root = logging.getLogger()
    root.removeHandler(handler)
    handler.close()
    for old in previous:
        root.addHandler(old)
    root.setLevel(level)
