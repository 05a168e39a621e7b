"""The ``tbes`` command: inspect messages, forecast timelines, report, pause, and run the demo.

A thin shell over the library (click for the command line, rich for the terminal): every
fact it prints comes from the core (:func:`~tbes.report.forecast`,
:func:`~tbes.report.report_row`, :func:`~tbes.decision.decide`, …) or the store. Two
decisions shaped it. Bad input never shows a traceback: every error the library or the
operating system raises for it (and every usage error) becomes one line on stderr and exit
code 2. And times are explicit: an instant needs a time zone (``Z`` or an offset), a date
alone means UTC midnight, so a forecast never depends on the machine's local zone.

One module per command group; :mod:`tbes.cli._app` holds the group and what the
commands share.
"""

from __future__ import annotations

from tbes.cli import catalog as _catalog  # noqa: F401  (registers its commands)
from tbes.cli import config as _config  # noqa: F401  (registers its commands)
from tbes.cli import demo as _demo  # noqa: F401  (registers its commands)
from tbes.cli import forget as _forget  # noqa: F401  (registers its commands)
from tbes.cli import inspect as _inspect  # noqa: F401  (registers its commands)
from tbes.cli import pauses as _pauses  # noqa: F401  (registers its commands)
from tbes.cli import report as _report  # noqa: F401  (registers its commands)
from tbes.cli import responder as _responder  # noqa: F401  (registers its commands)
from tbes.cli import server as _server  # noqa: F401  (registers its commands)
from tbes.cli import store as _store  # noqa: F401  (registers its commands)
from tbes.cli import timeline as _timeline  # noqa: F401  (registers its commands)
from tbes.cli._app import cli, main

__all__ = ["cli", "main"]
