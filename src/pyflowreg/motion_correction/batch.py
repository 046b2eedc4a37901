"""PyFlowReg's file workflow object, ``BatchMotionCorrector``: callbacks registered on an
object, then :meth:`BatchMotionCorrector.run`, onto
:func:`~pyflowreg.motion_correction.compensate_recording` (importable from there too, as
PyFlowReg documents: ``pyflowreg.motion_correction.compensate_recording.BatchMotionCorrector``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._engine import batch_callbacks

if TYPE_CHECKING:
    from .compensate_recording import RegistrationConfig, RegistrationResult

__all__ = ["BatchMotionCorrector"]


class BatchMotionCorrector:
    """The file workflow as an object: register callbacks, then :meth:`run`.

    PyFlowReg's entry point onto :func:`compensate_recording` (same outputs, executors
    and checks); callbacks are called after every batch, in the order registered.

    Parameters
    ----------
    options : OFOptions
        Input, output and model options.
    config : RegistrationConfig, optional
        Executor and workers; default ``RegistrationConfig()``.
    reference_frame : ndarray or path, optional
        Reference image; overrides ``options.reference_frames``.

    Attributes
    ----------
    result : RegistrationResult or None
        What the last :meth:`run` returned.

    Examples
    --------
    >>> corrector = BatchMotionCorrector(options)  # doctest: +SKIP
    >>> corrector.register_progress_callback(lambda done, total: print(done, total))
    >>> corrector.register_w_callback(lambda w, start, end: print(w.shape, start, end))
    >>> result = corrector.run()  # doctest: +SKIP
    """

    def __init__(
        self, options, config: RegistrationConfig | None = None, reference_frame=None
    ) -> None:
        self.options = options
        self.config = config
        self.reference_frame = reference_frame
        self.result: RegistrationResult | None = None
        self._progress: list = []
        self._w: list = []
        self._registered: list = []

    @staticmethod
    def _checked(callback, name: str):
        if not callable(callback):
            raise TypeError(f"{name} must be callable, got {type(callback).__name__}")
        return callback

    def register_progress_callback(self, callback) -> None:
        """``callback(done_frames, total_frames)`` after every batch."""
        self._progress.append(self._checked(callback, "progress callback"))

    def register_w_callback(self, callback) -> None:
        """``callback(w_batch, start_idx, end_idx)``: fields ``(n, H, W, 2)`` float32."""
        self._w.append(self._checked(callback, "w callback"))

    def register_registered_callback(self, callback) -> None:
        """``callback(batch, start_idx, end_idx)``: registered frames ``(n, H, W, C)``."""
        self._registered.append(self._checked(callback, "registered callback"))

    def _report_progress(self, done: int, total: int) -> None:
        for callback in self._progress:
            callback(done, total)

    def run(self) -> RegistrationResult:
        """Register the recording (see :func:`compensate_recording`) and return the result."""
        from .compensate_recording import compensate_recording

        self.result = compensate_recording(
            self.options,
            self.reference_frame,
            self.config,
            progress_callback=self._report_progress if self._progress else None,
            batch_callback=batch_callbacks(self._w, self._registered),
        )
        return self.result
