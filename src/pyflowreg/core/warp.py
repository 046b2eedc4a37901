"""Backward warping of frames and videos by displacement fields.

``registered(y, x) = moving(y + v(y, x), x + u(y, x))`` with ``w[..., 0] = u`` (columns) and
``w[..., 1] = v`` (rows), in pixels.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Interpolation kernels of the output warp (docs/numerics.md compares them): code and Keys ``a``.
#: ``cubic`` is Keys' cubic convolution with a = -0.75 (the bicubic of OpenCV and PyFlowReg),
#: ``catmull_rom`` the same with a = -0.5 (MATLAB's interp2), ``bspline`` the interpolating cubic
#: B-spline (an exact recursive prefilter, then 4 x 4 taps), ``lanczos3`` the 6 x 6 windowed sinc.
METHODS = {"nearest": 0, "linear": 1, "cubic": 2, "catmull_rom": 2, "bspline": 3, "lanczos3": 4}
_KEYS_A = {"cubic": -0.75, "catmull_rom": -0.5}


@njit(cache=True, nogil=True, inline="always")
def cubic_weights(t, a):
    """Keys cubic-convolution weights (parameter ``a``) of the taps at offsets -1, 0, 1, 2 of a
    sample at fractional position ``t`` in [0, 1)."""
    t2 = t * t
    t3 = t2 * t
    w0 = a * (t3 - 2.0 * t2 + t)
    w1 = (a + 2.0) * t3 - (a + 3.0) * t2 + 1.0
    w2 = -(a + 2.0) * t3 + (2.0 * a + 3.0) * t2 - a * t
    w3 = a * (t2 - t3)
    return w0, w1, w2, w3


@njit(cache=True, nogil=True, inline="always")
def reflect(i, n):
    """Whole-sample symmetric index (-1 -> 1, n -> n - 2), the extension the spline
    coefficients of :func:`_spline_line` assume."""
    if n == 1:
        return 0
    period = 2 * n - 2
    i = i % period
    if i < 0:
        i += period
    if i >= n:
        i = period - i
    return i


@njit(cache=True, nogil=True, inline="always")
def _tap(i, n, symmetric):
    """Tap index ``i`` inside ``[0, n)``: reflected when ``symmetric``, else clamped."""
    return reflect(i, n) if symmetric else clamp(i, n)


@njit(cache=True, nogil=True, inline="always")
def clamp(i, n):
    if i < 0:
        return 0
    if i >= n:
        return n - 1
    return i


@njit(cache=True, nogil=True, inline="always")
def keys_dot(w0, w1, w2, w3, a, b, c, d):
    """``w0 a + w1 b + w2 c + w3 d``, summed left to right: one cubic interpolation step."""
    return w0 * a + w1 * b + w2 * c + w3 * d


@njit(cache=True, nogil=True)
def warp_level(coefficients, reference, u, v, hx, hy):
    """Warp a level image by the level flow; outside samples take ``reference``'s value.

    ``coefficients`` (C, h, w) are the moving level image's cubic B-spline coefficients
    (:func:`level_coefficients`): the warp interpolates with the interpolating cubic B-spline,
    whose interpolation error is far below the Keys kernels' (docs/numerics.md), so the residual
    of each level carries less interpolation blur. ``u``, ``v`` are in full-resolution pixels;
    ``hx``, ``hy`` the level's grid spacings.
    """
    c, h, w = coefficients.shape
    out = np.empty_like(coefficients)
    for i in range(h):
        for j in range(w):
            y = i + v[i, j] / hy
            x = j + u[i, j] / hx
            if y < 0.0 or y > h - 1 or x < 0.0 or x > w - 1:
                for ch in range(c):
                    out[ch, i, j] = reference[ch, i, j]
                continue
            y0 = math.floor(y)
            x0 = math.floor(x)
            wy0, wy1, wy2, wy3 = bspline_weights(y - y0)
            wx0, wx1, wx2, wx3 = bspline_weights(x - x0)
            yi = int(y0)
            xi = int(x0)
            xm = reflect(xi - 1, w)
            xa = reflect(xi, w)
            xb = reflect(xi + 1, w)
            xc = reflect(xi + 2, w)
            for ch in range(c):
                r0 = coefficients[ch, reflect(yi - 1, h)]
                r1 = coefficients[ch, reflect(yi, h)]
                r2 = coefficients[ch, reflect(yi + 1, h)]
                r3 = coefficients[ch, reflect(yi + 2, h)]
                out[ch, i, j] = keys_dot(
                    wy0, wy1, wy2, wy3,
                    keys_dot(wx0, wx1, wx2, wx3, r0[xm], r0[xa], r0[xb], r0[xc]),
                    keys_dot(wx0, wx1, wx2, wx3, r1[xm], r1[xa], r1[xb], r1[xc]),
                    keys_dot(wx0, wx1, wx2, wx3, r2[xm], r2[xa], r2[xb], r2[xc]),
                    keys_dot(wx0, wx1, wx2, wx3, r3[xm], r3[xa], r3[xb], r3[xc]),
                )  # fmt: skip
    return out


@njit(cache=True, nogil=True)
def level_coefficients(img):
    """Cubic B-spline coefficients (mirror boundaries) of every channel of ``img`` (C, h, w),
    in ``img``'s dtype (the recursion runs in float64)."""
    c, h, w = img.shape
    out = np.empty_like(img)
    row = np.empty(w)
    col = np.empty(h)
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                row[j] = img[ch, i, j]
            _spline_line(row, w)
            for j in range(w):
                out[ch, i, j] = row[j]
        for j in range(w):
            for i in range(h):
                col[i] = out[ch, i, j]
            _spline_line(col, h)
            for i in range(h):
                out[ch, i, j] = col[i]
    return out


#: Dtypes the warp kernel reads and writes directly; others go through a float copy.
_KERNEL_KINDS = frozenset("u1 u2 u4 u8 i1 i2 i4 i8 f4 f8".split())
#: Sources warped in float64 (float32 would not hold their values exactly).
_WIDE = (np.float64, np.int32, np.uint32, np.int64)


def work_dtype(source: np.dtype) -> type:
    """The float type a ``source`` dtype is warped in: float64 where float32 would not hold
    its values exactly (float64, 32/64-bit integers), float32 otherwise."""
    return np.float64 if source in _WIDE else np.float32


@njit(cache=True, nogil=True, inline="always")
def bspline_weights(t):
    """Cubic B-spline weights of the taps at offsets -1, 0, 1, 2 of a sample at ``t``."""
    s = 1.0 - t
    t2 = t * t
    t3 = t2 * t
    return (
        s * s * s / 6.0,
        (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
        (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
        t3 / 6.0,
    )


@njit(cache=True, nogil=True, inline="always")
def _lanczos3(x):
    if x == 0.0:
        return 1.0
    if abs(x) >= 3.0:
        return 0.0
    px = math.pi * x
    return 3.0 * math.sin(px) * math.sin(px / 3.0) / (px * px)


@njit(cache=True, nogil=True)
def _warp_into(img, w, method, a, use_fill, fill, narrow, to_int, lo, hi, out):
    """Warp ``img`` (h, w, C) by ``w`` (h, w, 2) into ``out`` (h, w, C).

    ``method`` 0/1/2/3/4 is nearest/linear/Keys cubic (parameter ``a``)/cubic B-spline (``img``
    holds the spline coefficients)/Lanczos-3. Coordinates and weights are float64; with
    ``narrow`` the source values, the field and each result pass through float32 first (the
    float32 work type). With ``to_int`` results are rounded half to even and clipped to
    ``[lo, hi]`` before they are stored, so integers never wrap around.
    """
    h, wd, c = img.shape
    lw = np.empty(6)
    for i in range(h):
        for j in range(wd):
            if narrow:
                y = i + np.float32(w[i, j, 1])
                x = j + np.float32(w[i, j, 0])
            else:
                y = i + np.float64(w[i, j, 1])
                x = j + np.float64(w[i, j, 0])
            if use_fill and (y < 0.0 or y > h - 1 or x < 0.0 or x > wd - 1):
                for ch in range(c):
                    _store(out, i, j, ch, fill, narrow, to_int, lo, hi)
                continue
            y0 = math.floor(y)
            x0 = math.floor(x)
            yi = int(y0)
            xi = int(x0)
            if method == 2 or method == 3:
                spline = method == 3  # coefficients extend symmetrically, as prefiltered
                if spline:
                    wy0, wy1, wy2, wy3 = bspline_weights(y - y0)
                    wx0, wx1, wx2, wx3 = bspline_weights(x - x0)
                else:
                    wy0, wy1, wy2, wy3 = cubic_weights(y - y0, a)
                    wx0, wx1, wx2, wx3 = cubic_weights(x - x0, a)
                xm = _tap(xi - 1, wd, spline)
                xa = _tap(xi, wd, spline)
                xb = _tap(xi + 1, wd, spline)
                xc = _tap(xi + 2, wd, spline)
                ym = _tap(yi - 1, h, spline)
                ya = _tap(yi, h, spline)
                yb = _tap(yi + 1, h, spline)
                yc = _tap(yi + 2, h, spline)
                for ch in range(c):
                    val = keys_dot(
                        wy0, wy1, wy2, wy3,
                        _row(img, ym, xm, xa, xb, xc, ch, narrow, wx0, wx1, wx2, wx3),
                        _row(img, ya, xm, xa, xb, xc, ch, narrow, wx0, wx1, wx2, wx3),
                        _row(img, yb, xm, xa, xb, xc, ch, narrow, wx0, wx1, wx2, wx3),
                        _row(img, yc, xm, xa, xb, xc, ch, narrow, wx0, wx1, wx2, wx3),
                    )  # fmt: skip
                    _store(out, i, j, ch, val, narrow, to_int, lo, hi)
            elif method == 4:
                ty = y - y0
                tx = x - x0
                sy = 0.0
                sx = 0.0
                for k in range(6):
                    lw[k] = _lanczos3(tx - (k - 2))
                    sx += lw[k]
                for ch in range(c):
                    val = 0.0
                    sy = 0.0
                    for m in range(6):
                        wy = _lanczos3(ty - (m - 2))
                        sy += wy
                        yy = clamp(yi + m - 2, h)
                        acc = 0.0
                        for k in range(6):
                            acc += lw[k] * _value(img, yy, clamp(xi + k - 2, wd), ch, narrow)
                        val += wy * acc
                    _store(out, i, j, ch, val / (sx * sy), narrow, to_int, lo, hi)
            elif method == 1:
                ty = y - y0
                tx = x - x0
                ya = clamp(yi, h)
                yb = clamp(yi + 1, h)
                xa = clamp(xi, wd)
                xb = clamp(xi + 1, wd)
                for ch in range(c):
                    top = (1.0 - tx) * _value(img, ya, xa, ch, narrow) + tx * _value(
                        img, ya, xb, ch, narrow
                    )
                    bot = (1.0 - tx) * _value(img, yb, xa, ch, narrow) + tx * _value(
                        img, yb, xb, ch, narrow
                    )
                    _store(out, i, j, ch, (1.0 - ty) * top + ty * bot, narrow, to_int, lo, hi)
            else:
                # round half away from zero, then clamp
                yn = clamp(math.floor(y + 0.5) if y >= 0 else math.ceil(y - 0.5), h)
                xn = clamp(math.floor(x + 0.5) if x >= 0 else math.ceil(x - 0.5), wd)
                for ch in range(c):
                    _store(out, i, j, ch, _value(img, yn, xn, ch, narrow), narrow, to_int, lo, hi)


_POLE = math.sqrt(3.0) - 2.0  # the cubic B-spline's recursive-filter pole


@njit(cache=True, nogil=True)
def _spline_line(line, n):
    """In place: interpolating cubic B-spline coefficients of ``line[:n]`` with mirror
    (whole-sample symmetric) boundaries; Unser's causal/anti-causal recursion."""
    if n == 1:
        return
    z = _POLE
    for k in range(n):
        line[k] *= 6.0  # the filter's gain (1 - z) (1 - 1 / z)
    if n <= 30:  # exact sum over one period (2n - 2) of the mirrored line
        z2 = z ** (2 * n - 2)
        total = 0.0
        zk = 1.0
        for k in range(n):
            total += zk * line[k]
            if 0 < k < n - 1:
                total += (z2 / zk) * line[k]
            zk *= z
        total /= 1.0 - z2
    else:  # |z|^30 < 1e-17: the truncated sum is exact in floating point
        total = 0.0
        zk = 1.0
        for k in range(30):
            total += zk * line[k]
            zk *= z
    line[0] = total
    for k in range(1, n):
        line[k] += z * line[k - 1]
    line[n - 1] = (z / (z * z - 1.0)) * (z * line[n - 2] + line[n - 1])
    for k in range(n - 2, -1, -1):
        line[k] = z * (line[k + 1] - line[k])


@njit(cache=True, nogil=True, inline="always")
def _value(img, y, x, ch, narrow):
    """``img[y, x, ch]`` as float64 (through float32 when ``narrow``)."""
    if narrow:
        return np.float64(np.float32(img[y, x, ch]))
    return np.float64(img[y, x, ch])


@njit(cache=True, nogil=True, inline="always")
def _row(img, y, xm, xa, xb, xc, ch, narrow, w0, w1, w2, w3):
    """Cubic interpolation along row ``y`` of a channel-last ``img`` at the four columns."""
    return keys_dot(
        w0, w1, w2, w3,
        _value(img, y, xm, ch, narrow), _value(img, y, xa, ch, narrow),
        _value(img, y, xb, ch, narrow), _value(img, y, xc, ch, narrow),
    )  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _store(out, i, j, ch, val, narrow, to_int, lo, hi):
    """``out[i, j, ch] = val`` in the work type; integers rounded and clipped."""
    if narrow:
        val = np.float64(np.float32(val))
    if to_int:
        val = np.rint(val)
        if val < lo:
            val = lo
        elif val > hi:
            val = hi
    out[i, j, ch] = val


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float results to ``dtype``: integers are rounded and clipped to the dtype range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def warp_into(
    frame: np.ndarray,
    w: np.ndarray,
    out: np.ndarray,
    method: str = "cubic",
    fill: float | None = None,
    work: np.dtype | None = None,
) -> np.ndarray:
    """Backward-warp one ``(H, W, C)`` frame by ``w`` (H, W, 2) into ``out`` (H, W, C).

    No checks beyond what the kernel needs (callers validate): the frame is read in its own
    dtype, computed in ``work`` (default: float64 for 32/64-bit integers and float64 frames,
    float32 otherwise) and written in ``out``'s dtype, integers rounded and clipped.
    """
    code = METHODS[method]
    if work is None:
        work = work_dtype(frame.dtype)
    narrow = np.dtype(work) != np.float64
    direct = out.dtype.str[1:] in _KERNEL_KINDS and out.dtype.isnative
    target = out if direct else np.empty(out.shape, work)
    if code == 3:
        planes = np.ascontiguousarray(np.moveaxis(frame, -1, 0), dtype=np.float64)
        frame = np.ascontiguousarray(np.moveaxis(level_coefficients(planes), 0, -1))
    elif frame.dtype.str[1:] not in _KERNEL_KINDS or not frame.dtype.isnative:
        frame = frame.astype(work)
    to_int = target.dtype.kind in "ui"
    lo, hi = (np.iinfo(target.dtype).min, np.iinfo(target.dtype).max) if to_int else (0, 0)
    fill_value = 0.0 if fill is None else float(fill)
    a = _KEYS_A.get(method, -0.75)
    _warp_into(frame, w, code, a, fill is not None, fill_value, narrow, to_int, lo, hi, target)
    if not direct:
        out[...] = _cast(target, out.dtype)
    return out


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
    method : {"cubic", "catmull_rom", "bspline", "lanczos3", "linear", "nearest"}
        Interpolation (``cubic``: Keys a = -0.75; ``catmull_rom``: a = -0.5; see
        :data:`METHODS`).
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
    if w.dtype not in (np.float32, np.float64) or not w.dtype.isnative:
        w = w.astype(np.float64)
    out = np.empty(video.shape, dtype=arr.dtype.newbyteorder("="))
    for t in range(n):
        warp_into(video[t], w[t] if w.ndim == 4 else w, out[t], method, fill)
    for axis in sorted(squeeze, reverse=True):
        out = out.squeeze(axis)
    return out
