"""Intensity normalisation and Gaussian pre-filtering of frames (see ALGORITHM.md)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


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
    to every channel). The temporal filter only sees the frames given: callers pass a batch with
    a halo of :func:`temporal_halo` frames on each side and crop it afterwards.
    """
    video = np.asarray(video, dtype=np.float32)
    if video.ndim != 4:
        raise ValueError(f"video must be (T, H, W, C), got shape {video.shape}")
    c = video.shape[-1]
    sig = np.asarray(sigma, dtype=np.float64)
    if sig.ndim == 1:
        sig = np.tile(sig, (c, 1))
    if sig.shape != (c, 3) or np.any(sig < 0):
        raise ValueError(f"sigma must be (3,) or ({c}, 3) non-negative values, got {sig.tolist()}")
    out = np.empty_like(video)
    for ch in range(c):
        sy, sx, st = sig[ch]
        truncate = 4.0
        out[..., ch] = ndimage.gaussian_filter(
            video[..., ch], sigma=(st, sy, sx), mode="nearest", truncate=truncate
        )
    return out
