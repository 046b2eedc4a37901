"""Image derivatives and motion tensors (data term of ALGORITHM.md)."""

from __future__ import annotations

import numpy as np
from numba import njit

GC = 0  # gradient constancy
GRAY = 1  # gray-value constancy
CONSTANCY = {"gc": GC, "gray": GRAY}


@njit(cache=True, nogil=True)
def _dx(f, h):
    """Central difference along columns with symmetric one-pixel padding, spacing ``h``."""
    c, rows, cols = f.shape
    out = np.empty_like(f)
    s = 0.5 / h
    for ch in range(c):
        for i in range(rows):
            r = f[ch, i]
            if cols == 1:
                out[ch, i, 0] = 0.0
                continue
            out[ch, i, 0] = (r[1] - r[0]) * s
            for j in range(1, cols - 1):
                out[ch, i, j] = (r[j + 1] - r[j - 1]) * s
            out[ch, i, cols - 1] = (r[cols - 1] - r[cols - 2]) * s
    return out


@njit(cache=True, nogil=True)
def _dy(f, h):
    """Central difference along rows with symmetric one-pixel padding, spacing ``h``."""
    c, rows, cols = f.shape
    out = np.empty_like(f)
    s = 0.5 / h
    for ch in range(c):
        for i in range(rows):
            a = i + 1 if i + 1 < rows else rows - 1
            b = i - 1 if i > 0 else 0
            for j in range(cols):
                out[ch, i, j] = (f[ch, a, j] - f[ch, b, j]) * s
    return out


@njit(cache=True, nogil=True)
def _dxx(f, h):
    """Second difference ``(f[j-1] - 2 f[j] + f[j+1]) / h^2`` along columns (symmetric padding)."""
    c, rows, cols = f.shape
    out = np.empty_like(f)
    s = 1.0 / (h * h)
    for ch in range(c):
        for i in range(rows):
            r = f[ch, i]
            for j in range(cols):
                a = r[j - 1] if j > 0 else r[0]
                b = r[j + 1] if j + 1 < cols else r[cols - 1]
                out[ch, i, j] = (a - 2.0 * r[j] + b) * s
    return out


@njit(cache=True, nogil=True)
def _dyy(f, h):
    """Second difference ``(f[i-1] - 2 f[i] + f[i+1]) / h^2`` along rows (symmetric padding)."""
    c, rows, cols = f.shape
    out = np.empty_like(f)
    s = 1.0 / (h * h)
    for ch in range(c):
        for i in range(rows):
            a = i - 1 if i > 0 else 0
            b = i + 1 if i + 1 < rows else rows - 1
            for j in range(cols):
                out[ch, i, j] = (f[ch, a, j] - 2.0 * f[ch, i, j] + f[ch, b, j]) * s
    return out


@njit(cache=True, nogil=True)
def derivatives(f, hx, hy):
    """``(5, C, h, w)`` stack of ``f_x, f_y, f_xx, f_yy, f_xy`` of ``f`` (C, h, w).

    First derivatives are central differences; ``f_xx``, ``f_yy`` the compact second
    differences (3-point, not the central difference applied twice, whose 5-point stencil
    is blind to the highest frequencies); ``f_xy = d_y f_x``.
    """
    fx = _dx(f, hx)
    out = np.empty((5, *f.shape), f.dtype)
    out[0] = fx
    out[1] = _dy(f, hy)
    out[2] = _dxx(f, hx)
    out[3] = _dyy(f, hy)
    out[4] = _dy(fx, hy)
    return out


@njit(cache=True, nogil=True)
def motion_tensor(ref, ref_d, warped, warped_d, constancy):
    """Motion tensors ``(C, 6, h + 2, w + 2)``: J11, J22, J33, J12, J13, J23 per channel.

    ``ref_d`` and ``warped_d`` are the :func:`derivatives` stacks of the reference and of the
    warped moving image (C, h, w). Every frame pixel gets its tensor; the arrays carry the
    solver's one-pixel ghost ring around the frame, where J is zero.
    """
    c, h, w = ref.shape
    J = np.zeros((c, 6, h + 2, w + 2), ref.dtype)
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                if constancy == GC:
                    fxx = 0.5 * (ref_d[2, ch, i, j] + warped_d[2, ch, i, j])
                    fyy = 0.5 * (ref_d[3, ch, i, j] + warped_d[3, ch, i, j])
                    fxy = 0.5 * (ref_d[4, ch, i, j] + warped_d[4, ch, i, j])
                    fxt = warped_d[0, ch, i, j] - ref_d[0, ch, i, j]
                    fyt = warped_d[1, ch, i, j] - ref_d[1, ch, i, j]
                    rx = 1.0 / (fxx * fxx + fxy * fxy + 1e-6)
                    ry = 1.0 / (fxy * fxy + fyy * fyy + 1e-6)
                    J[ch, 0, i + 1, j + 1] = rx * fxx * fxx + ry * fxy * fxy
                    J[ch, 1, i + 1, j + 1] = rx * fxy * fxy + ry * fyy * fyy
                    J[ch, 2, i + 1, j + 1] = rx * fxt * fxt + ry * fyt * fyt
                    J[ch, 3, i + 1, j + 1] = rx * fxx * fxy + ry * fxy * fyy
                    J[ch, 4, i + 1, j + 1] = rx * fxx * fxt + ry * fxy * fyt
                    J[ch, 5, i + 1, j + 1] = rx * fxy * fxt + ry * fyy * fyt
                else:
                    fx = 0.5 * (ref_d[0, ch, i, j] + warped_d[0, ch, i, j])
                    fy = 0.5 * (ref_d[1, ch, i, j] + warped_d[1, ch, i, j])
                    ft = warped[ch, i, j] - ref[ch, i, j]
                    J[ch, 0, i + 1, j + 1] = fx * fx
                    J[ch, 1, i + 1, j + 1] = fy * fy
                    J[ch, 2, i + 1, j + 1] = ft * ft
                    J[ch, 3, i + 1, j + 1] = fx * fy
                    J[ch, 4, i + 1, j + 1] = fx * ft
                    J[ch, 5, i + 1, j + 1] = fy * ft
    return J


@njit(cache=True, nogil=True)
def clear_unobserved(J, u, v, hx, hy):
    """Zero the tensors (C, 6, h + 2, w + 2) of pixels whose data term is not observed.

    A pixel is unobserved when its sample ``(i + v / hy, j + u / hx)`` lies outside the moving
    level frame ``[0, h - 1] x [0, w - 1]`` (the test of :func:`~pyflowreg.core.warp.warp_level`)
    or when one of its 3 x 3 neighbours does: the warp fills such samples from the reference,
    and every derivative of the data term (first, second and mixed differences) reaches one pixel
    around. The filled values leave no residual, but their structure terms (J11, J22, J12) would
    still pull the increment to zero with full weight and pin the coarser level's flow where
    content entered the frame. Without a data term the smoothness term extends the flow from the
    observed interior instead.
    """
    h, w = u.shape
    outside = np.zeros((h, w), np.bool_)
    for i in range(h):
        for j in range(w):
            y = i + v[i, j] / hy
            x = j + u[i, j] / hx
            outside[i, j] = y < 0.0 or y > h - 1 or x < 0.0 or x > w - 1
    for i in range(h):
        for j in range(w):
            hit = False
            for di in range(max(i - 1, 0), min(i + 2, h)):
                for dj in range(max(j - 1, 0), min(j + 2, w)):
                    hit = hit or outside[di, dj]
            if hit:
                for ch in range(J.shape[0]):
                    for k in range(6):
                        J[ch, k, i + 1, j + 1] = 0.0
