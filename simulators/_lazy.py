"""Public names of a package, imported on first use (PEP 562).

A floor's package (``twinsim.twin``, ``twinsim.scenarios``, …) lists which submodule holds
each of its public names; the submodule is imported the first time one of its names is
read. A command then imports what it runs: ``twinsim simulate`` the cohort workflow, not
the latent model (flax), the trials and the teaching cases — about 1 s of every start.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` whose public names live in its
    submodules: ``exports`` maps a relative module name (``"._cases"``) to the names it
    gives. A name is imported once, then kept on the package like an eager import."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return sorted(where), __getattr__, __dir__
