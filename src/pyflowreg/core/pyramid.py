"""Pyramid geometry, Gaussian blur and cubic resampling (see docs/numerics.md).

Images inside the engine are channel-first ``(C, h, w)`` C-contiguous arrays so that the
hot loops walk memory row by row.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit

KEYS_A = -0.5  # cubic convolution parameter (Keys 1981); bicubic as in MATLAB's imresize/interp2
# Kernel of the images' resampling (interpolating, keeps detail) and of the flow's (approximating
# cubic B-spline: it damps the grid-scale noise of a coarse level's solution before the next level
# or the full-size field inherits it; measured in docs/numerics.md).
IMAGE_KERNEL = "keys"
FLOW_KERNEL = "bspline"


def axis_depth(n: int, eta: float) -> int:
    """Index of the coarsest level along an axis of ``n`` px: the first ``k`` with
    ``round(n * eta**k) < 10`` (0 for axes shorter than 10 px; 18 for 512 px at eta 0.8)."""
    k = 0
    while round(n * eta**k) >= 10:
        k += 1
    return k


def level_shapes(shape: tuple[int, int], eta: float, levels: int) -> list[tuple[int, int]]:
    """Sizes ``(rows, cols)`` of pyramid levels ``0 .. n_levels-1`` for a frame ``shape``."""
    rows, cols = int(shape[0]), int(shape[1])
    depth_y, depth_x = axis_depth(rows, eta), axis_depth(cols, eta)
    n_levels = min(int(levels), max(depth_y, depth_x) + 1)
    out = []
    for i in range(n_levels):
        h = max(1, round(rows * eta ** min(i, depth_y)))
        w = max(1, round(cols * eta ** min(i, depth_x)))
        out.append((h, w))
    return out


@functools.lru_cache(maxsize=256)
def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps of radius ``max(1, ceil(2 sigma))`` (float64)."""
    if sigma <= 0:
        return np.ones(1)
    radius = max(1, math.ceil(2.0 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    k.flags.writeable = False
    return k


@njit(cache=True, nogil=True, inline="always")
def mirror(i, n):
    """Symmetric (edge-including) index: -1 -> 0, -2 -> 1, n -> n-1 (any distance)."""
    if n == 1:
        return 0
    period = 2 * n
    i = i % period
    if i < 0:
        i += period
    if i >= n:
        i = period - 1 - i
    return i


def _mirror_indices(i: np.ndarray, n: int) -> np.ndarray:
    """:func:`mirror` for an index array."""
    if n == 1:
        return np.zeros_like(i)
    i = np.mod(i, 2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i)


@njit(cache=True, nogil=True, inline="always")
def blur_plane_rows(src, taps, dst):
    """``dst += taps * src`` along axis 0 of a plane (h, w) (symmetric borders; ``dst`` zeroed)."""
    h, w = src.shape
    r = taps.shape[0] // 2
    for i in range(h):
        line_out = dst[i]
        for k in range(taps.shape[0]):
            line = src[mirror(i + k - r, h)]
            t = taps[k]
            for j in range(w):
                line_out[j] += t * line[j]


@njit(cache=True, nogil=True, inline="always")
def blur_row(src, taps, dst):
    """``dst += taps * src`` along a row (symmetric borders), tap by tap (``dst`` zeroed)."""
    w = src.shape[0]
    r = taps.shape[0] // 2
    for k in range(taps.shape[0]):
        t = taps[k]
        off = k - r
        j0 = max(0, -off)
        j1 = min(w, w - off)
        if j1 > j0:
            s = src[j0 + off : j1 + off]
            d = dst[j0:j1]
            for j in range(j1 - j0):
                d[j] += t * s[j]
        for j in range(0, min(j0, w)):
            dst[j] += t * src[mirror(j + off, w)]
        for j in range(max(j1, 0), w):
            dst[j] += t * src[mirror(j + off, w)]


@functools.lru_cache(maxsize=1024)
def cubic_taps(
    n_src: int, n_dst: int, dtype: str = "float64", kernel: str = IMAGE_KERNEL
) -> tuple[np.ndarray, np.ndarray]:
    """Source indices ``(n_dst, 4)`` and weights ``(n_dst, 4)`` for centre-aligned resizing.

    ``kernel`` is ``"keys"`` (cubic convolution, ``a = KEYS_A``: interpolating) or
    ``"bspline"`` (the cubic B-spline itself, unprefiltered: approximating and smoothing; it
    reproduces constant and linear fields exactly). Source indices are clamped (replicate
    border). Cached (read-only arrays): every frame of a run resamples between the same sizes."""
    x = (np.arange(n_dst, dtype=np.float64) + 0.5) * (n_src / n_dst) - 0.5
    x0 = np.floor(x)
    t = x - x0
    offsets = np.arange(-1, 3)
    idx = np.clip(x0[:, None].astype(np.int64) + offsets[None, :], 0, n_src - 1)
    d = np.abs(t[:, None] - offsets[None, :])
    if kernel == "keys":
        a = KEYS_A
        w = np.where(
            d <= 1.0,
            (a + 2) * d**3 - (a + 3) * d**2 + 1,
            np.where(d < 2.0, a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a, 0.0),
        )
    elif kernel == "bspline":
        near = (4 - 6 * d**2 + 3 * d**3) / 6
        w = np.where(d <= 1.0, near, np.where(d < 2.0, (2 - d) ** 3 / 6, 0.0))
    else:
        raise ValueError(f"kernel must be 'keys' or 'bspline', got {kernel!r}")
    w = w.astype(dtype)
    idx.flags.writeable = False
    w.flags.writeable = False
    return idx, w


@njit(cache=True, nogil=True)
def resize_rows(img, idx, wts):
    """Resample axis 1 of ``img`` (C, h, w) to ``idx.shape[0]`` rows."""
    c, _, w = img.shape
    n = idx.shape[0]
    out = np.zeros((c, n, w), img.dtype)
    for ch in range(c):
        for i in range(n):
            for k in range(4):
                src = idx[i, k]
                t = wts[i, k]
                for j in range(w):
                    out[ch, i, j] += t * img[ch, src, j]
    return out


@njit(cache=True, nogil=True)
def resize_cols(img, idx, wts):
    """Resample axis 2 of ``img`` (C, h, w) to ``idx.shape[0]`` columns."""
    c, h, _ = img.shape
    n = idx.shape[0]
    out = np.empty((c, h, n), img.dtype)
    for ch in range(c):
        for i in range(h):
            row = img[ch, i]
            for j in range(n):
                out[ch, i, j] = (
                    wts[j, 0] * row[idx[j, 0]]
                    + wts[j, 1] * row[idx[j, 1]]
                    + wts[j, 2] * row[idx[j, 2]]
                    + wts[j, 3] * row[idx[j, 3]]
                )
    return out


def resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Cubic B-spline resize of a field ``img`` (C, h, w) to ``(C, *shape)``: flows, weights
    and masks between levels (:data:`FLOW_KERNEL`; no anti-aliasing, no value scaling)."""
    _, h, w = img.shape
    out = img
    if shape[0] != h:
        idx, wts = cubic_taps(h, shape[0], img.dtype.name, FLOW_KERNEL)
        out = resize_rows(out, idx, wts)
    if shape[1] != w:
        idx, wts = cubic_taps(w, shape[1], img.dtype.name, FLOW_KERNEL)
        out = resize_cols(out, idx, wts)
    return out if out is not img else img.copy()


def level_sigma(full: tuple[int, int], shape: tuple[int, int]) -> float:
    """Anti-alias sigma (full-resolution px) of a level: ``0.6 / s``, ``s`` its smaller scale."""
    scale = min(shape[0] / full[0], shape[1] / full[1])
    return 0.6 / scale


@functools.lru_cache(maxsize=1024)
def smooth_taps(
    n_src: int, n_dst: int, sigma: float, dtype: str = "float64"
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blur (``sigma`` source px, mirrored borders) fused with the cubic resampling.

    Returns ``start`` (n_dst,) and ``wts`` (n_dst, m): output ``j`` is
    ``sum_k wts[j, k] * src[start[j] + k]``, exactly the cubic resampling (:func:`cubic_taps`) of
    the blurred axis, evaluated only where it is sampled. Cached (read-only arrays).
    """
    idx, cub = cubic_taps(n_src, n_dst, "float64", IMAGE_KERNEL)
    g = gaussian_kernel(float(sigma))
    r = g.shape[0] // 2
    dense = np.zeros((n_dst, n_src))
    rows = np.arange(n_dst)
    for k in range(4):
        for t in range(g.shape[0]):
            np.add.at(dense, (rows, _mirror_indices(idx[:, k] + (t - r), n_src)), cub[:, k] * g[t])
    nz = dense != 0
    start = nz.argmax(axis=1)
    stop = n_src - nz[:, ::-1].argmax(axis=1)
    m = int((stop - start).max())
    start = np.minimum(start, n_src - m)
    wts = np.stack([dense[j, start[j] : start[j] + m] for j in range(n_dst)]).astype(dtype)
    start = start.astype(np.int64)
    start.flags.writeable = False
    wts.flags.writeable = False
    return start, wts


@njit(cache=True, nogil=True)
def smooth_rows(img, start, wts):
    """Blur-and-resample axis 1 of ``img`` (C, h, w) with :func:`smooth_taps` rows."""
    c, _, w = img.shape
    n, m = wts.shape
    out = np.zeros((c, n, w), img.dtype)
    for ch in range(c):
        for i in range(n):
            line = out[ch, i]
            for k in range(m):
                t = wts[i, k]
                src = img[ch, start[i] + k]
                for j in range(w):
                    line[j] += t * src[j]
    return out


@njit(cache=True, nogil=True)
def smooth_cols(img, start, wts):
    """Blur-and-resample axis 2 of ``img`` (C, h, w) with :func:`smooth_taps` columns."""
    c, h, _ = img.shape
    n, m = wts.shape
    out = np.empty((c, h, n), img.dtype)
    for ch in range(c):
        for i in range(h):
            row = img[ch, i]
            for j in range(n):
                s0 = start[j]
                acc = row[s0] * wts[j, 0]
                for k in range(1, m):
                    acc += wts[j, k] * row[s0 + k]
                out[ch, i, j] = acc
    return out


def downsample(img: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Anti-aliased level of a full-resolution ``img`` (C, H, W): Gaussian of ``sigma`` px on both
    axes, then cubic resampling to ``shape``, fused so that only the sampled values are computed."""
    _, h, w = img.shape
    start, wts = smooth_taps(h, shape[0], float(sigma), img.dtype.name)
    out = smooth_rows(img, start, wts)
    start, wts = smooth_taps(w, shape[1], float(sigma), img.dtype.name)
    return smooth_cols(out, start, wts)


def build_pyramid(img: np.ndarray, shapes: list[tuple[int, int]], finest: int) -> list:
    """Levels of ``img`` (C, H, W) for ``shapes``; entries below ``finest`` are None.

    Every level is resampled directly from the full-resolution frame (see docs/numerics.md):
    cascading levels from the level above blurs and aliases the coarse ones.
    """
    levels: list = [None] * len(shapes)
    full = shapes[0]
    for i in range(max(finest, 0), len(shapes)):
        if i == 0:
            levels[0] = img
        else:
            levels[i] = downsample(img, shapes[i], level_sigma(full, shapes[i]))
    return levels
