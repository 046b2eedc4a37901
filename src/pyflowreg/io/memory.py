"""In-memory videos: a reader over an ndarray, a writer that collects frames, a null writer."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from pyflowreg.io.arrays import ArraySourceReader
from pyflowreg.io.base import PathType, ReaderSpec, VideoWriter

__all__ = ["ArrayReader", "ArrayWriter", "NullWriter"]


class ArrayReader(ArraySourceReader):
    """Read frames from an array in memory.

    Parameters
    ----------
    array : array-like
        ``(T, H, W)``, ``(T, H, W, C)`` or a single frame ``(H, W)``; other storage orders with
        ``axis_order``. The reader returns copies: the pipeline never modifies ``array``.
    axis_order : str, optional
        Letters from ``"TYXC"``, see :func:`pyflowreg.io.arrays.parse_axis_order`.
    bin_size : int
        Temporal binning, see :class:`~pyflowreg.io.base.VideoReader`.
    """

    format_name: ClassVar[str] = "ARRAY"

    def __init__(self, array: Any, *, axis_order: str | None = None, bin_size: int = 1) -> None:
        array = np.asarray(array)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"the video array must be numeric, got dtype {array.dtype}")
        self.array = array
        super().__init__(
            None, [array], axis_order, bin_size=bin_size, options={"axis_order": axis_order}
        )

    @property
    def spec(self) -> ReaderSpec:
        options = {**self._options, "bin_size": self.bin_size}
        return ReaderSpec("ARRAY", self.array, options, opener=ArrayReader)

    def _close(self) -> None:
        super()._close()
        self.array = None


class ArrayWriter(VideoWriter):
    """Collect written frames in memory; :attr:`result` is the ``(T, H, W, C)`` array.

    Parameters
    ----------
    path : ignored
        Accepted so that ``open_writer(path, format="ARRAY")`` works; nothing is written to disk.
    expected_frames : int, optional
        If given, the result array is allocated once with this many frames (grown if exceeded)
        instead of concatenating batches at the end.
    """

    format_name: ClassVar[str] = "ARRAY"
    needs_path: ClassVar[bool] = False

    def __init__(self, path: PathType | None = None, *, expected_frames: int | None = None) -> None:
        super().__init__(path, expected_frames=expected_frames)
        self._buffer: np.ndarray | None = None
        self._batches: list[np.ndarray] = []

    def _setup(self, frame_shape: tuple[int, int, int], dtype: np.dtype) -> None:
        if self.expected_frames:
            self._buffer = np.empty((self.expected_frames, *frame_shape), dtype=dtype)

    def _write(self, frames: np.ndarray) -> None:
        start, stop = self.frames_written, self.frames_written + frames.shape[0]
        if self._buffer is not None and stop <= self._buffer.shape[0]:
            self._buffer[start:stop] = frames
            return
        if self._buffer is not None:
            self._batches = [self._buffer[:start]]
            self._buffer = None
        self._batches.append(frames.copy())

    @property
    def result(self) -> np.ndarray:
        """All frames written so far, ``(frames_written, H, W, C)``."""
        if self._frame_shape is None:
            raise ValueError("no frames have been written to this ArrayWriter")
        if self._buffer is not None:
            return self._buffer[: self.frames_written]
        if not self._batches:
            return np.empty((0, *self._frame_shape), dtype=self._dtype)
        if len(self._batches) != 1:
            self._batches = [np.concatenate(self._batches, axis=0)]
        return self._batches[0]

    def get_array(self) -> np.ndarray:
        """All frames written so far, ``(frames_written, H, W, C)``: :attr:`result`."""
        return self.result


class NullWriter(VideoWriter):
    """Check and count frames, then discard them (for outputs nobody asked for)."""

    format_name: ClassVar[str] = "NULL"
    needs_path: ClassVar[bool] = False

    def __init__(self, path: PathType | None = None, *, expected_frames: int | None = None) -> None:
        super().__init__(path, expected_frames=expected_frames)

    def _setup(self, frame_shape: tuple[int, int, int], dtype: np.dtype) -> None:
        """Nothing to create."""

    def _write(self, frames: np.ndarray) -> None:
        """Discard the frames."""
