"""Readers and writers chosen by file extension or format name (:func:`open_reader`, ...)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from pyflowreg.io.base import PathType, ReaderSpec, VideoReader, VideoWriter, check_input_path

__all__ = ["FORMATS", "detect_format", "normalize_format", "open_reader", "open_writer"]


@dataclass(frozen=True)
class _Format:
    extensions: tuple[str, ...]
    reader: Callable[..., VideoReader] | None
    writer: Callable[..., VideoWriter] | None


def _hdf5_reader(path: PathType, **kw: Any) -> VideoReader:
    from pyflowreg.io.hdf5 import HDF5Reader

    return HDF5Reader(path, **kw)


def _hdf5_writer(path: PathType, **kw: Any) -> VideoWriter:
    from pyflowreg.io.hdf5 import HDF5Writer

    return HDF5Writer(path, **kw)


def _tiff_reader(path: PathType, **kw: Any) -> VideoReader:
    from pyflowreg.io.tiff import TIFFReader

    return TIFFReader(path, **kw)


def _tiff_writer(path: PathType, **kw: Any) -> VideoWriter:
    from pyflowreg.io.tiff import TIFFWriter

    return TIFFWriter(path, **kw)


def _mat_reader(path: PathType, **kw: Any) -> VideoReader:
    from pyflowreg.io.mat import open_mat

    return open_mat(path, **kw)


def _mat_writer(path: PathType, version: str = "7.3", **kw: Any) -> VideoWriter:
    from pyflowreg.io.mat import MAT5Writer, MATWriter

    version = str(version)
    if version not in ("7.3", "5"):
        raise ValueError(f"MAT version must be '7.3' or '5', got {version!r}")
    return MATWriter(path, **kw) if version == "7.3" else MAT5Writer(path, **kw)


def _npy_reader(path: PathType, **kw: Any) -> VideoReader:
    from pyflowreg.io.npy import NPYReader

    return NPYReader(path, **kw)


def _npy_writer(path: PathType, **kw: Any) -> VideoWriter:
    from pyflowreg.io.npy import NPYWriter

    return NPYWriter(path, **kw)


def _zarr_reader(path: PathType, **kw: Any) -> VideoReader:
    from pyflowreg.io.zarr_io import ZarrReader

    return ZarrReader(path, **kw)


def _zarr_writer(path: PathType, **kw: Any) -> VideoWriter:
    from pyflowreg.io.zarr_io import ZarrWriter

    return ZarrWriter(path, **kw)


def _array_reader(array: Any, **kw: Any) -> VideoReader:
    from pyflowreg.io.memory import ArrayReader

    return ArrayReader(array, **kw)


def _array_writer(path: PathType | None, **kw: Any) -> VideoWriter:
    from pyflowreg.io.memory import ArrayWriter

    return ArrayWriter(path, **kw)


def _null_writer(path: PathType | None, **kw: Any) -> VideoWriter:
    from pyflowreg.io.memory import NullWriter

    return NullWriter(path, **kw)


def _suite2p_writer(path: PathType, **kw: Any) -> VideoWriter:
    return _tiff_writer(path, layout="pages", **kw)


def _per_channel(
    single: Callable[..., VideoWriter], suffix: str, **fixed: Any
) -> Callable[..., VideoWriter]:
    """Writer factory for one file per channel, each written by ``single``."""

    def factory(path: PathType, *, expected_frames: int | None = None, **kw: Any) -> VideoWriter:
        from pyflowreg.io.multifile import MultiFileWriter

        def channel_writer(p: PathType, expected_frames: int | None = None) -> VideoWriter:
            return single(p, expected_frames=expected_frames, **fixed, **kw)

        return MultiFileWriter(
            path, channel_writer=channel_writer, suffix=suffix, expected_frames=expected_frames
        )

    return factory


#: Format name -> extensions, reader and writer factories.
FORMATS: dict[str, _Format] = {
    "HDF5": _Format((".h5", ".hdf5", ".hdf", ".he5"), _hdf5_reader, _hdf5_writer),
    "TIFF": _Format((".tif", ".tiff", ".btf", ".tf8"), _tiff_reader, _tiff_writer),
    "MAT": _Format((".mat",), _mat_reader, _mat_writer),
    "NPY": _Format((".npy",), _npy_reader, _npy_writer),
    "ZARR": _Format((".zarr",), _zarr_reader, _zarr_writer),
    "ARRAY": _Format((), _array_reader, _array_writer),
    "NULL": _Format((), None, _null_writer),
    # Write-only layouts of the formats above (PyFlowReg's output formats).
    "SUITE2P_TIFF": _Format((), None, _suite2p_writer),
    "MULTIFILE_TIFF": _Format((), None, _per_channel(_tiff_writer, ".TIFF")),
    "MULTIFILE_HDF5": _Format((), None, _per_channel(_hdf5_writer, ".HDF5")),
    "MULTIFILE_MAT": _Format((), None, _per_channel(_mat_writer, ".MAT")),
    "CAIMAN_HDF5": _Format((), None, _per_channel(_hdf5_writer, ".hdf5", dataset_names=["mov"])),
}
_ALIASES = {"H5": "HDF5", "HDF": "HDF5", "TIF": "TIFF", "NUMPY": "NPY", "NONE": "NULL"}


def _known() -> str:
    exts = ", ".join(
        f"{name} ({' '.join(f.extensions)})" for name, f in FORMATS.items() if f.extensions
    )
    writers = ", ".join(n for n, f in FORMATS.items() if f.reader is None and n != "NULL")
    return f"{exts}, ARRAY (in memory), NULL (discard); for writing only: {writers}"


def normalize_format(format: str) -> str:
    """Canonical format name for ``format`` (case-insensitive; ``"tif"`` -> ``"TIFF"``)."""
    if not isinstance(format, str):
        raise TypeError(f"format must be a str, got {type(format).__name__}")
    name = format.strip().upper().lstrip(".")
    name = _ALIASES.get(name, name)
    if name not in FORMATS:
        raise ValueError(f"unknown format {format!r}; known formats: {_known()}")
    return name


def detect_format(path: PathType) -> str:
    """Format name from the file extension of ``path`` (a Zarr store may be any folder)."""
    path = Path(path)
    suffix = path.suffix.lower()
    for name, fmt in FORMATS.items():
        if suffix in fmt.extensions:
            return name
    if path.is_dir() and any((path / m).exists() for m in ("zarr.json", ".zarray", ".zgroup")):
        return "ZARR"
    raise ValueError(
        f"cannot tell the format of '{path}' from its extension {suffix or '(none)'!r}; "
        f"known formats: {_known()}; or pass format=..."
    )


def open_reader(
    source: PathType | Sequence[PathType] | np.ndarray | VideoReader,
    format: str | None = None,
    **kwargs: Any,
) -> VideoReader:
    """Open a video for reading.

    Parameters
    ----------
    source : path-like, list of path-like, ndarray, VideoReader or ReaderSpec
        A file; several files, one per channel (stacked along ``C``); an array ``(T, H, W)``,
        ``(T, H, W, C)`` or ``(H, W)``; an open reader (returned as is); or a reader's
        :class:`~pyflowreg.io.base.ReaderSpec` (a new reader is opened from it).
    format : str, optional
        ``"HDF5"``, ``"TIFF"``, ``"MAT"``, ``"NPY"``, ``"ZARR"`` or ``"ARRAY"`` (any case);
        default: from the extension.
    **kwargs
        Reader options (``bin_size``, ``dataset_name``, ``axis_order``, ``n_channels``, ...); see
        the reader classes.

    Returns
    -------
    VideoReader
        ``reader.shape`` is ``(T, H, W, C)``; ``reader[i]`` is frame ``(H, W, C)``.

    Examples
    --------
    >>> import numpy as np
    >>> from pyflowreg.io import open_reader
    >>> with open_reader(np.zeros((10, 32, 32), np.uint16), bin_size=2) as reader:
    ...     reader.shape, reader.dtype
    ((5, 32, 32, 1), dtype('float32'))
    """
    if isinstance(source, VideoReader):
        return source
    if isinstance(source, ReaderSpec):
        if source.opener is not None:
            return source.open()
        return open_reader(source.source, source.format, **{**source.options, **kwargs})
    name = None if format is None else normalize_format(format)
    if isinstance(source, np.ndarray) or name == "ARRAY":
        if name not in (None, "ARRAY"):
            raise TypeError(f"an in-memory array is read with format='ARRAY', not {format!r}")
        return _array_reader(source, **kwargs)
    if isinstance(source, list | tuple):
        if not source:
            raise ValueError("the list of input files is empty")
        if len(source) == 1:
            return open_reader(source[0], format, **kwargs)
        from pyflowreg.io.multifile import MultiFileReader

        readers: list[VideoReader] = []
        try:
            for path in source:
                readers.append(open_reader(path, format, **kwargs))
            return MultiFileReader(readers, source, name, kwargs)
        except BaseException:
            for r in readers:
                r.close()
            raise
    if not isinstance(source, str | PathLike):
        raise TypeError(
            f"source must be a path, a list of paths or an ndarray, got {type(source).__name__}"
        )
    path = check_input_path(source)
    name = name or detect_format(path)
    factory = FORMATS[name].reader
    if factory is None:
        raise ValueError(f"format {name!r} can only be written, not read")
    return factory(path, **kwargs)


def open_writer(path: PathType | None, format: str | None = None, **kwargs: Any) -> VideoWriter:
    """Open a video writer.

    Parameters
    ----------
    path : path-like or None
        Output file (``None`` is allowed for ``ARRAY`` and ``NULL``).
    format : str, optional
        ``"HDF5"``, ``"TIFF"``, ``"MAT"``, ``"NPY"``, ``"ZARR"``, ``"ARRAY"`` or ``"NULL"``;
        default: from the extension. Also the write-only layouts ``"SUITE2P_TIFF"`` (channels as
        interleaved plain pages), ``"MULTIFILE_TIFF"``, ``"MULTIFILE_HDF5"``, ``"MULTIFILE_MAT"``
        (one file per channel, ``<stem>_ch<N>.<FORMAT>``) and ``"CAIMAN_HDF5"`` (one
        ``<stem>_ch<N>.hdf5`` per channel with a ``(T, H, W)`` dataset ``mov``).
    **kwargs
        Writer options (``expected_frames`` for all; ``layout``, ``compression``, ``bigtiff``,
        ``version="5"`` for a v5 MAT file, ...).

    Returns
    -------
    VideoWriter
        ``writer.write(frames)`` appends ``(n, H, W, C)`` blocks; close it (or use ``with``).
    """
    if format is None:
        if path is None:
            raise ValueError("open_writer needs a path or a format ('ARRAY' or 'NULL' for none)")
        name = detect_format(path)
    else:
        name = normalize_format(format)
    return FORMATS[name].writer(path, **kwargs)
