"""Online motion correction: register frames one at a time as they arrive.

:class:`FlowRegLive` keeps a prepared reference and the flow of the previous frame;
each new frame starts its solve from that flow (temporal continuity: consecutive
frames move little relative to each other), which makes the solve converge faster
than from zero. The reference follows slow drifts: every ``reference_update_interval``-th
frame is blended into it. The temporal part of the pre-filter is causal (a half
Gaussian over the current and past frames), so no frame waits for a later one.

Before a reference exists, frames given to the corrector (``live(frame)``) are collected;
when ``reference_buffer_size`` frames are there, the reference is built from them
automatically (or call :meth:`FlowRegLive.set_reference` earlier).

>>> import numpy as np
>>> from pyflowreg.motion_correction import FlowRegLive, OFOptions
>>> rng = np.random.default_rng(0)
>>> frames = rng.random((10, 32, 32)).astype(np.float32)
>>> live = FlowRegLive(OFOptions(quality_setting="fast"), reference=frames[:5])
>>> registered, w = live(frames[5])
>>> registered.shape, w.shape
((32, 32), (32, 32, 2))
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .._runtime import get_runtime
from ._engine import _weight, executor_maker, output_dtype
from ._resolve import backend_factory, select_executor
from ._source import check_finite_frames
from .compensate_arr import _InMemoryReader
from .options import OFOptions
from .reference import (
    as_reference_image,
    compute_reference,
    normalization_range,
    prepared_reference_image,
)

#: A 3-D reference whose last axis is longer than this is a stack of frames, not an image.
MAX_CHANNELS = 4


class FlowRegLive:
    """Register a stream of frames against a reference, one frame at a time.

    Parameters
    ----------
    options : OFOptions, optional
        Model options (default ``OFOptions(quality_setting="fast")``); ``flow_backend``
        must support the sequential executor (all built-in backends do).
    reference : ndarray, optional
        A reference image ``(H, W)`` / ``(H, W, C)``, or frames ``(T, H, W)`` /
        ``(T, H, W, C)`` to build one from (see :meth:`set_reference`).
    reference_buffer_size : int, default 50
        Frames collected by ``live(frame)`` before a reference exists; when full, the
        reference is built from them. Also the most frames (the last ones) a reference is
        built from.
    reference_update_interval : int, default 20
        Every this many registered frames, the registered frame is blended into the
        reference: ``reference <- (1 - weight) reference + weight registered``.
    reference_update_weight : float in [0, 1], default 0.2
        That ``weight``; 0 keeps the reference fixed.
    truncate : float, default 4.0
        The causal temporal filter spans ``int(truncate * sigma_t + 0.5) + 1`` frames
        (``sigma_t``: the largest temporal sigma of ``options.sigma``).
    n_reference_frames : int, optional
        Older name of ``reference_buffer_size``.
    reference_update_rate : float, optional
        Blend every frame with this weight (``reference_update_interval=1``).
    **overrides
        Options to change in (a copy of) ``options``, e.g. ``alpha=4``.
    """

    def __init__(
        self,
        options: OFOptions | None = None,
        reference: np.ndarray | None = None,
        *,
        reference_buffer_size: int = 50,
        reference_update_interval: int = 20,
        reference_update_weight: float = 0.2,
        truncate: float = 4.0,
        n_reference_frames: int | None = None,
        reference_update_rate: float | None = None,
        **overrides,
    ) -> None:
        if options is None:
            options = OFOptions(quality_setting="fast")
        if not isinstance(options, OFOptions):
            raise TypeError(f"options must be OFOptions or None, got {type(options).__name__}")
        self.options = options.model_copy(update=overrides) if overrides else options
        if n_reference_frames is not None:
            reference_buffer_size = n_reference_frames
        if reference_update_rate is not None:
            if not 0.0 <= float(reference_update_rate) <= 1.0:
                raise ValueError(
                    f"reference_update_rate must be in [0, 1], got {reference_update_rate}"
                )
            reference_update_interval, reference_update_weight = 1, reference_update_rate
        for name, value in (
            ("reference_buffer_size", reference_buffer_size),
            ("reference_update_interval", reference_update_interval),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= float(reference_update_weight) <= 1.0:
            raise ValueError(
                f"reference_update_weight must be in [0, 1], got {reference_update_weight}"
            )
        if not float(truncate) > 0:
            raise ValueError(f"truncate must be > 0, got {truncate}")
        self.reference_buffer_size = int(reference_buffer_size)
        self.reference_update_interval = int(reference_update_interval)
        self.reference_update_weight = float(reference_update_weight)
        self.truncate = float(truncate)
        self._reference_buffer: deque = deque(maxlen=self.reference_buffer_size)
        self._temporal: deque = deque(maxlen=1)
        runtime = get_runtime()
        name = select_executor(self.options, "sequential", runtime=runtime, stacklevel=3)
        self._make_executor = executor_maker(
            runtime.get_executor_class(name),
            backend_factory(self.options, runtime),
            self.options,
            1,
        )
        self._executor = None
        self.reference: np.ndarray | None = None
        self._previous_w: np.ndarray | None = None
        self._weight: np.ndarray | None = None  # set with the reference (needs C)
        self.n_registered = 0
        if reference is not None:
            self.set_reference(reference)

    def set_reference(
        self, frames_or_image: np.ndarray | None = None, *, frames: bool | None = None
    ) -> None:
        """Set the reference from an image or from frames; resets the flow history and
        the temporal filter.

        Frames are registered to their mean as in ``compensate_recording`` (the last
        ``reference_buffer_size`` of them) and the registered mean is the reference.

        Parameters
        ----------
        frames_or_image : ndarray, optional
            ``(H, W)`` image, ``(T, H, W, C)`` frames, or 3-D: one ``(H, W, C)`` image when
            the last axis has at most 4 entries (channels), else ``(T, H, W)`` frames.
            ``None``: the frames collected by ``live(frame)`` (``ValueError`` if none).
        frames : bool, optional
            Force the reading of a 3-D array (True: frames, False: one image).
        """
        if frames_or_image is None:
            if not self._reference_buffer:
                raise ValueError(
                    "set_reference() without an array needs frames collected by live(frame); "
                    "none were given yet"
                )
            frames_or_image = np.stack(self._reference_buffer)
            frames = True
        data = np.asarray(frames_or_image)
        if data.dtype.kind not in "uif":
            raise TypeError(f"reference must have a real numeric dtype, got {data.dtype}")
        if frames is None:
            frames = data.ndim == 4 or (data.ndim == 3 and data.shape[-1] > MAX_CHANNELS)
        is_frames = data.ndim == 4 or (data.ndim == 3 and bool(frames))
        if data.ndim not in (2, 3, 4) or (data.ndim == 2 and frames):
            raise ValueError(
                f"reference must be (H, W), (H, W, C), (T, H, W) or (T, H, W, C), got {data.shape}"
            )
        n_channels = 1 if data.ndim == 2 or (data.ndim == 3 and is_frames) else data.shape[-1]
        self._weight = _weight(self.options, n_channels)
        if is_frames:
            video = data[..., None] if data.ndim == 3 else data
            video = video[-self.reference_buffer_size :]
            check_finite_frames(video, "the reference frames")
            options = self.options
            reference = compute_reference(
                _InMemoryReader(video),
                np.arange(len(video)),
                sigma=options.sigma_for_channels(video.shape[3]),
                channel_normalization=options.channel_normalization,
                params=options.flow_parameters(),
                weight=self._weight,
                make_executor=self._make_executor,
                chunk_size=options.buffer_size,
                name="reference frames",
            )
        else:
            image = data if data.ndim == 3 else data[..., None]
            reference = as_reference_image(image, image.shape)
        self.close()
        self.options.check_channels(reference.shape[2], stacklevel=2)
        self.reference = reference
        self._sigma = self.options.sigma_for_channels(reference.shape[2])
        self._low, self._high = normalization_range(reference, self.options.channel_normalization)
        self._temporal_weights = causal_temporal_weights(
            float(self._sigma[:, 2].max()), self.truncate
        )
        self._temporal = deque(maxlen=len(self._temporal_weights))
        self._reference_buffer.clear()
        self._previous_w = None
        self.n_registered = 0

    def reset_reference(self, new_reference: np.ndarray | None = None) -> None:
        """:meth:`set_reference` (PyFlowReg's name)."""
        self.set_reference(new_reference)

    def _prepare(self, dtype: np.dtype):
        if self._executor is None or self._executor.warp_settings.dtype != dtype:
            if self._executor is not None:
                self._executor.close()
            self._executor = self._make_executor(self.options.flow_parameters(), dtype)
            self._load_reference()
        return self._executor

    def _load_reference(self) -> None:
        prepared = prepared_reference_image(self.reference, self._low, self._high, self._sigma)
        self._executor.set_reference(prepared, self._weight)

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Register one frame; before a reference exists, collect it instead.

        Without a reference the frame is kept for the reference (built automatically once
        ``reference_buffer_size`` frames are there) and returned unchanged with a zero
        flow field ``(H, W, 2)``. Otherwise as :meth:`register`.
        """
        if self.reference is not None:
            return self.register(frame)
        raw = np.asarray(frame)
        if raw.ndim not in (2, 3):
            raise ValueError(f"frame must be (H, W) or (H, W, C), got shape {raw.shape}")
        first = self._reference_buffer[0] if self._reference_buffer else raw
        if raw.shape != first.shape:
            raise ValueError(f"frame has shape {raw.shape}, the collected frames {first.shape}")
        self._reference_buffer.append(raw.copy())
        if len(self._reference_buffer) == self.reference_buffer_size:
            self.set_reference()
        return raw, np.zeros((*raw.shape[:2], 2), np.float32)

    def register_frames(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run ``(T, H, W[, C])`` frames through :meth:`__call__` in order.

        Returns
        -------
        registered : ndarray, shape of ``frames``
        w : ndarray, shape (T, H, W, 2), float32
        """
        data = np.asarray(frames)
        if data.ndim not in (3, 4) or len(data) == 0:
            raise ValueError(
                f"frames must be a non-empty (T, H, W) or (T, H, W, C), got {data.shape}"
            )
        results = [self(frame) for frame in data]
        return np.stack([r[0] for r in results]), np.stack([r[1] for r in results])

    def get_current_flow(self) -> np.ndarray | None:
        """A copy of the last displacement field ``(H, W, 2)``, or None."""
        return None if self._previous_w is None else self._previous_w.copy()

    def set_flow_init(self, w_init: np.ndarray | None) -> None:
        """Start the next frame's solve from ``w_init`` ``(H, W, 2)`` (None: zeros)."""
        if w_init is None:
            self._previous_w = None
            return
        w = np.asarray(w_init, dtype=np.float32)
        if self.reference is not None and w.shape != (*self.reference.shape[:2], 2):
            raise ValueError(
                f"w_init must have shape {(*self.reference.shape[:2], 2)}, got {w.shape}"
            )
        if w.ndim != 3 or w.shape[2] != 2 or not np.isfinite(w).all():
            raise ValueError(f"w_init must be a finite (H, W, 2) field, got shape {w.shape}")
        self._previous_w = w.copy()

    def register(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Register one frame, starting from the previous frame's flow.

        The frame is normalised by the reference's range, filtered in space, then in time
        with the causal half-Gaussian over the last frames; the raw frame is warped.

        Parameters
        ----------
        frame : ndarray, shape (H, W) or (H, W, C)

        Returns
        -------
        registered : ndarray
            Shape of ``frame``; its dtype unless ``options.output_dtype``.
        w : ndarray, shape (H, W, 2), float32
        """
        if self.reference is None:
            raise RuntimeError("no reference: pass reference= or call set_reference() first")
        raw = np.asarray(frame)
        squeeze = raw.ndim == 2
        raw3 = raw[..., None] if squeeze else raw
        if raw3.shape != self.reference.shape:
            raise ValueError(
                f"frame has shape {raw.shape}, the reference (H, W, C) is {self.reference.shape}"
            )
        check_finite_frames(raw3[None], "the live stream", self.n_registered)
        executor = self._prepare(output_dtype(self.options, raw3.dtype))
        spatial = self._sigma.copy()
        spatial[:, 2] = 0.0  # the temporal part is the causal filter below
        self._temporal.append(prepared_reference_image(raw3, self._low, self._high, spatial))
        weights = self._temporal_weights[: len(self._temporal)]
        weights = weights / weights.sum()
        filtered = sum(
            float(wk) * frame for wk, frame in zip(weights, reversed(self._temporal), strict=False)
        ).astype(np.float32)
        registered, w = executor.process_batch(
            raw3[None], filtered[None], self._previous_w, self.n_registered
        )
        self._previous_w = np.array(w[0])
        self.n_registered += 1
        weight = self.reference_update_weight
        if weight > 0 and self.n_registered % self.reference_update_interval == 0:
            self.reference = (
                (1.0 - weight) * self.reference + weight * registered[0].astype(np.float32)
            ).astype(np.float32)
            self._low, self._high = normalization_range(
                self.reference, self.options.channel_normalization
            )
            self._load_reference()
        return (registered[0, ..., 0] if squeeze else registered[0]), w[0]

    @property
    def reference_update_rate(self) -> float:
        """The blend weight per frame when the reference is updated every frame, else 0."""
        return self.reference_update_weight if self.reference_update_interval == 1 else 0.0

    def close(self) -> None:
        """Release the executor (a later :meth:`register` creates a new one)."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def __enter__(self) -> FlowRegLive:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def causal_temporal_weights(sigma_t: float, truncate: float = 4.0) -> np.ndarray:
    """Weights of the current and past frames (index 0: current), a half Gaussian.

    ``max(1, int(truncate * sigma_t + 0.5) + 1)`` weights ``exp(-k^2 / (2 sigma_t^2))``,
    normalised to sum 1; ``sigma_t = 0`` gives ``[1.0]`` (no temporal filter).
    """
    if sigma_t <= 0:
        return np.ones(1)
    n = max(1, int(truncate * sigma_t + 0.5) + 1)
    k = np.arange(n, dtype=np.float64)
    weights = np.exp(-(k**2) / (2.0 * sigma_t**2))
    return weights / weights.sum()
