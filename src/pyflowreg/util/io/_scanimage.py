"""PyFlowReg's ``pyflowreg.util.io._scanimage``: ScanImage TIFF metadata (:mod:`pyflowreg.io.tiff`).

:func:`scanimage_layout(tifffile.TiffFile) <scanimage_layout>` gives ``(n_channels, n_planes,
planes_outer)`` of a ScanImage file (saved channels, planes of a volume, page order), or ``None``
for other TIFFs. The TIFF reader applies it on its own: channels are deinterleaved and ``plane=``
picks one plane of a volume.
"""

from pyflowreg.io.tiff import scanimage_layout

__all__ = ["scanimage_layout"]
