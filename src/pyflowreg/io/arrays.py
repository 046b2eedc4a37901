"""Readers over array-like storage (NumPy arrays and memmaps, h5py datasets, zarr arrays).

Shared by the HDF5, MAT, NPY, Zarr and in-memory formats: axis orders (``axis_order="YXT"`` for
files stored ``(H, W, T)``), several per-channel datasets stacked into one ``C`` axis, and the
choice of a dataset by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pyflowreg.io.base import DatasetNotFoundError, PathType, VideoReader, native_dtype

__all__ = ["COMMON_DATASET_NAMES", "ArraySourceReader", "parse_axis_order", "select_datasets"]

#: Dataset/variable names tried, in this order, when none is given and several candidates exist.
COMMON_DATASET_NAMES = (
    "mov",
    "data",
    "dataset",
    "imaging",
    "input_frames",
    "frames",
    "video",
    "movie",
    "images",
    "stack",
    "Y",
)

_DEFAULT_ORDERS = {2: "YX", 3: "TYX", 4: "TYXC"}
_CHANNEL_NAME = re.compile(r"^ch(\d+)$")


def parse_axis_order(
    axis_order: str | None, ndim: int, *, default: Mapping[int, str] | None = None
) -> str:
    """Validate an axis-order string for an ``ndim``-dimensional array.

    Parameters
    ----------
    axis_order : str or None
        Letters from ``"TYXC"`` (time, rows, columns, channels), one per array axis in storage
        order, e.g. ``"YXT"`` for an ``(H, W, T)`` array. ``None`` picks the default for ``ndim``.
    ndim : int
        Number of dimensions of the stored array.
    default : mapping, optional
        Default order per ``ndim`` (``{2: "YX", 3: "TYX", 4: "TYXC"}`` if not given).

    Returns
    -------
    str
        The upper-case axis order.
    """
    defaults = _DEFAULT_ORDERS if default is None else default
    if axis_order is None:
        if ndim not in defaults:
            raise ValueError(
                f"cannot read a {ndim}-D array as a video; expected 2-D (one frame), 3-D or 4-D"
            )
        return defaults[ndim]
    if not isinstance(axis_order, str):
        raise TypeError(f"axis_order must be a str such as 'TYX', got {type(axis_order).__name__}")
    order = axis_order.upper()
    if (
        len(order) != ndim
        or len(set(order)) != len(order)
        or not set(order) <= set("TYXC")
        or not {"Y", "X"} <= set(order)
    ):
        raise ValueError(
            f"axis_order={axis_order!r} does not fit a {ndim}-D array: use {ndim} distinct letters "
            f"from 'TYXC' (time, rows, columns, channels) that include Y and X, e.g. "
            f"{defaults.get(ndim, 'TYX')!r}"
        )
    return order


def select_datasets(
    shapes: Mapping[str, tuple[int, ...]],
    path: PathType,
    *,
    dataset_name: str | Sequence[str] | None = None,
    dataset_names: Sequence[str] | None = None,
    what: str = "dataset",
    dtypes: Mapping[str, Any] | None = None,
) -> list[str]:
    """Choose the dataset(s) holding the video in a container.

    Parameters
    ----------
    shapes : mapping of str to tuple
        Every numeric dataset in the container and its shape.
    path : path-like
        The file, for error messages.
    dataset_name : str or sequence of str, optional
        Use this dataset; a list or tuple means ``dataset_names``.
    dataset_names : sequence of str, optional
        One dataset per channel, stacked in this order.
    what : str
        Word for the error messages ("dataset", "variable", "array").
    dtypes : mapping of str to dtype, optional
        Dtype of every dataset in the container, the non-numeric ones included: the errors then
        say what is wrong with a dataset that is there but cannot hold a video.

    Returns
    -------
    list of str
        Without a name: datasets ``ch1, ch2, ...`` if present (one per channel), else the first of
        :data:`COMMON_DATASET_NAMES` that is 3-D or 4-D, else the only or the largest 3-D/4-D one.
    """
    if isinstance(dataset_name, list | tuple):
        if dataset_names is not None:
            raise ValueError("pass either dataset_name or dataset_names, not both")
        dataset_name, dataset_names = None, dataset_name
    available = ", ".join(f"'{k}' {tuple(v)}" for k, v in shapes.items()) or "none"
    if dataset_name is not None and dataset_names is not None:
        raise ValueError("pass either dataset_name or dataset_names, not both")
    requested = [dataset_name] if dataset_name is not None else dataset_names
    if requested is not None:
        if isinstance(requested, str) or not requested:
            raise TypeError("dataset_names must be a non-empty list of names")
        for name in requested:
            if name not in shapes and name in (dtypes or {}):
                raise TypeError(
                    f"{what} {name!r} in '{path}' has dtype {_dtype_text(dtypes[name])}; "
                    f"{_ACCEPTED}"
                )
        missing = [n for n in requested if n not in shapes]
        if missing:
            raise DatasetNotFoundError(
                f"{what} {missing[0]!r} not found in '{path}'; available {what}s: {available}"
            )
        for name in requested:
            if len(shapes[name]) not in (2, 3, 4):
                raise ValueError(
                    f"{what} {name!r} in '{path}' has shape {tuple(shapes[name])} "
                    f"({_ndim_words(len(shapes[name]))}"
                    + (f", dtype {_dtype_text(dtypes[name])}" if name in (dtypes or {}) else "")
                    + f"); {_ACCEPTED}"
                )
        return list(requested)
    videos = {k: v for k, v in shapes.items() if len(v) in (3, 4)}
    channels = {}
    for name in videos:
        match = _CHANNEL_NAME.match(name)
        if match:
            channels[int(match.group(1))] = name
    if channels and sorted(channels) == list(range(1, len(channels) + 1)):
        return [channels[i] for i in sorted(channels)]
    for common in COMMON_DATASET_NAMES:
        for name in videos:
            if name == common or name.rsplit("/", 1)[-1] == common:
                return [name]
    if videos:
        return [max(videos, key=lambda k: int(np.prod(videos[k])))]
    _raise_unusable(shapes, dtypes or {}, path, what)
    raise DatasetNotFoundError(
        f"no 3-D or 4-D {what} found in '{path}'; available {what}s: {available}; "
        f"pass {what}_name=... (and axis_order=... for other layouts)"
    )


_ACCEPTED = (
    "a video is a 3-D (T, H, W) or 4-D (T, H, W, C) array of integers or floating-point "
    "numbers (2-D: a single frame)"
)


def _dtype_text(dtype: Any) -> str:
    """A dtype for messages (MAT classes such as ``'struct'`` are shown as they are)."""
    try:
        return str(np.dtype(dtype))
    except TypeError:
        return str(dtype)


def _ndim_words(ndim: int) -> str:
    return "a scalar" if ndim == 0 else f"{ndim}-D"


def _raise_unusable(
    shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, Any], path: PathType, what: str
) -> None:
    """Raise ``ValueError``/``TypeError`` when the container holds datasets, none of them 2-D to
    4-D numeric: the dataset is there, its shape or dtype is wrong (say which, and what is
    accepted). Returns when there is nothing to say beyond "not found"."""
    if any(len(v) == 2 for v in shapes.values()):
        return  # a single frame is readable with an explicit name: "not found" lists it
    wrong_shape = [
        f"{what} {k!r} has shape {tuple(v)} ({_ndim_words(len(v))}"
        + (f", dtype {_dtype_text(dtypes[k])})" if k in dtypes else ")")
        for k, v in shapes.items()
    ]
    wrong_dtype = [
        f"{what} {k!r} has dtype {_dtype_text(v)}" for k, v in dtypes.items() if k not in shapes
    ]
    if not wrong_shape and not wrong_dtype:
        return
    details = "; ".join(wrong_shape + wrong_dtype)
    error = ValueError if wrong_shape else TypeError
    raise error(f"no video in '{path}': {details}; {_ACCEPTED}")


class ArraySourceReader(VideoReader):
    """Reader over one array-like ``(T, H, W[, C])`` (any axis order) or one per channel.

    Parameters
    ----------
    path : path-like or None
        The file (``None`` for arrays in memory).
    arrays : sequence of array-like
        Objects with ``shape``, ``dtype`` and NumPy basic slicing. Several arrays are stacked along
        ``C`` (e.g. one dataset per channel); they must agree in ``T, H, W``.
    axis_order : str or None
        Storage order of every array, see :func:`parse_axis_order`.
    bin_size : int
        Temporal binning, see :class:`VideoReader`.
    options : mapping
        Keyword arguments that reopen this reader (for :attr:`spec`).
    default_orders : mapping, optional
        Default axis order per ``ndim`` for this format.
    """

    def __init__(
        self,
        path: PathType | None,
        arrays: Sequence[Any],
        axis_order: str | None = None,
        *,
        bin_size: int = 1,
        options: Mapping[str, Any] | None = None,
        default_orders: Mapping[int, str] | None = None,
    ) -> None:
        super().__init__(path, bin_size=bin_size, options=options)
        if not arrays:
            raise ValueError("at least one array is needed")
        self._arrays = list(arrays)
        for a in self._arrays:
            if np.dtype(a.dtype).kind not in "biuf":
                raise TypeError(
                    f"'{path or 'array'}' holds dtype {np.dtype(a.dtype)} (shape "
                    f"{tuple(a.shape)}); {_ACCEPTED}"
                )
            if len(a.shape) not in (2, 3, 4) and axis_order is None:
                raise ValueError(
                    f"'{path or 'array'}' holds an array of shape {tuple(a.shape)} "
                    f"({_ndim_words(len(a.shape))}); {_ACCEPTED}"
                )
        self._orders = [
            parse_axis_order(axis_order, len(a.shape), default=default_orders) for a in self._arrays
        ]
        shapes = [
            self._tyxc_shape(a.shape, o) for a, o in zip(self._arrays, self._orders, strict=True)
        ]
        t, h, w = shapes[0][:3]
        for s in shapes[1:]:
            if s[:3] != (t, h, w):
                raise ValueError(
                    f"the channel arrays of '{path}' differ in (T, H, W): {[x[:3] for x in shapes]}"
                )
        self._raw_shape = (t, h, w, sum(s[3] for s in shapes))
        self._raw_dtype = native_dtype(np.result_type(*[a.dtype for a in self._arrays]))

    @staticmethod
    def _tyxc_shape(shape: tuple[int, ...], order: str) -> tuple[int, int, int, int]:
        sizes = dict(zip(order, shape, strict=True))
        return (sizes.get("T", 1), sizes["Y"], sizes["X"], sizes.get("C", 1))

    def _read_one(self, array: Any, order: str, start: int, stop: int) -> np.ndarray:
        if "T" in order:
            index = tuple(slice(start, stop) if ax == "T" else slice(None) for ax in order)
            block = np.asarray(array[index])
        else:
            block = np.asarray(array[...])[None][start:stop]
        present = "T" + "".join(a for a in "YXC" if a in order)
        stored = order if "T" in order else "T" + order
        block = block.transpose([stored.index(a) for a in present])
        if "C" not in order:
            block = block[..., None]
        out = np.ascontiguousarray(block, dtype=self._raw_dtype)
        if isinstance(array, np.ndarray) and np.may_share_memory(out, array):
            out = out.copy()
        return out

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        blocks = [
            self._read_one(a, o, start, stop)
            for a, o in zip(self._arrays, self._orders, strict=True)
        ]
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=3)

    def _close(self) -> None:
        self._arrays = []
