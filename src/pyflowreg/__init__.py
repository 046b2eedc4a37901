"""pyflowreg: motion correction of 2-photon microscopy videos by variational optical flow."""

__version__ = "0.1.0"

__all__ = ["__version__", "load_run"]


def __getattr__(name: str):
    # lazy: ``import pyflowreg`` stays light; ``pyflowreg.load_run`` loads the pipeline
    if name == "load_run":
        from .motion_correction.runs import load_run

        return load_run
    raise AttributeError(f"module 'pyflowreg' has no attribute {name!r}")
