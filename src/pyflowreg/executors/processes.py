"""The multiprocessing executor: a pool of worker processes sharing memory with the caller.

The pool and the shared-memory blocks live for the whole run:

- the prepared reference is copied into a block once per :meth:`set_reference`; workers attach
  it the first time they see its name and keep it until the reference changes;
- the inputs of a batch (raw and filtered frames, the initial field) live in one block, and
  its outputs (registered frames and fields) in one of two output blocks; blocks are sized by
  the first batch, reused by the next ones and replaced only when a larger batch or another
  frame shape comes;
- :meth:`~MultiprocessingExecutor.submit_batch` returns at once with views into the output
  block (no copy out): while the workers fill one output block, the caller writes the other;
- a task is just ``(block names, frame index)``: no frame is ever pickled.

Workers are started with ``forkserver`` on Linux (``spawn`` elsewhere) and run with one
BLAS/OpenMP/Numba thread each. They build their own flow backend from the factory the caller
passes, pickled by reference, so third-party backends need a module-level factory.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import multiprocessing as mp
import os
import pickle
import sys
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from ._worker_init import THREAD_LIMITS, bootstrap
from .base import Executor, PendingBatch, register_frame
from .shared import ArraySlot, AttachedTree, SharedTree, attach_tree

#: Module the fork server imports once so that forked workers start warm.
PRELOAD_MODULE = "pyflowreg.executors._preload"


def use_warm_forkserver() -> bool:
    """Add :data:`PRELOAD_MODULE` to the fork server's preload list (keeping the others).

    Takes effect when the fork server starts, i.e. unless this process started it already;
    from then on a worker is a fork of a process that has pyflowreg and its kernels loaded,
    which makes the start-up of a pool about 10x cheaper. Returns whether the module is on
    the list.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    modules = list(getattr(server, "_preload_modules", None) or ["__main__"])
    if PRELOAD_MODULE not in modules:
        try:
            forkserver.set_forkserver_preload([*modules, PRELOAD_MODULE])
        except (TypeError, ValueError):
            return False
    return True


def default_start_method() -> str:
    """``"forkserver"`` on Linux, ``"spawn"`` elsewhere (never ``fork``: unsafe with threads)."""
    if sys.platform.startswith("linux") and "forkserver" in mp.get_all_start_methods():
        return "forkserver"
    return "spawn"


# -- worker side ---------------------------------------------------------------------------------


class _WorkerState:
    def __init__(self, factory: Any, params: Any, backend_params: dict, warp_settings: Any) -> None:
        self.factory = factory
        self.backend_params = backend_params
        self.params = params
        self.backend = factory(params, backend_params)
        self.warp_settings = warp_settings
        self.blocks: dict[str, AttachedTree] = {}

    def configure(self, params: Any, warp_settings: Any) -> None:
        """Follow the caller's :meth:`Executor.reconfigure` (rebuild the backend if needed)."""
        if params != self.params:
            self.backend = self.factory(params, self.backend_params)
            self.params = params
        self.warp_settings = warp_settings

    def tree(self, name: str) -> Any:
        """The tree of block ``name``, attached on first use.

        The caller has at most :data:`_LIVE_BLOCKS` blocks at a time (reference, inputs, two
        output slots); blocks unused for longest are detached first, so a replaced block's
        memory is freed once every worker has moved on.
        """
        attached = self.blocks.pop(name, None)
        if attached is None:
            # Views stay writeable although inputs are only read: Numba compiles read-only
            # arrays as distinct, measurably slower (~10 %) specialisations of every kernel.
            attached = attach_tree(name, writable=True)
            while len(self.blocks) >= _LIVE_BLOCKS:
                self.blocks.pop(next(iter(self.blocks))).close()
        self.blocks[name] = attached  # most recently used last
        return attached.tree

    def forget(self, names: tuple[str, ...]) -> None:
        """Detach blocks the caller has unlinked, so that their memory is freed now rather
        than when newer blocks push them out."""
        for name in names:
            attached = self.blocks.pop(name, None)
            if attached is not None:
                attached.close()


_STATE: _WorkerState | None = None
_LIVE_BLOCKS = 4


def _init_worker(factory: Any, params: Any, backend_params: dict, warp_settings: Any) -> None:
    global _STATE
    _STATE = _WorkerState(factory, params, backend_params, warp_settings)


def _register_shared_frame(
    names: tuple[str, str, str],
    i: int,
    params: Any,
    warp_settings: Any,
    retired: tuple[str, ...] = (),
) -> None:
    """Worker task: register frame ``i`` of the shared inputs into the shared outputs.

    ``names`` are the blocks of the inputs (raw, filtered, uv), the outputs (registered, w)
    and the prepared reference; ``retired`` the blocks the caller unlinked lately.
    """
    state = _STATE
    state.forget(retired)
    state.configure(params, warp_settings)
    inputs, outputs, reference = (state.tree(name) for name in names)
    register_frame(
        state.backend,
        reference,
        inputs["raw"][i],
        inputs["filtered"][i],
        inputs["uv"],
        state.warp_settings,
        (outputs["registered"][i], outputs["w"][i]),
    )


def _ping() -> int:
    """Worker task that only makes the pool start a process."""
    return os.getpid()


# -- caller side ---------------------------------------------------------------------------------


class _Frames:
    """Which frames of a submitted batch went where: still unassigned, to a worker (futures),
    or registered in the calling process while the pool was starting."""

    def __init__(self, n: int) -> None:
        self.lock = threading.Lock()
        self.unassigned = list(range(n))
        self.futures: dict[int, cf.Future] = {}
        self.error: BaseException | None = None

    def take_last(self) -> int | None:
        """Claim the last unassigned frame for the calling process (None: none left)."""
        with self.lock:
            return self.unassigned.pop() if self.unassigned else None

    def stop(self) -> None:
        """Assign nothing more; cancel the frames queued in the pool."""
        with self.lock:
            self.unassigned.clear()
            futures = list(self.futures.values())
        for future in futures:
            future.cancel()


class _Buffer:
    """A shared block reused batch after batch, replaced when a batch needs more room."""

    def __init__(self, layout: dict, capacity: int) -> None:
        self.block = SharedTree(layout)
        self.capacity = capacity
        self.key = self.layout_key(layout)
        self.pinned = False

    @staticmethod
    def layout_key(layout: dict) -> dict:
        """What must match for a block to be reused: each array's shape past the frame axis
        and its dtype."""
        return {k: (v.shape[1:], np.dtype(v.dtype)) for k, v in layout.items()}

    @classmethod
    def fit(cls, buffer: _Buffer | None, layout: dict, n: int) -> _Buffer:
        """``buffer`` if it holds ``layout`` for ``n`` frames, else a new one (the old unlinked)."""
        if buffer is not None and buffer.key == cls.layout_key(layout) and buffer.capacity >= n:
            return buffer
        if buffer is not None:
            buffer.close()
        return cls(layout, n)

    def close(self) -> None:
        self.block.close()


class MultiprocessingExecutor(Executor):
    """Register the frames of a batch on ``n_jobs`` worker processes (``-1``: one per core).

    Extra keyword ``start_method`` chooses the :mod:`multiprocessing` start method (default
    :func:`default_start_method`). Always use it as a context manager (or call :meth:`close`):
    that stops the workers and unlinks the shared memory, also after errors.
    """

    name = "multiprocessing"

    def __init__(self, *args, start_method: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        methods = mp.get_all_start_methods()
        start_method = start_method or default_start_method()
        if start_method not in methods:
            raise ValueError(f"start_method must be one of {methods}, got {start_method!r}")
        self.start_method = start_method
        init_args = (
            self.backend_factory,
            self.flow_params,
            self.backend_params,
            self.warp_settings,
        )
        try:
            self._payload = pickle.dumps((_init_worker, init_args))
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise TypeError(
                "the flow-backend factory and backend_params must be picklable to reach "
                "multiprocessing workers (use a module-level class or function, not a lambda "
                f"or a local function): {exc}"
            ) from exc
        self._pool: cf.ProcessPoolExecutor | None = None
        self._reference_block: SharedTree | None = None
        self._inputs: _Buffer | None = None
        self._slots: list[_Buffer] = []
        self._broken = False
        self._ready = threading.Event()
        self._dispatch_lock = threading.Lock()
        self._waiting: tuple | None = None
        self._starter: threading.Thread | None = None
        self._start_error: BaseException | None = None
        #: Blocks unlinked lately; each task carries them so that workers detach them at once.
        self._retired: collections.deque[str] = collections.deque(maxlen=8)
        self._start_pool()

    def _reference_changed(self, prepared: Any) -> None:
        old, self._reference_block = self._reference_block, SharedTree(prepared)
        if old is not None:
            self._retired.append(old.name)
            old.close()  # no task is in flight between batches

    def _fit(self, buffer: _Buffer | None, layout: dict, n: int) -> _Buffer:
        """:meth:`_Buffer.fit`, remembering a replaced block for the workers to detach."""
        fitted = _Buffer.fit(buffer, layout, n)
        if buffer is not None and fitted is not buffer:
            self._retired.append(buffer.block.name)
        return fitted

    def _input_buffer(self, raw: np.ndarray) -> _Buffer:
        n, h, w, c = raw.shape
        layout = {
            "raw": ArraySlot((n, h, w, c), raw.dtype),
            "filtered": ArraySlot((n, h, w, c), np.dtype(np.float32)),
            "uv": ArraySlot((h, w, 2), np.dtype(np.float32)),
        }
        self._inputs = self._fit(self._inputs, layout, n)
        return self._inputs

    def _output_slot(self, n: int) -> _Buffer:
        """A free output buffer for ``n`` frames (two at most: one being written out by the
        caller while the workers fill the other)."""
        h, w, c = self._frame_shape
        layout = {
            "registered": ArraySlot((n, h, w, c), self.warp_settings.dtype),
            "w": ArraySlot((n, h, w, 2), np.dtype(np.float32)),
        }
        for k, slot in enumerate(self._slots):
            if not slot.pinned:
                self._slots[k] = self._fit(slot, layout, n)
                return self._slots[k]
        if len(self._slots) >= 2:
            raise RuntimeError(
                "release the outputs of earlier batches before submitting another one"
            )
        self._slots.append(self._fit(None, layout, n))
        return self._slots[-1]

    def _start_pool(self) -> None:
        """Create the pool and start its workers on a background thread.

        Starting processes blocks (the first start of the fork server in a process takes about
        half a second); meanwhile the calling process registers frames itself (see
        :meth:`_submit`), so the start-up is overlapped with useful work.
        """
        if self.start_method == "forkserver":
            use_warm_forkserver()
        self._pool = cf.ProcessPoolExecutor(
            self.n_workers,
            mp_context=mp.get_context(self.start_method),
            initializer=bootstrap,
            initargs=(dict(THREAD_LIMITS), self._payload),
        )
        pool = self._pool

        def start() -> None:
            try:
                for _ in range(self.n_workers):  # one submit per process the pool starts
                    pool.submit(_ping)
            except BaseException as exc:  # BrokenProcessPool, or the pool shut down
                self._start_error = exc
            with self._dispatch_lock:
                self._ready.set()
                waiting, self._waiting = self._waiting, None
            if waiting is not None:
                self._dispatch(*waiting)

        self._starter = threading.Thread(target=start, name="pyflowreg-pool-start", daemon=True)
        self._starter.start()

    def wait_until_started(self, timeout: float | None = None) -> bool:
        """Block until the worker processes are started (False if ``timeout`` ran out).

        Never needed for correctness: batches submitted before that are shared between the
        calling process and the workers as they come up.
        """
        return self._ready.wait(timeout)

    def _dispatch(
        self, frames: _Frames, names: tuple, config: tuple, fill: Callable | None = None
    ) -> None:
        """Send the unassigned frames of a batch to the workers (the pool is running);
        ``fill(i)``, if given, first copies frame ``i`` into the shared inputs."""
        with frames.lock:
            todo, frames.unassigned = frames.unassigned, []
            try:
                if self._start_error is not None:
                    raise self._start_error
                for i in sorted(todo):
                    if fill is not None:
                        fill(i)
                    frames.futures[i] = self._pool.submit(_register_shared_frame, names, i, *config)
            except BrokenProcessPool as exc:
                self._broken = True
                frames.error = exc
            except BaseException as exc:
                frames.error = exc

    def _submit(
        self, raw: np.ndarray, filtered: np.ndarray, uv: np.ndarray, first_index: int
    ) -> PendingBatch:
        if self._broken:
            raise RuntimeError("the multiprocessing executor is unusable: a worker died earlier")
        n = raw.shape[0]
        inputs = self._input_buffer(raw)
        views = inputs.block.views()
        views["uv"][...] = uv
        slot = self._output_slot(n)
        names = (inputs.block.name, slot.block.name, self._reference_block.name)
        config = (self.flow_params, self.warp_settings, tuple(self._retired))
        frames = _Frames(n)
        slot.pinned = True

        def fill(i: int) -> None:
            views["raw"][i] = raw[i]
            views["filtered"][i] = filtered[i]

        if self._ready.is_set():  # each frame goes out as soon as it is copied
            self._dispatch(frames, names, config, fill)
        else:
            views["raw"][:n] = raw
            views["filtered"][:n] = filtered
            with self._dispatch_lock:
                if self._ready.is_set():
                    self._dispatch(frames, names, config)
                else:  # the starter thread dispatches what is left once the workers run
                    self._waiting = (frames, names, config)

        def release() -> None:
            slot.pinned = False

        def registered_here() -> BaseException | None:
            """While the pool starts, register frames (from the last) in this process."""
            outputs = slot.block.views()
            while not self._ready.is_set():
                i = frames.take_last()
                if i is None:
                    break
                try:
                    register_frame(
                        self.backend,
                        self._prepared,
                        views["raw"][i],
                        views["filtered"][i],
                        views["uv"],
                        self.warp_settings,
                        (outputs["registered"][i], outputs["w"][i]),
                    )
                except Exception as exc:
                    frames.stop()
                    error = self._frame_error(first_index + i, exc)
                    error.__cause__ = exc
                    return error
            return None

        def wait() -> tuple[np.ndarray, np.ndarray]:
            try:
                local_error = registered_here()
                if local_error is not None:
                    raise local_error
                with frames.lock:  # a dispatch holds the lock until all its frames are sent
                    left = bool(frames.unassigned)
                if left:  # frames for the workers: sent by the starter thread or here
                    self._ready.wait()
                    self._dispatch(frames, names, config)
                if frames.error is not None:
                    if isinstance(frames.error, BrokenProcessPool):
                        raise self._died(first_index, n) from frames.error
                    raise frames.error
                futures = list(frames.futures.values())
                cf.wait(futures, return_when=cf.FIRST_EXCEPTION)
            finally:
                frames.stop()
                cf.wait(list(frames.futures.values()))
            errors = [(i, f.exception()) for i, f in frames.futures.items() if not f.cancelled()]
            errors = sorted((i, e) for i, e in errors if e is not None)
            for _, exc in errors:
                if isinstance(exc, BrokenProcessPool):
                    self._broken = True
                    raise self._died(first_index, n) from exc
            if errors:
                i, exc = errors[0]
                raise self._frame_error(first_index + i, exc) from exc
            outputs = slot.block.views()
            return outputs["registered"][:n], outputs["w"][:n]

        return PendingBatch(wait, release, volatile=True, cancel=frames.stop)

    def _died(self, first_index: int, n: int) -> RuntimeError:
        return RuntimeError(
            f"a multiprocessing worker died unexpectedly (killed, crashed or out of memory) "
            f"while registering frames {first_index}..{first_index + n - 1}; "
            'try fewer workers (n_jobs), a smaller buffer_size or parallelization="sequential"'
        )

    def _shutdown(self, abort: bool) -> None:
        if self._starter is not None:
            self._starter.join()  # the workers are started (or failed to): now stop them
            self._starter = None
        pool, self._pool = self._pool, None
        try:
            if pool is not None and (abort or self._broken):
                for process in list(getattr(pool, "_processes", {}).values()):
                    process.terminate()
            self._cancel_in_flight()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        finally:
            blocks = [self._reference_block, self._inputs, *self._slots]
            self._reference_block, self._inputs, self._slots = None, None, []
            for block in blocks:
                if block is not None:
                    block.close()
            super().close()

    def close(self) -> None:
        """Stop the workers and unlink every shared-memory block (idempotent)."""
        self._shutdown(abort=False)

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self._shutdown(abort=exc_type is not None)
