"""Third-party plug-ins for the executor and runtime tests.

They live in a module of their own (not in a test file) so that multiprocessing workers can import
them by reference, exactly like a plug-in package installed by a user.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from typing import NamedTuple

import numpy as np

from pyflowreg.backends.base import FlowBackend, broadcast_uv
from pyflowreg.executors.base import Executor
from pyflowreg.executors.sequential import SequentialExecutor

#: Value of ``frame[0, 0, 0]`` that makes :class:`ShiftBackend` raise.
POISON = -1.0


class ShiftPrepared(NamedTuple):
    """A prepared reference with the shapes of the real one: arrays, scalars, lists of arrays."""

    reference: np.ndarray
    mean: float
    levels: list
    empty: np.ndarray


class ShiftBackend(FlowBackend):
    """A cheap deterministic flow: ``u`` and ``v`` from the difference to the reference.

    ``backend_params``: ``{"die_in_worker": True}`` makes ``estimate`` SIGKILL its own process
    when it runs in a child process; ``{"probe_threads": True}`` returns the thread limits seen by
    the process (``u`` = Numba's configured thread count, ``v`` = ``OMP_NUM_THREADS``, -1 when
    unset) instead of a flow; a frame whose first pixel is :data:`POISON` raises.
    """

    name = "shift"

    def prepare_reference(self, reference, weight=None) -> ShiftPrepared:
        reference = np.asarray(reference, np.float32)
        half = reference[::2, ::2].copy()
        return ShiftPrepared(reference, float(reference.mean()), [half, half * 2], np.empty(0))

    def estimate(self, prepared: ShiftPrepared, frames, uv=None) -> np.ndarray:
        if self.backend_params.get("die_in_worker") and multiprocessing.parent_process():
            os.kill(os.getpid(), signal.SIGKILL)
        frames = np.asarray(frames, np.float32)
        if self.backend_params.get("probe_threads"):
            import numba

            out = np.empty((*frames.shape[:3], 2), np.float32)
            out[..., 0] = numba.config.NUMBA_NUM_THREADS
            out[..., 1] = float(os.environ.get("OMP_NUM_THREADS", -1))
            return out
        init = broadcast_uv(uv, frames.shape[0], frames.shape[1:3])
        out = np.empty((*frames.shape[:3], 2), np.float32)
        for t, frame in enumerate(frames):
            if frame[0, 0, 0] == POISON:
                raise ValueError("poisoned frame")
            diff = (frame - prepared.reference).mean(axis=-1)
            out[t, ..., 0] = init[t, ..., 0] + 0.5 * diff + prepared.levels[1].mean()
            out[t, ..., 1] = init[t, ..., 1] - 0.25 * diff + prepared.mean
        return out


def make_shift_backend(params, backend_params=None) -> ShiftBackend:
    """A factory function (rather than the class) registered as a flow backend."""
    return ShiftBackend(params, backend_params)


class InlineExecutor(SequentialExecutor):
    """A third-party executor: the sequential one under another name."""

    name = "inline"


class BareExecutor(Executor):
    """A third-party executor derived from the base class that writes no frame loop of its own
    (it gets :func:`pyflowreg.executors.base.register_frames` from :meth:`Executor._run_batch`)."""

    name = "bare"
