"""Initial flow field of every batch (the chaining rule of the pipeline).

The rule, fixed so that any executor, including one that runs batches in parallel
on a cluster, reproduces it bit for bit:

* ``W_0 = [0, min(20, T))`` and, for a batch ``b >= 1`` starting at frame ``s_b``,
  ``W_b = [max(0, s_b - 20), s_b)``: the (up to) 20 frames before the batch.
* ``uv_0`` is the mean flow of the frames of ``W_0`` estimated from zero initial
  flow; batch 0 starts from ``uv_0``.
* ``uv_b`` (``b >= 1``) is the mean flow of the frames of ``W_b`` estimated from
  ``uv_{b-1}``, with the same backend, parameters and reference as the batches;
  batch ``b`` starts from ``uv_b``. Since ``W_b`` is the tail of batch ``b - 1``
  (when ``buffer_size >= 20``), ``uv_b`` equals the mean flow of the last 20 frames
  of the previous batch, as in the original sequential pipeline; but computing it
  in this cheap "boundary pass" (20 frames per batch) *before* the batches makes
  every batch's initial field known up front and the batches independent.
* ``update_initialization_w=False``: every batch starts from zeros.
* ``cc_initialization=True``: a rigid shift from phase correlation
  (:func:`~pyflowreg.motion_correction.reference.phase_correlation_shift`) of the
  mean pre-filtered frame of a window against the pre-filtered reference is added
  as a constant field. With chaining it seeds the chain (it replaces the zero
  initial flow of ``W_0``; later batches inherit it through the chain); without
  chaining each batch starts from the shift of the mean of its own first (up to)
  20 frames.
* With ``update_reference=True`` the reference changes after every batch, so the
  pipeline asks for ``uv_b`` just before batch ``b`` (same formulas, current
  reference) instead of planning all batches up front.

Means are taken in float64 and stored as float32 ``(H, W, 2)`` fields.
"""

from __future__ import annotations

import numpy as np

from ._source import FrameSource
from .reference import phase_correlation_shift

#: Frames whose mean flow initialises the next batch.
N_INIT_FRAMES = 20


class InitialFlowPlanner:
    """Compute the initial flow of batches ``0, 1, 2, ...`` in order.

    Parameters
    ----------
    source : FrameSource
        The pre-processed recording.
    executor : Executor
        With its reference set; ``submit_batch`` gives the fields of a window (read
        from the executor's buffers, never copied out).
    batches : list of (start, stop)
    reference : ndarray, shape (H, W, C), float32
        The pre-processed reference (for ``cc_initialization``).
    chain : bool
        ``update_initialization_w``.
    cc : bool
        ``cc_initialization``.
    cc_hw : int or (int, int)
        Longest side of the copies used for phase correlation (or ``(height, width)``).
    cc_up : int
        Up-sampling factor of the correlation peak search (``cc_up``).
    """

    def __init__(
        self,
        source: FrameSource,
        executor,
        batches: list[tuple[int, int]],
        reference: np.ndarray,
        *,
        chain: bool = True,
        cc: bool = False,
        cc_hw: int | tuple[int, int] = 256,
        cc_up: int = 1,
    ) -> None:
        self.source = source
        self.executor = executor
        self.batches = list(batches)
        self.reference = reference
        self.chain = bool(chain)
        self.cc = bool(cc)
        self.cc_hw = cc_hw if isinstance(cc_hw, tuple) else int(cc_hw)
        self.cc_up = int(cc_up)
        h, w = source.frame_shape[:2]
        self._shape = (h, w, 2)
        self._previous: np.ndarray | None = None
        self._observed: np.ndarray | None = None
        self._next_batch = 0

    def set_reference(self, reference: np.ndarray) -> None:
        """Use a new pre-processed reference for the following batches."""
        self.reference = reference
        self._observed = None

    def observe(self, w: np.ndarray) -> None:
        """Hand over the fields ``(n, H, W, 2)`` of the batch just registered.

        When the window of the next batch is the tail of that batch (``buffer_size >=
        20``) and the reference did not change, the next initial flow is the mean of
        those fields: exactly what the boundary pass would compute (every executor gives
        the same field for the same frame, reference and initial flow), without
        estimating the 20 frames a second time.
        """
        b = self._next_batch
        self._observed = None
        if not self.chain or b == 0 or b >= len(self.batches):
            return
        start, stop = self.window(b)
        prev_start, prev_stop = self.batches[b - 1]
        if start >= prev_start and stop == prev_stop and len(w) == prev_stop - prev_start:
            tail = np.asarray(w)[start - prev_start :]
            self._observed = tail.mean(axis=0, dtype=np.float64).astype(np.float32)

    def planned(self, b: int) -> np.ndarray | None:
        """The initial flow of batch ``b`` if :meth:`next` has just given it, else None
        (what a checkpoint saves to resume at batch ``b``)."""
        return self._previous if self.chain and self._next_batch == b + 1 else None

    def resume_at(self, b: int, uv: np.ndarray | None) -> None:
        """Continue with batch ``b``, whose initial flow ``uv`` an interrupted run planned
        (None without chaining: it depends on batch ``b``'s own frames only)."""
        if self.chain and b > 0 and uv is None:
            raise ValueError(f"resuming at batch {b} needs its initial flow")
        self._next_batch = int(b)
        self._observed = None if uv is None else np.asarray(uv, np.float32)
        self._previous = self._observed

    def window(self, b: int) -> tuple[int, int]:
        """Frames ``[start, stop)`` whose flows give the initial field of batch ``b``."""
        start, stop = self.batches[b]
        if not self.chain:
            return start, min(start + N_INIT_FRAMES, stop)
        if b == 0:
            return 0, min(N_INIT_FRAMES, len(self.source))
        return max(0, start - N_INIT_FRAMES), start

    def next(self) -> np.ndarray:
        """Initial flow ``(H, W, 2)`` float32 of the next batch (call once per batch)."""
        b = self._next_batch
        if b >= len(self.batches):
            raise IndexError(f"all {len(self.batches)} batches are planned already")
        start, stop = self.window(b)
        uv = np.zeros(self._shape, np.float32)
        if not self.chain:
            if self.cc:
                uv = self._rigid(start, stop)
        else:
            if b > 0 and self._observed is not None:
                uv = self._observed
            else:
                seed = self._previous if b > 0 else (self._rigid(start, stop) if self.cc else uv)
                uv = self._mean_flow(start, stop, seed)
            self._previous = uv
            self._observed = None
        self._next_batch += 1
        return uv

    def plan(self) -> list[np.ndarray]:
        """Initial flows of all remaining batches, computed now (before the batches).

        Gives the same fields as calling :meth:`next` before each batch and
        :meth:`observe` after it; a runner that registers batches in parallel uses this.
        """
        return [self.next() for _ in range(self._next_batch, len(self.batches))]

    def _chunks(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The window cut into reads of at most one batch length."""
        size = max(b[1] - b[0] for b in self.batches)
        return [(s, min(s + size, stop)) for s in range(start, stop, size)]

    def _mean_flow(self, start: int, stop: int, seed: np.ndarray) -> np.ndarray:
        chunks = self._chunks(start, stop)
        fields = []
        for a, b in chunks:
            raw, filtered = self.source.read(a, b)
            pending = self.executor.submit_batch(raw, filtered, seed, self.source.frame_index(a))
            try:
                w = pending.result()[1]
                if len(chunks) == 1:  # the usual case: the mean straight from the executor's
                    return w.mean(axis=0, dtype=np.float64).astype(np.float32)  # buffers
                fields.append(np.array(w))
            finally:
                pending.release()
        return np.concatenate(fields).mean(axis=0, dtype=np.float64).astype(np.float32)

    def _rigid(self, start: int, stop: int) -> np.ndarray:
        total = None
        for a, b in self._chunks(start, stop):
            part = self.source.read(a, b)[1].sum(axis=0, dtype=np.float64)
            total = part if total is None else total + part
        mean = total / (stop - start)
        u, v = phase_correlation_shift(self.reference, mean, self.cc_hw, upsample=self.cc_up)
        uv = np.empty(self._shape, np.float32)
        uv[..., 0] = u
        uv[..., 1] = v
        return uv
