"""The flowreg_cuda backend agrees with the CPU engine (numba's CUDA simulator, or a real GPU).

Without a GPU the backend runs in numba's CUDA simulator, which must be enabled before numba.cuda
is first imported: those cases run ``tests/cuda_sim_cases.py`` in a subprocess on 16x20 frames
(a few seconds each). Tolerances (docs/numerics.md targets): mean endpoint difference to the CPU
field <= 0.05 px, endpoint error against the ground truth within 0.02 px of the CPU's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyflowreg.backends import cuda_backend
from pyflowreg.core import FlowParameters
from pyflowreg.core.flow import estimate, prepare_reference

sys.path.insert(0, str(Path(__file__).parent))
from cuda_sim_cases import make_case

HERE = Path(__file__).parent


def _has_gpu() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
        return False
    return cuda_backend.availability()[0]


def _cpu_fields(case: dict) -> np.ndarray:
    prepared = prepare_reference(case["reference"], case["params"], weight=case["weight"])
    uv = case["uv"]
    return np.stack([
        estimate(prepared, frame, None if uv is None else (uv if uv.ndim == 3 else uv[t]))
        for t, frame in enumerate(case["frames"])
    ])  # fmt: skip


def _endpoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).sum(axis=-1))


def _run_simulator(name: str, out_dir: Path) -> dict:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run(
        [sys.executable, str(HERE / "cuda_sim_cases.py"), str(out_dir), name],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out_dir / f"{name}.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("name", ["default", "grid_robust", "gray_channels"])
def test_simulator_agrees_with_cpu(name, tmp_path):
    """Block-per-frame solver (default), per-colour launches with robust smoothness, a spatial
    weight map and a shared initial field (grid_robust), gray-value constancy with two weighted
    channels, per-frame initial fields, min_level 1, one frame per batch and 12x30 frames whose
    rows never shrink (gray_channels)."""
    case = make_case(name)
    result = _run_simulator(name, tmp_path)
    w = result["w"]
    assert w.shape == (*case["frames"].shape[:3], 2) and w.dtype == np.float32
    expected = _cpu_fields(case)
    diff = _endpoint(w, expected)
    assert diff.mean() <= 0.05 and diff.max() <= 0.25
    inner = (slice(None), slice(2, -2), slice(2, -2))
    epe = _endpoint(w, case["gt"])[inner].mean()
    epe_cpu = _endpoint(expected, case["gt"])[inner].mean()
    assert abs(epe - epe_cpu) <= 0.02
    if name == "default":  # known sub-pixel translations are recovered
        assert epe < 0.15
    _, h, w_, c = case["frames"].shape
    assert [str(e) for e in result["errors"]] == [
        f"ValueError: frames must have shape (T, {h}, {w_}, {c}), got (2, {h}, 1, {c})",
        "TypeError: prepared must come from CudaBackend.prepare_reference, got ndarray",
    ]


#: Largest relative difference of each CUDA kernel to the core kernel it mirrors (float32 on
#: both sides; see ``cuda_sim_cases._kernel_diffs``). The level steps run 6 SOR sweeps and the
#: median, so float32 rounding differences grow a little.
KERNEL_TOLERANCES = {
    "pyramid": 1e-6,
    "derivatives": 1e-6,
    "spline": 1e-6,
    "warp_level": 1e-6,
    "motion_tensor_gc": 2e-5,
    "motion_tensor_gray": 1e-6,
    "pad_flow": 0.0,
    "level_step_block": 1e-4,
    "level_step_grid_robust": 1e-4,
    "level_step_gray": 1e-4,
}


def test_simulator_kernels_equal_core(tmp_path):
    """Each kernel against its core counterpart: pyramid levels resampled from the full frame
    (fused blur + cubic), compact second differences, the B-spline prefilter of the moving levels
    and the B-spline level warp, motion tensors on every frame pixel with a zero ghost ring and
    none where the warp samples outside the moving level, the edge-replicated solver start, and
    whole level steps (both solver paths, robust smoothness, gray constancy) against
    core.flow.level_step."""
    data = _run_simulator("kernels", tmp_path)
    diffs = dict(zip((str(n) for n in data["names"]), data["diffs"].tolist(), strict=True))
    assert set(diffs) == set(KERNEL_TOLERANCES)
    for name, tol in KERNEL_TOLERANCES.items():
        assert diffs[name] <= tol, (name, diffs[name])


@pytest.mark.parametrize(
    ("backend_params", "match"),
    [
        ({"device": "gpu"}, r'backend_params\["device"\] must be an index >= 0, "cuda" or'),
        ({"device": -1}, r"got -1"),
        ({"batch_frames": 0}, r'backend_params\["batch_frames"\] must be an integer >= 1, got 0'),
        ({"block_level_pixels": -1}, r'"block_level_pixels"\] must be an integer >= 0, got -1'),
        ({"threads": 4}, r"\['threads'\] are not understood by the 'flowreg_cuda' backend"),
    ],
)
def test_bad_backend_params(backend_params, match):
    with pytest.raises(ValueError, match=match):
        cuda_backend.CudaBackend(FlowParameters(), backend_params)


def test_missing_numba_cuda(monkeypatch):
    real = cuda_backend.importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "numba_cuda" else real(name, *args)

    monkeypatch.setattr(cuda_backend.importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match=r'pip install "pyflowreg\[cuda\]"'):
        cuda_backend.CudaBackend(FlowParameters(), {})
    ok, reason = cuda_backend.availability()
    assert not ok and 'pip install "pyflowreg[cuda]"' in reason


def test_availability_with_simulator(monkeypatch):
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    assert cuda_backend.availability() == (True, "")


_NO_DEVICE_SCRIPT = """
from pyflowreg.backends import cuda_backend
from pyflowreg.core import FlowParameters
ok, reason = cuda_backend.availability()
if ok:
    print("DEVICE")
else:
    print(reason)
    try:
        cuda_backend.CudaBackend(FlowParameters(), {})
    except RuntimeError as err:
        print(err)
"""


def test_no_device_message():
    """Without a device and without the simulator: a reason and a RuntimeError naming the
    simulator. In a fresh process, since numba.cuda reads NUMBA_ENABLE_CUDASIM once at import
    (this process may run the whole file under the simulator)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run(
        [sys.executable, "-c", _NO_DEVICE_SCRIPT],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    if lines[:1] == ["DEVICE"]:
        pytest.skip("a CUDA device is present")
    assert "NUMBA_ENABLE_CUDASIM=1" in lines[0]
    assert "no CUDA device was found; NUMBA_ENABLE_CUDASIM=1" in lines[1]


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA device")
@pytest.mark.parametrize("quality", ["quality", "fast"])
def test_gpu_agrees_with_cpu(quality):
    """On a real device: 64x64 pair with the preset's parameters, both solver paths."""
    from scipy.ndimage import gaussian_filter

    from pyflowreg.datasets import make_pair

    ref, mov, gt = make_pair((64, 64), seed=1)
    ref = gaussian_filter(ref, (1, 1, 0))
    mov = gaussian_filter(mov, (1, 1, 0))
    params = FlowParameters.from_quality(quality)
    expected = estimate(prepare_reference(ref, params), mov)[None]
    for block in (0, 4096):
        backend = cuda_backend.CudaBackend(params, {"block_level_pixels": block})
        w = backend.estimate(backend.prepare_reference(ref), mov[None])
        assert _endpoint(w, expected).mean() <= 0.05
        epe = _endpoint(w[0], gt).mean()
        assert abs(epe - _endpoint(expected[0], gt).mean()) <= 0.02
