"""Synthetic multi-session data: one field of view recorded several times, with known motion.

Every session images the same scene (cells, vessels, neuropil) through its own smooth
deformation relative to the centre session (rigid shift + low-frequency non-rigid field; the
centre session's is zero), with its own calcium activity (each cell brighter or dimmer than in
the other sessions, and its own transients), and moves within the session as
:func:`~pyflowreg.datasets.make_recording` recordings do.

Conventions are the package's (ALGORITHM.md): a field ``w`` is ``(H, W, 2)``, ``u = w[..., 0]``
along columns, ``v = w[..., 1]`` along rows, in pixels, and warps backward. For session ``s``

* the ground-truth inter-session field ``fields[s]`` maps the session's motion-free frame onto the
  centre's: ``mean_s(y + v, x + u) = mean_centre(y, x)`` up to the activity differences, i.e.
  ``warp(means[s], fields[s]) ≈ means[center]``;
* ``flows[s][t]`` maps frame ``t`` onto the session's motion-free frame, as in
  :func:`~pyflowreg.datasets.make_recording`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike
from scipy import ndimage as ndi

from pyflowreg.datasets._motion import (
    FieldFunction,
    NonrigidField,
    invert_smooth,
    nonrigid_field,
    rigid_motion,
)
from pyflowreg.datasets._scene import DFF_MAX, build_scene, calcium_traces
from pyflowreg.datasets.synthetic import (
    _MARGIN,
    SHOT_NOISE_FRACTION,
    _add_noise,
    _frame_shape,
    _intensity_mapping,
    _positive_int,
    _spline,
    _to_dtype,
    scene_arguments,
)

#: File formats :meth:`SyntheticSessions.save` writes, by extension.
SESSION_FORMATS = (".tif", ".h5")


@dataclass(frozen=True, eq=False)
class SyntheticSessions:
    """Synthetic sessions of one field of view and their ground truth (see :func:`make_sessions`).

    Attributes
    ----------
    videos : list of ndarray, each (T, H, W, 1), the requested dtype
        The noisy, moving recordings, one per session.
    fields : ndarray, shape (S, H, W, 2), float32
        Ground-truth inter-session field of every session (zero for ``center``), in pixels:
        it maps the session's motion-free frame onto the centre session's.
    rigid : ndarray, shape (S, 2), float32
        Rigid part ``(u, v)`` of ``fields``.
    flows : list of ndarray, each (T, H, W, 2), float32
        Ground-truth within-session motion of every frame, relative to the session's
        motion-free frame.
    means : ndarray, shape (S, H, W, 1), float32
        Motion-free, noise-free temporal mean of every session, in ``videos`` units: what a
        perfect stage 1 averages to. They differ in activity, not only in position.
    valid_masks : ndarray, shape (S, H, W), bool
        Per session, the pixels of its motion-free frame that every frame observes (the frame's
        sample position ``p + flows[s][t](p)`` lies inside the frame for all ``t``): the temporal
        AND of the per-frame valid masks.
    final_valid : ndarray, shape (H, W), bool
        Pixels of the centre's frame that every session observes in every frame: ``p`` such that
        ``p + fields[s](p)`` lies in session ``s``'s valid region for every ``s``.
    center : int
        Index of the centre (reference) session.
    gains : ndarray, shape (S, K), float32
        Resting brightness of each functional cell in each session relative to the scene
        (the activity difference between sessions; transients come on top).
    seed : int
        Seed of the generator.
    offset : float
        Intensity of zero signal in ``videos`` units (0 for float dtypes).
    """

    videos: list[np.ndarray]
    fields: np.ndarray
    rigid: np.ndarray
    flows: list[np.ndarray]
    means: np.ndarray
    valid_masks: np.ndarray
    final_valid: np.ndarray
    center: int
    gains: np.ndarray
    seed: int
    offset: float

    @property
    def n_sessions(self) -> int:
        """Number of sessions S."""
        return len(self.videos)

    def save(self, folder: str | Path, fmt: str = ".tif", prefix: str = "session") -> list[Path]:
        """Write every session's video to ``folder/<prefix>_<i>.<ext>`` (sorted by name).

        Parameters
        ----------
        folder : str or Path
            Created if missing.
        fmt : {".tif", ".h5"}
            TIFF (one page per frame, via tifffile) or HDF5 (dataset ``"mov"``, (T, H, W)).
        prefix : str
            File name prefix; the index has as many digits as needed to sort correctly.

        Returns
        -------
        list of Path
            The files written, in session order.
        """
        if fmt not in SESSION_FORMATS:
            raise ValueError(f"fmt must be one of {list(SESSION_FORMATS)}, got {fmt!r}")
        if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "/\\"):
            raise ValueError(f"prefix must be a non-empty file name part, got {prefix!r}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        digits = max(2, len(str(self.n_sessions - 1)))
        paths = []
        for i, video in enumerate(self.videos):
            path = folder / f"{prefix}_{i:0{digits}d}{fmt}"
            frames = video[..., 0] if video.shape[-1] == 1 else video
            if fmt == ".tif":
                import tifffile

                tifffile.imwrite(path, frames, photometric="minisblack")
            else:
                import h5py

                with h5py.File(path, "w") as f:
                    f.create_dataset("mov", data=frames, chunks=(1, *frames.shape[1:3]))
            paths.append(path)
        return paths


def make_sessions(
    n_sessions: int = 3,
    n_frames: int = 20,
    shape: tuple[int, int] = (128, 128),
    *,
    center: int | None = None,
    max_rigid_between: float = 6.0,
    max_nonrigid_between: float = 2.5,
    activity_change: float = 0.5,
    brightness_change: float = 0.15,
    max_rigid: float = 2.0,
    max_nonrigid: float = 0.5,
    snr: float = 5.0,
    n_cells: int | None = None,
    seed: int | None = 0,
    dtype: DTypeLike = np.float32,
) -> SyntheticSessions:
    """Generate recordings of one field of view on different days, with known motion.

    Scene and noise are those of :func:`~pyflowreg.datasets.make_recording` (somata, vessel
    shadows, neuropil, PSF blur; Poisson plus read noise at ``snr``), one channel.

    Between sessions: session ``s`` sees the scene through a smooth deformation (a rigid shift
    of at most ``max_rigid_between`` plus a low-frequency non-rigid field of at most
    ``max_nonrigid_between`` px; zero for the centre session). Activity differs as in real
    longitudinal data: each cell's resting brightness is multiplied by a per-session log-normal
    gain (``exp(activity_change * N(0, 1))``, so some cells nearly vanish and others light up),
    each session has its own calcium transients, and the whole field of view is brighter or
    dimmer by a factor ``1 + brightness_change * U(-1, 1)`` (laser power, expression). Within a
    session: rigid motion (random walk with jumps) of at most ``max_rigid`` plus non-rigid
    motion of at most ``max_nonrigid`` px, both with zero temporal mean, so that a session's
    average position is its motion-free frame (the frame stage 1 registers it to, up to its
    error).

    Parameters
    ----------
    n_sessions : int
        Number of sessions S (>= 1).
    n_frames : int
        Frames per session T.
    shape : (int, int)
        Frame size ``(H, W)``.
    center : int, optional
        Index of the centre session; default ``(n_sessions - 1) // 2`` (the middle one,
        MATLAB's ``ceil(S / 2)``, as stage 2 picks it).
    max_rigid_between, max_nonrigid_between : float
        Largest inter-session rigid shift and non-rigid displacement magnitude, in pixels.
    activity_change : float
        Standard deviation of the log gain of every cell between sessions (0: same resting
        brightness in every session).
    brightness_change : float
        Largest relative change of the overall brightness between sessions, in [0, 1).
    max_rigid, max_nonrigid : float
        Largest within-session rigid and non-rigid displacement, in pixels.
    snr : float
        Signal-to-noise ratio of the frames (as in ``make_recording``); ``np.inf`` for none.
    n_cells : int, optional
        Somata in the field of view; default about 250 per 512 x 512 pixels.
    seed : int, optional
        Random seed; ``None`` draws a fresh one (stored in the result).
    dtype : dtype
        Dtype of the videos (as in ``make_recording``: float video holds clean signal in about
        [0, 1]; integer video maps it onto 10-80 % of the dtype's range).

    Returns
    -------
    SyntheticSessions

    Examples
    --------
    >>> s = make_sessions(3, 4, (48, 64), seed=1)
    >>> s.n_sessions, s.videos[0].shape, s.fields.shape, s.final_valid.shape
    (3, (4, 48, 64, 1), (3, 48, 64, 2), (48, 64))
    >>> bool((s.fields[s.center] == 0).all())
    True
    """
    n_sessions = _positive_int("n_sessions", n_sessions)
    n_frames = _positive_int("n_frames", n_frames)
    rows, cols = _frame_shape(shape)
    if center is None:
        center = (n_sessions - 1) // 2
    if isinstance(center, bool) or not isinstance(center, (int, np.integer)):
        raise TypeError(f"center must be an integer or None, got {type(center).__name__}")
    if not 0 <= center < n_sessions:
        raise ValueError(f"center must be in [0, {n_sessions - 1}], got {center}")
    for name, value in (
        ("max_rigid_between", max_rigid_between),
        ("max_nonrigid_between", max_nonrigid_between),
        ("max_rigid", max_rigid),
        ("max_nonrigid", max_nonrigid),
        ("activity_change", activity_change),
    ):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if not 0 <= brightness_change < 1:
        raise ValueError(f"brightness_change must be in [0, 1), got {brightness_change}")
    if not snr > 0:
        raise ValueError(f"snr must be > 0 (np.inf for no noise), got {snr}")
    n_cells, dtype, seed, rng = scene_arguments(n_cells, dtype, seed, rows, cols)

    # Inter-session deformation: one non-rigid "frame" per session, its own rigid shift.
    between = nonrigid_field(rng, n_sessions, (rows, cols), max_nonrigid_between, time_scale=0.1)
    between.coefficients[center] = 0.0
    rigid_between = _rigid_shifts(rng, n_sessions, max_rigid_between)
    rigid_between[center] = 0.0

    margin = math.ceil(max_rigid_between + max_nonrigid_between + max_rigid + max_nonrigid)
    margin += _MARGIN
    canvas = (rows + 2 * margin, cols + 2 * margin)
    n_canvas_cells = round(int(n_cells) * canvas[0] * canvas[1] / (rows * cols))
    scene = build_scene(rng, canvas, 1, n_canvas_cells)
    gains = np.exp(activity_change * rng.standard_normal((n_sessions, n_canvas_cells)))
    gains = gains.astype(np.float32)
    brightness = 1.0 + brightness_change * rng.uniform(-1.0, 1.0, n_sessions)
    brightness[center] = 1.0
    # One scale for all sessions: the brightest possible clean pixel of any session is 1.
    peak = 0.0
    for s in range(n_sessions):
        peak = max(peak, float(brightness[s] * _functional(scene, gains[s] - 1 + DFF_MAX).max()))
    scale = np.float32(1.0 / peak)
    offset, unit = _intensity_mapping(dtype)
    grid = np.mgrid[0:rows, 0:cols].astype(float)
    crop = (slice(margin, margin + rows), slice(margin, margin + cols))
    noise_std = float(scale * scene.base[0][crop].mean()) / snr
    gain = noise_std * snr / (SHOT_NOISE_FRACTION * noise_std**2) if np.isfinite(snr) else None
    read_std = np.sqrt(1.0 - SHOT_NOISE_FRACTION) * noise_std

    videos, flows, means, valid_masks = [], [], [], []
    fields = np.empty((n_sessions, rows, cols, 2), np.float32)
    final_valid = np.ones((rows, cols), bool)
    for s in range(n_sessions):
        dff = calcium_traces(rng, n_canvas_cells, n_frames)
        rigid, slope, within = _centred_motion(rng, n_frames, (rows, cols), max_rigid, max_nonrigid)
        between.total_on_grid(s, rigid_between[s], out=fields[s])
        d_field = _shifted(between, s, rigid_between[s])
        level = np.float32(brightness[s]) * scale
        resting = gains[s] - 1.0
        mean_image = level * _functional(scene, resting + dff.mean(axis=1))
        mean_coords = invert_smooth((rows, cols), d_field) + margin
        mean_s = _sample(mean_image, mean_coords)
        means.append(offset + unit * mean_s)

        video = np.empty((n_frames, rows, cols, 1), dtype)
        flow = np.empty((n_frames, rows, cols, 2), np.float32)
        seen = np.ones((rows, cols), bool)
        for t in range(n_frames):
            within.total_on_grid(t, rigid[t], out=flow[t])
            flow[t] += (grid[0] / rows)[..., None].astype(np.float32) * slope[t].astype(np.float32)
            seen &= _inside(grid + flow[t].transpose(2, 0, 1)[::-1], rows, cols)
            w_field = _shifted(within, t, rigid[t])
            total = _compose(d_field, w_field)
            coords = invert_smooth((rows, cols), total) + margin
            frame = _sample(level * _functional(scene, resting + dff[:, t]), coords)
            if gain is not None:
                frame = _add_noise(rng, frame[..., None], np.array([gain]), np.array([read_std]))
                frame = frame[..., 0]
            video[t, ..., 0] = (
                frame if dtype.kind == "f" else _to_dtype(offset + unit * frame, dtype)
            )
        videos.append(video)
        flows.append(flow)
        valid_masks.append(seen)
        # Centre pixel p is observed by session s where p + fields[s](p) is in its valid region.
        target = grid + fields[s].transpose(2, 0, 1)[::-1]
        final_valid &= _inside(target, rows, cols) & _nearest(seen, target)

    return SyntheticSessions(
        videos=videos,
        fields=fields,
        rigid=rigid_between.astype(np.float32),
        flows=flows,
        means=np.stack(means)[..., None].astype(np.float32),
        valid_masks=np.stack(valid_masks),
        final_valid=final_valid,
        center=int(center),
        gains=gains,
        seed=int(seed),
        offset=float(offset),
    )


def _centred_motion(
    rng: np.random.Generator,
    n_frames: int,
    shape: tuple[int, int],
    max_rigid: float,
    max_nonrigid: float,
) -> tuple[np.ndarray, np.ndarray, NonrigidField]:
    """Within-session motion of :func:`make_recording`'s kind with zero temporal mean.

    The rigid shifts and the non-rigid coefficients are centred over the frames (then scaled
    back within ``max_rigid`` / ``max_nonrigid`` where centring enlarged them), so the session's
    average position is its motion-free frame: the frame that stage 1, registering to a mean
    of the recording, aligns the session to.
    """
    rigid, slope = rigid_motion(rng, n_frames, max_rigid, 0.02, "jumps")
    rigid = rigid - rigid.mean(axis=0)
    peak = np.hypot(*rigid.T).max() if n_frames else 0.0
    if peak > max_rigid:
        rigid *= max_rigid / peak
    within = nonrigid_field(rng, n_frames, shape, max_nonrigid)
    within.coefficients[:] -= within.coefficients.mean(axis=0)
    if max_nonrigid > 0 and n_frames > 1:
        peak = max(np.hypot(*within.on_grid(t).transpose(2, 0, 1)).max() for t in range(n_frames))
        if peak > max_nonrigid:
            within.coefficients[:] *= max_nonrigid / peak
    return rigid, slope, within


def _rigid_shifts(rng: np.random.Generator, n: int, max_shift: float) -> np.ndarray:
    """``n`` rigid shifts ``(u, v)`` with magnitudes uniform in [0.4, 1] * ``max_shift``."""
    angle = rng.uniform(0, 2 * np.pi, n)
    size = rng.uniform(0.4, 1.0, n) * max_shift
    return np.stack([size * np.cos(angle), size * np.sin(angle)], axis=1)


def _functional(scene, extra: np.ndarray) -> np.ndarray:
    """Canvas of the functional channel with ``extra[k]`` times cell ``k``'s resting patch
    added (``extra = gain - 1 + dF/F``)."""
    image = scene.base[0].copy()
    for k in np.flatnonzero(extra):
        y0, y1, x0, x1 = scene.boxes[k]
        image[y0:y1, x0:x1] += extra[k] * scene.patches[k]
    return np.clip(image, 0.0, None)


def _shifted(field: NonrigidField, t: int, shift: np.ndarray) -> FieldFunction:
    """Non-rigid field ``t`` plus a rigid ``shift`` (u, v), as a function of points."""
    nonrigid = bool(field.coefficients[t].any())

    def evaluate(py: np.ndarray, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if nonrigid:
            u, v = field.at(t, py, px)
        else:
            u, v = np.zeros_like(py), np.zeros_like(px)
        return u + shift[0], v + shift[1]

    return evaluate


def _compose(first: FieldFunction, second: FieldFunction) -> FieldFunction:
    """The field that moves ``p`` by ``first`` and then by ``second``:
    ``w(p) = d(p) + e(p + d(p))`` for ``d = first``, ``e = second``."""

    def evaluate(py: np.ndarray, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        du, dv = first(py, px)
        eu, ev = second(py + dv, px + du)
        return du + eu, dv + ev

    return evaluate


def _sample(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """``image`` at the points ``coords`` (2, H, W), cubic spline, float32."""
    return ndi.map_coordinates(
        _spline(image), coords, order=3, mode="mirror", prefilter=False
    ).astype(np.float32)


def _inside(points: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Whether the points ``(y, x)`` (2, H, W) lie inside the frame (borders included)."""
    y, x = points
    return (y >= 0) & (y <= rows - 1) & (x >= 0) & (x <= cols - 1)


def _nearest(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``mask`` at the nearest pixel of the points ``(y, x)`` (2, H, W); False outside."""
    rows, cols = mask.shape
    y = np.rint(points[0]).astype(int)
    x = np.rint(points[1]).astype(int)
    ok = (y >= 0) & (y < rows) & (x >= 0) & (x < cols)
    out = np.zeros(mask.shape, bool)
    out[ok] = mask[y[ok], x[ok]]
    return out
