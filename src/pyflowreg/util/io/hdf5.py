"""PyFlowReg's ``pyflowreg.util.io.hdf5``: HDF5 videos (:mod:`pyflowreg.io.hdf5`)."""

from pyflowreg.io.hdf5 import HDF5Reader, HDF5Writer

#: PyFlowReg's names of the HDF5 reader and writer.
HDF5FileReader = HDF5Reader
HDF5FileWriter = HDF5Writer

__all__ = ["HDF5FileReader", "HDF5FileWriter", "HDF5Reader", "HDF5Writer"]
