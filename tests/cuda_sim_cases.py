"""Tiny inputs for the flowreg_cuda tests, and a runner for numba's CUDA simulator.

The simulator must be switched on before numba.cuda is first imported, so
``tests/test_cuda_backend.py`` runs this file in a subprocess::

    NUMBA_ENABLE_CUDASIM=1 python tests/cuda_sim_cases.py OUT_DIR CASE [CASE ...]

which writes ``OUT_DIR/CASE.npz`` with the backend's fields (``w``) and the messages of the
errors it was asked to provoke. Importing this module does not import numba.cuda.
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


def _run(name: str, out_dir: Path) -> None:
    from pyflowreg.backends.cuda_backend import CudaBackend

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
