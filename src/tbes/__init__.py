"""tbes: transport-based enforcement against outdated Microsoft Exchange servers.

The public API, re-exported from the modules that hold each concept. The pure core
(version … report) never imports the shell (store, enforcer, adapters, cli); this facade
re-exports both. ``PostgresStore`` and the adapters live in their own modules only, so
that ``import tbes`` needs neither psycopg nor pymilter.
"""

from tbes.baseline import Baseline
from tbes.catalog import Catalog, Release
from tbes.compliance import Assessment, Compliance, assess
from tbes.decision import Action, Decision, decide
from tbes.enforcer import (
    CallbackNotifier,
    Connection,
    Enforcer,
    Event,
    EventKind,
    LoggingNotifier,
    Notifier,
    utc_now,
)
from tbes.errors import (
    CatalogError,
    HeaderParseError,
    InvalidBuildError,
    InvalidPauseError,
    InvalidValueError,
    NaiveDatetimeError,
    PauseConflictError,
    PauseInPastError,
    PolicyError,
    QuotaExceededError,
    StageTableError,
    StoreConflictError,
    StoreError,
    TbesError,
    UnseenServerError,
)
from tbes.ledger import Pause, PauseLedger
from tbes.policy import DEFAULT_POLICY, ConnectorKind, Policy, SmtpReply
from tbes.received import Hop, SenderEvidence, find_sender, parse_received, received_values
from tbes.report import ReportRow, Segment, forecast, report_row
from tbes.schedule import RollingBaseline, Schedule, Step
from tbes.stages import DEFAULT_STAGE_TABLE, Stage, StageTable
from tbes.state import ServerState, observe
from tbes.store import LedgerWrite, MemoryStore, SQLiteStore, StateStore, StateWrite, Versioned
from tbes.version import ExchangeBuild, Product

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_POLICY",
    "DEFAULT_STAGE_TABLE",
    "Action",
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
    "HeaderParseError",
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
    "Product",
    "QuotaExceededError",
    "Release",
    "ReportRow",
    "RollingBaseline",
    "SQLiteStore",
    "Schedule",
    "Segment",
    "SenderEvidence",
    "ServerState",
    "SmtpReply",
    "Stage",
    "StageTable",
    "StageTableError",
    "StateStore",
    "StateWrite",
    "Step",
    "StoreConflictError",
    "StoreError",
    "TbesError",
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
