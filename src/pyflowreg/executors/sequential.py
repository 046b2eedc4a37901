"""The sequential executor: one frame at a time in the calling thread."""

from __future__ import annotations

import numpy as np

from .base import Executor, register_frame


class SequentialExecutor(Executor):
    """Register frames one after the other (lowest memory, easiest to debug).

    ``n_jobs`` is validated but ignored: there is always one worker. The only executor the GPU
    flow backends support.
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
        backend, prepared, settings = self.backend, self._prepared, self.warp_settings
        for i in range(raw.shape[0]):
            try:
                registered[i], flow[i] = register_frame(
                    backend, prepared, raw[i], filtered[i], uv, settings
                )
            except Exception as exc:
                raise self._frame_error(first_index + i, exc) from exc
