"""Output helpers of a run: the valid mask (temporal binning happens in the reader).

Where the outputs are written and how they are committed: :mod:`._run_folder`.
"""

from __future__ import annotations

import numpy as np


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
