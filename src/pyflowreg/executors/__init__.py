"""Parallelization executors: run the per-frame registration of a batch.

Executors are looked up by name in :func:`pyflowreg._runtime.get_runtime`; the classes here are
also importable directly. Attributes load lazily, so importing this package (which worker
processes do first) imports neither NumPy nor Numba.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import (
        Executor,
        WarpSettings,
        estimate_frames,
        register_frame,
        register_frames,
        resolve_n_jobs,
        validate_n_jobs,
        warp_frame,
    )
    from .processes import MultiprocessingExecutor, shutdown_idle_pools
    from .sequential import SequentialExecutor
    from .threaded import ThreadingExecutor

_EXPORTS = {
    "Executor": ".base",
    "WarpSettings": ".base",
    "register_frame": ".base",
    "register_frames": ".base",
    "validate_n_jobs": ".base",
    "estimate_frames": ".base",
    "warp_frame": ".base",
    "resolve_n_jobs": ".base",
    "SequentialExecutor": ".sequential",
    "ThreadingExecutor": ".threaded",
    "MultiprocessingExecutor": ".processes",
    "shutdown_idle_pools": ".processes",
}

__all__ = [
    "Executor",
    "MultiprocessingExecutor",
    "SequentialExecutor",
    "ThreadingExecutor",
    "WarpSettings",
    "estimate_frames",
    "register_frame",
    "register_frames",
    "resolve_n_jobs",
    "shutdown_idle_pools",
    "validate_n_jobs",
    "warp_frame",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
