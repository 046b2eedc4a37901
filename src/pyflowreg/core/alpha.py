"""A smoothness weight chosen from the data: two-fold cross-validation on held-out pixel blocks.

The default ``alpha = 1.5`` suits motion with fine local structure; smooth motion (rigid shifts,
slow non-rigid deformation) is estimated far more accurately with a larger weight. Which one a
recording needs is measured on its own frames: the frame is tiled into square blocks coloured
like a checkerboard; each colour in turn is held out (its data weight set to 0, so the flow
there is filled in by the smoothness term alone), and the flow estimated from the other colour
predicts the held-out blocks. The weight whose flow warps the moving frames closest to the
reference inside the held-out blocks (mean absolute residual, a few pixels away from the block
edges so that the pre-filter does not leak data across) wins. A weight too small follows the
noise of the data it saw and extrapolates it; one too large flattens real deformation. The
minimum over a logarithmic grid is refined by a parabola in ``log alpha``.

Each fold fits the flow with data on half of the pixels. The smoothness term is the same
everywhere, so relative to the data it weighs twice as much in a fold as in a run on all
pixels: the weight that balances the two on the full frame is twice the fold's optimum, and
that is what is returned (``DATA_FRACTION``). Measured on synthetic recordings with known
motion, the uncorrected optimum lies below the endpoint-error optimum by about this factor.

The default weight stays unless the data clearly prefer another: the best candidate must beat
the default's residual by more than two standard errors of their paired differences over the
validation frames and folds, and by at least half a per cent. On real recordings whose motion
is not smooth the residuals of all weights lie within a fraction of a per cent of each other,
and a weight chosen from such a flat curve would follow the noise of the validation.

Cost: ``2 * len(candidates)`` flow estimates per frame used (reference pyramids built twice).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from .flow import PreparedReference, estimate, prepare_reference
from .params import FlowParameters
from .pyramid import resize
from .warp import warp

#: Candidate smoothness weights (both axes), a factor of 2 apart.
ALPHA_GRID = (0.75, 1.5, 3.0, 6.0, 12.0, 25.0, 50.0, 100.0)
#: Side of the held-out blocks and the margin (px) left out of the score at their edges.
BLOCK, MARGIN = 16, 3
#: Share of the pixels whose data each fold fits with.
DATA_FRACTION = 0.5
#: The weight kept when no candidate is clearly better (FlowParameters' default).
DEFAULT_ALPHA = 1.5
#: Smallest relative gain over the default's residual worth leaving the default for.
MIN_GAIN = 0.005


class AlphaSelection(NamedTuple):
    """Outcome of :func:`select_alpha`.

    Attributes
    ----------
    alpha : float
        The chosen weight for registering with all pixels (both axes): the fold optimum
        divided by ``DATA_FRACTION``.
    candidates : tuple of float
        The weights tried in the folds.
    scores : tuple of float
        Mean absolute held-out residual of each candidate (intensity units of the frames).
    significant : bool
        Whether the best candidate beat the default clearly; if not, ``alpha`` is the default.
    """

    alpha: float
    candidates: tuple[float, ...]
    scores: tuple[float, ...]
    significant: bool = True

    def as_dict(self) -> dict:
        return {
            "alpha": self.alpha,
            "candidates": list(self.candidates),
            "scores": list(self.scores),
            "significant": self.significant,
            "method": f"2-fold held-out {BLOCK} px blocks",
        }


def checkerboard(shape: tuple[int, int], block: int = BLOCK) -> np.ndarray:
    """``(H, W)`` int array: the colour (0 or 1) of each pixel's block."""
    rows = np.arange(shape[0]) // block
    cols = np.arange(shape[1]) // block
    return ((rows[:, None] + cols[None, :]) % 2).astype(np.int8)


def _scored(shape: tuple[int, int], block: int, margin: int) -> np.ndarray:
    """Pixels at least ``margin`` px inside their block."""
    r = np.arange(shape[0]) % block
    c = np.arange(shape[1]) % block
    inside_r = (r >= margin) & (r < block - margin)
    inside_c = (c >= margin) & (c < block - margin)
    return inside_r[:, None] & inside_c[None, :]


def _hold_out(prepared: PreparedReference, keep: np.ndarray) -> PreparedReference:
    """``prepared`` with its data weights multiplied by the (H, W) 0/1 map ``keep`` at every
    level (resampled like the weights themselves), so held-out pixels carry no data term."""
    dtype = prepared.dtype
    weights = list(prepared.weights)
    for lvl in range(prepared.finest, len(prepared.shapes)):
        lh, lw = prepared.shapes[lvl]
        level_keep = np.clip(resize(keep[None].astype(dtype), (lh, lw))[0], 0.0, 1.0)
        masked = weights[lvl].copy()
        masked[:, 1:-1, 1:-1] *= level_keep
        weights[lvl] = masked
    return prepared._replace(weights=tuple(weights))


def select_alpha(
    reference: np.ndarray,
    frames: np.ndarray,
    params: FlowParameters | None = None,
    *,
    weight: np.ndarray | None = None,
    candidates: tuple[float, ...] = ALPHA_GRID,
    block: int = BLOCK,
    margin: int = MARGIN,
    uv: np.ndarray | None = None,
    dtype=np.float32,
) -> AlphaSelection:
    """Choose the smoothness weight for registering ``frames`` to ``reference``.

    Parameters
    ----------
    reference : ndarray
        ``(H, W)`` or ``(H, W, C)`` pre-processed reference (as for :func:`prepare_reference`).
    frames : ndarray
        ``(T, H, W)`` or ``(T, H, W, C)`` pre-processed frames to validate on (a few suffice;
        they should show the recording's typical motion).
    params : FlowParameters, optional
        The other solver parameters (their ``alpha`` is ignored).
    weight : ndarray, optional
        Channel weights or spatial weight map, as for :func:`prepare_reference`.
    candidates : tuple of float
        Weights to try, increasing; the result lies in their range.
    block, margin : int
        Side of the held-out blocks and the margin left out of the score, in pixels.
    uv : ndarray, optional
        Initial field ``(H, W, 2)`` for every frame.

    Returns
    -------
    AlphaSelection
    """
    params = params or FlowParameters()
    reference = np.asarray(reference)
    frames = np.asarray(frames)
    if frames.ndim == reference.ndim:
        frames = frames[None]
    if frames.shape[1:] != reference.shape or len(frames) == 0:
        raise ValueError(
            f"frames must be (T, *reference.shape) = (T, {reference.shape}), got {frames.shape}"
        )
    cands = tuple(float(a) for a in candidates)
    if len(cands) < 1 or any(not (a > 0 and math.isfinite(a)) for a in cands):
        raise ValueError(f"candidates must be finite weights > 0, got {candidates}")
    if list(cands) != sorted(cands):
        raise ValueError(f"candidates must be increasing, got {candidates}")
    shape = reference.shape[:2]
    if min(shape) < 2 * block:
        raise ValueError(
            f"alpha='auto' needs frames of at least {2 * block} x {2 * block} px, got {shape}"
        )
    colour = checkerboard(shape, block)
    scored = _scored(shape, block, margin)
    base = prepare_reference(reference, params, weight=weight, dtype=dtype)
    ref = reference if reference.ndim == 3 else reference[..., None]
    folds = []
    for held in (0, 1):
        keep = (colour != held).astype(np.float64)
        folds.append((_hold_out(base, keep), (colour == held) & scored))
    default = DEFAULT_ALPHA * DATA_FRACTION  # the fold weight that stands for the default
    grid = cands if default in cands else tuple(sorted({*cands, default}))
    residuals = np.empty((len(grid), 2 * len(frames)))  # per candidate, per (fold, frame)
    for c, a in enumerate(grid):
        p = replace(params, alpha=(a, a))
        k = 0
        for prepared, mask in folds:
            prepared = prepared._replace(params=p)
            for frame in frames:
                w = estimate(prepared, frame, uv)
                moved = warp(frame if frame.ndim == 3 else frame[..., None], w)
                residuals[c, k] = np.abs(moved - ref)[mask].mean()
                k += 1
    scores = residuals.mean(axis=1)
    best = int(np.argmin(scores))
    diff = residuals[grid.index(default)] - residuals[best]
    spread = diff.std(ddof=1) / np.sqrt(diff.size) if diff.size > 1 else 0.0
    gain = diff.mean()
    # a gain must be a share of the default's residual, and that residual more than rounding
    contrast = float(np.abs(ref - ref.mean()).mean())
    floor = max(MIN_GAIN * scores[grid.index(default)], 1e-6 * contrast)
    significant = bool(gain > 2.0 * spread and gain > floor and best != grid.index(default))
    alpha = round(_refine(grid, list(scores)) / DATA_FRACTION, 3) if significant else DEFAULT_ALPHA
    return AlphaSelection(alpha, grid, tuple(float(x) for x in scores), significant)


def _refine(candidates: tuple[float, ...], scores: list[float]) -> float:
    """Minimum of the scores: the vertex of the parabola in ``log alpha`` through the best grid
    point and its neighbours (kept between those neighbours), or the best point at an end."""
    i = int(np.argmin(scores))
    if i == 0 or i == len(scores) - 1:
        return candidates[i]
    x = np.log(candidates[i - 1 : i + 2])
    y = np.asarray(scores[i - 1 : i + 2])
    denom = (x[0] - x[1]) * (x[0] - x[2]) * (x[1] - x[2])
    a = (x[2] * (y[1] - y[0]) + x[1] * (y[0] - y[2]) + x[0] * (y[2] - y[1])) / denom
    b = (x[2] ** 2 * (y[0] - y[1]) + x[1] ** 2 * (y[2] - y[0]) + x[0] ** 2 * (y[1] - y[2])) / denom
    if a <= 0:
        return candidates[i]
    vertex = float(np.clip(-b / (2 * a), x[0], x[2]))
    return math.exp(vertex)
