"""The ``flowreg_torch`` backend: kernels against the core, fields against the CPU backend.

Test data: ``pyflowreg.datasets.make_pair`` scenes (48x64 for full-resolution solves, 96x128
where the balanced/fast presets need pyramid levels 4 and 6) with their ground-truth fields.
Tolerances: the mean endpoint difference to the CPU backend is at most 0.05 px at every preset
and the mean endpoint error against the truth is within 0.02 px of the CPU backend's (float32);
float64 runs compute the same operations as the core and agree to 1e-4 px.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyflowreg._runtime import get_runtime  # noqa: E402
from pyflowreg.backends import torch_kernels as tk  # noqa: E402
from pyflowreg.backends import torch_median, torch_solver  # noqa: E402
from pyflowreg.backends.torch_backend import TorchBackend, TorchPreparedReference  # noqa: E402
from pyflowreg.core import FlowParameters, estimate, prepare_reference  # noqa: E402
from pyflowreg.core import pyramid as cp  # noqa: E402
from pyflowreg.core import solver as cs  # noqa: E402
from pyflowreg.core import tensors as ct  # noqa: E402
from pyflowreg.core.warp import level_coefficients  # noqa: E402
from pyflowreg.core.warp import warp_level as core_warp_level  # noqa: E402
from pyflowreg.datasets import make_pair  # noqa: E402
from pyflowreg.metrics import endpoint_error  # noqa: E402

CPU = {"device": "cpu"}


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _solve_both(params, ref, mov, dtype="float32", weight=None, uv=None):
    """(torch field, CPU field) for one pair."""
    backend = TorchBackend(params, {"device": "cpu", "dtype": dtype})
    w_torch = backend.estimate(backend.prepare_reference(ref, weight), mov[None], uv)[0]
    prepared = prepare_reference(ref, params, weight=weight, dtype=np.dtype(dtype))
    return w_torch, estimate(prepared, mov, uv)


def _mean_epd(a, b):
    return float(np.linalg.norm(a - b, axis=-1).mean())


# --------------------------------------------------------------------------- kernels vs core


@pytest.mark.parametrize(("n_src", "n_dst"), [(64, 51), (51, 41), (13, 64), (7, 7), (5, 1)])
def test_resize_matrix_equals_core_resize(n_src, n_dst):
    img = np.random.default_rng(0).random((2, n_src, 9))
    expected = cp.resize(img, (n_dst, 9))
    np.testing.assert_allclose(tk.resize_matrix(n_src, n_dst) @ img, expected, atol=1e-12)


@pytest.mark.parametrize(("n_src", "n_dst", "sigma"), [(64, 51, 0.75), (64, 9, 4.2), (12, 12, 1.5)])
def test_smooth_matrix_equals_core_smooth_taps(n_src, n_dst, sigma):
    img = np.random.default_rng(0).random((2, n_src, 9))
    start, wts = cp.smooth_taps(n_src, n_dst, sigma)
    expected = cp.smooth_rows(img, start, wts)
    np.testing.assert_allclose(tk.smooth_matrix(n_src, n_dst, sigma) @ img, expected, atol=1e-12)


@pytest.mark.parametrize(("shape", "finest"), [((48, 64), 0), ((12, 30), 0), ((96, 128), 4)])
def test_pyramid_equals_core_direct_levels(shape, finest):
    """Every level resampled from the full frame (12 rows never shrink but are still blurred)."""
    img = np.random.default_rng(1).random((2, *shape))
    shapes = cp.level_shapes(shape, 0.8, 100)
    backend = TorchBackend(FlowParameters(), {"device": "cpu", "dtype": "float64"})
    ours = backend._pyramid(_t(img)[None], shapes, finest)
    for lvl, ref in enumerate(cp.build_pyramid(img, shapes, finest)):
        if ref is None:
            assert ours[lvl] is None
            continue
        np.testing.assert_allclose(ours[lvl][0].numpy(), ref, atol=1e-12, err_msg=f"level {lvl}")


@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_spline_matrix_equals_core_prefilter(n):
    img = np.random.default_rng(9).random((2, 5, n))
    got = np.einsum("kj,cij->cik", tk.spline_matrix(n), img)  # along the rows only
    expected = level_coefficients(img.reshape(10, 1, n)).reshape(2, 5, n)
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize(("shape", "finest"), [((48, 64), 0), ((12, 30), 1)])
def test_spline_pyramid_equals_core_coefficients(shape, finest):
    """The moving frames' levels are the B-spline coefficients of the core's levels."""
    img = np.random.default_rng(10).random((2, *shape))
    shapes = cp.level_shapes(shape, 0.8, 100)
    backend = TorchBackend(FlowParameters(), {"device": "cpu", "dtype": "float64"})
    ours = backend._pyramid(_t(img)[None], shapes, finest, spline=True)
    for lvl, ref in enumerate(cp.build_pyramid(img, shapes, finest)):
        if ref is not None:
            np.testing.assert_allclose(
                ours[lvl][0].numpy(), level_coefficients(ref), atol=1e-11, err_msg=f"level {lvl}"
            )


@pytest.mark.parametrize("shape", [(20, 24), (2, 9)])
def test_warp_level_equals_core(shape):
    rng = np.random.default_rng(2)
    mov, ref = rng.random((2, 2, *shape))
    u, v = rng.uniform(-6, 6, (2, *shape))  # some samples fall outside and take ref
    coefficients = level_coefficients(mov)
    expected = core_warp_level(coefficients, ref, u, v, 1.25, 1.5)
    got = tk.warp_level(_t(coefficients)[None], _t(ref)[None], _t(u)[None], _t(v)[None], 1.25, 1.5)
    np.testing.assert_allclose(got[0].numpy(), expected, atol=1e-12)


def test_derivatives_equal_core():
    f = np.random.default_rng(3).random((2, 9, 11))
    expected = ct.derivatives(f, 1.25, 2.0)
    for ours, ref in zip(tk.derivatives(_t(f), 1.25, 2.0), expected, strict=True):
        np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("constancy", ["gc", "gray"])
def test_motion_tensor_equals_core_frame(constancy):
    """Every frame pixel (border included) = the interior of the core's ghost-ringed tensors."""
    rng = np.random.default_rng(4)
    ref, warped = rng.random((2, 2, 10, 12))
    rd, wd = ct.derivatives(ref, 1.25, 2.0), ct.derivatives(warped, 1.25, 2.0)
    expected = ct.motion_tensor(ref, rd, warped, wd, ct.CONSTANCY[constancy])
    assert expected.shape == (2, 6, 12, 14)
    got = tk.motion_tensor(
        _t(ref)[None], tuple(_t(d)[None] for d in rd), _t(warped)[None],
        tuple(_t(d)[None] for d in wd), constancy,
    )  # fmt: skip
    np.testing.assert_allclose(got[:, 0].numpy(), expected[:, :, 1:-1, 1:-1].transpose(1, 0, 2, 3))


def test_clear_unobserved_equals_core():
    """No data term where the warp samples outside the moving level (the mask of warp_level)."""
    rng = np.random.default_rng(12)
    c, h, w = 2, 9, 11
    J = rng.random((c, 6, h + 2, w + 2))
    J[..., [0, -1], :] = 0
    J[..., :, [0, -1]] = 0
    u, v = rng.uniform(-2, 2, (2, h, w))  # only samples near the border fall outside
    coefficients, ref = rng.random((2, c, h, w))
    _, outside = tk.warp_level(
        _t(coefficients)[None], _t(ref)[None], _t(u)[None], _t(v)[None], 2.0, 1.5,
        return_outside=True,
    )  # fmt: skip
    assert 0 < int(outside.sum()) < h * w
    ours = _t(J[:, :, 1:-1, 1:-1].transpose(1, 0, 2, 3).copy())[:, None]
    tk.clear_unobserved_(ours, outside)
    ct.clear_unobserved(J, u, v, 2.0, 1.5)
    np.testing.assert_array_equal(ours[:, 0].numpy(), J[:, :, 1:-1, 1:-1].transpose(1, 0, 2, 3))
    cleared = int((J[0, 0, 1:-1, 1:-1] == 0).sum())
    assert int(outside.sum()) < cleared < h * w  # the 3x3 reach, not the whole frame


def test_pad_edge_equals_core():
    from pyflowreg.core.flow import pad_edge

    flow = np.random.default_rng(8).random((2, 7, 9))
    got = torch_solver.pad_edge(_t(flow)[None])[0].numpy()
    np.testing.assert_array_equal(got, np.stack([pad_edge(f) for f in flow]))


@pytest.mark.parametrize("a_smooth", [1.0, 0.5])
def test_sor_solve_equals_core(a_smooth):
    rng = np.random.default_rng(5)
    c, h, w = 2, 9, 12  # the padded grid: a 7x10 frame plus its ghost ring
    J = np.zeros((c, 6, h, w))
    g = rng.normal(size=(c, 3, h, w))  # J = g g^T per pixel: positive semi-definite
    pairs = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]
    for k, (a, b) in enumerate(pairs):
        J[:, k] = g[:, a] * g[:, b]
    J[..., [0, -1], :] = 0
    J[..., :, [0, -1]] = 0
    wts = rng.uniform(0.2, 0.8, (c, h, w))
    u, v = rng.normal(size=(2, h, w))
    args = (1.5, 2.0, 1.25, 1.0, 12, 5, 0.45, a_smooth, 1.95)
    U, V = cs.sor_solve(J, wts, u, v, *args)
    settings = torch_solver.SolverSettings(*args)
    Ut, Vt = torch_solver.sor_solve(
        _t(J.transpose(1, 0, 2, 3)[:, None, :, 1:-1, 1:-1]),
        _t(wts[None, :, 1:-1, 1:-1]), _t(u)[None], _t(v)[None], settings,
    )  # fmt: skip
    np.testing.assert_allclose(Ut[0].numpy(), U, atol=1e-10)
    np.testing.assert_allclose(Vt[0].numpy(), V, atol=1e-10)


@pytest.mark.parametrize("shape", [(3, 7, 9), (1, 33, 20), (2, 1, 5), (1, 6, 6)])
def test_median_network_equals_quickselect(shape):
    x = np.random.default_rng(6).normal(size=shape).astype(np.float32)
    x[0, 0, ::2] = 0.5  # ties
    expected = np.stack([cs.median5(f) for f in x])
    np.testing.assert_array_equal(torch_median._median_chunk(_t(x)).numpy(), expected)
    np.testing.assert_array_equal(torch_median.median5(_t(x)).numpy(), expected)


def test_median_network_is_pruned():
    sizes = [len(program) for program, _ in torch_median._stages()]
    assert sizes == [18, 26, 88]  # min/max operations per stage (a flat network needs 202)


# --------------------------------------------------------------------------- fields vs CPU


@pytest.mark.parametrize(
    ("quality", "shape"),
    [("quality", (48, 64)), ("balanced", (96, 128)), ("fast", (96, 128))],
)
def test_presets_agree_with_cpu_backend(quality, shape):
    ref, mov, w_true = make_pair(shape, seed=3)
    params = FlowParameters.from_quality(quality)
    w_torch, w_cpu = _solve_both(params, ref, mov)
    assert w_torch.dtype == np.float32 and w_torch.shape == (*shape, 2)
    assert _mean_epd(w_torch, w_cpu) <= 0.05
    epe_torch = endpoint_error(w_torch, w_true).mean
    epe_cpu = endpoint_error(w_cpu, w_true).mean
    assert abs(epe_torch - epe_cpu) <= 0.02
    assert epe_torch < 0.5  # and the flow is actually recovered


@pytest.mark.parametrize(
    "overrides",
    [{}, {"a_smooth": 0.5}, {"constancy_assumption": "gray"}, {"min_level": 2}],
)
def test_float64_matches_core(overrides):
    ref, mov, _ = make_pair((40, 48), seed=4)
    w_torch, w_cpu = _solve_both(FlowParameters(**overrides), ref, mov, dtype="float64")
    np.testing.assert_allclose(w_torch, w_cpu, atol=1e-4)


@pytest.mark.parametrize("weight", [None, np.array([3.0, 1.0]), "map"])
def test_two_channels_and_weights(weight):
    ref, mov, _ = make_pair((40, 48), seed=5, n_channels=2)
    if isinstance(weight, str):
        yy, xx = np.mgrid[:40, :48]
        weight = np.stack([(xx + 1.0) / 48, (yy + 1.0) / 40], axis=-1)
    w_torch, w_cpu = _solve_both(FlowParameters(), ref, mov, "float64", weight)
    np.testing.assert_allclose(w_torch, w_cpu, atol=1e-4)


def test_batches_and_initial_fields():
    ref, mov, w_true = make_pair((40, 48), seed=6)
    frames = np.stack([mov, ref, mov])
    params = FlowParameters(min_level=2)
    # frames do not interact: batches of 1 and of 3 give the same fields (float64: only the
    # summation order of the batched products may differ)
    one = TorchBackend(params, {**CPU, "batch_frames": 1, "dtype": "float64"})
    three = TorchBackend(params, {**CPU, "batch_frames": 3, "dtype": "float64"})
    w1 = one.estimate(one.prepare_reference(ref), frames)
    w3 = three.estimate(three.prepare_reference(ref), frames)
    np.testing.assert_allclose(w1, w3, atol=1e-6)
    # the reference itself: zero flow up to rounding (the B-spline level warp reproduces the
    # samples at zero displacement only up to the rounding of its prefilter)
    assert np.abs(w1[1]).max() < 1e-12
    # a per-frame initial field equals solving each frame from its own start
    uv = np.stack([w_true, np.zeros_like(w_true), 0.5 * w_true])
    w_uv = three.estimate(three.prepare_reference(ref), frames, uv)
    for t in range(3):
        alone = three.estimate(three.prepare_reference(ref), frames[t : t + 1], uv[t])
        np.testing.assert_allclose(w_uv[t], alone[0], atol=1e-5)
    w_cpu = estimate(prepare_reference(ref, params), mov, w_true)
    assert _mean_epd(w_uv[0], w_cpu) <= 0.05


# --------------------------------------------------------------------------- options, errors


def test_registry_and_defaults():
    spec = get_runtime().get_flow_backend("flowreg_torch")
    assert spec.load() is TorchBackend
    backend = TorchBackend(FlowParameters(), {"device": "cpu", "dtype": torch.float64})
    assert backend.name == "flowreg_torch"
    assert backend.dtype == torch.float64
    for dtype in ("float64", np.float64, np.dtype("float64")):
        assert TorchBackend(FlowParameters(), {"dtype": dtype}).dtype == torch.float64
    assert backend._default_batch((512, 512), 1) == 8
    prepared = backend.prepare_reference(np.zeros((20, 24), np.float32))
    assert isinstance(prepared, TorchPreparedReference)
    assert prepared.n_channels == 1 and prepared.shape == (20, 24)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_unavailable_warns_and_uses_cpu():
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        backend = TorchBackend(FlowParameters(), {"device": "cuda"})
    assert backend.device == torch.device("cpu")


@pytest.mark.parametrize(
    ("backend_params", "error", "match"),
    [
        ({"device": "tpu"}, ValueError, "device"),
        ({"device": 3.5}, ValueError, "device"),
        ({"dtype": "float16"}, ValueError, r"dtype.*float32"),
        ({"dtype": torch.int32}, ValueError, r"dtype.*float32"),
        ({"batch_frames": 0}, ValueError, "batch_frames.*>= 1, got 0"),
        ({"batch_frames": "4"}, TypeError, "batch_frames.*integer"),
        ({"cuda_graphs": 1}, TypeError, "cuda_graphs.*True or False"),
        ({"threads": 4}, ValueError, r"unknown flowreg_torch backend_params \['threads'\]"),
    ],
)
def test_bad_backend_params(backend_params, error, match):
    with pytest.raises(error, match=match):
        TorchBackend(FlowParameters(), backend_params)


def test_bad_inputs():
    backend = TorchBackend(FlowParameters(min_level=2), CPU)
    ref = np.zeros((20, 24, 1), np.float32)
    prepared = backend.prepare_reference(ref)
    with pytest.raises(ValueError, match=r"frames must have shape \(T, 20, 24, 1\)"):
        backend.estimate(prepared, np.zeros((2, 20, 25, 1), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        backend.estimate(prepared, np.full((1, 20, 24, 1), np.nan, np.float32))
    with pytest.raises(ValueError, match="initial flow uv must have shape"):
        backend.estimate(prepared, np.zeros((1, 20, 24, 1), np.float32), np.zeros((20, 24)))
    with pytest.raises(TypeError, match=r"TorchBackend\.prepare_reference"):
        backend.estimate(prepare_reference(ref), np.zeros((1, 20, 24, 1), np.float32))
    with pytest.raises(ValueError, match="at least 3x3"):
        backend.prepare_reference(np.zeros((2, 24), np.float32))


def test_missing_torch_raises_with_install_hint(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("pyflowreg.backends.torch")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r'pip install "pyflowreg\[torch\]"'):
        importlib.import_module("pyflowreg.backends.torch_backend")


@pytest.mark.slow
def test_compensate_arr_with_torch_backend():
    from pyflowreg.datasets import make_recording
    from pyflowreg.motion_correction import OFOptions, compensate_arr

    rec = make_recording(4, (40, 48), seed=1, max_rigid=2.0)
    fields = {}
    for name, params in [("flowreg", {}), ("flowreg_torch", CPU)]:
        options = OFOptions(flow_backend=name, backend_params=params)
        registered, fields[name] = compensate_arr(rec.video, rec.reference, options=options)
        assert registered.shape == rec.video.shape
    assert _mean_epd(fields["flowreg_torch"], fields["flowreg"]) <= 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_agrees_with_cpu(graphs):
    ref, mov, w_true = make_pair((96, 128), seed=7)
    frames = np.stack([mov, ref, mov])
    for quality in ("quality", "fast"):
        params = FlowParameters.from_quality(quality)
        backend = TorchBackend(params, {"device": "cuda", "batch_frames": 2, "cuda_graphs": graphs})
        prepared = backend.prepare_reference(ref)
        for _ in range(2):  # graphs: capture on the first call, replay on the second
            w_gpu = backend.estimate(prepared, frames)
            w_cpu = estimate(prepare_reference(ref, params), mov)
            assert _mean_epd(w_gpu[0], w_cpu) <= 0.05
            assert _mean_epd(w_gpu[2], w_cpu) <= 0.05
            assert np.abs(w_gpu[1]).max() < 1e-4  # the reference itself (float32 B-spline warp)
            epe_gpu = endpoint_error(w_gpu[0], w_true).mean
            assert abs(epe_gpu - endpoint_error(w_cpu, w_true).mean) <= 0.02
        backend.close()
