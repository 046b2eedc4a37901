"""Resuming a run that was killed: checkpoints after every batch, continued by ``resume=True``.

After every batch a run that writes HDF5, NPY or Zarr outputs flushes its writers and saves a
checkpoint in its staging folder (``.pyflowreg-<run id>/.resume/``): the frames done, the initial
flow of the next batch, the statistics of the batch and, once, the raw reference. The checkpoint
is saved under a key: a hash of the options (``verbose`` aside), the input files (path, size,
modification time), the input's shape and dtype, a given reference image and the pyflowreg
version.

A run started with ``resume=True`` into the same folder takes over the staging folder of a dead
run with the same key (see :class:`~._run_folder.RunFolder`), truncates its outputs to the frames
of the last checkpoint and registers the remaining batches from the saved reference and initial
flow: the outputs are identical to those of an uninterrupted run (the initial flow of a batch
depends only on the frames before it, see :mod:`.initialization`). Without a matching checkpoint
the run starts from the beginning. Not resumable (they start again): TIFF and MAT outputs,
``update_reference`` (the reference changes with every batch), in-memory input, and the cluster
runner of the ``dask`` executor.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

RESUMABLE_FORMATS = ("HDF5", "NPY", "ZARR")


class ResumePoint(NamedTuple):
    """Where a resumed run continues: batch, frames done, the batch's initial flow, the
    statistics of the batches done (one dict per batch) and the raw reference."""

    batch: int
    frames: int
    uv: np.ndarray | None
    statistics: list[dict[str, np.ndarray]]
    reference: np.ndarray


def resume_key(options, reader, inputs: list[Path], reference, executor_cls) -> str | None:
    """Key of this run's checkpoints, or None if the run cannot be resumed."""
    if (
        options.output_format not in RESUMABLE_FORMATS
        or options.update_reference
        or not inputs
        or getattr(executor_cls, "runs_on_cluster", False)
    ):
        return None
    from .. import __version__

    digest = hashlib.sha256()
    settings = options.to_dict(arrays="omit")
    settings.pop("verbose", None)
    files = []
    for path in inputs:
        stat = Path(path).stat()
        files.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    described = {
        "options": settings,
        "inputs": files,
        "shape": [int(s) for s in reader.shape],
        "dtype": str(reader.dtype),
        "version": __version__,
    }
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for array in (options.weight, options.reference_frames, reference):
        if isinstance(array, np.ndarray):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def make_checkpoint(outputs, key: str, sink, state):
    """``checkpoint(b, frames_done, uv_next)`` for :func:`~._engine.run_registration`."""

    def checkpoint(b: int, frames: int, uv_next: np.ndarray | None) -> None:
        arrays = {}
        if outputs.checkpoint_array("reference") is None:
            arrays["reference"] = state.reference
        if uv_next is not None:
            arrays["uv"] = uv_next
        stats = sink.stats.last_batch() if sink.stats is not None else {}
        for name, values in stats.items():
            arrays[f"statistics-{b}-{name}"] = values
        progress = {
            "key": key,
            "batch": b + 1,
            "frames": frames,
            "uv": uv_next is not None,
            "statistics": sorted(stats),
        }
        outputs.save_checkpoint(progress, arrays)

    return checkpoint


def resume_point(outputs) -> ResumePoint:
    """The checkpoint of ``outputs.resumed`` with its arrays; ``ValueError`` if incomplete."""
    progress = outputs.resumed
    batch, frames = int(progress["batch"]), int(progress["frames"])
    reference = outputs.checkpoint_array("reference")
    uv = outputs.checkpoint_array("uv") if progress.get("uv") else None
    if reference is None or (progress.get("uv") and uv is None):
        raise ValueError("the checkpoint is incomplete")
    statistics = []
    for b in range(batch):
        parts = {}
        for name in progress.get("statistics", []):
            values = outputs.checkpoint_array(f"statistics-{b}-{name}")
            if values is None:
                raise ValueError(f"the checkpoint lacks the statistics of batch {b}")
            parts[name] = values
        statistics.append(parts)
    return ResumePoint(batch, frames, uv, statistics, reference)
