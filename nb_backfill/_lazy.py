"""Heavy libraries imported when first used, so `import nb_backfill` and the command line stay fast.

numpy and pandas each cost more to import than the rest of the package together, and much of what
the package does (a small backfill from the terminal, one partition's window in a run) needs
neither. A module names such a library once, `np = lazy_module("numpy")`, and uses it as usual:
the import happens at the first attribute read.
"""

from __future__ import annotations

import importlib
from typing import Any


class _LazyModule:
    """Stands in for the module `name` until one of its attributes is read: then imports it and
    keeps each attribute read, so later reads are plain attribute lookups."""

    def __init__(self, name: str):
        self.__name = name

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(importlib.import_module(self.__name), attribute)
        setattr(self, attribute, value)
        return value

    def __repr__(self) -> str:
        return f"<module {self.__name!r}, imported when first used>"


def lazy_module(name: str) -> Any:
    """The module `name`, imported at the first attribute read rather than now."""
    return _LazyModule(name)
