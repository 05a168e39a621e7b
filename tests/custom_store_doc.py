"""The example store of docs/custom-store.md, taken from the page itself, for the tests to run.

The page promises a working store on :class:`~tbes.store.RowStore` in under 40 lines; the
contract tests and the store properties run against exactly the code the page shows.
"""

from __future__ import annotations

import re

from support import REPO_ROOT
from tbes.store import RowStore

PAGE = REPO_ROOT / "docs" / "custom-store.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_MARKER = "class DictStore(RowStore):"


def example_source() -> str:
    """The page's one code block that defines ``DictStore``."""
    [source] = [block for block in _BLOCK.findall(PAGE.read_text()) if _MARKER in block]
    return str(source)


def example_store_class() -> type[RowStore]:
    """The ``DictStore`` class the page defines, made by running its code block."""
    namespace: dict[str, object] = {"__name__": "custom_store_example"}
    exec(compile(example_source(), str(PAGE), "exec"), namespace)
    made = namespace["DictStore"]
    assert isinstance(made, type)
    assert issubclass(made, RowStore)
    return made
