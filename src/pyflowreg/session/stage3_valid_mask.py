"""Stage 3 of a session: the valid-pixel mask common to all recordings, in the centre's frame.

For every recording, the per-frame valid masks of stage 1 (``idx.hdf``, read in chunks of
``align_chunk_size`` frames) are ANDed over time: the pixels every registered frame observed.
Each such mask is carried into the centre recording's frame by its stage-2 field
(:func:`pyflowreg.core.warping.imregister_binary`: nearest neighbour, pixels whose source lies
outside the frame are invalid), and the final mask is the AND of all of them. Written to
``final_results/``:

``final_valid_idx.npz``
    ``final_valid`` (H, W) bool, ``aligned_valid_masks`` and ``per_seq_valid_masks`` (N, H, W)
    bool, ``displacement_fields_u`` / ``displacement_fields_v`` (N, H, W) float32,
    ``temporal_averages`` (N, H, W[, C]), ``compensated_h5_paths`` and ``aligned_video_paths``
    (N,) str (empty strings where no video was written), ``reference_average`` (H, W[, C]),
    ``middle_idx`` (0-based).
``final_valid_idx.mat``
    The same arrays for MATLAB (``scipy.io.savemat``; ``middle_idx`` 1-based, paths as a cell
    array).
``final_valid_idx.png``, ``<recording>_valid_idx.png``, ``<recording>_valid_idx_aligned.png``
    The masks as black-and-white images (needs matplotlib: ``pip install "pyflowreg[plot]"``;
    skipped with a warning without it).
``aligned_<recording>.<ext>``
    With ``save_aligned=True``: each ``compensated.hdf5`` reprojected into the centre's frame
    (cubic warp by its stage-2 field), ``align_chunk_size`` frames at a time, in
    ``align_output_format``.
``status.json``
    ``"stage3": "done"``, verifiable, with the fingerprints of every recording's stages 1 and 2.

Every file is written to a temporary name and renamed into place. Resume: stage 3 is skipped
when its record verifies with the same settings, the same fields and the same upstream results.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.warp import warp
from ..core.warping import imregister_binary
from ._status import atomic_write, claim, stage_done, stage_fingerprint, write_status
from .config import SessionConfig, discover_input_files, options_hash
from .stage1_compensate import (
    COMPENSATED_FILE,
    IDX_FILE,
    TEMPORAL_AVERAGE_FILE,
    atomic_save_npz,
)
from .stage2_between_avgs import load_displacement

logger = logging.getLogger(__name__)

__all__ = [
    "FINAL_MASK_FILE",
    "align_sequence_video",
    "load_idx_and_compute_mask",
    "run_stage3",
]

FINAL_MASK_FILE = "final_valid_idx"
PLOT_HINT = 'pip install "pyflowreg[plot]"'


def load_idx_and_compute_mask(idx_path: str | os.PathLike, chunk_frames: int = 64) -> np.ndarray:
    """Temporal AND of the per-frame valid masks in ``idx_path``, read in chunks.

    Parameters
    ----------
    idx_path : path
        Stage 1's ``idx.hdf`` (or any video the package reads; non-zero = valid), ``(T, H, W)``
        or ``(T, H, W, C)``.
    chunk_frames : int
        Frames per read (memory is bounded by one chunk).

    Returns
    -------
    ndarray, shape (H, W), bool
        True where every frame (and channel) is valid.
    """
    from ..io import open_reader

    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, (int, np.integer)):
        raise TypeError(f"chunk_frames must be an integer, got {type(chunk_frames).__name__}")
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    path = Path(idx_path)
    if not path.exists():
        raise FileNotFoundError(f"valid masks not found: {path} (run stage 1 first)")
    with open_reader(path) as reader:
        n_frames, h, w = (int(s) for s in reader.shape[:3])
        if n_frames == 0:
            raise ValueError(f"{path} holds no frames")
        mask = np.ones((h, w), bool)
        for start in range(0, n_frames, int(chunk_frames)):
            block = reader.read(start, min(start + int(chunk_frames), n_frames))
            mask &= np.all(block != 0, axis=(0, 3))
    return mask


def align_sequence_video(
    video_path: str | os.PathLike,
    w: np.ndarray,
    output_path: str | os.PathLike,
    *,
    output_format: str | None = None,
    chunk_frames: int = 64,
) -> Path:
    """Warp every frame of a video by one field and write the result, in bounded memory.

    Parameters
    ----------
    video_path : path
        Video readable by :func:`pyflowreg.io.open_reader` (e.g. ``compensated.hdf5``).
    w : ndarray, shape (H, W, 2)
        Field mapping the video's frame onto the target frame (a stage-2 field).
    output_path : path
        File to write (a temporary name next to it is renamed into place when complete).
    output_format : str, optional
        Writer format (``"TIFF"``, ``"HDF5"``, ...); default: from the extension.
    chunk_frames : int
        Frames read, warped and written at a time.

    Returns
    -------
    Path
        ``output_path``.
    """
    from ..io import open_reader, open_writer

    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, (int, np.integer)):
        raise TypeError(f"chunk_frames must be an integer, got {type(chunk_frames).__name__}")
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    field = np.asarray(w, np.float32)
    output_path = Path(output_path)
    tmp = output_path.with_name(f".{output_path.stem}.{os.getpid()}.tmp{output_path.suffix}")
    fmt = output_format
    try:
        with open_reader(video_path) as reader:
            n_frames = int(reader.shape[0])
            if field.shape != (*reader.shape[1:3], 2):
                raise ValueError(
                    f"w has shape {field.shape}, the frames of {video_path} need "
                    f"{(*reader.shape[1:3], 2)}"
                )
            with open_writer(tmp, fmt, expected_frames=n_frames) as writer:
                for start in range(0, n_frames, int(chunk_frames)):
                    block = reader.read(start, min(start + int(chunk_frames), n_frames))
                    writer.write(warp(block, field))
        _replace(tmp, output_path)
    finally:
        _remove(tmp)
    return output_path


def run_stage3(
    config: SessionConfig,
    middle_idx: int | None = None,
    displacement_fields: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Build the session's final valid mask (and optionally the aligned videos).

    Parameters
    ----------
    config : SessionConfig
    middle_idx : int, optional
        0-based index of the centre recording (as returned by ``run_stage2``); default: the
        config's centre.
    displacement_fields : sequence of ndarray, optional
        Per recording, in discovery order, its stage-2 field ``(H, W, 2)``; default: read from
        every folder's ``w_to_reference.npz``.

    Returns
    -------
    ndarray, shape (H, W), bool
        The final valid mask in the centre recording's frame.
    """
    if not isinstance(config, SessionConfig):
        raise TypeError(f"config must be a SessionConfig, got {type(config).__name__}")
    input_files = discover_input_files(config)
    n = len(input_files)
    if middle_idx is None:
        middle_idx = config.center_index(input_files)
    if isinstance(middle_idx, bool) or not isinstance(middle_idx, (int, np.integer)):
        raise TypeError(f"middle_idx must be an integer, got {type(middle_idx).__name__}")
    if not 0 <= middle_idx < n:
        raise ValueError(f"middle_idx must be in [0, {n - 1}] for {n} recordings, got {middle_idx}")
    middle_idx = int(middle_idx)
    folders = [config.output_folder(f) for f in input_files]
    if displacement_fields is None:
        fields = [load_displacement(folder) for folder in folders]
    else:
        fields = [np.asarray(w, np.float32) for w in displacement_fields]
        if len(fields) != n:
            raise ValueError(f"{len(fields)} displacement fields for {n} recordings")
    means = [np.load(folder / TEMPORAL_AVERAGE_FILE, allow_pickle=False) for folder in folders]
    shape = means[middle_idx].shape[:2]
    for folder, field in zip(folders, fields, strict=True):
        if field.shape != (*shape, 2):
            raise ValueError(
                f"the displacement field of {folder.name} has shape {field.shape}, "
                f"expected {(*shape, 2)}"
            )

    final_dir = config.resolve_output_paths().final_results
    final_dir.mkdir(parents=True, exist_ok=True)
    inputs = {}
    for folder in folders:
        inputs[f"{folder.name}/stage1"] = stage_fingerprint(folder, "stage1")
        inputs[f"{folder.name}/stage2"] = stage_fingerprint(folder, "stage2")
    digest = options_hash(
        {
            "settings": config.stage3_parameters(),
            "middle_idx": middle_idx,
            "fields": _digest(fields),
        }
    )
    with claim(final_dir, "stage3"):
        if config.resume and stage_done(final_dir, "stage3", digest, inputs):
            logger.info("stage 3: done already (final mask verified)")
            with np.load(final_dir / f"{FINAL_MASK_FILE}.npz", allow_pickle=False) as data:
                return data["final_valid"].astype(bool)
        tic = time.perf_counter()
        chunk = int(config.align_chunk_size)
        per_seq = [load_idx_and_compute_mask(folder / IDX_FILE, chunk) for folder in folders]
        for folder, mask in zip(folders, per_seq, strict=True):
            if mask.shape != shape:
                raise ValueError(f"{folder / IDX_FILE} has frames {mask.shape}, expected {shape}")
        aligned = [
            imregister_binary(m, w[..., 0], w[..., 1]) for m, w in zip(per_seq, fields, strict=True)
        ]
        final = np.logical_and.reduce(aligned)
        outputs = []
        aligned_paths = [""] * n
        if config.save_aligned:
            ext = _extension(config.align_output_format)
            for i, folder in enumerate(folders):
                target = final_dir / f"aligned_{folder.name}{ext}"
                logger.info("stage 3: reprojecting %s into %s", folder.name, target.name)
                align_sequence_video(
                    folder / COMPENSATED_FILE,
                    fields[i],
                    target,
                    output_format=config.align_output_format,
                    chunk_frames=chunk,
                )
                aligned_paths[i] = str(target)
                outputs.append(target.name)
        bundle = {
            "final_valid": final,
            "aligned_valid_masks": np.stack(aligned),
            "per_seq_valid_masks": np.stack(per_seq),
            "displacement_fields_u": np.stack([w[..., 0] for w in fields]),
            "displacement_fields_v": np.stack([w[..., 1] for w in fields]),
            "temporal_averages": np.stack(means),
            "compensated_h5_paths": np.array([str(f / COMPENSATED_FILE) for f in folders]),
            "reference_average": means[middle_idx],
            "middle_idx": np.int64(middle_idx),
            "aligned_video_paths": np.array(aligned_paths),
        }
        atomic_save_npz(final_dir / f"{FINAL_MASK_FILE}.npz", **bundle)
        outputs.append(f"{FINAL_MASK_FILE}.npz")
        _save_mat(final_dir / f"{FINAL_MASK_FILE}.mat", bundle)
        outputs.append(f"{FINAL_MASK_FILE}.mat")
        images = {f"{FINAL_MASK_FILE}.png": final}
        for folder, mask, warped in zip(folders, per_seq, aligned, strict=True):
            images[f"{folder.name}_valid_idx.png"] = mask
            images[f"{folder.name}_valid_idx_aligned.png"] = warped
        if _save_pngs(final_dir, images):
            outputs.extend(images)
        write_status(
            final_dir,
            "stage3",
            options_hash=digest,
            outputs=outputs,
            inputs=inputs,
            middle_idx=middle_idx,
            valid_pixels=int(final.sum()),
            seconds=round(time.perf_counter() - tic, 3),
        )
    logger.info(
        "stage 3: final mask %d of %d pixels valid (%.1f %%)",
        int(final.sum()),
        final.size,
        100.0 * final.mean(),
    )
    return final


def _digest(fields: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for w in fields:
        h.update(np.ascontiguousarray(w, np.float32).tobytes())
    return h.hexdigest()


def _extension(fmt: str) -> str:
    from ..motion_correction._option_checks import OUTPUT_EXTENSIONS

    ext = OUTPUT_EXTENSIONS.get(fmt.upper(), "")
    if not ext:
        raise ValueError(f"align_output_format {fmt!r} does not write files")
    return ext


def _save_mat(path: Path, bundle: dict) -> None:
    from scipy.io import savemat

    data = dict(bundle)
    data["middle_idx"] = np.int64(bundle["middle_idx"]) + 1  # MATLAB is 1-based
    for key in ("compensated_h5_paths", "aligned_video_paths"):
        data[key] = np.array(list(bundle[key]), dtype=object)  # a cell array of strings
    atomic_write(path, lambda fh: savemat(fh, data, do_compression=True))


def _save_pngs(folder: Path, images: dict[str, np.ndarray]) -> bool:
    """Write boolean masks as black-and-white PNGs; False (with a warning) without matplotlib."""
    try:
        from matplotlib.image import imsave
    except ImportError:
        warnings.warn(
            f"stage 3 writes its PNG images with matplotlib, which is not installed "
            f"({PLOT_HINT}); the .npz and .mat results are complete without them",
            UserWarning,
            stacklevel=3,
        )
        return False
    for name, mask in images.items():
        image = np.asarray(mask, np.uint8) * 255
        atomic_write(
            folder / name,
            lambda fh, image=image: imsave(fh, image, cmap="gray", vmin=0, vmax=255, format="png"),
        )
    return True


def _replace(tmp: Path, target: Path) -> None:
    if target.is_dir():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
