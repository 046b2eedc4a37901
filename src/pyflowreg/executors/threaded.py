"""The threading executor: a pool of threads over the frames of a batch.

The Numba kernels of the CPU backend release the GIL, so threads run the flow solves truly in
parallel without copying frames into other processes. The flow backend instance (and the prepared
reference) are shared by all threads: a backend that declares support for ``"threading"`` must
have a thread-safe ``estimate``.
"""

from __future__ import annotations

import concurrent.futures as cf

import numpy as np

from .base import Executor, PendingBatch, register_frame


class ThreadingExecutor(Executor):
    """Register the frames of a batch on ``n_jobs`` threads (``-1``: one per core)."""

    name = "threading"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pool: cf.ThreadPoolExecutor | None = None

    def _submit(
        self, raw: np.ndarray, filtered: np.ndarray, uv: np.ndarray, first_index: int
    ) -> PendingBatch:
        backend, prepared, settings = self.backend, self._prepared, self.warp_settings
        registered, flow = self._new_outputs(raw.shape[0])

        def work(i: int) -> None:
            register_frame(
                backend, prepared, raw[i], filtered[i], uv, settings, (registered[i], flow[i])
            )

        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(self.n_workers, thread_name_prefix="pyflowreg")
        futures = [self._pool.submit(work, i) for i in range(raw.shape[0])]

        def cancel() -> None:
            for future in futures:
                future.cancel()

        def wait() -> tuple[np.ndarray, np.ndarray]:
            try:
                cf.wait(futures, return_when=cf.FIRST_EXCEPTION)
            finally:
                # stop early on an error (or KeyboardInterrupt): drop queued frames, let
                # running ones finish so nothing writes into the outputs after we return
                cancel()
                cf.wait(futures)
            for i, future in enumerate(futures):
                exc = None if future.cancelled() else future.exception()
                if exc is not None:
                    raise self._frame_error(first_index + i, exc) from exc
            return registered, flow

        return PendingBatch(wait, cancel=cancel)

    def close(self) -> None:
        """Shut the thread pool down and release the backend."""
        self._cancel_in_flight()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        super().close()
