"""A ``get_displacement(fixed, moving, **kwargs)`` callable as a flow backend.

PyFlowReg's ways of plugging in a flow function, ``OFOptions.get_displacement_impl``,
``OFOptions.get_displacement_factory`` and ``pyflowreg.core.register_backend``, all end here:
:class:`CallableBackend` calls the function once per frame. Such backends run in the calling
process only (:data:`CALLABLE_EXECUTORS`): a user's function need not survive pickling to a
worker process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .base import FlowBackend, broadcast_uv

__all__ = ["CALLABLE_EXECUTORS", "CallableBackend", "callable_factory"]

#: Executors that run a user callable (in this process).
CALLABLE_EXECUTORS = ("sequential", "threading")


class CallableBackend(FlowBackend):
    """A ``get_displacement(fixed, moving, **kwargs) -> w (H, W, 2)`` callable as a flow
    backend. Each frame is one call, with the keyword arguments ``uv`` (initial field),
    ``weight`` and the solver parameters (``alpha``, ``levels``, ``min_level``, ``eta``,
    ``iterations``, ``update_lag``, ``a_data``, ``a_smooth``, ``constancy_assumption``),
    which the callable may ignore."""

    name = "callable"

    def __init__(self, function: Callable[..., Any], params, backend_params=None) -> None:
        super().__init__(params, backend_params)
        self.function = function

    def prepare_reference(self, reference: np.ndarray, weight: np.ndarray | None = None):
        return np.asarray(reference, dtype=np.float32), weight

    def estimate(self, prepared, frames: np.ndarray, uv: np.ndarray | None = None) -> np.ndarray:
        reference, weight = prepared
        n, h, w = frames.shape[:3]
        uvs = broadcast_uv(uv, n, (h, w))
        keywords = self.params.solver_keywords()
        out = np.empty((n, h, w, 2), np.float32)
        for t in range(n):
            field = np.asarray(
                self.function(reference, frames[t], uv=uvs[t], weight=weight, **keywords)
            )
            if field.shape != (h, w, 2):
                raise ValueError(
                    f"get_displacement callable returned shape {field.shape}, expected {(h, w, 2)}"
                )
            out[t] = field
        return out


def callable_factory(impl, factory, params, backend_params=None) -> CallableBackend:
    function = impl if impl is not None else factory(**dict(backend_params or {}))
    if not callable(function):
        raise TypeError(
            f"get_displacement_factory must return a callable, got {type(function).__name__}"
        )
    return CallableBackend(function, params, backend_params)
