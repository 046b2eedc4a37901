"""pyflowreg: motion correction of 2-photon microscopy videos by variational optical flow."""

__version__ = "0.1.0"

__all__ = ["__version__", "get_displacement", "load_run"]


def __getattr__(name: str):
    # lazy: ``import pyflowreg`` stays light; ``pyflowreg.load_run`` loads the pipeline
    if name == "load_run":
        from .motion_correction.runs import load_run

        return load_run
    if name == "get_displacement":  # PyFlowReg's top-level name of the per-pair solver
        from .core import get_displacement

        return get_displacement
    raise AttributeError(f"module 'pyflowreg' has no attribute {name!r}")
