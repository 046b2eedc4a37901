"""The Dask executor: register frames on a ``dask.distributed`` cluster (``pip install
"pyflowreg[dask]"``).

Where the cluster comes from (:func:`dask_client`):

- a ``distributed.Client`` the caller made (``client=``): used as is, never closed here;
- an address (``address="tcp://host:8786"``) or the path of a scheduler file written by
  ``dask scheduler --scheduler-file`` or ``dask_jobqueue``: a client connected for the run and
  closed at its end (the cluster keeps running);
- neither: an embedded ``LocalCluster`` of ``n_jobs`` worker processes with one thread each, no
  dashboard, BLAS/OpenMP/Numba limited to one thread per worker, closed at the end.

The reference is prepared once, by a task on one worker, from the small pre-processed image the
caller gives (:meth:`DaskExecutor.set_reference`); the other workers fetch the prepared
reference from there once. Being the result of a task rather than scattered data, it is
recomputed if the workers holding it die. Each worker process builds its own flow backend once
per executor from the factory, pickled by reference. Work is submitted as frame ranges with
``retries``; at most ``window`` ranges (default twice the number of worker threads) are
submitted or finished-but-not-yet-consumed at any time, so the client's memory stays bounded
whatever the number of ranges. A range whose worker is killed is recomputed by Dask (data the
client scattered for it is scattered again); a range that keeps failing stops the run with an
error naming its frames.

:meth:`DaskExecutor.process_batch` (the executor contract) splits a batch into one range per
worker and ships the frames through the client. The recording pipeline does better on a
cluster: with :attr:`DaskExecutor.runs_on_cluster` it hands the whole recording to
:mod:`pyflowreg.motion_correction.distributed`, which runs every batch at once through
:meth:`DaskExecutor.map_ordered` and lets the workers read (and, for Zarr, write) their own
frames.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from ._worker_init import THREAD_LIMITS
from .base import Executor, register_frames

logger = logging.getLogger(__name__)

__all__ = ["DaskExecutor", "dask_client", "import_distributed", "is_scheduler_address"]

INSTALL_HINT = 'pip install "pyflowreg[dask]"'
_SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://", "ws://", "wss://")


def import_distributed() -> ModuleType:
    """Import ``distributed``, or raise ``ImportError`` with the install command."""
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise ImportError(
            f"the dask executor needs dask[distributed], which is not installed: {INSTALL_HINT}"
        ) from exc


def is_scheduler_address(address: str | os.PathLike) -> bool:
    """Whether ``address`` is a scheduler address (``"tcp://host:8786"``, ``"host:8786"``)
    rather than the path of a scheduler file."""
    if not isinstance(address, str):
        return False
    if address.startswith(_SCHEMES):
        return True
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit() and not Path(address).exists())


@contextlib.contextmanager
def dask_client(
    n_workers: int, *, client: Any = None, address: str | os.PathLike | None = None
) -> Iterator[Any]:
    """The ``distributed.Client`` of a run, released at exit.

    Parameters
    ----------
    n_workers : int
        Worker processes of the embedded ``LocalCluster`` (used only without ``client`` and
        ``address``).
    client : distributed.Client, optional
        Used as is and left open.
    address : str or path-like, optional
        ``"tcp://host:8786"`` or a scheduler file; the client made for it is closed at exit.

    Yields
    ------
    distributed.Client
    """
    if client is not None and address is not None:
        raise ValueError("give a dask client or a dask scheduler address, not both")
    if client is not None:
        yield client
        return
    distributed = import_distributed()
    if address is not None:
        if is_scheduler_address(address):
            made = distributed.Client(address)
        else:
            path = Path(address)
            if not path.is_file():
                raise FileNotFoundError(
                    f"dask_address {str(address)!r} is neither a scheduler address "
                    "('tcp://host:8786') nor an existing scheduler file"
                )
            made = distributed.Client(scheduler_file=str(path))
        with made:
            yield made
        return
    cluster = distributed.LocalCluster(
        n_workers=int(n_workers),
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,  # no dashboard; its HTTP server (health checks only) on any
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # free loopback port
        env=dict(THREAD_LIMITS),
    )
    with cluster, distributed.Client(cluster) as made:
        yield made


# -- worker side ---------------------------------------------------------------------------------

#: Flow backends of this worker process, by executor token.
_BACKENDS: dict[str, Any] = {}
_BACKENDS_LOCK = threading.Lock()


def _worker_backend(token: str, setup: tuple) -> Any:
    with _BACKENDS_LOCK:
        backend = _BACKENDS.get(token)
        if backend is None:
            factory, params, backend_params = setup
            backend = _BACKENDS[token] = factory(params, backend_params)
    return backend


def _forget_backend(token: str) -> None:
    """Close and drop the backend of an executor (``client.run`` on every worker)."""
    with _BACKENDS_LOCK:
        backend = _BACKENDS.pop(token, None)
    if backend is not None:
        backend.close()


def _identity(value: Any) -> Any:
    return value


def _prepare_reference(token: str, setup: tuple, reference: np.ndarray, weight: Any) -> Any:
    """Worker task: the backend's prepared reference (held on the cluster for the tasks)."""
    return _worker_backend(token, setup).prepare_reference(reference, weight)


def _key(kind: str, start: int | None = None, stop: int | None = None) -> str:
    """A readable, unique task key (shown on the dashboard)."""
    span = "" if start is None else f"-{start}-{stop}"
    return f"pyflowreg-{kind}{span}-{uuid.uuid4().hex[:12]}"


def _run_task(function, token, setup, prepared, warp_settings, job, data, *args):
    """Worker task: ``function(backend, prepared, warp_settings, job, data, *args)``."""
    return function(_worker_backend(token, setup), prepared, warp_settings, job, data, *args)


def _register_block(backend, prepared, warp_settings, job, data, uv):
    """Register a block of frames shipped by the client: ``data = (raw, filtered)``."""
    raw, filtered = data
    return register_frames(backend, prepared, raw, filtered, uv, warp_settings)


# -- caller side ---------------------------------------------------------------------------------


class DaskExecutor(Executor):
    """Register frames on a Dask cluster (see the module docstring).

    Extra keywords: ``client`` (a ``distributed.Client``), ``address`` (``"tcp://host:8786"``
    or a scheduler file), ``retries`` (automatic retries of a failed range, default 2) and
    ``window`` (ranges submitted or buffered at once; default twice the worker threads).
    Without ``client`` and ``address`` it starts a ``LocalCluster`` of ``n_jobs`` processes and
    closes it in :meth:`close`.
    """

    name = "dask"
    #: The recording pipeline hands whole recordings to ``motion_correction.distributed``.
    runs_on_cluster: ClassVar[bool] = True

    def __init__(
        self,
        *args,
        client: Any = None,
        address: str | os.PathLike | None = None,
        retries: int = 2,
        window: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        if window is not None and (isinstance(window, bool) or int(window) < 1):
            raise ValueError(f"window must be an int >= 1 or None, got {window!r}")
        self.retries = int(retries)
        self._window = None if window is None else int(window)
        self._token = uuid.uuid4().hex
        self._setup = (self.backend_factory, self.flow_params, self.backend_params)
        self._stack = contextlib.ExitStack()
        self._reference_future: Any = None
        try:
            self.client = self._stack.enter_context(
                dask_client(self.n_workers, client=client, address=address)
            )
        except BaseException:
            self._stack.close()
            raise
        self._distributed = import_distributed()
        self.n_workers = self.cluster_threads()

    def cluster_threads(self) -> int:
        """Worker threads of the cluster now (at least 1)."""
        return max(1, sum(self.client.nthreads().values()))

    def reconfigure(self, flow_params=None, warp_settings=None) -> None:
        """Change the flow parameters and/or warp settings, keeping the cluster (see
        :meth:`Executor.reconfigure`); workers build a backend for the new parameters."""
        old_params = self.flow_params
        super().reconfigure(flow_params, warp_settings)
        if self._reference_future is not None:
            self._reference_future.release()
            self._reference_future = None
        if self.flow_params != old_params:
            self._forget_workers_backend()
            self._token = uuid.uuid4().hex
            self._setup = (self.backend_factory, self.flow_params, self.backend_params)

    def _forget_workers_backend(self) -> None:
        with contextlib.suppress(Exception):
            if self.client.status == "running":
                self.client.run(_forget_backend, self._token)

    def set_reference(self, reference: np.ndarray, weight: np.ndarray | None = None) -> None:
        """Have the cluster prepare ``reference`` (H, W, C) float32 for the following batches.

        The prepared reference (pyramid and weights; tens of MiB for a 512 x 512 frame at
        ``"quality"``) is computed once by a task on one worker from the small pre-processed
        image and fetched from there by the other workers; it never passes through the client
        or the scheduler, and it is recomputed if the workers holding it die.
        """
        self._check_open()
        reference = np.ascontiguousarray(reference, dtype=np.float32)
        if reference.ndim != 3:
            raise ValueError(f"reference must have shape (H, W, C), got {reference.shape}")
        weight = None if weight is None else np.asarray(weight)
        old = self._reference_future
        self._reference_future = self.client.submit(
            _prepare_reference,
            self._token,
            self._setup,
            reference,
            weight,
            pure=False,
            priority=2,
            key=_key("reference"),
        )
        # the base class only checks that a reference was set; here it lives on the cluster
        self._prepared = self._reference_future
        self._frame_shape = reference.shape
        if old is not None:
            old.release()

    def share(self, value: Any) -> Any:
        """A future of ``value`` for the tasks of every worker (pass it in ``args``).

        Sent to the cluster once; each worker fetches it once, the first time one of its tasks
        needs it. It is held as the result of a task whose definition contains the value
        (not scattered): if every worker holding it dies, or Dask's memory manager has dropped
        the other copies, the scheduler simply recomputes it, where scattered data would be lost.
        """
        return self.client.submit(_identity, value, pure=False, priority=2, key=_key("shared"))

    def _scatter(self, value: Any) -> Any:
        """``client.scatter`` of one value, tried again when a worker dies during it."""
        attempt = 0
        while True:
            try:
                return self.client.scatter([value], hash=False)[0]
            except OSError:  # CommClosedError: the worker chosen went away
                attempt += 1
                if attempt > self.retries:
                    raise
                time.sleep(0.5 * attempt)  # let the scheduler notice the lost worker

    def map_ordered(
        self,
        function: Callable,
        jobs: Sequence | Callable[[int], Any],
        bounds: Sequence[tuple[int, int]],
        *,
        data: Callable[[int], Any] | None = None,
        args: tuple = (),
        priority: int = 0,
        settle: bool = False,
        settle_timeout: float = 120.0,
    ) -> Iterator[tuple[int, Any]]:
        """Run ``function`` on the workers for every job; yield ``(i, result)`` in job order.

        Parameters
        ----------
        function : callable
            A module-level function ``function(backend, prepared, warp_settings, job, data_i,
            *args)`` run on a worker with its flow backend and the current prepared reference.
        jobs : sequence or callable
            Small picklable job descriptions, or ``jobs(i)`` making job ``i``: called once per
            job, in order, when the job is first submitted (so a job may depend on work done
            since the previous one was submitted), and kept only while it is in flight.
        bounds : sequence of (start, stop)
            Frames of each job in the recording (for error messages and task names); one per
            job.
        data : callable, optional
            ``data(i)`` returns the (large) data of job ``i``; it is scattered to the cluster
            when the job is submitted, and again if the worker holding it dies.
        args : tuple
            Extra arguments, e.g. futures from :meth:`share`.
        priority : int
            Dask priority of the tasks; higher runs first among queued tasks.
        settle : bool
            When the iteration stops early (an error here or in the consumer), wait up to
            ``settle_timeout`` seconds for the jobs in flight to end before cancelling them:
            cancelling does not stop a job that already runs, and jobs that write files must
            be done before those files are removed.
        settle_timeout : float
            Seconds.

        Raises
        ------
        RuntimeError
            A job failed after its retries (or its worker kept dying); the message names its
            frames. Jobs still in flight are cancelled.
        """
        self._check_open()
        if self._reference_future is None:
            raise RuntimeError("set_reference() must be called before map_ordered()")
        n = len(bounds)
        if not callable(jobs) and len(jobs) != n:
            raise ValueError(f"bounds must have one (start, stop) per job ({len(jobs)}), got {n}")
        make_job = jobs if callable(jobs) else jobs.__getitem__
        completed = self._distributed.as_completed()
        pending: dict[Any, int] = {}
        finished: dict[int, Any] = {}
        in_flight: dict[int, Any] = {}  # job descriptions until their result is in
        attempts = [0] * n

        def submit(i: int) -> None:
            if i not in in_flight:
                in_flight[i] = make_job(i)
            piece = None if data is None else self._scatter(data(i))
            start, stop = bounds[i]
            future = self.client.submit(
                _run_task,
                function,
                self._token,
                self._setup,
                self._reference_future,
                self.warp_settings,
                in_flight[i],
                piece,
                *args,
                retries=self.retries,
                priority=priority,
                pure=False,
                key=_key("frames", start, stop),
            )
            pending[future] = i
            completed.add(future)

        submitted = consumed = 0
        try:
            while consumed < n:
                # the window follows the cluster's size (workers may join an adaptive cluster)
                window = self._window or 2 * self.cluster_threads()
                while submitted < n and submitted < consumed + window:
                    submit(submitted)
                    submitted += 1
                while consumed not in finished:
                    future = next(completed)
                    i = pending.pop(future)
                    try:
                        # a result lost with its worker after it finished is recomputed by the
                        # scheduler; result() waits for that
                        finished[i] = future.result()
                    except CancelledError as exc:  # its scattered data died with a worker
                        if data is None or attempts[i] >= self.retries:
                            raise self._range_error(bounds[i], exc) from exc
                        attempts[i] += 1
                        start, stop = bounds[i]
                        logger.info("frames %d..%d: data lost with a worker", start, stop - 1)
                        submit(i)
                    except Exception as exc:
                        raise self._range_error(bounds[i], exc) from exc
                    else:
                        del in_flight[i]
                    finally:
                        future.release()
                yield consumed, finished.pop(consumed)
                consumed += 1
        finally:
            if pending:
                if settle:
                    # a cancelled task that already runs goes on; let it end before the caller
                    # removes what it writes to
                    logger.info("stopping: waiting for %d jobs in flight to end", len(pending))
                    self._distributed.wait(list(pending), timeout=settle_timeout)
                self.client.cancel(list(pending))

    def _range_error(self, bounds: tuple[int, int], exc: BaseException) -> RuntimeError:
        start, stop = bounds
        return self._frame_error(start, exc, stop - start)

    def _run_batch(
        self,
        raw: np.ndarray,
        filtered: np.ndarray,
        uv: np.ndarray,
        first_index: int,
        registered: np.ndarray,
        flow: np.ndarray,
    ) -> None:
        n = raw.shape[0]
        size = -(-n // self.cluster_threads())
        blocks = [(a, min(a + size, n)) for a in range(0, n, size)]
        bounds = [(first_index + a, first_index + b) for a, b in blocks]

        def block(i: int) -> tuple[np.ndarray, np.ndarray]:
            a, b = blocks[i]
            return raw[a:b], filtered[a:b]

        # ahead of queued range jobs: the caller waits for this batch (e.g. the boundary pass
        # of the next range) while the workers are busy with the ranges already submitted
        results = self.map_ordered(
            _register_block, blocks, bounds, data=block, args=(uv,), priority=1
        )
        for i, (reg, w) in results:
            a, b = blocks[i]
            registered[a:b] = reg
            flow[a:b] = w

    def close(self) -> None:
        """Forget this executor's state on the workers and release the client or cluster it
        started (idempotent; a client passed in stays open)."""
        if self._closed:
            return
        try:
            if self._reference_future is not None:
                self._reference_future.release()
                self._reference_future = self._prepared = None
            self._forget_workers_backend()
        finally:
            self._stack.close()
            super().close()
