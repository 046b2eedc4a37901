"""Intensity normalisation and Gaussian pre-filtering of frames (see ALGORITHM.md)."""

from __future__ import annotations

import functools
import itertools
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from .pyramid import blur_plane_rows, blur_row


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


def gaussian_filter_video(video: np.ndarray, sigma: np.ndarray, workers: int = 1) -> np.ndarray:
    """Gaussian pre-filter of a float32 video ``(T, H, W, C)``.

    ``sigma`` is ``(C, 3)`` with ``(sigma_y, sigma_x, sigma_t)`` per channel (a 3-vector applies
    to every channel). The passes are Numba kernels that release the GIL: the spatial ones
    (taps to 4 sigma, symmetric borders) frame by frame, the temporal one (nearest borders, the
    weights and summation order of ``scipy.ndimage.gaussian_filter1d``, so it gives the same
    float32 values) only where its kernel reaches a neighbouring frame (``sigma_t >= 0.125``).
    The temporal pass only sees the frames given: callers pass a batch with a halo of
    :func:`temporal_halo` frames on each side and crop it afterwards.
    """
    video = np.asarray(video, dtype=np.float32)
    if video.ndim != 4:
        raise ValueError(f"video must be (T, H, W, C), got shape {video.shape}")
    c = video.shape[-1]
    return _filter(video, np.zeros(c), np.ones(c), _sigma_table(sigma, c), workers)


def prefilter(raw: np.ndarray, low, high, sigma: np.ndarray, workers: int = 1) -> np.ndarray:
    """:func:`normalize` then :func:`gaussian_filter_video` of ``raw`` (T, H, W, C), fused.

    One pass per frame normalises the raw values (any real dtype) and applies both spatial
    passes without intermediate videos; with ``workers > 1`` the frames are shared among that
    many threads (the kernels release the GIL), and so are the rows of the temporal pass.
    The result does not depend on ``workers`` and equals the two functions called in turn.
    """
    raw = np.asarray(raw)
    if raw.ndim != 4:
        raise ValueError(f"raw must be (T, H, W, C), got shape {raw.shape}")
    c = raw.shape[-1]
    low = np.broadcast_to(np.asarray(low, np.float64), (c,))
    high = np.broadcast_to(np.asarray(high, np.float64), (c,))
    return _filter(raw, low, high, _sigma_table(sigma, c), workers)


def _sigma_table(sigma, c: int) -> np.ndarray:
    sig = np.asarray(sigma, dtype=np.float64)
    if sig.ndim == 1:
        sig = np.tile(sig, (c, 1))
    if sig.shape != (c, 3) or np.any(sig < 0) or not np.all(np.isfinite(sig)):
        raise ValueError(f"sigma must be (3,) or ({c}, 3) non-negative values, got {sig.tolist()}")
    return sig


def _filter(raw: np.ndarray, low, high, sig: np.ndarray, workers: int) -> np.ndarray:
    """Normalise with ``(low, high)`` (per channel) and filter with ``sig`` (C, 3)."""
    n, h, w, c = raw.shape
    if raw.dtype.byteorder not in ("=", "|"):
        raw = raw.astype(raw.dtype.newbyteorder("="))
    low = np.asarray(low, np.float64)
    lows = low.astype(np.float32)
    scales = (1.0 / (np.asarray(high, np.float64) - low)).astype(np.float32)
    out = np.empty((n, h, w, c), np.float32)
    if out.size == 0:
        return out
    none = np.empty(0, np.float32)
    taps = [(_taps(sy) if sy > 0 else none, _taps(sx) if sx > 0 else none) for sy, sx, _ in sig]

    def spatial(a: int, b: int) -> None:
        for ch in range(c):
            ty, tx = taps[ch]
            _normalize_blur(raw[a:b, ..., ch], lows[ch], scales[ch], ty, tx, out[a:b, ..., ch])

    _split(n, workers, spatial)
    for ch in range(c):
        st = sig[ch, 2]
        if temporal_halo(np.array([0.0, 0.0, st])) == 0:
            continue
        plane = out[..., ch].copy()  # the input of the pass, which writes into out
        rows = functools.partial(_temporal_nearest, plane, _temporal_weights(float(st)))
        _split(h, workers, lambda a, b, rows=rows, target=out[..., ch]: rows(a, b, target))
    return out


def _split(n: int, workers: int, task) -> None:
    """``task(a, b)`` over ``workers`` contiguous parts of ``range(n)``, on threads."""
    workers = max(1, min(int(workers), n))
    if workers == 1:
        task(0, n)
        return
    edges = np.linspace(0, n, workers + 1).astype(int)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda ab: task(*ab), itertools.pairwise(edges)))


@njit(cache=True, nogil=True)
def _normalize_blur(raw, low, scale, taps_y, taps_x, out):
    """``out`` (n, h, w) float32 = spatial blur of ``(float32(raw) - low) * scale``, per frame.

    ``raw`` (n, h, w) of any real dtype and strides; an empty ``taps_y``/``taps_x`` skips that
    axis. Same float32 operations in the same order as :func:`normalize` followed by a
    separable blur along rows, then columns, without intermediate videos.
    """
    n, h, w = raw.shape
    norm = np.empty((h, w), np.float32)
    vert = np.empty((h, w), np.float32)
    row = np.empty(w, np.float32)
    for t in range(n):
        for i in range(h):
            for j in range(w):
                norm[i, j] = (np.float32(raw[t, i, j]) - low) * scale
        src = norm
        if taps_y.shape[0] > 0:
            vert[:] = 0.0
            blur_plane_rows(norm, taps_y, vert)
            src = vert
        for i in range(h):
            if taps_x.shape[0] > 0:
                row[:] = 0.0
                blur_row(src[i], taps_x, row)
                out[t, i, :] = row
            else:
                out[t, i, :] = src[i]


@njit(cache=True, nogil=True)
def _temporal_nearest(plane, weights, a, b, out):
    """Rows ``a .. b-1`` of the temporal Gaussian of ``plane`` (T, h, w) into ``out``.

    Nearest-frame borders; float64 sums in the order of scipy's symmetric correlation: the
    centre tap, then the pairs of frames from the outermost inwards.
    """
    n, _, w = plane.shape
    r = weights.shape[0] // 2
    acc = np.empty(w, np.float64)
    for t in range(n):
        for i in range(a, b):
            centre = plane[t, i]
            for j in range(w):
                acc[j] = np.float64(centre[j]) * weights[r]
            for d in range(r, 0, -1):
                before = plane[max(t - d, 0), i]
                after = plane[min(t + d, n - 1), i]
                wd = weights[r + d]
                for j in range(w):
                    acc[j] += (np.float64(before[j]) + np.float64(after[j])) * wd
            for j in range(w):
                out[t, i, j] = np.float32(acc[j])


@functools.lru_cache(maxsize=64)
def _temporal_weights(sigma: float) -> np.ndarray:
    """The float64 taps of ``scipy.ndimage.gaussian_filter1d`` (truncate 4)."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    weights = phi / phi.sum()
    weights.flags.writeable = False
    return weights


@functools.lru_cache(maxsize=64)
def _taps(sigma: float) -> np.ndarray:
    """float32 Gaussian taps to 4 sigma (as ``scipy.ndimage``), normalised to 1."""
    radius = max(1, int(4.0 * sigma + 0.5))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    taps = (k / k.sum()).astype(np.float32)
    taps.flags.writeable = False
    return taps
