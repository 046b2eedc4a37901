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
"""

from __future__ import annotations

import numpy as np

#: Values converted to float64 at a time when correlating (bounds the temporary memory).
_CHUNK_VALUES = 1 << 19

STATISTICS_KEYS: tuple[str, ...] = (
    "mean_displacement",
    "max_displacement",
    "mean_divergence",
    "translation",
    "correlation",
    "correlation_before",
)


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
        and ``translation`` (T, 2), all float64.
    """
    w = np.asarray(w)
    if w.ndim != 4 or w.shape[-1] != 2:
        raise ValueError(f"w must have shape (T, H, W, 2), got {w.shape}")
    n = w.shape[0]
    out = {
        "mean_displacement": np.empty(n),
        "max_displacement": np.empty(n),
        "mean_divergence": np.empty(n),
        "translation": np.empty((n, 2)),
    }
    step = max(1, _CHUNK_VALUES // max(w[0].size, 1))
    for start in range(0, n, step):
        part = slice(start, min(start + step, n))
        u = w[part, ..., 0].astype(np.float64)
        v = w[part, ..., 1].astype(np.float64)
        k = u.shape[0]
        magnitude = np.hypot(u, v).reshape(k, -1)
        out["mean_displacement"][part] = magnitude.mean(axis=1)
        out["max_displacement"][part] = magnitude.max(axis=1)
        divergence = _derivative(u, axis=2) + _derivative(v, axis=1)
        out["mean_divergence"][part] = divergence.reshape(k, -1).mean(axis=1)
        out["translation"][part, 0] = u.reshape(k, -1).mean(axis=1)
        out["translation"][part, 1] = v.reshape(k, -1).mean(axis=1)
    return out


def _derivative(field: np.ndarray, axis: int) -> np.ndarray:
    """Central differences along ``axis`` (one-sided at the edges); zeros for length 1."""
    if field.shape[axis] < 2:
        return np.zeros_like(field)
    return np.gradient(field, axis=axis)


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
    out = np.empty(n, np.float64)
    step = max(1, _CHUNK_VALUES // max(ref.size, 1))
    for start in range(0, n, step):
        block = frames[start : start + step].reshape(-1, ref.size).astype(np.float64)
        block -= block.mean(axis=1, keepdims=True)
        denom = np.sqrt(np.einsum("ij,ij->i", block, block)) * ref_norm
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + step] = np.where(denom > 0, (block @ ref) / denom, np.nan)
    return out


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

    def result(self) -> dict[str, np.ndarray]:
        """All statistics so far, concatenated over batches (see module docstring)."""
        out = {}
        for key, parts in self._parts.items():
            if parts:
                out[key] = np.concatenate(parts, axis=0)
            else:
                out[key] = np.zeros((0, 2) if key == "translation" else (0,), np.float64)
        return out
