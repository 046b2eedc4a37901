"""Valid-pixel masks of backward warps, and warping of binary masks (PyFlowReg's
``pyflowreg.core.warping``).

A backward warp ``registered(y, x) = moving(y + v(y, x), x + u(y, x))`` (:func:`.warp.warp`)
observes pixel ``(y, x)`` only where its sample position lies inside the moving frame,
``0 <= x + u <= W - 1`` and ``0 <= y + v <= H - 1``; elsewhere the warp extends the border.
These functions give that mask and carry binary masks through such warps (nearest neighbour,
so a mask stays binary), as the session stages do with the per-recording valid masks.
:func:`imregister_wrapper` and :func:`align_sequence` warp images and fill what the warp does
not observe from the reference; :func:`warpingDepth` is the pyramid depth of a frame size.
"""

from __future__ import annotations

import numpy as np

from .pyramid import axis_depth
from .warp import METHODS, warp

__all__ = [
    "align_sequence",
    "backward_valid_mask",
    "compute_batch_valid_masks",
    "imregister_binary",
    "imregister_wrapper",
    "warpingDepth",
]


def _field_component(name: str, a) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "uif":
        raise TypeError(f"{name} must have a real numeric dtype, got {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr if arr.dtype.kind == "f" else arr.astype(np.float64)


def _inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """In-bounds test of fields ``u``, ``v`` (..., H, W), in their own float precision."""
    h, w = u.shape[-2:]
    x = np.arange(w, dtype=u.dtype) + u
    y = np.arange(h, dtype=v.dtype)[:, None] + v
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def backward_valid_mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixels whose backward-warp sample position lies inside the frame.

    Parameters
    ----------
    u, v : ndarray, shape (H, W)
        Displacement along columns (x) and rows (y), in pixels.

    Returns
    -------
    ndarray, shape (H, W), bool
        True where ``0 <= x + u <= W - 1`` and ``0 <= y + v <= H - 1``.

    Examples
    --------
    >>> u = np.full((3, 4), 1.5); v = np.zeros((3, 4))
    >>> backward_valid_mask(u, v).astype(int)
    array([[1, 1, 0, 0],
           [1, 1, 0, 0],
           [1, 1, 0, 0]])
    """
    u = _field_component("u", u)
    v = _field_component("v", v)
    if u.shape != v.shape:
        raise ValueError(f"u {u.shape} and v {v.shape} must have the same shape")
    return _inside(u, v)


def imregister_binary(mask: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Backward-warp a binary mask by ``(u, v)`` with nearest-neighbour sampling.

    ``out(y, x) = mask(round(y + v), round(x + u))`` where that position lies inside the frame
    (:func:`backward_valid_mask`), False elsewhere: pixels the warp does not observe are never
    valid, so the border is not extended into the mask.

    Parameters
    ----------
    mask : ndarray, shape (H, W)
        Boolean or 0/1 mask in the moving frame's coordinates (non-zero = True).
    u, v : ndarray, shape (H, W)
        Displacement along columns (x) and rows (y), in pixels (the package's ``w[..., 0]``,
        ``w[..., 1]``).

    Returns
    -------
    ndarray, shape (H, W), bool
        The mask in the reference frame's coordinates.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array, got shape {m.shape}")
    if m.dtype.kind not in "buif":
        raise TypeError(f"mask must be boolean or numeric, got dtype {m.dtype}")
    inside = backward_valid_mask(u, v)
    if inside.shape != m.shape:
        raise ValueError(f"mask {m.shape} and the field {inside.shape} must have the same shape")
    w = np.stack([np.asarray(u, np.float64), np.asarray(v, np.float64)], axis=-1)
    warped = warp((m != 0).astype(np.uint8), w, method="nearest")
    return (warped != 0) & inside


def compute_batch_valid_masks(w: np.ndarray) -> np.ndarray:
    """Valid-pixel masks of a batch of displacement fields (:func:`backward_valid_mask` each).

    Parameters
    ----------
    w : ndarray, shape (T, H, W, 2) or (H, W, 2)
        Fields with ``w[..., 0] = u`` (x) and ``w[..., 1] = v`` (y), in pixels.

    Returns
    -------
    ndarray, shape (T, H, W) or (H, W), bool
        The masks; the in-bounds test runs in the fields' float precision (float32 fields are
        compared in float32, as the pipeline's ``idx``/``valid_mask`` outputs are).
    """
    arr = np.asarray(w)
    if arr.dtype.kind not in "uif":
        raise TypeError(f"w must have a real numeric dtype, got {arr.dtype}")
    if arr.ndim not in (3, 4) or arr.shape[-1] != 2:
        raise ValueError(f"w must have shape (H, W, 2) or (T, H, W, 2), got {arr.shape}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return _inside(arr[..., 0], arr[..., 1])


def imregister_wrapper(
    f2_level: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    f1_level: np.ndarray,
    interpolation_method: str = "cubic",
) -> np.ndarray:
    """Warp ``f2_level`` by ``(u, v)``; pixels the warp does not observe take ``f1_level``'s
    values (PyFlowReg's name and argument order).

    Parameters
    ----------
    f2_level : ndarray, shape (H, W) or (H, W, C)
        The moving image.
    u, v : ndarray, shape (H, W)
        Displacement along columns (x) and rows (y), in pixels.
    f1_level : ndarray, same shape as ``f2_level``
        The reference image, whose values fill the unobserved pixels
        (:func:`backward_valid_mask` False).
    interpolation_method : str
        ``"cubic"`` (Keys a = -0.75), ``"linear"``, ``"nearest"`` or another method of
        :func:`pyflowreg.core.warp.warp`.

    Returns
    -------
    ndarray, float32, the shape of ``f2_level``
    """
    moving = np.asarray(f2_level)
    reference = np.asarray(f1_level)
    if moving.shape != reference.shape:
        raise ValueError(
            f"f2_level {moving.shape} and f1_level {reference.shape} must have the same shape"
        )
    if moving.ndim not in (2, 3):
        raise ValueError(f"f2_level must be (H, W) or (H, W, C), got shape {moving.shape}")
    if interpolation_method not in METHODS:
        raise ValueError(
            f"interpolation_method must be one of {list(METHODS)}, got {interpolation_method!r}"
        )
    inside = backward_valid_mask(u, v)
    if inside.shape != moving.shape[:2]:
        raise ValueError(f"u, v {inside.shape} do not match the image {moving.shape[:2]}")
    w = np.stack([np.asarray(u, np.float32), np.asarray(v, np.float32)], axis=-1)
    out = warp(moving.astype(np.float32, copy=False), w, method=interpolation_method)
    if moving.ndim == 3:
        inside = inside[..., None]
    return np.where(inside, out, reference.astype(np.float32, copy=False))


def align_sequence(
    batch: np.ndarray,
    displacement: np.ndarray,
    reference: np.ndarray,
    interpolation_method: str = "cubic",
    n_workers: int | None = None,
) -> np.ndarray:
    """:func:`imregister_wrapper` for every frame of ``batch`` (T, H, W[, C]) with its field
    ``displacement`` (T, H, W, 2), unobserved pixels from ``reference`` (H, W[, C]).

    Returns float32 frames of the batch's shape. ``n_workers`` is accepted for PyFlowReg's
    signature; the warp kernel runs in this thread (use an executor to parallelise).
    """
    frames = np.asarray(batch)
    fields = np.asarray(displacement)
    if frames.ndim not in (3, 4):
        raise ValueError(f"batch must be (T, H, W) or (T, H, W, C), got shape {frames.shape}")
    if fields.shape != (*frames.shape[:3], 2):
        raise ValueError(
            f"displacement must have shape {(*frames.shape[:3], 2)}, got {fields.shape}"
        )
    ref = np.asarray(reference)
    if ref.shape != frames.shape[1:]:
        raise ValueError(f"reference must have shape {frames.shape[1:]}, got {ref.shape}")
    out = np.empty(frames.shape, np.float32)
    for t in range(frames.shape[0]):
        out[t] = imregister_wrapper(
            frames[t], fields[t, ..., 0], fields[t, ..., 1], ref, interpolation_method
        )
    return out


def warpingDepth(eta: float, levels: int, m: int, n: int) -> int:
    """Pyramid depth of an ``m`` x ``n`` frame (PyFlowReg's name): the index of the coarsest
    level along the shorter side (at least 1; :func:`pyflowreg.core.pyramid.axis_depth`),
    capped at ``levels`` (18 for 512 px at eta 0.8)."""
    if not 0 < eta < 1:
        raise ValueError(f"eta must be in (0, 1), got {eta}")
    return min(int(levels), max(1, axis_depth(min(int(m), int(n)), float(eta))))
