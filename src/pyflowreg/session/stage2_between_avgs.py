"""Stage 2 of a session: align every recording's temporal mean to the centre recording's.

For every recording folder ``<output_root>/<name>/`` that stage 1 finished, stage 2 reads
``temporal_average.npy``, computes the displacement field that maps it onto the centre
recording's mean (:func:`pyflowreg.session.between.align_means`: gain-invariant log intensities,
phase-correlation start, the flow engine coarse to fine in scale) and writes

``w_to_reference.npz``
    Arrays ``u`` (along x, columns) and ``v`` (along y, rows), ``(H, W)`` float32, in pixels:
    ``warp(mean, np.stack([u, v], -1))`` is aligned with the centre's mean. The centre
    recording's field is zero.
``status.json``
    ``"stage2": "done"`` with the options hash of the stage-2 settings and the centre, and the
    stage-1 fingerprints of the recording and of the centre it was computed from.

Resume: a recording's field is reused only when its record verifies with the same settings,
the same centre and the same stage-1 results (of itself and of the centre); changing
``sigma_smooth``, ``alpha_between``, ... or redoing stage 1 recomputes it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._status import claim, stage_done, stage_fingerprint, stage_record, verify_stage, write_status
from .between import align_means
from .config import SessionConfig, discover_input_files, options_hash
from .stage1_compensate import TEMPORAL_AVERAGE_FILE, atomic_save_npz

logger = logging.getLogger(__name__)

__all__ = [
    "DISPLACEMENT_FILE",
    "compute_between_displacement",
    "load_displacement",
    "run_stage2",
    "stage2_options_hash",
]

DISPLACEMENT_FILE = "w_to_reference.npz"
#: Version of the stage-2 method, part of the options hash (a new method redoes old fields).
METHOD = "log-gain-invariant+scale-continuation/1"


def compute_between_displacement(
    reference_avg: np.ndarray, current_avg: np.ndarray, config: SessionConfig
) -> np.ndarray:
    """Field ``(H, W, 2)`` float32 that maps ``current_avg`` onto ``reference_avg``, with the
    stage-2 settings of ``config`` (:func:`pyflowreg.session.between.align_means`)."""
    return align_means(
        reference_avg,
        current_avg,
        sigma_smooth=config.sigma_smooth,
        cc_upsample=config.cc_upsample,
        alpha=config.alpha_between,
        iterations=config.iterations_between,
        constancy_assumption=_constancy(config),
        flow_backend=config.flow_backend,
        backend_params=config.backend_params,
    )


def stage2_options_hash(config: SessionConfig, center_name: str) -> str:
    """Hash of what a stage-2 field depends on: the stage-2 settings, the centre, the method."""
    return options_hash(
        {"settings": config.stage2_parameters(), "center": center_name, "method": METHOD}
    )


def load_displacement(folder: str | Path) -> np.ndarray:
    """The field ``(H, W, 2)`` float32 of ``folder/w_to_reference.npz``."""
    path = Path(folder) / DISPLACEMENT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"stage-2 field not found: {path} (run stage 2 first)")
    with np.load(path, allow_pickle=False) as data:
        missing = {"u", "v"} - set(data.files)
        if missing:
            raise ValueError(f"{path} lacks the arrays {sorted(missing)}")
        u, v = data["u"], data["v"]
    if u.ndim != 2 or u.shape != v.shape:
        raise ValueError(f"{path}: u {u.shape} and v {v.shape} must be equal (H, W) arrays")
    return np.stack([u, v], axis=-1).astype(np.float32)


def run_stage2(config: SessionConfig) -> tuple[int, Path, list[np.ndarray]]:
    """Align every recording's temporal mean to the centre recording's.

    Parameters
    ----------
    config : SessionConfig
        The session; stage 1 must be done for every recording (``temporal_average.npy``).

    Returns
    -------
    middle_idx : int
        0-based index of the centre recording among the discovered recordings.
    center_file : Path
        The centre recording.
    displacement_fields : list of ndarray
        Per recording, in discovery order, the field ``(H, W, 2)`` float32 (``[..., 0] = u``,
        ``[..., 1] = v``) that maps its mean onto the centre's (zero for the centre).

    Raises
    ------
    FileNotFoundError
        A recording has no ``temporal_average.npy`` (stage 1 not run).
    RuntimeError
        A recording's stage-1 record is not done or does not verify.
    ValueError
        The means differ in shape, or a setting the engine does not support.
    """
    if not isinstance(config, SessionConfig):
        raise TypeError(f"config must be a SessionConfig, got {type(config).__name__}")
    _constancy(config)
    input_files = discover_input_files(config)
    middle_idx = config.center_index(input_files)
    center_file = input_files[middle_idx]
    folders = [config.output_folder(f) for f in input_files]
    means = [_load_mean(folder) for folder in folders]
    shapes = {m.shape for m in means}
    if len(shapes) > 1:
        listing = ", ".join(f"{f.name}: {m.shape}" for f, m in zip(folders, means, strict=True))
        raise ValueError(f"the temporal means differ in shape ({listing})")
    center_folder = folders[middle_idx]
    digest = stage2_options_hash(config, center_folder.name)
    reference = means[middle_idx]
    logger.info("stage 2: centre recording %s (index %d)", center_file.name, middle_idx)

    fields = []
    for i, folder in enumerate(folders):
        inputs = {
            "stage1": stage_fingerprint(folder, "stage1"),
            "center_stage1": stage_fingerprint(center_folder, "stage1"),
        }
        with claim(folder, "stage2"):
            if config.resume and stage_done(folder, "stage2", digest, inputs):
                logger.info("stage 2: %s is done already (field verified)", folder.name)
                fields.append(load_displacement(folder))
                continue
            tic = time.perf_counter()
            if i == middle_idx:
                field = np.zeros((*reference.shape[:2], 2), np.float32)
            else:
                field = compute_between_displacement(reference, means[i], config)
            atomic_save_npz(folder / DISPLACEMENT_FILE, u=field[..., 0], v=field[..., 1])
            seconds = time.perf_counter() - tic
            write_status(
                folder,
                "stage2",
                options_hash=digest,
                outputs=[DISPLACEMENT_FILE],
                inputs=inputs,
                center=center_file.name,
                settings=config.stage2_parameters(),
                max_displacement=float(np.hypot(field[..., 0], field[..., 1]).max()),
                seconds=round(seconds, 3),
            )
            logger.info(
                "stage 2: %s aligned to %s in %.1f s (largest displacement %.2f px)",
                folder.name,
                center_file.name,
                seconds,
                float(np.hypot(field[..., 0], field[..., 1]).max()),
            )
        fields.append(field)
    return middle_idx, center_file, fields


def _constancy(config: SessionConfig) -> str:
    value = config.stage2_constancy_assumption
    if value not in ("gc", "gray"):
        raise ValueError(
            f"stage2_constancy_assumption {value!r} is not supported: the flow engine has the "
            "data terms 'gc' (gradient constancy, recommended) and 'gray'"
        )
    return value


def _load_mean(folder: Path) -> np.ndarray:
    """The temporal mean of stage 1 in ``folder``, after checking stage 1's record."""
    path = folder / TEMPORAL_AVERAGE_FILE
    record: Any = stage_record(folder, "stage1")
    if record is not None:
        problems = verify_stage(folder, "stage1")
        if problems:
            raise RuntimeError(
                f"stage 1 of {folder.name} is not usable ({'; '.join(problems)}); run stage 1 again"
            )
    if not path.is_file():
        raise FileNotFoundError(f"temporal mean not found: {path} (run stage 1 first)")
    if record is None:
        logger.info("stage 2: %s has no stage-1 record; using %s as found", folder.name, path)
    mean = np.load(path, allow_pickle=False)
    if mean.ndim not in (2, 3) or mean.dtype.kind not in "uif":
        raise ValueError(f"{path} must hold a real (H, W) or (H, W, C) array, got {mean.shape}")
    return mean
