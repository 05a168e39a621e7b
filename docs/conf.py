"""Sphinx configuration for the tbes documentation (MyST markdown, furo theme)."""

from __future__ import annotations

import importlib.util

project = "tbes"
author = "The tbes developers"
copyright = "2026, The tbes developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = "tbes"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}
# The docs build needs no optional extra: a module of an extra that is not installed is
# mocked for autodoc (only then, so a full install documents the real thing).
_OPTIONAL_MODULES = ("aiosmtpd", "click", "psycopg", "psycopg_pool", "pyperf", "rich")
autodoc_mock_imports = [m for m in _OPTIONAL_MODULES if importlib.util.find_spec(m) is None]
# Forward references to shell types resolve at run time; the API page documents both sides.
suppress_warnings = ["myst.xref_missing"]
nitpicky = False
