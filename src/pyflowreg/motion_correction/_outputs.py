"""Output helpers of a run: the valid mask (temporal binning happens in the reader).

Where the outputs are written and how they are committed: :mod:`._run_folder`.
"""

from __future__ import annotations

import numpy as np

from ..core.warping import compute_batch_valid_masks


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
    return compute_batch_valid_masks(w).astype(np.uint8)
