"""The video interface every format implements: :class:`VideoReader` and :class:`VideoWriter`.

Videos are ``(T, H, W, C)`` arrays, channel last; frames are ``(H, W, C)``. Readers return
native-endian NumPy arrays that the caller owns (never views into the file or into a wrapped
array). Writers take the frame shape and dtype from their first write.
"""

from __future__ import annotations

import operator
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "CorruptFileError",
    "DatasetNotFoundError",
    "ReaderSpec",
    "VideoReader",
    "VideoWriter",
    "native_dtype",
]

PathType = str | PathLike


class CorruptFileError(OSError, ValueError):
    """A file exists but cannot be read: truncated, damaged or not in the format it claims.

    It is both an ``OSError`` and a ``ValueError``, so either ``except`` clause catches it.
    """


class DatasetNotFoundError(KeyError, ValueError):
    """A requested dataset or variable is not in the file; the message lists the available ones.

    It is both a ``KeyError`` and a ``ValueError`` (the file's content is not what was asked for).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def corrupt_file_error(path: PathType | None, detail: object) -> CorruptFileError:
    """Build the error raised for a file that cannot be parsed; the message names the file."""
    return CorruptFileError(f"'{path}' is corrupt or unreadable: {detail}")


def native_dtype(dtype: np.typing.DTypeLike) -> np.dtype:
    """Return ``dtype`` in native byte order (``'>u2'`` -> ``'<u2'`` on little-endian hosts)."""
    dtype = np.dtype(dtype)
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def check_input_path(path: PathType) -> Path:
    """Return ``path`` as a :class:`~pathlib.Path`, or raise ``FileNotFoundError`` naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input file not found: '{path}'")
    if not readable(path):
        raise PermissionError(f"input file is not readable (permission denied): '{path}'")
    return path


def readable(path: Path) -> bool:
    """Whether this process may read ``path`` (and list it, for a folder such as a Zarr store)."""
    return os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0))


def _check_bin_size(bin_size: int) -> int:
    if isinstance(bin_size, bool) or not isinstance(bin_size, int | np.integer):
        raise TypeError(f"bin_size must be an int, got {type(bin_size).__name__}")
    if bin_size < 1:
        raise ValueError(f"bin_size must be >= 1, got {bin_size}")
    return int(bin_size)


@dataclass(frozen=True)
class ReaderSpec:
    """A small picklable description of a reader: enough for a worker process to open its own.

    Attributes
    ----------
    format : str or None
        Format name (``"HDF5"``, ``"TIFF"``, ...); ``None`` for multi-file sources.
    source : str, list of str or ndarray
        The path(s), or the array itself for the ``ARRAY`` format.
    options : dict
        Keyword arguments of the reader.
    opener : callable, optional
        Picklable ``opener(source, **options) -> VideoReader``, usually the reader class. A spec
        without one is opened by ``pyflowreg.io.open_reader(spec)`` from its ``format`` (this
        module does not import the format table: the factory sits above the readers).
    """

    format: str | None
    source: Any
    options: Mapping[str, Any] = field(default_factory=dict)
    opener: Callable[..., VideoReader] | None = field(default=None, compare=False)

    def open(self) -> VideoReader:
        """Open a new reader from this description."""
        if self.opener is None:
            raise ValueError(
                f"this ReaderSpec has no opener; open it with pyflowreg.io.open_reader("
                f"spec.source, format={self.format!r}, **spec.options) or pass it to open_reader"
            )
        return self.opener(self.source, **dict(self.options))


def _open_spec(spec: ReaderSpec) -> VideoReader:
    return spec.open()


class VideoReader(ABC):
    """Random access to the frames of a video, as ``(n, H, W, C)`` arrays.

    Subclasses set ``_raw_shape`` (frames before binning, ``(T, H, W, C)``) and ``_raw_dtype``
    (native byte order), and implement :meth:`_read_raw`.

    Temporal binning: with ``bin_size = b > 1`` output frame ``i`` is the mean of raw frames
    ``i*b ... i*b + b - 1``; the reader has ``T // b`` frames (a trailing partial bin is dropped)
    and its dtype is ``np.result_type(raw dtype, float32)`` (float32 for 8/16-bit input, float64 for
    32-bit integers and float64). With ``bin_size = 1`` frames are returned unchanged.
    """

    format_name: ClassVar[str] = ""
    _raw_shape: tuple[int, int, int, int]
    _raw_dtype: np.dtype

    def __init__(
        self, path: PathType | None, *, bin_size: int = 1, options: Mapping[str, Any] | None = None
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.bin_size = _check_bin_size(bin_size)
        self._options = dict(options or {})
        self._closed = False
        self._buffer_size = 500
        self._cursor = 0

    # -- to implement -------------------------------------------------------------------------
    @abstractmethod
    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        """Raw (unbinned) frames ``start:stop`` as a fresh native ``(n, H, W, C)`` array."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release files and handles (called once)."""

    # -- geometry -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(T, H, W, C)`` after binning."""
        t, h, w, c = self._raw_shape
        return (t // self.bin_size, h, w, c)

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the returned frames (native byte order)."""
        if self.bin_size == 1:
            return self._raw_dtype
        return np.result_type(self._raw_dtype, np.float32)

    @property
    def n_channels(self) -> int:
        return self._raw_shape[3]

    @property
    def height(self) -> int:
        return self._raw_shape[1]

    @property
    def width(self) -> int:
        return self._raw_shape[2]

    @property
    def frame_count(self) -> int:
        """Number of frames after binning (``len(reader)``)."""
        return len(self)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)``."""
        return tuple(self._raw_shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.shape[0]

    # -- reading --------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"I/O operation on a closed reader ({self.path})")

    def _read_frames(self, start: int, stop: int) -> np.ndarray:
        b = self.bin_size
        if b == 1:
            return self._read_raw(start, stop)
        raw = self._read_raw(start * b, stop * b)
        binned = raw.reshape(stop - start, b, *raw.shape[1:]).mean(axis=1, dtype=np.float64)
        return binned.astype(self.dtype, copy=False)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Read frames ``start:stop`` (after binning).

        Parameters
        ----------
        start : int
            First frame, ``0 <= start <= len(self)``.
        stop : int, optional
            One past the last frame; clipped to ``len(self)``. Default: the end.

        Returns
        -------
        ndarray, shape (stop - start, H, W, C)
        """
        self._check_open()
        n = len(self)
        start = operator.index(start)
        stop = n if stop is None else operator.index(stop)
        if not 0 <= start <= n:
            raise IndexError(
                f"read(start={start}, stop={stop}): start must be in [0, {n}] for {self.path}"
            )
        if stop < start:
            raise IndexError(f"read(start={start}, stop={stop}): stop must be >= start")
        return self._read_frames(start, min(stop, n))

    def _take(self, indices: np.ndarray) -> np.ndarray:
        """Frames at valid non-negative ``indices`` (any order, repeats allowed)."""
        if indices.size == 0:
            return np.empty((0, *self.frame_shape), dtype=self.dtype)
        unique = np.unique(indices)
        breaks = np.flatnonzero(np.diff(unique) != 1) + 1
        runs = np.split(unique, breaks)
        blocks = [self._read_frames(int(r[0]), int(r[-1]) + 1) for r in runs]
        stacked = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        if unique.size == indices.size and np.array_equal(unique, indices):
            return stacked
        return stacked[np.searchsorted(unique, indices)]

    def _normalize_index_array(self, key: Any) -> np.ndarray:
        arr = np.asarray(key)
        n = len(self)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise IndexError(f"boolean index must have shape ({n},), got {arr.shape}")
            return np.flatnonzero(arr)
        if arr.size == 0:
            return np.empty(0, dtype=np.intp)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise IndexError(
                f"frame index arrays must be 1-D integers, got {arr.dtype} {arr.shape}"
            )
        out = arr.astype(np.intp)
        out = np.where(out < 0, out + n, out)
        bad = (out < 0) | (out >= n)
        if bad.any():
            raise IndexError(f"frame index {arr[bad][0]} is out of range for a video of {n} frames")
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        """Index frames like a ``(T, H, W, C)`` array.

        ``reader[i]`` is one frame ``(H, W, C)``; ``reader[a:b:s]``, ``reader[[i, j]]`` and boolean
        masks give ``(n, H, W, C)``. Further indices (``reader[0:5, ..., 0]``) apply to the result.
        """
        self._check_open()
        if isinstance(key, tuple):
            if not key:
                return self[...]
            head, rest = key[0], key[1:]
            out = self[head]
            if not rest:
                return out
            if isinstance(head, int | np.integer):
                return out[rest]
            return out[(slice(None), *rest)]
        n = len(self)
        if key is Ellipsis:
            return self._read_frames(0, n)
        if isinstance(key, int | np.integer) and not isinstance(key, bool):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"frame index {i} is out of range for a video of {n} frames")
            i %= n
            return self._read_frames(i, i + 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._read_frames(start, max(start, stop))
            return self._take(np.arange(start, stop, step, dtype=np.intp))
        if isinstance(key, list | np.ndarray | range):
            return self._take(self._normalize_index_array(key))
        raise TypeError(
            f"frame indices must be int, slice, integer array or boolean mask, "
            f"got {type(key).__name__}"
        )

    def iter_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield consecutive ``(n <= batch_size, H, W, C)`` blocks covering the whole video."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            yield self.read(start, start + batch_size)

    # -- batches of buffer_size frames (PyFlowReg's reader interface) ---------------------------
    @property
    def buffer_size(self) -> int:
        """Frames (after binning) per batch of :meth:`read_batch` and of iteration (default 500)."""
        return self._buffer_size

    @buffer_size.setter
    def buffer_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"buffer_size must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"buffer_size must be >= 1, got {value}")
        self._buffer_size = int(value)

    @property
    def current_frame(self) -> int:
        """Index of the first frame the next :meth:`read_batch` returns."""
        return self._cursor

    def has_batch(self) -> bool:
        """True while :meth:`read_batch` has frames left to return."""
        return self._cursor < len(self)

    def read_batch(self) -> np.ndarray:
        """The next ``(n <= buffer_size, H, W, C)`` frames; ``n == 0`` once the video is done."""
        start = self._cursor
        block = self.read(start, start + self._buffer_size)
        self._cursor = start + block.shape[0]
        return block

    def reset(self) -> None:
        """Rewind :meth:`read_batch` to the first frame."""
        self._cursor = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        """Batches of :attr:`buffer_size` frames over the whole video (independent of
        :meth:`read_batch`'s position; each ``for`` loop starts at frame 0)."""
        return self.iter_batches(self._buffer_size)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """``np.asarray(reader)``: all frames, ``(T, H, W, C)`` (always a copy)."""
        if copy is False:
            raise ValueError("a video reader cannot be turned into an array without a copy")
        frames = self[:]
        return frames if dtype is None else frames.astype(dtype, copy=False)

    # -- lifetime -------------------------------------------------------------------------------
    @property
    def spec(self) -> ReaderSpec:
        """Picklable description from which :meth:`reopen` (or a worker process) opens a twin."""
        source = str(self.path) if self.path is not None else None
        options = {**self._options, "bin_size": self.bin_size}
        return ReaderSpec(self.format_name, source, options, opener=type(self))

    def reopen(self) -> VideoReader:
        """Open an independent reader on the same source with the same options."""
        return self.spec.open()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_open_spec, (self.spec,), {"_buffer_size": self._buffer_size})

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the file; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return (
            f"<{type(self).__name__} {self.path or '<memory>'} shape={self.shape} "
            f"dtype={self.dtype}{state}>"
        )


class VideoWriter(ABC):
    """Appends ``(n, H, W, C)`` blocks of frames to an output.

    The frame shape and dtype are fixed by the first :meth:`write`; later writes must have the same
    frame shape, and a different dtype is accepted only when it casts safely (``np.can_cast(...,
    "safe")``). Data is stored in native byte order; boolean frames are stored as uint8 0/1.

    File-backed writers create their file at the first write (a writer closed before any write
    leaves no file), write only to the path they were given (no side files), and have fully
    flushed and closed it when :meth:`close` returns, so the caller can rename it. ``close`` is
    idempotent and also runs when a ``with`` block exits with an error.
    """

    format_name: ClassVar[str] = ""
    needs_path: ClassVar[bool] = True

    def __init__(self, path: PathType | None, *, expected_frames: int | None = None) -> None:
        if path is None and self.needs_path:
            raise ValueError(f"the {self.format_name} writer needs an output path, got None")
        self.path = Path(path) if path is not None else None
        if self.path is not None and self.needs_path and not self.path.parent.exists():
            raise FileNotFoundError(f"output folder does not exist: '{self.path.parent}'")
        if expected_frames is not None and (
            isinstance(expected_frames, bool) or operator.index(expected_frames) < 0
        ):
            raise ValueError(f"expected_frames must be an int >= 0, got {expected_frames!r}")
        self.expected_frames = expected_frames
        self.frames_written = 0
        self._frame_shape: tuple[int, int, int] | None = None
        self._dtype: np.dtype | None = None
        self._closed = False

    # -- to implement -------------------------------------------------------------------------
    @abstractmethod
    def _setup(self, frame_shape: tuple[int, int, int], dtype: np.dtype) -> None:
        """Create the output for frames of ``frame_shape`` and ``dtype`` (first write)."""

    @abstractmethod
    def _write(self, frames: np.ndarray) -> None:
        """Append a C-contiguous native ``(n >= 1, H, W, C)`` block."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Flush and close the output (called once, also when nothing was written)."""

    def _flush(self) -> None:  # noqa: B027 - optional hook
        """Push the frames written so far to the file (called after the first write)."""

    def _resume(self, frames: int) -> tuple[tuple[int, int, int], np.dtype]:
        """Reopen the file at ``self.path`` keeping its first ``frames`` frames; return its
        frame shape ``(H, W, C)`` and dtype (only where :attr:`resumable`)."""
        raise NotImplementedError

    #: Whether :meth:`resume` can continue a file this writer wrote (HDF5, NPY, Zarr).
    resumable: ClassVar[bool] = False

    def flush(self) -> None:
        """Push the frames written so far to the file, so that a process killed afterwards
        leaves them readable by :meth:`resume` (a checkpoint); no-op before the first write."""
        if self._frame_shape is not None and not self._closed:
            self._flush()

    def resume(self, frames: int) -> None:
        """Continue the file at this writer's path after its first ``frames`` frames.

        The file must have been written (and flushed) by a writer of this class with the same
        options; frames past ``frames`` are dropped. Call before the first :meth:`write`.
        """
        if not self.resumable:
            raise NotImplementedError(f"the {self.format_name} writer cannot resume a file")
        if self._frame_shape is not None:
            raise ValueError("resume() must come before the first write")
        frames = operator.index(frames)
        if frames < 0:
            raise ValueError(f"frames must be >= 0, got {frames}")
        shape, dtype = self._resume(frames)
        self._frame_shape, self._dtype, self.frames_written = tuple(shape), dtype, frames

    # -- interface ------------------------------------------------------------------------------
    @property
    def frame_shape(self) -> tuple[int, int, int] | None:
        """``(H, W, C)`` fixed by the first write (``None`` before it)."""
        return self._frame_shape

    @property
    def dtype(self) -> np.dtype | None:
        return self._dtype

    @property
    def n_channels(self) -> int | None:
        return None if self._frame_shape is None else self._frame_shape[2]

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_frames(self, frames: np.ndarray | Any) -> np.ndarray:
        """Validate ``frames`` against the fixed shape/dtype and return a native 4-D block."""
        if self._closed:
            raise ValueError(f"I/O operation on a closed writer ({self.path})")
        arr = np.asarray(frames)
        if arr.ndim == 2:
            arr = arr[None, :, :, None]
        elif arr.ndim == 3:
            arr = arr[None]
        elif arr.ndim != 4:
            raise ValueError(
                f"frames must be (n, H, W, C), (H, W, C) or (H, W), got shape {arr.shape}"
            )
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"frames must be a numeric array, got dtype {arr.dtype}")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if self._frame_shape is None:
            if min(arr.shape[1:]) < 1:
                raise ValueError(f"frames must have H, W, C >= 1, got shape {arr.shape}")
            return np.ascontiguousarray(arr, dtype=native_dtype(arr.dtype))
        if arr.shape[1:] != self._frame_shape:
            raise ValueError(
                f"frame shape changed: the writer for {self.path or '<memory>'} was set up for "
                f"frames of shape {self._frame_shape} (H, W, C) by its first write, "
                f"got {arr.shape[1:]}"
            )
        if arr.dtype != self._dtype and not np.can_cast(arr.dtype, self._dtype, "safe"):
            raise TypeError(
                f"cannot write frames of dtype {arr.dtype} to {self.path or '<memory>'}: the first "
                f"write fixed the dtype to {self._dtype}; cast the frames first"
            )
        return np.ascontiguousarray(arr, dtype=self._dtype)

    def _ensure_setup(self, frame_shape: tuple[int, int, int], dtype: np.dtype) -> None:
        if self._frame_shape is None:
            self._setup(frame_shape, dtype)
            self._frame_shape = frame_shape
            self._dtype = dtype

    def write(self, frames: np.ndarray) -> None:
        """Append frames.

        Parameters
        ----------
        frames : ndarray, shape (n, H, W, C), (H, W, C) or (H, W)
            A 3-D array is one frame with channels, a 2-D array one single-channel frame.
        """
        arr = self._check_frames(frames)
        self._ensure_setup(tuple(arr.shape[1:]), arr.dtype)  # type: ignore[arg-type]
        if arr.shape[0]:
            self._write(arr)
            self.frames_written += arr.shape[0]

    #: Most channels a 3-D block given to :meth:`write_frames` before the first frame may have
    #: to be read as one ``(H, W, C)`` frame rather than ``(T, H, W)`` frames.
    MAX_CHANNELS_3D = 4

    def write_frames(self, frames: np.ndarray) -> None:
        """Append frames (PyFlowReg's name of :meth:`write`), with PyFlowReg's reading of 3-D
        blocks as ``(T, H, W)`` single-channel frames.

        A 3-D array is one ``(H, W, C)`` frame when it has the shape of the frames written so
        far, ``(T, H, W)`` frames when its last two axes are the frame size of a one-channel
        writer; before the first frame, one frame when its last axis has at most
        :data:`MAX_CHANNELS_3D` entries (channels), else ``(T, H, W)`` frames.
        """
        arr = np.asarray(frames)
        if arr.ndim == 3:
            known = self._frame_shape
            if known is None:
                stacked = arr.shape[2] > self.MAX_CHANNELS_3D
            else:
                one_channel_frames = known[2] == 1 and arr.shape[1:] == known[:2]
                stacked = arr.shape != known and one_channel_frames
            if stacked:
                arr = arr[..., None]
        self.write(arr)

    def close(self) -> None:
        """Flush and close the output; safe to call more than once."""
        if not self._closed:
            try:
                self._close()
            finally:
                self._closed = True

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.path or '<memory>'} frames_written="
            f"{self.frames_written} frame_shape={self._frame_shape} dtype={self._dtype}>"
        )
