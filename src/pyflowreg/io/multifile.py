"""One video from several files, one per channel (e.g. ``green.tif`` + ``red.tif``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from pyflowreg.io.base import PathType, ReaderSpec, VideoReader

__all__ = ["MultiFileReader"]


class MultiFileReader(VideoReader):
    """Stack the channels of several readers: ``C`` is the sum of their channels.

    With single-channel files, channel ``i`` is file ``i``. All files must have the same number of
    frames and frame size; the dtype is the common dtype of the files (``np.result_type``).

    Parameters
    ----------
    readers : sequence of VideoReader
        Open readers, one per file; this reader closes them.
    source : sequence of path-like
        The paths, for :attr:`spec`.
    format : str, optional
        Format name used to open them.
    options : dict
        Keyword arguments used to open each file (``bin_size`` included: each file bins itself).
    """

    format_name: ClassVar[str] = "MULTI"

    def __init__(
        self,
        readers: Sequence[VideoReader],
        source: Sequence[PathType],
        format: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(None, options=options)
        if len(readers) < 2:
            raise ValueError(f"a multi-file video needs at least 2 files, got {len(readers)}")
        self.readers = list(readers)
        self.paths = [r.path for r in self.readers]
        self._source = [str(p) for p in source]
        self._format = format
        shapes = [r.shape[:3] for r in self.readers]
        if len(set(shapes)) != 1:
            listing = ", ".join(f"'{p}' {s}" for p, s in zip(self.paths, shapes, strict=True))
            raise ValueError(
                f"the files of a multi-file video must have the same (T, H, W); got {listing}"
            )
        self.path = self.paths[0]
        self._raw_shape = (*shapes[0], sum(r.n_channels for r in self.readers))
        self._raw_dtype = np.result_type(*[r.dtype for r in self.readers])

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        blocks = [r.read(start, stop) for r in self.readers]
        return np.concatenate(blocks, axis=3).astype(self._raw_dtype, copy=False)

    @property
    def spec(self) -> ReaderSpec:
        return ReaderSpec(self._format, list(self._source), dict(self._options))

    def _close(self) -> None:
        for r in self.readers:
            r.close()

    def __repr__(self) -> str:
        files = ", ".join(str(p) for p in self.paths)
        return f"<MultiFileReader [{files}] shape={self.shape} dtype={self.dtype}>"
