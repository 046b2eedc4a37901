"""The reference frame: computed from the recording, or given; and rigid pre-alignment.

Computed reference (ALGORITHM.md, "Reference"): the frames at
``options.resolved_reference_frames(T)`` (clipped to the video, never padded) are
normalised by their own joint/per-channel min/max, smoothed more strongly than the
frames (σ + (1, 1, 0.5)) and averaged; every frame is then registered to that mean
with ``alpha + 2`` (zero initial flow), and the *raw* frames warped by those fields
are averaged. The frames are streamed in chunks of ``buffer_size``, so memory does not
grow with the number of reference frames. Two passes over the frames: the first takes
their range and their mean (normalising and filtering are linear, so the filtered mean
is the filter of the mean, with the temporal filter's border weights), the second
registers them, pipelined with the executor. A given array or image file is used as is.

:func:`phase_correlation_shift` is the rigid pre-alignment of ``cc_initialization``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core.preprocess import reference_range, temporal_halo
from ._source import FrameSource, ReadAhead, batch_ranges, preprocess_image

#: Extra smoothing of the reference frames, added to the per-channel (σy, σx, σt).
REFERENCE_EXTRA_SIGMA = np.array([1.0, 1.0, 0.5])
#: Added to alpha (both axes) when registering the reference frames to their mean.
REFERENCE_EXTRA_ALPHA = 2.0


def as_reference_image(reference, frame_shape: tuple[int, int, int]) -> np.ndarray:
    """A given reference (array or image file) as a ``(H, W, C)`` float32 image.

    Parameters
    ----------
    reference : ndarray or str or Path
        ``(H, W)``, ``(H, W, C)``, or a file readable by :func:`pyflowreg.io.open_reader`
        (a file with several frames gives their mean).
    frame_shape : (H, W, C)
        Shape of the frames of the recording.
    """
    if isinstance(reference, (str, Path)):
        path = Path(reference)
        if not path.exists():
            raise FileNotFoundError(f"reference file not found: {path}")
        from ..io import open_reader

        with open_reader(path) as reader:
            frames = np.asarray(reader.read(0, reader.shape[0]), dtype=np.float64)
        ref = frames.mean(axis=0)
    else:
        ref = np.asarray(reference)
        if not np.issubdtype(ref.dtype, np.number) or np.issubdtype(ref.dtype, np.complexfloating):
            raise TypeError(f"reference must be a real numeric array, got dtype {ref.dtype}")
    if ref.ndim == 2:
        ref = ref[..., None]
    if ref.shape != tuple(frame_shape):
        if ref.shape[:2] == tuple(frame_shape[:2]) and ref.shape[2] == 1:
            ref = np.repeat(ref, frame_shape[2], axis=2)
        else:
            raise ValueError(
                f"reference has shape {ref.shape} but the frames are (H, W, C) = {frame_shape}"
            )
    ref = ref.astype(np.float32)
    if not np.isfinite(ref).all():
        raise ValueError("reference contains NaN or inf values")
    return ref


def normalization_range(
    reference: np.ndarray, mode: str = "joint"
) -> tuple[np.ndarray, np.ndarray]:
    """Raw intensities mapped to 0 and 1: min and max of the raw reference.

    Parameters
    ----------
    reference : ndarray, shape (H, W, C) or (T, H, W, C)
    mode : {"joint", "separate"}
        One range for all channels, or one per channel.

    Returns
    -------
    low, high : ndarray, shape (C,), float64
        ``high > low`` always (a constant channel gets ``high = low + 1``).
    """
    if mode not in ("joint", "separate"):
        raise ValueError(
            f"channel_normalization must be one of ['joint', 'separate'], got {mode!r}"
        )
    ref = np.asarray(reference)
    ref = ref.reshape(-1, 1, ref.shape[-1])
    return reference_range(ref, separate=mode == "separate")


def compute_reference(
    reader,
    indices,
    *,
    sigma: np.ndarray,
    channel_normalization: str,
    params,
    weight,
    make_executor: Callable,
    chunk_size: int,
    name: str = "input",
    workers: int = 1,
) -> np.ndarray:
    """Reference image from frames of the recording (see module docstring).

    Parameters
    ----------
    reader : VideoReader
        The recording, ``shape`` ``(T, H, W, C)``.
    indices : sequence of int
        Frames to build the reference from (already clipped to the video).
    sigma : ndarray, shape (C, 3)
        Pre-filter of the frames; the reference frames get ``sigma + (1, 1, 0.5)``.
    channel_normalization : {"joint", "separate"}
    params : FlowParameters
        Parameters of the run; the reference registration uses ``alpha + 2``.
    weight : ndarray or None
        Channel weights or spatial weight map, as for the frames.
    make_executor : callable
        ``make_executor(params, dtype)`` returns an executor (context manager) whose
        ``process_batch`` warps raw frames to ``dtype``.
    chunk_size : int
        The run's ``buffer_size``. The reference frames are read and registered in chunks of
        half of it (at least 1 frame): the reference pass then needs less memory than the
        registration that follows, and its first chunk reaches the workers sooner.
    workers : int
        Threads for the pre-processing of the frames (same result for any).

    Returns
    -------
    ndarray, shape (H, W, C), float32
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError("reference_frames selects no frame of the video")
    smooth = np.asarray(sigma, dtype=np.float64) + REFERENCE_EXTRA_SIGMA
    probe = FrameSource(reader, 0.0, 1.0, smooth, indices=indices, name=name)
    chunks = batch_ranges(len(probe), max(1, chunk_size // 2))
    if len(probe) == 1:
        return probe.read_raw(0, 1)[0].astype(np.float32)

    low, high, mean_raw = _range_and_mean(probe, chunks, channel_normalization)
    # the mean of the normalised, filtered frames, from one pass over the raw frames: the
    # pre-filter is linear, so it commutes with the (temporally weighted) mean
    target = preprocess_image(mean_raw, low, high, smooth)

    source = FrameSource(reader, low, high, smooth, indices=indices, name=name, workers=workers)
    alpha = tuple(a + REFERENCE_EXTRA_ALPHA for a in params.alpha)
    ref_params = replace(params, alpha=alpha)
    h, w = source.frame_shape[:2]
    zeros = np.zeros((h, w, 2), np.float32)
    total = np.zeros(source.frame_shape, np.float64)
    with make_executor(ref_params, np.float32) as executor:
        executor.set_reference(target, weight)
        previous = None
        try:
            reads = ReadAhead(source, chunks)
            for start, _, raw, filtered in reads:
                pending = executor.submit_batch(raw, filtered, zeros, source.frame_index(start))
                del raw, filtered
                if previous is not None:  # summed while the workers register the next chunk
                    total += previous.result()[0].sum(axis=0, dtype=np.float64)
                    previous.release()
                previous = pending
                reads.ahead()
            total += previous.result()[0].sum(axis=0, dtype=np.float64)
        finally:
            if previous is not None:
                previous.cancel()
    return (total / len(source)).astype(np.float32)


def temporal_mean_weights(n_frames: int, sigma_t: float) -> np.ndarray:
    """Weights ``a`` such that the mean over time of the temporally filtered clip is
    ``sum_t a[t] * frame[t]`` (the pre-filter's Gaussian, nearest-frame borders).

    Interior frames weigh ``1 / n_frames``; the borders, which the filter repeats, weigh a
    little more. With a temporal σ too small to filter, all weights are equal.
    """
    if temporal_halo(np.array([0.0, 0.0, sigma_t])) == 0:
        return np.full(n_frames, 1.0 / n_frames)
    from scipy import ndimage  # here, not at import: a default run never needs it

    impulses = ndimage.gaussian_filter1d(
        np.eye(n_frames), sigma_t, axis=0, mode="nearest", truncate=4.0
    )
    return impulses.mean(axis=0)


def _range_and_mean(
    source: FrameSource, chunks, mode: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Min/max (joint or per channel) of the raw frames of ``source`` and their mean with
    :func:`temporal_mean_weights` per channel, in one pass, chunk by chunk."""
    n, c = len(source), source.frame_shape[2]
    weights = np.stack([temporal_mean_weights(n, s) for s in source.sigma[:, 2]], axis=1)
    total = np.zeros(source.frame_shape, np.float64)
    lows, highs = [], []
    for start, stop in chunks:
        raw = source.read_raw(start, stop)
        flat = raw.reshape(-1, c)
        lows.append(flat.min(axis=0))
        highs.append(flat.max(axis=0))
        for t in range(stop - start):
            total += weights[start + t] * raw[t]
    extremes = np.stack([np.min(lows, axis=0), np.max(highs, axis=0)])[:, None, None, :]
    low, high = normalization_range(extremes, mode)
    return low, high, total.astype(np.float32)


def prepared_reference_image(reference: np.ndarray, low, high, sigma: np.ndarray) -> np.ndarray:
    """Normalised, spatially pre-filtered ``(H, W, C)`` float32 copy of a raw reference."""
    return preprocess_image(np.asarray(reference, dtype=np.float32), low, high, sigma)


def phase_correlation_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    max_size: int | tuple[int, int] = 256,
    *,
    refinements: int = 2,
    upsample: int = 1,
) -> tuple[float, float]:
    """Rigid shift ``(u, v)`` that aligns ``moving`` to ``reference`` (phase correlation).

    Both images are averaged over channels and reduced by block averaging until their
    longer side is at most ``max_size`` px. Each is multiplied by a Hann window, and the
    peak of the cross-power spectrum, whitened by ``|F_ref F_mov|^(1/2)`` (half-way
    between plain and phase-only correlation: a sharp peak that a parabola still fits
    without bias), is located to sub-pixel precision by a parabola through the peak and
    its neighbours. The window biases shifts that are large compared with the frame, so
    the estimate is refined ``refinements`` times by shifting ``moving`` back (Fourier
    shift) and adding the residual shift (about 0.01 px on smooth images).

    The result uses the warp convention of ALGORITHM.md: warping ``moving`` by the
    constant field ``(u, v)`` aligns it with ``reference``, i.e.
    ``moving(y + v, x + u) ≈ reference(y, x)``.

    With ``upsample = k > 1`` (``cc_up``) the peak is instead searched on a grid of
    ``1 / k`` px within 1.5 px of the integer peak, the correlation surface evaluated there
    by a matrix-multiply inverse DFT (Guizar-Sicairos et al., 2008).

    Parameters
    ----------
    reference, moving : ndarray, shape (H, W) or (H, W, C)
    max_size : int or (int, int)
        Longest side, in px, of the copies the correlation is computed on (``cc_hw``);
        a pair ``(height, width)`` bounds each side.
    refinements : int
        Extra correlation rounds on the back-shifted image.
    upsample : int
        Up-sampling factor of the peak search (``cc_up``); 1: parabolic fit.

    Returns
    -------
    (u, v) : tuple of float
        Shift along x (columns) and y (rows), in full-resolution pixels.
    """
    sizes = (max_size, max_size) if np.isscalar(max_size) else tuple(max_size)
    if len(sizes) != 2 or min(sizes) < 8:
        raise ValueError(f"cc_hw must be >= 8 (or a pair of them), got {max_size}")
    if int(upsample) < 1:
        raise ValueError(f"cc_up must be >= 1, got {upsample}")
    ref = _gray(reference)
    mov = _gray(moving)
    if ref.shape != mov.shape:
        raise ValueError(f"reference {ref.shape} and moving {mov.shape} differ in shape")
    factor = max(1, int(np.ceil(max(n / s for n, s in zip(ref.shape, sizes, strict=True)))))
    ref, mov = _block_mean(ref, factor), _block_mean(mov, factor)
    window = np.outer(np.hanning(ref.shape[0]), np.hanning(ref.shape[1]))
    f_ref = np.fft.fft2((ref - ref.mean()) * window)
    f_mov_plain = np.fft.fft2(mov)
    from scipy import ndimage  # here, not at import (only cc_initialization needs it)

    total = np.zeros(2)
    current = mov
    for _ in range(1 + max(0, int(refinements))):
        total += _correlation_peak(f_ref, current, window, int(upsample))
        shifted = ndimage.fourier_shift(f_mov_plain, -total)
        current = np.real(np.fft.ifft2(shifted))
    dy, dx = total
    return float(dx * factor), float(dy * factor)


def _correlation_peak(
    f_ref: np.ndarray, moving: np.ndarray, window: np.ndarray, upsample: int = 1
) -> np.ndarray:
    """``(dy, dx)`` of the correlation peak of ``moving`` against ``f_ref`` (see above)."""
    f_mov = np.fft.fft2((moving - moving.mean()) * window)
    cross = f_mov * np.conj(f_ref)
    cross /= np.sqrt(np.maximum(np.abs(cross), 1e-12))
    surface = np.real(np.fft.ifft2(cross))
    peak = np.unravel_index(int(np.argmax(surface)), surface.shape)
    if upsample > 1:
        shift = list(_upsampled_peak(cross, peak, upsample))
    else:
        shift = [_subpixel_peak(surface, peak, axis) for axis in (0, 1)]
    return np.array([((s + n / 2) % n) - n / 2 for s, n in zip(shift, surface.shape, strict=True)])


def _upsampled_peak(cross: np.ndarray, peak: tuple[int, int], upsample: int) -> tuple[float, float]:
    """Peak ``(y, x)`` of ``ifft2(cross)`` on a ``1 / upsample`` px grid around ``peak``."""
    offsets = np.arange(-1.5, 1.5 + 0.5 / upsample, 1.0 / upsample)
    ys, xs = peak[0] + offsets, peak[1] + offsets
    n, m = cross.shape
    rows = np.exp(2j * np.pi * np.outer(ys, np.fft.fftfreq(n)))  # (ny, n)
    cols = np.exp(2j * np.pi * np.outer(np.fft.fftfreq(m), xs))  # (m, nx)
    surface = np.real(rows @ cross @ cols)
    iy, ix = np.unravel_index(int(np.argmax(surface)), surface.shape)
    return float(ys[iy]), float(xs[ix])


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    return image.mean(axis=2) if image.ndim == 3 else image


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _subpixel_peak(surface: np.ndarray, peak: tuple[int, int], axis: int) -> float:
    """Peak position along ``axis`` refined by a parabola through three samples."""
    n = surface.shape[axis]
    i = peak[axis]
    if n < 3:
        return float(i)

    def at(k: int) -> float:
        index = list(peak)
        index[axis] = k % n
        return float(surface[tuple(index)])

    left, centre, right = at(i - 1), at(i), at(i + 1)
    denom = left - 2.0 * centre + right
    offset = 0.5 * (left - right) / denom if denom < 0 else 0.0
    return i + float(np.clip(offset, -0.5, 0.5))
