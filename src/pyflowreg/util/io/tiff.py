"""PyFlowReg's ``pyflowreg.util.io.tiff``: TIFF videos (:mod:`pyflowreg.io.tiff`).

ScanImage files are recognised from their metadata (channels deinterleaved, planes selected with
``plane=``); ``n_channels=N`` deinterleaves plain multi-page files (PyFlowReg's
``deinterleave=N`` through :func:`~pyflowreg.util.io.factory.get_video_file_reader`).
"""

from pyflowreg.io.tiff import TIFFReader, TIFFWriter, scanimage_layout

#: PyFlowReg's names of the TIFF reader and writer.
TIFFFileReader = TIFFReader
TIFFFileWriter = TIFFWriter

__all__ = [
    "TIFFFileReader",
    "TIFFFileWriter",
    "TIFFReader",
    "TIFFWriter",
    "scanimage_layout",
]
