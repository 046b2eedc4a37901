"""The multiprocessing executor: a pool of worker processes sharing memory with the caller.

The pool and the shared-memory blocks live for the whole run:

- the prepared reference is copied into a block once per :meth:`set_reference`; workers attach
  it the first time they see its name and keep it until the reference changes;
- the batch (raw and filtered frames, the initial field) and the outputs (registered frames and
  fields) live in one block sized by the first batch, reused by the next ones and replaced only
  when a larger batch or another frame shape comes;
- a task is just ``(block names, frame index)``: no frame is ever pickled.

Workers are started with ``forkserver`` on Linux (``spawn`` elsewhere) and run with one
BLAS/OpenMP/Numba thread each. They build their own flow backend from the factory the caller
passes, pickled by reference, so third-party backends need a module-level factory.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import pickle
import sys
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from ._worker_init import THREAD_LIMITS, bootstrap
from .base import Executor, register_frame
from .shared import ArraySlot, AttachedTree, SharedTree, attach_tree


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
        self.batch: AttachedTree | None = None
        self.reference: AttachedTree | None = None

    def configure(self, params: Any, warp_settings: Any) -> None:
        """Follow the caller's :meth:`Executor.reconfigure` (rebuild the backend if needed)."""
        if params != self.params:
            self.backend = self.factory(params, self.backend_params)
            self.params = params
        self.warp_settings = warp_settings


_STATE: _WorkerState | None = None


def _init_worker(factory: Any, params: Any, backend_params: dict, warp_settings: Any) -> None:
    global _STATE
    _STATE = _WorkerState(factory, params, backend_params, warp_settings)


def _attach(current: AttachedTree | None, name: str, writable: bool) -> AttachedTree:
    if current is not None and current.name == name:
        return current
    if current is not None:
        current.close()
    return attach_tree(name, writable=writable)


def _register_shared_frame(
    batch_name: str, reference_name: str, i: int, params: Any, warp_settings: Any
) -> None:
    """Worker task: register frame ``i`` of the shared batch into the shared outputs."""
    state = _STATE
    state.configure(params, warp_settings)
    # Views stay writeable although workers only read the inputs: Numba compiles read-only
    # arrays as distinct, measurably slower (~10 %) specialisations of every kernel.
    state.reference = _attach(state.reference, reference_name, writable=True)
    if state.batch is None or state.batch.name != batch_name:
        state.batch = _attach(state.batch, batch_name, writable=True)
    batch = state.batch.tree
    registered, w = register_frame(
        state.backend,
        state.reference.tree,
        batch["raw"][i],
        batch["filtered"][i],
        batch["uv"],
        state.warp_settings,
    )
    batch["registered"][i] = registered
    batch["w"][i] = w


# -- caller side ---------------------------------------------------------------------------------


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
        self._batch_block: SharedTree | None = None
        self._batch_key: tuple | None = None
        self._batch_capacity = 0
        self._broken = False

    def _reference_changed(self, prepared: Any) -> None:
        old, self._reference_block = self._reference_block, SharedTree(prepared)
        if old is not None:
            old.close()  # no task is in flight between batches; workers keep their mapping

    def _batch_views(self, raw: np.ndarray) -> dict:
        n, h, w, c = raw.shape
        key = (raw.shape[1:], raw.dtype, self.warp_settings.dtype)
        block = self._batch_block
        if block is None or self._batch_key != key or self._batch_capacity < n:
            if block is not None:
                block.close()
            self._batch_block = None
            layout = {
                "raw": ArraySlot((n, h, w, c), raw.dtype),
                "filtered": ArraySlot((n, h, w, c), np.dtype(np.float32)),
                "uv": ArraySlot((h, w, 2), np.dtype(np.float32)),
                "registered": ArraySlot((n, h, w, c), self.warp_settings.dtype),
                "w": ArraySlot((n, h, w, 2), np.dtype(np.float32)),
            }
            self._batch_block, self._batch_key = SharedTree(layout), key
            self._batch_capacity = n
        return self._batch_block.views()

    def _ensure_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                self.n_workers,
                mp_context=mp.get_context(self.start_method),
                initializer=bootstrap,
                initargs=(dict(THREAD_LIMITS), self._payload),
            )
        return self._pool

    def _run_batch(
        self,
        raw: np.ndarray,
        filtered: np.ndarray,
        uv: np.ndarray,
        first_index: int,
        registered: np.ndarray,
        flow: np.ndarray,
    ) -> None:
        if self._broken:
            raise RuntimeError("the multiprocessing executor is unusable: a worker died earlier")
        n = raw.shape[0]
        views = self._batch_views(raw)
        views["raw"][:n] = raw
        views["filtered"][:n] = filtered
        views["uv"][...] = uv
        pool = self._ensure_pool()
        names = (self._batch_block.name, self._reference_block.name)
        config = (self.flow_params, self.warp_settings)
        futures = []
        try:
            for i in range(n):
                futures.append(pool.submit(_register_shared_frame, *names, i, *config))
            cf.wait(futures, return_when=cf.FIRST_EXCEPTION)
        except BrokenProcessPool as exc:  # raised by submit() once the pool is broken
            self._broken = True
            raise self._died(first_index, n) from exc
        finally:
            for future in futures:
                future.cancel()
            cf.wait(futures)
        errors = [(i, f.exception()) for i, f in enumerate(futures) if not f.cancelled()]
        errors = [(i, e) for i, e in errors if e is not None]
        for _, exc in errors:
            if isinstance(exc, BrokenProcessPool):
                self._broken = True
                raise self._died(first_index, n) from exc
        if errors:
            i, exc = errors[0]
            raise self._frame_error(first_index + i, exc) from exc
        registered[...] = views["registered"][:n]
        flow[...] = views["w"][:n]

    def _died(self, first_index: int, n: int) -> RuntimeError:
        return RuntimeError(
            f"a multiprocessing worker died unexpectedly (killed, crashed or out of memory) "
            f"while registering frames {first_index}..{first_index + n - 1}; "
            'try fewer workers (n_jobs), a smaller buffer_size or parallelization="sequential"'
        )

    def _shutdown(self, abort: bool) -> None:
        pool, self._pool = self._pool, None
        try:
            if pool is not None:
                if abort or self._broken:
                    for process in list(getattr(pool, "_processes", {}).values()):
                        process.terminate()
                pool.shutdown(wait=True, cancel_futures=True)
        finally:
            for block in (self._batch_block, self._reference_block):
                if block is not None:
                    block.close()
            self._batch_block = self._reference_block = None
            super().close()

    def close(self) -> None:
        """Stop the workers and unlink every shared-memory block (idempotent)."""
        self._shutdown(abort=False)

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self._shutdown(abort=exc_type is not None)
