"""The registration loop shared by ``compensate_recording`` and ``compensate_arr``.

reader -> reference -> normalisation and pre-filter (with temporal halo) -> executor,
batch by batch -> sink. The sink decides what happens to the results (files,
in-memory arrays); this module never touches the file system itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

import numpy as np

from .._kernels import ensure_compiled
from ..core.alpha import select_alpha
from ..executors.base import PendingBatch, WarpSettings
from ._source import FrameSource, ReadAhead, batch_ranges
from .initialization import InitialFlowPlanner
from .reference import (
    as_reference_image,
    compute_reference,
    normalization_range,
    prepared_reference_image,
)

logger = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """What ``batch_callback`` receives after every batch.

    Attributes
    ----------
    start : int
        Index of the first frame of the batch in the recording.
    registered : ndarray, shape (n, H, W, C)
        Registered frames, output dtype.
    w : ndarray, shape (n, H, W, 2), float32
        Displacement fields, ``w[..., 0] = u`` (x), ``w[..., 1] = v`` (y), in pixels.
    batch : int
        Index of the batch (0-based).
    """

    start: int
    registered: np.ndarray
    w: np.ndarray
    batch: int = 0


class _Job(NamedTuple):
    """A batch handed to the executor."""

    b: int
    start: int
    stop: int
    raw: np.ndarray
    pending: PendingBatch


class _Done(NamedTuple):
    """A registered batch waiting to be written (``reference``: the updated raw reference)."""

    job: _Job
    registered: np.ndarray
    w: np.ndarray
    reference: np.ndarray | None


class Sink(Protocol):
    """Receives the results of the loop, batch by batch."""

    def start(self, reference: np.ndarray) -> None: ...

    def add(self, start: int, raw: np.ndarray, registered: np.ndarray, w: np.ndarray) -> None: ...

    def reference_changed(self, reference: np.ndarray) -> None: ...


@dataclass
class RunState:
    """Bookkeeping of one run; ``stage`` names what is being done (for error messages)."""

    stage: str = "starting"
    reference: np.ndarray | None = None
    n_frames: int = 0
    n_workers: int = 1
    flow_seconds: float = 0.0
    reference_flow_seconds: float = 0.0
    alpha_selection: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Seconds per phase of the run (``run.json``'s ``phase_seconds``, see :meth:`timed`).
    phases: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the seconds the block takes to ``phases[phase]``.

        Phases of a run, in the calling process: ``executor_start`` (making the executor; the
        multiprocessing workers start in the background, ready after ``workers_ready``),
        ``reference`` (the reference computed or loaded), ``initial_flow`` (the initial fields
        of the batches), ``read_wait`` (waiting for the next batch read and pre-filtered),
        ``submit`` (handing a batch to the executor: the whole registration for the
        sequential executor, copying the frames to the workers for the others), ``batch_wait``
        (waiting for the executor to finish a batch), ``write`` (handing
        results to the outputs and statistics); ``compensate_recording`` adds ``preflight``
        (checks, kernels, output folder before the run) and ``kernels`` (its part spent
        compiling or checking the kernel cache).
        """
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - tic


def output_dtype(options, input_dtype: np.dtype) -> np.dtype:
    """``options.output_dtype`` (or ``output_typename``'s) or the input dtype, native order."""
    return options.resolved_output_dtype(input_dtype)


def batch_callbacks(w_callbacks=(), registered_callbacks=()):
    """One ``batch_callback(BatchResult)`` that calls PyFlowReg-style callbacks
    ``w_callback(w_batch, start_idx, end_idx)`` and ``registered_callback(batch, start_idx,
    end_idx)`` (``end_idx`` exclusive) in order; None when there are none."""
    w_callbacks, registered_callbacks = list(w_callbacks), list(registered_callbacks)
    for callback in (*w_callbacks, *registered_callbacks):
        if not callable(callback):
            raise TypeError(f"callbacks must be callable, got {type(callback).__name__}")
    if not (w_callbacks or registered_callbacks):
        return None

    def call(batch: BatchResult) -> None:
        end = batch.start + len(batch.w)
        for callback in w_callbacks:
            callback(batch.w, batch.start, end)
        for callback in registered_callbacks:
            callback(batch.registered, batch.start, end)

    return call


def executor_maker(
    executor_cls: type,
    backend_factory: Callable,
    options,
    n_jobs: int,
    executor_kwargs: dict | None = None,
) -> Callable:
    """``make(params, dtype) -> Executor`` for the run's executor class and flow backend.

    With the CPU flow backend, kernels missing from Numba's cache are compiled here first
    (announced once): in this process only, before any worker starts.
    """
    if options.flow_backend == "flowreg":
        ensure_compiled()

    def make(params, dtype):
        settings = WarpSettings(options.interpolation_method, np.dtype(dtype))
        return executor_cls(
            n_jobs,
            backend_factory,
            params,
            dict(options.backend_params),
            settings,
            **(executor_kwargs or {}),
        )

    return make


def lend(executor) -> Callable:
    """A ``make(params, dtype)`` that lends the open ``executor`` under other settings.

    The reference pass and the registration then share one pool of workers (one start-up per
    run); the lender does not close the executor.
    """

    def make(params, dtype):
        executor.reconfigure(params, executor.warp_settings._replace(dtype=np.dtype(dtype)))
        return contextlib.nullcontext(executor)

    return make


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None on other C libraries."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
    return trim


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc; a no-op elsewhere).

    Batch buffers are freed by one thread and allocated by another (read-ahead, pre-filter
    threads), which leaves freed pages resident in glibc's per-thread arenas; trimming once
    per batch keeps the resident memory of a long run at that of a short one.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _weight(options, n_channels: int) -> np.ndarray | None:
    """The weights handed to the flow backend: channel weights ``(C,)`` for this video
    (see ``OFOptions.channel_weights``), a spatial map as given, or None."""
    if options.weight is None:
        return None
    if isinstance(options.weight, tuple):
        return options.channel_weights(n_channels)
    return np.asarray(options.weight, dtype=np.float64)


def raw_reference(
    reader, options, reference, make_executor, name: str, workers: int = 1
) -> np.ndarray:
    """The raw ``(H, W, C)`` float32 reference: given, from the options, or computed."""
    n_frames = int(reader.shape[0])
    frame_shape = tuple(int(s) for s in reader.shape[1:])
    if reference is not None:
        return as_reference_image(reference, frame_shape)
    if options.reference_is_image:
        return as_reference_image(options.reference_frames, frame_shape)
    indices = options.resolved_reference_frames(n_frames)
    logger.info("computing the reference from %d frames of %s", len(indices), name)
    return compute_reference(
        reader,
        indices,
        sigma=options.sigma_for_channels(frame_shape[2]),
        channel_normalization=options.channel_normalization,
        params=options.flow_parameters(),
        weight=_weight(options, frame_shape[2]),
        make_executor=make_executor,
        chunk_size=options.buffer_size,
        name=name,
        workers=workers,
    )


class RunSetup(NamedTuple):
    """What a run needs once its reference is known (see :func:`prepare_run`)."""

    ref_raw: np.ndarray
    ref_pre: np.ndarray
    low: np.ndarray
    high: np.ndarray
    sigma: np.ndarray
    weight: np.ndarray | None
    source: FrameSource
    batches: list
    planner: InitialFlowPlanner


#: Frames the smoothness weight is validated on with ``alpha="auto"``.
AUTO_ALPHA_FRAMES = 4


def _auto_alpha(options, source, ref_pre, params, weight, state: RunState):
    """Choose the smoothness weight on a few frames (evenly spread over the reference frames,
    or over the recording when a reference image was given); returns the run's parameters."""
    n = len(source)
    if options.reference_is_image:
        pool = np.arange(n)
    else:
        pool = np.asarray(options.resolved_reference_frames(n))
    picks = pool[np.linspace(0, len(pool) - 1, min(AUTO_ALPHA_FRAMES, len(pool))).astype(int)]
    frames = np.stack([source.read(int(i), int(i) + 1)[1][0] for i in picks])
    chosen = select_alpha(ref_pre, frames, params, weight=weight)
    state.alpha_selection = dict(chosen.as_dict(), frames=[int(i) for i in picks])
    logger.info("alpha='auto': chose %.3g (%s)", chosen.alpha, state.alpha_selection["method"])
    return replace(params, alpha=(chosen.alpha, chosen.alpha))


def prepare_run(reader, options, executor, sink, state: RunState, reference, name) -> RunSetup:
    """Reference, normalisation, frame source, batches and initial-flow planner of a run.

    Computes (or takes) the raw reference with the open ``executor`` (lent under the reference
    parameters), then switches the executor to the run's parameters and reference. Shared by the
    local loop and the cluster runner so both register exactly the same way.
    """
    n_frames, _, _, n_channels = (int(s) for s in reader.shape)
    options.check_channels(n_channels, stacklevel=4)
    sigma = options.sigma_for_channels(n_channels)
    weight = _weight(options, n_channels)
    dtype = output_dtype(options, reader.dtype)
    state.n_workers = int(getattr(executor, "n_workers", 1))
    threads = max(1, min(state.n_workers, os.cpu_count() or 1))  # pre-filter threads, here
    executor.reserve(min(options.buffer_size, n_frames))  # the reference chunks come first
    state.stage = "computing the reference"
    with state.timed("reference"):
        ref_raw = raw_reference(reader, options, reference, lend(executor), name, workers=threads)
    state.reference_flow_seconds = executor.flow_seconds
    state.reference = ref_raw
    low, high = normalization_range(ref_raw, options.channel_normalization)
    ref_pre = prepared_reference_image(ref_raw, low, high, sigma)
    sink.start(ref_raw)
    source = FrameSource(reader, low, high, sigma, name=name, workers=threads)
    batches = batch_ranges(n_frames, options.buffer_size)
    params = options.flow_parameters()
    if options.alpha == "auto":
        state.stage = "choosing alpha"
        params = _auto_alpha(options, source, ref_pre, params, weight, state)
    executor.reconfigure(params, WarpSettings(options.interpolation_method, dtype))
    executor.set_reference(ref_pre, weight)
    planner = InitialFlowPlanner(
        source,
        executor,
        batches,
        ref_pre,
        chain=options.update_initialization_w,
        cc=options.cc_initialization,
        cc_hw=options.cc_hw,
        cc_up=options.cc_up,
    )
    return RunSetup(ref_raw, ref_pre, low, high, sigma, weight, source, batches, planner)


def run_registration(
    reader,
    options,
    make_executor: Callable,
    sink: Sink,
    state: RunState,
    *,
    reference=None,
    progress: Callable[[int, int], None] | None = None,
    batch_callback: Callable[[BatchResult], None] | None = None,
    name: str = "input",
    resume_at: tuple[int, np.ndarray | None] | None = None,
    checkpoint: Callable[[int, int, np.ndarray | None], None] | None = None,
) -> None:
    """Register every frame of ``reader`` and hand the results to ``sink``.

    Parameters
    ----------
    reader : VideoReader
        ``shape`` ``(T, H, W, C)``, ``dtype``, ``read(start, stop)``.
    options : OFOptions
    make_executor : callable
        ``make(params, dtype) -> Executor``.
    sink : Sink
    state : RunState
        Filled in as the run goes (stage, reference, frames done, workers, flow time).
    reference : ndarray or path, optional
        A given reference image (overrides ``options.reference_frames``).
    progress : callable, optional
        ``progress(done, total)`` after every batch.
    batch_callback : callable, optional
        ``batch_callback(BatchResult)`` after every batch.
    name : str
        The input's name in messages.
    resume_at : (int, ndarray or None), optional
        ``(b, uv_b)``: start at batch ``b`` with the initial flow ``uv_b`` a checkpoint of an
        interrupted run saved (the batches before it are in the outputs already).
    checkpoint : callable, optional
        ``checkpoint(b, frames_done, uv_next)`` after batch ``b`` was handed to the sink;
        ``uv_next`` is the initial flow of batch ``b + 1`` when already planned, else None.
    """
    params = options.flow_parameters()
    dtype = output_dtype(options, reader.dtype)
    n_frames = int(reader.shape[0])

    state.stage = "starting the executor"
    with state.timed("executor_start"):
        executor = make_executor(params, dtype)
    with executor:
        run = prepare_run(reader, options, executor, sink, state, reference, name)
        source, batches, planner = run.source, run.batches, run.planner
        low, high, sigma, weight = run.low, run.high, run.sigma, run.weight

        def stage(b: int) -> str:
            start, stop = batches[b]
            return f"batch {b + 1}/{len(batches)} (frames {start}-{stop - 1})"

        def collect(job: _Job) -> _Done:
            """Wait for a submitted batch; what the next batch needs from it happens here."""
            state.stage = stage(job.b)
            with state.timed("batch_wait"):
                registered, w = job.pending.result()
            planner.observe(w)
            ref_raw = None
            if options.update_reference:
                ref_raw = registered.mean(axis=0, dtype=np.float64).astype(np.float32)
                ref_pre = prepared_reference_image(ref_raw, low, high, sigma)
                executor.set_reference(ref_pre, weight)
                planner.set_reference(ref_pre)
            return _Done(job, registered, w, ref_raw)

        def finish(done: _Done) -> None:
            """Hand a collected batch to the sink and callbacks, then free its buffers."""
            job = done.job
            state.stage = stage(job.b)
            try:
                with state.timed("write"):
                    sink.add(job.start, job.raw, done.registered, done.w)
                if batch_callback is not None:
                    registered, w = done.registered, done.w
                    if job.pending.volatile:  # the callback may keep what it gets
                        registered, w = registered.copy(), w.copy()
                    batch_callback(BatchResult(job.start, registered, w, job.b))
                if done.reference is not None:
                    sink.reference_changed(done.reference)
            finally:
                job.pending.release()
            state.n_frames = job.stop
            if checkpoint is not None:
                checkpoint(job.b, job.stop, planner.planned(job.b + 1))
            if progress is not None:
                progress(job.stop, n_frames)
            logger.debug("registered frames %d-%d of %s", job.start, job.stop - 1, name)

        # Batch b is submitted before batch b - 1 is written: the workers register one batch
        # while this thread writes the previous one, then reads the next one (at most two
        # batches of raw frames and two of outputs in memory).
        job: _Job | None = None
        first = 0
        if resume_at is not None:
            first = int(resume_at[0])
            planner.resume_at(first, resume_at[1])
        state.stage = stage(min(first, len(batches) - 1))
        try:
            reads = ReadAhead(source, batches[first:])
            try:
                # parallel runs: the first batch is read and pre-filtered on the read-ahead thread
                # while the workers estimate its initial flow (its first frames), instead of
                # the workers waiting for the read
                reads.ahead()
                with state.timed("initial_flow"):
                    uv_first = planner.next() if first < len(batches) else None
            except BaseException:
                reads.close()
                raise
            for b, (start, stop, raw, filtered) in enumerate(_timed(reads, state), start=first):
                done = collect(job) if job is not None else None
                state.stage = stage(b)
                if b == first:
                    uv = uv_first
                else:
                    with state.timed("initial_flow"):
                        uv = planner.next()
                with state.timed("submit"):
                    pending = executor.submit_batch(raw, filtered, uv, start)
                job = _Job(b, start, stop, raw, pending)
                del raw, filtered, pending
                if done is not None:
                    finish(done)
                    del done
                    release_free_memory()
                reads.ahead()  # batch b - 1 is written: read b + 1 while b is registered
                if b + 1 < len(batches):
                    state.stage = stage(b + 1)  # a failed read-ahead is reported as the next batch
            if job is not None:
                finish(collect(job))
                job = None
        finally:
            if job is not None:
                job.pending.cancel()
        state.flow_seconds = executor.flow_seconds
        ready = getattr(executor, "ready_seconds", None)
        if ready is not None:
            state.phases["workers_ready"] = float(ready)
    state.stage = "finishing"


def _timed(items, state: RunState) -> Iterator:
    """The items of ``items``, the time spent waiting for each added to ``read_wait``."""
    iterator = iter(items)
    try:
        while True:
            with state.timed("read_wait"):
                item = next(iterator, _END)
            if item is _END:
                return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:  # stops the read-ahead thread now, also on errors
            close()


_END = object()
