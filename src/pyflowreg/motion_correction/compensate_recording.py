"""Motion correction of a recording, file to file, in batches of bounded memory.

``compensate_recording(options)`` reads the recording named by ``options.input_file``
(one file, one file per channel, or an in-memory array), computes or loads the
reference, normalises every frame by the raw reference's min/max and pre-filters it
(the temporal part of the filter reads a halo of frames across batch boundaries),
registers batches of ``options.buffer_size`` frames with the executor chosen by
:func:`pyflowreg._runtime.get_runtime`, and streams the results to the output folder.

Outputs in ``options.output_path`` (``<FORMAT>`` from ``options.output_format``):

``compensated.<FORMAT>``
    The registered video (``compensated.HDF5``, ``.TIFF``, ``.MAT``, as PyFlowReg names them;
    ``.npy``, ``.zarr``), dtype of the input unless ``options.output_dtype`` or
    ``options.output_typename`` (integers rounded and clipped, never wrapped); named
    ``<input stem>_compensated.<FORMAT>`` with ``naming_convention="batch"``. With
    ``bin_size > 1`` the input is binned in time before registration (every output has
    ``T // bin_size`` frames; the reader averages each bin, see ``pyflowreg.io``).
``w.h5`` (``save_w``)
    Displacement fields, float32, PyFlowReg's layout: HDF5 datasets ``u`` (x, columns) and
    ``v`` (y, rows), ``(T, H, W)`` each, whatever the output format; with NPY or Zarr output
    ``w.npy`` / ``w.zarr``, one ``(T, H, W, 2)`` array. Every one reads back as
    ``(T, H, W, 2)`` (channel 0 = u) through :func:`pyflowreg.io.open_reader`.
``valid_mask.<ext>`` (``save_valid_mask``)
    ``(T, H, W, 1)`` uint8: 1 where the frame was sampled inside its bounds
    (``0 <= x + u <= W - 1`` and ``0 <= y + v <= H - 1``), 0 where the border was extended.
``idx.hdf`` (``save_valid_idx``)
    The same masks in PyFlowReg's file: HDF5, dataset ``ch1``, ``(T, H, W)`` uint8.
``statistics.npz``, ``reference.tif``, ``reference_frame.npy`` (``save_meta_info``)
    Per-frame statistics (see :mod:`.statistics`) and the raw reference, float32
    ``(H, W)`` or ``(H, W, C)`` (the same image as TIFF and, as PyFlowReg names it, NPY).
``options.json``, ``run.json``
    The options (arrays omitted) and the completion record of the run: ``run_id``,
    ``outputs`` (every output's ``file``, ``bytes`` and ``header_sha256``), ``input``,
    ``input_shape``, ``output_format``, ``frames``, ``seconds`` (wall time),
    ``frames_per_second``, ``flow_seconds`` (time batches spent in the executor: flow
    estimation and warping, reference pass included), ``reference_flow_seconds`` (its
    reference-pass part), ``phase_seconds`` (seconds per phase of the run in the calling
    process: ``preflight``, ``kernels``, ``executor_start``, ``workers_ready``, ``reference``,
    ``initial_flow``, ``read_wait``, ``submit``, ``batch_wait``, ``write``; see
    ``RunState.timed``),
    ``executor``, ``n_workers``, ``flow_backend``, ``versions``
    (python, numpy, numba, pyflowreg), ``start_time``, ``end_time``.

With the ``ARRAY`` output format the registered video (and ``w``) are returned in the
:class:`RegistrationResult` instead; ``NULL`` discards them.

Input errors (unreadable file, wrong shape or dtype, NaN or inf frames, reference frames
outside the video, a reference of the wrong shape, an output path that is a file or not
writable, too little disk space) raise ``ValueError``, ``TypeError`` or ``OSError`` before any
work. Every output is written into the run's staging folder ``.pyflowreg-<run id>/`` under a
lock of the output folder, checked (frame counts and shapes), and published only when the
whole run completed, ``run.json`` last (see :mod:`._run_folder`;
:func:`pyflowreg.load_run` verifies a folder). A failed or interrupted run removes its staging
folder and raises :class:`RegistrationError` naming the batch and the cause; the earlier
run's outputs stay untouched. A run that is killed leaves its staging folder with a checkpoint
after its last finished batch (HDF5, NPY and Zarr outputs): ``resume=True`` (``--resume``)
continues it, with outputs identical to an uninterrupted run (see :mod:`._resume`).

Initial flow of each batch (see :mod:`.initialization`): batch 0 starts from the mean
flow of the first ``min(20, T)`` frames estimated from zero flow; batch ``b >= 1``
starting at frame ``s_b`` from the mean flow of frames ``[s_b - 20, s_b)`` estimated
from batch ``b - 1``'s initial flow. This depends only on frames before the batch, so
every batch's initial field is fixed before the batch runs and batches are independent
(an executor may run them in parallel and reproduce the result bit for bit).
``update_initialization_w=False`` starts every batch from zeros; ``cc_initialization``
adds a phase-correlation rigid shift; ``update_reference`` rebuilds the reference from
each batch's mean registered frame (which makes batches sequential).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .._runtime import get_runtime
from ..executors.base import validate_n_jobs
from ._compat import is_reader
from ._engine import (
    BatchResult,
    RunState,
    executor_maker,
    output_dtype,
    run_registration,
)
from ._outputs import valid_mask
from ._preflight import (
    check_finite,
    check_not_overwriting_input,
    check_output_folder,
    check_reference,
    check_video,
    estimate_output_bytes,
)
from ._resolve import backend_factory, select_executor
from ._resume import make_checkpoint, resume_key, resume_point
from ._run_folder import RunFolder
from .batch import BatchMotionCorrector
from .statistics import StatisticsAccumulator, with_pyflowreg_names

logger = logging.getLogger(__name__)

__all__ = [
    "BatchMotionCorrector",
    "BatchResult",
    "RegistrationConfig",
    "RegistrationError",
    "RegistrationResult",
    "compensate_recording",
]


@dataclass
class RegistrationConfig:
    """How a recording is run: executor, number of workers, verbosity.

    Parameters
    ----------
    n_jobs : int, default -1
        Workers; ``-1`` means all cores. The sequential executor ignores it.
    verbose : bool, default False
        Show a progress bar and log at INFO level.
    parallelization : str, optional
        ``"sequential"``, ``"threading"``, ``"multiprocessing"``, ``"dask"``, another
        registered executor, or ``None`` to pick the best available one.
    dask_client : distributed.Client, optional
        Cluster of the ``"dask"`` executor (left open at the end).
    dask_address : str or path-like, optional
        Scheduler of the ``"dask"`` executor: ``"tcp://host:8786"`` or a scheduler file.
        With neither, the ``"dask"`` executor starts a ``LocalCluster`` of ``n_jobs``
        processes and closes it at the end (see ``docs/dask.md``).
    """

    n_jobs: int = -1
    verbose: bool = False
    parallelization: Optional[str] = None  # noqa: UP045 - the spec's spelling
    dask_client: Any = None
    dask_address: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        validate_n_jobs(self.n_jobs)
        if not isinstance(self.verbose, (bool, np.bool_)):
            raise TypeError(f"verbose must be a bool, got {type(self.verbose).__name__}")
        if self.parallelization is not None and not isinstance(self.parallelization, str):
            raise TypeError(
                f"parallelization must be a str or None, got {type(self.parallelization).__name__}"
            )
        if self.dask_client is not None and not hasattr(self.dask_client, "submit"):
            raise TypeError(
                f"dask_client must be a distributed.Client, got {type(self.dask_client).__name__}"
            )
        if self.dask_address is not None and not isinstance(self.dask_address, (str, os.PathLike)):
            raise TypeError(
                "dask_address must be a str ('tcp://host:8786') or a scheduler-file path, "
                f"got {type(self.dask_address).__name__}"
            )
        if self.dask_client is not None and self.dask_address is not None:
            raise ValueError("give dask_client or dask_address, not both")

    def executor_kwargs(self, executor: str) -> dict[str, Any]:
        """Extra keyword arguments for the constructor of ``executor`` (none by default)."""
        if executor == "dask":
            return {"client": self.dask_client, "address": self.dask_address}
        return {}


@dataclass
class RegistrationResult:
    """What :func:`compensate_recording` did.

    Attributes
    ----------
    output_path : Path
        The output folder.
    files : dict of str to Path
        Outputs by name: ``compensated``, ``w``, ``valid_mask``, ``statistics``,
        ``reference``, ``options``, ``run`` (those that were written).
    reference : ndarray, shape (H, W, C), float32
        The raw reference the recording was registered to (the first one, with
        ``update_reference``).
    statistics : dict of str to ndarray
        Per-frame statistics (see :mod:`pyflowreg.motion_correction.statistics`).
    n_frames : int
    seconds : float
        Wall time of the run.
    executor : str
        Name of the executor that ran it.
    registered, w : ndarray or None
        The registered video ``(T', H, W, C)`` and fields ``(T, H, W, 2)`` with the
        ``ARRAY`` output format; None otherwise.

    Used as an array (``np.asarray(result)``, ``result[..., 0]``, ``result.shape``), the
    result is its ``reference``: what PyFlowReg's ``compensate_recording`` returns, so scripts
    written for it run unchanged.
    """

    output_path: Path
    files: dict[str, Path]
    reference: np.ndarray
    statistics: dict[str, np.ndarray]
    n_frames: int
    seconds: float
    executor: str
    registered: np.ndarray | None = field(default=None, repr=False)
    w: np.ndarray | None = field(default=None, repr=False)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if copy:
            return np.array(self.reference, dtype=dtype, copy=True)
        return np.asarray(self.reference, dtype=dtype)

    def __getitem__(self, key) -> np.ndarray:
        return self.reference[key]

    @property
    def shape(self) -> tuple[int, ...]:
        """The reference's shape ``(H, W, C)``."""
        return self.reference.shape

    @property
    def ndim(self) -> int:
        return self.reference.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.reference.dtype


class RegistrationError(RuntimeError):
    """A run failed; the message names the batch (frames) and the cause."""


#: Writer options of the displacement fields (``OFOptions.w_output``): datasets ``u`` and ``v``
#: (``(T, H, W)`` each) of ``w.h5``, PyFlowReg's layout; NPY and ZARR store ``(T, H, W, 2)``.
_W_LAYOUT = {"HDF5": {"layout": "channels", "dataset_names": ["u", "v"]}}
_MASK_LAYOUT = {
    "HDF5": {"layout": "channels", "dataset_names": ["valid_mask"]},
    "MAT": {"layout": "channels", "variable_names": ["valid_mask"]},
}


class _FileSink:
    """Writers and statistics of one run, behind a :class:`RunFolder`."""

    def __init__(self, outputs: RunFolder, options, shape, dtype: np.dtype) -> None:
        self.options = options
        fmt, ext = options.output_format, options.output_extension
        self.in_memory = fmt == "ARRAY"
        self.to_files = fmt not in ("ARRAY", "NULL")
        self.video = self.w = self.mask = self.idx = None
        self.dtype = dtype
        self._video_parts: list[np.ndarray] = []
        self._w_parts: list[np.ndarray] = []
        n_frames = int(shape[0])  # the reader bins the input (bin_size): frames registered
        if self.to_files:
            self.video = outputs.video_writer(
                "compensated", options.output_file.name, fmt, expected_frames=n_frames
            )
            if options.save_w:
                name, w_fmt = options.w_output
                self.w = outputs.video_writer(
                    "w", name, w_fmt, expected_frames=n_frames, **_W_LAYOUT.get(w_fmt, {})
                )
            if options.save_valid_mask:
                self.mask = outputs.video_writer(
                    "valid_mask",
                    "valid_mask" + ext,
                    fmt,
                    expected_frames=n_frames,
                    **_MASK_LAYOUT.get(fmt, {}),
                )
        elif self.in_memory:
            self.video = _ListWriter(self._video_parts)
        if options.save_valid_idx and self.to_files:
            self.idx = outputs.video_writer(
                "valid_idx",
                "idx.hdf",
                "HDF5",
                expected_frames=n_frames,
                layout="channels",
                dataset_names=["ch1"],  # PyFlowReg's name of the one dataset
            )
        self.stats: StatisticsAccumulator | None = None
        self.resumed_statistics: list[dict] = []
        self._computed_stats: list[dict] = []

    def start(self, reference: np.ndarray) -> None:
        if self.options.save_meta_info:
            self.stats = StatisticsAccumulator(reference)
            for batch in self.resumed_statistics:  # batches done by an interrupted run
                self.stats.extend(batch)

    def add(self, start: int, raw, registered, w) -> None:
        self._write(registered, w)
        if self.stats is not None:
            self.stats.add(raw, registered, w)

    def _write(self, registered, w) -> None:
        if self.video is not None:
            self.video.write(registered)
        if self.w is not None:
            self.w.write(w)
        elif self.in_memory and self.options.save_w:
            self._w_parts.append(w)
        if self.mask is not None or self.idx is not None:
            mask = valid_mask(w)[..., None]
            for writer in (self.mask, self.idx):
                if writer is not None:
                    writer.write(mask)

    def add_computed(self, start: int, registered, w, statistics) -> None:
        """A batch registered on a Dask worker, which computed its ``statistics`` and,
        where ``registered`` / ``w`` are None, wrote them to ``region_outputs`` itself."""
        if registered is not None:
            self._write(registered, w)
        if self.stats is not None:
            self._computed_stats.append(statistics)

    def region_outputs(self, n_frames: int, frame_shape, chunk_frames: int) -> dict | None:
        """Create the Zarr outputs at their final shape so that workers write their own
        frames (``ZarrWriter.write_at``); ``{key: path}``, or None for other formats and
        with ``save_valid_idx`` (an HDF5 file written here)."""
        if self.options.output_format != "ZARR" or self.idx is not None:
            return None
        h, w, c = frame_shape
        targets = {}
        for key, writer, shape, dtype in (
            ("compensated", self.video, (n_frames, h, w, c), self.dtype),
            ("w", self.w, (n_frames, h, w, 2), np.float32),
            ("valid_mask", self.mask, (n_frames, h, w, 1), np.uint8),
        ):
            if writer is not None:
                writer.chunk_frames = chunk_frames
                writer.create(shape, dtype)
                targets[key] = writer.path
        return targets

    def statistics(self) -> dict:
        if self.stats is None:
            return {}
        if self._computed_stats:
            keys = self._computed_stats[0].keys()
            return {k: np.concatenate([s[k] for s in self._computed_stats]) for k in keys}
        return self.stats.result()

    def reference_changed(self, reference: np.ndarray) -> None:
        if self.stats is not None:
            self.stats.set_reference(reference)

    def finish(self) -> None:
        """Nothing is buffered here (the writers are closed by the run folder)."""

    def arrays(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        video = np.concatenate(self._video_parts) if self._video_parts else None
        w = np.concatenate(self._w_parts) if self._w_parts else None
        return video, w


class _ListWriter:
    """A writer that keeps the frames in a list (the ``ARRAY`` output format)."""

    def __init__(self, parts: list) -> None:
        self.parts = parts

    def write(self, frames: np.ndarray) -> None:
        self.parts.append(np.array(frames))


def _open_input(options):
    """Reader of ``options.input_file`` and its name for messages."""
    from ..io import open_reader

    options.check_input_exists()
    source = options.input_file
    # temporal binning of the input happens in the reader, before registration
    binning = {"bin_size": options.bin_size} if options.bin_size > 1 else {}
    kwargs = {} if options.dataset_name is None else {"dataset_name": options.dataset_name}
    kwargs.update(binning)
    if isinstance(source, np.ndarray):
        return open_reader(source, **binning), f"array {source.shape}"
    if is_reader(source):  # a twin: the given reader stays open and where it was
        spec = source.spec
        if binning:
            spec = replace(spec, options={**spec.options, **binning})
        return (
            spec.open(),
            f"reader of {spec.source if isinstance(spec.source, str) else spec.format}",
        )
    if isinstance(source, tuple):
        return open_reader(list(source), **kwargs), ", ".join(str(p) for p in source)
    return open_reader(source, **kwargs), str(source)


def _input_paths(options) -> list[Path]:
    source = options.input_file
    if is_reader(source):
        source = source.spec.source
        source = tuple(source) if isinstance(source, list) else source
    if source is None or isinstance(source, np.ndarray):
        return []
    return [Path(p) for p in (source if isinstance(source, tuple) else [source])]


def _preflight(
    options, reader, name: str, reference, resume: bool = False, executor_cls=None
) -> tuple[np.ndarray | None, RunFolder, str | None]:
    """Every check that needs no registration (see :mod:`._preflight`), then the output
    folder's lock (taking over a dead run's checkpoint with ``resume``); raises
    ``ValueError``/``TypeError``/``OSError`` before any work. Returns the given reference,
    the run folder and the key of the run's checkpoints (None if not resumable)."""
    check_video(reader, options, name)
    given = check_reference(reader, options, reference, name)
    check_finite(reader, name, options.buffer_size)
    check_not_overwriting_input(options, _input_paths(options))
    needed = estimate_output_bytes(options, reader.shape, reader.dtype)
    check_output_folder(Path(options.output_path), needed)
    inputs = _input_paths(options)
    key = resume_key(options, reader, inputs, given, executor_cls)
    outputs = RunFolder(Path(options.output_path), protect=inputs)
    return given, outputs.open(resume_key=key if resume else None), key


def compensate_recording(
    options,
    reference_frame=None,
    config: RegistrationConfig | None = None,
    *,
    progress_callback=None,
    batch_callback=None,
    resume: bool = False,
) -> RegistrationResult:
    """Register a recording to a reference and write the outputs (see module docstring).

    Parameters
    ----------
    options : OFOptions
        Input, output and model options.
    reference_frame : ndarray or path, optional
        Reference image ``(H, W)`` or ``(H, W, C)``; overrides ``options.reference_frames``.
    config : RegistrationConfig, optional
        Executor and workers; ``None`` is ``RegistrationConfig()``.
    progress_callback : callable, optional
        ``progress_callback(done_frames, total_frames)`` after every batch.
    batch_callback : callable, optional
        ``batch_callback(BatchResult)`` after every batch (registered frames and fields).
    resume : bool, default False
        Continue the run a kill interrupted in ``options.output_path`` (same options and
        input) from its last finished batch, with outputs identical to an uninterrupted
        run (HDF5, NPY and Zarr outputs; see :mod:`._resume`). If the folder already holds
        this run, finished and verified, return it without registering anything; without
        either, start from the beginning.

    Returns
    -------
    RegistrationResult

    Examples
    --------
    >>> from pyflowreg.motion_correction import OFOptions, compensate_recording
    >>> options = OFOptions(input_file="rec.h5", output_path="results", quality_setting="fast")
    >>> result = compensate_recording(options)  # doctest: +SKIP
    >>> result.files["compensated"]  # doctest: +SKIP
    PosixPath('results/compensated.HDF5')
    """
    config = RegistrationConfig() if config is None else config
    if not isinstance(config, RegistrationConfig):
        raise TypeError(f"config must be a RegistrationConfig, got {type(config).__name__}")
    called = time.perf_counter()
    verbose = bool(options.verbose or config.verbose)
    runtime = get_runtime()
    executor_name = select_executor(options, config.parallelization, runtime=runtime, stacklevel=3)
    executor_cls = runtime.get_executor_class(executor_name)
    factory = backend_factory(options, runtime)
    state = RunState()
    with state.timed("kernels"):
        make_executor = executor_maker(
            executor_cls, factory, options, config.n_jobs, config.executor_kwargs(executor_name)
        )
    reader, name = _open_input(options)
    try:  # input errors fail here, before a worker starts or an output is opened
        given, outputs, key = _preflight(
            options, reader, name, reference_frame, bool(resume), executor_cls
        )
    except BaseException:
        reader.close()
        raise
    if resume and key is not None and outputs.resumed is None:
        finished = _finished_run(Path(options.output_path), key)
        if finished is not None:  # this very run is done already: nothing to redo
            outputs.abort()
            reader.close()
            logger.info("%s holds the finished run already", options.output_path)
            return finished
    start_time = _dt.datetime.now().astimezone()
    tic = time.perf_counter()
    state.phases["preflight"] = tic - called
    from tqdm.auto import tqdm

    bar = tqdm(total=reader.shape[0], unit="frame", desc="registering", disable=not verbose)
    try:
        with reader:
            dtype = output_dtype(options, reader.dtype)
            sink, point = _resumed_sink(outputs, options, reader.shape, dtype, name)
            extra = {}
            if key is not None:  # checkpoints after every batch; resume where one was left
                extra["checkpoint"] = make_checkpoint(outputs, key, sink, state)
            if point is not None:
                given = point.reference
                extra["resume_at"] = (point.batch, point.uv)

            def progress(done: int, total: int) -> None:
                bar.update(done - bar.n)
                if progress_callback is not None:
                    progress_callback(done, total)

            run = run_registration
            if getattr(executor_cls, "runs_on_cluster", False):  # the dask executor
                from .distributed import cluster_runner

                run = cluster_runner(executor_cls, factory, config)
            run(
                reader,
                options,
                make_executor,
                sink,
                state,
                reference=given,
                progress=progress,
                batch_callback=batch_callback,
                name=name,
                **extra,
            )
            sink.finish()
            seconds = time.perf_counter() - tic
            statistics = sink.statistics()
            record = _write_meta(
                outputs, options, state, statistics, executor_name, seconds, start_time
            )
            record.update(
                input=name,
                input_shape=[int(s) for s in reader.shape],
                output_format=options.output_format,
                resumed_at_frame=None if point is None else point.frames,
                resume_key=key,
            )
            state.stage = "checking and committing the outputs"
            files = outputs.commit(record, frame_shape=tuple(int(s) for s in reader.shape[1:]))
    except KeyboardInterrupt:
        outputs.abort()
        logger.warning("registration of %s interrupted during %s", name, state.stage)
        raise
    except Exception as exc:
        outputs.abort()
        raise RegistrationError(
            f"motion correction of {name} failed during {state.stage}: {type(exc).__name__}: {exc}"
        ) from exc
    except BaseException:  # SystemExit and the like: the outputs go all the same
        outputs.abort()
        raise
    finally:
        bar.close()
    registered, w = sink.arrays()
    logger.info("registered %d frames of %s in %.1f s", state.n_frames, name, seconds)
    return RegistrationResult(
        output_path=Path(options.output_path),
        files=files,
        reference=state.reference,
        statistics=statistics,
        n_frames=state.n_frames,
        seconds=seconds,
        executor=executor_name,
        registered=registered,
        w=w,
    )


def _finished_run(folder: Path, key: str) -> RegistrationResult | None:
    """The verified finished run in ``folder`` if it is the run of ``key``, else None."""
    from .runs import load_run

    try:
        run = load_run(folder)
    except (OSError, ValueError):
        return None
    record = run.record
    if record.get("resume_key") != key:
        return None
    statistics: dict[str, np.ndarray] = {}
    if "statistics" in run.files:
        with np.load(run.files["statistics"]) as saved:
            statistics = {k: saved[k] for k in saved.files}
    reference = None
    if "reference" in run.files:
        import tifffile

        reference = np.asarray(tifffile.imread(run.files["reference"]), np.float32)
        reference = reference[..., None] if reference.ndim == 2 else reference
    return RegistrationResult(
        output_path=folder,
        files=run.files,
        reference=reference,
        statistics=statistics,
        n_frames=int(record.get("frames", 0)),
        seconds=float(record.get("seconds") or 0.0),
        executor=str(record.get("executor", "")),
    )


def _resumed_sink(outputs: RunFolder, options, shape, dtype, name: str):
    """The sink of the run, continuing the outputs of the checkpoint ``outputs`` resumes (if
    any): ``(sink, ResumePoint or None)``. A checkpoint that cannot be continued (damaged
    files) is given up with a warning and the run starts again."""
    if outputs.resumed is not None:
        try:
            point = resume_point(outputs)
            sink = _FileSink(outputs, options, shape, dtype)
            sink.resumed_statistics = point.statistics
            logger.info("resuming %s at frame %d", name, point.frames)
            return sink, point
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("cannot resume the run in %s (%s); starting again", outputs.staging, exc)
            outputs.restart()
    return _FileSink(outputs, options, shape, dtype), None


def _write_meta(outputs, options, state, statistics, executor, seconds, start_time) -> dict:
    """Write the statistics, reference and options; return the record for ``run.json``."""
    if options.save_meta_info:
        outputs.write_npz("statistics", "statistics.npz", with_pyflowreg_names(statistics))
        outputs.write_tiff("reference", "reference.tif", state.reference)
        outputs.write_file(
            "reference_frame", "reference_frame.npy", lambda path: _save_npy(path, state.reference)
        )
    outputs.write_json("options", "options.json", options.to_dict(arrays="omit"))
    return dict(
        {
            "frames": state.n_frames,
            "seconds": seconds,
            "frames_per_second": state.n_frames / seconds if seconds > 0 else None,
            "flow_seconds": state.flow_seconds,
            "reference_flow_seconds": state.reference_flow_seconds,
            "phase_seconds": {key: round(value, 4) for key, value in state.phases.items()},
            "alpha": list(options.flow_parameters().alpha)
            if state.alpha_selection is None
            else [state.alpha_selection["alpha"]] * 2,
            "alpha_selection": state.alpha_selection,
            "executor": executor,
            "n_workers": state.n_workers,
            "flow_backend": options.flow_backend,
            "versions": _versions(),
            "start_time": start_time.isoformat(timespec="seconds"),
            "end_time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        },
    )


def _save_npy(path: Path, image: np.ndarray) -> None:
    """``image`` as float32 ``.npy``, ``(H, W)`` for one channel (a handle: no suffix added)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    with open(path, "wb") as fh:
        np.save(fh, image)


def _versions() -> dict[str, str]:
    import numba

    from .. import __version__

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "pyflowreg": __version__,
    }
