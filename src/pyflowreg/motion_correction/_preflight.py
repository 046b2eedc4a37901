"""Checks of a run's inputs and output folder, done before any work.

Everything that can be known to fail from the inputs alone fails here, before a worker starts or
an output is opened, as a ``ValueError``, ``TypeError`` or ``OSError`` (subclass) whose message
names the file and what is wrong: the video's shape and dtype, NaN or inf values in a
floating-point video (one bounded read pass over the frames), reference frames outside the video,
a reference image or weight map of the wrong shape, per-channel options that do not fit the
channels, an output path that is a file or cannot be written, and too little free disk space for
the outputs (estimated from the shape, dtype and format).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np

from ._engine import output_dtype
from ._source import check_finite_frames
from .reference import as_reference_image

#: Bytes kept free beyond the estimate (file-system metadata, headers, statistics).
SPACE_MARGIN = 16 << 20


class InsufficientSpaceError(OSError):
    """Not enough free disk space for a run's outputs (``errno.ENOSPC``)."""


def check_video(reader, options, name: str) -> None:
    """The video has frames, a registrable dtype, and fits the per-channel options."""
    t, h, w, c = (int(s) for s in reader.shape)
    dtype = np.dtype(reader.dtype)
    if dtype.kind == "b":
        raise TypeError(
            f"{name} holds a boolean video (dtype bool); motion correction needs intensities: "
            "integers or floating-point numbers"
        )
    if dtype.kind not in "iuf":
        raise TypeError(f"{name} holds dtype {dtype}; expected integers or floating-point numbers")
    if t < 1:
        raise ValueError(f"{name} has no frames (shape {tuple(reader.shape)})")
    if h < 2 or w < 2:
        raise ValueError(f"{name} has frames of {h} x {w} pixels; at least 2 x 2 are needed")
    try:
        options.sigma_for_channels(c)
        options.channel_weights(c)
    except ValueError as exc:
        raise ValueError(f"{exc} ({name})") from None
    weight = options.weight
    if isinstance(weight, np.ndarray):
        if weight.shape[:2] != (h, w) or (weight.ndim == 3 and weight.shape[2] != c):
            raise ValueError(
                f"weight map has shape {weight.shape} but the frames of {name} are {(h, w, c)} "
                "(H, W, C); give an (H, W) or (H, W, C) map"
            )


def check_reference(reader, options, reference, name: str) -> np.ndarray | None:
    """The given reference image ``(H, W, C)`` float32 (checked), or None; reference frame
    indices must lie inside the video."""
    frame_shape = tuple(int(s) for s in reader.shape[1:])
    given = reference
    if given is None and options.reference_is_image:
        given = options.reference_frames
    if given is not None:
        what = f"reference {given}" if isinstance(given, str | Path) else "reference image"
        try:
            return as_reference_image(given, frame_shape)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{what} for {name}: {exc}") from None
    try:
        options.resolved_reference_frames(int(reader.shape[0]))
    except ValueError as exc:
        raise ValueError(f"{exc} ({name})") from None
    return None


def check_finite(reader, name: str, chunk: int) -> None:
    """Every frame of a floating-point video is finite (read in chunks of ``chunk`` frames)."""
    if np.dtype(reader.dtype).kind != "f":
        return
    n = int(reader.shape[0])
    for start in range(0, n, max(1, int(chunk))):
        check_finite_frames(np.asarray(reader.read(start, min(n, start + chunk))), name, start)


def check_not_overwriting_input(options, inputs: list[Path]) -> None:
    """No output may replace an input file (the folder of a run may hold its input)."""
    if options.output_format in ("ARRAY", "NULL") or not inputs:
        return
    folder = Path(options.output_path)
    ext = options.output_extension
    names = [options.output_file.name, options.w_output[0], "valid_mask" + ext]
    names += ["statistics.npz", "reference.tif", "reference_frame.npy", "idx.hdf", "options.json"]
    targets = {_resolve(folder / n): n for n in names}
    for path in inputs:
        hit = targets.get(_resolve(path))
        if hit is not None:
            raise ValueError(
                f"the output {hit} in {folder} would replace the input file {path}; choose "
                "another output_path or move the input"
            )


def _resolve(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except OSError:
        return Path(path).absolute()


def estimate_output_bytes(options, shape, dtype) -> dict[str, int]:
    """Bytes each output will take (uncompressed): ``{name: bytes}``."""
    t, h, w, c = (int(s) for s in shape)
    if options.output_format in ("ARRAY", "NULL"):
        sizes: dict[str, int] = {}
    else:
        # the reader bins the input in time (bin_size): its shape is what is registered
        sizes = {"compensated": t * h * w * c * output_dtype(options, dtype).itemsize}
        if options.save_w:
            sizes["w"] = t * h * w * 2 * 4
        if options.save_valid_mask:
            sizes["valid_mask"] = t * h * w
        if getattr(options, "save_valid_idx", False):
            sizes["idx"] = t * h * w
    if options.save_meta_info:
        sizes["statistics"] = t * 64
        sizes["reference"] = 2 * h * w * c * 4  # reference.tif and reference_frame.npy
    return sizes


def os_error(cls: type[OSError], code: int | None, message: str) -> OSError:
    """``cls(message)`` with ``errno`` set: ``str()`` is the message alone."""
    exc = cls(message)
    exc.errno = code
    return exc


def writable(path: Path) -> bool:
    """Whether files can be created in the folder ``path``."""
    return os.access(path, os.W_OK | os.X_OK)


def free_bytes(path: Path) -> int:
    """Free bytes on the file system of ``path`` (or of its nearest existing parent)."""
    return shutil.disk_usage(_existing_parent(path)).free


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def check_output_folder(path: Path, needed: dict[str, int] | None = None) -> Path:
    """Create the output folder; it must be a writable folder with room for ``needed`` bytes."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise os_error(
            NotADirectoryError, errno.ENOTDIR, f"output_path {path} is a file, not a folder"
        )
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise os_error(
            NotADirectoryError,
            errno.ENOTDIR,
            f"cannot create the output folder {path}: {blocker} is a file, not a folder",
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"cannot create the output folder {path} ({exc.strerror or exc})"
        raise os_error(type(exc), exc.errno, message) from exc
    if not writable(path):
        raise os_error(PermissionError, errno.EACCES, f"output folder {path} is not writable")
    if needed:
        total = sum(needed.values()) + SPACE_MARGIN
        free = free_bytes(path)
        if free < total:
            parts = ", ".join(f"{k} {_size(v)}" for k, v in needed.items())
            raise os_error(
                InsufficientSpaceError,
                errno.ENOSPC,
                f"not enough free disk space in {path} for the outputs: about {_size(total)} "
                f"needed ({parts}), {_size(free)} free",
            )
    return path


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
