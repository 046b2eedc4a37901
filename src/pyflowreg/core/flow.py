"""Coarse-to-fine displacement estimation against a prepared reference.

Typical use registers many frames against one reference::

    prepared = prepare_reference(reference, FlowParameters.from_quality("balanced"))
    for frame in frames:
        w = estimate(prepared, frame, uv=w_init)

``get_displacement`` is the one-shot convenience wrapper.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np
from numba import njit

from .params import FlowParameters
from .pyramid import build_pyramid, level_shapes, resize
from .solver import MEDIAN25, median5_kernel, sor_solve
from .tensors import CONSTANCY, clear_unobserved, derivatives, motion_tensor
from .warp import level_coefficients, warp_level

MIN_SIDE = 3


class PreparedReference(NamedTuple):
    """Everything about a reference that does not depend on the moving frame.

    Picklable; every array can live in shared memory. Level tuples are indexed by level number
    (entries finer than ``finest`` are empty arrays).
    """

    params: FlowParameters
    shape: tuple[int, int]
    n_channels: int
    shapes: tuple[tuple[int, int], ...]
    finest: int
    images: tuple[np.ndarray, ...]  # per level (C, h, w)
    derivs: tuple[np.ndarray, ...]  # per level (5, C, h, w): fx, fy, fxx, fyy, fxy
    weights: tuple[np.ndarray, ...]  # per level (C, h + 2, w + 2) data weights, zero ghost ring

    @property
    def dtype(self) -> np.dtype:
        return self.images[self.finest].dtype


def channel_first(frame: np.ndarray, name: str, dtype) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype.kind not in "uif":
        raise TypeError(f"{name} must have a real numeric dtype, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be (H, W) or (H, W, C), got shape {arr.shape}")
    if min(arr.shape[:2]) < MIN_SIDE:
        raise ValueError(
            f"{name} must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {arr.shape[:2]}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0), dtype=dtype)


def data_weights(weight, shape: tuple[int, int], n_channels: int, dtype) -> np.ndarray:
    """Full-resolution data weights (C, H, W).

    Channel weights are normalised to sum 1; a spatial map (H, W) or (H, W, C) is scaled so
    that its channel sum averages 1 over the frame (keeping the data/smoothness balance).
    """
    h, w = shape
    if weight is None:
        return np.full((n_channels, h, w), 1.0 / n_channels, dtype)
    wt = np.asarray(weight, dtype=np.float64)
    if not np.all(np.isfinite(wt)) or np.any(wt < 0):
        raise ValueError("weight must be finite and non-negative")
    if wt.ndim == 1:
        if wt.shape[0] != n_channels:
            raise ValueError(f"weight has {wt.shape[0]} channel weights for {n_channels} channels")
        if wt.sum() <= 0:
            raise ValueError("weight must not be all zero")
        wt = wt / wt.sum()
        return np.ascontiguousarray(np.broadcast_to(wt[:, None, None], (n_channels, h, w)), dtype)
    if wt.ndim == 2:
        wt = np.repeat(wt[:, :, None], n_channels, axis=2) / n_channels
    if wt.ndim != 3 or wt.shape != (h, w, n_channels):
        raise ValueError(
            f"weight must be (C,), (H, W) or (H, W, C) = {(h, w, n_channels)}, got {wt.shape}"
        )
    total = wt.sum(axis=2).mean()
    if total <= 0:
        raise ValueError("weight must not be all zero")
    return np.ascontiguousarray(np.moveaxis(wt / total, -1, 0), dtype=dtype)


def prepare_reference(
    reference: np.ndarray,
    params: FlowParameters | None = None,
    *,
    weight: np.ndarray | None = None,
    dtype=np.float32,
) -> PreparedReference:
    """Build the reference pyramid, its derivatives and the data weights once.

    Parameters
    ----------
    reference : ndarray
        ``(H, W)`` or ``(H, W, C)`` float frame, scaled to about [0, 1] and pre-filtered.
    params : FlowParameters, optional
        Model parameters (defaults of ALGORITHM.md).
    weight : ndarray, optional
        Channel weights ``(C,)`` or a spatial weight map ``(H, W)`` / ``(H, W, C)``.
    dtype : {numpy.float32, numpy.float64}
        Working precision of the kernels.
    """
    params = params or FlowParameters()
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    ref = channel_first(reference, "reference", dtype)
    c, h, w = ref.shape
    shapes = level_shapes((h, w), params.eta, params.levels)
    finest = min(params.min_level, len(shapes) - 1)
    images = build_pyramid(ref, shapes, finest)
    weights_full = data_weights(weight, (h, w), c, dtype)
    empty = np.empty((0,), dtype)
    imgs, ders, wts = [], [], []
    for lvl, (lh, lw) in enumerate(shapes):
        if lvl < finest:
            imgs.append(empty)
            ders.append(empty)
            wts.append(empty)
            continue
        hx, hy = w / lw, h / lh
        imgs.append(images[lvl])
        ders.append(derivatives(images[lvl], hx, hy))
        wl = np.zeros((c, lh + 2, lw + 2), dtype)
        wl[:, 1:-1, 1:-1] = np.maximum(resize(weights_full, (lh, lw)), 0)
        wts.append(wl)
    return PreparedReference(
        params, (h, w), c, tuple(shapes), finest, tuple(imgs), tuple(ders), tuple(wts)
    )


@njit(cache=True, nogil=True)
def pad_edge(a):
    """``a`` (h, w) with a one-pixel ring that repeats its border (Neumann)."""
    h, w = a.shape
    out = np.empty((h + 2, w + 2), a.dtype)
    out[1:-1, 1:-1] = a
    out[0, 1:-1] = a[0]
    out[-1, 1:-1] = a[-1]
    out[:, 0] = out[:, 1]
    out[:, -1] = out[:, -2]
    return out


@njit(cache=True, nogil=True)
def level_step(
    ref, ref_d, wts, moving, u, v, hx, hy, alpha_x, alpha_y,
    iterations, update_lag, a_data, a_smooth, omega, constancy, network,
):  # fmt: skip
    """Warp, motion tensors, solve, median-filter the increments; returns the new (u, v).

    The solver works on the frame plus a one-pixel ghost ring (``wts`` and the tensors carry
    it), so every frame pixel has its data term - except where the current flow points outside
    the moving frame: nothing is observed there, and the smoothness term alone extends the flow
    (see :func:`~pyflowreg.core.tensors.clear_unobserved`).
    """
    warped = warp_level(level_coefficients(moving), ref, u, v, hx, hy)
    J = motion_tensor(ref, ref_d, warped, derivatives(warped, hx, hy), constancy)
    clear_unobserved(J, u, v, hx, hy)
    h, w = u.shape
    up = pad_edge(u)
    vp = pad_edge(v)
    U, V = sor_solve(
        J, wts, up, vp, alpha_x, alpha_y, hx, hy, iterations, update_lag, a_data, a_smooth, omega
    )
    du = U[1:-1, 1:-1] - u
    dv = V[1:-1, 1:-1] - v
    if h > 5 and w > 5:
        du = median5_kernel(du, network)
        dv = median5_kernel(dv, network)
    return u + du, v + dv


def estimate(
    prepared: PreparedReference,
    moving: np.ndarray,
    uv: np.ndarray | None = None,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Displacement field aligning ``moving`` to the prepared reference.

    Parameters
    ----------
    prepared : PreparedReference
    moving : ndarray
        ``(H, W)`` or ``(H, W, C)`` float frame, pre-processed like the reference.
    uv : ndarray, optional
        Initial field ``(H, W, 2)`` in pixels.
    out : ndarray, optional
        ``(H, W, 2)`` float32 array to write the field into (returned).

    Returns
    -------
    ndarray
        ``(H, W, 2)`` float32, ``w[..., 0] = u`` (x), ``w[..., 1] = v`` (y), in pixels.
    """
    p = prepared.params
    dtype = prepared.dtype
    mov = channel_first(moving, "moving", dtype)
    if mov.shape != (prepared.n_channels, *prepared.shape):
        raise ValueError(
            f"moving frame shape {np.moveaxis(mov, 0, -1).shape} does not match the reference "
            f"{(*prepared.shape, prepared.n_channels)}"
        )
    h, w = prepared.shape
    shapes = prepared.shapes
    coarsest = len(shapes) - 1
    pyramid = build_pyramid(mov, list(shapes), prepared.finest)
    if uv is None:
        flow = np.zeros((2, *shapes[coarsest]), dtype)
    else:
        uv = np.asarray(uv)
        if uv.shape != (h, w, 2):
            raise ValueError(f"initial flow uv must have shape {(h, w, 2)}, got {uv.shape}")
        if not np.all(np.isfinite(uv)):
            raise ValueError("initial flow uv contains NaN or infinite values")
        flow = resize(np.ascontiguousarray(np.moveaxis(uv, -1, 0), dtype=dtype), shapes[coarsest])
    constancy = CONSTANCY[p.constancy_assumption]
    for lvl in range(coarsest, prepared.finest - 1, -1):
        lh, lw = shapes[lvl]
        if flow.shape[1:] != (lh, lw):
            flow = resize(flow, (lh, lw))
        scale = 1.0 if lvl == prepared.finest else p.eta ** (-lvl / 2.0)
        u, v = level_step(
            prepared.images[lvl], prepared.derivs[lvl], prepared.weights[lvl], pyramid[lvl],
            np.ascontiguousarray(flow[0]), np.ascontiguousarray(flow[1]),
            w / lw, h / lh, p.alpha[0] * scale, p.alpha[1] * scale,
            p.iterations, p.update_lag, p.a_data, p.a_smooth, p.omega, constancy, MEDIAN25,
        )  # fmt: skip
        flow = np.stack((u, v))
    if flow.shape[1:] != (h, w):
        flow = resize(flow, (h, w))
    if out is None:
        out = np.empty((h, w, 2), np.float32)
    out[...] = np.moveaxis(flow, 0, -1)
    return out


def get_displacement(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    alpha=(1.5, 1.5),
    levels: int = 100,
    min_level: int = 0,
    eta: float = 0.8,
    iterations: int = 50,
    update_lag: int = 5,
    a_data: float = 0.45,
    a_smooth: float = 1.0,
    weight: np.ndarray | None = None,
    uv: np.ndarray | None = None,
    constancy_assumption: str = "gc",
    dtype=np.float32,
) -> np.ndarray:
    """Displacement field ``w`` (H, W, 2) for which ``warp(moving, w)`` aligns to ``reference``.

    Frames are ``(H, W)`` or ``(H, W, C)`` floats scaled to about [0, 1] (and usually
    pre-filtered; see :mod:`pyflowreg.core.preprocess`). Parameters are those of ALGORITHM.md;
    ``alpha="auto"`` chooses the smoothness weight from this pair by held-out-block
    cross-validation (:func:`pyflowreg.core.alpha.select_alpha`, about 16 solves more).
    """
    auto = isinstance(alpha, str)
    if auto and alpha != "auto":
        raise ValueError(f'alpha must be a number, a pair or "auto", got {alpha!r}')
    params = FlowParameters(
        alpha=1.5 if auto else alpha, levels=levels, min_level=min_level, eta=eta,
        iterations=iterations, update_lag=update_lag, a_data=a_data, a_smooth=a_smooth,
        constancy_assumption=constancy_assumption,
    )  # fmt: skip
    if auto:
        from .alpha import select_alpha  # here: alpha builds on this module

        chosen = select_alpha(reference, moving, params, weight=weight, uv=uv, dtype=dtype)
        params = replace(params, alpha=(chosen.alpha, chosen.alpha))
    prepared = prepare_reference(reference, params, weight=weight, dtype=dtype)
    return estimate(prepared, moving, uv)
