"""The flow-backend contract shared by the CPU and GPU backends.

A flow backend turns pre-processed frames into displacement fields. It is
created once per run by a factory registered in :mod:`pyflowreg._runtime`::

    backend = factory(params: FlowParameters, backend_params: dict)

and then used by an executor::

    prepared = backend.prepare_reference(reference, weight)   # once per reference
    w = backend.estimate(prepared, frames, uv)                # many times

``reference`` is ``(H, W, C)`` float32, ``frames`` is ``(T, H, W, C)`` float32,
both already normalised and pre-filtered by the pipeline; ``uv`` is the initial
field, ``(H, W, 2)`` (shared by all frames) or ``(T, H, W, 2)``; the result is
``(T, H, W, 2)`` float32 with ``w[..., 0] = u`` (x) and ``w[..., 1] = v`` (y).
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from ..core.params import FlowParameters


class FlowBackend(abc.ABC):
    """Base class of flow backends (see module docstring for the contract)."""

    #: Registry name, e.g. ``"flowreg"``.
    name: str = ""

    def __init__(self, params: FlowParameters, backend_params: dict | None = None) -> None:
        self.params = params
        self.backend_params = dict(backend_params or {})

    @abc.abstractmethod
    def prepare_reference(self, reference: np.ndarray, weight: np.ndarray | None = None) -> Any:
        """Precompute everything that depends on the reference only."""

    @abc.abstractmethod
    def estimate(
        self, prepared: Any, frames: np.ndarray, uv: np.ndarray | None = None
    ) -> np.ndarray:
        """Displacement fields ``(T, H, W, 2)`` float32 for ``frames`` ``(T, H, W, C)``."""

    def estimate_into(
        self, prepared: Any, frames: np.ndarray, uv: np.ndarray | None, out: np.ndarray
    ) -> np.ndarray:
        """:meth:`estimate` written into ``out`` ``(T, H, W, 2)`` float32 (returns ``out``).

        Backends that can write the fields in place (the CPU backend) override this and save
        a copy of every field; the default copies the result of :meth:`estimate`.
        """
        w = np.asarray(self.estimate(prepared, frames, uv), dtype=np.float32)
        if w.shape != out.shape:
            raise ValueError(
                f"flow backend returned fields of shape {w.shape}, expected {out.shape}"
            )
        out[...] = w
        return out

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory or other resources (optional)."""


def broadcast_uv(uv: np.ndarray | None, n_frames: int, shape: tuple[int, int]) -> np.ndarray:
    """Initial fields as ``(T, H, W, 2)`` float32 (zeros when ``uv`` is None)."""
    h, w = shape
    if uv is None:
        return np.zeros((n_frames, h, w, 2), np.float32)
    uv = np.asarray(uv, dtype=np.float32)
    if uv.shape == (h, w, 2):
        return np.broadcast_to(uv, (n_frames, h, w, 2))
    if uv.shape == (n_frames, h, w, 2):
        return uv
    raise ValueError(
        f"initial flow uv must have shape {(h, w, 2)} or {(n_frames, h, w, 2)}, got {uv.shape}"
    )
