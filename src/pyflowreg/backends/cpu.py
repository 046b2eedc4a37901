"""The default CPU flow backend ``flowreg``: the Numba engine of :mod:`pyflowreg.core`."""

from __future__ import annotations

import numpy as np

from ..core.flow import PreparedReference, estimate, prepare_reference
from .base import FlowBackend, broadcast_uv


class FlowregBackend(FlowBackend):
    """Per-frame Numba solver; its kernels release the GIL, so threads run truly in parallel.

    ``backend_params``: ``dtype`` ("float32" default, or "float64").
    """

    name = "flowreg"

    def __init__(self, params, backend_params=None) -> None:
        super().__init__(params, backend_params)
        unknown = set(self.backend_params) - {"dtype"}
        if unknown:
            raise ValueError(
                f"backend_params {sorted(unknown)} are not understood by the 'flowreg' backend; "
                "valid: ['dtype']"
            )
        self.dtype = np.dtype(self.backend_params.get("dtype", "float32"))
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"backend_params dtype must be float32 or float64, got {self.dtype}")

    def prepare_reference(self, reference, weight=None) -> PreparedReference:
        return prepare_reference(reference, self.params, weight=weight, dtype=self.dtype)

    def estimate(self, prepared: PreparedReference, frames, uv=None) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 4:
            raise ValueError(f"frames must be (T, H, W, C), got shape {frames.shape}")
        init = broadcast_uv(uv, frames.shape[0], prepared.shape)
        out = np.empty((*frames.shape[:3], 2), np.float32)
        for t in range(frames.shape[0]):
            out[t] = estimate(prepared, frames[t], init[t])
        return out
