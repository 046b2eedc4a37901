"""Motion correction of an in-memory video: arrays in, arrays out, no files.

Same engine, pre-processing, batching and initial-flow chaining as
:func:`~pyflowreg.motion_correction.compensate_recording`; the results are collected
in arrays instead of being written.
"""

from __future__ import annotations

import numpy as np

from .._runtime import get_runtime
from ._engine import (
    RunState,
    batch_callbacks,
    executor_maker,
    output_dtype,
    run_registration,
)
from ._resolve import backend_factory, select_executor
from ._source import check_finite_frames
from .compensate_recording import RegistrationConfig
from .options import OFOptions


class _ArraySink:
    """Collect registered frames and fields in preallocated arrays."""

    def __init__(self, n_frames: int, frame_shape: tuple[int, int, int], dtype: np.dtype) -> None:
        h, w, c = frame_shape
        self.registered = np.empty((n_frames, h, w, c), dtype)
        self.w = np.empty((n_frames, h, w, 2), np.float32)

    def start(self, reference: np.ndarray) -> None:
        pass

    def add(self, start: int, raw, registered, w) -> None:
        n = len(registered)
        self.registered[start : start + n] = registered
        self.w[start : start + n] = w

    def reference_changed(self, reference: np.ndarray) -> None:
        pass


class _InMemoryReader:
    """The minimal reader interface over a ``(T, H, W, C)`` array."""

    def __init__(self, video: np.ndarray) -> None:
        self.video = video
        self.shape = video.shape
        self.dtype = video.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.video[start:stop]


def _as_video(video: np.ndarray, reference) -> tuple[np.ndarray, str]:
    """``(T, H, W, C)`` view of the input and its layout (for the shape of the outputs).

    A 3-D array is a ``(T, H, W)`` video, unless ``reference`` has exactly its shape
    (then it is one ``(H, W, C)`` frame).
    """
    if video.ndim == 2:
        return video[None, :, :, None], "HW"
    if video.ndim == 3:
        ref_shape = None if reference is None or isinstance(reference, str) else np.shape(reference)
        if ref_shape is not None and tuple(ref_shape) == video.shape:
            return video[None], "HWC"
        return video[..., None], "THW"
    if video.ndim == 4:
        return video, "THWC"
    raise ValueError(
        f"video must be (T, H, W), (T, H, W, C) or a single (H, W) / (H, W, C) frame, "
        f"got shape {video.shape}"
    )


def _one_of(name: str, value, alias: str, alias_value):
    """``value`` or its PyFlowReg-named twin ``alias_value`` (not both)."""
    if alias_value is None:
        return value
    if value is not None:
        raise TypeError(f"compensate_arr() got both {name} and {alias} (they are one argument)")
    return alias_value


def compensate_arr(
    video: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    options: OFOptions | None = None,
    progress_callback=None,
    *,
    registration_config: RegistrationConfig | None = None,
    w_callback=None,
    registered_callback=None,
    flow_backend: str | None = None,
    backend_params: dict | None = None,
    get_displacement=None,
    get_displacement_factory=None,
    c1: np.ndarray | None = None,
    c_ref: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Register an in-memory video (or one frame) to a reference.

    Parameters
    ----------
    video : ndarray
        ``(T, H, W)``, ``(T, H, W, C)``, or a single frame ``(H, W)`` / ``(H, W, C)``
        (3-D input is read as ``(T, H, W)`` unless ``reference`` has the same shape).
        Any real dtype; must be finite.
    reference : ndarray, optional
        Raw reference image ``(H, W)`` or ``(H, W, C)``. ``None``: computed from the
        video as in ``compensate_recording`` (``options.reference_frames``).
    options : OFOptions, optional
        Model options (``input_file``, ``output_*`` and ``save_*`` are ignored);
        default ``OFOptions()``.
    registration_config : RegistrationConfig, optional
        Executor and workers; default ``RegistrationConfig()``.
    progress_callback : callable, optional
        ``progress_callback(done_frames, total_frames)`` after every batch.
    w_callback : callable, optional
        ``w_callback(w_batch, start_idx, end_idx)`` after every batch, ``w_batch``
        ``(n, H, W, 2)`` float32 (frames ``start_idx`` to ``end_idx - 1``; a view into
        the returned array: copy what you keep if you modify it).
    registered_callback : callable, optional
        ``registered_callback(batch, start_idx, end_idx)`` after every batch, ``batch``
        ``(n, H, W, C)`` registered frames.
    flow_backend, backend_params, get_displacement, get_displacement_factory : optional
        Override ``options.flow_backend``, ``options.backend_params``,
        ``options.get_displacement_impl`` and ``options.get_displacement_factory`` for this
        call (PyFlowReg's keywords).
    c1, c_ref : ndarray, optional
        PyFlowReg's names of ``video`` and ``reference`` (give one name of each).

    Returns
    -------
    registered : ndarray
        Same layout as ``video`` (``(T, H, W)`` in gives ``(T, H, W)``); dtype of the
        input unless ``options.output_dtype`` / ``output_typename``. With
        ``options.bin_size = b > 1`` the video is binned in time first: ``T // b`` frames.
    w : ndarray, float32
        ``(T, H, W, 2)``, or ``(H, W, 2)`` for a single frame; ``w[..., 0] = u`` (x),
        ``w[..., 1] = v`` (y), in pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from pyflowreg.motion_correction import OFOptions, compensate_arr
    >>> video = np.random.default_rng(0).random((5, 32, 32)).astype(np.float32)
    >>> registered, w = compensate_arr(video, video[0], OFOptions(quality_setting="fast"))
    >>> registered.shape, w.shape
    ((5, 32, 32), (5, 32, 32, 2))
    """
    video = _one_of("video", video, "c1", c1)
    reference = _one_of("reference", reference, "c_ref", c_ref)
    if video is None:
        raise TypeError("compensate_arr() needs the video (first argument, or c1=)")
    options = OFOptions() if options is None else options
    if not isinstance(options, OFOptions):
        raise TypeError(f"options must be OFOptions or None, got {type(options).__name__}")
    overrides = {
        "flow_backend": flow_backend,
        "backend_params": backend_params,
        "get_displacement_impl": get_displacement,
        "get_displacement_factory": get_displacement_factory,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        options = options.model_copy(update=overrides)
    config = RegistrationConfig() if registration_config is None else registration_config
    if not isinstance(config, RegistrationConfig):
        raise TypeError(
            f"registration_config must be a RegistrationConfig, got {type(config).__name__}"
        )
    arr = np.asarray(video)
    if arr.dtype.kind not in "uif":
        raise TypeError(f"video must have a real numeric dtype, got {arr.dtype}")
    video4, layout = _as_video(arr, reference)
    if 0 in video4.shape:
        raise ValueError(f"video must not be empty, got shape {arr.shape}")
    check_finite_frames(video4, "video")

    runtime = get_runtime()
    executor_name = select_executor(options, config.parallelization, runtime=runtime, stacklevel=3)
    make_executor = executor_maker(
        runtime.get_executor_class(executor_name),
        backend_factory(options, runtime),
        options,
        config.n_jobs,
        config.executor_kwargs(executor_name),
    )
    if options.bin_size > 1:  # binned in time by the reader, as in compensate_recording
        from ..io import open_reader

        reader = open_reader(video4, bin_size=options.bin_size)
    else:
        reader = _InMemoryReader(video4)
    sink = _ArraySink(reader.shape[0], video4.shape[1:], output_dtype(options, reader.dtype))
    run_registration(
        reader,
        options,
        make_executor,
        sink,
        RunState(),
        reference=reference,
        progress=progress_callback,
        batch_callback=batch_callbacks(
            [w_callback] if w_callback is not None else [],
            [registered_callback] if registered_callback is not None else [],
        ),
        name="video",
    )
    registered, w = sink.registered, sink.w
    if layout == "HW":
        return registered[0, ..., 0], w[0]
    if layout == "HWC":
        return registered[0], w[0]
    if layout == "THW":
        return registered[..., 0], w
    return registered, w
