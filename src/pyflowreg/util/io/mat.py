"""PyFlowReg's ``pyflowreg.util.io.mat``: MATLAB MAT videos (:mod:`pyflowreg.io.mat`).

Reading: v5/v7 files through :func:`scipy.io.loadmat`, v7.3 files through h5py
(:func:`open_mat` picks the reader). Writing: :class:`MAT5Writer` (v5, written whole at close,
PyFlowReg's default) and :class:`MATWriter` (v7.3, appended batch by batch).
"""

from pyflowreg.io.mat import MAT5Reader, MAT5Writer, MAT73Reader, MATWriter, is_mat73, open_mat

#: PyFlowReg's names: the reader picks v5 or v7.3 from the file; the writer writes v5.
MATFileReader = open_mat
MATFileWriter = MAT5Writer

__all__ = [
    "MAT5Reader",
    "MAT5Writer",
    "MAT73Reader",
    "MATFileReader",
    "MATFileWriter",
    "MATWriter",
    "is_mat73",
    "open_mat",
]
