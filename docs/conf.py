"""Sphinx configuration for the tbes documentation (MyST markdown, furo theme)."""

from __future__ import annotations

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
# Forward references to shell types resolve at run time; the API page documents both sides.
suppress_warnings = ["myst.xref_missing"]
nitpicky = False
