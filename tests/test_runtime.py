"""The runtime registry: listing, auto-selection, fallback warnings, third-party entries."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

from pyflowreg import _runtime
from pyflowreg._runtime import Runtime, get_runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/_plugins.py, as a plug-in
import _plugins

BUILTIN_BACKENDS = ["flowreg", "flowreg_torch", "flowreg_cuda"]


@pytest.fixture
def runtime() -> Runtime:
    """A fresh runtime with the built-ins (registrations do not leak into other tests)."""
    rt = Runtime()
    _runtime._register_builtins(rt)
    return rt


def _unavailable(reason: str):
    return lambda: (False, reason)


def test_get_runtime_is_a_thread_safe_singleton():
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(get_runtime())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(rt is get_runtime() for rt in seen)
    assert get_runtime().list_flow_backends()[:3] == BUILTIN_BACKENDS


def test_executors_listed_in_auto_selection_order(runtime):
    names = runtime.list_parallelization_executors()
    assert names[:3] == ["multiprocessing", "threading", "sequential"]
    assert names[3:] == ["dask"]  # dask[distributed] is installed in the test environment
    runtime.register_executor("multiprocessing", "m:X", available=_unavailable("no sem_open"))
    assert runtime.list_parallelization_executors() == ["threading", "sequential", "dask"]
    info = {row.name: row for row in runtime.executor_info()}
    assert info["multiprocessing"].available is False
    assert info["multiprocessing"].reason == "no sem_open"
    assert info["sequential"] == ("sequential", True, "", info["sequential"].description)


def test_builtin_targets_load(runtime):
    from pyflowreg.backends.cpu import FlowregBackend
    from pyflowreg.executors import MultiprocessingExecutor, SequentialExecutor, ThreadingExecutor

    assert runtime.get_executor_class("sequential") is SequentialExecutor
    assert runtime.get_executor_class("threading") is ThreadingExecutor
    assert runtime.get_executor_class("multiprocessing") is MultiprocessingExecutor
    spec = runtime.get_flow_backend("flowreg")
    assert spec.load() is FlowregBackend
    assert spec.supports("multiprocessing") and spec.supports("dask")


def test_auto_selection(runtime):
    assert runtime.select_executor(None, "flowreg") == "multiprocessing"
    assert runtime.select_executor(None, "flowreg_cuda") == "sequential"
    assert runtime.select_executor(None, "flowreg_torch") == "sequential"
    runtime.register_executor("multiprocessing", "m:X", available=_unavailable("no"))
    assert runtime.select_executor(None, "flowreg") == "threading"


@pytest.mark.parametrize(
    ("backend", "requested"),
    [("flowreg_cuda", "multiprocessing"), ("flowreg_torch", "threading"), ("flowreg_cuda", "dask")],
)
def test_unsupported_request_falls_back_with_the_documented_warning(runtime, backend, requested):
    text = (
        f"Backend '{backend}' does not support '{requested}' executor. "
        "Supported executors: ['sequential']. Falling back to 'sequential'."
    )
    with pytest.warns(UserWarning, match=re.escape(text)) as record:
        assert runtime.select_executor(requested, backend) == "sequential"
    assert len(record) == 1
    assert record[0].filename == __file__  # stacklevel points at the caller


def test_supported_request_is_kept_without_warning(runtime):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runtime.select_executor("sequential", "flowreg_cuda") == "sequential"
        assert runtime.select_executor("threading", "flowreg") == "threading"
        assert runtime.select_executor("dask", "flowreg") == "dask"


def test_unknown_names(runtime):
    valid = "['multiprocessing', 'threading', 'sequential', 'dask']"
    with pytest.raises(ValueError, match=re.escape(f"must be one of {valid} or None, got 'gpu'")):
        runtime.select_executor("gpu", "flowreg")
    with pytest.raises(ValueError, match=re.escape("got 'gpu'")):
        runtime.get_executor_class("gpu")
    backends = re.escape(f"flow_backend must be one of {BUILTIN_BACKENDS}, got 'nope'")
    with pytest.raises(ValueError, match=backends):
        runtime.get_flow_backend("nope")
    with pytest.raises(ValueError, match=backends):
        runtime.select_executor(None, "nope")
    with pytest.raises(TypeError, match="parallelization must be a str or None, got int"):
        runtime.select_executor(3, "flowreg")


def test_unavailable_entries_raise_import_error_with_reason_and_hint(runtime, monkeypatch):
    monkeypatch.setattr(_runtime, "_has_module", lambda name: name != "torch")
    reason = re.escape('torch is not installed; pip install "pyflowreg[torch]"')
    with pytest.raises(ImportError, match=reason):
        runtime.get_flow_backend("flowreg_torch")
    assert "flowreg_torch" not in runtime.list_flow_backends(available_only=True)
    assert "flowreg_torch" in runtime.list_flow_backends()
    runtime.register_executor("dask", "x:Y", available=_unavailable("dask is missing"))
    with pytest.raises(ImportError, match="executor 'dask' is not available: dask is missing"):
        runtime.get_executor_class("dask")
    with pytest.raises(ImportError, match="dask is missing"):
        runtime.select_executor("dask", "flowreg")


def test_cuda_availability_reasons(runtime, monkeypatch):
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "0")
    monkeypatch.setattr(_runtime, "_cuda_device_count", lambda: 0)
    info = {row.name: row for row in runtime.flow_backend_info()}["flowreg_cuda"]
    assert not info.available
    assert info.reason.startswith("no CUDA device found")
    assert info.supported_executors == ("sequential",)
    assert info.install_hint == 'pip install "pyflowreg[cuda]"'
    with pytest.raises(ImportError, match="no CUDA device found"):
        runtime.get_flow_backend("flowreg_cuda")

    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    assert runtime.get_flow_backend("flowreg_cuda").name == "flowreg_cuda"

    monkeypatch.setattr(_runtime, "_has_module", lambda name: name != "numba_cuda")
    ok, reason = _runtime._cuda_available()
    assert not ok
    assert reason == 'numba-cuda is not installed; pip install "pyflowreg[cuda]"'


def test_dask_slot_reason(monkeypatch):
    monkeypatch.setattr(_runtime, "_has_module", lambda name: False)
    assert _runtime._dask_available() == (
        False,
        'dask[distributed] is not installed; pip install "pyflowreg[dask]"',
    )


def test_third_party_executor_and_backend(runtime):
    runtime.register_executor("inline", "_plugins:InlineExecutor", description="test plug-in")
    runtime.register_flow_backend(
        "shift", _plugins.make_shift_backend, supported_executors=["sequential", "inline"]
    )
    assert runtime.list_parallelization_executors()[-1] == "inline"
    assert runtime.list_flow_backends()[-1] == "shift"
    assert runtime.get_executor_class("inline") is _plugins.InlineExecutor
    assert runtime.get_flow_backend("shift").load() is _plugins.make_shift_backend
    assert runtime.select_executor(None, "shift") == "sequential"
    assert runtime.select_executor("inline", "shift") == "inline"
    text = (
        "Backend 'shift' does not support 'threading' executor. "
        "Supported executors: ['sequential', 'inline']. Falling back to 'sequential'."
    )
    with pytest.warns(UserWarning, match=re.escape(text)):
        assert runtime.select_executor("threading", "shift") == "sequential"


def test_fallback_to_a_backends_own_executor_when_sequential_is_unsupported(runtime):
    runtime.register_executor("inline", _plugins.InlineExecutor)
    runtime.register_flow_backend(
        "only_inline", "_plugins:ShiftBackend", supported_executors=["inline"]
    )
    assert runtime.select_executor(None, "only_inline") == "inline"
    with pytest.warns(UserWarning, match=re.escape("Falling back to 'inline'.")):
        assert runtime.select_executor("multiprocessing", "only_inline") == "inline"


def test_registration_validation(runtime):
    with pytest.raises(TypeError, match="supported_executors must be a list of names, got a str"):
        runtime.register_flow_backend("x", "m:f", supported_executors="sequential")
    with pytest.raises(ValueError, match=re.escape("must name at least one executor, got []")):
        runtime.register_flow_backend("x", "m:f", supported_executors=[])
    with pytest.raises(ValueError, match="factory must be a callable or 'module:attribute'"):
        runtime.register_executor("x", "no_colon")
    with pytest.raises(
        TypeError, match="factory must be a callable or 'module:attribute', got int"
    ):
        runtime.register_executor("x", 3)
    with pytest.raises(ValueError, match="name must be a non-empty identifier, got 'a b'"):
        runtime.register_executor("a b", "m:X")


def test_runtime_queries_import_no_optional_dependency():
    code = (
        "import sys\n"
        "from pyflowreg._runtime import get_runtime\n"
        "rt = get_runtime()\n"
        "rt.list_parallelization_executors(); rt.flow_backend_info(); rt.executor_info()\n"
        "rt.select_executor(None, 'flowreg')\n"
        "heavy = ['torch', 'distributed', 'dask', 'numba.cuda', 'numba_cuda', 'numba']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_motion_correction_import_leaves_scipy_ndimage_out():
    """A default run never uses scipy.ndimage (0.1-0.2 s to import): only the temporal
    reference weights and the rigid pre-alignment load it, when they are used."""
    code = "import sys\nimport pyflowreg.motion_correction\nprint('scipy.ndimage' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
