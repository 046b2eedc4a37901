"""Synthetic 2-photon recordings and image pairs with ground-truth displacement fields.

Conventions are the package's (ALGORITHM.md): videos are ``(T, H, W, C)``; a field ``w`` is
``(H, W, 2)`` with ``w[..., 0] = u`` along columns (x) and ``w[..., 1] = v`` along rows (y), in
pixels; warping is backward, ``registered(y, x) = moving(y + v(y, x), x + u(y, x))``. Every moving
frame made here is exactly the one that this warp maps back onto the clean scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, DTypeLike
from scipy import ndimage as ndi

from pyflowreg.datasets._motion import (
    MOTIONS,
    FieldFunction,
    NonrigidField,
    invert_smooth,
    nonrigid_field,
    rigid_motion,
    solve_source,
)
from pyflowreg.datasets._scene import CELL_DENSITY, DFF_MAX, build_scene, calcium_traces

#: Share of the noise variance (at the mean intensity) that is photon shot noise; the rest is
#: Gaussian read noise. Two-photon detection is mostly shot-noise limited.
SHOT_NOISE_FRACTION = 0.8
#: Extra canvas around the largest displacement: cubic-spline support plus the PSF.
_MARGIN = 6
#: Expected photon counts from which shot noise is drawn from the Gaussian approximation.
_GAUSSIAN_COUNTS = 10.0


@dataclass(frozen=True, eq=False)
class SyntheticRecording:
    """A synthetic recording and its ground truth (see :func:`make_recording`).

    Attributes
    ----------
    video : ndarray, shape (T, H, W, C), the requested dtype
        Moving, noisy frames. Channel 0 is functional (calcium transients), channels 1.. are
        static structural labels; all channels share the motion.
    reference : ndarray, shape (H, W, C), float32
        Motion-free, noise-free temporal mean of the clean frames, in the units of ``video``.
    flow : ndarray, shape (T, H, W, 2), float32
        Ground-truth displacement ``(u, v)`` of every frame, in pixels:
        ``video[t](y + v, x + u) ≈ clean[t](y, x)``.
    clean : ndarray, shape (T, H, W, C), float32
        Motion-free, noise-free frames (with transients), in the units of ``video``.
    rigid : ndarray, shape (T, 2), float32
        Rigid part ``(u, v)`` of ``flow``; the rest is the non-rigid deformation.
    seed : int
        Seed of the generator; the same arguments and seed give the same recording.
    snr, max_rigid, max_nonrigid, jump_probability : float
        The generation parameters.
    n_cells : int
        Somata per channel in the field of view (more lie in the margin revealed by motion).
    offset : float
        Intensity of zero signal in ``video`` units (0 for float dtypes).
    noise_std : tuple of float
        Per channel, the root-mean-square noise in ``video`` units (before rounding).
    """

    video: np.ndarray
    reference: np.ndarray
    flow: np.ndarray
    clean: np.ndarray
    rigid: np.ndarray
    seed: int
    snr: float
    max_rigid: float
    max_nonrigid: float
    n_cells: int
    jump_probability: float
    offset: float
    noise_std: tuple[float, ...]


def make_recording(
    n_frames: int = 100,
    shape: tuple[int, int] = (512, 512),
    n_channels: int = 1,
    *,
    snr: float = 5.0,
    max_rigid: float = 10.0,
    max_nonrigid: float = 2.0,
    n_cells: int | None = None,
    jump_probability: float = 0.02,
    seed: int | None = 0,
    dtype: DTypeLike = np.float32,
    motion: str = "jumps",
) -> SyntheticRecording:
    """Generate a 2-photon-like recording with known motion.

    Content: somata 8-16 px across (soma rings with darker nuclei in the functional channel),
    blood-vessel shadows, and neuropil (a smooth log-normal field times fine texture), blurred by
    a Gaussian PSF of 1 px sigma. Channel 0 carries calcium transients (sparse spikes convolved
    with a fast-rise, 4-15 frame decay kernel; dF/F saturates softly at 2). Further channels are
    static structural labels of partly different cells.

    Motion: a smooth rigid random walk with occasional jumps (magnitude at most ``max_rigid``)
    plus a smooth low-frequency non-rigid deformation varying over time (magnitude at most
    ``max_nonrigid``, reached unless the frame is so small that a gradient cap of 0.5 px/px
    applies). Motion reveals real tissue at the borders, not padding.

    Noise: Poisson shot noise plus Gaussian read noise, per channel. The signal-to-noise ratio
    is ``SNR = mean clean signal / RMS noise``, both over all pixels and frames of the channel,
    signal measured above ``offset``; shot noise makes up ``SHOT_NOISE_FRACTION`` of the noise
    variance at the mean intensity (at SNR 5 the mean pixel collects about 31 photons). Shot noise
    is drawn from the Poisson distribution where fewer than 10 photons are expected and from its
    Gaussian approximation (same mean and variance) elsewhere, which is much faster.

    Cost: about 20-35 ms per 512 x 512 frame and channel on one CPU core (mostly the cubic
    resampling), and 16 bytes per pixel and frame for ``video``, ``clean`` and ``flow`` together
    (float32, one channel).

    Parameters
    ----------
    n_frames : int
        Number of frames T.
    shape : (int, int)
        Frame size ``(H, W)`` in pixels.
    n_channels : int
        Number of channels C (channel 0 functional, the others structural).
    snr : float
        Signal-to-noise ratio as defined above; ``np.inf`` for noise-free frames.
    max_rigid, max_nonrigid : float
        Largest rigid shift and non-rigid displacement magnitude, in pixels.
    n_cells : int, optional
        Somata per channel in the field of view; default about 250 per 512 x 512 pixels.
    jump_probability : float
        Probability per frame that a sudden jump starts (``motion="jumps"``).
    motion : {"jumps", "smooth", "drift", "shear"}
        Kind of rigid motion: a random walk with sudden jumps (default), the walk without jumps,
        a slow drift across the recording, or raster-scan shear (the shift changes down the frame
        because rows are scanned at different times; see
        :func:`pyflowreg.datasets._motion.rigid_motion`).
    seed : int, optional
        Random seed; ``None`` draws a fresh one (stored in the result).
    dtype : dtype
        Dtype of ``video``. Float video holds clean signal in about [0, 1] (1 = brightest
        possible clean pixel). Integer video maps that range onto 10-80 % of the dtype's
        non-negative range, rounded and clipped.

    Returns
    -------
    SyntheticRecording

    Examples
    --------
    >>> rec = make_recording(5, (48, 64), 2, seed=1)
    >>> rec.video.shape, rec.flow.shape, rec.reference.shape
    ((5, 48, 64, 2), (5, 48, 64, 2), (48, 64, 2))
    """
    n_frames = _positive_int("n_frames", n_frames)
    rows, cols = _frame_shape(shape)
    n_channels = _positive_int("n_channels", n_channels)
    if not snr > 0:
        raise ValueError(f"snr must be > 0 (np.inf for no noise), got {snr}")
    for name, value in (("max_rigid", max_rigid), ("max_nonrigid", max_nonrigid)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0 pixels, got {value}")
    if not 0 <= jump_probability <= 1:
        raise ValueError(f"jump_probability must be in [0, 1], got {jump_probability}")
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {list(MOTIONS)}, got {motion!r}")
    n_cells, dtype, seed, rng = scene_arguments(n_cells, dtype, seed, rows, cols)

    rigid, slope = rigid_motion(rng, n_frames, max_rigid, jump_probability, motion)
    row_fraction = (np.arange(rows, dtype=np.float32) / rows)[:, None, None]
    nonrigid = nonrigid_field(rng, n_frames, (rows, cols), max_nonrigid)
    margin = math.ceil(max_rigid + max_nonrigid) + _MARGIN
    canvas = (rows + 2 * margin, cols + 2 * margin)
    n_canvas_cells = round(int(n_cells) * canvas[0] * canvas[1] / (rows * cols))
    scene = build_scene(rng, canvas, n_channels, n_canvas_cells)
    dff = calcium_traces(rng, n_canvas_cells, n_frames)

    # Normalise each channel so that its brightest possible clean pixel is 1.
    all_active = scene.base[0].copy()
    mean_active = np.zeros(canvas, dtype=np.float32)
    for k, (y0, y1, x0, x1) in enumerate(scene.boxes):
        all_active[y0:y1, x0:x1] += DFF_MAX * scene.patches[k]
        mean_active[y0:y1, x0:x1] += dff[k].mean() * scene.patches[k]
    scales = [1.0 / all_active.max()] + [1.0 / b.max() for b in scene.base[1:]]
    base = scene.base * np.asarray(scales, dtype=np.float32)[:, None, None]
    patches = [p * np.float32(scales[0]) for p in scene.patches]
    crop = (slice(margin, margin + rows), slice(margin, margin + cols))
    reference = base[(slice(None), *crop)].transpose(1, 2, 0).copy()
    reference[..., 0] += scales[0] * mean_active[crop]

    offset, unit = _intensity_mapping(dtype)
    mean_signal = reference.reshape(-1, n_channels).mean(axis=0).astype(float)
    noise_std = mean_signal / snr
    gain = mean_signal / (SHOT_NOISE_FRACTION * noise_std**2) if np.isfinite(snr) else None
    read_std = np.sqrt(1.0 - SHOT_NOISE_FRACTION) * noise_std

    video = np.empty((n_frames, rows, cols, n_channels), dtype=dtype)
    clean = np.empty((n_frames, rows, cols, n_channels), dtype=np.float32)
    flow = np.empty((n_frames, rows, cols, 2), dtype=np.float32)
    static = [_spline(b) for b in base[1:]]
    sample = np.empty((rows, cols, n_channels), dtype=np.float32)
    for t in range(n_frames):
        functional = base[0].copy()
        for k in np.flatnonzero(dff[:, t]):
            y0, y1, x0, x1 = scene.boxes[k]
            functional[y0:y1, x0:x1] += dff[k, t] * patches[k]
        clean[t, ..., 0] = functional[crop]
        clean[t, ..., 1:] = reference[..., 1:]
        nonrigid.total_on_grid(t, rigid[t], out=flow[t])
        if slope[t].any():
            flow[t] += row_fraction * slope[t].astype(np.float32)

        coords = invert_smooth((rows, cols), _frame_field(nonrigid, t, rigid[t], slope[t], rows))
        coords += margin
        for c, coefficients in enumerate([_spline(functional), *static]):
            ndi.map_coordinates(
                coefficients, coords, sample[..., c], order=3, mode="mirror", prefilter=False
            )
        frame = _add_noise(rng, sample, gain, read_std) if gain is not None else sample
        video[t] = frame if dtype.kind == "f" else _to_dtype(offset + unit * frame, dtype)

    if dtype.kind != "f":
        clean *= np.float32(unit)
        clean += np.float32(offset)
    return SyntheticRecording(
        video=video,
        reference=(offset + unit * reference).astype(np.float32),
        flow=flow,
        clean=clean,
        rigid=rigid.astype(np.float32),
        seed=int(seed),
        snr=float(snr),
        max_rigid=float(max_rigid),
        max_nonrigid=float(max_nonrigid),
        n_cells=int(n_cells),
        jump_probability=float(jump_probability),
        offset=float(offset),
        noise_std=tuple(float(unit * s) for s in noise_std)
        if gain is not None
        else (0.0,) * n_channels,
    )


def make_pair(
    shape: tuple[int, int] = (64, 64),
    w: ArrayLike | None = None,
    *,
    seed: int = 0,
    n_channels: int = 1,
    noise: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A clean 2-photon-like image and a displaced copy, for tests with known motion.

    Parameters
    ----------
    shape : (int, int)
        Image size ``(H, W)``.
    w : array_like, shape (H, W, 2), optional
        Displacement ``(u, v)`` in pixels. Default: a random sub-pixel rigid shift of up to 2.5 px
        per axis plus a smooth non-rigid deformation of up to 1 px.
    seed : int
        Random seed of the scene, the default ``w`` and the noise.
    n_channels : int
        Number of channels (channel 0 functional-like, the others structural-like).
    noise : float
        Standard deviation of Gaussian noise added to ``moving`` (same units as the images).

    Returns
    -------
    reference, moving : ndarray, shape (H, W, C), float32
        The scene scaled to [0, 1] per channel, and the frame with ``moving(p + w(p)) =
        reference(p)``. Content entering at the borders is real scene, not padding.
    w : ndarray, shape (H, W, 2), float32
        The ground-truth displacement.
    """
    rows, cols = _frame_shape(shape)
    n_channels = _positive_int("n_channels", n_channels)
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    if w is None:
        shift = rng.uniform(-2.5, 2.5, size=2)
        field = nonrigid_field(rng, 1, (rows, cols), 1.0)
        w = (field.on_grid(0) + shift).astype(np.float32)
        frame_field = _frame_field(field, 0, shift, np.zeros(2), rows)
    else:
        w = _field_array(w, (rows, cols))
        frame_field = _GridField(w)
    margin = math.ceil(float(np.abs(w).max())) + _MARGIN
    canvas = (rows + 2 * margin, cols + 2 * margin)
    scene = build_scene(rng, canvas, n_channels, round(CELL_DENSITY * canvas[0] * canvas[1]))
    crop = (slice(margin, margin + rows), slice(margin, margin + cols))
    low = scene.base[(slice(None), *crop)].min(axis=(1, 2))[:, None, None]
    high = scene.base[(slice(None), *crop)].max(axis=(1, 2))[:, None, None]
    image = (scene.base - low) / np.maximum(high - low, 1e-12)

    if isinstance(frame_field, _GridField):
        qy, qx = np.mgrid[0:rows, 0:cols].astype(float)
        py, px = solve_source(qy, qx, frame_field)
    else:
        py, px = invert_smooth((rows, cols), frame_field)
    coords = np.stack([py + margin, px + margin])
    moving = np.stack(
        [
            ndi.map_coordinates(_spline(ch), coords, order=3, mode="mirror", prefilter=False)
            for ch in image
        ],
        axis=-1,
    )
    if noise > 0:
        moving = moving + noise * rng.standard_normal(moving.shape)
    reference = image[(slice(None), *crop)].transpose(1, 2, 0)
    return reference.astype(np.float32), moving.astype(np.float32), w


def displace(image: ArrayLike, w: ArrayLike) -> np.ndarray:
    """Make the moving frame whose backward warp by ``w`` gives back ``image``.

    Solves ``p + w(p) = q`` for every output pixel ``q`` (fixed-point iteration, ``w`` evaluated
    by cubic-spline interpolation and held constant beyond the frame) and samples ``image`` at
    ``p`` by cubic-spline interpolation (mirrored beyond the frame). Hence
    ``moving(y + v(y, x), x + u(y, x)) = image(y, x)``: a constant ``w = (2, 0)`` moves content
    two pixels to the right, ``moving[y, x + 2] == image[y, x]``.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Reference image.
    w : array_like, shape (H, W, 2)
        Displacement ``(u, v)`` in pixels; its spatial gradient must stay below 1 px/px.

    Returns
    -------
    ndarray, same shape as ``image``
        float64 for float64 input, float32 otherwise.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must have shape (H, W) or (H, W, C), got {image.shape}")
    w = _field_array(w, image.shape[:2])
    out_dtype = np.float64 if image.dtype == np.float64 else np.float32
    channels = image.reshape(*image.shape[:2], -1).astype(out_dtype, copy=False)
    qy, qx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(float)
    py, px = solve_source(qy, qx, _GridField(w))
    moving = np.stack(
        [
            ndi.map_coordinates(channels[..., c], [py, px], order=3, mode="mirror")
            for c in range(channels.shape[-1])
        ],
        axis=-1,
    )
    return moving.reshape(image.shape).astype(out_dtype, copy=False)


class _GridField:
    """A sampled field ``w`` (H, W, 2) as a function of arbitrary points (cubic spline)."""

    def __init__(self, w: np.ndarray):
        self.pad = math.ceil(float(np.abs(w).max())) + 4
        padded = np.pad(w.astype(float), ((self.pad,) * 2, (self.pad,) * 2, (0, 0)), mode="edge")
        self.u, self.v = (_spline(padded[..., c], np.float64) for c in (0, 1))

    def __call__(self, py: np.ndarray, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coords = np.stack([py + self.pad, px + self.pad])
        sample = [
            ndi.map_coordinates(c, coords, order=3, mode="nearest", prefilter=False)
            for c in (self.u, self.v)
        ]
        return sample[0], sample[1]


def _frame_field(
    field: NonrigidField, t: int, shift: np.ndarray, slope: np.ndarray, rows: int
) -> FieldFunction:
    """Total displacement of frame ``t`` as a function: non-rigid + rigid ``shift`` (u, v) +
    ``slope * py / rows`` (raster-scan shear)."""
    nonrigid = field.coefficients[t].any()

    def evaluate(py: np.ndarray, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if nonrigid:
            u, v = field.at(t, py, px)
        else:
            u, v = np.zeros_like(py), np.zeros_like(px)
        fraction = py / rows
        return u + shift[0] + slope[0] * fraction, v + shift[1] + slope[1] * fraction

    return evaluate


def _spline(image: np.ndarray, dtype: DTypeLike = np.float32) -> np.ndarray:
    return ndi.spline_filter(image, order=3, mode="mirror", output=dtype)


def _add_noise(
    rng: np.random.Generator, signal: np.ndarray, gain: np.ndarray, read_std: np.ndarray
) -> np.ndarray:
    """Poisson photon counts at ``gain`` photons per unit plus Gaussian read noise, per channel.

    Where at least ``_GAUSSIAN_COUNTS`` photons are expected, the shot noise is drawn from the
    Gaussian with the Poisson mean and variance (indistinguishable at such counts, and an order of
    magnitude faster); fewer expected photons are drawn from the Poisson distribution itself.
    """
    gain = gain.astype(np.float32)
    read_var = (read_std**2).astype(np.float32)
    positive = np.clip(signal, 0.0, None)
    z = rng.standard_normal(signal.shape, dtype=np.float32)
    noisy = signal + np.sqrt(positive / gain + read_var) * z
    expected = positive * gain
    few = expected < _GAUSSIAN_COUNTS
    if few.any():
        pixel_gain = np.broadcast_to(gain, signal.shape)[few]
        photons = rng.poisson(expected[few]).astype(np.float32)
        noisy[few] = (
            photons / pixel_gain + np.sqrt(np.broadcast_to(read_var, signal.shape)[few]) * z[few]
        )
    return noisy


def _intensity_mapping(dtype: np.dtype) -> tuple[float, float]:
    """``(offset, unit)``: video value of zero signal and of one unit of clean signal."""
    if dtype.kind == "f":
        return 0.0, 1.0
    span = float(np.iinfo(dtype).max)
    return 0.1 * span, 0.7 * span


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return values.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def _field_array(w: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    if w.shape != (*shape, 2):
        raise ValueError(f"w must have shape {(*shape, 2)} (H, W, 2), got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("w must be finite, got NaN or infinite values")
    return w


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _frame_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or any(
        isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 8 for n in shape
    ):
        raise ValueError(f"shape must be (H, W) with integers >= 8, got {shape!r}")
    return int(shape[0]), int(shape[1])


def scene_arguments(n_cells, dtype, seed, rows: int, cols: int):
    """The generators' common arguments checked: ``(n_cells, dtype, seed, rng)`` with the
    defaults filled in (cells at the scene's density, a fresh seed)."""
    if n_cells is None:
        n_cells = round(CELL_DENSITY * rows * cols)
    elif isinstance(n_cells, bool) or not isinstance(n_cells, (int, np.integer)) or n_cells < 0:
        raise ValueError(f"n_cells must be None or an integer >= 0, got {n_cells!r}")
    dtype = np.dtype(dtype)
    if dtype.kind not in "fiu":
        raise ValueError(f"dtype must be a floating or integer dtype, got {dtype}")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    return n_cells, dtype, seed, np.random.default_rng(seed)
