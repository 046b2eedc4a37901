"""The sequential executor: one frame at a time in the calling thread."""

from __future__ import annotations

from .base import Executor


class SequentialExecutor(Executor):
    """Register a batch in the calling thread (lowest memory, easiest to debug).

    Runs the base class's frame loop (:func:`~pyflowreg.executors.base.register_frames`): the
    flow backend gets the whole batch in one ``estimate`` call (GPU backends batch it on the
    device; the CPU backend loops over the frames); frames are then warped one by one.
    ``n_jobs`` is validated but ignored: there is always one worker. The only executor the GPU
    flow backends support.
    """

    name = "sequential"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.n_workers = 1
