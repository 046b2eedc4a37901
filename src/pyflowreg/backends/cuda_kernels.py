"""CUDA kernels (numba) of the flow engine; the numerics are those of docs/numerics.md.

Importing this module imports :mod:`numba.cuda`; :mod:`pyflowreg.backends.cuda_backend` imports it
only when a :class:`~pyflowreg.backends.cuda_backend.CudaBackend` is created.

Layouts (all float32, C-contiguous):

- images and image stacks ``(N, h, w)`` with ``N = frames * channels`` (frame-major);
- flow ``(2, B, h, w)``: ``[0]`` = u (columns, x), ``[1]`` = v (rows, y), full-resolution pixels;
- reference derivatives ``(5, C, h, w)``: f_x, f_y, f_xx, f_yy, f_xy;
- the level solver works on the frame plus a one-pixel ghost ring, the grid ``(h + 2, w + 2)``
  (frame pixel ``(i, j)`` is grid pixel ``(i + 1, j + 1)``), as the core's
  :func:`~pyflowreg.core.flow.level_step`: total flow ``UV`` ``(2, B, h + 2, w + 2)``, motion
  tensors ``J`` ``(B, C, 6, h + 2, w + 2)`` (J11, J22, J33, J12, J13, J23; zero on the ring),
  data weights ``(C, h + 2, w + 2)`` (zero ring), lagged data weights ``A``
  ``(5, B, h + 2, w + 2)`` (A11, A22, A12, A13, A23), smoothness weights ``(B, h + 2, w + 2)``.

Two-dimensional kernels use a ``(columns, rows, stack)`` grid; the solver kernels give one thread
to each pair of horizontally adjacent interior pixels (one red, one black), so a half-sweep reads
rows contiguously and the lagged-weight refresh of both pixels fuses into the red half-sweep.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

POLE = math.sqrt(3.0) - 2.0  # the cubic B-spline's recursive-filter pole (core.warp._POLE)

EPS = np.float32(1e-5)
TENSOR_EPS = np.float32(1e-6)
HALF = np.float32(0.5)
ONE = np.float32(1.0)
TWO = np.float32(2.0)
ZERO = np.float32(0.0)


# -- layout -----------------------------------------------------------------------------------


@cuda.jit(cache=True)
def to_planar(src, dst, channel_major):
    """``src`` (B, H, W, C) -> ``dst`` (B*C, H, W): row ``b*C + c``, or ``c*B + b`` if
    ``channel_major`` (used for flow fields, giving the ``(2, B, H, W)`` layout)."""
    j, i, b = cuda.grid(3)
    n_b, h, w, n_c = src.shape
    if j < w and i < h and b < n_b:
        for c in range(n_c):
            row = c * n_b + b if channel_major else b * n_c + c
            dst[row, i, j] = src[b, i, j, c]


@cuda.jit(cache=True)
def interleave_flow(flow, out):
    """``flow`` (2, B, H, W) -> ``out`` (B, H, W, 2)."""
    j, i, b = cuda.grid(3)
    _, n_b, h, w = flow.shape
    if j < w and i < h and b < n_b:
        out[b, i, j, 0] = flow[0, b, i, j]
        out[b, i, j, 1] = flow[1, b, i, j]


@cuda.jit(cache=True)
def broadcast_flow(src, dst):
    """``src`` (2, 1, h, w) -> every frame of ``dst`` (2, B, h, w)."""
    j, i, b = cuda.grid(3)
    _, n_b, h, w = dst.shape
    if j < w and i < h and b < n_b:
        dst[0, b, i, j] = src[0, 0, i, j]
        dst[1, b, i, j] = src[1, 0, i, j]


# -- pyramid ----------------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def _mirror(i, n):
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


@cuda.jit(cache=True)
def smooth_rows(src, dst, start, wts):
    """Blur-and-resample axis 1 with :func:`~pyflowreg.core.pyramid.smooth_taps` tables:
    ``dst[n, i, j] = sum_k wts[i, k] * src[n, start[i] + k, j]`` (a pyramid level's rows from
    the full-resolution frame)."""
    j, i, n = cuda.grid(3)
    n_img, h, w = dst.shape
    if j < w and i < h and n < n_img:
        s0 = start[i]
        acc = ZERO
        for k in range(wts.shape[1]):
            acc += wts[i, k] * src[n, s0 + k, j]
        dst[n, i, j] = acc


@cuda.jit(cache=True)
def smooth_cols(src, dst, start, wts):
    """Blur-and-resample axis 2: ``dst[n, i, j] = sum_k wts[j, k] * src[n, i, start[j] + k]``."""
    j, i, n = cuda.grid(3)
    n_img, h, w = dst.shape
    if j < w and i < h and n < n_img:
        s0 = start[j]
        acc = ZERO
        for k in range(wts.shape[1]):
            acc += wts[j, k] * src[n, i, s0 + k]
        dst[n, i, j] = acc


@cuda.jit(cache=True)
def resize_rows(src, dst, idx, wts):
    """Cubic resampling of axis 1: ``dst[n, i] = sum_k wts[i, k] * src[n, idx[i, k]]``."""
    j, i, n = cuda.grid(3)
    n_img, h, w = dst.shape
    if j < w and i < h and n < n_img:
        dst[n, i, j] = (
            wts[i, 0] * src[n, idx[i, 0], j]
            + wts[i, 1] * src[n, idx[i, 1], j]
            + wts[i, 2] * src[n, idx[i, 2], j]
            + wts[i, 3] * src[n, idx[i, 3], j]
        )


@cuda.jit(cache=True)
def resize_cols(src, dst, idx, wts):
    """Cubic resampling of axis 2: ``dst[n, :, j] = sum_k wts[j, k] * src[n, :, idx[j, k]]``."""
    j, i, n = cuda.grid(3)
    n_img, h, w = dst.shape
    if j < w and i < h and n < n_img:
        dst[n, i, j] = (
            wts[j, 0] * src[n, i, idx[j, 0]]
            + wts[j, 1] * src[n, i, idx[j, 1]]
            + wts[j, 2] * src[n, i, idx[j, 2]]
            + wts[j, 3] * src[n, i, idx[j, 3]]
        )


# -- warp and motion tensors ------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def _clamp(i, n):
    return 0 if i < 0 else (n - 1 if i >= n else i)


@cuda.jit(device=True, inline=True)
def _reflect(i, n):
    """Whole-sample symmetric index (-1 -> 1, n -> n - 2): the extension the B-spline
    coefficients assume (:func:`pyflowreg.core.warp.reflect`)."""
    if n == 1:
        return 0
    period = 2 * n - 2
    i = i % period
    if i < 0:
        i += period
    if i >= n:
        i = period - i
    return i


@cuda.jit(device=True, inline=True)
def _bspline(t):
    """Cubic B-spline weights of the taps at offsets -1, 0, 1, 2 for a sample at ``t``."""
    s = 1.0 - t
    t2 = t * t
    t3 = t2 * t
    return (
        s * s * s / 6.0,
        (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
        (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
        t3 / 6.0,
    )


@cuda.jit(device=True, inline=True)
def _line_get(a, n, f, k, along_rows):
    return a[n, f, k] if along_rows else a[n, k, f]


@cuda.jit(device=True, inline=True)
def _line_set(a, n, f, k, along_rows, value):
    if along_rows:
        a[n, f, k] = value
    else:
        a[n, k, f] = value


@cuda.jit(device=True, inline=True)
def _spline_line(a, n, f, m, along_rows):
    """In place: cubic B-spline coefficients (mirror boundaries) of one line of ``m`` values of
    ``a`` (N, h, w), row ``f`` (``along_rows``) or column ``f`` of image ``n``: Unser's
    causal/anti-causal recursion as :func:`pyflowreg.core.warp.level_coefficients`, carried in
    float64 (the line itself holds the float32 intermediate values)."""
    if m == 1:
        return
    z = POLE
    total = 0.0
    if m <= 30:  # exact sum over one period (2m - 2) of the mirrored line
        z2 = z ** (2 * m - 2)
        zk = 1.0
        for k in range(m):
            x = 6.0 * _line_get(a, n, f, k, along_rows)
            total += zk * x
            if 0 < k < m - 1:
                total += (z2 / zk) * x
            zk *= z
        total /= 1.0 - z2
    else:  # |z|^30 < 1e-17
        zk = 1.0
        for k in range(30):
            total += zk * (6.0 * _line_get(a, n, f, k, along_rows))
            zk *= z
    prev2 = 0.0
    prev = total
    _line_set(a, n, f, 0, along_rows, prev)
    for k in range(1, m):
        prev2 = prev
        prev = 6.0 * _line_get(a, n, f, k, along_rows) + z * prev
        _line_set(a, n, f, k, along_rows, prev)
    nxt = (z / (z * z - 1.0)) * (z * prev2 + prev)
    _line_set(a, n, f, m - 1, along_rows, nxt)
    for k in range(m - 2, -1, -1):
        nxt = z * (nxt - _line_get(a, n, f, k, along_rows))
        _line_set(a, n, f, k, along_rows, nxt)


@cuda.jit(cache=True)
def spline_rows(img):
    """In place: B-spline prefilter along the rows (axis 2) of ``img`` (N, h, w); grid
    ``(rows, 1, N)``, one thread per row."""
    i, _, n = cuda.grid(3)
    n_img, h, w = img.shape
    if i < h and n < n_img:
        _spline_line(img, n, i, w, True)


@cuda.jit(cache=True)
def spline_cols(img):
    """In place: B-spline prefilter along the columns (axis 1) of ``img`` (N, h, w); grid
    ``(columns, 1, N)``, one thread per column (coalesced across threads)."""
    j, _, n = cuda.grid(3)
    n_img, h, w = img.shape
    if j < w and n < n_img:
        _spline_line(img, n, j, h, False)


@cuda.jit(cache=True)
def warp_level(moving, ref, flow, out, n_channels, hx, hy):
    """Backward warp of a level by ``flow`` (2, B, h, w) into ``out`` (B*C, h, w): ``moving``
    (B*C, h, w) holds the level images' cubic B-spline coefficients (:func:`spline_rows`,
    :func:`spline_cols`), interpolated with the B-spline's 4x4 taps at reflected indices
    (:func:`pyflowreg.core.warp.warp_level`); samples outside the level take the reference
    ``ref`` (C, h, w). Positions in float64."""
    j, i, b = cuda.grid(3)
    _, n_b, h, w = flow.shape
    if j >= w or i >= h or b >= n_b:
        return
    y = i + flow[1, b, i, j] / hy
    x = j + flow[0, b, i, j] / hx
    if y < 0.0 or y > h - 1 or x < 0.0 or x > w - 1:
        for c in range(n_channels):
            out[b * n_channels + c, i, j] = ref[c, i, j]
        return
    y0 = math.floor(y)
    x0 = math.floor(x)
    wy0, wy1, wy2, wy3 = _bspline(y - y0)
    wx0, wx1, wx2, wx3 = _bspline(x - x0)
    yi = int(y0)
    xi = int(x0)
    xm, xa, xb, xc = _reflect(xi - 1, w), _reflect(xi, w), _reflect(xi + 1, w), _reflect(xi + 2, w)
    ym, ya, yb, yc = _reflect(yi - 1, h), _reflect(yi, h), _reflect(yi + 1, h), _reflect(yi + 2, h)
    for c in range(n_channels):
        n = b * n_channels + c
        r0 = wx0 * moving[n, ym, xm] + wx1 * moving[n, ym, xa] + wx2 * moving[n, ym, xb]
        r1 = wx0 * moving[n, ya, xm] + wx1 * moving[n, ya, xa] + wx2 * moving[n, ya, xb]
        r2 = wx0 * moving[n, yb, xm] + wx1 * moving[n, yb, xa] + wx2 * moving[n, yb, xb]
        r3 = wx0 * moving[n, yc, xm] + wx1 * moving[n, yc, xa] + wx2 * moving[n, yc, xb]
        r0 += wx3 * moving[n, ym, xc]
        r1 += wx3 * moving[n, ya, xc]
        r2 += wx3 * moving[n, yb, xc]
        r3 += wx3 * moving[n, yc, xc]
        out[n, i, j] = wy0 * r0 + wy1 * r1 + wy2 * r2 + wy3 * r3


@cuda.jit(device=True, inline=True)
def _fx(f, n, i, j, w, sx):
    """Central x-difference with one-pixel symmetric padding."""
    return (f[n, i, _clamp(j + 1, w)] - f[n, i, _clamp(j - 1, w)]) * sx


@cuda.jit(device=True, inline=True)
def _fy(f, n, i, j, h, sy):
    """Central y-difference with one-pixel symmetric padding."""
    return (f[n, _clamp(i + 1, h), j] - f[n, _clamp(i - 1, h), j]) * sy


@cuda.jit(device=True, inline=True)
def _fxx(f, n, i, j, w, sxx):
    """Compact second x-difference ``(f[j-1] - 2 f[j] + f[j+1]) / h^2``, symmetric padding."""
    return (f[n, i, _clamp(j - 1, w)] - 2.0 * f[n, i, j] + f[n, i, _clamp(j + 1, w)]) * sxx


@cuda.jit(device=True, inline=True)
def _fyy(f, n, i, j, h, syy):
    """Compact second y-difference, symmetric padding."""
    return (f[n, _clamp(i - 1, h), j] - 2.0 * f[n, i, j] + f[n, _clamp(i + 1, h), j]) * syy


@cuda.jit(device=True, inline=True)
def _fxy(f, n, i, j, h, w, sx, sy):
    """``d_y f_x`` (both central differences with symmetric padding)."""
    return (_fx(f, n, _clamp(i + 1, h), j, w, sx) - _fx(f, n, _clamp(i - 1, h), j, w, sx)) * sy


@cuda.jit(cache=True)
def derivatives(img, out, sx, sy, sxx, syy):
    """``out`` (5, N, h, w) = f_x, f_y, f_xx, f_yy, f_xy of ``img`` (N, h, w) on every pixel
    (``sx = 1 / (2 h_x)``, ``sy = 1 / (2 h_y)``, ``sxx = 1 / h_x^2``, ``syy = 1 / h_y^2``)."""
    j, i, n = cuda.grid(3)
    n_img, h, w = img.shape
    if j >= w or i >= h or n >= n_img:
        return
    out[0, n, i, j] = _fx(img, n, i, j, w, sx)
    out[1, n, i, j] = _fy(img, n, i, j, h, sy)
    out[2, n, i, j] = _fxx(img, n, i, j, w, sxx)
    out[3, n, i, j] = _fyy(img, n, i, j, h, syy)
    out[4, n, i, j] = _fxy(img, n, i, j, h, w, sx, sy)


@cuda.jit(cache=True)
def motion_tensor(ref, ref_d, warped, flow, J, hx, hy, sx, sy, sxx, syy, gradient_constancy):
    """Motion tensors ``J`` (B, C, 6, h + 2, w + 2) of the warped frames ``warped`` (B*C, h, w)
    against the reference ``ref`` (C, h, w) with derivatives ``ref_d`` (5, C, h, w), for every
    frame pixel; the ghost ring is 0, and so are the pixels where the warp sample (``flow``
    (2, B, h, w), spacings ``hx``, ``hy``) of the pixel or of one of its 3x3 neighbours in the
    frame lies outside the moving level (nothing observed within the derivative stencils:
    :func:`pyflowreg.core.tensors.clear_unobserved`, the test of :func:`warp_level`).
    ``sx``, ``sy``, ``sxx``, ``syy`` as in :func:`derivatives`. Gradient constancy when
    ``gradient_constancy`` else gray value."""
    jp, ip, n = cuda.grid(3)
    n_b, n_c, _, hp, wp = J.shape
    if jp >= wp or ip >= hp or n >= n_b * n_c:
        return
    b = n // n_c
    c = n - b * n_c
    h = hp - 2
    w = wp - 2
    i = ip - 1
    j = jp - 1
    unobserved = ip == 0 or jp == 0 or ip == hp - 1 or jp == wp - 1
    if not unobserved:
        for di in range(max(i - 1, 0), min(i + 2, h)):
            for dj in range(max(j - 1, 0), min(j + 2, w)):
                y = di + flow[1, b, di, dj] / hy
                x = dj + flow[0, b, di, dj] / hx
                if y < 0.0 or y > h - 1 or x < 0.0 or x > w - 1:
                    unobserved = True
    if unobserved:
        for k in range(6):
            J[b, c, k, ip, jp] = ZERO
        return
    fx2 = _fx(warped, n, i, j, w, sx)
    fy2 = _fy(warped, n, i, j, h, sy)
    if gradient_constancy:
        fxx2 = _fxx(warped, n, i, j, w, sxx)
        fyy2 = _fyy(warped, n, i, j, h, syy)
        fxy2 = _fxy(warped, n, i, j, h, w, sx, sy)
        fxx = HALF * (ref_d[2, c, i, j] + fxx2)
        fyy = HALF * (ref_d[3, c, i, j] + fyy2)
        fxy = HALF * (ref_d[4, c, i, j] + fxy2)
        fxt = fx2 - ref_d[0, c, i, j]
        fyt = fy2 - ref_d[1, c, i, j]
        rx = ONE / (fxx * fxx + fxy * fxy + TENSOR_EPS)
        ry = ONE / (fxy * fxy + fyy * fyy + TENSOR_EPS)
        J[b, c, 0, ip, jp] = rx * fxx * fxx + ry * fxy * fxy
        J[b, c, 1, ip, jp] = rx * fxy * fxy + ry * fyy * fyy
        J[b, c, 2, ip, jp] = rx * fxt * fxt + ry * fyt * fyt
        J[b, c, 3, ip, jp] = rx * fxx * fxy + ry * fxy * fyy
        J[b, c, 4, ip, jp] = rx * fxx * fxt + ry * fxy * fyt
        J[b, c, 5, ip, jp] = rx * fxy * fxt + ry * fyy * fyt
    else:
        fx = HALF * (ref_d[0, c, i, j] + fx2)
        fy = HALF * (ref_d[1, c, i, j] + fy2)
        ft = warped[n, i, j] - ref[c, i, j]
        J[b, c, 0, ip, jp] = fx * fx
        J[b, c, 1, ip, jp] = fy * fy
        J[b, c, 2, ip, jp] = ft * ft
        J[b, c, 3, ip, jp] = fx * fy
        J[b, c, 4, ip, jp] = fx * ft
        J[b, c, 5, ip, jp] = fy * ft


# -- level solver -----------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def _refresh_pixel(UV, uv, A, J, wts, b, i, j, a_data, a_exp):
    """Lagged data weights ``A = sum_c w_c psi_c J_c`` at one grid pixel from its increments
    (``uv`` is the flow on entry on the frame: grid pixel (i, j) is its (i - 1, j - 1))."""
    du = UV[0, b, i, j] - uv[0, b, i - 1, j - 1]
    dv = UV[1, b, i, j] - uv[1, b, i - 1, j - 1]
    a11 = ZERO
    a22 = ZERO
    a12 = ZERO
    a13 = ZERO
    a23 = ZERO
    for c in range(J.shape[1]):
        j11 = J[b, c, 0, i, j]
        j22 = J[b, c, 1, i, j]
        j12 = J[b, c, 3, i, j]
        j13 = J[b, c, 4, i, j]
        j23 = J[b, c, 5, i, j]
        s2 = j11 * du * du + j22 * dv * dv + TWO * (j12 * du * dv + j13 * du + j23 * dv)
        s2 += J[b, c, 2, i, j]
        if s2 < ZERO:
            s2 = ZERO
        psi = wts[c, i, j] * a_data * math.pow(s2 + EPS, a_exp)
        a11 += psi * j11
        a22 += psi * j22
        a12 += psi * j12
        a13 += psi * j13
        a23 += psi * j23
    A[0, b, i, j] = a11
    A[1, b, i, j] = a22
    A[2, b, i, j] = a12
    A[3, b, i, j] = a13
    A[4, b, i, j] = a23


@cuda.jit(device=True, inline=True)
def _smooth_pixel(UV, psi, b, i, j, h, w, sx, sy, a_smooth, a_exp):
    """Robust smoothness weight from central differences of the total flow (Neumann ghosts)."""
    jl = j - 1 if j > 1 else 1
    jr = j + 1 if j < w - 2 else w - 2
    iu = i - 1 if i > 1 else 1
    id_ = i + 1 if i < h - 2 else h - 2
    ux = (UV[0, b, i, jr] - UV[0, b, i, jl]) * sx
    uy = (UV[0, b, id_, j] - UV[0, b, iu, j]) * sy
    vx = (UV[1, b, i, jr] - UV[1, b, i, jl]) * sx
    vy = (UV[1, b, id_, j] - UV[1, b, iu, j]) * sy
    psi[b, i, j] = a_smooth * math.pow(ux * ux + uy * uy + vx * vx + vy * vy + EPS, a_exp)


@cuda.jit(device=True, inline=True)
def _relax_pixel(UV, uv, A, psi, b, i, j, h, w, robust, cx, cy, omega):
    """Over-relaxed Gauss-Seidel update of U then V at one interior pixel.

    Neighbour indices are clamped to the interior, which reads exactly what the Neumann copy
    into the ghost frame before each half-sweep would hold."""
    jl = j - 1 if j > 1 else 1
    jr = j + 1 if j < w - 2 else w - 2
    iu = i - 1 if i > 1 else 1
    id_ = i + 1 if i < h - 2 else h - 2
    if robust:
        p = psi[b, i, j]
        cl = HALF * (p + psi[b, i, jl]) * cx
        cr = HALF * (p + psi[b, i, jr]) * cx
        cu = HALF * (p + psi[b, iu, j]) * cy
        cd = HALF * (p + psi[b, id_, j]) * cy
    else:
        cl = cx
        cr = cx
        cu = cy
        cd = cy
    s = cl + cr + cu + cd
    a11 = A[0, b, i, j]
    a22 = A[1, b, i, j]
    a12 = A[2, b, i, j]
    u0 = uv[0, b, i - 1, j - 1]
    v0 = uv[1, b, i - 1, j - 1]
    up = UV[0, b, i, j]
    vp = UV[1, b, i, j]
    su = cl * UV[0, b, i, jl] + cr * UV[0, b, i, jr] + cu * UV[0, b, iu, j] + cd * UV[0, b, id_, j]
    u_star = (su + a11 * u0 - a12 * (vp - v0) - A[3, b, i, j]) / (s + a11)
    up = (ONE - omega) * up + omega * u_star
    UV[0, b, i, j] = up
    sv = cl * UV[1, b, i, jl] + cr * UV[1, b, i, jr] + cu * UV[1, b, iu, j] + cd * UV[1, b, id_, j]
    v_star = (sv + a22 * v0 - a12 * (up - u0) - A[4, b, i, j]) / (s + a22)
    UV[1, b, i, j] = (ONE - omega) * vp + omega * v_star


@cuda.jit(device=True, inline=True)
def _pair_step(UV, uv, A, J, wts, psi, b, i, k, h, w, colour, refresh, robust, coef):
    """Work of one thread in a half-sweep: the pixel pair ``(i, 1 + 2k)``, ``(i, 2 + 2k)``.

    With ``refresh`` (red half-sweep of a refresh sweep) the lagged data weights of both pixels
    are recomputed first; then the pixel of ``colour`` is relaxed."""
    cx, cy, omega, a_data, a_exp = coef[0], coef[1], coef[2], coef[3], coef[4]
    j1 = 1 + 2 * k
    j2 = j1 + 1
    if refresh:
        _refresh_pixel(UV, uv, A, J, wts, b, i, j1, a_data, a_exp)
        if j2 < w - 1:
            _refresh_pixel(UV, uv, A, J, wts, b, i, j2, a_data, a_exp)
    j = j1 if (i + j1) % 2 == colour else j2
    if j < w - 1:
        _relax_pixel(UV, uv, A, psi, b, i, j, h, w, robust, cx, cy, omega)


@cuda.jit(cache=True)
def sor_half(UV, uv, A, J, wts, psi, colour, refresh, robust, coef):
    """One half-sweep (pixels with ``(i + j) % 2 == colour``) over all frames.

    Grid ``(pairs, interior rows, frames)``. ``UV`` (2, B, h, w) is the total flow on the grid
    (frame plus ghost ring), updated in place; ``uv`` (2, B, h - 2, w - 2) the flow on entry on
    the frame, ``psi`` (B, h, w) the robust smoothness weights (read if ``robust``),
    ``coef`` (float32) = cx, cy, omega, a_data, a_data - 1."""
    k, r, b = cuda.grid(3)
    _, n_b, h, w = UV.shape
    i = r + 1
    if k < (w - 1) // 2 and i < h - 1 and b < n_b:
        _pair_step(UV, uv, A, J, wts, psi, b, i, k, h, w, colour, refresh, robust, coef)


@cuda.jit(cache=True)
def smooth_weights(UV, psi, sx, sy, a_smooth, a_exp):
    """Robust smoothness weights ``psi`` (B, h, w) on interior pixels."""
    j, i, b = cuda.grid(3)
    _, n_b, h, w = UV.shape
    if 0 < j < w - 1 and 0 < i < h - 1 and b < n_b:
        _smooth_pixel(UV, psi, b, i, j, h, w, sx, sy, a_smooth, a_exp)


@cuda.jit(cache=True)
def sor_level_block(UV, uv, A, J, wts, psi, iterations, update_lag, robust, coef, scoef):
    """The whole solve of one small level, one thread block per frame.

    Same arithmetic as :func:`sor_half` (+ :func:`smooth_weights`), with block barriers between
    the phases instead of kernel launches. ``scoef`` = sx, sy, a_smooth, a_smooth - 1."""
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    h = UV.shape[2]
    w = UV.shape[3]
    n_pairs = (w - 1) // 2
    n_items = (h - 2) * n_pairs
    n_inner = (h - 2) * (w - 2)
    for it in range(iterations):
        refresh = it % update_lag == 0
        if refresh and robust:
            for p in range(tid, n_inner, nt):
                i = 1 + p // (w - 2)
                j = 1 + p % (w - 2)
                _smooth_pixel(UV, psi, b, i, j, h, w, scoef[0], scoef[1], scoef[2], scoef[3])
            cuda.syncthreads()
        for colour in range(2):
            for item in range(tid, n_items, nt):
                i = 1 + item // n_pairs
                k = item % n_pairs
                _pair_step(
                    UV, uv, A, J, wts, psi, b, i, k, h, w, colour, refresh and colour == 0,
                    robust, coef,
                )  # fmt: skip
            cuda.syncthreads()


@cuda.jit(cache=True)
def pad_flow(flow, UV):
    """``UV`` (2, B, h + 2, w + 2) = ``flow`` (2, B, h, w) with a ring repeating its border (the
    solver's start, :func:`pyflowreg.core.flow.pad_edge`)."""
    jp, ip, n = cuda.grid(3)
    _, n_b, hp, wp = UV.shape
    if jp < wp and ip < hp and n < 2 * n_b:
        c = n // n_b
        b = n - c * n_b
        UV[c, b, ip, jp] = flow[c, b, _clamp(ip - 1, hp - 2), _clamp(jp - 1, wp - 2)]


@cuda.jit(cache=True)
def increments(UV, uv, du):
    """``du = UV - uv`` (2, B, h, w) on the frame (the interior of the solver's grid ``UV``)."""
    j, i, n = cuda.grid(3)
    _, n_b, h, w = du.shape
    if j < w and i < h and n < 2 * n_b:
        c = n // n_b
        b = n - c * n_b
        du[c, b, i, j] = UV[c, b, i + 1, j + 1] - uv[c, b, i, j]


@cuda.jit(cache=True)
def median_update(du, uv, use_median):
    """``uv += median5x5(du)`` (symmetric borders), or ``uv += du`` without ``use_median``."""
    j, i, n = cuda.grid(3)
    _, n_b, h, w = du.shape
    if j >= w or i >= h or n >= 2 * n_b:
        return
    c = n // n_b
    b = n - c * n_b
    if not use_median:
        uv[c, b, i, j] += du[c, b, i, j]
        return
    buf = cuda.local.array(25, float32)
    m = 0
    for di in range(-2, 3):
        ii = _mirror(i + di, h)
        for dj in range(-2, 3):
            buf[m] = du[c, b, ii, _mirror(j + dj, w)]
            m += 1
    for t in range(13):  # partial selection sort: buf[12] becomes the 13th smallest
        best = t
        for s in range(t + 1, 25):
            if buf[s] < buf[best]:
                best = s
        tmp = buf[t]
        buf[t] = buf[best]
        buf[best] = tmp
    uv[c, b, i, j] += buf[12]
