"""The ``flowreg_cuda`` flow backend: the flow engine as numba CUDA kernels.

A batch of frames goes through the whole coarse-to-fine solve on the device — pyramid levels
resampled from the full frame, B-spline warps, motion tensors, red-black SOR with lagged weights
on the frame plus a ghost ring, 5x5 median, prolongation and final upsampling — with the frame
axis as a grid dimension; only frames go up and fields come back.
The numerics are those of :mod:`pyflowreg.core` (docs/numerics.md), in float32.

Example
-------
>>> from pyflowreg.core import FlowParameters
>>> backend = CudaBackend(FlowParameters.from_quality("fast"), {"device": 0})
>>> prepared = backend.prepare_reference(reference)      # (H, W, C) float32
>>> w = backend.estimate(prepared, frames)               # (T, H, W, 2) float32

Without a GPU, ``NUMBA_ENABLE_CUDASIM=1`` (set before numba.cuda is first imported) runs the
kernels in numba's CUDA simulator: exact but very slow, for tests on tiny frames only.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any, NamedTuple

import numpy as np

from ..core.flow import channel_first, data_weights
from ..core.params import FlowParameters
from ..core.pyramid import FLOW_KERNEL, cubic_taps, level_shapes, level_sigma, resize, smooth_taps
from .base import FlowBackend

INSTALL_HINT = 'pip install "pyflowreg[cuda]"'
BACKEND_PARAMS = ("device", "batch_frames", "block_level_pixels")
MAX_BATCH = 512
MEMORY_FRACTION = 0.5  # of the free device memory that automatic batch sizes may use


def _import_cuda():
    """``numba.cuda``, or ImportError with the install hint when numba-cuda is missing."""
    if importlib.util.find_spec("numba_cuda") is None:
        raise ImportError(f"the flowreg_cuda backend needs numba-cuda: {INSTALL_HINT}")
    from numba import cuda

    return cuda


def availability() -> tuple[bool, str]:
    """``(usable, reason)`` without creating a CUDA context (cheap; safe at any time)."""
    if importlib.util.find_spec("numba_cuda") is None:
        return False, f"numba-cuda is not installed; {INSTALL_HINT}"
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
        return True, ""
    cuda = _import_cuda()
    if not cuda.is_available():
        return False, "no CUDA device found (NUMBA_ENABLE_CUDASIM=1 runs the slow CUDA simulator)"
    return True, ""


def _device_index(device: Any) -> int:
    if device is None:
        return 0
    if isinstance(device, (int, np.integer)) and not isinstance(device, bool) and device >= 0:
        return int(device)
    if isinstance(device, str):
        name, _, index = device.partition(":")
        if name == "cuda" and (index == "" or index.isdigit()):
            return int(index or 0)
    raise ValueError(f'backend_params["device"] must be an index >= 0, "cuda" or "cuda:N", '
                     f"got {device!r}")  # fmt: skip


class CudaPreparedReference(NamedTuple):
    """A reference on the device; level tuples are indexed by level (None finer than finest)."""

    shape: tuple[int, int]
    n_channels: int
    shapes: tuple[tuple[int, int], ...]
    finest: int
    images: tuple  # per level (C, h, w) device arrays
    derivs: tuple  # per level (5, C, h, w): f_x, f_y, f_xx, f_yy, f_xy
    weights: tuple  # per level (C, h + 2, w + 2) data-term weights, zero ghost ring
    device: int


class _Buffers:
    """Device work arrays for one batch size, allocated once and reused (views per level).

    Pyramid levels finer than ``finest`` are not built (None, except the frames themselves);
    the solver arrays hold the finest level's grid, the frame plus a ghost ring."""

    def __init__(self, cuda, n_frames: int, n_channels: int, shapes, finest: int) -> None:
        b, c = n_frames, n_channels
        h, w = shapes[0]
        hf, wf = shapes[finest]
        f32 = np.float32
        self.frames_flat = cuda.device_array(b * h * w * c, f32)
        self.frames = self.frames_flat.reshape(b, h, w, c)
        self.field_flat = cuda.device_array(b * h * w * 2, f32)
        self.field = self.field_flat.reshape(b, h, w, 2)
        self.pyramid = [
            self.frames.reshape(b, h, w) if c == 1 else cuda.device_array((b * c, h, w), f32)
        ]
        self.pyramid += [
            cuda.device_array((b * c, lh, lw), f32) if lvl >= finest else None
            for lvl, (lh, lw) in enumerate(shapes[1:], start=1)
        ]
        half = b * h * w * max(c, 2)
        self.scratch = cuda.device_array(2 * half, f32)
        self.tmp = (self.scratch[:half], self.scratch[half:])
        n = b * hf * wf
        grid = b * (hf + 2) * (wf + 2)
        self.flows = (cuda.device_array(2 * n, f32), cuda.device_array(2 * n, f32))
        self.UV = cuda.device_array(2 * grid, f32)
        self.warped = cuda.device_array(c * n, f32)
        self.J = cuda.device_array(6 * c * grid, f32)
        self.A = cuda.device_array(5 * grid, f32)
        self.psi = cuda.device_array(grid, f32)

    @staticmethod
    def floats_per_frame(n_channels: int, shapes, finest: int) -> int:
        h, w = shapes[0]
        hf, wf = shapes[finest]
        c = n_channels
        pyramid = sum(lh * lw for lh, lw in shapes[max(finest, 1) :]) * c
        pyramid += h * w * c if c > 1 else 0
        grid = (hf + 2) * (wf + 2)
        return (
            h * w * (c + 2 + 2 * max(c, 2)) + pyramid + hf * wf * (4 + c) + grid * (2 + 6 * c + 6)
        )


def view(flat, shape):
    """A C-contiguous view of the first ``prod(shape)`` elements of a flat device array."""
    if flat.ndim != 1:
        flat = flat.reshape(flat.size)
    return flat[: math.prod(shape)].reshape(*shape)


class CudaBackend(FlowBackend):
    """Flow backend running the engine on an NVIDIA GPU through numba's CUDA target.

    Parameters
    ----------
    params : FlowParameters
        Model parameters (see ALGORITHM.md).
    backend_params : dict, optional
        ``device``: device index or ``"cuda:N"`` (default 0). ``batch_frames``: frames solved
        together (default: as many as fit in half of the free device memory, at most 512).
        ``block_level_pixels``: levels with at most this many pixels are solved by one thread
        block per frame in a single launch (default 4096).

    Raises
    ------
    ImportError
        numba-cuda is not installed.
    RuntimeError
        No CUDA device was found (and the simulator is not enabled).
    """

    name = "flowreg_cuda"

    def __init__(self, params: FlowParameters, backend_params: dict | None = None) -> None:
        super().__init__(params, backend_params)
        unknown = set(self.backend_params) - set(BACKEND_PARAMS)
        if unknown:
            raise ValueError(f"backend_params {sorted(unknown)} are not understood by the "
                             f"'flowreg_cuda' backend; valid: {list(BACKEND_PARAMS)}")  # fmt: skip
        self.device = _device_index(self.backend_params.get("device"))
        batch = self.backend_params.get("batch_frames")
        if batch is not None and (not isinstance(batch, (int, np.integer)) or batch < 1):
            raise ValueError(
                f'backend_params["batch_frames"] must be an integer >= 1, got {batch!r}'
            )
        self.batch_frames = None if batch is None else int(batch)
        block = self.backend_params.get("block_level_pixels", 4096)
        if not isinstance(block, (int, np.integer)) or isinstance(block, bool) or block < 0:
            raise ValueError(
                f'backend_params["block_level_pixels"] must be an integer >= 0, got {block!r}'
            )
        self.block_level_pixels = int(block)
        cuda = _import_cuda()
        from numba.cuda import config as cuda_config

        self.simulator = bool(cuda_config.ENABLE_CUDASIM)
        if not cuda.is_available():
            raise RuntimeError(
                "flowreg_cuda: no CUDA device was found; NUMBA_ENABLE_CUDASIM=1 runs the (slow) "
                "numba CUDA simulator instead"
            )
        n_gpus = len(cuda.gpus)
        if self.device >= n_gpus:
            raise ValueError(f'backend_params["device"] must be < {n_gpus} (devices found), '
                             f"got {self.device}")  # fmt: skip
        self._cuda = cuda
        from . import cuda_kernels

        self._k = cuda_kernels
        self._block2d = (8, 8, 1) if self.simulator else (32, 8, 1)
        self._solver_threads = 32 if self.simulator else 256
        self._sweep_block = (8, 4, 1) if self.simulator else (32, 8, 1)
        self._line_threads = 8 if self.simulator else 128
        self._tables: dict = {}
        self._buffers: dict[tuple, _Buffers] = {}

    # -- helpers ---------------------------------------------------------------------------------

    def _launch(self, kernel, shape3, *args) -> None:
        """Launch ``kernel`` over a ``(columns, rows, stack)`` grid."""
        bx, by, _ = self._block2d
        w, h, n = shape3
        kernel[(-(-w // bx), -(-h // by), n), self._block2d](*args)

    def _resize_table(self, n_src: int, n_dst: int):
        key = ("resize", n_src, n_dst)
        if key not in self._tables:
            idx, wts = cubic_taps(n_src, n_dst, "float64", FLOW_KERNEL)
            self._tables[key] = (
                self._cuda.to_device(idx.astype(np.int32)),
                self._cuda.to_device(wts.astype(np.float32)),
            )
        return self._tables[key]

    def _smooth_table(self, n_src: int, n_dst: int, sigma: float):
        """Device :func:`~pyflowreg.core.pyramid.smooth_taps` tables, cached per
        ``(n_src, n_dst, sigma)``."""
        key = ("smooth", n_src, n_dst, sigma)
        if key not in self._tables:
            start, wts = smooth_taps(n_src, n_dst, sigma, "float32")
            self._tables[key] = (
                self._cuda.to_device(start.astype(np.int32)),
                self._cuda.to_device(np.ascontiguousarray(wts)),
            )
        return self._tables[key]

    def _resize(self, src, out, tmp) -> None:
        """Cubic resize of ``src`` (N, hs, ws) into ``out`` (N, hd, wd); ``tmp`` is flat scratch."""
        n, hs, ws = src.shape
        _, hd, wd = out.shape
        k = self._k
        if hs != hd and ws != wd:
            mid = view(tmp, (n, hd, ws))
            self._launch(k.resize_rows, (ws, hd, n), src, mid, *self._resize_table(hs, hd))
            self._launch(k.resize_cols, (wd, hd, n), mid, out, *self._resize_table(ws, wd))
        elif hs != hd:
            self._launch(k.resize_rows, (ws, hd, n), src, out, *self._resize_table(hs, hd))
        elif ws != wd:
            self._launch(k.resize_cols, (wd, hd, n), src, out, *self._resize_table(ws, wd))
        else:
            out.copy_to_device(src)

    def _downsample(self, src, out, tmp) -> None:
        """A pyramid level ``out`` (N, hd, wd) resampled directly from the full-resolution
        ``src`` (N, H, W), as :func:`pyflowreg.core.pyramid.downsample`: Gaussian of
        ``0.6 / s`` px fused with the cubic resize, rows then columns. ``tmp`` is flat scratch
        of at least ``N * hd * W`` floats."""
        n, hs, ws = src.shape
        _, hd, wd = out.shape
        sigma = level_sigma((hs, ws), (hd, wd))
        mid = view(tmp, (n, hd, ws))
        k = self._k
        self._launch(k.smooth_rows, (ws, hd, n), src, mid, *self._smooth_table(hs, hd, sigma))
        self._launch(k.smooth_cols, (wd, hd, n), mid, out, *self._smooth_table(ws, wd, sigma))

    def _spline(self, img) -> None:
        """In place: the cubic B-spline coefficients of ``img`` (N, h, w), the only form in
        which the level warp reads the moving frames (:func:`pyflowreg.core.warp.
        level_coefficients`): one thread per row, then one per column."""
        n, h, w = img.shape
        t = self._line_threads
        self._k.spline_rows[(-(-h // t), 1, n), (t, 1, 1)](img)
        self._k.spline_cols[(-(-w // t), 1, n), (t, 1, 1)](img)

    def _context(self):
        return self._cuda.gpus[self.device]

    def _scalars(self, key, values):
        """A cached float32 device vector (per-level solver coefficients)."""
        if key not in self._tables:
            self._tables[key] = self._cuda.to_device(np.asarray(values, np.float32))
        return self._tables[key]

    # -- reference -------------------------------------------------------------------------------

    def prepare_reference(
        self, reference: np.ndarray, weight: np.ndarray | None = None
    ) -> CudaPreparedReference:
        """Upload the reference and build its pyramid, derivatives and data weights on the device.

        Parameters
        ----------
        reference : ndarray
            ``(H, W)`` or ``(H, W, C)`` float frame, normalised and pre-filtered.
        weight : ndarray, optional
            Channel weights ``(C,)`` or a spatial map ``(H, W)`` / ``(H, W, C)``.
        """
        p = self.params
        ref = channel_first(reference, "reference", np.float32)
        c, h, w = ref.shape
        shapes = tuple(level_shapes((h, w), p.eta, p.levels))
        finest = min(p.min_level, len(shapes) - 1)
        weights_full = data_weights(weight, (h, w), c, np.float32)
        cuda, k = self._cuda, self._k
        with self._context():
            tmp = cuda.device_array(c * h * w, np.float32)
            full = cuda.to_device(ref)
            images, derivs, weights = [], [], []
            for lvl, (lh, lw) in enumerate(shapes):
                if lvl < finest:
                    images.append(None)
                    derivs.append(None)
                    weights.append(None)
                    continue
                if lvl == 0:
                    image = full
                else:
                    image = cuda.device_array((c, lh, lw), np.float32)
                    self._downsample(full, image, tmp)
                images.append(image)
                d = cuda.device_array((5, c, lh, lw), np.float32)
                hx, hy = w / lw, h / lh
                scales = (0.5 / hx, 0.5 / hy, 1.0 / (hx * hx), 1.0 / (hy * hy))
                self._launch(k.derivatives, (lw, lh, c), image, d, *scales)
                derivs.append(d)
                wl = np.zeros((c, lh + 2, lw + 2), np.float32)
                wl[:, 1:-1, 1:-1] = np.maximum(resize(weights_full, (lh, lw)), 0)
                weights.append(cuda.to_device(wl))
            cuda.synchronize()
        return CudaPreparedReference(
            (h, w), c, shapes, finest, tuple(images), tuple(derivs), tuple(weights), self.device
        )

    # -- frames ----------------------------------------------------------------------------------

    def estimate(
        self, prepared: CudaPreparedReference, frames: np.ndarray, uv: np.ndarray | None = None
    ) -> np.ndarray:
        """Displacement fields of ``frames`` against the prepared reference.

        Parameters
        ----------
        prepared : CudaPreparedReference
            From :meth:`prepare_reference` of this backend.
        frames : ndarray
            ``(T, H, W, C)`` float frames, pre-processed like the reference.
        uv : ndarray, optional
            Initial field ``(H, W, 2)`` shared by all frames or ``(T, H, W, 2)``, in pixels.

        Returns
        -------
        ndarray
            ``(T, H, W, 2)`` float32; ``[..., 0] = u`` (x), ``[..., 1] = v`` (y), in pixels.
        """
        if not isinstance(prepared, CudaPreparedReference):
            raise TypeError(
                "prepared must come from CudaBackend.prepare_reference, "
                f"got {type(prepared).__name__}"
            )
        h, w = prepared.shape
        expected = (h, w, prepared.n_channels)
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[1:] != expected:
            raise ValueError(f"frames must have shape (T, {h}, {w}, {expected[2]}), "
                             f"got {frames.shape}")  # fmt: skip
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        if not np.all(np.isfinite(frames)):
            raise ValueError("frames contain NaN or infinite values")
        n = frames.shape[0]
        if uv is not None:
            uv = np.ascontiguousarray(uv, dtype=np.float32)
            if uv.shape not in ((h, w, 2), (n, h, w, 2)):
                raise ValueError(f"initial flow uv must have shape {(h, w, 2)} or "
                                 f"{(n, h, w, 2)}, got {uv.shape}")  # fmt: skip
            if not np.all(np.isfinite(uv)):
                raise ValueError("initial flow uv contains NaN or infinite values")
        out = np.empty((n, h, w, 2), np.float32)
        if n == 0:
            return out
        with self._context():
            batch = self._batch_size(n, prepared)
            for start in range(0, n, batch):
                stop = min(n, start + batch)
                bufs = self._get_buffers(stop - start, prepared)
                init = uv if uv is None or uv.ndim == 3 else uv[start:stop]
                self._solve_batch(prepared, bufs, frames[start:stop], init)
                bufs.field.copy_to_host(out[start:stop])
        return out

    def _batch_size(self, n: int, prepared: CudaPreparedReference) -> int:
        cap = 65535 // max(prepared.n_channels, 2)  # grid z limit
        if self.batch_frames is not None:
            return max(1, min(n, self.batch_frames, cap))
        key = ("batch", prepared.shape, prepared.n_channels, prepared.finest)
        if key not in self._tables:
            per_frame = 4 * _Buffers.floats_per_frame(
                prepared.n_channels, prepared.shapes, prepared.finest
            )
            free = self._cuda.current_context().get_memory_info().free
            fit = MAX_BATCH if not math.isfinite(free) else int(MEMORY_FRACTION * free // per_frame)
            self._tables[key] = max(1, min(fit, MAX_BATCH, cap))
        return min(n, self._tables[key])

    def _get_buffers(self, n: int, prepared: CudaPreparedReference) -> _Buffers:
        key = (n, prepared.shapes, prepared.n_channels, prepared.finest)
        if key not in self._buffers:
            while len(self._buffers) >= 2:  # a full batch and a last, shorter one
                self._buffers.pop(next(iter(self._buffers)))
            self._buffers[key] = _Buffers(
                self._cuda, n, prepared.n_channels, prepared.shapes, prepared.finest
            )
        return self._buffers[key]

    def _initial_flow(self, prepared, bufs: _Buffers, uv, flow) -> None:
        """Initial fields resized to the coarsest level into ``flow`` (2, B, hc, wc)."""
        k = self._k
        h, w = prepared.shape
        _, b, hc, wc = flow.shape
        if uv is None:
            key = ("zeros", hc, wc)
            if key not in self._tables:
                self._tables[key] = self._cuda.to_device(np.zeros((2, 1, hc, wc), np.float32))
            self._launch(k.broadcast_flow, (wc, hc, b), self._tables[key], flow)
            return
        m = 1 if uv.ndim == 3 else b
        view(bufs.field_flat, (m * h * w * 2,)).copy_to_device(uv.reshape(-1))
        src = view(bufs.field_flat, (m, h, w, 2))
        planar = view(bufs.tmp[0], (2 * m, h, w))
        self._launch(k.to_planar, (w, h, m), src, planar, True)
        if m == b:
            self._resize(planar, view(flow, (2 * b, hc, wc)), bufs.tmp[1])
            return
        small = view(bufs.UV, (2, hc, wc))
        self._resize(planar, small, bufs.tmp[1])
        self._launch(k.broadcast_flow, (wc, hc, b), small.reshape(2, 1, hc, wc), flow)

    def _solve_batch(self, prepared, bufs: _Buffers, frames: np.ndarray, uv) -> None:
        k = self._k
        b, h, w, c = frames.shape
        shapes, finest = prepared.shapes, prepared.finest
        coarsest = len(shapes) - 1
        bufs.frames_flat.copy_to_device(frames.reshape(-1))
        if c > 1:
            self._launch(k.to_planar, (w, h, b), bufs.frames, bufs.pyramid[0], False)
        for lvl in range(max(finest, 1), len(shapes)):
            self._downsample(bufs.pyramid[0], bufs.pyramid[lvl], bufs.tmp[0])
            self._spline(bufs.pyramid[lvl])
        if finest == 0:  # last: the frames were the source of every other level
            self._spline(bufs.pyramid[0])
        cur = 0
        self._initial_flow(prepared, bufs, uv, view(bufs.flows[0], (2, b, *shapes[coarsest])))
        for lvl in range(coarsest, finest - 1, -1):
            lh, lw = shapes[lvl]
            if lvl != coarsest:
                src = view(bufs.flows[cur], (2 * b, *shapes[lvl + 1]))
                cur = 1 - cur
                self._resize(src, view(bufs.flows[cur], (2 * b, lh, lw)), bufs.UV)
            self._solve_level(prepared, bufs, lvl, view(bufs.flows[cur], (2, b, lh, lw)))
        hf, wf = shapes[finest]
        flow = view(bufs.flows[cur], (2 * b, hf, wf))
        if (hf, wf) != (h, w):
            full = view(bufs.tmp[0], (2 * b, h, w))
            self._resize(flow, full, bufs.tmp[1])
            flow = full
        self._launch(k.interleave_flow, (w, h, b), flow.reshape(2, b, h, w), bufs.field)

    def _solve_level(self, prepared, bufs: _Buffers, lvl: int, flow) -> None:
        """Warp, motion tensors, SOR solve and median-filtered update of ``flow`` in place."""
        k, p = self._k, self.params
        _, b, lh, lw = flow.shape
        c = prepared.n_channels
        h, w = prepared.shape
        hx, hy = w / lw, h / lh
        warped = view(bufs.warped, (b * c, lh, lw))
        image = prepared.images[lvl]
        self._launch(k.warp_level, (lw, lh, b), bufs.pyramid[lvl], image, flow, warped, c, hx, hy)
        # the solver's grid: the frame plus a ghost ring, so every frame pixel has its data term
        hp, wp = lh + 2, lw + 2
        J = view(bufs.J, (b, c, 6, hp, wp))
        gc = p.constancy_assumption == "gc"
        scales = (0.5 / hx, 0.5 / hy, 1.0 / (hx * hx), 1.0 / (hy * hy))
        args = (image, prepared.derivs[lvl], warped, flow, J, hx, hy, *scales, gc)
        self._launch(k.motion_tensor, (wp, hp, b * c), *args)
        UV = view(bufs.UV, (2, b, hp, wp))
        self._launch(k.pad_flow, (wp, hp, 2 * b), flow, UV)
        A = view(bufs.A, (5, b, hp, wp))
        psi = view(bufs.psi, (b, hp, wp))
        wts = prepared.weights[lvl]
        scale = 1.0 if lvl == prepared.finest else p.eta ** (-lvl / 2.0)
        coef = self._scalars(
            ("coef", lvl, lh, lw, h, w),
            (p.alpha[0] * scale / hx**2, p.alpha[1] * scale / hy**2, p.omega, p.a_data,
             p.a_data - 1.0),
        )  # fmt: skip
        smooth = (0.5 / hx, 0.5 / hy, p.a_smooth, p.a_smooth - 1.0)
        robust = p.a_smooth < 1.0
        n_pairs = (wp - 1) // 2
        if lh * lw <= self.block_level_pixels:
            threads = min(self._solver_threads, 32 * -(-(lh * n_pairs) // 32))
            scoef = self._scalars(("smooth", lh, lw, h, w), smooth)
            k.sor_level_block[b, threads](
                UV, flow, A, J, wts, psi, p.iterations, p.update_lag, robust, coef, scoef
            )
        else:
            bx, by, _ = self._sweep_block
            sweep = k.sor_half[(-(-n_pairs // bx), -(-lh // by), b), self._sweep_block]
            smooth32 = tuple(np.float32(s) for s in smooth)
            for it in range(p.iterations):
                refresh = it % p.update_lag == 0
                if refresh and robust:
                    self._launch(k.smooth_weights, (wp, hp, b), UV, psi, *smooth32)
                sweep(UV, flow, A, J, wts, psi, 0, refresh, robust, coef)
                sweep(UV, flow, A, J, wts, psi, 1, False, robust, coef)
        du = view(bufs.A, (2, b, lh, lw))
        self._launch(k.increments, (lw, lh, 2 * b), UV, flow, du)
        self._launch(k.median_update, (lw, lh, 2 * b), du, flow, lh > 5 and lw > 5)

    def close(self) -> None:
        """Release the device buffers and cached tables."""
        self._buffers.clear()
        self._tables.clear()
