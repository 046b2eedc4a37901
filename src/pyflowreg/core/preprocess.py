"""Intensity normalisation and Gaussian pre-filtering of frames (see ALGORITHM.md)."""

from __future__ import annotations

import functools
import itertools
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from .pyramid import blur_cols, blur_rows


def reference_range(reference: np.ndarray, separate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of the raw reference ``(H, W, C)``: joint over channels or per channel.

    Returns two ``(C,)`` float64 arrays. A flat channel gets a range of 1 (no division by 0).
    """
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim == 2:
        ref = ref[..., None]
    if separate:
        low = ref.min(axis=(0, 1))
        high = ref.max(axis=(0, 1))
    else:
        low = np.full(ref.shape[-1], ref.min())
        high = np.full(ref.shape[-1], ref.max())
    high = np.where(high > low, high, low + 1.0)
    return low, high


def normalize(video: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Scale ``video`` (..., C) channel-wise to ``(x - low) / (high - low)`` as float32."""
    low = np.asarray(low, np.float64)
    scale = 1.0 / (np.asarray(high, np.float64) - low)
    out = np.asarray(video, dtype=np.float32) - low.astype(np.float32)
    out *= scale.astype(np.float32)
    return out


def temporal_halo(sigma: np.ndarray) -> int:
    """Frames needed on each side of a batch for the temporal part of the pre-filter."""
    sigma_t = float(np.max(np.asarray(sigma, dtype=np.float64)[..., 2])) if np.size(sigma) else 0.0
    return math.ceil(4.0 * sigma_t - 0.5) if sigma_t > 0 else 0


def gaussian_filter_video(video: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Gaussian pre-filter of a float32 video ``(T, H, W, C)``.

    ``sigma`` is ``(C, 3)`` with ``(sigma_y, sigma_x, sigma_t)`` per channel (a 3-vector applies
    to every channel). Spatial passes are Numba kernels that release the GIL (taps to 4 sigma,
    symmetric borders); the temporal pass (``scipy.ndimage``, nearest borders) runs only where
    its kernel reaches a neighbouring frame (``sigma_t >= 0.125``), and it only sees the frames
    given: callers pass a batch with a halo of :func:`temporal_halo` frames on each side and
    crop it afterwards.
    """
    video = np.asarray(video, dtype=np.float32)
    if video.ndim != 4:
        raise ValueError(f"video must be (T, H, W, C), got shape {video.shape}")
    c = video.shape[-1]
    sig = np.asarray(sigma, dtype=np.float64)
    if sig.ndim == 1:
        sig = np.tile(sig, (c, 1))
    if sig.shape != (c, 3) or np.any(sig < 0) or not np.all(np.isfinite(sig)):
        raise ValueError(f"sigma must be (3,) or ({c}, 3) non-negative values, got {sig.tolist()}")
    out = np.empty_like(video)
    for ch in range(c):
        sy, sx, st = sig[ch]
        plane = np.ascontiguousarray(video[..., ch])  # (T, H, W): frames are the "channels"
        if sy > 0:
            plane = blur_rows(plane, _taps(sy))
        if sx > 0:
            plane = blur_cols(plane, _taps(sx))
        if temporal_halo(np.array([0.0, 0.0, st])) > 0:
            plane = ndimage.gaussian_filter1d(plane, st, axis=0, mode="nearest", truncate=4.0)
        out[..., ch] = plane
    return out


def prefilter(raw: np.ndarray, low, high, sigma: np.ndarray, workers: int = 1) -> np.ndarray:
    """:func:`normalize` then :func:`gaussian_filter_video` of ``raw`` (T, H, W, C).

    With ``workers > 1`` the per-frame work (normalisation and the spatial passes) runs on that
    many threads over chunks of frames (the kernels release the GIL); the temporal pass then
    sees the whole block. The result does not depend on ``workers``.
    """
    raw = np.asarray(raw)
    if raw.ndim != 4:
        raise ValueError(f"raw must be (T, H, W, C), got shape {raw.shape}")
    c = raw.shape[-1]
    sig = np.asarray(sigma, dtype=np.float64)
    sig = np.tile(sig, (c, 1)) if sig.ndim == 1 else sig
    spatial = np.array(sig, dtype=np.float64, copy=True)
    if spatial.ndim == 2 and spatial.shape[-1] == 3:
        spatial[:, 2] = 0.0

    def part(bounds: tuple[int, int]) -> np.ndarray:
        a, b = bounds
        return gaussian_filter_video(normalize(raw[a:b], low, high), spatial)

    n = raw.shape[0]
    workers = max(1, min(int(workers), n))
    if workers == 1:
        out = part((0, n))
    else:
        edges = np.linspace(0, n, workers + 1).astype(int)
        with ThreadPoolExecutor(workers) as pool:
            out = np.concatenate(list(pool.map(part, itertools.pairwise(edges))))
    if temporal_halo(sig) > 0:
        temporal = np.zeros_like(sig)
        temporal[:, 2] = sig[:, 2]
        out = gaussian_filter_video(out, temporal)
    return out


@functools.lru_cache(maxsize=64)
def _taps(sigma: float) -> np.ndarray:
    """float32 Gaussian taps to 4 sigma (as ``scipy.ndimage``), normalised to 1."""
    radius = max(1, int(4.0 * sigma + 0.5))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    taps = (k / k.sum()).astype(np.float32)
    taps.flags.writeable = False
    return taps
