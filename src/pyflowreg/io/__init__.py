"""Readers and writers for 2-photon videos, behind one small interface.

>>> from pyflowreg.io import open_reader, open_writer
>>> with open_reader("recording.tif") as reader:          # doctest: +SKIP
...     first = reader[0]                                  # (H, W, C)
...     block = reader.read(100, 200)                      # (100, H, W, C)
>>> with open_writer("registered.h5") as writer:          # doctest: +SKIP
...     writer.write(block)

Formats (by extension or ``format=``, any case): ``HDF5`` (.h5 .hdf5), ``TIFF`` (.tif .tiff,
ImageJ, ScanImage, BigTIFF), ``MAT`` (.mat v5 and v7.3), ``NPY`` (.npy), ``ZARR`` (.zarr, needs
``pip install "pyflowreg[zarr]"``), ``ARRAY`` (in memory) and ``NULL`` (discard). A list of paths
opens one file per channel. Write-only layouts: ``SUITE2P_TIFF``, ``MULTIFILE_TIFF``,
``MULTIFILE_HDF5``, ``MULTIFILE_MAT`` and ``CAIMAN_HDF5``.

Readers also read in batches of ``buffer_size`` frames (``for batch in reader``,
``reader.read_batch()``). PyFlowReg's factory functions over these readers and writers are in
:mod:`pyflowreg.util.io`.
"""

from pyflowreg.io.base import (
    CorruptFileError,
    DatasetNotFoundError,
    ReaderSpec,
    VideoReader,
    VideoWriter,
)
from pyflowreg.io.formats import FORMATS, detect_format, normalize_format, open_reader, open_writer
from pyflowreg.io.memory import ArrayReader, ArrayWriter, NullWriter

__all__ = [
    "FORMATS",
    "ArrayReader",
    "ArrayWriter",
    "CorruptFileError",
    "DatasetNotFoundError",
    "NullWriter",
    "ReaderSpec",
    "VideoReader",
    "VideoWriter",
    "detect_format",
    "normalize_format",
    "open_reader",
    "open_writer",
]
