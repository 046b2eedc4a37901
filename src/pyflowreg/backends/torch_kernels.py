"""PyTorch kernels of the flow engine, batched over frames (see docs/numerics.md).

Images are ``(T, C, h, w)`` tensors and flow components ``(T, h, w)``: the frame axis ``T`` is a
tensor dimension, so one call solves a whole batch on the device. Every function mirrors the
CPU reference in :mod:`pyflowreg.core` (same formulas, same borders, same red-black order); only
the floating-point summation order differs.

Linear resampling (a pyramid level's fused anti-aliasing blur + cubic resize from the full frame,
flow prolongation, final upsampling) is a dense matrix per axis built once in float64 and applied
with ``matmul``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.pyramid import FLOW_KERNEL, cubic_taps, smooth_taps
from ..core.warp import level_coefficients

EPS = 1e-5  # Charbonnier epsilon (ALGORITHM.md)
GRAD_EPS = 1e-6  # gradient-constancy normalisation


# ----------------------------------------------------------------------------- resampling


def resize_matrix(n_src: int, n_dst: int) -> np.ndarray:
    """``(n_dst, n_src)`` float64 matrix of the core's field resize (:func:`~pyflowreg.core.
    pyramid.resize`: centre-aligned cubic B-spline, source indices clamped; taps that hit the
    same index add up; the identity for an axis that keeps its size, which the core skips)."""
    if n_src == n_dst:
        return np.eye(n_src)
    idx, wts = cubic_taps(n_src, n_dst, "float64", FLOW_KERNEL)
    mat = np.zeros((n_dst, n_src))
    np.add.at(mat, (np.repeat(np.arange(n_dst), 4), idx.ravel()), wts.ravel())
    return mat


def smooth_matrix(n_src: int, n_dst: int, sigma: float) -> np.ndarray:
    """``(n_dst, n_src)`` float64 matrix of one pyramid axis: Gaussian blur of ``sigma`` source
    px (symmetric borders) fused with the cubic resize, from the core's
    :func:`~pyflowreg.core.pyramid.smooth_taps` tables (exactly what
    :func:`~pyflowreg.core.pyramid.downsample` applies along that axis)."""
    start, wts = smooth_taps(n_src, n_dst, float(sigma))
    m = wts.shape[1]
    mat = np.zeros((n_dst, n_src))
    rows = np.repeat(np.arange(n_dst), m)
    mat[rows, (start[:, None] + np.arange(m)).ravel()] = wts.ravel()
    return mat


def spline_matrix(n: int) -> np.ndarray:
    """``(n, n)`` float64 matrix of the cubic B-spline prefilter along one axis (mirror
    boundaries): column ``k`` is :func:`~pyflowreg.core.warp.level_coefficients` of the unit
    line ``e_k`` (the prefilter is linear and separable)."""
    lines = np.eye(n).reshape(n, 1, n)  # n one-row "channels"
    return np.ascontiguousarray(level_coefficients(lines)[:, 0, :].T)


def apply_axes(x: torch.Tensor, my: torch.Tensor | None, mx_t: torch.Tensor | None) -> torch.Tensor:
    """Resample the last two axes of ``x`` (..., h, w): ``my @ x @ mx_t`` (None = unchanged)."""
    if my is not None:
        x = torch.matmul(my, x)
    if mx_t is not None:
        x = torch.matmul(x, mx_t)
    return x


# ----------------------------------------------------------------------------- warp


def bspline_weights(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cubic B-spline weights of the taps at offsets -1, 0, 1, 2 for fractions ``t`` in [0, 1)
    (:func:`pyflowreg.core.warp.bspline_weights`)."""
    s = 1.0 - t
    t2 = t * t
    t3 = t2 * t
    return (
        s * s * s / 6.0,
        (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
        (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
        t3 / 6.0,
    )


def reflect_(i: torch.Tensor, n: int) -> torch.Tensor:
    """Whole-sample symmetric index in place (-1 -> 1, n -> n - 2; :func:`~pyflowreg.core.warp.
    reflect`), the extension the spline coefficients assume."""
    if n == 1:
        return i.zero_()
    period = 2 * n - 2
    i.remainder_(period)
    return torch.where(i >= n, period - i, i)


def warp_level(
    coefficients: torch.Tensor,
    reference: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    hx: float,
    hy: float,
    return_outside: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Backward warp of a level image by the level flow ``u``, ``v`` (T, h, w).

    ``coefficients`` (T, C, h, w) are the moving level's cubic B-spline coefficients (see
    :func:`spline_matrix`); samples at ``(y + v / hy, x + u / hx)`` (level pixels, flow in
    full-resolution pixels) interpolate them with the cubic B-spline's 4x4 taps, indices reflected
    (:func:`pyflowreg.core.warp.warp_level`); positions outside ``[0, n-1]`` on either axis take
    the ``reference`` (1 or T, C, h, w) value. With ``return_outside`` also returns the mask
    (T, h, w) of those positions (see :func:`clear_unobserved_`).
    """
    t, c, h, w = coefficients.shape
    ys = torch.arange(h, device=u.device, dtype=u.dtype).view(1, h, 1)
    xs = torch.arange(w, device=u.device, dtype=u.dtype).view(1, 1, w)
    y = v / hy + ys
    x = u / hx + xs
    outside = (y < 0) | (y > h - 1) | (x < 0) | (x > w - 1) | ~torch.isfinite(y + x)
    # outside samples are replaced below; clamp them so the indices stay small and valid
    y = torch.nan_to_num(y).clamp_(-1.0, float(h))
    x = torch.nan_to_num(x).clamp_(-1.0, float(w))
    y0 = torch.floor(y)
    x0 = torch.floor(x)
    wy = bspline_weights(y - y0)
    wx = bspline_weights(x - x0)
    yi = y0.long()
    xi = x0.long()
    rows = [(reflect_(yi + (k - 1), h) * w).view(t, 1, h * w) for k in range(4)]
    cols = [reflect_(xi + (k - 1), w).view(t, 1, h * w) for k in range(4)]
    flat = coefficients.reshape(t, c, h * w)
    out = None
    for a in range(4):
        acc = None
        for b in range(4):
            sample = torch.gather(flat, 2, (rows[a] + cols[b]).expand(t, c, h * w))
            term = sample.mul_(wx[b].view(t, 1, h * w))
            acc = term if acc is None else acc.add_(term)
        acc.mul_(wy[a].view(t, 1, h * w))
        out = acc if out is None else out.add_(acc)
    out = out.view(t, c, h, w)
    warped = torch.where(outside.unsqueeze(1), reference, out)
    return (warped, outside) if return_outside else warped


# ----------------------------------------------------------------------------- tensors


def diff_x(f: torch.Tensor, h: float) -> torch.Tensor:
    """Central difference along the last axis, symmetric one-pixel padding, spacing ``h``."""
    fp = torch.cat((f[..., :1], f, f[..., -1:]), dim=-1)
    return (fp[..., 2:] - fp[..., :-2]).mul_(0.5 / h)


def diff_y(f: torch.Tensor, h: float) -> torch.Tensor:
    """Central difference along the second-last axis, symmetric padding, spacing ``h``."""
    fp = torch.cat((f[..., :1, :], f, f[..., -1:, :]), dim=-2)
    return (fp[..., 2:, :] - fp[..., :-2, :]).mul_(0.5 / h)


def diff_xx(f: torch.Tensor, h: float) -> torch.Tensor:
    """Compact second difference ``(f[j-1] - 2 f[j] + f[j+1]) / h^2`` along the last axis
    (symmetric one-pixel padding)."""
    fp = torch.cat((f[..., :1], f, f[..., -1:]), dim=-1)
    return (fp[..., :-2] - 2.0 * f + fp[..., 2:]).mul_(1.0 / (h * h))


def diff_yy(f: torch.Tensor, h: float) -> torch.Tensor:
    """Compact second difference along the second-last axis (symmetric padding)."""
    fp = torch.cat((f[..., :1, :], f, f[..., -1:, :]), dim=-2)
    return (fp[..., :-2, :] - 2.0 * f + fp[..., 2:, :]).mul_(1.0 / (h * h))


def derivatives(f: torch.Tensor, hx: float, hy: float) -> tuple[torch.Tensor, ...]:
    """``(f_x, f_y, f_xx, f_yy, f_xy)`` of ``f`` (..., h, w): central first differences, compact
    3-point second differences, ``f_xy = d_y f_x``."""
    fx = diff_x(f, hx)
    return fx, diff_y(f, hy), diff_xx(f, hx), diff_yy(f, hy), diff_y(fx, hy)


def motion_tensor(
    ref: torch.Tensor,
    ref_d: tuple[torch.Tensor, ...],
    warped: torch.Tensor,
    warped_d: tuple[torch.Tensor, ...],
    constancy: str,
) -> torch.Tensor:
    """Motion tensors ``(6, T, C, h, w)`` of every frame pixel: J11, J22, J33, J12, J13, J23.

    These are the interior of the core's ``(C, 6, h + 2, w + 2)`` tensors: the solver works on the
    frame plus a ghost ring where J is zero, so the ring is never stored.
    """
    if constancy == "gc":
        fxx = (ref_d[2] + warped_d[2]).mul_(0.5)
        fyy = (ref_d[3] + warped_d[3]).mul_(0.5)
        fxy = (ref_d[4] + warped_d[4]).mul_(0.5)
        fxt = warped_d[0] - ref_d[0]
        fyt = warped_d[1] - ref_d[1]
        rx = (fxx * fxx + fxy * fxy + GRAD_EPS).reciprocal_()
        ry = (fxy * fxy + fyy * fyy + GRAD_EPS).reciprocal_()
        a, b = rx * fxx, ry * fxy  # row 1 of the constraint pair, weighted
        c, d = rx * fxy, ry * fyy
        return torch.stack(
            (
                a * fxx + b * fxy,
                c * fxy + d * fyy,
                rx * fxt * fxt + ry * fyt * fyt,
                a * fxy + b * fyy,
                a * fxt + b * fyt,
                c * fxt + d * fyt,
            )
        )
    fx = (ref_d[0] + warped_d[0]).mul_(0.5)
    fy = (ref_d[1] + warped_d[1]).mul_(0.5)
    ft = warped - ref
    return torch.stack((fx * fx, fy * fy, ft * ft, fx * fy, fx * ft, fy * ft))


def clear_unobserved_(J: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    """In place: zero the motion tensors ``J`` (6, T, C, h, w) of pixels whose data term is not
    observed, as :func:`pyflowreg.core.tensors.clear_unobserved`: the warp sample of the pixel or
    of one of its 3x3 neighbours (within the frame; the reach of the derivative stencils) lies
    outside the moving level (``outside`` (T, h, w) from :func:`warp_level`). The smoothness
    term alone extends the flow there."""
    hit = torch.nn.functional.max_pool2d(
        outside.unsqueeze(1).to(J.dtype), kernel_size=3, stride=1, padding=1
    )  # (T, 1, h, w): the 3x3 dilation, padding never hits
    return J.masked_fill_(hit > 0, 0.0)
