"""Quality metrics for motion correction: flow accuracy, frame similarity, sharpness.

>>> import numpy as np
>>> w_true = np.zeros((64, 64, 2))
>>> w_est = w_true + [0.3, 0.4]
>>> round(endpoint_error(w_est, w_true).mean, 6)
0.5
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

#: Frames are correlated in chunks of about this many elements to bound temporary memory.
_CHUNK_ELEMENTS = 1 << 24


class EPE(NamedTuple):
    """Endpoint-error statistics, in pixels."""

    mean: float
    p95: float
    max: float


def endpoint_error(w_est: ArrayLike, w_true: ArrayLike, border: float = 0.1) -> EPE:
    """Endpoint error ``|w_est - w_true|`` (Euclidean, per pixel) away from the frame borders.

    Parameters
    ----------
    w_est, w_true : array_like, shape (H, W, 2) or (T, H, W, 2)
        Estimated and true displacement fields ``(u, v)``, in pixels.
    border : float
        Fraction of each side excluded, in [0, 0.5): ``int(border * H)`` rows at the top and at
        the bottom, ``int(border * W)`` columns at the left and at the right (51 px of a 512 px
        axis at the default 0.1). Borders are where content enters or leaves the frame and the
        flow is not observable.

    Returns
    -------
    EPE
        ``mean``, 95th percentile ``p95`` and ``max`` over all remaining pixels (and frames).

    Raises
    ------
    ValueError
        If the shapes differ or are not (H, W, 2) / (T, H, W, 2), or ``border`` is out of range.
    """
    w_est, w_true = np.asarray(w_est), np.asarray(w_true)
    if w_est.shape != w_true.shape:
        raise ValueError(
            f"w_est and w_true must have the same shape, got {w_est.shape} and {w_true.shape}"
        )
    if w_est.ndim not in (3, 4) or w_est.shape[-1] != 2:
        raise ValueError(f"fields must have shape (H, W, 2) or (T, H, W, 2), got {w_est.shape}")
    if not 0 <= border < 0.5:
        raise ValueError(f"border must be in [0, 0.5), got {border}")
    rows, cols = w_est.shape[-3:-1]
    by, bx = int(border * rows), int(border * cols)
    region = (..., slice(by, rows - by), slice(bx, cols - bx), slice(None))
    difference = w_est[region].astype(np.float64) - w_true[region].astype(np.float64)
    error = np.hypot(difference[..., 0], difference[..., 1]).ravel()
    return EPE(float(error.mean()), float(np.percentile(error, 95)), float(error.max()))


def frame_correlation(video: ArrayLike, reference: ArrayLike) -> np.ndarray:
    """Pearson correlation of every frame with a reference image.

    Parameters
    ----------
    video : array_like, shape (T, H, W) or (T, H, W, C)
        Frames; all channels of a frame are flattened together.
    reference : array_like, shape (H, W) or (H, W, C)
        The image to compare with, shaped like one frame.

    Returns
    -------
    ndarray, shape (T,), float64
        Correlation coefficients in [-1, 1]; NaN for a frame (or reference) without variance.

    Raises
    ------
    ValueError
        If ``reference`` is not shaped like one frame of ``video``.
    """
    video, reference = np.asarray(video), np.asarray(reference)
    if video.ndim not in (3, 4) or video.shape[1:] != reference.shape:
        raise ValueError(
            "video must have shape (T, H, W) or (T, H, W, C) and reference the shape of one "
            f"frame, got video {video.shape} and reference {reference.shape}"
        )
    ref = reference.astype(np.float64).ravel()
    ref -= ref.mean()
    ref_norm = np.sqrt(ref @ ref)
    n_frames = video.shape[0]
    result = np.empty(n_frames, dtype=np.float64)
    chunk = max(1, _CHUNK_ELEMENTS // max(ref.size, 1))
    for start in range(0, n_frames, chunk):
        frames = video[start : start + chunk].reshape(-1, ref.size).astype(np.float64)
        frames -= frames.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.einsum("ij,ij->i", frames, frames)) * ref_norm
        covariances = frames @ ref
        valid = norms > 0
        result[start : start + chunk] = np.where(
            valid, covariances / np.where(valid, norms, 1.0), np.nan
        )
    return np.clip(result, -1.0, 1.0)


def crispness(image: ArrayLike) -> float:
    """Sharpness of an image: the Frobenius norm of its spatial gradient.

    ``sum_c sqrt(sum_{y,x} (d_y I_c)^2 + (d_x I_c)^2)`` with ``np.gradient`` (central differences
    inside, one-sided at the edges) per channel ``c``. Motion blurs the mean image of a video, so a
    better-registered video has a crisper mean image. Compare values of images with the same size
    and intensity scale only, and average enough frames: noise adds to the gradient too, so the mean
    of a few noisy frames can look crisper than a well-registered but interpolation-smoothed one.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Typically the temporal mean of a (registered) video, ``video.mean(axis=0)``.

    Returns
    -------
    float
        In intensity units times pixels (not normalised by the image size).

    Raises
    ------
    ValueError
        If ``image`` is not 2-D or 3-D or smaller than 2 x 2 pixels.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 2:
        raise ValueError(
            f"image must have shape (H, W) or (H, W, C) with H, W >= 2, got {image.shape}"
        )
    channels = image.reshape(*image.shape[:2], -1)
    total = 0.0
    for c in range(channels.shape[-1]):
        gy, gx = np.gradient(channels[..., c])
        total += float(np.sqrt(np.sum(gy**2) + np.sum(gx**2)))
    return total
