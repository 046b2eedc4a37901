"""Per-frame quality statistics of a registration, accumulated batch by batch.

The pipeline calls :meth:`StatisticsAccumulator.add` once per batch with the raw
frames, the registered frames and the displacement fields of that batch, so the
memory used here is a few floats per frame, never a copy of the video.

Keys of :meth:`StatisticsAccumulator.result` (also the arrays of ``statistics.npz``):

``mean_displacement`` (T,)
    Mean over pixels of the displacement magnitude ``sqrt(u² + v²)``, in pixels.
``max_displacement`` (T,)
    Largest displacement magnitude of the frame, in pixels.
``mean_divergence`` (T,)
    Mean over pixels of ``∂u/∂x + ∂v/∂y`` (central differences), in px/px.
``translation`` (T, 2)
    Mean ``(u, v)`` of the frame, in pixels: its rigid part.
``correlation`` (T,)
    Pearson correlation of the registered frame with the reference (all channels).
``correlation_before`` (T,)
    Pearson correlation of the raw frame with the reference (all channels).

``statistics.npz`` also holds PyFlowReg's names of the displacement statistics
(:func:`with_pyflowreg_names`): ``mean_disp``, ``max_disp``, ``mean_div`` (the same arrays) and
``mean_translation`` (T,), the length of ``translation``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

STATISTICS_KEYS: tuple[str, ...] = (
    "mean_displacement",
    "max_displacement",
    "mean_divergence",
    "translation",
    "correlation",
    "correlation_before",
)


#: PyFlowReg's names of the same statistics (``statistics.npz`` holds both).
PYFLOWREG_NAMES = {
    "mean_disp": "mean_displacement",
    "max_disp": "max_displacement",
    "mean_div": "mean_divergence",
}


def with_pyflowreg_names(statistics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``statistics`` plus PyFlowReg's keys (see the module docstring) where their sources
    are present."""
    out = dict(statistics)
    for alias, key in PYFLOWREG_NAMES.items():
        if key in statistics:
            out[alias] = statistics[key]
    if "translation" in statistics:
        out["mean_translation"] = np.hypot(*np.asarray(statistics["translation"]).T)
    return out


def displacement_statistics(w: np.ndarray) -> dict[str, np.ndarray]:
    """Magnitude, divergence and translation of displacement fields.

    Parameters
    ----------
    w : ndarray, shape (T, H, W, 2)
        Displacement fields, ``w[..., 0] = u`` (x), ``w[..., 1] = v`` (y), in pixels.

    Returns
    -------
    dict
        ``mean_displacement`` (T,), ``max_displacement`` (T,), ``mean_divergence`` (T,)
        and ``translation`` (T, 2), all float64. The divergence uses central differences
        inside the frame and one-sided ones at its edges (as ``numpy.gradient``).
    """
    w = np.asarray(w)
    if w.ndim != 4 or w.shape[-1] != 2:
        raise ValueError(f"w must have shape (T, H, W, 2), got {w.shape}")
    if not w.dtype.isnative or w.dtype.kind != "f":
        w = w.astype(np.float64)
    sums = np.zeros((w.shape[0], 5))
    if w.size:
        _field_sums(w, sums)
    pixels = max(w.shape[1] * w.shape[2], 1)
    return {
        "mean_displacement": sums[:, 0] / pixels,
        "max_displacement": sums[:, 1].copy(),
        "mean_divergence": sums[:, 2] / pixels,
        "translation": sums[:, 3:5] / pixels,
    }


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _field_sums(w, sums):
    """Per frame: sum and max of ``|w|``, sum of the divergence, sums of ``u`` and ``v``.

    The sum of ``numpy.gradient`` along a line telescopes to its four end values
    (``1.5 f[-1] - 0.5 f[-2] + 0.5 f[1] - 1.5 f[0]``; ``2 (f[1] - f[0])`` for two samples),
    so the divergence needs only the border rows and columns.
    """
    n, h, wd, _ = w.shape
    for t in range(n):
        total = 0.0
        peak = 0.0
        su = 0.0
        sv = 0.0
        for i in range(h):
            for j in range(wd):
                u = np.float64(w[t, i, j, 0])
                v = np.float64(w[t, i, j, 1])
                m = math.sqrt(u * u + v * v)
                total += m
                peak = max(peak, m)
                su += u
                sv += v
        div = 0.0
        if wd > 1:
            for i in range(h):
                div += _line_gradient_sum(
                    w[t, i, 0, 0], w[t, i, 1, 0], w[t, i, wd - 2, 0], w[t, i, wd - 1, 0]
                )
        if h > 1:
            for j in range(wd):
                div += _line_gradient_sum(
                    w[t, 0, j, 1], w[t, 1, j, 1], w[t, h - 2, j, 1], w[t, h - 1, j, 1]
                )
        sums[t, 0] = total
        sums[t, 1] = peak
        sums[t, 2] = div
        sums[t, 3] = su
        sums[t, 4] = sv


@njit(cache=True, nogil=True, inline="always")
def _line_gradient_sum(first, second, before_last, last):
    """Sum of the central/one-sided differences along a line, from its end values."""
    return (
        1.5 * np.float64(last)
        - 0.5 * np.float64(before_last)
        + 0.5 * np.float64(second)
        - 1.5 * np.float64(first)
    )


def correlation_with_reference(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pearson correlation of every frame with the reference.

    Parameters
    ----------
    frames : ndarray, shape (T, H, W, C)
    reference : ndarray, shape (H, W, C)

    Returns
    -------
    ndarray, shape (T,), float64
        NaN for a constant frame or a constant reference (correlation undefined).
    """
    frames = np.asarray(frames)
    reference = np.asarray(reference)
    if frames.shape[1:] != reference.shape:
        raise ValueError(
            f"frames (T, H, W, C) = {frames.shape} do not match reference {reference.shape}"
        )
    n = frames.shape[0]
    ref = reference.astype(np.float64).ravel()
    ref -= ref.mean()
    ref_norm = np.sqrt(ref @ ref)
    flat = frames.reshape(n, -1)
    if flat.dtype.kind not in "uif" or not flat.dtype.isnative:
        flat = flat.astype(np.float64)
    out = np.full(n, np.nan)
    if ref.size and ref_norm > 0:
        _correlations(flat, ref, ref_norm, out)
    return out


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _correlations(frames, ref, ref_norm, out):
    """Pearson correlation of each row of ``frames`` (n, N) with the centred ``ref`` (N,)."""
    n, size = frames.shape
    for t in range(n):
        row = frames[t]
        total = 0.0
        for k in range(size):
            total += np.float64(row[k])
        mean = total / size
        cross = 0.0
        square = 0.0
        for k in range(size):
            x = np.float64(row[k]) - mean
            cross += x * ref[k]
            square += x * x
        if square > 0:
            out[t] = cross / (math.sqrt(square) * ref_norm)


class StatisticsAccumulator:
    """Collect per-frame statistics batch by batch (memory: a few floats per frame).

    Parameters
    ----------
    reference : ndarray, shape (H, W, C)
        The raw (not normalised) reference the frames are compared with.
    """

    def __init__(self, reference: np.ndarray) -> None:
        self.reference = np.asarray(reference)
        self._parts: dict[str, list[np.ndarray]] = {key: [] for key in STATISTICS_KEYS}

    def set_reference(self, reference: np.ndarray) -> None:
        """Compare the following batches with a new reference (``update_reference``)."""
        self.reference = np.asarray(reference)

    def add(self, raw: np.ndarray, registered: np.ndarray, w: np.ndarray) -> None:
        """Add the statistics of one batch.

        Parameters
        ----------
        raw, registered : ndarray, shape (n, H, W, C)
            Input frames and registered frames of the batch.
        w : ndarray, shape (n, H, W, 2)
            Displacement fields of the batch.
        """
        for key, value in displacement_statistics(w).items():
            self._parts[key].append(value)
        self._parts["correlation"].append(correlation_with_reference(registered, self.reference))
        self._parts["correlation_before"].append(correlation_with_reference(raw, self.reference))

    def last_batch(self) -> dict[str, np.ndarray]:
        """Statistics of the batch added last (what a checkpoint saves)."""
        return {key: parts[-1] for key, parts in self._parts.items() if parts}

    def extend(self, batch: dict[str, np.ndarray]) -> None:
        """Add the statistics of a batch computed earlier (by an interrupted run)."""
        for key, values in batch.items():
            self._parts[key].append(np.asarray(values))

    def result(self) -> dict[str, np.ndarray]:
        """All statistics so far, concatenated over batches (see module docstring)."""
        out = {}
        for key, parts in self._parts.items():
            if parts:
                out[key] = np.concatenate(parts, axis=0)
            else:
                out[key] = np.zeros((0, 2) if key == "translation" else (0,), np.float64)
        return out
