"""tbes: transport-based enforcement against outdated Microsoft Exchange servers.

The public API, re-exported from the modules that hold each concept. The pure core
(version … report, events) never imports the shell (store, enforcer, notifiers, adapters,
cli); this facade re-exports both. ``PostgresStore`` and the adapters live in their own
modules only, so that ``import tbes`` needs neither psycopg nor aiosmtpd.
"""

import importlib.metadata as _metadata

from tbes.catalog import Assessment, Baseline, Catalog, Compliance, Release, assess
from tbes.decision import Action, Decision, decide
from tbes.enforcer import Connection, Enforcer, utc_now
from tbes.errors import (
    AdapterConfigError,
    CatalogError,
    InvalidBuildError,
    InvalidPauseError,
    InvalidValueError,
    NaiveDatetimeError,
    PauseConflictError,
    PauseInPastError,
    PolicyError,
    PolicyProtocolError,
    QuotaExceededError,
    StageTableError,
    StoreConflictError,
    StoreError,
    TbesError,
    UnseenServerError,
)
from tbes.events import Event, EventKind
from tbes.exemption import Exemption
from tbes.ledger import Pause, PauseLedger, TenantPause
from tbes.notifiers import CallbackNotifier, LoggingNotifier, Notifier
from tbes.policy import DEFAULT_POLICY, ConnectorKind, Policy, SmtpReply
from tbes.received import Hop, SenderEvidence, find_sender, parse_received, received_values
from tbes.report import ReportRow, Segment, forecast, report_row
from tbes.stages import DEFAULT_STAGE_TABLE, Stage, StageTable
from tbes.state import ServerState, observe
from tbes.store import LedgerWrite, MemoryStore, SQLiteStore, StateStore, StateWrite, Versioned
from tbes.version import ExchangeBuild, Product

try:
    __version__ = _metadata.version("tbes")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_POLICY",
    "DEFAULT_STAGE_TABLE",
    "Action",
    "AdapterConfigError",
    "Assessment",
    "Baseline",
    "CallbackNotifier",
    "Catalog",
    "CatalogError",
    "Compliance",
    "Connection",
    "ConnectorKind",
    "Decision",
    "Enforcer",
    "Event",
    "EventKind",
    "ExchangeBuild",
    "Exemption",
    "Hop",
    "InvalidBuildError",
    "InvalidPauseError",
    "InvalidValueError",
    "LedgerWrite",
    "LoggingNotifier",
    "MemoryStore",
    "NaiveDatetimeError",
    "Notifier",
    "Pause",
    "PauseConflictError",
    "PauseInPastError",
    "PauseLedger",
    "Policy",
    "PolicyError",
    "PolicyProtocolError",
    "Product",
    "QuotaExceededError",
    "Release",
    "ReportRow",
    "SQLiteStore",
    "Segment",
    "SenderEvidence",
    "ServerState",
    "SmtpReply",
    "Stage",
    "StageTable",
    "StageTableError",
    "StateStore",
    "StateWrite",
    "StoreConflictError",
    "StoreError",
    "TbesError",
    "TenantPause",
    "UnseenServerError",
    "Versioned",
    "__version__",
    "assess",
    "decide",
    "find_sender",
    "forecast",
    "observe",
    "parse_received",
    "received_values",
    "report_row",
    "utc_now",
]
