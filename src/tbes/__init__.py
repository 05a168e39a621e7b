"""tbes: transport-based enforcement against outdated Microsoft Exchange servers.

The public API, re-exported from the modules that hold each concept.
"""

from tbes.catalog import Assessment, Baseline, Catalog, Compliance, Release, assess
from tbes.errors import (
    CatalogError,
    HeaderParseError,
    InvalidBuildError,
    InvalidPauseError,
    NaiveDatetimeError,
    PauseConflictError,
    PauseInPastError,
    QuotaExceededError,
    StageTableError,
    StoreConflictError,
    StoreError,
    TbesError,
)
from tbes.ledger import Pause, PauseLedger
from tbes.received import Hop, SenderEvidence, find_sender, parse_received, received_values
from tbes.stages import DEFAULT_STAGE_TABLE, Stage, StageTable
from tbes.version import ExchangeBuild, Product

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_STAGE_TABLE",
    "Assessment",
    "Baseline",
    "Catalog",
    "CatalogError",
    "Compliance",
    "ExchangeBuild",
    "HeaderParseError",
    "Hop",
    "InvalidBuildError",
    "InvalidPauseError",
    "NaiveDatetimeError",
    "Pause",
    "PauseConflictError",
    "PauseInPastError",
    "PauseLedger",
    "Product",
    "QuotaExceededError",
    "Release",
    "SenderEvidence",
    "Stage",
    "StageTable",
    "StageTableError",
    "StoreConflictError",
    "StoreError",
    "TbesError",
    "__version__",
    "assess",
    "find_sender",
    "parse_received",
    "received_values",
]
