"""PyFlowReg's ``pyflowreg.util.io``: video readers and writers behind one interface.

The readers and writers are this package's (:mod:`pyflowreg.io`); this module holds PyFlowReg's
names for them and its factory functions, which translate PyFlowReg's option names.

>>> from pyflowreg.util.io import get_video_file_reader, get_video_file_writer
>>> with get_video_file_reader("video.h5", buffer_size=100) as reader:   # doctest: +SKIP
...     for batch in reader:                                             # (<=100, H, W, C)
...         ...
"""

from pyflowreg.util.io._arr import ArrayReader, ArrayWriter, NullWriter
from pyflowreg.util.io._base import VideoReader, VideoWriter
from pyflowreg.util.io.factory import get_video_file_reader, get_video_file_writer
from pyflowreg.util.io.hdf5 import HDF5FileReader, HDF5FileWriter
from pyflowreg.util.io.mat import MAT5Writer, MATFileReader, MATFileWriter, MATWriter
from pyflowreg.util.io.multifile_wrappers import (
    MULTICHANNELFileReader,
    MultiFileReader,
    MultiFileWriter,
)
from pyflowreg.util.io.tiff import TIFFFileReader, TIFFFileWriter

__all__ = [
    "ArrayReader",
    "ArrayWriter",
    "HDF5FileReader",
    "HDF5FileWriter",
    "MAT5Writer",
    "MATFileReader",
    "MATFileWriter",
    "MATWriter",
    "MULTICHANNELFileReader",
    "MultiFileReader",
    "MultiFileWriter",
    "NullWriter",
    "TIFFFileReader",
    "TIFFFileWriter",
    "VideoReader",
    "VideoWriter",
    "get_video_file_reader",
    "get_video_file_writer",
]
