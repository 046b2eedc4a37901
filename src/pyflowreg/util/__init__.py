"""Helpers at the module paths PyFlowReg documents (``pyflowreg.util.io``, ...).

Submodules are imported on first access (``pyflowreg.util.io``), so ``import pyflowreg.util``
stays cheap. Each is a thin layer of names onto this package's own modules.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


def __getattr__(name: str) -> ModuleType:
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
