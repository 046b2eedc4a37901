"""The ``flowreg_torch`` flow backend: the flow engine in PyTorch, on CPU or CUDA.

The frame axis is a tensor dimension: a batch of ``batch_frames`` frames goes through the whole
coarse-to-fine solve on the device (pyramid, warps, motion tensors, red-black SOR, median, final
upsampling) without host round trips. The numerics are those of :mod:`pyflowreg.core` (see
docs/numerics.md); fields agree with the CPU backend to a small fraction of a pixel.

Example
-------
>>> from pyflowreg.core import FlowParameters
>>> backend = TorchBackend(FlowParameters.from_quality("balanced"), {"device": "cpu"})
>>> prepared = backend.prepare_reference(reference)          # (H, W, C) float32
>>> w = backend.estimate(prepared, frames)                   # (T, H, W, 2) float32
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import torch
except ImportError as err:  # pragma: no cover - exercised without torch installed
    raise ImportError(
        'the flowreg_torch backend needs PyTorch: pip install "pyflowreg[torch]"'
    ) from err

from ..core.flow import data_weights
from ..core.params import FlowParameters
from ..core.pyramid import level_shapes, level_sigma
from .base import FlowBackend, broadcast_uv
from .torch_graph import GraphCache
from .torch_kernels import (
    apply_axes,
    clear_unobserved_,
    derivatives,
    motion_tensor,
    resize_matrix,
    smooth_matrix,
    spline_matrix,
    warp_level,
)
from .torch_median import median5
from .torch_solver import SolverSettings, pad_edge, sor_solve

BACKEND_PARAMS = ("device", "dtype", "batch_frames", "cuda_graphs")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
MAX_BATCH = 256
CPU_BATCH = 8


@dataclass(frozen=True)
class TorchPreparedReference:
    """A reference prepared on the device: level images, derivatives, weights, resize operators.

    Level lists are indexed by level number; levels finer than ``finest`` hold None.
    """

    shape: tuple[int, int]
    n_channels: int
    shapes: tuple[tuple[int, int], ...]
    finest: int
    images: tuple  # per level (1, C, h, w)
    derivs: tuple  # per level tuple of 5 (1, C, h, w): fx, fy, fxx, fyy, fxy
    weights: tuple  # per level (1, C, h, w) data weights (interior of the solver's grid)
    device: torch.device
    dtype: torch.dtype


def _resolve_device(device: Any) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f'backend_params["device"] must be "cpu", "cuda" or "cuda:N", got {device!r}'
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            warnings.warn(
                f"CUDA is not available; flowreg_torch runs on the CPU instead of {device!r}",
                RuntimeWarning,
                stacklevel=4,
            )
            return torch.device("cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f'backend_params["device"] is {device!r}, but only '
                f"{torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type != "cpu":
        raise ValueError(
            f'backend_params["device"] must be "cpu", "cuda" or "cuda:N", got {device!r}'
        )
    return dev


def _resolve_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    try:
        key = np.dtype(dtype).name
    except TypeError:
        key = None
    if key not in DTYPES:
        raise ValueError(f'backend_params["dtype"] must be one of {list(DTYPES)}, got {dtype!r}')
    return DTYPES[key]


class TorchBackend(FlowBackend):
    """Flow backend on PyTorch tensors (``backend_params``: device, dtype, batch_frames, ...).

    Parameters
    ----------
    params : FlowParameters
        Model parameters.
    backend_params : dict, optional
        ``device``: ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``; CUDA requested where it is
        unavailable warns and uses the CPU. ``dtype``: ``"float32"`` (default) or ``"float64"``
        (torch dtypes accepted). ``batch_frames``: frames solved together on the device; by
        default chosen from the free device memory (at most 256), 8 on the CPU.
        ``cuda_graphs``: on CUDA, capture each batch shape's whole solve once as a CUDA graph
        and replay it (removes the kernel-launch overhead of small batches and coarse presets;
        default False; ignored on the CPU).

    Notes
    -----
    Float32 resampling products follow torch's matmul precision setting (full float32 unless
    TF32 is enabled globally).
    """

    name = "flowreg_torch"

    def __init__(self, params: FlowParameters, backend_params: dict | None = None) -> None:
        super().__init__(params, backend_params)
        unknown = sorted(set(self.backend_params) - set(BACKEND_PARAMS))
        if unknown:
            raise ValueError(
                f"unknown flowreg_torch backend_params {unknown}; valid keys are "
                f"{list(BACKEND_PARAMS)}"
            )
        self.device = _resolve_device(self.backend_params.get("device", "cpu"))
        self.dtype = _resolve_dtype(self.backend_params.get("dtype", "float32"))
        batch = self.backend_params.get("batch_frames")
        if batch is not None:
            if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)):
                raise TypeError(
                    f'backend_params["batch_frames"] must be an integer, got {type(batch).__name__}'
                )
            if batch < 1:
                raise ValueError(f'backend_params["batch_frames"] must be >= 1, got {batch}')
        self.batch_frames = None if batch is None else int(batch)
        graphs = self.backend_params.get("cuda_graphs", False)
        if not isinstance(graphs, bool):
            raise TypeError(
                f'backend_params["cuda_graphs"] must be True or False, got {type(graphs).__name__}'
            )
        self._solve = self._estimate_batch
        if graphs and self.device.type == "cuda":
            self._solve = GraphCache(self._estimate_batch, self.device)
        self._matrices: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ helpers

    def _matrix(self, n_src: int, n_dst: int) -> torch.Tensor | None:
        """Device cubic resize matrix ``(n_dst, n_src)``; None when the size does not change."""
        if n_src == n_dst:
            return None
        key = ("resize", n_src, n_dst)
        if key not in self._matrices:
            mat = resize_matrix(n_src, n_dst)
            self._matrices[key] = torch.as_tensor(mat, dtype=self.dtype, device=self.device)
        return self._matrices[key]

    def _level_matrix(
        self, n_full: int, n_level: int, sigma: float | None, spline: bool
    ) -> torch.Tensor:
        """Device matrix ``(n_level, n_full)`` of one pyramid axis, cached per its arguments.

        ``sigma``: blur of ``sigma`` px fused with the cubic resize from full resolution (it
        applies even where the size does not change); None for level 0 (identity). ``spline``:
        followed by the level's cubic B-spline prefilter (the coefficients the level warp
        interpolates), folded into the same matrix.
        """
        key = ("level", n_full, n_level, sigma, spline)
        if key not in self._matrices:
            mat = np.eye(n_full) if sigma is None else smooth_matrix(n_full, n_level, sigma)
            if spline:
                mat = spline_matrix(n_level) @ mat
            self._matrices[key] = torch.as_tensor(mat, dtype=self.dtype, device=self.device)
        return self._matrices[key]

    def _resize(self, x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Cubic resize of the last two axes of ``x`` to ``shape`` (no blur, no value scaling)."""
        my = self._matrix(x.shape[-2], shape[0])
        mx = self._matrix(x.shape[-1], shape[1])
        return apply_axes(x, my, None if mx is None else mx.T)

    def _pyramid(self, img: torch.Tensor, shapes, finest: int, spline: bool = False) -> list:
        """Pyramid of ``img`` (T, C, H, W); levels finer than ``finest`` are None.

        Every level ``i >= 1`` is resampled directly from the full-resolution frame (blur of
        ``0.6 / s`` px fused with the cubic resize, rows then columns, as
        :func:`pyflowreg.core.pyramid.build_pyramid`). With ``spline`` the levels are the cubic
        B-spline coefficients of those images (:func:`pyflowreg.core.warp.level_coefficients`),
        which is all the level warp reads of the moving frames: one matrix per axis does both.
        """
        levels: list = [None] * len(shapes)
        full = shapes[0]
        for i in range(max(finest, 0), len(shapes)):
            if i == 0 and not spline:
                levels[0] = img
                continue
            sigma = None if i == 0 else level_sigma(full, shapes[i])
            my = self._level_matrix(full[0], shapes[i][0], sigma, spline)
            mx = self._level_matrix(full[1], shapes[i][1], sigma, spline)
            levels[i] = apply_axes(img, my, mx.T)
        return levels

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        # a writable C-contiguous host array (broadcast inputs are read-only views)
        host = np.require(array, requirements=("C", "W"))
        return torch.from_numpy(host).to(self.device, self.dtype)

    def _default_batch(self, shape: tuple[int, int], n_channels: int) -> int:
        """Frames per device batch from the free device memory (CUDA) or a modest CPU default."""
        if self.batch_frames is not None:
            return self.batch_frames
        if self.device.type != "cuda":
            return CPU_BATCH
        free, _ = torch.cuda.mem_get_info(self.device)
        item = torch.finfo(self.dtype).bits // 8
        pixels = shape[0] * shape[1]
        # per full-resolution pixel at the peak (level 0): moving pyramid, warp positions and
        # weights, int64 gather indices, derivatives and motion tensors per channel, solver
        # state and the live planes of the median network
        per_frame = pixels * (item * (60 + 24 * n_channels) + 64)
        return int(max(1, min(MAX_BATCH, 0.5 * free // per_frame)))

    # ------------------------------------------------------------------ contract

    @torch.inference_mode()
    def prepare_reference(
        self, reference: np.ndarray, weight: np.ndarray | None = None
    ) -> TorchPreparedReference:
        """Reference pyramid, derivatives and level data weights on the device.

        Parameters
        ----------
        reference : ndarray
            ``(H, W, C)`` or ``(H, W)`` float frame, normalised and pre-filtered.
        weight : ndarray, optional
            Channel weights ``(C,)`` or a spatial map ``(H, W)`` / ``(H, W, C)``.
        """
        ref = np.asarray(reference)
        if ref.ndim == 2:
            ref = ref[:, :, None]
        if ref.ndim != 3 or ref.dtype.kind not in "uif":
            raise ValueError(f"reference must be a real (H, W) or (H, W, C) array, got {ref.shape}")
        if min(ref.shape[:2]) < 3:
            raise ValueError(f"reference must be at least 3x3 pixels, got {ref.shape[:2]}")
        if not np.all(np.isfinite(ref)):
            raise ValueError("reference contains NaN or infinite values")
        h, w, c = ref.shape
        p = self.params
        shapes = tuple(level_shapes((h, w), p.eta, p.levels))
        finest = min(p.min_level, len(shapes) - 1)
        img = self._to_device(np.moveaxis(ref, -1, 0)[None])
        weights_full = self._to_device(data_weights(weight, (h, w), c, np.float64)[None])
        images = self._pyramid(img, shapes, finest)
        derivs: list = [None] * len(shapes)
        weights: list = [None] * len(shapes)
        for lvl in range(finest, len(shapes)):
            lh, lw = shapes[lvl]
            derivs[lvl] = derivatives(images[lvl], w / lw, h / lh)
            weights[lvl] = self._resize(weights_full, (lh, lw)).clamp_min_(0.0)
        return TorchPreparedReference(
            (h, w), c, shapes, finest, tuple(images), tuple(derivs), tuple(weights),
            self.device, self.dtype,
        )  # fmt: skip

    def estimate(
        self,
        prepared: TorchPreparedReference,
        frames: np.ndarray,
        uv: np.ndarray | None = None,
    ) -> np.ndarray:
        """Displacement fields ``(T, H, W, 2)`` float32 for ``frames`` ``(T, H, W, C)``.

        Frames are solved in device batches of ``batch_frames``; ``uv`` is the initial field,
        ``(H, W, 2)`` for every frame or ``(T, H, W, 2)``, in pixels.
        """
        if not isinstance(prepared, TorchPreparedReference):
            raise TypeError(
                "prepared must come from TorchBackend.prepare_reference, "
                f"got {type(prepared).__name__}"
            )
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[..., None]
        expected = (*prepared.shape, prepared.n_channels)
        if frames.ndim != 4 or frames.shape[1:] != expected:
            raise ValueError(f"frames must have shape (T, {', '.join(map(str, expected))}), "
                             f"got {frames.shape}")  # fmt: skip
        if not np.all(np.isfinite(frames)):
            raise ValueError("frames contain NaN or infinite values")
        n = frames.shape[0]
        uv_all = broadcast_uv(uv, n, prepared.shape)
        if not np.all(np.isfinite(uv_all)):
            raise ValueError("initial flow uv contains NaN or infinite values")
        out = np.empty((n, *prepared.shape, 2), np.float32)
        step = self._default_batch(prepared.shape, prepared.n_channels)
        with torch.inference_mode():
            for s in range(0, n, step):
                mov = self._to_device(np.moveaxis(frames[s : s + step], -1, 1))
                init = self._to_device(np.moveaxis(uv_all[s : s + step], -1, 1))
                flow = self._solve(prepared, mov, init)
                out[s : s + step] = flow.permute(0, 2, 3, 1).to("cpu", torch.float32).numpy()
        return out

    def close(self) -> None:
        """Release the captured graphs and cached device matrices."""
        if isinstance(self._solve, GraphCache):
            self._solve.clear()
        self._matrices.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _estimate_batch(
        self, prep: TorchPreparedReference, mov: torch.Tensor, flow: torch.Tensor
    ) -> torch.Tensor:
        """Coarse-to-fine solve of ``mov`` (T, C, H, W) from ``flow`` (T, 2, H, W) on the device."""
        p = self.params
        h, w = prep.shape
        shapes = prep.shapes
        coarsest = len(shapes) - 1
        pyramid = self._pyramid(mov, shapes, prep.finest, spline=True)
        flow = self._resize(flow, shapes[coarsest])
        for lvl in range(coarsest, prep.finest - 1, -1):
            lh, lw = shapes[lvl]
            if flow.shape[-2:] != (lh, lw):
                flow = self._resize(flow, (lh, lw))
            hx, hy = w / lw, h / lh
            scale = 1.0 if lvl == prep.finest else p.eta ** (-lvl / 2.0)
            u, v = flow[:, 0], flow[:, 1]
            ref = prep.images[lvl]
            warped, outside = warp_level(pyramid[lvl], ref, u, v, hx, hy, return_outside=True)
            pyramid[lvl] = None
            J = motion_tensor(
                ref, prep.derivs[lvl], warped, derivatives(warped, hx, hy), p.constancy_assumption
            )
            clear_unobserved_(J, outside)
            del outside
            settings = SolverSettings(
                p.alpha[0] * scale, p.alpha[1] * scale, hx, hy,
                p.iterations, p.update_lag, p.a_data, p.a_smooth, p.omega,
            )  # fmt: skip
            # the solver's grid is the frame plus a ghost ring (flow replicated into it): every
            # frame pixel carries its data term
            padded = pad_edge(flow)
            U, V = sor_solve(J, prep.weights[lvl], padded[:, 0], padded[:, 1], settings)
            del J, padded
            du = U[:, 1:-1, 1:-1].sub(u)
            dv = V[:, 1:-1, 1:-1].sub(v)
            if lh > 5 and lw > 5:
                du, dv = median5(du), median5(dv)
            flow = torch.stack((u + du, v + dv), dim=1)
        if flow.shape[-2:] != (h, w):
            flow = self._resize(flow, (h, w))
        return flow
