"""Zarr videos (``pip install "pyflowreg[zarr]"``): ``(T, H, W, C)`` arrays chunked by frames.

The writer appends like every writer, and also supports parallel region writes: one process calls
:meth:`ZarrWriter.create` with the final shape, then each worker opens the store with
``open_writer(path, "ZARR", mode="r+")`` and calls :meth:`ZarrWriter.write_at` for its own frames.
Regions should start and end on multiples of ``chunk_frames`` (the array's chunk length along
``T``), otherwise two workers may rewrite the same chunk at the same time.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from pyflowreg.io.arrays import ArraySourceReader, select_datasets
from pyflowreg.io.base import (
    PathType,
    VideoWriter,
    check_input_path,
    corrupt_file_error,
    native_dtype,
)

__all__ = ["ZarrReader", "ZarrWriter", "import_zarr"]

_CHUNK_BYTES = 4 << 20
_MAX_CHUNK_FRAMES = 64
_MODES = ("w", "r+")


def import_zarr() -> ModuleType:
    """Import zarr, or raise ``ImportError`` with the install command."""
    try:
        return importlib.import_module("zarr")
    except ImportError as exc:
        raise ImportError(
            'the ZARR format needs the zarr package: pip install "pyflowreg[zarr]"'
        ) from exc


def _open(path: PathType, mode: str) -> Any:
    zarr = import_zarr()
    try:
        return zarr.open(str(path), mode=mode)
    except (ValueError, KeyError, OSError, TypeError) as exc:
        if isinstance(exc, FileNotFoundError) and not Path(path).exists():
            raise
        raise corrupt_file_error(path, exc) from exc


class ZarrReader(ArraySourceReader):
    """Read a video from a Zarr array, or from an array inside a Zarr group.

    Parameters
    ----------
    path : path-like
        The store (a ``.zarr`` folder).
    dataset_name : str, optional
        Array inside a group; default: chosen as for HDF5 (``ch1, ch2, ...``, common names,
        the largest 3-D/4-D array).
    dataset_names : sequence of str, optional
        One ``(T, H, W)`` array per channel.
    axis_order : str, optional
        Storage order, letters from ``"TYXC"``.
    bin_size : int
        Temporal binning, see :class:`~pyflowreg.io.base.VideoReader`.
    """

    format_name: ClassVar[str] = "ZARR"

    def __init__(
        self,
        path: PathType,
        *,
        dataset_name: str | None = None,
        dataset_names: list[str] | None = None,
        axis_order: str | None = None,
        bin_size: int = 1,
    ) -> None:
        path = check_input_path(path)
        zarr = import_zarr()
        node = _open(path, "r")
        if isinstance(node, zarr.Array):
            if dataset_name is not None or dataset_names is not None:
                raise ValueError(f"'{path}' is a single array; it has no dataset {dataset_name!r}")
            names, arrays = [], [node]
        else:
            shapes = {
                name: tuple(arr.shape)
                for name, arr in node.arrays()
                if np.dtype(arr.dtype).kind in "biuf"
            }
            names = select_datasets(
                shapes,
                path,
                dataset_name=dataset_name,
                dataset_names=dataset_names,
                dtypes={name: np.dtype(arr.dtype) for name, arr in node.arrays()},
            )
            arrays = [node[name] for name in names]
        options = {"axis_order": axis_order}
        if names:
            options["dataset_names"] = names
        super().__init__(path, arrays, axis_order, bin_size=bin_size, options=options)


class ZarrWriter(VideoWriter):
    """Write a ``(T, H, W, C)`` Zarr array, by appending or by frame regions.

    Parameters
    ----------
    path : path-like
        The store (a ``.zarr`` folder).
    mode : {"w", "r+"}
        ``"w"``: create the array (replacing any store there) at :meth:`create` or the first
        :meth:`write`. ``"r+"``: open an existing array for :meth:`write_at` (parallel workers).
    chunk_frames : int, optional
        Chunk length along ``T``; default: as many frames as fit in about 4 MiB, at most 64.
    expected_frames : int, optional
        Hint, unused by this format.
    """

    format_name: ClassVar[str] = "ZARR"

    def __init__(
        self,
        path: PathType,
        *,
        mode: str = "w",
        chunk_frames: int | None = None,
        expected_frames: int | None = None,
    ) -> None:
        super().__init__(path, expected_frames=expected_frames)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if chunk_frames is not None and chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        import_zarr()
        self.mode = mode
        self.chunk_frames = chunk_frames
        self._array: Any = None
        self._append_pos = 0
        if mode == "r+":
            self._array = _open(check_input_path(path), "r+")
            if len(self._array.shape) != 4:
                raise ValueError(
                    f"'{path}' holds a {len(self._array.shape)}-D array; expected (T, H, W, C)"
                )
            self._frame_shape = tuple(self._array.shape[1:])
            self._dtype = native_dtype(self._array.dtype)
            self.chunk_frames = self._array.chunks[0]

    def _setup(self, frame_shape: tuple[int, int, int], dtype: np.dtype) -> None:
        self.create((0, *frame_shape), dtype)

    def create(self, shape: tuple[int, ...], dtype: np.typing.DTypeLike) -> None:
        """Create the array with its final ``shape`` ``(T, H, W, C)`` (or ``(T, H, W)``).

        Frames are then written with :meth:`write_at` (any order, any process) or appended from
        frame 0 on with :meth:`write` (which grows the array past ``T`` if needed).
        """
        if self._array is not None:
            raise ValueError(f"the Zarr array at '{self.path}' has already been created")
        shape = tuple(int(s) for s in shape)
        if len(shape) == 3:
            shape = (*shape, 1)
        if len(shape) != 4 or min(shape) < 0 or min(shape[1:]) < 1:
            raise ValueError(f"shape must be (T, H, W, C) with H, W, C >= 1, got {shape}")
        dtype = native_dtype(dtype)
        frame_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        k = self.chunk_frames or int(np.clip(_CHUNK_BYTES // frame_bytes, 1, _MAX_CHUNK_FRAMES))
        zarr = import_zarr()
        self._array = zarr.open_array(
            store=str(self.path), mode="w", shape=shape, chunks=(k, *shape[1:]), dtype=dtype
        )
        self.chunk_frames = k
        self._frame_shape = shape[1:]
        self._dtype = dtype

    def _write(self, frames: np.ndarray) -> None:
        start, stop = self._append_pos, self._append_pos + frames.shape[0]
        if stop > self._array.shape[0]:
            self._array.resize((stop, *self._frame_shape))
        self._array[start:stop] = frames
        self._append_pos = stop

    def write_at(self, start: int, frames: np.ndarray) -> None:
        """Write ``frames`` ``(n, H, W, C)`` at frames ``start:start + n`` of the created array.

        The region must lie inside the shape given to :meth:`create`; ``frames_written`` counts
        these frames too.
        """
        if self._array is None:
            raise ValueError("call create(shape, dtype) before write_at()")
        arr = self._check_frames(frames)
        stop = start + arr.shape[0]
        if start < 0 or stop > self._array.shape[0]:
            raise IndexError(
                f"write_at(start={start}) of {arr.shape[0]} frames does not fit the "
                f"{self._array.shape[0]} frames of '{self.path}'"
            )
        self._array[start:stop] = arr
        self.frames_written += arr.shape[0]

    resumable: ClassVar[bool] = True

    def _resume(self, frames: int) -> tuple[tuple[int, int, int], np.dtype]:
        array = _open(check_input_path(self.path), "r+")
        if len(array.shape) != 4 or array.shape[0] < frames:
            raise ValueError(
                f"'{self.path}' holds an array of shape {tuple(array.shape)}; cannot resume "
                f"after frame {frames}"
            )
        array.resize((frames, *array.shape[1:]))
        self._array = array
        self._append_pos = frames
        self.chunk_frames = array.chunks[0]
        return tuple(array.shape[1:]), native_dtype(array.dtype)

    def _close(self) -> None:
        self._array = None
