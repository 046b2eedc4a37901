"""PyTorch kernels of the flow engine, batched over frames (see docs/numerics.md).

Images are ``(T, C, h, w)`` tensors and flow components ``(T, h, w)``: the frame axis ``T`` is a
tensor dimension, so one call solves a whole batch on the device. Every function mirrors the
CPU reference in :mod:`pyflowreg.core` (same formulas, same borders, same red-black order); only
the floating-point summation order differs.

Linear resampling (anti-aliasing blur + cubic resize, flow prolongation, final upsampling) is a
dense matrix per axis built once in float64 and applied with ``matmul``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.pyramid import cubic_taps, gaussian_kernel

EPS = 1e-5  # Charbonnier epsilon (ALGORITHM.md)
GRAD_EPS = 1e-6  # gradient-constancy normalisation


# ----------------------------------------------------------------------------- resampling


def mirror_index(i: np.ndarray, n: int) -> np.ndarray:
    """Symmetric (edge-including) border index: -1 -> 0, -2 -> 1, n -> n-1, at any distance."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * n
    i = np.mod(i, period)
    return np.where(i >= n, period - 1 - i, i)


def resize_matrix(n_src: int, n_dst: int) -> np.ndarray:
    """``(n_dst, n_src)`` float64 matrix of the centre-aligned Keys cubic resize.

    Source indices are clamped (replicate border); taps that hit the same index add up.
    """
    idx, wts = cubic_taps(n_src, n_dst)
    mat = np.zeros((n_dst, n_src))
    np.add.at(mat, (np.repeat(np.arange(n_dst), 4), idx.ravel()), wts.ravel())
    return mat


def blur_matrix(n: int, sigma: float) -> np.ndarray:
    """``(n, n)`` float64 matrix of the normalised Gaussian blur with symmetric borders."""
    taps = gaussian_kernel(sigma)
    r = taps.shape[0] // 2
    rows = np.repeat(np.arange(n), taps.shape[0])
    src = mirror_index(rows + np.tile(np.arange(taps.shape[0]) - r, n), n)
    mat = np.zeros((n, n))
    np.add.at(mat, (rows, src), np.tile(taps, n))
    return mat


def cascade_matrix(n_src: int, n_dst: int, first: bool) -> np.ndarray:
    """One cascade step along an axis: anti-aliasing blur, then cubic resize.

    ``first`` is True when the source is still at full resolution along this axis; the blur
    width follows :func:`pyflowreg.core.pyramid.downsample`.
    """
    ratio = n_src / n_dst
    sigma = 0.6 * ratio if first else 0.6 * math.sqrt(max(ratio * ratio - 1.0, 0.0))
    return resize_matrix(n_src, n_dst) @ blur_matrix(n_src, sigma)


def apply_axes(x: torch.Tensor, my: torch.Tensor | None, mx_t: torch.Tensor | None) -> torch.Tensor:
    """Resample the last two axes of ``x`` (..., h, w): ``my @ x @ mx_t`` (None = unchanged)."""
    if my is not None:
        x = torch.matmul(my, x)
    if mx_t is not None:
        x = torch.matmul(x, mx_t)
    return x


# ----------------------------------------------------------------------------- warp


def keys_weights(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Keys (a = -0.5) weights of the taps at offsets -1, 0, 1, 2 for fractions ``t`` in [0, 1)."""
    t2 = t * t
    t3 = t2 * t
    return (
        -0.5 * t3 + t2 - 0.5 * t,
        1.5 * t3 - 2.5 * t2 + 1.0,
        -1.5 * t3 + 2.0 * t2 + 0.5 * t,
        0.5 * t3 - 0.5 * t2,
    )


def warp_level(
    moving: torch.Tensor,
    reference: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    hx: float,
    hy: float,
) -> torch.Tensor:
    """Bicubic backward warp of ``moving`` (T, C, h, w) by the level flow ``u``, ``v`` (T, h, w).

    Samples at ``(y + v / hy, x + u / hx)`` (level pixels, flow in full-resolution pixels) with
    4x4 Keys taps and clamped indices; positions outside ``[0, n-1]`` on either axis take the
    ``reference`` (1 or T, C, h, w) value.
    """
    t, c, h, w = moving.shape
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
    wy = keys_weights(y - y0)
    wx = keys_weights(x - x0)
    yi = y0.long()
    xi = x0.long()
    rows = [((yi + (k - 1)).clamp_(0, h - 1) * w).view(t, 1, h * w) for k in range(4)]
    cols = [(xi + (k - 1)).clamp_(0, w - 1).view(t, 1, h * w) for k in range(4)]
    flat = moving.reshape(t, c, h * w)
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
    return torch.where(outside.unsqueeze(1), reference, out)


# ----------------------------------------------------------------------------- tensors


def diff_x(f: torch.Tensor, h: float) -> torch.Tensor:
    """Central difference along the last axis, symmetric one-pixel padding, spacing ``h``."""
    fp = torch.cat((f[..., :1], f, f[..., -1:]), dim=-1)
    return (fp[..., 2:] - fp[..., :-2]).mul_(0.5 / h)


def diff_y(f: torch.Tensor, h: float) -> torch.Tensor:
    """Central difference along the second-last axis, symmetric padding, spacing ``h``."""
    fp = torch.cat((f[..., :1, :], f, f[..., -1:, :]), dim=-2)
    return (fp[..., 2:, :] - fp[..., :-2, :]).mul_(0.5 / h)


def derivatives(f: torch.Tensor, hx: float, hy: float) -> tuple[torch.Tensor, ...]:
    """``(f_x, f_y, f_xx, f_yy, f_xy)`` of ``f`` (..., h, w) with ``f_xy = d_y f_x``."""
    fx = diff_x(f, hx)
    fy = diff_y(f, hy)
    return fx, fy, diff_x(fx, hx), diff_y(fy, hy), diff_y(fx, hy)


def motion_tensor(
    ref: torch.Tensor,
    ref_d: tuple[torch.Tensor, ...],
    warped: torch.Tensor,
    warped_d: tuple[torch.Tensor, ...],
    constancy: str,
) -> torch.Tensor:
    """Interior motion tensors ``(6, T, C, h-2, w-2)``: J11, J22, J33, J12, J13, J23.

    The outer one-pixel frame (zero by definition) is cut off; the solver works on interiors.
    """
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    if constancy == "gc":
        fxx = (ref_d[2][inner] + warped_d[2][inner]) * 0.5
        fyy = (ref_d[3][inner] + warped_d[3][inner]) * 0.5
        fxy = (ref_d[4][inner] + warped_d[4][inner]) * 0.5
        fxt = warped_d[0][inner] - ref_d[0][inner]
        fyt = warped_d[1][inner] - ref_d[1][inner]
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
    fx = (ref_d[0][inner] + warped_d[0][inner]) * 0.5
    fy = (ref_d[1][inner] + warped_d[1][inner]) * 0.5
    ft = warped[inner] - ref[inner]
    return torch.stack((fx * fx, fy * fy, ft * ft, fx * fy, fx * ft, fy * ft))
