"""PyFlowReg's reader/writer factory: :func:`get_video_file_reader`, :func:`get_video_file_writer`.

Both return this package's readers and writers (:mod:`pyflowreg.io`) after translating
PyFlowReg's option names; the readers index like ``(T, H, W, C)`` arrays and also read in batches
of ``buffer_size`` frames.

>>> import numpy as np
>>> from pyflowreg.util.io import get_video_file_reader
>>> reader = get_video_file_reader(np.zeros((10, 16, 16, 2), np.uint16), buffer_size=4)
>>> len(reader), reader[0].shape, [b.shape[0] for b in reader]
(10, (16, 16, 2), [4, 4, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from os import PathLike
from typing import Any

import numpy as np

from pyflowreg.io.base import VideoReader, VideoWriter
from pyflowreg.io.formats import normalize_format, open_reader, open_writer
from pyflowreg.util.io._options import open_file, writer_options
from pyflowreg.util.io.multifile_wrappers import MULTICHANNELFileReader

__all__ = ["get_video_file_reader", "get_video_file_writer"]

_MEMORY_FORMATS = ("ARRAY", "NULL")


def get_video_file_reader(
    input_source: str | PathLike | Sequence[str | PathLike] | np.ndarray | VideoReader,
    buffer_size: int = 500,
    bin_size: int = 1,
    **kwargs: Any,
) -> VideoReader:
    """Open a video for reading.

    Parameters
    ----------
    input_source : path-like, list of path-like, ndarray or VideoReader
        A file, chosen by extension: ``.tif``/``.tiff`` (TIFF, incl. ScanImage and ImageJ),
        ``.h5``/``.hdf5``/``.hdf`` (HDF5), ``.mat`` (MAT v5 and v7.3), ``.npy``, ``.zarr``;
        a file with another extension is read as HDF5 if it is one. A list of files is one video
        with a channel per file (:class:`~pyflowreg.util.io.multifile_wrappers.
        MULTICHANNELFileReader`). An array ``(T, H, W[, C])`` is read in memory. A reader is
        returned as it is (with ``buffer_size`` set).
    buffer_size : int
        Frames per batch of ``read_batch()`` and of ``for batch in reader`` (default 500).
    bin_size : int
        Temporal binning: frame ``i`` is the mean of input frames ``i*bin_size`` to
        ``(i+1)*bin_size - 1`` (a trailing partial bin is dropped); indices refer to binned frames.
    **kwargs
        Reader options. TIFF: ``use_memmap`` (default ``True``), ``deinterleave=N`` (N
        consecutive single-channel pages form one N-channel frame, e.g. Suite2p files),
        ``plane``; HDF5/MAT: ``dataset_names`` (one name, or one dataset per channel),
        ``axis_order``. Unknown options raise ``TypeError``.

    Returns
    -------
    VideoReader
        ``len(reader)`` frames; ``reader[i]`` is ``(H, W, C)``, ``reader[a:b]``,
        ``reader[::2]``, ``reader[[0, 5]]`` are ``(n, H, W, C)``; ``shape``, ``dtype``,
        ``n_channels``; ``has_batch()``/``read_batch()``; close it or use ``with``.
    """
    if isinstance(input_source, VideoReader):
        if kwargs:
            raise TypeError(
                f"reader options {sorted(kwargs)} cannot be applied to an open reader; "
                f"open the file with them instead"
            )
        if bin_size != 1 and bin_size != input_source.bin_size:
            raise ValueError(
                f"the reader was opened with bin_size={input_source.bin_size}, got "
                f"bin_size={bin_size}; open the file with the bin_size you need"
            )
        input_source.buffer_size = buffer_size
        return input_source
    if isinstance(input_source, np.ndarray):
        reader = open_reader(input_source, "ARRAY", bin_size=bin_size, **kwargs)
    elif isinstance(input_source, list | tuple):
        if len(input_source) == 1:
            reader = open_file(input_source[0], bin_size, **kwargs)
        else:
            return MULTICHANNELFileReader(input_source, buffer_size, bin_size, **kwargs)
    elif isinstance(input_source, str | PathLike):
        reader = open_file(input_source, bin_size, **kwargs)
    else:
        raise TypeError(
            f"input_source must be a path, a list of paths, an ndarray or a VideoReader, "
            f"got {type(input_source).__name__}"
        )
    try:
        reader.buffer_size = buffer_size
    except BaseException:
        reader.close()
        raise
    return reader


def get_video_file_writer(
    file_path: str | PathLike | None, output_format: str | Enum, **kwargs: Any
) -> VideoWriter:
    """Open a video writer.

    Parameters
    ----------
    file_path : path-like
        Output file; ignored (may be ``""`` or ``None``) for ``ARRAY`` and ``NULL``. For the
        per-channel formats, ``folder/name.ext`` gives ``folder/name_ch1.<FORMAT>``, ...
        (a path without extension is a folder: ``folder/compensated_ch1.<FORMAT>``).
    output_format : str or enum
        ``"HDF5"`` (one ``(T, H, W)`` dataset per channel, ``ch1``, ``ch2``, ...), ``"TIFF"``
        (multi-page, BigTIFF), ``"MAT"`` (one ``(H, W, T)`` variable per channel, MAT v5 unless
        ``use_v73=True``), ``"SUITE2P_TIFF"`` (channels as interleaved single-channel pages),
        ``"MULTIFILE_TIFF"``, ``"MULTIFILE_HDF5"``, ``"MULTIFILE_MAT"`` (one file per channel),
        ``"CAIMAN_HDF5"`` (one HDF5 file per channel, dataset ``mov``), ``"ARRAY"`` (in memory,
        ``get_array()``), ``"NULL"`` (discard); also ``"NPY"`` and ``"ZARR"``. Any case; an
        enum member's value is used.
    **kwargs
        Writer options. HDF5: ``dataset_names`` (list, or a pattern such as ``"ch{}"``),
        ``compression`` (``"gzip"``/``"lzf"``), ``compression_level``, ``chunk_size`` (frames per
        chunk), ``dimension_ordering`` (storage axes of H, W, T; default ``(1, 2, 0)``, frames
        first). TIFF: ``compression`` (``"none"``, ``"zlib"``/``"deflate"``, ``"lzw"``,
        ``"jpeg"``), ``bigtiff`` (default ``True``), ``imagej``. MAT: ``use_v73``,
        ``dataset_names``.

    Returns
    -------
    VideoWriter
        ``writer.write_frames(frames)`` appends ``(T, H, W, C)`` (or ``(H, W, C)``/``(H, W)``)
        blocks; the first write fixes frame size and dtype. Close it, or use ``with``.
    """
    if isinstance(output_format, Enum):
        output_format = output_format.value
    if isinstance(output_format, str) and output_format.strip().upper() == "BEGONIA":
        raise NotImplementedError("the BEGONIA output format is not implemented")
    fmt = normalize_format(output_format)
    options = writer_options(fmt, kwargs)
    if fmt in _MEMORY_FORMATS:
        return open_writer(None, fmt, **options)
    if file_path is None or str(file_path) == "":
        raise ValueError(f"the {fmt} writer needs an output path, got {file_path!r}")
    return open_writer(file_path, fmt, **options)
