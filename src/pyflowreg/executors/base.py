"""The executor contract and the per-frame work every executor shares.

An executor turns a batch of frames into registered frames and displacement fields::

    with ThreadingExecutor(4, FlowregBackend, params, {}, WarpSettings("cubic", np.uint16)) as ex:
        ex.set_reference(reference)                      # (H, W, C) float32, once per reference
        registered, w = ex.process_batch(raw, filtered, uv, first_index=0)

The frame loop exists once, in :func:`register_frames`: the fields of a block of frames in one
backend call (:func:`estimate_frames`), then each frame warped (:func:`warp_frame`). Every
executor runs it: the sequential one (and any subclass of :class:`Executor` that does not
override :meth:`Executor._run_batch`) on a whole batch, which is what the GPU backends need to
batch on the device; the threading and multiprocessing workers one frame per call
(:func:`register_frame`); the Dask tasks one block of frames per call. So the same inputs give
bit-identical outputs whichever executor runs them (for backends whose ``estimate`` treats
frames independently, as every backend supporting parallel executors must).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..backends.base import FlowBackend
from ..core.params import FlowParameters
from ..core.warp import METHODS, warp_into, work_dtype

WARP_METHODS = tuple(METHODS)


class WarpSettings(NamedTuple):
    """How the raw frames are warped into the output.

    Attributes
    ----------
    method : {"cubic", "linear", "nearest"}
        Interpolation of the final warp.
    dtype : numpy.dtype
        Output dtype of the registered frames; integer outputs are rounded and clipped.
    fill : float or None
        Value for samples outside the frame; ``None`` replicates the border.
    """

    method: str = "cubic"
    dtype: np.dtype = np.dtype(np.float32)
    fill: float | None = None

    def validated(self) -> WarpSettings:
        """A copy with ``dtype`` as a :class:`numpy.dtype`, or ValueError/TypeError."""
        if self.method not in WARP_METHODS:
            raise ValueError(f"method must be one of {list(WARP_METHODS)}, got {self.method!r}")
        try:
            dtype = np.dtype(self.dtype)
        except TypeError as exc:
            raise TypeError(f"dtype must be a numpy dtype, got {self.dtype!r}") from exc
        if dtype.kind not in "uif":
            raise ValueError(f"dtype must be an integer or float dtype, got {dtype}")
        fill = None if self.fill is None else float(self.fill)
        return WarpSettings(self.method, dtype, fill)


def validate_n_jobs(n_jobs: int, name: str = "n_jobs") -> int:
    """``n_jobs`` as an int if it is ``-1`` (all cores) or ``>= 1``.

    The one check of a worker count, used by the executors, ``RegistrationConfig`` and the
    command line (``name`` is the parameter named in the message, e.g. ``"--n-jobs"``).

    Raises
    ------
    TypeError
        ``n_jobs`` is not an int (a bool is not one).
    ValueError
        ``n_jobs`` is 0 or below -1.
    """
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(n_jobs).__name__}")
    if n_jobs != -1 and n_jobs < 1:
        raise ValueError(f"{name} must be -1 or >= 1, got {n_jobs}")
    return int(n_jobs)


def resolve_n_jobs(n_jobs: int) -> int:
    """Number of workers for ``n_jobs`` (``-1``: all cores available to this process)."""
    if validate_n_jobs(n_jobs) == -1:
        if hasattr(os, "sched_getaffinity"):
            return max(1, len(os.sched_getaffinity(0)))
        return max(1, os.cpu_count() or 1)
    return int(n_jobs)


def estimate_frames(
    backend: Any,
    prepared: Any,
    filtered: np.ndarray,
    uv: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Displacement fields of a block of frames (one backend call).

    Parameters
    ----------
    backend : FlowBackend
        The flow backend.
    prepared : object
        ``backend.prepare_reference(...)`` of the current reference.
    filtered : ndarray, (n, H, W, C) float32
        Normalised, pre-filtered frames.
    uv : ndarray, (H, W, 2) float32
        Initial displacement field in pixels, shared by the frames.
    out : ndarray, (n, H, W, 2) float32, optional
        Where to write the fields (a new array by default).

    Returns
    -------
    ndarray, (n, H, W, 2) float32
        ``w[..., 0] = u`` (columns), ``w[..., 1] = v`` (rows), in pixels.
    """
    if out is None:
        out = np.empty((*filtered.shape[:3], 2), np.float32)
    if hasattr(backend, "estimate_into"):
        return backend.estimate_into(prepared, filtered, uv, out)
    # a backend that does not derive from FlowBackend: the base class's copy of estimate()
    return FlowBackend.estimate_into(backend, prepared, filtered, uv, out)


def warp_frame(
    raw_frame: np.ndarray,
    w: np.ndarray,
    warp_settings: WarpSettings,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The registered frame: ``raw_frame`` (H, W, C) backward-warped by ``w`` (H, W, 2).

    Warps in the raw dtype when it is the output dtype, otherwise in floating point (float64
    where float32 would not hold the values), and writes ``warp_settings.dtype`` (integers
    rounded and clipped) into ``out`` (a new array by default) in one pass.
    """
    if not np.isfinite(w).all():
        raise ValueError("the displacement field contains NaN or infinite values")
    out_dtype = warp_settings.dtype
    source = raw_frame.dtype
    if source != out_dtype:
        source = np.result_type(source, out_dtype, np.float32)
    if out is None:
        out = np.empty(raw_frame.shape, out_dtype)
    work = work_dtype(source)
    return warp_into(raw_frame, w, out, warp_settings.method, warp_settings.fill, work)


def register_frames(
    backend: Any,
    prepared: Any,
    raw: np.ndarray,
    filtered: np.ndarray,
    uv: np.ndarray,
    warp_settings: WarpSettings,
    out: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    first_index: int = 0,
    frame_error: Callable[..., BaseException] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fields and registered frames of a block: :func:`estimate_frames` then :func:`warp_frame`.

    The frame loop of every executor: the fields of the whole block come from one backend
    call (GPU backends solve the frames as a tensor dimension), then each raw frame is
    warped by its field.

    Parameters
    ----------
    backend : FlowBackend
        The flow backend (``estimate(prepared, frames, uv)``).
    prepared : object
        ``backend.prepare_reference(...)`` of the current reference.
    raw : ndarray, (n, H, W, C)
        The frames as read, any real dtype; these are warped.
    filtered : ndarray, (n, H, W, C) float32
        The normalised, pre-filtered frames the fields are estimated from.
    uv : ndarray, (H, W, 2) float32
        Initial displacement field in pixels, shared by the frames.
    warp_settings : WarpSettings
        Interpolation, output dtype and fill value of the final warp.
    out : (registered, w), optional
        Arrays of shapes (n, H, W, C) and (n, H, W, 2) to write the results into (new arrays
        by default).
    first_index : int
        Index of ``raw[0]`` in the recording (passed to ``frame_error``).
    frame_error : callable, optional
        ``frame_error(index, exc, n_frames=1) -> BaseException``: the error raised (chained to
        ``exc``) when estimating the block (``index = first_index``, ``n_frames = n``) or
        warping frame ``first_index + i`` fails, e.g. :meth:`Executor._frame_error`. Without
        it errors propagate as raised.

    Returns
    -------
    registered : ndarray, (n, H, W, C), ``warp_settings.dtype``
    w : ndarray, (n, H, W, 2) float32
    """
    registered, w = out if out is not None else (None, None)
    try:
        w = estimate_frames(backend, prepared, filtered, uv, w)
    except Exception as exc:
        if frame_error is None:
            raise
        raise frame_error(first_index, exc, raw.shape[0]) from exc
    if registered is None:
        registered = np.empty(raw.shape, warp_settings.dtype)
    for i in range(raw.shape[0]):
        try:
            warp_frame(raw[i], w[i], warp_settings, registered[i])
        except Exception as exc:
            if frame_error is None:
                raise
            raise frame_error(first_index + i, exc) from exc
    return registered, w


def register_frame(
    backend: Any,
    prepared: Any,
    raw_frame: np.ndarray,
    filtered_frame: np.ndarray,
    uv: np.ndarray,
    warp_settings: WarpSettings,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`register_frames` for one frame (what a worker of a parallel executor runs).

    Parameters
    ----------
    backend, prepared, uv, warp_settings
        As for :func:`register_frames`.
    raw_frame : ndarray, (H, W, C)
        The frame as read, any real dtype; this is what gets warped.
    filtered_frame : ndarray, (H, W, C) float32
        The normalised, pre-filtered frame the flow is estimated from.
    out : (registered, w), optional
        Arrays of shapes (H, W, C) and (H, W, 2) to write the results into.

    Returns
    -------
    registered : ndarray, (H, W, C), ``warp_settings.dtype``
    w : ndarray, (H, W, 2) float32
    """
    block = None if out is None else (out[0][None], out[1][None])
    registered, w = register_frames(
        backend, prepared, raw_frame[None], filtered_frame[None], uv, warp_settings, block
    )
    return registered[0], w[0]


class PendingBatch:
    """A batch handed to :meth:`Executor.submit_batch`.

    Parameters
    ----------
    wait : callable
        ``wait() -> (registered, w)``: blocks until the batch is done; raises its error.
    release : callable, optional
        Hands the output buffers back to the executor.
    volatile : bool
        Whether the outputs are views into buffers that :meth:`release` lets the executor reuse.
    cancel : callable, optional
        Drops the frames not started yet (those running finish).
    """

    def __init__(
        self,
        wait: Callable[[], tuple[np.ndarray, np.ndarray]],
        release: Callable[[], None] | None = None,
        volatile: bool = False,
        cancel: Callable[[], None] | None = None,
    ) -> None:
        self._wait = wait
        self._release = release
        self._cancel = cancel
        self.volatile = volatile
        self._outcome: tuple[np.ndarray, np.ndarray] | BaseException | None = None
        self._on_done: Callable[[], None] | None = None

    @classmethod
    def completed(cls, registered: np.ndarray, w: np.ndarray) -> PendingBatch:
        """A batch that is already done."""
        pending = cls(lambda: (registered, w))
        pending.wait()
        return pending

    @classmethod
    def failed(cls, exc: BaseException) -> PendingBatch:
        """A batch whose registration raised ``exc``."""
        pending = cls(lambda: None)
        pending._outcome = exc
        return pending

    def wait(self) -> None:
        """Block until the batch is done, without raising its error (:meth:`result` does)."""
        if self._outcome is None:
            try:
                self._outcome = self._wait()
            except BaseException as exc:
                self._outcome = exc
                if not isinstance(exc, Exception):
                    raise  # KeyboardInterrupt, SystemExit: never swallowed
            finally:
                on_done, self._on_done = self._on_done, None
                if on_done is not None:
                    on_done()

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the batch is done (now, if it already is)."""
        if self._outcome is not None:
            callback()
        else:
            self._on_done = callback

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(registered, w)`` of the batch, ``(n, H, W, C)`` and ``(n, H, W, 2)`` float32."""
        self.wait()
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome

    def cancel(self) -> None:
        """Stop the batch early (frames not started are dropped), then :meth:`release` it."""
        if self._outcome is None:
            if self._cancel is not None:
                self._cancel()
            self.wait()
            if not isinstance(self._outcome, BaseException):
                self._outcome = RuntimeError("the batch was cancelled")
        self.release()

    def release(self) -> None:
        """Give the output buffers back to the executor (idempotent)."""
        self.wait()
        release, self._release = self._release, None
        if release is not None:
            release()


class Executor:
    """Base class of the parallelization executors (a context manager).

    Parameters
    ----------
    n_jobs : int
        Number of workers; ``-1`` means all cores. Ignored by the sequential executor.
    backend_factory : callable
        ``(FlowParameters, backend_params) -> FlowBackend``, e.g. ``FlowregBackend``.
    flow_params : FlowParameters
        Model parameters of the flow solve.
    backend_params : dict
        Backend options (e.g. ``{"device": "cuda"}``).
    warp_settings : WarpSettings
        Interpolation, output dtype and fill value of the final warp.
    """

    #: Registry name of the executor.
    name: str = ""

    def __init__(
        self,
        n_jobs: int,
        backend_factory: Callable[..., Any],
        flow_params: FlowParameters,
        backend_params: dict | None,
        warp_settings: WarpSettings,
    ) -> None:
        if not callable(backend_factory):
            raise TypeError(
                f"backend_factory must be callable, got {type(backend_factory).__name__}"
            )
        if not isinstance(flow_params, FlowParameters):
            raise TypeError(f"flow_params must be FlowParameters, got {type(flow_params).__name__}")
        if not isinstance(warp_settings, WarpSettings):
            raise TypeError(
                f"warp_settings must be WarpSettings, got {type(warp_settings).__name__}"
            )
        self.n_workers = resolve_n_jobs(n_jobs)
        self.backend_factory = backend_factory
        self.flow_params = flow_params
        self.backend_params = dict(backend_params or {})
        self.warp_settings = warp_settings.validated()
        self._backend: Any = None
        self._prepared: Any = None
        self._frame_shape: tuple[int, int, int] | None = None
        self._in_flight: PendingBatch | None = None
        #: Seconds during which a batch was in the executor's hands (from submission until its
        #: outputs were ready), summed over batches: the time spent estimating and warping.
        self.flow_seconds = 0.0
        self._closed = False

    @property
    def backend(self) -> Any:
        """The flow backend of this process (created on first use)."""
        if self._backend is None:
            self._backend = self.backend_factory(self.flow_params, self.backend_params)
        return self._backend

    def reconfigure(
        self,
        flow_params: FlowParameters | None = None,
        warp_settings: WarpSettings | None = None,
    ) -> None:
        """Change the flow parameters and/or warp settings, keeping the workers.

        Lets one run use the same pool for the reference pass (other parameters) and the
        registration. The prepared reference is dropped: call :meth:`set_reference` again.
        """
        self._check_open()
        if flow_params is not None:
            if not isinstance(flow_params, FlowParameters):
                raise TypeError(
                    f"flow_params must be FlowParameters, got {type(flow_params).__name__}"
                )
            if flow_params != self.flow_params:
                self.flow_params = flow_params
                self._backend = None  # rebuilt with the new parameters on first use
        if warp_settings is not None:
            if not isinstance(warp_settings, WarpSettings):
                raise TypeError(
                    f"warp_settings must be WarpSettings, got {type(warp_settings).__name__}"
                )
            self.warp_settings = warp_settings.validated()
        self._prepared = None
        self._frame_shape = None

    def reserve(self, n_frames: int) -> None:
        """Hint: batches of up to ``n_frames`` frames will follow.

        Executors that keep per-batch buffers (multiprocessing's shared memory) size them
        for that many frames, so that shorter batches first do not make them replace their
        buffers later. Results never depend on it; the default does nothing.
        """

    def set_reference(self, reference: np.ndarray, weight: np.ndarray | None = None) -> None:
        """Prepare ``reference`` (H, W, C) float32 for the following batches.

        Call once per reference, and again whenever the reference changes.
        """
        self._check_open()
        reference = np.asarray(reference, dtype=np.float32)
        if reference.ndim != 3:
            raise ValueError(f"reference must have shape (H, W, C), got {reference.shape}")
        self._prepared = self.backend.prepare_reference(reference, weight)
        self._frame_shape = reference.shape
        self._reference_changed(self._prepared)

    def submit_batch(
        self,
        raw: np.ndarray,
        filtered: np.ndarray,
        uv: np.ndarray | None,
        first_index: int = 0,
    ) -> PendingBatch:
        """Start registering a batch; :meth:`PendingBatch.result` gives its outputs.

        Executors with workers return at once, so the caller can write the previous batch
        while this one is registered. One batch is in flight at a time: submitting waits for
        the previous one to finish (its outputs stay readable until it is released). The
        arguments are those of :meth:`process_batch`.

        The outputs may be views into the executor's buffers (``PendingBatch.volatile``): they
        stay valid until :meth:`PendingBatch.release`, which hands the buffers back; copy what
        must outlive that. Release every pending batch (or close the executor).
        """
        self._check_open()
        if self._prepared is None:
            raise RuntimeError("set_reference() must be called before process_batch()")
        raw = np.asarray(raw)
        filtered = np.asarray(filtered, dtype=np.float32)
        h, w, c = self._frame_shape
        if raw.ndim != 4 or raw.shape[1:] != (h, w, c):
            raise ValueError(f"raw must have shape (T, {h}, {w}, {c}), got {raw.shape}")
        if raw.dtype.kind not in "uif":
            raise TypeError(f"raw must have a real numeric dtype, got {raw.dtype}")
        if filtered.shape != raw.shape:
            raise ValueError(
                f"filtered must have the shape of raw {raw.shape}, got {filtered.shape}"
            )
        if uv is None:
            uv = np.zeros((h, w, 2), np.float32)
        uv = np.ascontiguousarray(uv, dtype=np.float32)
        if uv.shape != (h, w, 2):
            raise ValueError(f"uv must have shape {(h, w, 2)}, got {uv.shape}")
        if self._in_flight is not None:
            self._in_flight.wait()
            self._in_flight = None
        if raw.shape[0] == 0:
            return PendingBatch.completed(*self._new_outputs(0))
        tic = time.perf_counter()
        pending = self._submit(raw, filtered, uv, int(first_index))

        def count() -> None:
            self.flow_seconds += time.perf_counter() - tic

        pending.when_done(count)
        self._in_flight = pending
        return pending

    def process_batch(
        self,
        raw: np.ndarray,
        filtered: np.ndarray,
        uv: np.ndarray | None,
        first_index: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Register a batch of frames against the current reference.

        Parameters
        ----------
        raw : ndarray, (T, H, W, C)
            Frames as read, any real dtype; these are warped.
        filtered : ndarray, (T, H, W, C) float32
            Normalised, pre-filtered frames the flow is estimated from.
        uv : ndarray, (H, W, 2) float32, or None
            Initial field shared by the batch (None: zeros).
        first_index : int
            Index of ``raw[0]`` in the recording (used in error messages).

        Returns
        -------
        registered : ndarray, (T, H, W, C), ``warp_settings.dtype``
        w : ndarray, (T, H, W, 2) float32
            In input order; arrays the caller owns.
        """
        pending = self.submit_batch(raw, filtered, uv, first_index)
        try:
            registered, w = pending.result()
            if pending.volatile:
                registered, w = registered.copy(), w.copy()
        finally:
            pending.release()
        return registered, w

    def _submit(
        self, raw: np.ndarray, filtered: np.ndarray, uv: np.ndarray, first_index: int
    ) -> PendingBatch:
        """Start a validated, non-empty batch (default: register it now, in this thread)."""
        registered, flow = self._new_outputs(raw.shape[0])
        try:
            self._run_batch(raw, filtered, uv, first_index, registered, flow)
        except Exception as exc:  # raised by result(); KeyboardInterrupt propagates now
            return PendingBatch.failed(exc)
        return PendingBatch.completed(registered, flow)

    def _new_outputs(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Uninitialised ``registered`` (output dtype) and ``flow`` arrays for ``n`` frames."""
        h, w, c = self._frame_shape
        return (
            np.empty((n, h, w, c), self.warp_settings.dtype),
            np.empty((n, h, w, 2), np.float32),
        )

    def _run_batch(
        self,
        raw: np.ndarray,
        filtered: np.ndarray,
        uv: np.ndarray,
        first_index: int,
        registered: np.ndarray,
        flow: np.ndarray,
    ) -> None:
        """Fill ``registered[i]`` and ``flow[i]`` for every frame ``i`` of the batch.

        Called by the default :meth:`_submit`, in the calling thread. The default registers
        the whole batch with :func:`register_frames` (one ``estimate`` call, then the warps),
        naming the failing frames in its errors; executors that run batches asynchronously
        override :meth:`_submit` instead.
        """
        register_frames(
            self.backend,
            self._prepared,
            raw,
            filtered,
            uv,
            self.warp_settings,
            (registered, flow),
            first_index=first_index,
            frame_error=self._frame_error,
        )

    def _reference_changed(self, prepared: Any) -> None:
        """Hook: the prepared reference changed (executors with workers share it here)."""

    def _frame_error(self, index: int, exc: BaseException, n_frames: int = 1) -> BaseException:
        """The error to raise for ``exc``, raised while registering frame ``index``: a
        :class:`RuntimeError` naming the frames, or :class:`KeyboardInterrupt` when ``exc``
        comes from one (Ctrl-C during a compiled kernel surfaces as a :class:`SystemError`
        whose cause is the interrupt)."""
        seen = exc
        while seen is not None:
            if isinstance(seen, KeyboardInterrupt):
                return KeyboardInterrupt()
            seen = seen.__cause__ or seen.__context__
        frames = f"frame {index}" if n_frames == 1 else f"frames {index}..{index + n_frames - 1}"
        return RuntimeError(
            f"registering {frames} failed ({self.name} executor): {type(exc).__name__}: {exc}"
        )

    def _cancel_in_flight(self) -> None:
        """Cancel the batch in flight, if any (before the workers go away)."""
        pending, self._in_flight = self._in_flight, None
        if pending is not None:
            pending.cancel()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the {self.name} executor is closed")

    def close(self) -> None:
        """Release workers, pools, shared memory and the backend (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._prepared = None
        self._cancel_in_flight()
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_workers={self.n_workers})"
