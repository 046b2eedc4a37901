"""Registering a recording on a Dask cluster (``parallelization="dask"``).

:func:`cluster_runner` gives ``compensate_recording`` a drop-in for its batch loop
(:func:`._engine.run_registration`) that

1. opens the run's ``distributed.Client`` once (given, connected to ``dask_address``, or an
   embedded ``LocalCluster``) and makes every executor of the run share it;
2. computes the reference on the client, exactly as the sequential pipeline does (the reference
   frames are registered on the cluster through ``process_batch``);
3. runs the boundary pass of :class:`.initialization.InitialFlowPlanner`: the initial field
   of each batch, from frames before it only, computed just before the batch is submitted (its
   tasks jump the queue, so it overlaps with the batches in flight);
4. submits every batch as an independent range job: the worker reads the frames of its range
   (plus the temporal halo) from the input file itself, normalises and pre-filters them with the
   same :class:`._source.FrameSource` code, registers them with the frame loop every executor
   runs (:func:`~pyflowreg.executors.base.register_frames`), computes the per-frame statistics,
   and either writes its region of the Zarr outputs or returns the registered frames and fields
   to the client, which writes them in order.

In-memory inputs have no file the workers could open: the client reads each range (with its
halo) and scatters it. ``update_reference=True`` makes every batch depend on the one before, so
batches then run one after the other through the standard loop, each split across the workers.
The result is identical, bit for bit, to the sequential executor's (see ``docs/dask.md``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..executors.base import register_frames
from ..executors.dask import dask_client
from ._engine import (
    BatchResult,
    executor_maker,
    output_dtype,
    prepare_run,
    run_registration,
)
from ._outputs import valid_mask
from ._source import FrameSource
from .statistics import StatisticsAccumulator

logger = logging.getLogger(__name__)

__all__ = ["cluster_runner", "zarr_chunk_frames"]

#: Target size of one Zarr chunk written by a worker.
_CHUNK_BYTES = 4 << 20
_MAX_CHUNK_FRAMES = 64


class RangePlan(NamedTuple):
    """What every range job shares (sent to each worker once)."""

    token: str
    reader_spec: Any  # ReaderSpec, or None when the client scatters the frames
    n_frames: int
    low: Any
    high: Any
    sigma: np.ndarray
    name: str
    reference: np.ndarray | None  # raw reference for the statistics, None without them
    targets: dict  # output key -> Zarr store the worker writes its region of
    return_frames: bool


class RangeJob(NamedTuple):
    """One batch: frames ``[start, stop)`` registered from the initial field ``uv``."""

    start: int
    stop: int
    uv: np.ndarray


class RangeOutput(NamedTuple):
    """What a range job sends back; ``registered``/``w`` are None when written on the worker."""

    registered: np.ndarray | None
    w: np.ndarray | None
    statistics: dict | None


def zarr_chunk_frames(frame_bytes: int, buffer_size: int) -> int:
    """Chunk length along T for Zarr outputs written by range: the largest divisor of
    ``buffer_size`` whose chunk stays under about 4 MiB (at most 64 frames), so that every chunk
    lies inside one batch and no two workers ever write the same chunk."""
    limit = int(np.clip(_CHUNK_BYTES // max(1, int(frame_bytes)), 1, _MAX_CHUNK_FRAMES))
    return max(k for k in range(1, min(limit, buffer_size) + 1) if buffer_size % k == 0)


# -- worker side ---------------------------------------------------------------------------------

_READERS: dict[tuple[str, int], Any] = {}
_READERS_LOCK = threading.Lock()


def _worker_reader(plan: RangePlan) -> Any:
    """This worker thread's reader of the input (opened once per run and thread)."""
    key = (plan.token, threading.get_ident())
    with _READERS_LOCK:
        reader = _READERS.get(key)
    if reader is None:
        reader = plan.reader_spec.open()
        with _READERS_LOCK:
            _READERS[key] = reader
    return reader


def _forget_readers(token: str) -> None:
    """Close the readers of run ``token`` (``client.run`` on every worker at the end)."""
    with _READERS_LOCK:
        keys = [key for key in _READERS if key[0] == token]
        readers = [_READERS.pop(key) for key in keys]
    for reader in readers:
        reader.close()


class _BlockReader:
    """Frames ``[offset, offset + len(block))`` of a recording of ``n_frames`` frames, as a
    reader (for :class:`FrameSource`); a scattered block of an in-memory input."""

    def __init__(self, block: np.ndarray, offset: int, n_frames: int) -> None:
        self.block = block
        self.offset = offset
        self.shape = (n_frames, *block.shape[1:])

    def read(self, start: int, stop: int) -> np.ndarray:
        a, b = start - self.offset, stop - self.offset
        if a < 0 or b > self.block.shape[0]:
            raise IndexError(f"frames {start}..{stop - 1} are outside the scattered block")
        return self.block[a:b]


def _register_range(backend, prepared, warp_settings, job: RangeJob, block, plan: RangePlan):
    """Worker task: read, pre-process and register one range; write or return the results."""
    if block is None:
        reader = _worker_reader(plan)
    else:
        offset, frames = block
        reader = _BlockReader(frames, offset, plan.n_frames)
    source = FrameSource(reader, plan.low, plan.high, plan.sigma, name=plan.name)
    raw, filtered = source.read(job.start, job.stop)
    registered, w = register_frames(backend, prepared, raw, filtered, job.uv, warp_settings)
    statistics = None
    if plan.reference is not None:
        accumulator = StatisticsAccumulator(plan.reference)
        accumulator.add(raw, registered, w)
        statistics = accumulator.result()
    if plan.targets:
        from ..io import open_writer

        outputs = {"compensated": registered, "w": w}
        if "valid_mask" in plan.targets:
            outputs["valid_mask"] = valid_mask(w)[..., None]
        for key, path in plan.targets.items():
            with open_writer(path, "ZARR", mode="r+") as writer:
                writer.write_at(job.start, outputs[key])
    if plan.return_frames:
        return RangeOutput(registered, w, statistics)
    return RangeOutput(None, None, statistics)


# -- client side ---------------------------------------------------------------------------------


def cluster_runner(executor_cls: type, backend_factory: Callable, config) -> Callable:
    """A replacement for :func:`._engine.run_registration` that runs on a Dask cluster.

    Parameters
    ----------
    executor_cls : type
        :class:`~pyflowreg.executors.dask.DaskExecutor` (or a subclass).
    backend_factory : callable
        The flow-backend factory.
    config : RegistrationConfig
        ``n_jobs``, ``dask_client`` and ``dask_address``.

    Returns
    -------
    callable
        With the signature of ``run_registration``; its ``make_executor`` argument is
        replaced by executors sharing the run's one client.
    """

    def run(reader, options, make_executor, sink, state, **kwargs) -> None:
        del make_executor  # every executor of the run must share one client
        state.stage = "connecting to the dask cluster"
        with dask_client(
            config.n_jobs, client=config.dask_client, address=config.dask_address
        ) as client:
            shared = executor_maker(
                executor_cls, backend_factory, options, config.n_jobs, {"client": client}
            )
            if options.update_reference:
                # each batch needs the reference made from the one before: batches in order,
                # each split across the workers
                run_registration(reader, options, shared, sink, state, **kwargs)
            else:
                _run_ranges(reader, options, shared, sink, state, **kwargs)

    return run


def _run_ranges(
    reader,
    options,
    make_executor: Callable,
    sink,
    state,
    *,
    reference=None,
    progress: Callable[[int, int], None] | None = None,
    batch_callback: Callable[[BatchResult], None] | None = None,
    name: str = "input",
) -> None:
    """Every batch as an independent range job on the cluster (see the module docstring)."""
    n_frames, h, w, n_channels = (int(s) for s in reader.shape)
    params = options.flow_parameters()
    dtype = output_dtype(options, reader.dtype)

    state.stage = "starting the executor"
    with make_executor(params, dtype) as executor:
        run = prepare_run(reader, options, executor, sink, state, reference, name)
        ref_raw, source, batches, planner = run.ref_raw, run.source, run.batches, run.planner
        low, high, sigma = run.low, run.high, run.sigma

        frame_bytes = h * w * max(8, n_channels * np.dtype(dtype).itemsize)
        targets = sink.region_outputs(
            n_frames, (h, w, n_channels), zarr_chunk_frames(frame_bytes, options.buffer_size)
        )
        targets = {key: str(path) for key, path in (targets or {}).items()}
        spec = _file_spec(reader)
        plan = RangePlan(
            token=uuid.uuid4().hex,
            reader_spec=spec,
            n_frames=n_frames,
            low=low,
            high=high,
            sigma=np.asarray(sigma, np.float64),
            name=name,
            reference=ref_raw if getattr(sink, "stats", None) is not None else None,
            targets=targets,
            return_frames=not targets or batch_callback is not None,
        )
        halo = source.halo

        def block(i: int) -> tuple[int, np.ndarray]:
            start, stop = batches[i]
            lo, hi = max(0, start - halo), min(n_frames, stop + halo)
            return lo, np.asarray(reader.read(lo, hi))

        def job(i: int) -> RangeJob:
            # the boundary pass, one batch ahead of the submissions: the chain of initial
            # fields needs batch i - 1's field first, and only the window's are kept in memory
            start, stop = batches[i]
            return RangeJob(start, stop, planner.next())

        state.stage = f"registering {len(batches)} batches on the cluster"
        plan_future = executor.share(plan)
        tic = time.perf_counter()
        results = executor.map_ordered(
            _register_range,
            job,
            batches,
            data=None if spec is not None else block,
            args=(plan_future,),
            settle=bool(targets),  # workers write the outputs: let them end before an abort
        )
        try:
            with contextlib.closing(results):
                for b, out in results:
                    start, stop = batches[b]
                    sink.add_computed(
                        start,
                        None if targets else out.registered,
                        None if targets else out.w,
                        out.statistics,
                    )
                    state.n_frames = stop
                    if batch_callback is not None:
                        batch_callback(BatchResult(start, out.registered, out.w, b))
                    if progress is not None:
                        progress(stop, n_frames)
                    logger.debug("registered frames %d-%d of %s", start, stop - 1, name)
        finally:
            # the reference pass and boundary pass in the executor, the ranges as wall time
            state.flow_seconds = executor.flow_seconds + time.perf_counter() - tic
            plan_future.release()
            if spec is not None:
                with contextlib.suppress(Exception):
                    executor.client.run(_forget_readers, plan.token)
    state.stage = "finishing"


def _file_spec(reader) -> Any:
    """The reader's picklable spec when workers can open the input themselves, else None
    (in-memory arrays, readers without a spec)."""
    spec = getattr(reader, "spec", None)
    if spec is None or spec.source is None or isinstance(spec.source, np.ndarray):
        return None
    return spec
