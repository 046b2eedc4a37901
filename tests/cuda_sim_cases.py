"""Tiny inputs for the flowreg_cuda tests, and a runner for numba's CUDA simulator.

The simulator must be switched on before numba.cuda is first imported, so
``tests/test_cuda_backend.py`` runs this file in a subprocess::

    NUMBA_ENABLE_CUDASIM=1 python tests/cuda_sim_cases.py OUT_DIR CASE [CASE ...]

which writes ``OUT_DIR/CASE.npz`` with the backend's fields (``w``) and the messages of the
errors it was asked to provoke; the ``kernels`` case instead writes, for every CUDA kernel, the
largest absolute difference to the core kernel it mirrors (``names``, ``diffs``). Importing this
module does not import numba.cuda.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from pyflowreg.core.params import FlowParameters
from pyflowreg.datasets import make_pair

SHAPE = (16, 20)
SHIFTS = ((0.6, -0.4), (-0.3, 0.8))  # (u, v) of the two moving frames, in pixels


def make_data(n_channels: int = 1, seed: int = 3, shape: tuple[int, int] = SHAPE):
    """Pre-filtered reference (H, W, C), frames (T, H, W, C), ground-truth fields (T, H, W, 2)."""
    refs, movs, gts = [], [], []
    for u, v in SHIFTS:
        w = np.empty((*shape, 2), np.float32)
        w[..., 0], w[..., 1] = u, v
        ref, mov, gt = make_pair(shape, w, seed=seed, n_channels=n_channels)
        refs.append(ref)
        movs.append(mov)
        gts.append(gt)
    smooth = (1.0, 1.0, 0.0)
    reference = gaussian_filter(refs[0], smooth).astype(np.float32)
    frames = np.stack([gaussian_filter(m, smooth) for m in movs]).astype(np.float32)
    return reference, frames, np.stack(gts)


def make_case(name: str) -> dict:
    """Parameters and inputs of one test case (identical in the parent and the subprocess)."""
    rng = np.random.default_rng(7)
    if name == "default":
        reference, frames, gt = make_data()
        return dict(
            params=FlowParameters(iterations=8, update_lag=3),
            backend_params={},
            reference=reference, frames=frames, gt=gt, uv=None, weight=None,
        )  # fmt: skip
    if name == "grid_robust":
        reference, frames, gt = make_data()
        uv = np.empty((*SHAPE, 2), np.float32)
        uv[..., 0], uv[..., 1] = 0.3, -0.2
        weight = (0.5 + rng.random(SHAPE)).astype(np.float32)
        return dict(
            params=FlowParameters(iterations=6, update_lag=2, a_smooth=0.5, alpha=(1.0, 2.0)),
            backend_params={"block_level_pixels": 0, "batch_frames": 2},
            reference=reference, frames=frames, gt=gt, uv=uv, weight=weight,
        )  # fmt: skip
    if name == "gray_channels":
        # 12 rows never shrink (12 * 0.8 < 10): only the columns are resized between levels
        reference, frames, gt = make_data(n_channels=2, shape=(12, 30))
        uv = gaussian_filter(rng.normal(0, 0.5, (2, 12, 30, 2)), (0, 3, 3, 0)).astype(np.float32)
        return dict(
            params=FlowParameters(iterations=6, min_level=1, constancy_assumption="gray"),
            backend_params={"batch_frames": 1, "device": "cuda:0"},
            reference=reference, frames=frames, gt=gt, uv=uv,
            weight=np.array([2.0, 1.0], np.float32),
        )  # fmt: skip
    raise ValueError(f"unknown case {name!r}")


def _kernel_diffs() -> dict[str, float]:
    """Max |CUDA - core| of each kernel on 16x20 inputs (two frames, two channels), relative
    to the size of the core's values where they exceed 1."""
    from numba import cuda

    from pyflowreg.backends.cuda_backend import CudaBackend, view
    from pyflowreg.core import pyramid as cp
    from pyflowreg.core import tensors as ct
    from pyflowreg.core.flow import level_step, pad_edge, prepare_reference
    from pyflowreg.core.solver import MEDIAN25
    from pyflowreg.core.warp import level_coefficients, warp_level

    rng = np.random.default_rng(11)
    h, w = SHAPE
    diffs: dict[str, float] = {}

    def record(name, got, expected, axis=None):
        """Max |got - expected|, relative to max(1, max |expected|) (per index along ``axis``:
        the motion-tensor components differ by orders of magnitude)."""
        err = np.abs(np.asarray(got, np.float64) - expected)
        keep = tuple(i for i in range(err.ndim) if i != axis)
        size = np.maximum(1.0, np.abs(expected).max(axis=keep))
        diffs[name] = float((err.max(axis=keep) / size).max())

    backend = CudaBackend(FlowParameters(), {})
    k = backend._k
    launch = backend._launch
    # pyramid: every level resampled from the full frame (fused blur + cubic), as the core
    img = rng.random((2, h, w)).astype(np.float32)
    shapes = cp.level_shapes((h, w), 0.8, 100)
    core_levels = cp.build_pyramid(img, shapes, 0)
    full = cuda.to_device(img)
    tmp = cuda.device_array(img.size, np.float32)
    worst = 0.0
    for lvl in range(1, len(shapes)):
        out = cuda.device_array((2, *shapes[lvl]), np.float32)
        backend._downsample(full, out, tmp)
        worst = max(worst, float(np.abs(out.copy_to_host() - core_levels[lvl]).max()))
    diffs["pyramid"] = worst
    # derivatives (every pixel, compact second differences)
    hx, hy = 1.25, 1.6
    scales = (0.5 / hx, 0.5 / hy, 1.0 / hx**2, 1.0 / hy**2)
    d = cuda.device_array((5, 2, h, w), np.float32)
    launch(k.derivatives, (w, h, 2), full, d, *scales)
    record("derivatives", d.copy_to_host(), ct.derivatives(img, hx, hy))
    # B-spline prefilter of the level images (exact periodic sum, and the truncated one of
    # lines longer than 30 px)
    worst = 0.0
    for shape in ((4, h, w), (2, 3, 40), (2, 33, 1)):
        lines = rng.random(shape).astype(np.float32)
        dev = cuda.to_device(lines)
        backend._spline(dev)
        worst = max(worst, float(np.abs(dev.copy_to_host() - level_coefficients(lines)).max()))
    diffs["spline"] = worst
    # level warp (B-spline of the coefficients, outside samples from the reference); two frames,
    # two channels
    ref = rng.random((2, h, w)).astype(np.float32)
    mov = rng.random((2, 2, h, w)).astype(np.float32)
    coefficients = np.stack([level_coefficients(m) for m in mov])
    flow = rng.uniform(-4, 4, (2, 2, h, w)).astype(np.float32)  # (2, B, h, w)
    warped = cuda.device_array((4, h, w), np.float32)
    args = (cuda.to_device(coefficients.reshape(4, h, w)), cuda.to_device(ref))
    launch(k.warp_level, (w, h, 2), *args, cuda.to_device(flow), warped, 2, hx, hy)
    expected = [warp_level(coefficients[b], ref, flow[0, b], flow[1, b], hx, hy) for b in range(2)]
    record("warp_level", warped.copy_to_host(), np.concatenate(expected))
    # motion tensors on every frame pixel, zero on the ghost ring and where the warp sample
    # falls outside the moving level
    ref_d = ct.derivatives(ref, hx, hy)
    for constancy, code in ct.CONSTANCY.items():
        J = cuda.device_array((2, 2, 6, h + 2, w + 2), np.float32)
        launch(
            k.motion_tensor, (w + 2, h + 2, 4), cuda.to_device(ref), cuda.to_device(ref_d),
            cuda.to_device(mov.reshape(4, h, w)), cuda.to_device(flow), J, hx, hy, *scales,
            constancy == "gc",
        )  # fmt: skip
        expected = []
        for b in range(2):
            Jb = ct.motion_tensor(ref, ref_d, mov[b], ct.derivatives(mov[b], hx, hy), code)
            ct.clear_unobserved(Jb, flow[0, b], flow[1, b], hx, hy)
            expected.append(Jb)
        assert 0 < int((np.stack(expected)[:, 0, 0, 1:-1, 1:-1] == 0).sum()) < 2 * h * w
        record(f"motion_tensor_{constancy}", J.copy_to_host(), np.stack(expected), axis=2)
    # edge-replicated start of the solver
    UV = cuda.device_array((2, 2, h + 2, w + 2), np.float32)
    launch(k.pad_flow, (w + 2, h + 2, 4), cuda.to_device(flow), UV)
    expected = np.stack([np.stack([pad_edge(f) for f in comp]) for comp in flow])
    record("pad_flow", UV.copy_to_host(), expected)
    # whole level steps (warp, tensors, ghost-ring solve, increments, median) on both solver
    # paths against core.flow.level_step
    reference, frames, _ = make_data(n_channels=2)
    for name, overrides, block, lvl in [
        ("level_step_block", {}, 4096, 1),
        ("level_step_grid_robust", {"a_smooth": 0.5, "alpha": (1.0, 2.0)}, 0, 0),
        ("level_step_gray", {"constancy_assumption": "gray"}, 0, 2),
    ]:
        params = FlowParameters(iterations=6, update_lag=2, **overrides)
        backend = CudaBackend(params, {"block_level_pixels": block})
        prep_gpu = backend.prepare_reference(reference)
        prep = prepare_reference(reference, params)
        lh, lw = prep.shapes[lvl]
        bufs = backend._get_buffers(2, prep_gpu)
        moving = [cp.build_pyramid(np.moveaxis(f, -1, 0).copy(), list(prep.shapes), 0)[lvl]
                  for f in frames]  # fmt: skip
        bufs.pyramid[lvl].copy_to_device(np.concatenate([level_coefficients(m) for m in moving]))
        uv = rng.normal(0, 0.5, (2, 2, lh, lw)).astype(np.float32)
        level_flow = view(bufs.flows[0], (2, 2, lh, lw))
        level_flow.copy_to_device(uv)
        backend._solve_level(prep_gpu, bufs, lvl, level_flow)
        scale = 1.0 if lvl == prep.finest else params.eta ** (-lvl / 2.0)
        expected = []
        for b in range(2):
            u, v = level_step(
                prep.images[lvl], prep.derivs[lvl], prep.weights[lvl], moving[b],
                uv[0, b].copy(), uv[1, b].copy(), w / lw, h / lh,
                params.alpha[0] * scale, params.alpha[1] * scale, params.iterations,
                params.update_lag, params.a_data, params.a_smooth, params.omega,
                ct.CONSTANCY[params.constancy_assumption], MEDIAN25,
            )  # fmt: skip
            expected.append((u, v))
        record(name, level_flow.copy_to_host(), np.stack(expected, axis=1))
        backend.close()
    return diffs


def _run(name: str, out_dir: Path) -> None:
    from pyflowreg.backends.cuda_backend import CudaBackend

    if name == "kernels":
        diffs = _kernel_diffs()
        np.savez(
            out_dir / "kernels.npz",
            names=np.array(list(diffs)),
            diffs=np.array(list(diffs.values())),
        )
        return
    case = make_case(name)
    backend = CudaBackend(case["params"], case["backend_params"])
    prepared = backend.prepare_reference(case["reference"], case["weight"])
    w = backend.estimate(prepared, case["frames"], case["uv"])
    errors = []
    for bad in (lambda: backend.estimate(prepared, case["frames"][..., :1, :]),
                lambda: backend.estimate(case["reference"], case["frames"])):  # fmt: skip
        try:
            bad()
        except (ValueError, TypeError) as err:
            errors.append(f"{type(err).__name__}: {err}")
    backend.close()
    np.savez(out_dir / f"{name}.npz", w=w, errors=np.array(errors))


if __name__ == "__main__":
    for case_name in sys.argv[2:]:
        _run(case_name, Path(sys.argv[1]))
