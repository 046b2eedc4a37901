"""PyFlowReg's backend and parallelization pages (``docs/user_guide/backends.md``,
``docs/api/core.md``, ``docs/user_guide/parallelization.md``) against this package: the
registry views ``pyflowreg.core.list_backends`` / ``is_backend_available`` and
``pyflowreg._runtime.RuntimeContext``, the top-level ``pyflowreg.get_displacement``, and
``RegistrationConfig`` as documented.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from scipy import ndimage

import pyflowreg
from pyflowreg._runtime import RuntimeContext, get_runtime
from pyflowreg.core import is_backend_available, list_backends
from pyflowreg.motion_correction import OFOptions
from pyflowreg.motion_correction.compensate_recording import RegistrationConfig


def test_list_backends_and_availability():
    backends = list_backends()
    assert "flowreg" in backends and backends == get_runtime().list_flow_backends(True)
    assert is_backend_available("flowreg") is True
    assert is_backend_available("no_such_backend") is False
    for name in get_runtime().list_flow_backends():
        assert is_backend_available(name) == (name in backends)


def test_runtime_context_view():
    available = RuntimeContext.get("available_parallelization", set())
    assert isinstance(available, set)
    assert available == set(get_runtime().list_parallelization_executors())
    assert {"sequential", "threading"} <= available
    assert RuntimeContext.get("available_backends") == set(list_backends())
    assert RuntimeContext.get("cpu_count") == (os.cpu_count() or 1)
    assert RuntimeContext.get("no such key", "fallback") == "fallback"
    assert "available_parallelization" in RuntimeContext.keys()


def test_registration_config_as_documented():
    config = RegistrationConfig()
    assert (config.n_jobs, config.verbose, config.parallelization) == (-1, False, None)
    assert RegistrationConfig(parallelization="threading", n_jobs=8).n_jobs == 8


def test_top_level_get_displacement_recovers_a_shift():
    rng = np.random.default_rng(2)
    fixed = ndimage.gaussian_filter(rng.random((48, 48)), 2.0)
    fixed = (fixed - fixed.min()) / np.ptp(fixed)
    moving = ndimage.shift(fixed, (1.0, -1.5), mode="nearest")
    w = pyflowreg.get_displacement(fixed, moving, alpha=(2.0, 2.0), iterations=50, min_level=0)
    assert w.shape == (48, 48, 2)
    inner = (slice(8, -8), slice(8, -8))
    # moving(y + v, x + u) = fixed(y, x): u = -1.5 (x), v = 1.0 (y)
    assert abs(np.median(w[inner][..., 0]) + 1.5) < 0.2
    assert abs(np.median(w[inner][..., 1]) - 1.0) < 0.2


def test_unknown_flow_backend_is_reported_when_resolved():
    from pyflowreg.motion_correction import compensate_arr

    options = OFOptions(flow_backend="no_such_backend", quality_setting="fast")
    with pytest.raises(ValueError, match=r"flow_backend must be one of .*'flowreg'"):
        compensate_arr(np.zeros((2, 16, 16), np.float32), np.zeros((16, 16)), options)


def test_gpu_backend_request_falls_back_with_a_warning():
    if "flowreg_torch" not in list_backends():
        pytest.skip("torch backend not available")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        name = get_runtime().select_executor("multiprocessing", "flowreg_torch")
    assert name == "sequential"
    assert any("Falling back to 'sequential'" in str(w.message) for w in caught)


def test_resolve_get_displacement_uses_the_options_backend_and_parameters():
    rng = np.random.default_rng(4)
    fixed = ndimage.gaussian_filter(rng.random((40, 40)), 2.0)
    fixed = (fixed - fixed.min()) / np.ptp(fixed)
    moving = ndimage.shift(fixed, (0.0, 1.2), mode="nearest")
    options = OFOptions(quality_setting="quality", alpha=2.0, iterations=50)
    get_displacement = options.resolve_get_displacement()
    w = get_displacement(fixed, moving, alpha=99)  # solver keywords: the options decide
    expected = pyflowreg.get_displacement(fixed, moving, alpha=(2.0, 2.0), iterations=50)
    np.testing.assert_allclose(w, expected, atol=1e-4)
    assert abs(np.median(w[8:-8, 8:-8, 0]) - 1.2) < 0.2
    unknown = OFOptions(flow_backend="no_such_backend")
    with pytest.raises(ValueError, match="flow_backend must be one of"):
        unknown.resolve_get_displacement()


def test_get_reference_frame_is_the_run_reference(tmp_path):
    from pyflowreg.datasets import make_recording
    from pyflowreg.motion_correction import compensate_recording

    rec = make_recording(8, (32, 32), 1, seed=6, max_rigid=2.0)
    options = OFOptions(
        input_file=rec.video,
        output_path=tmp_path,
        output_format="ARRAY",
        quality_setting="fast",
        reference_frames=[0, 1, 2, 3],
    )
    reference = options.get_reference_frame()
    assert reference.shape == (32, 32, 1) and reference.dtype == np.float32
    result = compensate_recording(options, config=RegistrationConfig(parallelization="sequential"))
    np.testing.assert_array_equal(reference, result.reference)
    np.testing.assert_array_equal(options.get_reference_frame(rec.video), reference)


def test_get_displacement_impl_and_factory_override_the_backend():
    from pyflowreg.datasets import make_recording
    from pyflowreg.motion_correction import compensate_arr

    rec = make_recording(5, (32, 32), 1, seed=9, max_rigid=2.0)
    seen = []

    def impl(fixed, moving, uv=None, weight=None, **solver):
        seen.append(sorted(solver))
        return pyflowreg.get_displacement(fixed, moving, uv=uv, weight=weight, **solver)

    sequential = RegistrationConfig(parallelization="sequential")
    _plain, w_plain = compensate_arr(
        rec.video, rec.reference, OFOptions(quality_setting="fast"), registration_config=sequential
    )
    options = OFOptions(quality_setting="fast", get_displacement_impl=impl)
    _registered, w = compensate_arr(
        rec.video, rec.reference, options, registration_config=sequential
    )
    np.testing.assert_allclose(w, w_plain, atol=1e-5)
    assert seen and "alpha" in seen[0] and "min_level" in seen[0]
    assert "get_displacement_impl" not in options.model_dump()
    assert "get_displacement_impl" not in options.to_dict()

    made = []

    def factory(**backend_params):
        made.append(backend_params)
        return impl

    options = OFOptions(
        quality_setting="fast", get_displacement_factory=factory, backend_params={"k": 1}
    )
    with pytest.warns(UserWarning, match="Falling back to 'sequential'"):
        compensate_arr(
            rec.video,
            rec.reference,
            options,
            registration_config=RegistrationConfig(parallelization="multiprocessing"),
        )
    assert made and made[0] == {"k": 1}
    with pytest.raises(TypeError, match="get_displacement_impl must be callable"):
        OFOptions(get_displacement_impl=3)


def test_core_optical_flow_get_displacement_as_documented():
    """``pyflowreg.core.optical_flow.get_displacement(fixed, moving, alpha, update_lag,
    iterations, min_level, levels, eta, a_smooth, a_data, const_assumption, uv, weight)``:
    PyFlowReg's positional order, keywords and float64 result, on this package's solver."""
    from pyflowreg.core.optical_flow import get_displacement

    rng = np.random.default_rng(3)
    fixed = ndimage.gaussian_filter(rng.random((48, 48)), 2).astype(np.float32)
    moving = ndimage.shift(fixed, (0.0, -1.5), order=3, mode="nearest")
    w = get_displacement(fixed, moving)
    assert w.shape == (48, 48, 2) and w.dtype == np.float64
    inner = w[12:-12, 12:-12]
    assert abs(inner[..., 0].mean() + 1.5) < 0.05 and abs(inner[..., 1].mean()) < 0.05
    same = pyflowreg.get_displacement(fixed, moving, alpha=(2, 2), levels=50)
    np.testing.assert_allclose(w, same, atol=1e-6)
    positional = get_displacement(fixed, moving, (2, 2), 5, 50, 0, 50, 0.8, 1.0, 0.45, "gradient")
    np.testing.assert_array_equal(positional, w)
    gray = get_displacement(fixed, moving, const_assumption="brightness")
    np.testing.assert_array_equal(gray, get_displacement(fixed, moving, const_assumption="gray"))
    with pytest.raises(ValueError, match="const_assumption must be one of"):
        get_displacement(fixed, moving, const_assumption="cs")
    with pytest.raises(ValueError, match="level_solver_backend is not supported"):
        get_displacement(fixed, moving, level_solver_backend=object())


def test_register_backend_as_documented():
    """The custom-backend example of backends.md: a factory called with backend_params,
    returning a get_displacement-like callable, used through OFOptions(flow_backend=...)."""
    from pyflowreg.core import get_backend, register_backend
    from pyflowreg.core.backend_registry import get_backend_executors
    from pyflowreg.motion_correction import compensate_arr

    received = []

    def my_factory(**backend_params):
        def my_get_displacement(fixed, moving, **kwargs):
            received.append(set(kwargs))
            flow = np.zeros((*fixed.shape[:2], 2), dtype=np.float32)
            flow[..., 1] = backend_params["shift"]
            return flow

        return my_get_displacement

    name = "test_doc_backend"
    try:
        register_backend(name, my_factory, supported_executors={"sequential", "threading"})
        assert name in list_backends() and is_backend_available(name)
        assert get_backend(name) is my_factory
        assert get_backend_executors(name) == {"sequential", "threading"}
        options = OFOptions(flow_backend=name, backend_params={"shift": 0.75})
        video = np.random.default_rng(0).random((4, 24, 24)).astype(np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, w = compensate_arr(
                video,
                video[0],
                options,
                registration_config=RegistrationConfig(parallelization="multiprocessing"),
            )
        assert np.all(w[..., 1] == 0.75) and np.all(w[..., 0] == 0)
        assert {"uv", "weight", "alpha"} <= received[0]
        assert any("Falling back to 'sequential'" in str(c.message) for c in caught)
        with pytest.raises(ValueError, match="must include one of"):
            register_backend("test_mp_only", my_factory, supported_executors={"multiprocessing"})
    finally:
        get_runtime()._backends.pop(name, None)

    # a built-in backend's factory gives a per-pair function with PyFlowReg's defaults
    pair = get_backend("flowreg")()
    frame = np.random.default_rng(1).random((24, 24)).astype(np.float32)
    field = pair(frame, frame)
    assert field.shape == (24, 24, 2) and field.dtype == np.float64
    assert get_backend_executors("flowreg") >= {"sequential", "threading", "multiprocessing"}
    with pytest.raises(ValueError, match="no_such_backend"):
        get_backend("no_such_backend")


def test_core_warping_helpers_as_documented():
    from pyflowreg.core.warping import align_sequence, imregister_wrapper, warpingDepth

    rng = np.random.default_rng(2)
    moving = rng.random((8, 10)).astype(np.float32)
    fill = np.full((8, 10), -1.0, np.float32)
    u, v = np.full((8, 10), 2.0), np.zeros((8, 10))
    out = imregister_wrapper(moving, u, v, fill, interpolation_method="linear")
    assert out.dtype == np.float32 and out.shape == (8, 10)
    np.testing.assert_allclose(out[:, :8], moving[:, 2:], atol=1e-6)  # whole-pixel shift
    assert np.all(out[:, 8:] == -1.0)  # unobserved: the reference's values
    video = rng.random((3, 8, 10, 2)).astype(np.float32)
    fields = np.zeros((3, 8, 10, 2))
    fields[..., 0] = 2.0
    aligned = align_sequence(video, fields, video[0], "linear")
    np.testing.assert_allclose(aligned[1, :, :8], video[1, :, 2:], atol=1e-6)
    np.testing.assert_array_equal(aligned[1, :, 8:], video[0, :, 8:])
    # pyramid depth: index of the coarsest level along the shorter side, at least 1, capped
    assert [warpingDepth(0.8, 50, s, s) for s in (9, 11, 12, 20, 64, 512)] == [1, 1, 2, 4, 9, 18]
    assert warpingDepth(0.8, 50, 64, 512) == 9 and warpingDepth(0.8, 3, 512, 512) == 3


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("pyflowreg.core.optical_flow", ["get_displacement"]),
        (
            "pyflowreg.core.backend_registry",
            ["register_backend", "get_backend", "list_backends", "is_backend_available"],
        ),
        ("pyflowreg.core.warping", ["imregister_wrapper", "align_sequence", "warpingDepth"]),
        ("pyflowreg.util.xcorr_prealignment", ["estimate_rigid_xcorr_2d"]),
        (
            "pyflowreg.motion_correction.parallelization",
            ["SequentialExecutor", "ThreadingExecutor", "MultiprocessingExecutor", "BaseExecutor"],
        ),
    ],
)
def test_documented_module_paths_hold_their_names(module, names):
    import importlib

    loaded = importlib.import_module(module)
    assert set(names) <= set(loaded.__all__)
    assert all(callable(getattr(loaded, name)) for name in names)
