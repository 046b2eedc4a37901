"""pyflowreg: motion correction of 2-photon microscopy videos by variational optical flow."""

__version__ = "0.1.0"
