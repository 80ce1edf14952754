"""Lazy public names of a package (PEP 562): ``import embtune`` and the CLI stay quick, torch loads on use."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``.

    In: the package's ``__name__`` and its public names mapped to the module defining each. Out: the
    function to assign to ``__getattr__``: it imports the name from its module on first access, keeps
    it in the package (later accesses are plain attribute reads), and raises AttributeError for any
    other name.
    """
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
