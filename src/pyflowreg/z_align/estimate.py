"""Patch-based depth (z) estimation against a reference volume: pure functions on arrays.

The model (PyFlowReg's z-align guide): a recorded frame at pixel ``(y, x)`` shows the tissue of
some depth ``z(t, y, x)`` of a reference volume ``V`` (``(H, W, C, Z)``, one slice per depth).
Depth is found by gradient constancy: the spatial gradients of the (Gaussian-smoothed) frame
are compared with those of each smoothed slice, and the error

    E_z(t, y, x) = sum_c |gx(t, y, x, c) - gx_z(y, x, c)| + |gy(t, y, x, c) - gy_z(y, x, c)|

is summed over square patches; each patch takes the depth of least error (sub-slice by a
parabola through the three scores around the minimum), overlapping patches are averaged per
pixel, and the map is smoothed in space and time. Depths are 0-based slice coordinates here.

>>> import numpy as np
>>> volume = np.random.default_rng(0).random((32, 32, 1, 5))
>>> gy, gx = slice_gradients(volume, 1.0)
>>> fy, fx = frame_gradients(volume[None, ..., 3], 1.0, 0.0)
>>> anchor_slice(fy, fx, gy, gx)
3
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "aggregate_patches",
    "anchor_slice",
    "cast_frames",
    "constancy_error",
    "frame_gradients",
    "halo_frames",
    "interpolate_slices",
    "patch_starts",
    "patch_sums",
    "refine_minimum",
    "score_patches",
    "slice_gradients",
    "smooth_depths",
]


def halo_frames(temporal_sigma: float, z_smooth_sigma_temporal: float) -> int:
    """Context frames each batch needs on both sides so that its frames are filtered as in
    the whole recording: the two temporal Gaussians' radii (SciPy truncates at 4 sigma)."""
    return math.ceil(4 * temporal_sigma) + math.ceil(4 * z_smooth_sigma_temporal)


def _gradients(smoothed: np.ndarray, y_axis: int) -> tuple[np.ndarray, np.ndarray]:
    gy, gx = np.gradient(smoothed, axis=(y_axis, y_axis + 1))
    return gy.astype(np.float32), gx.astype(np.float32)


def slice_gradients(volume: np.ndarray, spatial_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Spatial gradients of each smoothed slice.

    Parameters
    ----------
    volume : ndarray, shape (H, W, C, Z)
    spatial_sigma : float
        Gaussian sigma in pixels (along y and x only).

    Returns
    -------
    gy, gx : ndarray, shape (Z, H, W, C), float32
    """
    slices = np.moveaxis(np.asarray(volume, dtype=np.float64), -1, 0)
    smoothed = ndi.gaussian_filter(slices, (0, spatial_sigma, spatial_sigma, 0))
    return _gradients(smoothed, 1)


def frame_gradients(
    frames: np.ndarray, spatial_sigma: float, temporal_sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Spatial gradients of frames smoothed in space and time.

    Parameters
    ----------
    frames : ndarray, shape (T, H, W, C)
    spatial_sigma, temporal_sigma : float
        Gaussian sigmas in pixels and frames (0: no smoothing along that axis); the time axis
        is reflected at the ends of ``frames``.

    Returns
    -------
    gy, gx : ndarray, shape (T, H, W, C), float32
    """
    frames = np.asarray(frames, dtype=np.float64)
    smoothed = ndi.gaussian_filter(frames, (temporal_sigma, spatial_sigma, spatial_sigma, 0))
    return _gradients(smoothed, 1)


def constancy_error(
    gy: np.ndarray, gx: np.ndarray, slice_gy: np.ndarray, slice_gx: np.ndarray
) -> np.ndarray:
    """Gradient-constancy error of frames ``(T, H, W, C)`` against one slice ``(H, W, C)``,
    summed over channels: ``(T, H, W)`` float32."""
    error = np.abs(gy - slice_gy)
    error += np.abs(gx - slice_gx)
    return error.sum(axis=-1)


def anchor_slice(
    gy: np.ndarray, gx: np.ndarray, volume_gy: np.ndarray, volume_gx: np.ndarray
) -> int:
    """The slice (0-based) whose gradients differ least from the frames' over all pixels and
    frames: the depth the recording was taken at, around which depths are searched."""
    totals = [
        constancy_error(gy, gx, volume_gy[z], volume_gx[z]).sum(dtype=np.float64)
        for z in range(volume_gy.shape[0])
    ]
    return int(np.argmin(totals))


def patch_starts(length: int, patch_size: int, stride: int) -> np.ndarray:
    """First pixels of the patches along an axis of ``length`` pixels: every ``stride``
    pixels, plus one flush with the far edge so that every pixel is covered. Patches longer
    than the axis are cut to it (one patch)."""
    size = min(patch_size, length)
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return np.asarray(starts, dtype=np.intp)


def patch_sums(error: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: tuple[int, int]):
    """Sums of ``error`` ``(T, H, W)`` over the patches ``[y, y + h) x [x, x + w)`` for every
    start in ``ys`` x ``xs``: ``(T, len(ys), len(xs))`` float64 (summed-area table)."""
    t, h, w = error.shape
    table = np.zeros((t, h + 1, w + 1), dtype=np.float64)
    np.cumsum(error, axis=1, dtype=np.float64, out=table[:, 1:, 1:])
    np.cumsum(table[:, 1:, 1:], axis=2, out=table[:, 1:, 1:])
    y0, y1 = ys[:, None], ys[:, None] + size[0]
    x0, x1 = xs[None, :], xs[None, :] + size[1]
    return table[:, y1, x1] - table[:, y0, x1] - table[:, y1, x0] + table[:, y0, x0]


def score_patches(
    gy: np.ndarray,
    gx: np.ndarray,
    volume_gy: np.ndarray,
    volume_gx: np.ndarray,
    candidates: Iterable[int],
    ys: np.ndarray,
    xs: np.ndarray,
    size: tuple[int, int],
    map_fn: Callable = map,
) -> np.ndarray:
    """Patch errors of the frames against each candidate slice: ``(K, T, Py, Px)`` float64.

    ``map_fn`` maps over the candidates (``map``, or a thread pool's ``map``: the NumPy work
    releases the GIL); results keep the order of ``candidates`` whichever is used.
    """

    def score(z: int) -> np.ndarray:
        return patch_sums(constancy_error(gy, gx, volume_gy[z], volume_gx[z]), ys, xs, size)

    return np.stack(list(map_fn(score, list(candidates))))


def refine_minimum(scores: np.ndarray, tau_scale: float) -> np.ndarray:
    """Position of the least score along axis 0, refined by a parabola through it and its
    two neighbours.

    The offset ``(s[-1] - s[+1]) / (2 (s[-1] - 2 s[0] + s[+1]))`` is clipped to [-0.5, 0.5];
    it is 0 at the ends of the axis and where the parabola is near-flat, i.e. its curvature
    ``s[-1] - 2 s[0] + s[+1]`` is below ``tau_scale * max(|s[0]|, 1)``.

    Parameters
    ----------
    scores : ndarray, shape (K, ...)
    tau_scale : float

    Returns
    -------
    ndarray, shape (...), float64
        Index into axis 0 (fractional).
    """
    k = np.argmin(scores, axis=0)
    n = scores.shape[0]
    best = np.take_along_axis(scores, k[None], 0)[0]
    below = np.take_along_axis(scores, np.clip(k - 1, 0, n - 1)[None], 0)[0]
    above = np.take_along_axis(scores, np.clip(k + 1, 0, n - 1)[None], 0)[0]
    curvature = below - 2.0 * best + above
    usable = (k > 0) & (k < n - 1) & (curvature > tau_scale * np.maximum(np.abs(best), 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(usable, 0.5 * (below - above) / curvature, 0.0)
    return k + np.clip(offset, -0.5, 0.5)


def aggregate_patches(
    values: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: tuple[int, int], shape
) -> np.ndarray:
    """Per-pixel mean of the patch values ``(T, Py, Px)`` over the patches covering each pixel
    (accumulated in row-major patch order, so the result does not depend on how the patches
    were scored): ``(T, H, W)`` float64."""
    total = np.zeros((values.shape[0], *shape), dtype=np.float64)
    count = np.zeros(shape, dtype=np.float64)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            total[:, y : y + size[0], x : x + size[1]] += values[:, i, j, None, None]
            count[y : y + size[0], x : x + size[1]] += 1.0
    return total / count


def smooth_depths(
    depths: np.ndarray, sigma_spatial: float, sigma_temporal: float, bounds: tuple[float, float]
) -> np.ndarray:
    """Gaussian-smooth a depth map ``(T, H, W)`` in space and time and clip it to ``bounds``."""
    smoothed = ndi.gaussian_filter(depths, (sigma_temporal, sigma_spatial, sigma_spatial))
    return np.clip(smoothed, *bounds)


def interpolate_slices(volume: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """The volume at fractional depths, linearly between neighbouring slices.

    Parameters
    ----------
    volume : ndarray, shape (H, W, C, Z)
    depths : ndarray, shape (T, H, W)
        0-based slice coordinates (clipped to ``[0, Z - 1]``).

    Returns
    -------
    ndarray, shape (T, H, W, C), float64
    """
    z_count = volume.shape[-1]
    depths = np.clip(np.asarray(depths, dtype=np.float64), 0, z_count - 1)
    if z_count == 1:
        return np.broadcast_to(volume[..., 0], (*depths.shape, volume.shape[2])).astype(float)
    lower = np.minimum(np.floor(depths).astype(np.intp), z_count - 2)
    fraction = (depths - lower)[..., None]
    rows = np.arange(volume.shape[0])[None, :, None]
    cols = np.arange(volume.shape[1])[None, None, :]
    below = volume[rows, cols, :, lower]  # (T, H, W, C)
    above = volume[rows, cols, :, lower + 1]
    return below * (1.0 - fraction) + above * fraction


def cast_frames(frames: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Frames in ``dtype``: integers rounded and clipped to the dtype's range."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(frames), info.min, info.max).astype(dtype)
    return np.asarray(frames).astype(dtype)
