"""Stage 1 of a session: motion-correct every recording, keep its valid masks and its mean.

For every recording ``<root>/<name>.<ext>`` matched by the session's ``pattern``, stage 1
writes into ``<output_root>/<name>/``:

``compensated.hdf5``
    The registered video ``(T, H, W, C)``, written by
    :func:`pyflowreg.motion_correction.compensate_recording` (HDF5, input dtype unless the
    options say otherwise), committed atomically with its ``run.json`` (see
    :mod:`pyflowreg.motion_correction._run_folder`).
``idx.hdf``
    Per-frame valid-pixel masks: HDF5 dataset ``idx``, ``(T, H, W, 1)`` uint8, 1 where the
    frame was sampled inside its bounds (``save_valid_idx=True``).
``temporal_average.npy``
    The mean of the registered frames as written, float64, ``(H, W)`` (one channel) or
    ``(H, W, C)``: a float64 running sum of every batch (``batch_callback``), not a second
    read of the video.
``status.json``
    ``"stage1": "done"`` and the verifiable record of the outputs (see
    :mod:`pyflowreg.session._status`): options hash, frames, shape, sizes, checksums.

plus ``run.json``, ``options.json`` and, with ``save_meta_info``, ``statistics.npz`` and the
reference (the outputs of ``compensate_recording``).

Resume: a recording is skipped only when its ``status.json`` verifies (same options and input,
every output present with the recorded size, checksum and shapes). Otherwise it is redone; a
run that was killed mid-recording continues from its last finished batch
(``compensate_recording(resume=True)``), and the mean is then recomputed from the committed
video in the same batches, so every output equals that of an uninterrupted run. A recording is
claimed (``_status.claim``) while it is processed: two array tasks, Dask workers or ``run``
commands never process the same recording at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._status import (
    RecordingClaimedError,
    atomic_write,
    claim,
    invalidate,
    stage_done,
    write_status,
)
from .config import (
    SessionConfig,
    array_task_index,
    discover_input_files,
    options_hash,
    recording_name,
)

logger = logging.getLogger(__name__)

__all__ = [
    "COMPENSATED_FILE",
    "IDX_FILE",
    "STAGE1_OUTPUTS",
    "TEMPORAL_AVERAGE_FILE",
    "atomic_save_npy",
    "atomic_save_npz",
    "compute_and_save_temporal_average",
    "discover_input_files",
    "recording_options",
    "run_stage1",
    "run_stage1_array",
    "stage1_options_hash",
]

COMPENSATED_FILE = "compensated.hdf5"
IDX_FILE = "idx.hdf"
TEMPORAL_AVERAGE_FILE = "temporal_average.npy"
STAGE1_OUTPUTS = (COMPENSATED_FILE, IDX_FILE, TEMPORAL_AVERAGE_FILE)

#: Options the session sets for every recording.
_FORCED = {
    "output_format": "HDF5",
    "output_file_name": COMPENSATED_FILE,
    "naming_convention": "default",
    "save_valid_idx": True,
}
#: Options that do not change the results (left out of the options hash).
_NOT_HASHED = ("input_file", "output_path", "verbose")


def run_stage1(
    config: SessionConfig,
    of_options_override: Mapping[str, Any] | None = None,
    task_index: int | None = None,
    *,
    verbose: bool = False,
) -> list[Path]:
    """Motion-correct the recordings of a session (see the module docstring).

    Parameters
    ----------
    config : SessionConfig
    of_options_override : mapping, optional
        ``OFOptions`` values overriding ``config.flow_options`` (e.g.
        ``{"quality_setting": "fast", "buffer_size": 1000}``).
    task_index : int, optional
        Process only the recording of this 0-based index (in discovery order).
    verbose : bool, default False
        Progress bar of every recording.

    Returns
    -------
    list of Path
        The output folders ``<output_root>/<name>``, in discovery order. With ``task_index``,
        the one folder. A recording another live process is processing is left to it (logged
        as a warning), its folder listed all the same.

    Raises
    ------
    FileNotFoundError
        No recording matches (or ``root`` is missing), or the ``flow_options`` file is missing.
    IndexError
        ``task_index`` is not the index of a recording.
    RecordingClaimedError
        With ``task_index``: another live process is processing that recording.
    pyflowreg.motion_correction.RegistrationError
        A recording failed (its status says ``"failed"``; the earlier recordings are done).
    """
    if not isinstance(config, SessionConfig):
        raise TypeError(f"config must be a SessionConfig, got {type(config).__name__}")
    files = discover_input_files(config)
    if task_index is not None:
        if isinstance(task_index, bool) or not isinstance(task_index, (int, np.integer)):
            raise TypeError(f"task_index must be an int, got {type(task_index).__name__}")
        if not 0 <= task_index < len(files):
            raise IndexError(
                f"task_index {task_index} is out of range: {len(files)} recordings match "
                f"{config.pattern!r} in {config.root} (indices 0-{len(files) - 1})"
            )
        files = [files[int(task_index)]]
    base = config.stage1_options(of_options_override)  # bad options fail before any work
    _warn_forced(base)
    output_root = config.resolve_output_paths().output_root
    folders, busy = [], []
    with _shared_cluster(config.registration_config(verbose=verbose), len(files)) as registration:
        for i, input_file in enumerate(files, 1):
            folder = output_root / recording_name(input_file)
            logger.info("stage 1: recording %d/%d: %s", i, len(files), input_file.name)
            try:
                _compensate_one(input_file, folder, base, registration, config.resume)
            except RecordingClaimedError as exc:
                if task_index is not None:
                    raise
                logger.warning(
                    "stage 1: %s left to the process holding it: %s", input_file.name, exc
                )
                busy.append(input_file.name)
            folders.append(folder)
    if busy:
        logger.warning(
            "stage 1: %d recording(s) were being processed elsewhere and may not be done yet: %s",
            len(busy),
            ", ".join(busy),
        )
    return folders


def run_stage1_array(
    config: SessionConfig,
    task_index: int | None = None,
    *,
    of_options_override: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Stage 1 of the one recording of this array-job task.

    Parameters
    ----------
    config : SessionConfig
    task_index : int, optional
        0-based recording index. Default: from the scheduler's task id
        (``SLURM_ARRAY_TASK_ID``, ``SGE_TASK_ID``, ``PBS_ARRAY_INDEX``), which is 1-based
        (``#SBATCH --array=1-N``: task 1 processes the first recording; see
        :func:`pyflowreg.session.config.array_task_index`).
    of_options_override : mapping, optional
        As for :func:`run_stage1`.

    Returns
    -------
    list of Path
        The recording's output folder; empty (with a warning) when the array has more tasks
        than the session has recordings.

    Raises
    ------
    ValueError
        No ``task_index`` and no array-job environment variable.
    """
    if task_index is None:
        task_index = array_task_index()
        if task_index is None:
            raise ValueError(
                "no array task id: run inside an array job (SLURM_ARRAY_TASK_ID, SGE_TASK_ID or "
                "PBS_ARRAY_INDEX set) or pass task_index"
            )
    files = discover_input_files(config)
    if task_index >= len(files):
        warnings.warn(
            f"array task index {task_index} has no recording: the session has {len(files)} "
            f"(indices 0-{len(files) - 1}); nothing to do",
            RuntimeWarning,
            stacklevel=2,
        )
        return []
    return run_stage1(config, of_options_override, task_index=task_index)


@contextlib.contextmanager
def _shared_cluster(registration, n_recordings: int):
    """``registration`` for every recording: with the ``dask`` executor and no cluster given,
    one ``LocalCluster`` serves them all (instead of one started per recording)."""
    if (
        registration.parallelization != "dask"
        or n_recordings < 2
        or registration.dask_client is not None
        or registration.dask_address is not None
    ):
        yield registration
        return
    from ..executors.dask import dask_client

    n_workers = registration.n_jobs if registration.n_jobs > 0 else (os.cpu_count() or 1)
    with dask_client(n_workers) as client:
        yield dataclasses.replace(registration, dask_client=client)


# ---------------------------------------------------------------------- one recording


def _compensate_one(input_file: Path, folder: Path, base, registration, resume: bool) -> str:
    """Stage 1 of one recording under its claim: ``"skipped"`` (verified done) or ``"done"``."""
    from ..motion_correction.compensate_recording import compensate_recording

    options = recording_options(base, input_file, folder)
    digest = stage1_options_hash(options)
    with claim(folder, "stage1"):
        if resume and stage_done(folder, "stage1", digest):
            logger.info("stage 1: %s is done already (outputs verified)", folder.name)
            return "skipped"
        invalidate(folder, "stage2")  # its input is about to change
        write_status(folder, "stage1", state="running", options_hash=digest, input=str(input_file))
        tic = time.perf_counter()
        average = _TemporalAverage()
        try:
            result = compensate_recording(
                options, config=registration, batch_callback=average.add, resume=resume
            )
            compensated = folder / COMPENSATED_FILE
            if not average.covers(result.n_frames):  # resumed, or finished by an earlier run
                logger.info("stage 1: %s: computing the mean from %s", folder.name, compensated)
                average = _TemporalAverage.of_file(compensated, options.buffer_size)
            if average.frames != result.n_frames:
                raise RuntimeError(
                    f"{compensated} holds {average.frames} frames, the run registered "
                    f"{result.n_frames}"
                )
            atomic_save_npy(folder / TEMPORAL_AVERAGE_FILE, average.mean())
            shape = [int(result.n_frames), *(int(s) for s in average.frame_shape)]
            write_status(
                folder,
                "stage1",
                state="done",
                options_hash=digest,
                outputs=STAGE1_OUTPUTS,
                input=str(input_file),
                frames=int(result.n_frames),
                shape=shape,
                dtype=average.dtype,
                run_id=_run_id(result),
                executor=result.executor,
                seconds=round(time.perf_counter() - tic, 3),
            )
        except BaseException as exc:
            with contextlib.suppress(Exception):
                write_status(
                    folder,
                    "stage1",
                    state="failed",
                    options_hash=digest,
                    input=str(input_file),
                    error=f"{type(exc).__name__}: {exc}",
                )
            raise
    logger.info("stage 1: %s done in %.1f s", folder.name, time.perf_counter() - tic)
    return "done"


def recording_options(base, input_file: Path, folder: Path):
    """The ``OFOptions`` of one recording: ``base`` (``SessionConfig.stage1_options``) with its
    input, its output folder and the session's fixed outputs (``compensated.hdf5``,
    ``idx.hdf``)."""
    return base.model_copy(update={**_FORCED, "input_file": input_file, "output_path": folder})


def stage1_options_hash(options) -> str:
    """Hash of what stage 1's outputs depend on: the options (paths and ``verbose`` aside),
    their array values, and the input file's name and size."""
    settings = options.to_dict(arrays="omit")
    for key in _NOT_HASHED:
        settings.pop(key, None)
    arrays = [
        _array_digest(getattr(options, key))
        for key in ("weight", "reference_frames")
        if isinstance(getattr(options, key), np.ndarray)
    ]
    source = options.input_file
    identity = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        identity = {"name": path.name, "bytes": _size(path)}
    return options_hash({"options": settings, "arrays": arrays, "input": identity})


def _warn_forced(options) -> None:
    given = options.model_fields_set
    fmt = getattr(options.output_format, "value", options.output_format)
    if "output_format" in given and fmt != "HDF5":
        warnings.warn(
            f"stage 1 writes {COMPENSATED_FILE}: output_format {fmt!r} of the "
            "flow options is ignored",
            UserWarning,
            stacklevel=3,
        )
    if "save_valid_idx" in given and not options.save_valid_idx:
        warnings.warn(
            "stage 1 always saves the valid masks (idx.hdf, needed by stage 3): "
            "save_valid_idx=False of the flow options is ignored",
            UserWarning,
            stacklevel=3,
        )


def _run_id(result) -> str | None:
    import json

    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return json.loads(Path(result.files["run"]).read_text(encoding="utf-8")).get("run_id")
    return None


def _array_digest(array: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _size(path: Path) -> int | None:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return None


# ---------------------------------------------------------------------- temporal average


class _TemporalAverage:
    """Float64 running sum of registered frames, batch by batch, in recording order."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.frames = 0
        self.in_order = True
        self.dtype: str | None = None

    def add(self, batch) -> None:
        """A ``batch_callback`` of ``compensate_recording`` (a ``BatchResult``)."""
        self.add_frames(batch.start, batch.registered)

    def add_frames(self, start: int, frames: np.ndarray) -> None:
        if start != self.frames:  # a resumed run starts after the frames done before
            self.in_order = False
        frames = np.ascontiguousarray(frames)
        part = frames.sum(axis=0, dtype=np.float64)
        self.total = part if self.total is None else self.total + part
        self.frames += int(frames.shape[0])
        self.dtype = str(frames.dtype)

    def covers(self, n_frames: int) -> bool:
        """Whether every frame ``0 .. n_frames - 1`` was added, in order."""
        return self.in_order and self.frames == n_frames and self.total is not None

    @property
    def frame_shape(self) -> tuple[int, ...]:
        if self.total is None:
            raise ValueError("no frames were added")
        return tuple(self.total.shape)

    def mean(self) -> np.ndarray:
        """``(H, W)`` for one channel, ``(H, W, C)`` otherwise; float64."""
        if self.total is None or self.frames == 0:
            raise ValueError("no frames were added")
        mean = self.total / self.frames
        return mean[..., 0] if mean.ndim == 3 and mean.shape[2] == 1 else mean

    @classmethod
    def of_file(cls, path: Path, chunk_frames: int) -> _TemporalAverage:
        """The running sum of a video file read in chunks of ``chunk_frames`` (the batches of
        the run that wrote it: the same sums, in the same order, as the streamed one)."""
        from ..io import open_reader

        average = cls()
        with open_reader(path) as reader:
            n_frames = int(reader.shape[0])
            for start in range(0, n_frames, chunk_frames):
                average.add_frames(start, reader.read(start, min(start + chunk_frames, n_frames)))
        return average


def compute_and_save_temporal_average(
    video_path: str | os.PathLike,
    output_path: str | os.PathLike,
    chunk_frames: int = 400,
) -> np.ndarray:
    """Mean of a video file, read ``chunk_frames`` at a time (bounded memory), saved atomically.

    Parameters
    ----------
    video_path : path
        Any video ``pyflowreg.io.open_reader`` reads (e.g. a ``compensated.hdf5``).
    output_path : path
        The ``.npy`` file to write.
    chunk_frames : int, default 400
        Frames per read; the ``buffer_size`` of the run that wrote the video gives the very sums
        stage 1 streams.

    Returns
    -------
    ndarray, float64, shape (H, W) or (H, W, C)
    """
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, (int, np.integer)):
        raise TypeError(f"chunk_frames must be an int, got {type(chunk_frames).__name__}")
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    mean = _TemporalAverage.of_file(Path(video_path), int(chunk_frames)).mean()
    atomic_save_npy(Path(output_path), mean)
    return mean


# ---------------------------------------------------------------------- atomic saves


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save ``array`` as ``.npy`` at ``path`` atomically: a temporary file next to it, flushed
    to disk, then renamed over ``path`` (a crash leaves the old file or the new one)."""
    path = Path(path)
    return atomic_write(path, lambda fh: np.save(fh, np.asarray(array), allow_pickle=False))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Save ``arrays`` (by name) as ``.npz`` at ``path`` atomically (see
    :func:`atomic_save_npy`)."""
    path = Path(path)
    if not arrays:
        raise ValueError("atomic_save_npz needs at least one array")
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))
