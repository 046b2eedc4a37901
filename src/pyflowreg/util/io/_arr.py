"""PyFlowReg's ``pyflowreg.util.io._arr``: videos in memory (:mod:`pyflowreg.io.memory`).

``ArrayReader(array)`` reads a ``(T, H, W[, C])`` array; ``ArrayWriter`` collects written frames
(``get_array()`` returns them, ``(T, H, W, C)``); ``NullWriter`` discards them.
"""

from pyflowreg.io.memory import ArrayReader, ArrayWriter, NullWriter

__all__ = ["ArrayReader", "ArrayWriter", "NullWriter"]
