"""The default CPU flow backend ``flowreg``: the Numba engine of :mod:`pyflowreg.core`."""

from __future__ import annotations

import numpy as np

from ..core.flow import PreparedReference, estimate, prepare_reference
from .base import FlowBackend, broadcast_uv


class FlowregBackend(FlowBackend):
    """Per-frame Numba solver; its kernels release the GIL, so threads run truly in parallel.

    ``backend_params``: ``dtype`` ("float32" default, or "float64"); other keys are ignored
    (PyFlowReg's documented behaviour, so that options written for a GPU backend, e.g.
    ``{"device": "cuda:0"}``, also run on this one).
    """

    name = "flowreg"

    def __init__(self, params, backend_params=None) -> None:
        super().__init__(params, backend_params)
        self.dtype = np.dtype(self.backend_params.get("dtype", "float32"))
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"backend_params dtype must be float32 or float64, got {self.dtype}")

    def prepare_reference(self, reference, weight=None) -> PreparedReference:
        return prepare_reference(reference, self.params, weight=weight, dtype=self.dtype)

    def estimate(self, prepared: PreparedReference, frames, uv=None) -> np.ndarray:
        frames = np.asarray(frames)
        return self._solve(prepared, frames, uv, np.empty((*frames.shape[:3], 2), np.float32))

    def estimate_into(self, prepared: PreparedReference, frames, uv, out) -> np.ndarray:
        """Write the fields straight into ``out`` (no copy), unless a subclass changed
        :meth:`estimate`, which then stays the one place the fields come from."""
        if type(self).estimate is not FlowregBackend.estimate:
            return super().estimate_into(prepared, frames, uv, out)
        return self._solve(prepared, frames, uv, out)

    def _solve(self, prepared: PreparedReference, frames, uv, out) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 4:
            raise ValueError(f"frames must be (T, H, W, C), got shape {frames.shape}")
        if out.shape != (*frames.shape[:3], 2):
            raise ValueError(f"out must have shape {(*frames.shape[:3], 2)}, got {out.shape}")
        init = broadcast_uv(uv, frames.shape[0], prepared.shape)
        for t in range(frames.shape[0]):
            estimate(prepared, frames[t], init[t], out=out[t])
        return out
