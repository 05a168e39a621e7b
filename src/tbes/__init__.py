"""tbes: transport-based enforcement against outdated Microsoft Exchange servers.

The curated public API: what an MTA that embeds tbes (an adapter, a daemon, a milter of its
own) and a compliance tool need, re-exported here and kept stable. Everything else public
lives in the module of its concept (``tbes.received``, ``tbes.stages``, ``tbes.store``,
``tbes.errors``, …) and is documented on the API page; modules whose names start with ``_``
are implementation. The pure core (version … report, events) never imports the shell
(store, enforcer, notifiers, adapters, cli); this facade re-exports both. ``PostgresStore``
and the adapters live in their own modules only, so that ``import tbes`` needs neither
psycopg nor aiosmtpd.
"""

import importlib.metadata as _metadata

from tbes.baseline import Baseline
from tbes.catalog import Catalog
from tbes.compliance import Assessment, Compliance, assess
from tbes.decision import Action, Decision, decide
from tbes.enforcer import Connection, Enforcer
from tbes.errors import (
    AdapterConfigError,
    CatalogError,
    DeliveryError,
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
from tbes.notifiers import (
    CallbackNotifier,
    EmailNotifier,
    LoggingNotifier,
    Notifier,
    WebhookNotifier,
)
from tbes.policy import DEFAULT_POLICY, ConnectorKind, Policy, SmtpReply
from tbes.received import SenderEvidence, find_sender, received_values
from tbes.report import ReportRow, forecast, report_row
from tbes.schedule import Schedule
from tbes.state import ServerState, observe
from tbes.store import MemoryStore, SQLiteStore, StateStore
from tbes.version import ExchangeBuild, Product

try:
    __version__ = _metadata.version("tbes")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [  # noqa: RUF022 - grouped by use, not sorted
    # Enforcing: what an MTA embeds.
    "Enforcer",
    "Connection",
    "Decision",
    "Action",
    "SmtpReply",
    "Policy",
    "ConnectorKind",
    "DEFAULT_POLICY",
    "StateStore",
    "MemoryStore",
    "SQLiteStore",
    "Event",
    "EventKind",
    "Notifier",
    "LoggingNotifier",
    "WebhookNotifier",
    "EmailNotifier",
    "CallbackNotifier",
    # The pure core: headers -> evidence -> assessment -> state -> decision -> report.
    "received_values",
    "find_sender",
    "SenderEvidence",
    "ExchangeBuild",
    "Product",
    "Catalog",
    "Baseline",
    "Schedule",
    "Exemption",
    "Compliance",
    "Assessment",
    "assess",
    "ServerState",
    "observe",
    "decide",
    "Pause",
    "PauseLedger",
    "TenantPause",
    "report_row",
    "ReportRow",
    "forecast",
    # Errors: the whole family, so that one import catches what tbes raises.
    "TbesError",
    "AdapterConfigError",
    "CatalogError",
    "DeliveryError",
    "InvalidBuildError",
    "InvalidPauseError",
    "InvalidValueError",
    "NaiveDatetimeError",
    "PauseConflictError",
    "PauseInPastError",
    "PolicyError",
    "PolicyProtocolError",
    "QuotaExceededError",
    "StageTableError",
    "StoreConflictError",
    "StoreError",
    "UnseenServerError",
    "__version__",
]
