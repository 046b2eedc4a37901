"""The multiprocessing executor: a pool of worker processes sharing memory with the caller.

The pool and the shared-memory blocks live for the whole run:

- the prepared reference is copied into a block once per :meth:`set_reference`; workers attach
  it the first time they see its name and keep it until the reference changes;
- the inputs of a batch (raw and filtered frames, the initial field) live in one block, and
  its outputs (registered frames and fields) in one of two output blocks. Blocks are sized by
  the first batch or by :meth:`~MultiprocessingExecutor.reserve`, and laid out again in place
  for batches of other lengths or output dtypes while they fit, so a run touches new shared
  memory only when it has to (on some machines first touching a page costs more than using
  it);
- :meth:`~MultiprocessingExecutor.submit_batch` returns at once with views into the output
  block (no copy out): while the workers fill one output block, the caller writes the other;
- a task is just ``(block keys, frame index)``: no frame is ever pickled.

Every block is unlinked when the executor closes. The worker processes outlive it for a
while: after a run that ended normally, the pool is kept idle for ``keep_alive`` seconds
(default :data:`DEFAULT_KEEP_ALIVE`, environment variable ``PYFLOWREG_POOL_KEEP_ALIVE``) and
the next executor with the same number of workers, start method, backend factory and backend
options takes it over (at most :data:`MAX_IDLE_POOLS` are kept). Its workers are running,
with their kernels loaded and warmed up, which saves most of the start-up of every run after
the first (one file after another, a notebook cell run again). Idle workers let go of the
shared blocks within about a second and then hold about 35 MiB each; a pool whose run failed
or was interrupted is terminated, never kept. :func:`shutdown_idle_pools` stops the
idle pools at once.

Workers are started with ``forkserver`` on Linux (``spawn`` elsewhere) and run with one
BLAS/OpenMP/Numba thread each, and never run the caller's main module (see
:mod:`pyflowreg.executors._context`), so scripts need no ``if __name__ == "__main__":``. They
build their own flow backend from the factory the caller passes, pickled by reference, so
third-party backends need a module-level factory.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import multiprocessing as mp
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from ._context import worker_context
from ._worker_init import THREAD_LIMITS, bootstrap
from .base import Executor, PendingBatch, register_frame
from .shared import ArraySlot, AttachedTree, SharedTree, attach_tree, data_nbytes, split_key

#: Module the fork server imports once so that forked workers start warm.
PRELOAD_MODULE = "pyflowreg.executors._preload"

#: Seconds an idle pool waits for the next executor (see the module docstring).
DEFAULT_KEEP_ALIVE = 60.0
#: Idle pools kept at a time (an idle worker holds about 35 MiB of its own memory).
MAX_IDLE_POOLS = 2
KEEP_ALIVE_ENV = "PYFLOWREG_POOL_KEEP_ALIVE"


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


#: Seconds without a task after which a worker lets go of the shared blocks it attached.
_DETACH_AFTER = 1.0


class _WorkerState:
    def __init__(self, factory: Any, params: Any, backend_params: dict, warp_settings: Any) -> None:
        self.factory = factory
        self.backend_params = backend_params
        self.params = params
        self.backend = factory(params, backend_params)
        self.warp_settings = warp_settings
        self.blocks: dict[str, AttachedTree] = {}
        #: Held while a task runs; the idle detacher takes it too.
        self.lock = threading.Lock()
        self.last_task = time.monotonic()
        threading.Thread(
            target=self._detach_when_idle, name="pyflowreg-detach", daemon=True
        ).start()

    def _detach_when_idle(self) -> None:
        """Let go of every block after :data:`_DETACH_AFTER` s without a task: the blocks of a
        finished run are unlinked by the caller, and an idle pool must not keep them alive."""
        while True:
            time.sleep(_DETACH_AFTER / 2)
            with self.lock:
                if self.blocks and time.monotonic() - self.last_task > _DETACH_AFTER:
                    self.forget(tuple(self.blocks))

    def configure(self, params: Any, warp_settings: Any) -> None:
        """Follow the caller's :meth:`Executor.reconfigure` (rebuild the backend if needed)."""
        if params != self.params:
            self.backend = self.factory(params, self.backend_params)
            self.params = params
        self.warp_settings = warp_settings

    def tree(self, key: str) -> Any:
        """The tree of block ``key`` (:attr:`SharedTree.key`), attached on first use and
        rebuilt when the caller laid the block out again.

        The caller has at most :data:`_LIVE_BLOCKS` blocks at a time (reference, inputs, two
        output slots); blocks unused for longest are detached first, so a replaced block's
        memory is freed once every worker has moved on.
        """
        name, generation = split_key(key)
        attached = self.blocks.pop(name, None)
        if attached is None:
            # Views stay writeable although inputs are only read: Numba compiles read-only
            # arrays as distinct, measurably slower (~10 %) specialisations of every kernel.
            attached = attach_tree(name, writable=True)
            while len(self.blocks) >= _LIVE_BLOCKS:
                self.blocks.pop(next(iter(self.blocks))).close()
        elif attached.generation != generation:
            attached.refresh()
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
    keys: tuple[str, str, str],
    i: int,
    params: Any,
    warp_settings: Any,
    retired: tuple[str, ...] = (),
) -> None:
    """Worker task: register frame ``i`` of the shared inputs into the shared outputs.

    ``keys`` are the blocks of the inputs (raw, filtered, uv), the outputs (registered, w)
    and the prepared reference; ``retired`` the blocks the caller unlinked lately.
    """
    state = _STATE
    with state.lock:
        state.forget(retired)
        state.configure(params, warp_settings)
        try:
            inputs, outputs, reference = (state.tree(key) for key in keys)
            _register_into(state.backend, reference, state.warp_settings, inputs, outputs, i)
        finally:
            state.last_task = time.monotonic()


def _register_into(
    backend: Any, prepared: Any, warp_settings: Any, inputs: dict, outputs: dict, i: int
) -> None:
    """Register frame ``i`` of the shared ``inputs`` (raw, filtered, uv) into the shared
    ``outputs`` (registered, w): in a worker, or in the caller while the pool starts."""
    register_frame(
        backend,
        prepared,
        inputs["raw"][i],
        inputs["filtered"][i],
        inputs["uv"],
        warp_settings,
        (outputs["registered"][i], outputs["w"][i]),
    )


#: Seconds a :func:`_detach_all` task keeps its worker, so that each idle worker takes one.
_DETACH_LINGER = 0.05


def _detach_all(linger: float = _DETACH_LINGER) -> None:
    """Worker task sent when a run ends and its pool is kept idle: let go of every shared
    block now instead of after :data:`_DETACH_AFTER` seconds.

    Unmapping a run's blocks (gigabytes of touched pages) takes a worker a noticeable time;
    done now, it overlaps the caller's writing and committing of its outputs, rather than
    delaying the next run or the exit of the caller's interpreter, which waits for idle
    workers to end. The task then lingers a moment so that the next one reaches another worker.
    """
    state = _STATE
    if state is not None:
        with state.lock:
            state.forget(tuple(state.blocks))
    time.sleep(linger)


def _ping() -> int:
    """Worker task that only makes the pool start a process (or shows that it runs)."""
    return os.getpid()


#: Seconds the workers of an idle pool have to answer a ping before it counts as dead.
PING_TIMEOUT = 10.0


def _answers(pool: cf.ProcessPoolExecutor, n_workers: int) -> bool:
    """Whether ``pool`` still runs tasks: ``n_workers`` pings all answered in time.

    A worker that died is noticed by the pool, which then fails every submit and every
    pending task with :class:`BrokenProcessPool`; so a dead idle pool answers no ping.
    """
    try:
        futures = [pool.submit(_ping) for _ in range(n_workers)]
    except (BrokenProcessPool, RuntimeError):  # broken, or shut down
        return False
    done, late = cf.wait(futures, timeout=PING_TIMEOUT)
    return not late and all(f.exception() is None for f in done)


def _send_detach(pool: cf.ProcessPoolExecutor, n_workers: int) -> None:
    """Ask the workers of a pool about to be kept idle to let go of their blocks now
    (:func:`_detach_all`; fire and forget: a broken pool is found out when taken again)."""
    try:
        for _ in range(n_workers):
            pool.submit(_detach_all)
    except (BrokenProcessPool, RuntimeError):
        pass


def _stop(pool: cf.ProcessPoolExecutor, wait: bool = False) -> None:
    """Stop ``pool``, terminating its workers (also those busy with a task)."""
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
    else:  # no public handle on the processes before 3.14
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
    pool.shutdown(wait=wait, cancel_futures=True)


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


class _Slot:
    """An output block, pinned while the caller holds views of its outputs."""

    def __init__(self, block: SharedTree) -> None:
        self.block = block
        self.pinned = False


def keep_alive_seconds(value: float | None = None) -> float:
    """Seconds an idle pool is kept: ``value``, else ``$PYFLOWREG_POOL_KEEP_ALIVE``, else
    :data:`DEFAULT_KEEP_ALIVE` (``0`` turns keeping off)."""
    source = "keep_alive"
    if value is None:
        text = os.environ.get(KEEP_ALIVE_ENV, "").strip()
        if not text:
            return DEFAULT_KEEP_ALIVE
        source = KEEP_ALIVE_ENV
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"{KEEP_ALIVE_ENV} must be a number of seconds, got {text!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{source} must be a number of seconds, got {type(value).__name__}")
    if not 0 <= value < float("inf"):  # also NaN
        raise ValueError(f"{source} must be a finite number of seconds >= 0, got {value}")
    return float(value)


class _IdlePools:
    """Pools kept between runs, one per key, at most :data:`MAX_IDLE_POOLS` (the least
    recently kept is stopped first); each stops after its keep-alive time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple, tuple[cf.ProcessPoolExecutor, threading.Timer]] = {}

    def take(self, key: tuple) -> cf.ProcessPoolExecutor | None:
        """The idle pool made for ``key`` if there is one and it is still sound, else None."""
        with self._lock:
            pool, timer = self._idle.pop(key, (None, None))
        if pool is None:
            return None
        timer.cancel()
        if not _answers(pool, key[0]):  # a worker died (or hangs) while idle
            _stop(pool)
            return None
        return pool

    def keep(self, key: tuple, pool: cf.ProcessPoolExecutor, seconds: float) -> None:
        """Keep ``pool`` for ``seconds`` (stopping the oldest idle pool if there are too many)."""
        timer = threading.Timer(seconds, self._expire, args=(key, pool))
        timer.daemon = True
        with self._lock:
            stopped = [self._idle.pop(key, None)]
            self._idle[key] = (pool, timer)
            while len(self._idle) > MAX_IDLE_POOLS:
                stopped.append(self._idle.pop(next(iter(self._idle))))
        timer.start()
        for entry in stopped:
            if entry is not None:
                entry[1].cancel()
                entry[0].shutdown(wait=True)

    def _expire(self, key: tuple, pool: cf.ProcessPoolExecutor) -> None:
        with self._lock:
            if self._idle.get(key, (None,))[0] is not pool:
                return
            del self._idle[key]
        pool.shutdown(wait=True)

    def shutdown(self) -> int:
        """Stop every idle pool now; how many there were."""
        with self._lock:
            idle, self._idle = list(self._idle.values()), {}
        for pool, timer in idle:
            timer.cancel()
            pool.shutdown(wait=True)
        return len(idle)

    def forget(self) -> None:
        """In a forked child: the parent's pools are not this process's to use or stop."""
        self._lock = threading.Lock()
        self._idle = {}


_IDLE = _IdlePools()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_IDLE.forget)


def shutdown_idle_pools() -> int:
    """Stop the worker pools kept idle after multiprocessing runs; returns how many there were.

    Idle pools stop by themselves after their keep-alive time and at interpreter exit; call
    this to free their processes sooner.
    """
    return _IDLE.shutdown()


class MultiprocessingExecutor(Executor):
    """Register the frames of a batch on ``n_jobs`` worker processes (``-1``: one per core).

    Extra keywords: ``start_method`` chooses the :mod:`multiprocessing` start method (default
    :func:`default_start_method`); ``keep_alive`` the seconds the pool is kept idle for the next
    executor after this one closes (see :func:`keep_alive_seconds`; ``0``: stop the workers
    at close). Always use it as a context manager (or call :meth:`close`): that unlinks the
    shared memory and hands the workers back (or stops them), also after errors.
    """

    name = "multiprocessing"

    def __init__(
        self,
        *args,
        start_method: str | None = None,
        keep_alive: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        methods = mp.get_all_start_methods()
        start_method = start_method or default_start_method()
        if start_method not in methods:
            raise ValueError(f"start_method must be one of {methods}, got {start_method!r}")
        self.start_method = start_method
        self.keep_alive = keep_alive_seconds(keep_alive)
        init_args = (
            self.backend_factory,
            self.flow_params,
            self.backend_params,
            self.warp_settings,
        )
        try:
            self._payload = pickle.dumps((_init_worker, init_args))
            identity = pickle.dumps((self.backend_factory, self.backend_params))
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise TypeError(
                "the flow-backend factory and backend_params must be picklable to reach "
                "multiprocessing workers (use a module-level class or function, not a lambda "
                f"or a local function): {exc}"
            ) from exc
        #: What an idle pool must have been made for to serve this executor.
        self._pool_key = (self.n_workers, start_method, identity)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._reference_block: SharedTree | None = None
        self._inputs: SharedTree | None = None
        self._slots: list[_Slot] = []
        self._reserved = 0
        self._broken = False
        #: Set once the workers are terminated (an interrupted or failed run).
        self._terminated = False
        self._ready = threading.Event()
        self._dispatch_lock = threading.Lock()
        self._waiting: tuple | None = None
        self._starter: threading.Thread | None = None
        self._start_error: BaseException | None = None
        #: Seconds from the start of the pool until its workers ran (None until then).
        self.ready_seconds: float | None = None
        #: Blocks unlinked lately; each task carries them so that workers detach them at once.
        self._retired: collections.deque[str] = collections.deque(maxlen=8)
        self._start_pool()

    def _reference_changed(self, prepared: Any) -> None:
        old, self._reference_block = self._reference_block, SharedTree(prepared)
        if old is not None:
            self._retired.append(old.name)
            old.close()  # no task is in flight between batches

    def reserve(self, n_frames: int) -> None:
        """Size the shared blocks made from now on for batches of up to ``n_frames`` frames.

        A run calls this with its batch length before its first, shorter batches (the
        reference chunks, the initial-flow window), so that the blocks those make are laid out
        again for the longer batches instead of being replaced.
        """
        self._reserved = max(0, int(n_frames))

    def _fit(self, block: SharedTree | None, layout_for: Callable[[int], dict], n: int):
        """``block`` laid out for ``n`` frames if it is large enough, else a new block (sized
        for at least the reserved frames; the old one unlinked and remembered for the workers
        to detach)."""
        layout = layout_for(n)
        if block is not None:
            if block.relayout(layout):
                return block
            self._retired.append(block.name)
            block.close()
        room = data_nbytes(layout_for(max(n, self._reserved)))
        return SharedTree(layout, min_nbytes=room)

    def _input_block(self, raw: np.ndarray) -> SharedTree:
        _, h, w, c = raw.shape

        def layout(n: int) -> dict:
            return {
                "raw": ArraySlot((n, h, w, c), raw.dtype),
                "filtered": ArraySlot((n, h, w, c), np.dtype(np.float32)),
                "uv": ArraySlot((h, w, 2), np.dtype(np.float32)),
            }

        self._inputs = self._fit(self._inputs, layout, raw.shape[0])
        return self._inputs

    def _output_slot(self, n: int) -> _Slot:
        """A free output block for ``n`` frames (two at most: one being written out by the
        caller while the workers fill the other)."""
        h, w, c = self._frame_shape

        def layout(k: int) -> dict:
            return {
                "registered": ArraySlot((k, h, w, c), self.warp_settings.dtype),
                "w": ArraySlot((k, h, w, 2), np.dtype(np.float32)),
            }

        for slot in self._slots:
            if not slot.pinned:
                slot.block = self._fit(slot.block, layout, n)
                return slot
        if len(self._slots) >= 2:
            raise RuntimeError(
                "release the outputs of earlier batches before submitting another one"
            )
        self._slots.append(_Slot(self._fit(None, layout, n)))
        return self._slots[-1]

    def _start_pool(self) -> None:
        """Create the pool and start its workers on a background thread.

        Starting processes blocks (the first start of the fork server in a process takes about
        half a second); meanwhile the calling process registers frames itself (see
        :meth:`_submit`), so the start-up is overlapped with useful work.
        """
        tic = time.perf_counter()
        if self.keep_alive > 0:
            self._pool = _IDLE.take(self._pool_key)
            if self._pool is not None:  # workers of an earlier run, still running
                self.ready_seconds = time.perf_counter() - tic
                self._ready.set()
                return
        if self.start_method == "forkserver":
            use_warm_forkserver()
        self._pool = cf.ProcessPoolExecutor(
            self.n_workers,
            mp_context=worker_context(self.start_method, self._payload),
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
            self.ready_seconds = time.perf_counter() - tic
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
        inputs = self._input_block(raw)
        views = inputs.views()
        views["uv"][...] = uv
        slot = self._output_slot(n)
        block = slot.block
        names = (inputs.key, block.key, self._reference_block.key)
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
            outputs = block.views()
            while not self._ready.is_set():
                i = frames.take_last()
                if i is None:
                    break
                try:
                    _register_into(
                        self.backend, self._prepared, self.warp_settings, views, outputs, i
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
                self._settle(frames, cf.FIRST_EXCEPTION)
            finally:
                frames.stop()
                self._settle(frames, cf.ALL_COMPLETED)  # no worker writes into the block now
            futures = frames.futures.items()
            errors = [(i, f.exception()) for i, f in futures if f.done() and not f.cancelled()]
            errors = sorted((i, e) for i, e in errors if e is not None)
            for _, exc in errors:
                if isinstance(exc, BrokenProcessPool):
                    self._broken = True
                    raise self._died(first_index, n) from exc
            if errors:
                i, exc = errors[0]
                raise self._frame_error(first_index + i, exc) from exc
            outputs = block.views()
            return outputs["registered"], outputs["w"]

        return PendingBatch(wait, release, volatile=True, cancel=frames.stop)

    def _settle(self, frames: _Frames, return_when: str) -> None:
        """Wait for the frames sent to the workers, as :func:`concurrent.futures.wait` does,
        until ``return_when``, or until the workers are terminated.

        Cancelled frames are not waited for: a future the pool cancels while it shuts down is
        never reported done to :func:`~concurrent.futures.wait`, and after the workers are
        terminated (an interrupted run) the pool may leave running futures unresolved.
        """
        pending = [f for f in frames.futures.values() if not f.cancelled()]
        while pending and not self._terminated:
            done, late = cf.wait(pending, timeout=0.2, return_when=return_when)
            if return_when == cf.FIRST_EXCEPTION and any(
                not f.cancelled() and f.exception() is not None for f in done
            ):
                return
            pending = [f for f in late if not f.cancelled()]

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
        sound = not (abort or self._broken or self._start_error is not None)
        try:
            if pool is not None and not sound:
                self._terminated = True
                _stop(pool, wait=False)
            self._cancel_in_flight()
            if pool is not None:
                if sound and not self._broken and self.keep_alive > 0:  # none died meanwhile
                    _send_detach(pool, self.n_workers)
                    _IDLE.keep(self._pool_key, pool, self.keep_alive)
                else:
                    pool.shutdown(wait=True, cancel_futures=True)
        finally:
            blocks = [self._reference_block, self._inputs, *(s.block for s in self._slots)]
            self._reference_block, self._inputs, self._slots = None, None, []
            for block in blocks:
                if block is not None:
                    block.close()
            super().close()

    def close(self) -> None:
        """Unlink every shared-memory block and keep the workers idle for the next executor
        (``keep_alive`` seconds) or stop them (idempotent)."""
        self._shutdown(abort=False)

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self._shutdown(abort=exc_type is not None)
