"""Helpers shared by the test modules: the ../shared lookup and the vector loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared; fails the test with a clear message if it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"{path} is missing: the test vectors live in ../shared beside the repository "
            "(clone the project next to its shared/ folder)",
            pytrace=False,
        )
    return path


def load_vectors(name: str) -> Any:
    """Load a JSON vector file from ../shared/vectors."""
    return json.loads(shared_path("vectors", name).read_text(encoding="utf-8"))
