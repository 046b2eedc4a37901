"""What ``OFOptions`` resolves to at run time: the flow-backend factory and executor of a
run, the per-pair flow function of its backend and the reference of a recording (PyFlowReg's
``OFOptions.resolve_get_displacement()`` and ``OFOptions.get_reference_frame()``), built
from the pipeline's own pieces.

``OFOptions.get_displacement_impl`` (a ``get_displacement(fixed, moving, **kwargs)``
callable) and ``OFOptions.get_displacement_factory`` (called with ``backend_params``, it
returns one) override ``flow_backend`` for one-off experiments: :class:`CallableBackend`
wraps the callable as a flow backend, run by the in-process executors (``sequential``,
``threading``) only, since a callable need not survive pickling to a worker process.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backends.base import FlowBackend
from ..backends.callable import CALLABLE_EXECUTORS, callable_factory


def _runtime_or_default(runtime):
    if runtime is not None:
        return runtime
    from .._runtime import get_runtime

    return get_runtime()


def backend_factory(options, runtime=None) -> Callable[..., FlowBackend]:
    """``factory(params, backend_params) -> FlowBackend`` of a run: the options' callable
    override, or the registered ``flow_backend`` of ``runtime`` (default: the process-wide
    registry; ``ValueError`` / ``ImportError`` when it is unknown / not usable here)."""
    impl, factory = options.get_displacement_impl, options.get_displacement_factory
    if impl is not None or factory is not None:
        return functools.partial(callable_factory, impl, factory)
    return _runtime_or_default(runtime).get_flow_backend(options.flow_backend).load()


def select_executor(options, requested: str | None, *, runtime=None, stacklevel: int = 2) -> str:
    """The executor of a run (see ``Runtime.select_executor``; ``runtime`` default: the
    process-wide registry); a callable override runs under ``threading`` (auto) or
    ``sequential``, other requests fall back with a warning."""
    runtime = _runtime_or_default(runtime)
    if options.get_displacement_impl is None and options.get_displacement_factory is None:
        return runtime.select_executor(requested, options.flow_backend, stacklevel=stacklevel + 1)
    usable = [n for n in runtime.list_parallelization_executors() if n in CALLABLE_EXECUTORS]
    if requested is None:
        return usable[0] if usable else "sequential"
    registered = [row.name for row in runtime.executor_info()]
    if requested not in registered:
        raise ValueError(f"parallelization must be one of {registered} or None, got {requested!r}")
    if requested not in CALLABLE_EXECUTORS:
        warnings.warn(
            f"Backend 'get_displacement callable' does not support {requested!r} executor. "
            f"Supported executors: {list(CALLABLE_EXECUTORS)!r}. Falling back to 'sequential'.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
        return "sequential"
    return requested


def _backend(options):
    return backend_factory(options)(options.flow_parameters(), dict(options.backend_params))


def _image(name: str, value: Any) -> np.ndarray:
    image = np.asarray(value, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"{name} must be (H, W) or (H, W, C), got shape {np.shape(value)}")
    return image


def resolve_get_displacement(options) -> Callable[..., np.ndarray]:
    """``get_displacement(fixed, moving, uv=None, weight=None, **ignored) -> w`` of the
    options' flow backend and solver parameters.

    ``fixed`` and ``moving`` are ``(H, W)`` or ``(H, W, C)`` images, normalised and
    pre-filtered as the caller wants (the function does neither); ``uv`` an initial field
    ``(H, W, 2)``; ``weight`` channel weights ``(C,)`` or a map (default: the options'). The
    result ``w`` ``(H, W, 2)`` float32 aligns ``moving`` to ``fixed``:
    ``moving(y + v, x + u) ~ fixed(y, x)``. Other keyword arguments (solver parameters a
    caller passes out of habit) are ignored: the options decide them.

    Raises ``ValueError`` for a flow backend that is not registered and ``ImportError`` for
    one that cannot run here, when called (not when the options are built).
    """
    backend = _backend(options)

    def get_displacement(fixed, moving, uv=None, weight=None, **ignored) -> np.ndarray:
        ref = _image("fixed", fixed)
        mov = _image("moving", moving)
        if ref.shape != mov.shape:
            raise ValueError(f"fixed {ref.shape} and moving {mov.shape} differ in shape")
        if weight is None and options.weight is not None:
            weight = (
                options.channel_weights(ref.shape[2])
                if isinstance(options.weight, tuple)
                else options.weight
            )
        prepared = backend.prepare_reference(ref, weight)
        return np.asarray(backend.estimate(prepared, mov[None], uv)[0], dtype=np.float32)

    get_displacement.backend = backend  # type: ignore[attr-defined]
    return get_displacement


def get_reference_frame(options, video=None) -> np.ndarray:
    """The raw reference ``(H, W, C)`` float32 a run with ``options`` would register to.

    ``video``: a reader (``shape``, ``dtype``, ``read(start, stop)``), an array
    ``(T, H, W[, C])``, a path or a list of per-channel paths; ``None`` reads
    ``options.input_file``. A reference image in ``options.reference_frames`` is returned
    as it is; frame indices are registered to their mean and averaged, exactly as in
    :func:`~pyflowreg.motion_correction.compensate_recording` (sequential executor).
    """
    from .._runtime import get_runtime
    from ..io import open_reader
    from ._engine import executor_maker, raw_reference

    source = options.input_file if video is None else video
    if source is None:
        raise ValueError("get_reference_frame needs a video: pass one or set input_file")
    binning = {"bin_size": options.bin_size} if options.bin_size > 1 else {}
    if hasattr(source, "read") and hasattr(source, "shape"):
        reader, owned = source, False
    else:
        if isinstance(source, tuple):
            source = list(source)
        reader, owned = open_reader(source, **binning), True
    make = executor_maker(
        get_runtime().get_executor_class("sequential"), backend_factory(options), options, 1
    )
    try:
        return raw_reference(reader, options, None, make, "video")
    finally:
        if owned:
            reader.close()
