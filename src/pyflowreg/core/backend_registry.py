"""PyFlowReg's ``pyflowreg.core.backend_registry``: its flow-backend registry calls, on this
package's one registry (:func:`pyflowreg._runtime.get_runtime`).

PyFlowReg's backend is a *factory* called with ``OFOptions.backend_params`` as keyword
arguments; it returns a ``get_displacement(fixed, moving, **kwargs) -> w (H, W, 2)`` callable.
:func:`register_backend` enters such a factory in the runtime registry as a flow backend
(:class:`pyflowreg.backends.callable.CallableBackend`), so ``OFOptions(flow_backend=name)``,
``compensate_recording``, ``compensate_arr``, ``FlowRegLive`` and the CLI use it. It runs in
the calling process: under ``sequential`` or ``threading``; a request for another executor
falls back with the runtime's warning. :func:`get_backend` gives the factory of any
registered backend, built-in ones included.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import numpy as np

__all__ = [
    "get_backend",
    "get_backend_executors",
    "is_backend_available",
    "list_backends",
    "register_backend",
]

#: ``name: (factory given to register_backend, the runtime entry made of it)``.
_REGISTERED: dict[str, tuple[Callable[..., Callable], Callable]] = {}


def _runtime():
    from .._runtime import get_runtime

    return get_runtime()


def register_backend(
    name: str,
    factory: Callable[..., Callable],
    supported_executors: Iterable[str] | None = None,
) -> None:
    """Register ``factory`` as flow backend ``name`` (replacing an earlier one of that name).

    Parameters
    ----------
    name : str
        The name for ``OFOptions(flow_backend=name)``.
    factory : callable
        ``factory(**backend_params) -> get_displacement``; ``get_displacement(fixed, moving,
        **kwargs)`` returns the field ``(H, W, 2)`` (``[..., 0]`` = u along x, ``[..., 1]`` = v
        along y) and is also passed ``uv``, ``weight`` and the solver parameters, which it may
        ignore.
    supported_executors : iterable of str, optional
        Executors the backend may run under. Only ``sequential`` and ``threading`` can run a
        function of the calling process; other names (``multiprocessing``,
        ``multiprocessing_fork``, ``multiprocessing_spawn``, ``dask``) are dropped. Default:
        both.
    """
    from ..backends.callable import CALLABLE_EXECUTORS, callable_factory

    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    if isinstance(supported_executors, str):
        raise TypeError("supported_executors must be a set of executor names, got a str")
    executors = list(CALLABLE_EXECUTORS)
    if supported_executors is not None:
        requested = {str(e) for e in supported_executors}
        executors = [e for e in CALLABLE_EXECUTORS if e in requested]
        if not executors:
            raise ValueError(
                f"a backend registered with register_backend runs in the calling process: "
                f"supported_executors must include one of {list(CALLABLE_EXECUTORS)}, "
                f"got {sorted(requested)}"
            )
    entry = functools.partial(callable_factory, None, factory)
    _runtime().register_flow_backend(name, entry, supported_executors=executors)
    _REGISTERED[name] = (factory, entry)


def get_backend(name: str) -> Callable[..., Callable]:
    """The factory of flow backend ``name``: ``factory(**backend_params)`` returns a
    ``get_displacement(fixed, moving, **kwargs)`` callable (``ValueError`` for an unknown
    name, ``ImportError`` for a backend that cannot run here)."""
    spec = _runtime().get_flow_backend(name)  # raises for unknown / unusable backends
    factory, entry = _REGISTERED.get(name, (None, None))
    if entry is not None and spec.target is entry:  # not replaced in the runtime since
        return factory
    return functools.partial(_pair_function, name)


def list_backends() -> list[str]:
    """Names of the flow backends usable here."""
    return _runtime().list_flow_backends(available_only=True)


def is_backend_available(name: str) -> bool:
    """Whether flow backend ``name`` is registered and usable here."""
    return name in list_backends()


def get_backend_executors(name: str) -> set[str]:
    """Executors flow backend ``name`` supports (every registered executor when it declared
    none); ``ValueError`` for an unknown name."""
    runtime = _runtime()
    for row in runtime.flow_backend_info():
        if row.name == name:
            if row.supported_executors is None:
                return {e.name for e in runtime.executor_info()}
            return set(row.supported_executors)
    raise ValueError(f"unknown flow backend {name!r}; registered: {runtime.list_flow_backends()}")


def _pair_function(name: str, **backend_params) -> Callable[..., np.ndarray]:
    """``get_displacement(fixed, moving, uv=None, weight=None, **solver)`` of registered
    backend ``name``; the solver keywords and their defaults are PyFlowReg's
    (:func:`pyflowreg.core.optical_flow.flow_parameters`), others are ignored."""
    from .optical_flow import PARAMETER_NAMES, flow_parameters

    make = _runtime().get_flow_backend(name).load()

    def get_displacement(fixed, moving, uv=None, weight=None, **solver) -> np.ndarray:
        if "constancy_assumption" in solver:  # this package's name of const_assumption
            solver.setdefault("const_assumption", solver.pop("constancy_assumption"))
        params = flow_parameters(**{k: v for k, v in solver.items() if k in PARAMETER_NAMES})
        ref = np.asarray(fixed, np.float32)
        mov = np.asarray(moving, np.float32)
        ref, mov = (a[..., None] if a.ndim == 2 else a for a in (ref, mov))
        if ref.ndim != 3 or ref.shape != mov.shape:
            raise ValueError(
                f"fixed and moving must be (H, W) or (H, W, C) of one shape, got "
                f"{np.shape(fixed)} and {np.shape(moving)}"
            )
        backend = make(params, dict(backend_params))
        prepared = backend.prepare_reference(ref, weight)
        return np.asarray(backend.estimate(prepared, mov[None], uv)[0], dtype=np.float64)

    return get_displacement
