"""Helpers shared by the test modules: paths of the committed test data and the vector loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS = REPO_ROOT / "tests"
VECTORS = TESTS / "vectors"
DATA = TESTS / "data"
# Microsoft's build list (MIT, see ExchangeBuildNumbers.LICENSE.txt beside it): the source of
# the packaged catalog and the independent reference the catalog tests read by hand.
BUILD_LIST_CSV = DATA / "ExchangeBuildNumbers.csv"


def load_vectors(name: str) -> Any:
    """Load a JSON vector file from tests/vectors."""
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))
