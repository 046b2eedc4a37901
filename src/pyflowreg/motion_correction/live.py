"""Online motion correction: register frames one at a time as they arrive.

:class:`FlowRegLive` keeps a prepared reference and the flow of the previous frame;
each new frame starts its solve from that flow (temporal continuity: consecutive
frames move little relative to each other), which makes the solve converge faster
than from zero. Optionally the reference follows slow drifts by exponential
averaging of the registered frames.

>>> import numpy as np
>>> from pyflowreg.motion_correction import FlowRegLive, OFOptions
>>> rng = np.random.default_rng(0)
>>> frames = rng.random((10, 32, 32)).astype(np.float32)
>>> live = FlowRegLive(OFOptions(quality_setting="fast"), reference=frames[:5])
>>> registered, w = live.register(frames[5])
>>> registered.shape, w.shape
((32, 32), (32, 32, 2))
"""

from __future__ import annotations

import numpy as np

from .._runtime import get_runtime
from ._engine import executor_maker, output_dtype
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
        Model options (default ``OFOptions()``); ``flow_backend`` must support the
        sequential executor (all built-in backends do).
    reference : ndarray, optional
        A reference image ``(H, W)`` / ``(H, W, C)``, or frames ``(T, H, W)`` /
        ``(T, H, W, C)`` to build one from (see :meth:`set_reference`).
    n_reference_frames : int, default 50
        Frames used to build a reference from frames (the last ones given).
    reference_update_rate : float, default 0.0
        Weight ``r`` of each registered frame in the reference:
        ``reference <- (1 - r) reference + r registered``. ``0`` keeps it fixed.
    """

    def __init__(
        self,
        options: OFOptions | None = None,
        reference: np.ndarray | None = None,
        *,
        n_reference_frames: int = 50,
        reference_update_rate: float = 0.0,
    ) -> None:
        self.options = OFOptions() if options is None else options
        if not isinstance(self.options, OFOptions):
            raise TypeError(f"options must be OFOptions or None, got {type(options).__name__}")
        if isinstance(n_reference_frames, bool) or not isinstance(n_reference_frames, int):
            raise TypeError("n_reference_frames must be an int")
        if n_reference_frames < 1:
            raise ValueError(f"n_reference_frames must be >= 1, got {n_reference_frames}")
        if not 0.0 <= float(reference_update_rate) <= 1.0:
            raise ValueError(
                f"reference_update_rate must be in [0, 1], got {reference_update_rate}"
            )
        self.n_reference_frames = n_reference_frames
        self.reference_update_rate = float(reference_update_rate)
        runtime = get_runtime()
        name = runtime.select_executor("sequential", self.options.flow_backend, stacklevel=3)
        self._make_executor = executor_maker(
            runtime.get_executor_class(name),
            runtime.get_flow_backend(self.options.flow_backend).load(),
            self.options,
            1,
        )
        self._executor = None
        self.reference: np.ndarray | None = None
        self._previous_w: np.ndarray | None = None
        self._weight = (
            None if self.options.weight is None else np.asarray(self.options.weight, np.float64)
        )
        self.n_registered = 0
        if reference is not None:
            self.set_reference(reference)

    def set_reference(self, frames_or_image: np.ndarray, *, frames: bool | None = None) -> None:
        """Set the reference from an image or from frames; resets the flow history.

        Parameters
        ----------
        frames_or_image : ndarray
            ``(H, W)`` image, ``(T, H, W, C)`` frames, or 3-D: one ``(H, W, C)`` image when
            the last axis has at most 4 entries (channels), else ``(T, H, W)`` frames.
        frames : bool, optional
            Force the reading of a 3-D array (True: frames, False: one image).
        """
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
        if is_frames:
            video = data[..., None] if data.ndim == 3 else data
            video = video[-self.n_reference_frames :]
            if not np.isfinite(video).all():
                raise ValueError("reference frames contain NaN or inf values")
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
        self.reference = reference
        self._sigma = self.options.sigma_for_channels(reference.shape[2])
        self._low, self._high = normalization_range(reference, self.options.channel_normalization)
        self._previous_w = None
        self.n_registered = 0

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

    def register(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Register one frame, starting from the previous frame's flow.

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
        if raw3.dtype.kind == "f" and not np.isfinite(raw3).all():
            raise ValueError(f"frame {self.n_registered} contains NaN or inf values")
        executor = self._prepare(output_dtype(self.options, raw3.dtype))
        spatial = self._sigma.copy()
        spatial[:, 2] = 0.0  # one frame: no temporal filter
        filtered = prepared_reference_image(raw3, self._low, self._high, spatial)
        registered, w = executor.process_batch(
            raw3[None], filtered[None], self._previous_w, self.n_registered
        )
        self._previous_w = w[0]
        self.n_registered += 1
        rate = self.reference_update_rate
        if rate > 0:
            self.reference = ((1.0 - rate) * self.reference + rate * registered[0]).astype(
                np.float32
            )
            self._load_reference()
        return (registered[0, ..., 0] if squeeze else registered[0]), w[0]

    def close(self) -> None:
        """Release the executor (a later :meth:`register` creates a new one)."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def __enter__(self) -> FlowRegLive:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
