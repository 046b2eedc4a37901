"""MATLAB ``.mat`` videos: v5 (scipy.io) and v7.3 (HDF5, via h5py).

Axis orders are given as MATLAB shows them (``size(x)``): by default ``(H, W)`` for a frame,
``(H, W, T)`` for a video and ``(H, W, T, C)`` for a multi-channel video, i.e. ``axis_order`` of
``"YX"``, ``"YXT"`` and ``"YXTC"``. MATLAB stores arrays column-major, so in a v7.3 file an
``(H, W, T)`` variable is an HDF5 dataset of shape ``(T, W, H)``; the reader undoes this.

v5 files are read whole into memory by :func:`scipy.io.loadmat` (fine for small files); v7.3 files
are read frame range by frame range.

The writer produces v7.3 files MATLAB opens with ``load``/``matfile``: an HDF5 file with a 512-byte
user block holding the ``MATLAB 7.3 MAT-file`` header, ``MATLAB_class`` attributes, and by default
one ``(H, W, T)`` variable per channel named ``ch1, ch2, ...`` (``layout="stacked"``: one
``(H, W, T, C)`` variable).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import h5py
import numpy as np
import scipy.io

from pyflowreg.io.arrays import ArraySourceReader, select_datasets
from pyflowreg.io.base import (
    PathType,
    VideoReader,
    VideoWriter,
    check_input_path,
    corrupt_file_error,
)
from pyflowreg.io.hdf5 import (
    H5FileReader,
    HDF5Writer,
    dataset_dtypes,
    list_datasets,
    numbered_names,
    open_h5,
)

__all__ = ["MAT5Reader", "MAT5Writer", "MAT73Reader", "MATWriter", "is_mat73", "open_mat"]

MATLAB_ORDERS = {2: "YX", 3: "YXT", 4: "YXTC"}
_H5_ORDERS = {n: o[::-1] for n, o in MATLAB_ORDERS.items()}
_MATLAB_CLASSES = {
    "f8": "double",
    "f4": "single",
    "i1": "int8",
    "u1": "uint8",
    "i2": "int16",
    "u2": "uint16",
    "i4": "int32",
    "u4": "uint32",
    "i8": "int64",
    "u8": "uint64",
}
_NUMERIC = {*_MATLAB_CLASSES.values(), "logical"}
_USERBLOCK = 512
_MAT5_ERRORS = (ValueError, OSError, EOFError, struct.error, NotImplementedError)
_SKIP_GROUPS = ("#refs#", "#subsystem#")


def is_mat73(path: PathType) -> bool:
    """True if ``path`` is a v7.3 (HDF5-based) MAT file."""
    return h5py.is_hdf5(path)


def _merge_aliases(
    variable_name: Any, variable_names: Any, dataset_name: Any, dataset_names: Any
) -> tuple[Any, Any]:
    """``dataset_name(s)`` are accepted as aliases of ``variable_name(s)`` (one option for HDF5
    and MAT inputs)."""
    if (dataset_name is not None or dataset_names is not None) and (
        variable_name is not None or variable_names is not None
    ):
        raise ValueError("pass variable_name(s) or their alias dataset_name(s), not both")
    if dataset_name is not None or dataset_names is not None:
        return dataset_name, dataset_names
    return variable_name, variable_names


def _reversed_order(axis_order: str | None) -> str | None:
    return None if axis_order is None else axis_order[::-1]


class MAT5Reader(ArraySourceReader):
    """Read a video variable from a v5 (or v4/v6/v7) MAT file, loaded whole into memory.

    Parameters
    ----------
    path : path-like
        The ``.mat`` file.
    variable_name : str, optional
        The variable; default: ``ch1, ch2, ...`` if present, else a common name (``mov``,
        ``data``, ...), else the largest 3-D/4-D numeric variable.
    variable_names : sequence of str, optional
        One variable per channel (also given as a list in ``variable_name``).
    axis_order : str, optional
        MATLAB order of the variable, letters from ``"TYXC"`` (default ``"YXT"``/``"YXTC"``).
    bin_size : int
        Temporal binning, see :class:`~pyflowreg.io.base.VideoReader`.
    dataset_name, dataset_names : optional
        Aliases of ``variable_name`` and ``variable_names`` (the option name HDF5 input uses).
    """

    format_name: ClassVar[str] = "MAT"

    def __init__(
        self,
        path: PathType,
        *,
        variable_name: str | Sequence[str] | None = None,
        variable_names: Sequence[str] | None = None,
        axis_order: str | None = None,
        bin_size: int = 1,
        dataset_name: str | Sequence[str] | None = None,
        dataset_names: Sequence[str] | None = None,
    ) -> None:
        path = check_input_path(path)
        variable_name, variable_names = _merge_aliases(
            variable_name, variable_names, dataset_name, dataset_names
        )
        try:
            found = scipy.io.whosmat(str(path))
        except _MAT5_ERRORS as exc:
            raise corrupt_file_error(path, exc) from exc
        shapes = {name: tuple(shape) for name, shape, cls in found if cls in _NUMERIC}
        names = select_datasets(
            shapes,
            path,
            dataset_name=variable_name,
            dataset_names=variable_names,
            what="variable",
            dtypes={name: cls for name, _, cls in found},
        )
        try:
            loaded = scipy.io.loadmat(str(path), variable_names=names)
        except _MAT5_ERRORS as exc:
            raise corrupt_file_error(path, exc) from exc
        super().__init__(
            path,
            [loaded[n] for n in names],
            axis_order,
            bin_size=bin_size,
            options={"variable_names": names, "axis_order": axis_order},
            default_orders=MATLAB_ORDERS,
        )
        self.variable_names = names


class MAT73Reader(H5FileReader):
    """Read a video variable from a v7.3 MAT file (HDF5), one frame range at a time.

    Parameters are those of :class:`MAT5Reader`; ``axis_order`` is MATLAB's order, reversed
    internally to match the HDF5 view.
    """

    format_name: ClassVar[str] = "MAT"

    def __init__(
        self,
        path: PathType,
        *,
        variable_name: str | Sequence[str] | None = None,
        variable_names: Sequence[str] | None = None,
        axis_order: str | None = None,
        bin_size: int = 1,
        dataset_name: str | Sequence[str] | None = None,
        dataset_names: Sequence[str] | None = None,
    ) -> None:
        path = check_input_path(path)
        variable_name, variable_names = _merge_aliases(
            variable_name, variable_names, dataset_name, dataset_names
        )
        self._file = open_h5(path)
        try:
            shapes = list_datasets(self._file, skip=_SKIP_GROUPS)
            names = select_datasets(
                {k: v[::-1] for k, v in shapes.items()},
                path,
                dataset_name=variable_name,
                dataset_names=variable_names,
                what="variable",
                dtypes=dataset_dtypes(self._file, skip=_SKIP_GROUPS),
            )
            super().__init__(
                path,
                [self._file[n] for n in names],
                _reversed_order(axis_order),
                bin_size=bin_size,
                options={"variable_names": names, "axis_order": axis_order},
                default_orders=_H5_ORDERS,
            )
        except BaseException:
            self._file.close()
            raise
        self.variable_names = names


def open_mat(path: PathType, **kwargs: Any) -> VideoReader:
    """Open a MAT file with :class:`MAT73Reader` (v7.3) or :class:`MAT5Reader` (older)."""
    path = check_input_path(path)
    cls = MAT73Reader if is_mat73(path) else MAT5Reader
    return cls(path, **kwargs)


def matlab_header(created: str | None = None) -> bytes:
    """The 128-byte header MATLAB writes at the start of a v7.3 MAT file's user block."""
    created = created or time.strftime("%a %b %d %H:%M:%S %Y")
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {created} HDF5 schema 1.00 ."
    return text.encode("ascii").ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


class MATWriter(HDF5Writer):
    """Append frames to a v7.3 MAT file that MATLAB can ``load``.

    Parameters
    ----------
    path : path-like
        Output ``.mat`` file.
    layout : {"channels", "stacked"}
        ``"channels"``: one ``(H, W, T)`` variable per channel (``variable_names``, default
        ``ch1, ch2, ...``). ``"stacked"``: one ``(H, W, T, C)`` variable ``variable_name``.
    variable_name : str
        Variable name for ``layout="stacked"``.
    variable_names : sequence of str, optional
        Variable names for ``layout="channels"``.
    compression, compression_opts, chunk_frames, expected_frames
        As for :class:`~pyflowreg.io.hdf5.HDF5Writer`.
    """

    resumable: ClassVar[bool] = False  # MATLAB's header is written at close
    format_name: ClassVar[str] = "MAT"
    userblock_size: ClassVar[int] = _USERBLOCK
    describe_file: ClassVar[bool] = False  # MATLAB's file: only its variables

    def __init__(
        self,
        path: PathType,
        *,
        layout: str = "channels",
        variable_name: str = "data",
        variable_names: Sequence[str] | None = None,
        compression: str | None = None,
        compression_opts: Any = None,
        chunk_frames: int | None = None,
        expected_frames: int | None = None,
    ) -> None:
        super().__init__(
            path,
            layout=layout,
            dataset_name=variable_name,
            dataset_names=variable_names,
            compression=compression,
            compression_opts=compression_opts,
            chunk_frames=chunk_frames,
            expected_frames=expected_frames,
        )

    @property
    def time_axis(self) -> int:
        return 0 if self.layout == "channels" else 1

    def _stored_frame_shapes(self, frame_shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
        h, w, c = frame_shape
        return [(w, h)] * c if self.layout == "channels" else [(c, w, h)]

    def _stored_blocks(self, frames: np.ndarray) -> list[np.ndarray]:
        if self.layout == "channels":
            return [frames[..., i].transpose(0, 2, 1) for i in range(frames.shape[3])]
        return [frames.transpose(3, 0, 2, 1)]

    def _setup(self, frame_shape: tuple[int, int, int], dtype: np.dtype) -> None:
        if dtype.str[1:] not in _MATLAB_CLASSES:
            raise TypeError(
                f"MAT files cannot hold dtype {dtype}; use one of "
                f"{sorted({np.dtype(k).name for k in _MATLAB_CLASSES})}"
            )
        super()._setup(frame_shape, dtype)

    def _decorate(self, dataset: h5py.Dataset) -> None:
        dataset.attrs["MATLAB_class"] = np.bytes_(_MATLAB_CLASSES[dataset.dtype.str[1:]])

    def _close(self) -> None:
        wrote = self._file is not None
        super()._close()
        if wrote:
            with open(self.path, "r+b") as fh:
                fh.write(matlab_header())


class MAT5Writer(VideoWriter):
    """Collect frames in memory and save a v5 MAT file (:func:`scipy.io.savemat`) at close.

    v5 files open everywhere (``scipy.io.loadmat``, MATLAB, Octave) but are written whole: use
    :class:`MATWriter` (v7.3, appended batch by batch) for long recordings. A variable of 2 GB or
    more does not fit a v5 file; such data are written as v7.3 by :class:`MATWriter` instead.

    Parameters
    ----------
    path : path-like
        Output ``.mat`` file, written at :meth:`close` (nothing if no frames were written).
    variable_names : sequence of str or str, optional
        One ``(H, W, T)`` variable per channel; default ``ch1, ch2, ...``; or a pattern such as
        ``"ch{}"`` (see :class:`~pyflowreg.io.hdf5.HDF5Writer`).
    do_compression : bool
        zlib-compress the variables (default ``True``).
    expected_frames : int, optional
        Hint, unused by this format.
    """

    format_name: ClassVar[str] = "MAT"
    v5_limit: ClassVar[int] = 2**31 - 1  # bytes of one variable in a v5 file

    def __init__(
        self,
        path: PathType,
        *,
        variable_names: Sequence[str] | None = None,
        do_compression: bool = True,
        expected_frames: int | None = None,
    ) -> None:
        super().__init__(path, expected_frames=expected_frames)
        self.variable_names = (
            variable_names if variable_names is None or isinstance(variable_names, str)
            else list(variable_names)
        )  # fmt: skip
        self.do_compression = bool(do_compression)
        self._blocks: list[np.ndarray] = []

    def _setup(self, frame_shape: tuple[int, int, int], dtype: np.dtype) -> None:
        if dtype.str[1:] not in _MATLAB_CLASSES:
            raise TypeError(
                f"MAT files cannot hold dtype {dtype}; use one of "
                f"{sorted({np.dtype(k).name for k in _MATLAB_CLASSES})}"
            )
        c = frame_shape[2]
        if self.variable_names is None:
            self.variable_names = [f"ch{i + 1}" for i in range(c)]
        elif isinstance(self.variable_names, str):
            self.variable_names = numbered_names(self.variable_names, c)
        elif len(self.variable_names) != c:
            raise ValueError(
                f"variable_names has {len(self.variable_names)} names but the frames have "
                f"{c} channels"
            )

    def _write(self, frames: np.ndarray) -> None:
        self._blocks.append(frames.copy())

    def _close(self) -> None:
        if not self._blocks:
            return
        video = np.concatenate(self._blocks) if len(self._blocks) > 1 else self._blocks[0]
        self._blocks = []
        if video[..., 0].nbytes > self.v5_limit:
            with MATWriter(self.path, variable_names=self.variable_names) as writer:
                writer.write(video)
            return
        variables = {
            name: np.ascontiguousarray(video[..., i].transpose(1, 2, 0))
            for i, name in enumerate(self.variable_names)
        }
        scipy.io.savemat(str(self.path), variables, do_compression=self.do_compression)
