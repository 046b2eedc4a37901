"""PyFlowReg's ``pyflowreg.util.xcorr_prealignment``: the rigid shift of
``cc_initialization``, by :func:`pyflowreg.motion_correction.reference.phase_correlation_shift`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["estimate_rigid_xcorr_2d"]


def estimate_rigid_xcorr_2d(
    ref_img,
    mov_img,
    target_hw=(256, 256),
    up: int = 1,
    normalization: str = "phase",
    disambiguate: bool = True,
    weight=None,
) -> np.ndarray:
    """Rigid shift ``[dx, dy]`` (float32, px) that aligns ``mov_img`` to ``ref_img``: warping
    ``mov_img`` by the constant field ``(dx, dy)`` (``registered(y, x) = mov(y + dy, x + dx)``)
    matches ``ref_img``, the convention of the displacement fields.

    ``ref_img``, ``mov_img``: ``(H, W)`` or ``(H, W, C)``; with channels, their ``weight``-ed
    mean (equal weights by default). ``target_hw``: the images are block-averaged down to at
    most this size first. ``up``: the peak is searched on a ``1/up`` px grid (the estimate is
    sub-pixel also with ``up=1``, from a parabola through the peak). ``normalization`` and
    ``disambiguate`` are accepted for PyFlowReg's signature; the correlation is always
    spectrally whitened and the shift the unambiguous one within half the frame.
    """
    from ..motion_correction.reference import phase_correlation_shift

    ref, mov = (_gray(np.asarray(a, np.float64), weight) for a in (ref_img, mov_img))
    if ref.shape != mov.shape:
        raise ValueError(f"ref_img {np.shape(ref_img)} and mov_img {np.shape(mov_img)} differ")
    size = (int(target_hw), int(target_hw)) if np.isscalar(target_hw) else tuple(target_hw)
    dx, dy = phase_correlation_shift(ref, mov, size, upsample=max(1, int(up)))
    return np.array([dx, dy], np.float32)


def _gray(image: np.ndarray, weight) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.ndim != 3:
        raise ValueError(f"images must be (H, W) or (H, W, C), got shape {image.shape}")
    if weight is None:
        return image.mean(axis=2)
    w = np.asarray(weight, np.float64).reshape(-1)
    if w.size != image.shape[2]:
        raise ValueError(f"weight has {w.size} entries for {image.shape[2]} channels")
    return image @ (w / w.sum())
