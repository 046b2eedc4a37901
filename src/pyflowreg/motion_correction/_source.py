"""Frames of a recording, read in bounded chunks, normalised and pre-filtered.

:class:`FrameSource` is how the pipeline sees a recording: ``read(start, stop)``
returns the raw frames of that range and their normalised, Gaussian-filtered
float32 copy. The temporal part of the filter needs frames on both sides of the
range (ALGORITHM.md: "a temporal σ that actually filters must see frames across
batch boundaries"), so the source reads ``halo`` extra frames on each side,
filters the extended block and cuts the halo off again. Because the halo covers
the whole kernel, the filtered frames do not depend on how the video is cut into
batches: batch by batch gives exactly what filtering the whole video at once
would give. The reader is never asked for more than ``stop - start + 2 * halo``
frames at once.

A source may cover a subset of the frames (``indices``, e.g. the reference
frames); its frames are then numbered ``0 .. len(indices) - 1`` and the temporal
filter treats them as one contiguous clip.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..core import preprocess


def sigma_per_channel(sigma, n_channels: int) -> np.ndarray:
    """Gaussian pre-filter widths as a ``(C, 3)`` float array of ``(σy, σx, σt)``.

    Parameters
    ----------
    sigma : array_like, shape (3,) or (C, 3)
        One triple for all channels, or one per channel.
    n_channels : int
    """
    arr = np.asarray(sigma, dtype=np.float64)
    if arr.ndim == 1:
        arr = np.broadcast_to(arr, (n_channels, arr.shape[0]))
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"sigma must have shape (3,) or (C, 3), got {np.shape(sigma)}")
    if arr.shape[0] == 1 and n_channels > 1:
        arr = np.broadcast_to(arr, (n_channels, 3))
    if arr.shape[0] != n_channels:
        raise ValueError(
            f"sigma has {arr.shape[0]} rows but the video has {n_channels} channels; "
            "give one (σy, σx, σt) triple or one per channel"
        )
    return np.ascontiguousarray(arr)


def preprocess_frames(
    raw: np.ndarray, low, high, sigma: np.ndarray, workers: int = 1
) -> np.ndarray:
    """Normalise ``(T, H, W, C)`` frames with ``(low, high)`` and apply the Gaussian filter
    (on ``workers`` threads; the result does not depend on it)."""
    return preprocess.prefilter(raw, low, high, sigma, workers=workers)


def preprocess_image(image: np.ndarray, low, high, sigma: np.ndarray) -> np.ndarray:
    """Normalise and spatially filter one ``(H, W, C)`` image (the reference); float32."""
    spatial = np.array(sigma, dtype=np.float64, copy=True)
    spatial[:, 2] = 0.0  # a single image has no time axis to filter
    return preprocess_frames(image[None], low, high, spatial)[0]


def check_finite_frames(frames: np.ndarray, name: str, first: int = 0, frame_index=None) -> None:
    """Raise if a frame of a floating-point block holds NaN or inf values.

    The one NaN check of the inputs: a file before its run (in chunks), an in-memory video,
    every range a :class:`FrameSource` reads, the frames of the live corrector.

    Parameters
    ----------
    frames : ndarray, shape (n, ...)
        A block of frames; integer blocks always pass.
    name : str
        The input, as the message names it (a file name, ``"video"``).
    first : int
        Number of ``frames[0]`` (in the recording, or in the source).
    frame_index : callable, optional
        Maps a source's frame number to the recording's (:meth:`FrameSource.frame_index`).

    Raises
    ------
    ValueError
        E.g. ``frame 7 of in.h5 contains NaN or inf values (and 2 more in frames 4-11);
        replace them (e.g. np.nan_to_num) before registering``.
    """
    if frames.dtype.kind != "f" or frames.size == 0:
        return
    bad = np.flatnonzero(~np.isfinite(frames.reshape(frames.shape[0], -1)).all(axis=1))
    if bad.size == 0:
        return
    number = frame_index or int
    more = ""
    if bad.size > 1:
        span = f"{number(first)}-{number(first + frames.shape[0] - 1)}"
        more = f" (and {bad.size - 1} more in frames {span})"
    raise ValueError(
        f"frame {number(first + int(bad[0]))} of {name} contains NaN or inf values{more}; "
        "replace them (e.g. np.nan_to_num) before registering"
    )


class FrameSource:
    """Read ranges of frames with their normalised, pre-filtered copy.

    Parameters
    ----------
    reader : VideoReader
        Anything with ``shape`` ``(T, H, W, C)`` and ``read(start, stop)``.
    low, high : float or ndarray, shape (C,)
        Raw intensities mapped to 0 and 1 (from the raw reference).
    sigma : ndarray, shape (C, 3)
        Gaussian pre-filter ``(σy, σx, σt)`` per channel.
    indices : sequence of int, optional
        Frames of the reader that make up this source (default: all, in order).
    name : str
        Used in error messages (file name or "array").
    workers : int
        Threads for the pre-processing (the executor's worker count; same result for any).
    """

    def __init__(
        self,
        reader,
        low,
        high,
        sigma: np.ndarray,
        *,
        indices=None,
        name: str = "input",
        workers: int = 1,
    ):
        self.reader = reader
        self.workers = max(1, int(workers))
        self._lock = threading.Lock()  # readers (tifffile handles) are not thread-safe
        self.low = low
        self.high = high
        self.sigma = np.asarray(sigma, dtype=np.float64)
        self.halo = int(preprocess.temporal_halo(self.sigma))
        self.name = name
        n_total = int(reader.shape[0])
        if indices is None:
            self.indices = None
            self._len = n_total
        else:
            idx = np.asarray(indices, dtype=np.int64).ravel()
            if idx.size and (idx.min() < 0 or idx.max() >= n_total):
                raise ValueError(
                    f"frame indices must lie in [0, {n_total}), got {idx.min()}..{idx.max()}"
                )
            self.indices = idx
            self._len = int(idx.size)

    def __len__(self) -> int:
        return self._len

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.reader.shape[1:])  # type: ignore[return-value]

    def frame_index(self, i: int) -> int:
        """Index in the recording of this source's frame ``i``."""
        return int(i) if self.indices is None else int(self.indices[i])

    def read_raw(self, start: int, stop: int) -> np.ndarray:
        """Raw frames ``start .. stop - 1`` of this source, ``(n, H, W, C)`` reader dtype."""
        with self._lock:
            if self.indices is None:
                raw = np.asarray(self.reader.read(start, stop))
            else:
                raw = self._read_indices(self.indices[start:stop])
        check_finite_frames(raw, self.name, start, self.frame_index)
        return raw

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw frames of ``[start, stop)`` and their pre-processed float32 copy.

        Returns
        -------
        raw : ndarray, shape (n, H, W, C), reader dtype
        filtered : ndarray, shape (n, H, W, C), float32
        """
        lo = max(0, start - self.halo)
        hi = min(len(self), stop + self.halo)
        block = self.read_raw(lo, hi)
        filtered = preprocess_frames(block, self.low, self.high, self.sigma, self.workers)
        cut = slice(start - lo, start - lo + (stop - start))
        return block[cut], np.ascontiguousarray(filtered[cut])

    def _read_indices(self, idx: np.ndarray) -> np.ndarray:
        """Read arbitrary frame indices as few contiguous ranges."""
        if idx.size == 0:
            return np.asarray(self.reader.read(0, 0))
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        parts = [
            np.asarray(self.reader.read(int(run[0]), int(run[-1]) + 1))
            for run in np.split(idx, breaks)
        ]
        return np.concatenate(parts, axis=0)


class ReadAhead:
    """``(start, stop, raw, filtered)`` for each range, the next range read and pre-filtered on a
    background thread while the caller registers the current one (one range ahead at most).

    The read-ahead of the next range starts when the caller calls :meth:`ahead` (once it has
    let go of what it no longer needs, so that at most two ranges are in memory), or else when
    it asks for the next range. Only for parallel runs (``source.workers > 1``): a sequential
    run reads in the caller's thread, one range in memory, one core busy.
    """

    def __init__(self, source: FrameSource, ranges: list[tuple[int, int]]) -> None:
        self.source = source
        self.ranges = list(ranges)
        self._next = 0
        self._pending = None
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="pyflowreg-read")
            if source.workers > 1
            else None
        )

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        try:
            while self._next < len(self.ranges):
                start, stop = self.ranges[self._next]
                if self._pending is None:
                    raw, filtered = self.source.read(start, stop)
                else:
                    pending, self._pending = self._pending, None
                    raw, filtered = pending.result()
                self._next += 1
                if self._pool is not None and self._next == 1:
                    self.ahead()  # nothing to let go of yet
                yield start, stop, raw, filtered
                del raw, filtered
        finally:
            self.close()

    def ahead(self) -> None:
        """Start reading the next range on the background thread (no-op when sequential,
        already started, or at the end)."""
        if self._pool is None or self._pending is not None or self._next >= len(self.ranges):
            return
        self._pending = self._pool.submit(self.source.read, *self.ranges[self._next])

    def close(self) -> None:
        """Stop the background thread (waits for a read in progress)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending = None


def batch_ranges(n_frames: int, buffer_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` cutting ``n_frames`` into batches of ``buffer_size``."""
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
    return [(s, min(s + buffer_size, n_frames)) for s in range(0, n_frames, buffer_size)]
