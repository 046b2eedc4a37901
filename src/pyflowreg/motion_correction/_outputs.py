"""Output files of a run, written atomically.

Every output is first written under a hidden temporary name in the output folder,
``.<name>.partial`` (e.g. ``.compensated.h5.partial``), and moved into place with
:func:`os.replace` only by :meth:`AtomicOutputs.commit`, after the whole run
completed. :meth:`AtomicOutputs.abort` closes what is open and deletes the
temporary files, so a failed or interrupted run never leaves an output that looks
complete. Files of an earlier run with the same names stay untouched until a new
run commits.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class AtomicOutputs:
    """Temporary output files of a run, renamed into place together on success.

    Parameters
    ----------
    output_path : Path
        Folder of the outputs (created when missing).
    """

    def __init__(self, output_path: Path) -> None:
        self.output_path = Path(output_path)
        self.output_path.mkdir(parents=True, exist_ok=True)
        self._pending: dict[str, tuple[Path, Path]] = {}
        self._writers: list[Any] = []

    def partial_path(self, final_name: str) -> Path:
        """Temporary path of the output ``final_name``."""
        return self.output_path / f".{final_name}.partial"

    def _register(self, key: str, final_name: str) -> Path:
        if key in self._pending:
            raise ValueError(f"output {key!r} is already open")
        partial = self.partial_path(final_name)
        _remove(partial)  # left over by a run that was killed
        self._pending[key] = (partial, self.output_path / final_name)
        return partial

    def video_writer(self, key: str, final_name: str, output_format: str, **kwargs):
        """Open a video writer (``pyflowreg.io.open_writer``) on a temporary path."""
        from ..io import open_writer

        partial = self._register(key, final_name)
        writer = open_writer(partial, format=output_format, **kwargs)
        self._writers.append(writer)
        return writer

    def write_file(self, key: str, final_name: str, write: Callable[[Path], None]) -> None:
        """Write a small output now, with ``write(temporary_path)``."""
        write(self._register(key, final_name))

    def write_json(self, key: str, final_name: str, data: dict) -> None:
        """Write ``data`` as indented JSON."""

        def write(path: Path) -> None:
            path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")

        self.write_file(key, final_name, write)

    def write_npz(self, key: str, final_name: str, arrays: dict[str, np.ndarray]) -> None:
        """Write arrays to an uncompressed ``.npz``."""

        def write(path: Path) -> None:
            with open(path, "wb") as fh:
                np.savez(fh, **arrays)

        self.write_file(key, final_name, write)

    def write_tiff(self, key: str, final_name: str, image: np.ndarray) -> None:
        """Write one float32 image ``(H, W)`` or ``(H, W, C)`` (channels as samples)."""
        import tifffile

        image = np.ascontiguousarray(image, dtype=np.float32)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]

        def write(path: Path) -> None:
            with open(path, "wb") as fh:
                tifffile.imwrite(fh, image, photometric="minisblack", planarconfig="contig")

        self.write_file(key, final_name, write)

    def close_writers(self) -> None:
        """Close all video writers (finalising their files)."""
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.close()

    def commit(self) -> dict[str, Path]:
        """Close the writers and move every output into place; returns key -> final path."""
        self.close_writers()
        done = {}
        for key, (partial, final) in self._pending.items():
            if not partial.exists():  # a writer that received no frame leaves no file
                continue
            _remove(final)
            os.replace(partial, final)
            done[key] = final
        self._pending = {}
        return done

    def abort(self) -> None:
        """Close what is open (ignoring errors) and delete every temporary output."""
        writers, self._writers = self._writers, []
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.close()
        for partial, _ in self._pending.values():
            with contextlib.suppress(OSError):
                _remove(partial)
        self._pending = {}


def _remove(path: Path) -> None:
    """Delete a file or a folder (Zarr stores are folders) if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class BinnedWriter:
    """Average every ``bin_size`` consecutive frames before writing (temporal binning).

    Frames are carried over between ``write`` calls, so batches need not be multiples of
    ``bin_size``; :meth:`flush` writes the last, possibly shorter, bin. Integer outputs
    are rounded and clipped to ``dtype``. With ``bin_size == 1`` frames pass unchanged.
    """

    def __init__(self, writer, bin_size: int, dtype: np.dtype) -> None:
        self.writer = writer
        self.bin_size = int(bin_size)
        self.dtype = np.dtype(dtype)
        self._carry: np.ndarray | None = None

    def write(self, frames: np.ndarray) -> None:
        if self.bin_size == 1:
            self.writer.write(frames)
            return
        if self._carry is not None:
            frames = np.concatenate([self._carry, frames])
        n_full = (len(frames) // self.bin_size) * self.bin_size
        if n_full:
            self.writer.write(self._bin(frames[:n_full]))
        self._carry = frames[n_full:] if n_full < len(frames) else None

    def flush(self) -> None:
        if self._carry is not None and len(self._carry):
            self.writer.write(self._bin(self._carry, len(self._carry)))
        self._carry = None

    def _bin(self, frames: np.ndarray, size: int | None = None) -> np.ndarray:
        size = size or self.bin_size
        shape = (len(frames) // size, size, *frames.shape[1:])
        mean = frames.reshape(shape).mean(axis=1, dtype=np.float64)
        if self.dtype.kind in "ui":
            info = np.iinfo(self.dtype)
            return np.clip(np.rint(mean), info.min, info.max).astype(self.dtype)
        return mean.astype(self.dtype)


def valid_mask(w: np.ndarray) -> np.ndarray:
    """Pixels whose sampling position lies inside the frame.

    Parameters
    ----------
    w : ndarray, shape (T, H, W, 2)
        Displacement fields (``u`` along x, ``v`` along y), in pixels.

    Returns
    -------
    ndarray, shape (T, H, W), uint8
        1 where ``0 <= x + u <= W - 1`` and ``0 <= y + v <= H - 1``, else 0.
    """
    _, h, width, _ = w.shape
    x = np.arange(width, dtype=np.float32)[None, None, :] + w[..., 0]
    y = np.arange(h, dtype=np.float32)[None, :, None] + w[..., 1]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= h - 1)
    return inside.astype(np.uint8)
