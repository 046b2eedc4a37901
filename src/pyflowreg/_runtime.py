"""The runtime registry of parallelization executors and flow backends.

One :class:`Runtime` per process, obtained with :func:`get_runtime`. Built-in entries are
registered explicitly when the runtime is created, with lazy ``"module:attribute"`` targets, so
importing :mod:`pyflowreg` never imports torch, dask or CUDA. Third parties add their own::

    from pyflowreg._runtime import get_runtime

    runtime = get_runtime()
    runtime.register_flow_backend(
        "my_flow", "my_package.flow:MyBackend", supported_executors=["sequential", "threading"]
    )
    runtime.list_parallelization_executors()   # e.g. ['multiprocessing', 'threading', 'sequential']

Multiprocessing workers never look entries up in a registry of their own: they receive the loaded
factory itself, pickled by reference, so a factory must be a module-level class or function.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib
import importlib.util
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

Availability = Callable[[], "tuple[bool, str]"]

#: Auto-selection order of the built-in executors (best first).
AUTO_ORDER = ("multiprocessing", "threading", "sequential")


def _load_target(target: Any) -> Any:
    """Resolve a ``"module:attribute"`` string; any other object is returned unchanged."""
    if not isinstance(target, str):
        return target
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"a lazy target must look like 'module:attribute', got {target!r}")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _check_target(target: Any, what: str) -> None:
    if isinstance(target, str):
        module_name, sep, attr = target.partition(":")
        if not sep or not module_name or not attr:
            raise ValueError(f"{what} must be a callable or 'module:attribute', got {target!r}")
    elif not callable(target):
        raise TypeError(
            f"{what} must be a callable or 'module:attribute', got {type(target).__name__}"
        )


class ExecutorSpec(NamedTuple):
    """A registered executor: a name, an :class:`~pyflowreg.executors.Executor` subclass
    (or its ``"module:attribute"``), an availability check and a one-line description."""

    name: str
    target: Any
    available: Availability | None = None
    description: str = ""

    def availability(self) -> tuple[bool, str]:
        """``(usable here, reason when not)``."""
        return _run_check(self.available)

    def load(self) -> type:
        """The executor class (imports its module on first use)."""
        return _load_target(self.target)


class FlowBackendSpec(NamedTuple):
    """A registered flow backend: its factory ``(FlowParameters, backend_params) -> FlowBackend``
    (or ``"module:attribute"``), the executors it supports (``None``: any executor), an
    availability check and the install command of its optional dependencies."""

    name: str
    target: Any
    supported_executors: tuple[str, ...] | None
    available: Availability | None = None
    install_hint: str = ""

    def availability(self) -> tuple[bool, str]:
        """``(usable here, reason when not)``."""
        return _run_check(self.available)

    def supports(self, executor: str) -> bool:
        """Whether this backend can run under ``executor``."""
        return self.supported_executors is None or executor in self.supported_executors

    def load(self) -> Callable[..., Any]:
        """The factory, a picklable module-level callable (imports its module on first use)."""
        return _load_target(self.target)


class ExecutorInfo(NamedTuple):
    """One row of :meth:`Runtime.executor_info`."""

    name: str
    available: bool
    reason: str
    description: str


class FlowBackendInfo(NamedTuple):
    """One row of :meth:`Runtime.flow_backend_info`."""

    name: str
    available: bool
    reason: str
    supported_executors: tuple[str, ...] | None
    install_hint: str


def _run_check(check: Availability | None) -> tuple[bool, str]:
    if check is None:
        return True, ""
    ok, reason = check()
    return bool(ok), "" if ok else str(reason)


class Runtime:
    """Registry of parallelization executors and flow backends (use :func:`get_runtime`).

    Registering a name that exists replaces the earlier entry. All methods are thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._executors: dict[str, ExecutorSpec] = {}
        self._backends: dict[str, FlowBackendSpec] = {}

    # -- registration -------------------------------------------------------------------------

    def register_executor(
        self,
        name: str,
        factory: type | str,
        *,
        available: Availability | None = None,
        description: str = "",
    ) -> None:
        """Register an executor.

        Parameters
        ----------
        name : str
            The name users pass as ``RegistrationConfig(parallelization=name)``.
        factory : type or str
            An :class:`~pyflowreg.executors.Executor` subclass or its ``"module:attribute"``.
        available : callable, optional
            ``() -> (bool, reason)``; whether the executor can run here. Default: always.
        description : str
            One line shown by ``pyflowreg backends``.
        """
        _check_name(name)
        _check_target(factory, "factory")
        with self._lock:
            self._executors[name] = ExecutorSpec(name, factory, available, description)

    def register_flow_backend(
        self,
        name: str,
        factory: Callable[..., Any] | str,
        *,
        supported_executors: Iterable[str] | None,
        available: Availability | None = None,
        install_hint: str = "",
    ) -> None:
        """Register a flow backend.

        Parameters
        ----------
        name : str
            The name users pass as ``OFOptions(flow_backend=name)``.
        factory : callable or str
            ``(FlowParameters, backend_params: dict) -> FlowBackend``, or its
            ``"module:attribute"``. It must be a module-level class or function so that it can be
            sent to worker processes.
        supported_executors : iterable of str or None
            Executors this backend can run under; ``None`` means any executor.
        available : callable, optional
            ``() -> (bool, reason)``; whether the backend can run here. Default: always.
        install_hint : str
            Command that installs the missing dependencies, e.g. ``pip install "pyflowreg[torch]"``.
        """
        _check_name(name)
        _check_target(factory, "factory")
        if supported_executors is not None:
            if isinstance(supported_executors, str):
                raise TypeError("supported_executors must be a list of names, got a str")
            supported_executors = tuple(supported_executors)
            if not supported_executors:
                raise ValueError("supported_executors must name at least one executor, got []")
        with self._lock:
            self._backends[name] = FlowBackendSpec(
                name, factory, supported_executors, available, install_hint
            )

    # -- queries ------------------------------------------------------------------------------

    def _ordered_executors(self) -> list[ExecutorSpec]:
        with self._lock:
            specs = dict(self._executors)
        first = [specs[n] for n in AUTO_ORDER if n in specs]
        return first + [s for n, s in specs.items() if n not in AUTO_ORDER]

    def list_parallelization_executors(self) -> list[str]:
        """Names of the executors usable here, auto-selection order first
        (multiprocessing, threading, sequential), then the others in registration order."""
        return [s.name for s in self._ordered_executors() if s.availability()[0]]

    def list_flow_backends(self, available_only: bool = False) -> list[str]:
        """Names of the registered flow backends (only the usable ones with ``available_only``)."""
        with self._lock:
            specs = list(self._backends.values())
        return [s.name for s in specs if not available_only or s.availability()[0]]

    def executor_info(self) -> list[ExecutorInfo]:
        """Every registered executor with its availability and the reason when unavailable."""
        rows = []
        for spec in self._ordered_executors():
            ok, reason = spec.availability()
            rows.append(ExecutorInfo(spec.name, ok, reason, spec.description))
        return rows

    def flow_backend_info(self) -> list[FlowBackendInfo]:
        """Every registered flow backend with its availability and the reason when unavailable."""
        with self._lock:
            specs = list(self._backends.values())
        rows = []
        for spec in specs:
            ok, reason = spec.availability()
            rows.append(
                FlowBackendInfo(spec.name, ok, reason, spec.supported_executors, spec.install_hint)
            )
        return rows

    def _executor_spec(self, name: str) -> ExecutorSpec:
        with self._lock:
            spec = self._executors.get(name)
            valid = [s.name for s in self._ordered_executors()]
        if spec is None:
            raise ValueError(f"parallelization must be one of {valid} or None, got {name!r}")
        return spec

    def _backend_spec(self, name: str) -> FlowBackendSpec:
        with self._lock:
            spec = self._backends.get(name)
            valid = list(self._backends)
        if spec is None:
            raise ValueError(f"flow_backend must be one of {valid}, got {name!r}")
        return spec

    def get_executor_class(self, name: str) -> type:
        """The executor class registered as ``name``.

        Raises
        ------
        ValueError
            Unknown name (the message lists the registered ones).
        ImportError
            The executor cannot run here (the message says why).
        """
        spec = self._executor_spec(name)
        ok, reason = spec.availability()
        if not ok:
            raise ImportError(f"executor {name!r} is not available: {reason}")
        return spec.load()

    def get_flow_backend(self, name: str) -> FlowBackendSpec:
        """The registry entry of flow backend ``name``; ``.load()`` gives its factory.

        Raises
        ------
        ValueError
            Unknown name (the message lists the registered ones).
        ImportError
            The backend cannot run here (the message gives the reason and the install command).
        """
        spec = self._backend_spec(name)
        ok, reason = spec.availability()
        if not ok:
            message = f"flow backend {name!r} is not available: {reason}"
            if spec.install_hint and spec.install_hint not in reason:
                message += f" (install: {spec.install_hint})"
            raise ImportError(message)
        return spec

    def select_executor(
        self, requested: str | None, flow_backend: str, *, stacklevel: int = 2
    ) -> str:
        """The executor to run ``flow_backend`` under.

        Parameters
        ----------
        requested : str or None
            ``None`` picks the first of multiprocessing, threading, sequential that is usable
            here and supported by the backend. A name the backend does not support falls back,
            with a ``UserWarning``, to ``"sequential"`` (or the backend's first usable one).
        flow_backend : str
            Registered flow-backend name.
        stacklevel : int
            Passed to :func:`warnings.warn` so the warning points at the caller's caller.

        Raises
        ------
        ValueError
            Unknown executor or flow-backend name.
        ImportError
            The requested executor is supported but not usable here.
        RuntimeError
            No registered executor is usable for this backend.
        """
        backend = self._backend_spec(flow_backend)
        ordered = self._ordered_executors()
        usable = [s.name for s in ordered if backend.supports(s.name) and s.availability()[0]]
        if requested is None:
            if not usable:
                raise RuntimeError(f"no usable executor for flow backend {flow_backend!r}")
            return usable[0]
        if not isinstance(requested, str):
            kind = type(requested).__name__
            raise TypeError(f"parallelization must be a str or None, got {kind}")
        spec = self._executor_spec(requested)
        if not backend.supports(requested):
            supported = list(backend.supported_executors or ())
            fallback = "sequential" if "sequential" in usable else (usable or [None])[0]
            if fallback is None:
                raise RuntimeError(f"no usable executor for flow backend {flow_backend!r}")
            warnings.warn(
                f"Backend {flow_backend!r} does not support {requested!r} executor. "
                f"Supported executors: {supported!r}. Falling back to {fallback!r}.",
                UserWarning,
                stacklevel=stacklevel,
            )
            return fallback
        ok, reason = spec.availability()
        if not ok:
            raise ImportError(f"executor {requested!r} is not available: {reason}")
        return requested


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not name or not name.isidentifier():
        raise ValueError(f"name must be a non-empty identifier, got {name!r}")


# -- availability checks of the built-ins --------------------------------------------------------


@functools.cache
def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _multiprocessing_available() -> tuple[bool, str]:
    try:
        import multiprocessing.synchronize  # noqa: F401  (needs a working sem_open)
        from multiprocessing import shared_memory  # noqa: F401
    except ImportError as exc:
        return False, f"process pools or shared memory are not supported here ({exc})"
    return True, ""


def _dask_available() -> tuple[bool, str]:
    if _has_module("distributed"):
        return True, ""
    return False, 'dask[distributed] is not installed; pip install "pyflowreg[dask]"'


def _torch_available() -> tuple[bool, str]:
    if _has_module("torch"):
        return True, ""
    return False, 'torch is not installed; pip install "pyflowreg[torch]"'


@functools.lru_cache(maxsize=1)
def _cuda_device_count() -> int:
    """Number of CUDA devices from the driver library, without importing numba.cuda."""
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    found = ctypes.util.find_library("cuda")
    if found:
        names.append(found)
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            if lib.cuInit(0) != 0:
                return 0
            count = ctypes.c_int(0)
            if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return 0
            return int(count.value)
        except AttributeError:
            return 0
    return 0


def _cuda_available() -> tuple[bool, str]:
    if not _has_module("numba_cuda"):
        return False, 'numba-cuda is not installed; pip install "pyflowreg[cuda]"'
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
        return True, ""
    if _cuda_device_count() == 0:
        return False, "no CUDA device found (NUMBA_ENABLE_CUDASIM=1 runs the CUDA simulator)"
    return True, ""


def _register_builtins(runtime: Runtime) -> None:
    """Register the executors and flow backends that ship with pyflowreg."""
    runtime.register_executor(
        "sequential",
        "pyflowreg.executors.sequential:SequentialExecutor",
        description="one frame at a time in the calling thread",
    )
    runtime.register_executor(
        "threading",
        "pyflowreg.executors.threaded:ThreadingExecutor",
        description="a pool of threads (the Numba kernels release the GIL)",
    )
    runtime.register_executor(
        "multiprocessing",
        "pyflowreg.executors.processes:MultiprocessingExecutor",
        available=_multiprocessing_available,
        description="a pool of worker processes with shared memory",
    )
    runtime.register_executor(
        "dask",
        "pyflowreg.executors.dask:DaskExecutor",
        available=_dask_available,
        description="a dask.distributed cluster",
    )
    runtime.register_flow_backend(
        "flowreg",
        "pyflowreg.backends.cpu:FlowregBackend",
        supported_executors=None,
    )
    runtime.register_flow_backend(
        "flowreg_torch",
        "pyflowreg.backends.torch_backend:TorchBackend",
        supported_executors=["sequential"],
        available=_torch_available,
        install_hint='pip install "pyflowreg[torch]"',
    )
    runtime.register_flow_backend(
        "flowreg_cuda",
        "pyflowreg.backends.cuda_backend:CudaBackend",
        supported_executors=["sequential"],
        available=_cuda_available,
        install_hint='pip install "pyflowreg[cuda]"',
    )


_RUNTIME: Runtime | None = None
_RUNTIME_LOCK = threading.Lock()


def get_runtime() -> Runtime:
    """The process-wide :class:`Runtime`, created with the built-ins on first call."""
    global _RUNTIME
    if _RUNTIME is None:
        with _RUNTIME_LOCK:
            if _RUNTIME is None:
                runtime = Runtime()
                _register_builtins(runtime)
                _RUNTIME = runtime
    return _RUNTIME


class RuntimeContext:
    """PyFlowReg's read-only view of the registry: ``RuntimeContext.get(key, default)``.

    Every value is computed from :func:`get_runtime` when asked (nothing is stored here):

    ``"available_parallelization"``
        set of the executors usable here (``list_parallelization_executors()``).
    ``"parallelization"``
        set of every registered executor, usable here or not.
    ``"available_backends"``
        set of the flow backends usable here.
    ``"flow_backends"``
        set of every registered flow backend.
    ``"cpu_count"``
        ``os.cpu_count()``.

    >>> "sequential" in RuntimeContext.get("available_parallelization", set())
    True
    """

    @staticmethod
    def _values() -> dict[str, Any]:
        runtime = get_runtime()
        return {
            "available_parallelization": lambda: set(runtime.list_parallelization_executors()),
            "parallelization": lambda: {row.name for row in runtime.executor_info()},
            "available_backends": lambda: set(runtime.list_flow_backends(available_only=True)),
            "flow_backends": lambda: set(runtime.list_flow_backends()),
            "cpu_count": lambda: os.cpu_count() or 1,
        }

    @classmethod
    def get(cls, key: str, default: Any = None) -> Any:
        """The value of ``key`` (see the class docstring), or ``default`` for other keys."""
        value = cls._values().get(key)
        return default if value is None else value()

    @classmethod
    def keys(cls) -> list[str]:
        """The keys :meth:`get` knows."""
        return list(cls._values())
