"""Alignment of two temporal means (stage 2 of a session), on arrays.

The means of two recordings of one field of view differ in position (the tissue moved between
the days) and in content: cells are brighter or dimmer from one session to the next (calcium
activity, expression), and the whole field of view can be brighter or dimmer (laser power). The
field must follow the tissue, not the activity. :func:`align_means` does this in three steps.

1. **Gain-invariant intensities.** Each mean is smoothed (Gaussian, sigma ``s``), shifted by its
   own dark level (1st percentile), and log-compressed,
   ``log(max(a - dark, 0) + LOG_EPSILON * (bright - dark))`` with ``bright`` the 99th
   percentile, then scaled by its own 0.5-99.5 percentile range. A change of gain, global or of
   one cell, becomes an additive offset in the log domain, which the gradient-constancy data term
   ignores; dark pixels keep a floor so that noise is not amplified without bound.
2. **Rigid start.** Phase correlation of the coarsest pair (:func:`phase_correlation_shift`,
   peak up-sampled ``cc_upsample`` times, on copies of at most 256 px) gives the initial shift.
3. **Flow, coarse to fine in scale.** The flow engine (the configured backend, smoothness
   ``alpha``, ``iterations`` per level, the chosen data term) refines the field on the pair
   smoothed with ``sigma_smooth``, then again, started from the previous field, with the sigma
   halved at each pass down to :data:`FINE_SIGMA` (1 px). The coarse passes keep large or noisy
   offsets captured (and stop at the pyramid level their smoothing resolves,
   :func:`pass_level`), the last one uses the fine texture (vessels, neuropil, somata outlines)
   that locates the tissue precisely.

``robust=False`` gives the plain method of PyFlowReg's documentation (min-max normalised means
smoothed with ``sigma_smooth``, rigid start, one flow solve); it is kept as the baseline the
tests and ``benchmarks/session_accuracy.py`` compare against.

Measured with ``benchmarks/session_accuracy.py`` (5 sessions of 30 noisy frames, 128 x 128 px,
2 seeds, documented default settings; mean / 95th-percentile endpoint error over the pixels all
sessions observe): 0.073 / 0.156 px on the means of a perfect stage 1 and 0.092 / 0.194 px
through ``run_stage1`` + ``run_stage2``, against 0.75 / 1.79 px for the plain method, 0.66 /
1.61 px for PyFlowReg 0.1.0a9's ``run_stage2`` on the same means and 0.71 / 1.65 px for its
``run_stage1`` + ``run_stage2`` on the same files (sessions without within-session motion;
with it, ours 0.10 / 0.22 px and PyFlowReg's 1.24 / 2.15 px through both stages).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..core.params import FlowParameters
from ..motion_correction.reference import phase_correlation_shift

logger = logging.getLogger(__name__)

__all__ = [
    "FINE_SIGMA",
    "LOG_EPSILON",
    "align_means",
    "pass_level",
    "prepare_mean",
    "scale_schedule",
]

#: Smoothing sigma (px) of the last (finest) pass of :func:`align_means`.
FINE_SIGMA = 1.0
#: Floor of the log compression, as a fraction of the mean's 1-99 percentile range.
LOG_EPSILON = 0.03
#: Longest side of the copies the rigid phase correlation runs on.
PHASE_CORRELATION_SIZE = 256
#: Data terms the flow engine supports.
CONSTANCY = ("gc", "gray")


def scale_schedule(sigma_smooth: float, fine: float = FINE_SIGMA) -> list[float]:
    """The smoothing sigmas of the flow passes: ``sigma_smooth`` halved down to ``fine``.

    >>> scale_schedule(6.0)
    [6.0, 3.0, 1.5, 1.0]
    >>> scale_schedule(0.5)
    [0.5]
    """
    sigma = float(sigma_smooth)
    if sigma <= fine:
        return [sigma]
    schedule = [sigma]
    while schedule[-1] / 2 > fine:
        schedule.append(schedule[-1] / 2)
    schedule.append(fine)
    return schedule


def pass_level(sigma: float, eta: float = 0.8) -> int:
    """Finest pyramid level solved in the pass at smoothing ``sigma``: the finest whose grid
    spacing ``eta ** -level`` is at most ``sigma / 2`` (finer levels add nothing to a field
    estimated from images smoothed that much; level 0 below sigma 2.5).

    >>> [pass_level(s) for s in (6.0, 3.0, 1.5, 1.0)]
    [4, 1, 0, 0]
    """
    spacing = max(float(sigma) / 2.0, 1.0)
    return math.floor(math.log(spacing) / math.log(1.0 / eta) + 1e-9)


def prepare_mean(mean: np.ndarray, sigma: float, robust: bool = True) -> np.ndarray:
    """A temporal mean ``(H, W, C)`` as the flow engine's input: smoothed and normalised.

    ``robust``: the gain-invariant log compression of the module docstring; otherwise min-max
    scaling to [0, 1] (PyFlowReg's). Channels are treated separately. Returns float32.
    """
    a = np.asarray(mean, np.float64)
    out = np.empty(a.shape, np.float32)
    for c in range(a.shape[-1]):
        plane = ndi.gaussian_filter(a[..., c], sigma, mode="nearest") if sigma > 0 else a[..., c]
        if robust:
            dark, bright = np.percentile(plane, (1.0, 99.0))
            floor = LOG_EPSILON * max(bright - dark, 1e-12)
            plane = np.log(np.maximum(plane - dark, 0.0) + floor)
            low, high = np.percentile(plane, (0.5, 99.5))
        else:
            low, high = plane.min(), plane.max()
        out[..., c] = (plane - low) / (high - low if high > low else 1.0)
    return out


def align_means(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    sigma_smooth: float = 6.0,
    cc_upsample: int = 4,
    alpha: float = 25.0,
    iterations: int = 100,
    constancy_assumption: str = "gc",
    flow_backend: str = "flowreg",
    backend_params: Mapping[str, Any] | None = None,
    robust: bool = True,
) -> np.ndarray:
    """Displacement field that maps the temporal mean ``moving`` onto ``reference``.

    Parameters
    ----------
    reference, moving : ndarray, shape (H, W) or (H, W, C)
        Temporal means of two recordings of one field of view (any real dtype, raw units).
    sigma_smooth : float
        Smoothing sigma (px) of the first pass (see the module docstring); 0: none.
    cc_upsample : int
        Up-sampling factor of the rigid phase-correlation peak (1: parabolic fit).
    alpha : float
        Smoothness weight of the flow (both axes).
    iterations : int
        Solver iterations per pyramid level.
    constancy_assumption : {"gc", "gray"}
        Data term: gradient constancy (recommended: ignores the offsets the log compression
        leaves) or gray-value constancy.
    flow_backend : str
        A registered flow backend (``pyflowreg.core.list_backends()``).
    backend_params : mapping, optional
        Its options, e.g. ``{"device": "cuda:0"}``.
    robust : bool
        The activity-robust method (default); False: PyFlowReg's plain method, for comparison.

    Returns
    -------
    ndarray, shape (H, W, 2), float32
        ``w[..., 0] = u`` (x), ``w[..., 1] = v`` (y), in pixels, such that
        ``pyflowreg.core.warp(moving, w)`` is aligned with ``reference``.
    """
    ref = _as_image("reference", reference)
    mov = _as_image("moving", moving)
    if ref.shape != mov.shape:
        raise ValueError(f"reference {ref.shape} and moving {mov.shape} must have the same shape")
    if min(ref.shape[:2]) < 8:
        raise ValueError(f"the means must be at least 8 x 8 pixels, got {ref.shape[:2]}")
    if not (np.isfinite(sigma_smooth) and sigma_smooth >= 0):
        raise ValueError(f"sigma_smooth must be finite and >= 0, got {sigma_smooth}")
    if isinstance(cc_upsample, bool) or not isinstance(cc_upsample, (int, np.integer)):
        raise TypeError(f"cc_upsample must be an integer, got {type(cc_upsample).__name__}")
    if cc_upsample < 1:
        raise ValueError(f"cc_upsample must be >= 1, got {cc_upsample}")
    if constancy_assumption not in CONSTANCY:
        raise ValueError(
            f"constancy_assumption must be one of {list(CONSTANCY)} (the flow engine has no "
            f"census data term), got {constancy_assumption!r}"
        )
    params = FlowParameters(
        alpha=(float(alpha), float(alpha)),
        iterations=iterations,
        constancy_assumption=constancy_assumption,  # type: ignore[arg-type]
    )
    factory = _backend_factory(flow_backend)
    schedule = scale_schedule(sigma_smooth) if robust else [float(sigma_smooth)]
    h, w = ref.shape[:2]
    field: np.ndarray | None = None
    for sigma in schedule:
        r = prepare_mean(ref, sigma, robust)
        m = prepare_mean(mov, sigma, robust)
        if field is None:
            u, v = phase_correlation_shift(r, m, PHASE_CORRELATION_SIZE, upsample=int(cc_upsample))
            logger.debug("rigid start (u, v) = (%.3f, %.3f) px", u, v)
            field = np.empty((h, w, 2), np.float32)
            field[..., 0] = u
            field[..., 1] = v
        level = pass_level(sigma, params.eta) if robust else 0
        backend = factory(replace(params, min_level=level), dict(backend_params or {}))
        try:
            prepared = backend.prepare_reference(r, None)
            field = np.asarray(backend.estimate(prepared, m[None], field)[0], np.float32)
        finally:
            backend.close()
    if not np.all(np.isfinite(field)):
        raise FloatingPointError(f"flow backend {flow_backend!r} returned a non-finite field")
    return field


def _as_image(name: str, image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype.kind not in "uif":
        raise TypeError(f"{name} must have a real numeric dtype, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be (H, W) or (H, W, C), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _backend_factory(name: str):
    from .._runtime import get_runtime

    return get_runtime().get_flow_backend(name).load()
