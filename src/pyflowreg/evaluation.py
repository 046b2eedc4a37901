"""Accuracy and speed on synthetic recordings with known motion (``pyflowreg demo`` and ``bench``).

The command line prints what these functions compute::

    >>> from pyflowreg.evaluation import engine_benchmark
    >>> for row in engine_benchmark(size=32, n_frames=2, presets=["fast"]):  # doctest: +SKIP
    ...     print(row.preset, round(row.frames_per_second), row.epe.mean)

:func:`engine_benchmark` times the flow engine alone (:mod:`pyflowreg.core`, one thread) on
frames pre-processed as the pipeline does. :func:`accuracy_against_truth` compares the fields a
run estimated with the true motion of the recording, in the coordinates of the run's reference
(a reference averaged from the frames is the scene seen from their mean position, not the
motion-free scene).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .metrics import EPE, endpoint_error

__all__ = [
    "BenchRow",
    "TruthAccuracy",
    "accuracy_against_truth",
    "engine_benchmark",
    "reference_offset",
    "warm_up",
    "write_demo_recording",
]

#: Pre-filter of the evaluations: (sigma_y, sigma_x, sigma_t) per channel, in pixels / frames.
SIGMA = (1.0, 1.0, 0.0)


class BenchRow(NamedTuple):
    """One preset of :func:`engine_benchmark`."""

    preset: str
    frames_per_second: float
    ms_per_frame: float
    epe: EPE


class TruthAccuracy(NamedTuple):
    """What :func:`accuracy_against_truth` finds.

    Attributes
    ----------
    epe : EPE
        Endpoint error of the estimated fields against the true motion seen from the reference
        (inner 80 % of the frame), in pixels.
    reference_shift : float
        Mean length of :func:`reference_offset`: how far the reference lies from the
        motion-free scene, in pixels.
    """

    epe: EPE
    reference_shift: float


def _prefiltered(video: np.ndarray, low: float, high: float) -> np.ndarray:
    """``video`` (T, H, W, C) normalised to ``(low, high)`` and blurred by :data:`SIGMA`."""
    from .core.preprocess import prefilter

    sigma = np.tile([SIGMA], (video.shape[-1], 1))
    return prefilter(np.asarray(video, np.float32), low, high, sigma)


def reference_offset(reference: np.ndarray, scene: np.ndarray) -> np.ndarray:
    """Displacement ``o`` ``(H, W, 2)`` with ``reference(x) ≈ scene(x + o(x))``, in px.

    A reference built from the frames of a recording is the scene seen from the average
    position of those frames; the fields estimated against it are then the true motion plus
    ``o``: ``w(x) ≈ o(x) + w_true(x + o(x))``. Found by registering ``scene`` to
    ``reference`` with the CPU engine ("quality" preset).

    Parameters
    ----------
    reference : ndarray, (H, W, C) or anything of that size
        The reference a run registered to.
    scene : ndarray, (H, W, C)
        The motion-free scene (``SyntheticRecording.reference``).
    """
    from .core import FlowParameters, estimate, prepare_reference

    reference = np.asarray(reference, np.float32).reshape(scene.shape)
    low, high = float(scene.min()), float(scene.max())
    ref = _prefiltered(reference[None], low, high)[0]
    moving = _prefiltered(np.asarray(scene, np.float32)[None], low, high)[0]
    return estimate(prepare_reference(ref, FlowParameters.from_quality("quality")), moving)


def accuracy_against_truth(
    w: np.ndarray, true_flow: np.ndarray, reference: np.ndarray, scene: np.ndarray
) -> TruthAccuracy:
    """Endpoint error of fields estimated against ``reference`` with respect to the true motion.

    Parameters
    ----------
    w : ndarray, (T, H, W, 2)
        Estimated fields, in pixels.
    true_flow : ndarray, (T, H, W, 2)
        True motion of the recording (``SyntheticRecording.flow``).
    reference : ndarray, (H, W, C)
        The reference the fields were estimated against.
    scene : ndarray, (H, W, C)
        The motion-free scene (``SyntheticRecording.reference``).

    Returns
    -------
    TruthAccuracy
        The error of ``w - o`` against the true fields sampled at ``x + o(x)`` (linear
        interpolation), ``o`` being :func:`reference_offset`.
    """
    from .core import warp

    offset = reference_offset(reference, scene)
    truth = warp(np.asarray(true_flow, np.float32), offset, method="linear")
    epe = endpoint_error(np.asarray(w, np.float32) - offset, truth)
    return TruthAccuracy(epe, float(np.mean(np.hypot(offset[..., 0], offset[..., 1]))))


def write_demo_recording(path: str | Path, n_frames: int, size: int, seed: int = 0) -> Any:
    """A synthetic uint16 recording with known motion, written to ``path`` (format from the
    extension, e.g. ``.h5``); returns its :class:`~pyflowreg.datasets.SyntheticRecording`."""
    from .datasets import make_recording
    from .io import open_writer

    recording = make_recording(n_frames=n_frames, shape=(size, size), seed=seed, dtype=np.uint16)
    with open_writer(Path(path)) as writer:
        writer.write(recording.video)
    return recording


def warm_up(video: np.ndarray, quality: str, config: Any = None) -> float:
    """Register a 2-frame 48 x 48 crop of ``video`` with ``config``'s executor; the seconds taken.

    Compiles what the kernel cache lacks and starts the executor's workers (a multiprocessing
    pool is then kept idle for the next run), so that a timed run after it measures the
    registration, not the one-time start-up.
    """
    from .motion_correction import OFOptions, compensate_arr

    tic = time.perf_counter()
    options = OFOptions(quality_setting=quality, iterations=2)
    compensate_arr(video[:2, :48, :48], None, options, registration_config=config)
    return time.perf_counter() - tic


def engine_benchmark(
    size: int = 512, n_frames: int = 10, presets: Iterable[str] = ("fast",), seed: int = 0
) -> Iterator[BenchRow]:
    """Frames/s and accuracy of the flow engine (one thread), one :class:`BenchRow` per preset.

    A synthetic recording of ``n_frames + 1`` frames of ``size`` x ``size`` px is normalised
    by its reference's range and pre-filtered; per preset the reference is prepared once, the
    first frame is estimated untimed (warm-up: kernel loading and caches), then the others are
    timed one after the other (zero initial flow) and compared with the true motion.

    Parameters
    ----------
    size : int
        Frame height and width in pixels, >= 16.
    n_frames : int
        Timed frames per preset, >= 1.
    presets : iterable of {"quality", "balanced", "fast"}
    seed : int
        Seed of the recording.

    Returns
    -------
    iterator of BenchRow
        Each row as soon as its preset is measured (the arguments are checked at the call).
    """
    from .core import QUALITY_PRESETS, FlowParameters

    for name, value, minimum in (("size", size, 16), ("n_frames", n_frames, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    params = []
    for preset in presets:
        if preset not in QUALITY_PRESETS:
            raise ValueError(f"presets must be among {list(QUALITY_PRESETS)}, got {preset!r}")
        params.append((preset, FlowParameters.from_quality(preset)))
    return _bench_rows(int(size), int(n_frames), params, seed)


def _bench_rows(size: int, n_frames: int, params: list, seed: int) -> Iterator[BenchRow]:
    from .core import estimate, prepare_reference
    from .datasets import make_recording

    recording = make_recording(n_frames=n_frames + 1, shape=(size, size), seed=seed)
    scene = np.asarray(recording.reference, dtype=np.float32)
    low, high = float(scene.min()), float(scene.max())
    ref = _prefiltered(scene[None], low, high)[0]
    frames = _prefiltered(recording.video, low, high)
    for preset, preset_params in params:
        prepared = prepare_reference(ref, params=preset_params)
        estimate(prepared, frames[0])  # warm-up: JIT compilation and caches
        start = time.perf_counter()
        w = np.stack([estimate(prepared, frame) for frame in frames[1:]])
        seconds = time.perf_counter() - start
        epe = endpoint_error(w, recording.flow[1:])
        yield BenchRow(preset, n_frames / seconds, 1000 * seconds / n_frames, epe)
