"""HDF5 videos (h5py): one ``(T, H, W[, C])`` dataset, or one ``(T, H, W)`` dataset per channel.

Reading: the dataset is chosen by ``dataset_name``/``dataset_names`` or automatically (datasets
``ch1, ch2, ...``; else ``mov``, ``data``, ``imaging``, ``input_frames``, ...; else the only or the
largest 3-D/4-D dataset). ``axis_order`` describes other storage orders, e.g. ``"YXT"`` for SIMA's
``(y, x, t)`` files. Big-endian datasets are returned in native byte order.

Writing: ``layout="channels"`` (default) writes one ``(T, H, W)`` dataset per channel named
``ch1, ch2, ...``; ``layout="stacked"`` writes one ``(T, H, W, C)`` dataset ``dataset_name``.
Datasets are chunked by a few frames, resizable along ``T`` (appending) and optionally compressed
(``compression="gzip"`` or ``"lzf"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import h5py
import numpy as np

from pyflowreg.io.arrays import ArraySourceReader, select_datasets
from pyflowreg.io.base import PathType, VideoWriter, check_input_path, corrupt_file_error

__all__ = ["HDF5Reader", "HDF5Writer", "list_datasets"]

_CHUNK_BYTES = 1 << 20
_MAX_CHUNK_FRAMES = 16
_LAYOUTS = ("channels", "stacked")
_COMPRESSIONS = (None, "gzip", "lzf")


def list_datasets(group: h5py.Group, *, skip: Sequence[str] = ()) -> dict[str, tuple[int, ...]]:
    """Every numeric dataset below ``group`` and its shape, by path (``"a/b"``)."""
    found: dict[str, tuple[int, ...]] = {}

    def visit(name: str, obj: Any) -> None:
        if any(name == s or name.startswith(s + "/") for s in skip):
            return
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biuf":
            found[name] = tuple(obj.shape)

    group.visititems(visit)
    return found


def dataset_dtypes(group: h5py.Group, *, skip: Sequence[str] = ()) -> dict[str, np.dtype]:
    """Every dataset below ``group`` and its dtype, by path, numeric or not (for messages)."""
    found: dict[str, np.dtype] = {}

    def visit(name: str, obj: Any) -> None:
        if any(name == s or name.startswith(s + "/") for s in skip):
            return
        if isinstance(obj, h5py.Dataset):
            found[name] = obj.dtype

    group.visititems(visit)
    return found


def open_h5(path: PathType, mode: str = "r", **kwargs: Any) -> h5py.File:
    """Open an HDF5 file; a damaged or non-HDF5 file raises ``CorruptFileError`` naming it."""
    try:
        return h5py.File(path, mode, **kwargs)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise corrupt_file_error(path, exc) from exc


class H5FileReader(ArraySourceReader):
    """A reader over datasets of one open HDF5 file (HDF5 and MAT v7.3 input).

    Subclasses open ``self._file`` with :func:`open_h5` before calling ``super().__init__``;
    read errors of the file (truncated or damaged data) are reported as corrupt files.
    """

    _file: h5py.File

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        try:
            return super()._read_raw(start, stop)
        except OSError as exc:
            raise corrupt_file_error(self.path, exc) from exc

    def _close(self) -> None:
        super()._close()
        self._file.close()


class HDF5Reader(H5FileReader):
    """Read a video from an HDF5 file.

    Parameters
    ----------
    path : path-like
        The ``.h5``/``.hdf5`` file.
    dataset_name : str or sequence of str, optional
        Dataset holding the video (a path inside the file, e.g. ``"acq/mov"``); a list means
        ``dataset_names``.
    dataset_names : sequence of str, optional
        One ``(T, H, W)`` dataset per channel, stacked along ``C`` in this order.
    axis_order : str, optional
        Storage order of the dataset(s), letters from ``"TYXC"``; default ``"TYX"`` for 3-D and
        ``"TYXC"`` for 4-D datasets.
    bin_size : int
        Temporal binning (mean of ``bin_size`` consecutive frames), see :class:`VideoReader`.
    """

    format_name: ClassVar[str] = "HDF5"

    def __init__(
        self,
        path: PathType,
        *,
        dataset_name: str | Sequence[str] | None = None,
        dataset_names: Sequence[str] | None = None,
        axis_order: str | None = None,
        bin_size: int = 1,
    ) -> None:
        path = check_input_path(path)
        self._file = open_h5(path)
        try:
            names = select_datasets(
                list_datasets(self._file),
                path,
                dataset_name=dataset_name,
                dataset_names=dataset_names,
                dtypes=dataset_dtypes(self._file),
            )
            super().__init__(
                path,
                [self._file[n] for n in names],
                axis_order,
                bin_size=bin_size,
                options={"dataset_names": names, "axis_order": axis_order},
            )
        except BaseException:
            self._file.close()
            raise
        self.dataset_names = names


class HDF5Writer(VideoWriter):
    """Append frames to an HDF5 file (created or overwritten at the first write).

    Parameters
    ----------
    path : path-like
        Output file.
    layout : {"channels", "stacked"}
        ``"channels"``: one ``(T, H, W)`` dataset per channel, named ``dataset_names`` (default
        ``ch1, ch2, ...``). ``"stacked"``: one ``(T, H, W, C)`` dataset named ``dataset_name``.
    dataset_name : str
        Dataset name for ``layout="stacked"``.
    dataset_names : sequence of str, optional
        Dataset names for ``layout="channels"``, one per channel.
    compression : {None, "gzip", "lzf"}
        HDF5 filter; ``compression_opts`` is passed on (gzip level 0-9).
    chunk_frames : int, optional
        Frames per chunk; default: as many as fit in about 1 MiB, between 1 and 16.
    expected_frames : int, optional
        Hint, unused by this format.
    """

    format_name: ClassVar[str] = "HDF5"

    def __init__(
        self,
        path: PathType,
        *,
        layout: str = "channels",
        dataset_name: str = "data",
        dataset_names: Sequence[str] | None = None,
        compression: str | None = None,
        compression_opts: Any = None,
        chunk_frames: int | None = None,
        expected_frames: int | None = None,
    ) -> None:
        super().__init__(path, expected_frames=expected_frames)
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
        if compression not in _COMPRESSIONS:
            raise ValueError(f"compression must be one of {_COMPRESSIONS}, got {compression!r}")
        if chunk_frames is not None and chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.layout = layout
        self.dataset_name = dataset_name
        self.dataset_names = None if dataset_names is None else list(dataset_names)
        self.compression = compression
        self.compression_opts = compression_opts
        self.chunk_frames = chunk_frames
        self._file: h5py.File | None = None
        self._datasets: list[h5py.Dataset] = []

    # Storage geometry, overridden by the MAT v7.3 writer (which stores MATLAB's transposed view).
    userblock_size: ClassVar[int] = 0

    @property
    def time_axis(self) -> int:
        """Axis of the stored datasets that grows with each write."""
        return 0

    def _stored_frame_shapes(self, frame_shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
        h, w, c = frame_shape
        return [(h, w)] * c if self.layout == "channels" else [(h, w, c)]

    def _stored_blocks(self, frames: np.ndarray) -> list[np.ndarray]:
        if self.layout == "channels":
            return [frames[..., i] for i in range(frames.shape[3])]
        return [frames]

    def _names(self, n_datasets: int) -> list[str]:
        if self.layout == "stacked":
            return [self.dataset_name]
        if self.dataset_names is None:
            return [f"ch{i + 1}" for i in range(n_datasets)]
        if len(self.dataset_names) != n_datasets:
            raise ValueError(
                f"dataset_names has {len(self.dataset_names)} names but the frames have "
                f"{n_datasets} channels"
            )
        return self.dataset_names

    def _decorate(self, dataset: h5py.Dataset) -> None:
        """Hook for per-dataset attributes."""

    def _setup(self, frame_shape: tuple[int, int, int], dtype: np.dtype) -> None:
        stored = self._stored_frame_shapes(frame_shape)
        names = self._names(len(stored))
        frame_bytes = int(np.prod(stored[0])) * dtype.itemsize
        auto = int(np.clip(_CHUNK_BYTES // max(frame_bytes, 1), 1, _MAX_CHUNK_FRAMES))
        k = self.chunk_frames or auto
        kwargs = {"userblock_size": self.userblock_size} if self.userblock_size else {}
        self._file = open_h5(self.path, "w", **kwargs)
        for name, shape in zip(names, stored, strict=True):
            full = list(shape)
            full.insert(self.time_axis, 0)
            chunks = list(shape)
            chunks.insert(self.time_axis, k)
            maxshape: list[int | None] = list(shape)
            maxshape.insert(self.time_axis, None)
            ds = self._file.create_dataset(
                name,
                shape=tuple(full),
                maxshape=tuple(maxshape),
                chunks=tuple(chunks),
                dtype=dtype,
                compression=self.compression,
                compression_opts=self.compression_opts,
            )
            self._decorate(ds)
            self._datasets.append(ds)

    def _write(self, frames: np.ndarray) -> None:
        start, n = self.frames_written, frames.shape[0]
        for ds, block in zip(self._datasets, self._stored_blocks(frames), strict=True):
            ds.resize(start + n, axis=self.time_axis)
            index = [slice(None)] * ds.ndim
            index[self.time_axis] = slice(start, start + n)
            ds[tuple(index)] = block

    def _close(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None
        self._datasets = []
