"""The layering rule: the pure core never imports the shell or an optional third-party package.

Every module of the package that is not shell is core. Each is imported alone in a fresh
interpreter, and every import statement in its source (at module level, in functions, under
``TYPE_CHECKING``) is read, so a lazy import inside a function is caught too. The facade
``tbes/__init__.py`` re-exports the shell on purpose; the fresh interpreter registers the
package without running it, so that each core module's own imports are what is measured.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SHELL = (
    "tbes.store",
    "tbes.enforcer",
    "tbes.notifiers",
    "tbes.outbox",
    "tbes.adapters",
    "tbes.cli",
    "tbes.render",
    "tbes.demo",
)
# The import names of the optional extras: cli (click, rich), postgres (psycopg[binary]),
# milter (pymilter: Milter and its C module milter), smtp (aiosmtpd).
OPTIONAL = ("click", "rich", "psycopg", "psycopg_binary", "Milter", "milter", "aiosmtpd")
NAMED_CORE = {
    "tbes.version",
    "tbes.received",
    "tbes.catalog",
    "tbes.baseline",
    "tbes.compliance",
    "tbes.schedule",
    "tbes.stages",
    "tbes.ledger",
    "tbes.state",
    "tbes.policy",
    "tbes.decision",
    "tbes.events",
    "tbes.report",
    "tbes.serde",
    "tbes.errors",
}

_SPEC = importlib.util.find_spec("tbes")
assert _SPEC is not None
assert _SPEC.submodule_search_locations is not None
PACKAGE_DIR = Path(next(iter(_SPEC.submodule_search_locations)))


def _under(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def _module_name(path: Path) -> str:
    parts = ("tbes", *path.relative_to(PACKAGE_DIR).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}
CORE = sorted(name for name in MODULES if name != "tbes" and not _under(name, SHELL))

# Imports the package without running tbes/__init__.py, then the one module; prints what loaded.
_PROBE = """
import importlib, importlib.util, json, sys
package = importlib.util.module_from_spec(importlib.util.find_spec("tbes"))
sys.modules["tbes"] = package
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def _forbidden(names: list[str]) -> list[str]:
    return sorted(
        name
        for name in names
        if _under(name, SHELL) or _under(name, OPTIONAL) or name.startswith("tbes (")
    )


def test_the_core_is_found_and_holds_every_named_core_module() -> None:
    assert set(CORE) >= NAMED_CORE
    assert not [name for name in CORE if _under(name, SHELL)]
    assert {"tbes.enforcer", "tbes.cli", "tbes.store.sqlite"} <= set(MODULES)  # shell seen too


@pytest.mark.parametrize("module", CORE)
def test_importing_a_core_module_loads_no_shell_module_nor_optional_package(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert module in loaded
    assert _forbidden(loaded) == []


def _imported_names(path: Path, module: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
            names += ["tbes (facade)" for alias in node.names if alias.name == "tbes"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
            if base == "tbes":  # the facade itself runs the shell's imports
                names += [f"tbes ({a.name})" for a in node.names if f"tbes.{a.name}" not in MODULES]
    return names


@pytest.mark.parametrize("module", CORE)
def test_no_import_statement_in_a_core_module_names_the_shell_or_an_optional_package(
    module: str,
) -> None:
    assert _forbidden(_imported_names(MODULES[module], module)) == []
