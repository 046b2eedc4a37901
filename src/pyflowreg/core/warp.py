"""Backward warping of frames and videos by displacement fields.

``registered(y, x) = moving(y + v(y, x), x + u(y, x))`` with ``w[..., 0] = u`` (columns) and
``w[..., 1] = v`` (rows), in pixels.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

METHODS = {"nearest": 0, "linear": 1, "cubic": 2}


@njit(cache=True, nogil=True, inline="always")
def keys_weights(t):
    """Keys (a = -0.5) cubic weights for the taps at offsets -1, 0, 1, 2 of a sample at ``t``."""
    t2 = t * t
    t3 = t2 * t
    w0 = -0.5 * t3 + t2 - 0.5 * t
    w1 = 1.5 * t3 - 2.5 * t2 + 1.0
    w2 = -1.5 * t3 + 2.0 * t2 + 0.5 * t
    w3 = 0.5 * t3 - 0.5 * t2
    return w0, w1, w2, w3


@njit(cache=True, nogil=True, inline="always")
def clamp(i, n):
    if i < 0:
        return 0
    if i >= n:
        return n - 1
    return i


@njit(cache=True, nogil=True, inline="always")
def cubic_sample(img, ch, y, x):
    """Bicubic sample of channel ``ch`` of ``img`` (C, h, w) at ``(y, x)``, indices clamped."""
    h = img.shape[1]
    w = img.shape[2]
    y0 = math.floor(y)
    x0 = math.floor(x)
    wy0, wy1, wy2, wy3 = keys_weights(y - y0)
    wx0, wx1, wx2, wx3 = keys_weights(x - x0)
    yi = int(y0)
    xi = int(x0)
    xm = clamp(xi - 1, w)
    xa = clamp(xi, w)
    xb = clamp(xi + 1, w)
    xc = clamp(xi + 2, w)
    acc = 0.0
    for k in range(4):
        r = img[ch, clamp(yi - 1 + k, h)]
        row = wx0 * r[xm] + wx1 * r[xa] + wx2 * r[xb] + wx3 * r[xc]
        if k == 0:
            acc += wy0 * row
        elif k == 1:
            acc += wy1 * row
        elif k == 2:
            acc += wy2 * row
        else:
            acc += wy3 * row
    return acc


@njit(cache=True, nogil=True)
def warp_level(moving, reference, u, v, hx, hy):
    """Warp ``moving`` (C, h, w) by the level flow; outside samples take ``reference``'s value.

    ``u``, ``v`` are in full-resolution pixels; ``hx``, ``hy`` the level's grid spacings.
    """
    c, h, w = moving.shape
    out = np.empty_like(moving)
    for i in range(h):
        for j in range(w):
            y = i + v[i, j] / hy
            x = j + u[i, j] / hx
            if y < 0.0 or y > h - 1 or x < 0.0 or x > w - 1:
                for ch in range(c):
                    out[ch, i, j] = reference[ch, i, j]
            else:
                for ch in range(c):
                    out[ch, i, j] = cubic_sample(moving, ch, y, x)
    return out


@njit(cache=True, nogil=True)
def _warp_frame(img, u, v, method, use_fill, fill):
    """Warp ``img`` (C, H, W) float by (u, v) with method 0/1/2 (nearest/linear/cubic)."""
    c, h, w = img.shape
    out = np.empty_like(img)
    for i in range(h):
        for j in range(w):
            y = i + v[i, j]
            x = j + u[i, j]
            if use_fill and (y < 0.0 or y > h - 1 or x < 0.0 or x > w - 1):
                for ch in range(c):
                    out[ch, i, j] = fill
                continue
            if method == 2:
                for ch in range(c):
                    out[ch, i, j] = cubic_sample(img, ch, y, x)
            elif method == 1:
                y0 = math.floor(y)
                x0 = math.floor(x)
                ty = y - y0
                tx = x - x0
                ya = clamp(int(y0), h)
                yb = clamp(int(y0) + 1, h)
                xa = clamp(int(x0), w)
                xb = clamp(int(x0) + 1, w)
                for ch in range(c):
                    top = (1.0 - tx) * img[ch, ya, xa] + tx * img[ch, ya, xb]
                    bot = (1.0 - tx) * img[ch, yb, xa] + tx * img[ch, yb, xb]
                    out[ch, i, j] = (1.0 - ty) * top + ty * bot
            else:
                # round half away from zero, then clamp
                yn = clamp(math.floor(y + 0.5) if y >= 0 else math.ceil(y - 0.5), h)
                xn = clamp(math.floor(x + 0.5) if x >= 0 else math.ceil(x - 0.5), w)
                for ch in range(c):
                    out[ch, i, j] = img[ch, yn, xn]
    return out


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float results to ``dtype``: integers are rounded and clipped to the dtype range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def warp(
    frame_or_video: np.ndarray,
    w: np.ndarray,
    method: str = "cubic",
    fill: float | None = None,
) -> np.ndarray:
    """Backward-warp a frame or a video by displacement fields.

    Parameters
    ----------
    frame_or_video : ndarray
        ``(H, W)``, ``(H, W, C)``, ``(T, H, W)`` or ``(T, H, W, C)``; any real dtype.
    w : ndarray
        ``(H, W, 2)`` (one field for every frame) or ``(T, H, W, 2)``; ``w[..., 0] = u`` along
        columns, ``w[..., 1] = v`` along rows, in pixels.
    method : {"cubic", "linear", "nearest"}
        Interpolation (cubic: Keys a = -0.5).
    fill : float, optional
        Value for samples outside the frame; by default the border is replicated.

    Returns
    -------
    ndarray
        Same shape and dtype as the input. Integer outputs are rounded and clipped to the dtype's
        range (no wrap-around of cubic over- or undershoot).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    arr = np.asarray(frame_or_video)
    if arr.dtype.kind not in "uif":
        raise TypeError(f"frame_or_video must have a real numeric dtype, got {arr.dtype}")
    w = np.asarray(w)
    if w.ndim not in (3, 4) or w.shape[-1] != 2:
        raise ValueError(f"w must have shape (H, W, 2) or (T, H, W, 2), got {w.shape}")
    hw = w.shape[-3:-1]
    if arr.ndim == 2:
        video, squeeze = arr[None, :, :, None], (0, 3)
    elif arr.ndim == 3 and arr.shape[:2] == hw and not (w.ndim == 4 and arr.shape[0] == w.shape[0]):
        video, squeeze = arr[None], (0,)
    elif arr.ndim == 3:
        video, squeeze = arr[..., None], (3,)
    elif arr.ndim == 4:
        video, squeeze = arr, ()
    else:
        raise ValueError(f"frame_or_video must be 2-D, 3-D or 4-D, got shape {arr.shape}")
    n = video.shape[0]
    if video.shape[1:3] != hw:
        raise ValueError(f"frame size {video.shape[1:3]} does not match the field size {hw}")
    if w.ndim == 4 and w.shape[0] != n:
        raise ValueError(f"{w.shape[0]} fields for {n} frames")
    if not np.all(np.isfinite(w)):
        raise ValueError("w contains NaN or infinite values")
    work = np.float64 if arr.dtype in (np.float64, np.int32, np.uint32, np.int64) else np.float32
    out = np.empty(video.shape, dtype=arr.dtype.newbyteorder("="))
    code = METHODS[method]
    for t in range(n):
        field = w[t] if w.ndim == 4 else w
        u = np.ascontiguousarray(field[..., 0], dtype=work)
        v = np.ascontiguousarray(field[..., 1], dtype=work)
        img = np.ascontiguousarray(np.moveaxis(video[t], -1, 0), dtype=work)
        res = _warp_frame(img, u, v, code, fill is not None, 0.0 if fill is None else float(fill))
        out[t] = _cast(np.moveaxis(res, 0, -1), out.dtype)
    for axis in sorted(squeeze, reverse=True):
        out = out.squeeze(axis)
    return out
