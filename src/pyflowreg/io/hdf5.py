"""HDF5 videos (h5py): one ``(T, H, W[, C])`` dataset, or one ``(T, H, W)`` dataset per channel.

Reading: the dataset is chosen by ``dataset_name``/``dataset_names`` or automatically (the
datasets listed in the file's ``dataset_names`` attribute; else ``ch1, ch2, ...``; else ``mov``,
``data``, ``imaging``, ``input_frames``, ...; else the only or the largest 3-D/4-D dataset).
``axis_order`` describes other storage orders, e.g. ``"YXT"`` for SIMA's ``(y, x, t)`` files.
Big-endian datasets are returned in native byte order.

Writing: ``layout="channels"`` (default) writes one ``(T, H, W)`` dataset per channel named
``ch1, ch2, ...``; ``layout="stacked"`` writes one ``(T, H, W, C)`` dataset ``dataset_name``.
Datasets are chunked by a few frames, resizable along ``T`` (appending) and optionally compressed
(``compression="gzip"`` or ``"lzf"``). The writer records the storage order of each dataset
(``axis_order`` attribute) and describes the video in file attributes; the reader follows both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import h5py
import numpy as np

from pyflowreg.io.arrays import ArraySourceReader, select_datasets
from pyflowreg.io.base import (
    PathType,
    VideoWriter,
    check_input_path,
    corrupt_file_error,
    native_dtype,
)

__all__ = [
    "HDF5Reader",
    "HDF5Writer",
    "axis_order_to_dimension_ordering",
    "dimension_ordering_to_axis_order",
    "list_datasets",
    "stored_axis_order",
]


def numbered_names(pattern: str, n: int) -> list[str]:
    """Names from a pattern numbered from 1: ``"ch{}"``/``"ch%d"``; a plain name is numbered
    only when there are several."""
    if "{" in pattern:
        return [pattern.format(i + 1) for i in range(n)]
    if "%" in pattern:
        return [pattern % (i + 1) for i in range(n)]
    return [pattern] if n == 1 else [f"{pattern}{i + 1}" for i in range(n)]


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
            if dataset_name is None and dataset_names is None:
                dataset_names = recorded_dataset_names(self._file)
            names = select_datasets(
                list_datasets(self._file),
                path,
                dataset_name=dataset_name,
                dataset_names=dataset_names,
                dtypes=dataset_dtypes(self._file),
            )
            if axis_order is None:
                axis_order = stored_axis_order(self._file, names)
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


def stored_axis_order(file: h5py.File, names: Sequence[str]) -> str | None:
    """Storage order recorded in the file by :class:`HDF5Writer`, or ``None`` (the default).

    Read from the datasets' ``axis_order`` attribute, else from the file's ``dimension_ordering``
    attribute (PyFlowReg's: the storage axes of ``(H, W, T)``) for 3-D datasets. A value that
    does not describe the datasets is ignored.
    """
    datasets = [file[n] for n in names]
    ndims = {ds.ndim for ds in datasets}
    orders = {(_attr_text(ds.attrs.get("axis_order")) or "").upper() or None for ds in datasets}
    order = orders.pop() if len(orders) == 1 else None
    if order is None and ndims == {3}:
        ordering = file.attrs.get("dimension_ordering")
        try:
            order = dimension_ordering_to_axis_order(ordering)
        except (TypeError, ValueError):
            order = None
    if order is None or len(ndims) != 1:
        return None
    n = ndims.pop()
    valid = len(order) == n and set(order) == set("TYXC"[:n] if n == 4 else "TYX")
    return order if valid and n in (3, 4) else None


def recorded_dataset_names(file: h5py.File) -> list[str] | None:
    """The channel datasets listed in the file's ``dataset_names`` attribute (written by
    :class:`HDF5Writer` and by PyFlowReg), if they all exist; else ``None``."""
    value = file.attrs.get("dataset_names")
    if value is None:
        return None
    names = [_attr_text(v) if not isinstance(v, str) else v for v in np.atleast_1d(value)]
    if not names or not all(isinstance(n, str) and n in file for n in names):
        return None
    return names


def _attr_text(value: Any) -> str | None:
    if isinstance(value, bytes | np.bytes_):
        value = value.decode("ascii", "replace")
    return value if isinstance(value, str) else None


def dimension_ordering_to_axis_order(ordering: Any) -> str:
    """PyFlowReg's ``dimension_ordering`` (the storage axis of H, W and T) as an axis order.

    ``(1, 2, 0)`` -> ``"TYX"`` (frames first), ``(0, 1, 2)`` -> ``"YXT"`` (MATLAB's order).
    """
    values = [int(v) for v in np.asarray(ordering).ravel()]
    if sorted(values) != [0, 1, 2]:
        raise ValueError(f"dimension_ordering must be a permutation of (0, 1, 2), got {ordering!r}")
    order = [""] * 3
    for letter, axis in zip("YXT", values, strict=True):
        order[axis] = letter
    return "".join(order)


def axis_order_to_dimension_ordering(axis_order: str) -> tuple[int, int, int]:
    """Inverse of :func:`dimension_ordering_to_axis_order` (``"TYX"`` -> ``(1, 2, 0)``)."""
    return tuple(axis_order.index(a) for a in "YXT")  # type: ignore[return-value]


def _check_storage_order(axis_order: str | None, layout: str) -> str:
    letters = "TYX" if layout == "channels" else "TYXC"
    if axis_order is None:
        return letters
    if not isinstance(axis_order, str):
        raise TypeError(f"axis_order must be a str such as {letters!r}, got {axis_order!r}")
    order = axis_order.upper()
    if sorted(order) != sorted(letters):
        raise ValueError(
            f"axis_order for layout={layout!r} must order the letters of {letters!r}, "
            f"got {axis_order!r}"
        )
    return order


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
    dataset_names : sequence of str or str, optional
        Dataset names for ``layout="channels"``, one per channel; or one pattern such as
        ``"ch{}"`` or ``"ch%d"`` numbered from 1 (a name without a placeholder is used as is for
        one channel and numbered for several: ``"mov"`` -> ``mov1, mov2``).
    compression : {None, "gzip", "lzf"}
        HDF5 filter; ``compression_opts`` is passed on (gzip level 0-9).
    chunk_frames : int, optional
        Frames per chunk; default: as many as fit in about 1 MiB, between 1 and 16.
    expected_frames : int, optional
        Hint, unused by this format.
    axis_order : str, optional
        Storage order of each dataset: letters of ``"TYX"`` (``layout="channels"``, default
        ``"TYX"``; ``"YXT"`` stores MATLAB's ``(H, W, T)``) or of ``"TYXC"`` (``"stacked"``).
        Recorded in the dataset attribute ``axis_order``, which :class:`HDF5Reader` follows.

    The file's attributes describe the video (PyFlowReg's names): ``frame_count``, ``height``,
    ``width``, ``n_channels``, ``dataset_names``, ``format`` and, for one dataset per channel,
    ``dimension_ordering`` (the storage axes of H, W and T; ``(1, 2, 0)`` for ``"TYX"``).
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
        axis_order: str | None = None,
    ) -> None:
        super().__init__(path, expected_frames=expected_frames)
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
        self.axis_order = _check_storage_order(axis_order, layout)
        if compression not in _COMPRESSIONS:
            raise ValueError(f"compression must be one of {_COMPRESSIONS}, got {compression!r}")
        if chunk_frames is not None and chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.layout = layout
        self.dataset_name = dataset_name
        self.dataset_names = (
            dataset_names if dataset_names is None or isinstance(dataset_names, str)
            else list(dataset_names)
        )  # fmt: skip
        self.compression = compression
        self.compression_opts = compression_opts
        self.chunk_frames = chunk_frames
        self._file: h5py.File | None = None
        self._datasets: list[h5py.Dataset] = []

    # Storage geometry, overridden by the MAT v7.3 writer (which stores MATLAB's transposed view).
    userblock_size: ClassVar[int] = 0

    describe_file: ClassVar[bool] = True  # write the file attributes (not in MAT files)

    @property
    def time_axis(self) -> int:
        """Axis of the stored datasets that grows with each write."""
        return self.axis_order.index("T")

    def _stored_frame_shapes(self, frame_shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
        h, w, c = frame_shape
        sizes = {"Y": h, "X": w, "C": c}
        shape = tuple(sizes[a] for a in self.axis_order if a != "T")
        return [shape] * c if self.layout == "channels" else [shape]

    def _stored_blocks(self, frames: np.ndarray) -> list[np.ndarray]:
        if self.layout == "channels":
            perm = ["TYX".index(a) for a in self.axis_order]
            return [frames[..., i].transpose(perm) for i in range(frames.shape[3])]
        return [frames.transpose(["TYXC".index(a) for a in self.axis_order])]

    def _names(self, n_datasets: int) -> list[str]:
        if self.layout == "stacked":
            return [self.dataset_name]
        if self.dataset_names is None:
            return [f"ch{i + 1}" for i in range(n_datasets)]
        if isinstance(self.dataset_names, str):
            return numbered_names(self.dataset_names, n_datasets)
        if len(self.dataset_names) != n_datasets:
            raise ValueError(
                f"dataset_names has {len(self.dataset_names)} names but the frames have "
                f"{n_datasets} channels"
            )
        return self.dataset_names

    def _decorate(self, dataset: h5py.Dataset) -> None:
        """Hook for per-dataset attributes."""
        dataset.attrs["axis_order"] = self.axis_order

    def _describe(self) -> None:
        """Write the file attributes (PyFlowReg's names) of the video written so far."""
        h, w, c = self._frame_shape
        attrs = self._file.attrs
        attrs["frame_count"] = self.frames_written
        attrs["height"], attrs["width"], attrs["n_channels"] = h, w, c
        attrs["format"] = "HDF5"
        attrs["dataset_names"] = [ds.name.lstrip("/") for ds in self._datasets]
        if self.layout == "channels":
            attrs["dimension_ordering"] = axis_order_to_dimension_ordering(self.axis_order)

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

    resumable: ClassVar[bool] = True

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def _resume(self, frames: int) -> tuple[tuple[int, int, int], np.dtype]:
        self._file = open_h5(check_input_path(self.path), "a")
        try:
            n = sum(isinstance(obj, h5py.Dataset) for obj in self._file.values())
            names = self._names(max(n, 1))
            missing = [name for name in names if name not in self._file]
            if missing or n == 0:
                raise ValueError(f"'{self.path}' has no dataset {missing[:1] or names[:1]}")
            self._datasets = [self._file[name] for name in names]
            stored = self._datasets[0].shape
            if stored[self.time_axis] < frames:
                raise ValueError(
                    f"'{self.path}' holds {stored[self.time_axis]} frames; cannot resume "
                    f"after frame {frames}"
                )
            for ds in self._datasets:
                ds.resize(frames, axis=self.time_axis)
            sizes = dict(zip(self.axis_order, stored, strict=True))
            c = sizes.get("C", len(self._datasets))
            return (sizes["Y"], sizes["X"], c), native_dtype(self._datasets[0].dtype)
        except BaseException:
            self._file.close()
            self._file = None
            self._datasets = []
            raise

    def _close(self) -> None:
        if self._file is not None:
            try:
                if self.describe_file and self._datasets:
                    self._describe()
            finally:
                self._file.flush()
                self._file.close()
            self._file = None
        self._datasets = []
