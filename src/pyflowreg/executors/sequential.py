"""The sequential executor: one frame at a time in the calling thread."""

from __future__ import annotations

import numpy as np

from .base import Executor, estimate_frames, warp_frame


class SequentialExecutor(Executor):
    """Register a batch in the calling thread (lowest memory, easiest to debug).

    The flow backend gets the whole batch in one ``estimate`` call (GPU backends batch it on the
    device; the CPU backend loops over the frames); frames are then warped one by one. ``n_jobs``
    is validated but ignored: there is always one worker. The only executor the GPU flow backends
    support.
    """

    name = "sequential"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.n_workers = 1

    def _run_batch(
        self,
        raw: np.ndarray,
        filtered: np.ndarray,
        uv: np.ndarray,
        first_index: int,
        registered: np.ndarray,
        flow: np.ndarray,
    ) -> None:
        try:
            # one call for the whole batch: GPU backends solve the frames as a tensor dimension
            estimate_frames(self.backend, self._prepared, filtered, uv, flow)
        except Exception as exc:
            raise self._frame_error(first_index, exc, raw.shape[0]) from exc
        for i in range(raw.shape[0]):
            try:
                warp_frame(raw[i], flow[i], self.warp_settings, registered[i])
            except Exception as exc:
                raise self._frame_error(first_index + i, exc) from exc
