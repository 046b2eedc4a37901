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


def axis_depth(n: int, eta: float) -> int:
    """Largest ``k`` with ``n * eta**k >= 10`` (0 for axes shorter than 10 px)."""
    if n <= 10:
        return 0
    k = math.floor(math.log(10.0 / n) / math.log(eta))
    # guard against rounding of the logarithms
    while k > 0 and n * eta**k < 10.0:
        k -= 1
    while n * eta ** (k + 1) >= 10.0:
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
    """Normalised 1-D Gaussian taps of radius ``ceil(3 sigma)`` (float64)."""
    if sigma <= 0:
        return np.ones(1)
    radius = max(1, math.ceil(3.0 * sigma))
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


@njit(cache=True, nogil=True)
def blur_rows(img, taps):
    """Convolve every channel of ``img`` (C, h, w) along axis 1 (rows) with ``taps``."""
    out = np.zeros_like(img)
    for ch in range(img.shape[0]):
        blur_plane_rows(img[ch], taps, out[ch])
    return out


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


@njit(cache=True, nogil=True)
def blur_cols(img, taps):
    """Convolve every channel of ``img`` (C, h, w) along axis 2 (columns) with ``taps``.

    Tap-outer loops over contiguous runs of a row (slices, so the interior vectorises); only
    the ``radius`` columns at each border take the mirrored indices.
    """
    c, h, _ = img.shape
    out = np.zeros_like(img)
    for ch in range(c):
        for i in range(h):
            blur_row(img[ch, i], taps, out[ch, i])
    return out


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
def cubic_taps(n_src: int, n_dst: int, dtype: str = "float64") -> tuple[np.ndarray, np.ndarray]:
    """Source indices ``(n_dst, 4)`` and Keys weights ``(n_dst, 4)`` for centre-aligned resizing.

    Cached (read-only arrays): every frame of a run resamples between the same sizes."""
    x = (np.arange(n_dst, dtype=np.float64) + 0.5) * (n_src / n_dst) - 0.5
    x0 = np.floor(x)
    t = x - x0
    offsets = np.arange(-1, 3)
    idx = np.clip(x0[:, None].astype(np.int64) + offsets[None, :], 0, n_src - 1)
    d = np.abs(t[:, None] - offsets[None, :])
    a = KEYS_A
    w = np.where(
        d <= 1.0,
        (a + 2) * d**3 - (a + 3) * d**2 + 1,
        np.where(d < 2.0, a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a, 0.0),
    ).astype(dtype)
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
    """Cubic resize of ``img`` (C, h, w) to ``(C, *shape)`` (no anti-aliasing, no value scaling)."""
    _, h, w = img.shape
    out = img
    if shape[0] != h:
        idx, wts = cubic_taps(h, shape[0], img.dtype.name)
        out = resize_rows(out, idx, wts)
    if shape[1] != w:
        idx, wts = cubic_taps(w, shape[1], img.dtype.name)
        out = resize_cols(out, idx, wts)
    return out if out is not img else img.copy()


def downsample(img: np.ndarray, shape: tuple[int, int], first: tuple[bool, bool]) -> np.ndarray:
    """One cascade step: anti-alias along axes whose size changes, then cubic resize.

    ``first[a]`` is True when ``img`` is still at full resolution along axis ``a`` (see
    docs/numerics.md for the blur widths).
    """
    out = img
    for axis, (n_src, n_dst) in enumerate(zip(img.shape[1:], shape, strict=False)):
        if n_src == n_dst:
            continue
        ratio = n_src / n_dst
        sigma = 0.6 * ratio if first[axis] else 0.6 * math.sqrt(max(ratio * ratio - 1.0, 0.0))
        taps = gaussian_kernel(float(sigma)).astype(img.dtype)
        out = blur_rows(out, taps) if axis == 0 else blur_cols(out, taps)
    return resize(out, shape)


def build_pyramid(img: np.ndarray, shapes: list[tuple[int, int]], finest: int) -> list:
    """Levels of ``img`` (C, H, W) for ``shapes``; entries below ``finest`` are None."""
    levels: list = [None] * len(shapes)
    current = img
    levels[0] = img
    for i in range(1, len(shapes)):
        prev_shape = shapes[i - 1]
        first = (prev_shape[0] == shapes[0][0], prev_shape[1] == shapes[0][1])
        current = downsample(current, shapes[i], first)
        levels[i] = current
    for i in range(min(finest, len(shapes))):
        levels[i] = None
    return levels
