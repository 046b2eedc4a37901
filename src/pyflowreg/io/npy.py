"""NumPy ``.npy`` videos: memory-mapped reads, streaming appends.

The writer streams frames straight into the target file behind a header of fixed, reserved
length that says ``T = 0`` until :meth:`NPYWriter.close` rewrites it with the final shape. Memory
use is one batch, whatever the video length; no side file is created; a file from an interrupted
run loads as an empty ``(0, H, W, C)`` array instead of looking complete.
"""

from __future__ import annotations

import struct
from typing import IO, ClassVar

import numpy as np

from pyflowreg.io.arrays import ArraySourceReader
from pyflowreg.io.base import PathType, VideoWriter, check_input_path, corrupt_file_error

__all__ = ["NPYReader", "NPYWriter"]

_MAGIC = b"\x93NUMPY"
_ALIGN = 64
_MAX_T = 2**63 - 1  # widest placeholder, reserves room for any final frame count


class NPYReader(ArraySourceReader):
    """Read a video stored with :func:`numpy.save`, memory-mapped (only read frames are loaded).

    Parameters
    ----------
    path : path-like
        The ``.npy`` file: ``(T, H, W)``, ``(T, H, W, C)`` or one frame ``(H, W)``.
    axis_order : str, optional
        Storage order, letters from ``"TYXC"``.
    bin_size : int
        Temporal binning, see :class:`~pyflowreg.io.base.VideoReader`.
    """

    format_name: ClassVar[str] = "NPY"

    def __init__(self, path: PathType, *, axis_order: str | None = None, bin_size: int = 1) -> None:
        path = check_input_path(path)
        dtype, shape = _header_of(path)
        if dtype is not None and dtype.kind not in "biuf":
            raise TypeError(
                f"'{path}' holds dtype {dtype} (shape {shape}); a video is a 3-D (T, H, W) or "
                "4-D (T, H, W, C) array of integers or floating-point numbers"
            )
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise corrupt_file_error(path, exc) from exc
        if not isinstance(array, np.ndarray):
            raise corrupt_file_error(path, "not a .npy array")
        super().__init__(
            path, [array], axis_order, bin_size=bin_size, options={"axis_order": axis_order}
        )


def _header_of(path: PathType) -> tuple[np.dtype | None, tuple[int, ...] | None]:
    """Dtype and shape from the header of a ``.npy`` file, ``(None, None)`` if unreadable
    (``np.load`` then reports the damage)."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(fh)
    except (ValueError, OSError, EOFError, SyntaxError):
        return None, None
    return np.dtype(dtype), tuple(shape)


def _header(dtype: np.dtype, shape: tuple[int, ...], length: int | None = None) -> bytes:
    """NPY v1.0/v2.0 header for ``shape``, padded to ``length`` bytes (or to the alignment)."""
    text = (
        f"{{'descr': {np.lib.format.dtype_to_descr(dtype)!r}, 'fortran_order': False, "
        f"'shape': {tuple(int(s) for s in shape)!r}, }}"
    )
    body = text.encode("latin1")
    for version, size_format in (((1, 0), "<H"), ((2, 0), "<I")):
        prefix_len = len(_MAGIC) + 2 + struct.calcsize(size_format)
        total = length or -(-(prefix_len + len(body) + 1) // _ALIGN) * _ALIGN
        header_len = total - prefix_len
        if header_len < 2**16 or version == (2, 0):
            padded = body + b" " * (header_len - len(body) - 1) + b"\n"
            return _MAGIC + bytes(version) + struct.pack(size_format, header_len) + padded
    raise AssertionError("unreachable")


class NPYWriter(VideoWriter):
    """Append frames to a ``.npy`` file holding a ``(T, H, W, C)`` array (C-order, native dtype).

    Parameters
    ----------
    path : path-like
        Output file, created (or overwritten) at the first write.
    expected_frames : int, optional
        Hint, unused by this format.
    """

    format_name: ClassVar[str] = "NPY"

    def __init__(self, path: PathType, *, expected_frames: int | None = None) -> None:
        super().__init__(path, expected_frames=expected_frames)
        self._fh: IO[bytes] | None = None
        self._header_len = 0

    def _setup(self, frame_shape: tuple[int, int, int], dtype: np.dtype) -> None:
        reserved = _header(dtype, (_MAX_T, *frame_shape))
        self._header_len = len(reserved)
        self._fh = open(self.path, "wb")  # closed in _close
        self._fh.write(_header(dtype, (0, *frame_shape), self._header_len))

    def _write(self, frames: np.ndarray) -> None:
        self._fh.write(memoryview(frames).cast("B"))

    resumable: ClassVar[bool] = True

    def _flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def _resume(self, frames: int) -> tuple[tuple[int, int, int], np.dtype]:
        path = check_input_path(self.path)
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(fh)
            header_len = fh.tell()
        dtype = np.dtype(dtype)
        if len(shape) != 4 or header_len != len(_header(dtype, (_MAX_T, *shape[1:]))):
            raise ValueError(f"'{path}' was not written by NPYWriter; cannot resume it")
        frame_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        end = header_len + frames * frame_bytes
        if path.stat().st_size < end:
            raise ValueError(f"'{path}' holds fewer than {frames} frames; cannot resume it")
        self._fh = open(path, "r+b")  # closed in _close
        self._fh.truncate(end)
        self._fh.seek(end)
        self._header_len = header_len
        return tuple(shape[1:]), dtype

    def _close(self) -> None:
        if self._fh is None:
            return
        try:
            self._fh.flush()
            self._fh.seek(0)
            shape = (self.frames_written, *self._frame_shape)
            self._fh.write(_header(self._dtype, shape, self._header_len))
            self._fh.flush()
        finally:
            self._fh.close()
            self._fh = None
