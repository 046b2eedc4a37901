"""PyFlowReg's ``pyflowreg.util.io._base``: the reader and writer interfaces.

Both are the classes of :mod:`pyflowreg.io.base`; every reader and writer of this package
derives from them.
"""

from pyflowreg.io.base import VideoReader, VideoWriter

__all__ = ["VideoReader", "VideoWriter"]
