"""Helpers at the module paths PyFlowReg documents (``pyflowreg.util.io``, ...).

Submodules are imported on first access (``pyflowreg.util.io``), so ``import pyflowreg.util``
stays cheap. Each is a thin layer of names onto this package's own modules.
"""

import importlib as _importlib
import importlib.util as _importlib_util
import pkgutil as _pkgutil
from types import ModuleType as _ModuleType


def __getattr__(name: str) -> _ModuleType:
    if not name.startswith("_") and _importlib_util.find_spec(f"{__name__}.{name}") is not None:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(m.name for m in _pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
