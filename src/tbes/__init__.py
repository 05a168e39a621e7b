"""tbes: transport-based enforcement against outdated Microsoft Exchange servers.

The public API, re-exported from the modules that hold each concept.
"""

from tbes.catalog import Assessment, Baseline, Catalog, Compliance, Release, assess
from tbes.errors import (
    CatalogError,
    HeaderParseError,
    InvalidBuildError,
    NaiveDatetimeError,
    PauseConflictError,
    PauseInPastError,
    QuotaExceededError,
    StageTableError,
    StoreConflictError,
    StoreError,
    TbesError,
)
from tbes.version import ExchangeBuild, Product

__version__ = "0.1.0.dev0"

__all__ = [
    "Assessment",
    "Baseline",
    "Catalog",
    "Compliance",
    "Release",
    "assess",
    "CatalogError",
    "ExchangeBuild",
    "HeaderParseError",
    "InvalidBuildError",
    "NaiveDatetimeError",
    "PauseConflictError",
    "PauseInPastError",
    "Product",
    "QuotaExceededError",
    "StageTableError",
    "StoreConflictError",
    "StoreError",
    "TbesError",
    "__version__",
]
