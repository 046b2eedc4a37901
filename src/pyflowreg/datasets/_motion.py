"""Ground-truth motion of synthetic recordings: rigid drift with jumps, smooth non-rigid fields.

A displacement ``w = (u, v)`` follows the package convention (ALGORITHM.md): ``u`` along columns
(x), ``v`` along rows (y), in pixels, and the frame at time t satisfies
``frame(y + v(y, x), x + u(y, x)) = scene(y, x)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage as ndi

#: Number of cosine modes per axis of the non-rigid field (mode 0 along both axes is excluded).
N_MODES = 4

#: ``field(py, px) -> (u, v)``: a displacement evaluated at arbitrary points, in pixels.
FieldFunction = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def rigid_trajectory(
    rng: np.random.Generator, n_frames: int, max_rigid: float, jump_probability: float
) -> np.ndarray:
    """Rigid shift ``(u, v)`` of every frame, shape (n_frames, 2), float64, in pixels.

    A smooth random walk (AR(1) velocity, correlation 0.9 per frame) scaled to peak at 60 % of
    ``max_rigid``, plus jumps: each frame starts one with probability ``jump_probability``; a jump
    moves the field of view by 30-60 % of ``max_rigid`` at once and relaxes back with a time
    constant of 3-20 frames. The sum is scaled down if its magnitude would exceed ``max_rigid``.
    """
    if max_rigid == 0:
        return np.zeros((n_frames, 2))
    velocity = np.empty((n_frames, 2))
    velocity[0] = rng.standard_normal(2)
    innovations = rng.standard_normal((n_frames, 2))
    for t in range(1, n_frames):
        velocity[t] = 0.9 * velocity[t - 1] + innovations[t]
    drift = np.cumsum(velocity, axis=0) + 3.0 * rng.standard_normal(2)
    drift *= 0.6 * max_rigid / max(np.hypot(*drift.T).max(), 1e-12)

    t = np.arange(n_frames, dtype=float)
    jumps = np.zeros((n_frames, 2))
    for start in np.flatnonzero(rng.random(n_frames) < jump_probability):
        size = rng.uniform(0.3, 0.6) * max_rigid
        angle = rng.uniform(0, 2 * np.pi)
        tau = rng.uniform(3.0, 20.0)
        profile = np.where(t >= start, np.exp(-(t - start) / tau), 0.0)
        jumps += profile[:, None] * (size * np.array([np.cos(angle), np.sin(angle)]))
    total = drift + jumps
    peak = np.hypot(*total.T).max()
    if peak > max_rigid:
        total *= max_rigid / peak
    return total


#: Kinds of rigid motion :func:`rigid_motion` makes.
MOTIONS = ("jumps", "smooth", "drift", "shear")


def rigid_motion(
    rng: np.random.Generator,
    n_frames: int,
    max_rigid: float,
    jump_probability: float,
    motion: str = "jumps",
) -> tuple[np.ndarray, np.ndarray]:
    """Rigid shift of every frame's first row and its change down the frame, each (T, 2), px.

    ``motion`` is one of :data:`MOTIONS`:

    - ``"jumps"``: :func:`rigid_trajectory` (random walk plus sudden jumps);
    - ``"smooth"``: the same walk without jumps;
    - ``"drift"``: a slow straight drift over the whole recording (to ``max_rigid``) plus a small
      walk (10 %), as a sample sinks or the stage creeps;
    - ``"shear"``: raster-scan distortion. The tissue follows a fast oscillation (breathing or
      heartbeat, a period of 6-12 frames, 30 % of ``max_rigid``) on top of the walk, and each
      row is scanned a fraction ``y / H`` of a frame period later than the first, so a frame's
      rows see the trajectory from ``t`` to ``t + 1``: the shift grows linearly down the frame
      by ``slope[t] = position(t + 1) - position(t)``.

    The shift of row ``y`` of frame ``t`` is ``shift[t] + slope[t] * y / H``; its magnitude
    stays at most ``max_rigid``.
    """
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {list(MOTIONS)}, got {motion!r}")
    slope = np.zeros((n_frames, 2))
    if max_rigid == 0:
        return np.zeros((n_frames, 2)), slope
    if motion == "jumps":
        return rigid_trajectory(rng, n_frames, max_rigid, jump_probability), slope
    if motion == "smooth":
        return rigid_trajectory(rng, n_frames, max_rigid, 0.0), slope
    if motion == "drift":
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.linspace(0.0, 0.9 * max_rigid, n_frames)[:, None]
        walk = rigid_trajectory(rng, n_frames, 0.1 * max_rigid, 0.0)
        return ramp * np.array([np.cos(angle), np.sin(angle)]) + walk, slope
    walk = rigid_trajectory(rng, n_frames + 1, 0.6 * max_rigid, 0.0)
    t = np.arange(n_frames + 1, dtype=float)
    period = rng.uniform(6.0, 12.0)
    phase = rng.uniform(0, 2 * np.pi)
    direction = rng.standard_normal(2)
    direction /= np.hypot(*direction)
    oscillation = 0.3 * max_rigid * np.sin(2 * np.pi * t / period + phase)
    position = walk + oscillation[:, None] * direction
    peak = np.hypot(*position.T).max()
    if peak > max_rigid:  # the rows interpolate between t and t + 1: the bound holds for all
        position *= max_rigid / peak
    return position[:-1], np.diff(position, axis=0)


def _basis(coordinate: np.ndarray, length: int) -> np.ndarray:
    """Cosine modes ``cos(pi * i * (coordinate + 0.5) / length)``, shape (..., N_MODES)."""
    first = np.cos((np.asarray(coordinate, dtype=float) + 0.5) * (np.pi / length))
    basis = np.empty((*first.shape, N_MODES))
    basis[..., 0] = 1.0
    basis[..., 1] = first
    for i in range(2, N_MODES):  # Chebyshev recurrence: cos(i a) = 2 cos(a) cos((i-1) a) - ...
        basis[..., i] = 2.0 * first * basis[..., i - 1] - basis[..., i - 2]
    return basis


class NonrigidField(NamedTuple):
    """Smooth deformation ``n_t(y, x) = sum_ij A[t, c, i, j] cos_i(y) cos_j(x)``.

    Defined analytically everywhere (also outside the frame), so it can be evaluated exactly at
    the non-grid points of the inverse mapping.

    Attributes
    ----------
    coefficients : ndarray, shape (T, 2, N_MODES, N_MODES), float64
        ``A[t, c]`` for the components ``c = 0`` (u) and ``c = 1`` (v).
    shape : (int, int)
        Frame size ``(H, W)`` that the modes are scaled to.
    """

    coefficients: np.ndarray
    shape: tuple[int, int]

    def on_grid(self, t: int) -> np.ndarray:
        """Field of frame ``t`` on the pixel grid, shape (H, W, 2), float64."""
        rows, cols = self.shape
        by, bx = _basis(np.arange(rows), rows), _basis(np.arange(cols), cols)
        inner = np.einsum("cij,xj->cix", self.coefficients[t], bx)
        return np.einsum("yi,cix->yxc", by, inner)

    def total_on_grid(self, t: int, shift: np.ndarray, out: np.ndarray) -> None:
        """Write field + rigid ``shift`` (u, v) of frame ``t`` into ``out`` (H, W, 2), float32."""
        rows, cols = self.shape
        by, bx = _basis(np.arange(rows), rows), _basis(np.arange(cols), cols)
        inner = np.einsum("cij,xj->cix", self.coefficients[t], bx)
        out[...] = np.einsum("yi,cix->yxc", by, inner)
        out += shift.astype(np.float32)

    def at(self, t: int, py: np.ndarray, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(u, v)`` of frame ``t`` at the points ``(py, px)`` (any equal shapes), in pixels."""
        by, bx = _basis(py, self.shape[0]), _basis(px, self.shape[1])
        u, v = (np.einsum("...i,...i->...", bx @ a.T, by) for a in self.coefficients[t])
        return u, v

    def gradient_bound(self, t: int) -> float:
        """Upper bound of the Frobenius norm of the Jacobian of frame ``t``'s field."""
        rows, cols = self.shape
        modes = np.pi * np.arange(N_MODES)
        magnitude = np.abs(self.coefficients[t])
        d_dy = (magnitude * (modes / rows)[:, None]).sum(axis=(1, 2))
        d_dx = (magnitude * (modes / cols)[None, :]).sum(axis=(1, 2))
        return float(np.sqrt((d_dy**2 + d_dx**2).sum()))


def nonrigid_field(
    rng: np.random.Generator,
    n_frames: int,
    shape: tuple[int, int],
    amplitude: float,
    *,
    time_scale: float = 20.0,
    max_gradient: float = 0.5,
) -> NonrigidField:
    """Random low-frequency deformation that varies smoothly over time.

    Mode ``(i, j)`` has weight ``1 / (i**2 + j**2)``; every coefficient follows Gaussian-filtered
    white noise over time (``time_scale`` frames). The field is scaled so that its largest
    magnitude over all frames and pixels is ``amplitude``, or less where needed to keep the
    Jacobian norm at most ``max_gradient`` (which keeps the deformation smooth and invertible;
    this matters only for small frames).
    """
    i, j = np.meshgrid(np.arange(N_MODES), np.arange(N_MODES), indexing="ij")
    weight = 1.0 / np.maximum(i**2 + j**2, 1)
    weight[0, 0] = 0.0
    pad = int(3 * time_scale)
    noise = rng.standard_normal((n_frames + 2 * pad, 2, N_MODES, N_MODES))
    coefficients = ndi.gaussian_filter1d(noise, time_scale, axis=0)[pad : pad + n_frames] * weight
    field = NonrigidField(coefficients, shape)
    if amplitude == 0:
        coefficients[:] = 0.0
        return field
    peak = max(np.hypot(*field.on_grid(t).transpose(2, 0, 1)).max() for t in range(n_frames))
    scale = amplitude / max(peak, 1e-12)
    steepest = scale * max(field.gradient_bound(t) for t in range(n_frames))
    if steepest > max_gradient:
        scale *= max_gradient / steepest
    coefficients *= scale
    return field


def solve_source(
    qy: np.ndarray,
    qx: np.ndarray,
    field: FieldFunction,
    *,
    tol: float = 1e-6,
    max_iter: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """Points ``p`` with ``p + w(p) = q``, by the fixed-point iteration ``p <- q - w(p)``.

    Converges for fields whose Jacobian norm stays below 1. ``tol`` is the largest change of any
    point in the last iteration, in pixels.

    Raises
    ------
    ValueError
        If the iteration does not converge within ``max_iter`` steps (``w`` is not invertible).
    """
    u, v = field(qy, qx)
    py, px = qy - v, qx - u
    change = np.inf
    for _ in range(max_iter):
        u, v = field(py, px)
        new_y, new_x = qy - v, qx - u
        change = max(float(np.abs(new_y - py).max()), float(np.abs(new_x - px).max()))
        py, px = new_y, new_x
        if change <= tol:
            return py, px
    raise ValueError(
        f"w is not invertible: p + w(p) = q did not converge in {max_iter} iterations "
        f"(last change {change:.3g} px); the spatial gradient of w must stay below 1 px/px"
    )


def invert_smooth(
    shape: tuple[int, int], field: FieldFunction, *, nodes_per_frame: int = 64
) -> np.ndarray:
    """Solve ``p + w(p) = q`` for every pixel ``q`` of a frame, for a smooth ``w``.

    For frames larger than ``nodes_per_frame`` pixels along an axis the iteration runs on a
    coarser grid of ``q`` (stride ``size // nodes_per_frame``) and the displacement ``p - q`` is
    interpolated to every pixel by separable 4-point Lagrange interpolation. That is exact for
    constant shifts and accurate to about 1e-5 px for the low-frequency fields of
    :func:`nonrigid_field`, whose modes span a fixed number of waves per frame.

    Returns
    -------
    ndarray, shape (2, H, W), float64
        Source coordinates ``(py, px)`` of every pixel, in pixels.
    """
    rows, cols = shape
    stride_y, stride_x = max(1, rows // nodes_per_frame), max(1, cols // nodes_per_frame)
    if stride_y == stride_x == 1:
        qy, qx = np.mgrid[0:rows, 0:cols].astype(float)
        return np.stack(solve_source(qy, qx, field))
    node_y, node_x = _nodes(rows, stride_y), _nodes(cols, stride_x)
    qy, qx = np.meshgrid(node_y, node_x, indexing="ij")
    py, px = solve_source(qy, qx, field)
    shift = np.stack([py - qy, px - qx])
    windows = sliding_window_view(shift, 4, axis=2)  # (2, nodes_y, nodes_x - 3, 4)
    along_x = np.einsum("rk,cyxk->cyxr", _lagrange_weights(stride_x), windows)
    along_x = along_x.reshape(2, len(node_y), -1)[:, :, :cols]
    windows = sliding_window_view(along_x, 4, axis=1)  # (2, nodes_y - 3, W, 4)
    source = np.einsum("rk,cyxk->cyrx", _lagrange_weights(stride_y), windows)
    source = source.reshape(2, -1, cols)[:, :rows]
    source[0] += np.arange(rows, dtype=float)[:, None]
    source[1] += np.arange(cols, dtype=float)
    return source


def _nodes(n: int, stride: int) -> np.ndarray:
    """Node positions ``-stride, 0, stride, ...`` covering ``0..n-1`` with cubic support."""
    return (np.arange((n - 1) // stride + 4) - 1.0) * stride


def _lagrange_weights(stride: int) -> np.ndarray:
    """4-point Lagrange weights, shape (stride, 4), for the pixels between two nodes.

    Pixel ``b * stride + r`` is ``sum_k weights[r, k] * node[b + k]``, where ``node[b + 1]`` sits
    at ``b * stride``.
    """
    f = np.arange(stride) / stride
    return np.stack(
        [
            -f * (f - 1) * (f - 2) / 6,
            (f + 1) * (f - 1) * (f - 2) / 2,
            -(f + 1) * f * (f - 2) / 2,
            (f + 1) * f * (f - 1) / 6,
        ],
        axis=1,
    )
