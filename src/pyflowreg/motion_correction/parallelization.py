"""PyFlowReg's ``pyflowreg.motion_correction.parallelization``: the executor classes, which
live in :mod:`pyflowreg.executors` (``BaseExecutor`` is :class:`pyflowreg.executors.Executor`).
Runs pick them by name, ``RegistrationConfig(parallelization=...)``; a new executor registers
with :func:`pyflowreg._runtime.get_runtime` (see docs/parallelization.md).
"""

from ..executors import Executor as BaseExecutor
from ..executors import MultiprocessingExecutor, SequentialExecutor, ThreadingExecutor

__all__ = ["BaseExecutor", "MultiprocessingExecutor", "SequentialExecutor", "ThreadingExecutor"]
