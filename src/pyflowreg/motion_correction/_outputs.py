"""Output helpers of a run: temporal binning of the registered video and the valid mask.

Where the outputs are written and how they are committed: :mod:`._run_folder`.
"""

from __future__ import annotations

import numpy as np


class BinnedWriter:
    """Average every ``bin_size`` consecutive frames before writing (temporal binning).

    Frames are carried over between ``write`` calls, so batches need not be multiples of
    ``bin_size``; :meth:`flush` writes the last, possibly shorter, bin. Integer outputs
    are rounded and clipped to ``dtype``. With ``bin_size == 1`` frames pass unchanged.
    """

    def __init__(self, writer, bin_size: int, dtype: np.dtype) -> None:
        self.writer = writer
        self.bin_size = int(bin_size)
        self.dtype = np.dtype(dtype)
        self._carry: np.ndarray | None = None

    def write(self, frames: np.ndarray) -> None:
        if self.bin_size == 1:
            self.writer.write(frames)
            return
        if self._carry is not None:
            frames = np.concatenate([self._carry, frames])
        n_full = (len(frames) // self.bin_size) * self.bin_size
        if n_full:
            self.writer.write(self._bin(frames[:n_full]))
        self._carry = frames[n_full:] if n_full < len(frames) else None

    def flush(self) -> None:
        if self._carry is not None and len(self._carry):
            self.writer.write(self._bin(self._carry, len(self._carry)))
        self._carry = None

    def _bin(self, frames: np.ndarray, size: int | None = None) -> np.ndarray:
        size = size or self.bin_size
        shape = (len(frames) // size, size, *frames.shape[1:])
        mean = frames.reshape(shape).mean(axis=1, dtype=np.float64)
        if self.dtype.kind in "ui":
            info = np.iinfo(self.dtype)
            return np.clip(np.rint(mean), info.min, info.max).astype(self.dtype)
        return mean.astype(self.dtype)


def valid_mask(w: np.ndarray) -> np.ndarray:
    """Pixels whose sampling position lies inside the frame.

    Parameters
    ----------
    w : ndarray, shape (T, H, W, 2)
        Displacement fields (``u`` along x, ``v`` along y), in pixels.

    Returns
    -------
    ndarray, shape (T, H, W), uint8
        1 where ``0 <= x + u <= W - 1`` and ``0 <= y + v <= H - 1``, else 0.
    """
    _, h, width, _ = w.shape
    x = np.arange(width, dtype=np.float32)[None, None, :] + w[..., 0]
    y = np.arange(h, dtype=np.float32)[None, :, None] + w[..., 1]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= h - 1)
    return inside.astype(np.uint8)
