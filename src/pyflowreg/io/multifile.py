"""One video from several files, one per channel (e.g. ``green.tif`` + ``red.tif``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pyflowreg.io.base import PathType, ReaderSpec, VideoReader, VideoWriter

__all__ = ["MultiFileReader", "MultiFileWriter", "channel_file_paths"]


def _reopen_files(
    specs: Sequence[ReaderSpec], format: str | None, source: Sequence[str], **options: Any
) -> MultiFileReader:
    readers: list[VideoReader] = []
    try:
        for spec in specs:
            readers.append(spec.open())
        return MultiFileReader(readers, source, format, options)
    except BaseException:
        for r in readers:
            r.close()
        raise


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
        opener = partial(_reopen_files, tuple(r.spec for r in self.readers), self._format)
        return ReaderSpec(self._format, list(self._source), dict(self._options), opener=opener)

    def _close(self) -> None:
        for r in self.readers:
            r.close()

    def __repr__(self) -> str:
        files = ", ".join(str(p) for p in self.paths)
        return f"<MultiFileReader [{files}] shape={self.shape} dtype={self.dtype}>"


def channel_file_paths(path: PathType, n_channels: int, suffix: str) -> list[Path]:
    """Per-channel output files ``<stem>_ch<N><suffix>`` next to ``path``.

    A ``path`` without an extension is a folder, and the files are ``path/compensated_ch<N>``.
    """
    path = Path(path)
    folder, stem = (path, "compensated") if not path.suffix else (path.parent, path.stem)
    return [folder / f"{stem}_ch{i + 1}{suffix}" for i in range(n_channels)]


class MultiFileWriter(VideoWriter):
    """Write each channel to a file of its own (``compensated_ch1.HDF5``, ``..._ch2.HDF5``, ...).

    The files are named by :func:`channel_file_paths` and created, with their folder, at the first
    write; each holds one single-channel ``(T, H, W, 1)`` video written by ``channel_writer``.

    Parameters
    ----------
    path : path-like
        ``folder/name.ext`` gives ``folder/name_ch<N><suffix>``; a path without an extension is
        a folder (``folder/compensated_ch<N><suffix>``).
    channel_writer : callable
        ``channel_writer(path, expected_frames=...) -> VideoWriter`` for one channel's file.
    suffix : str
        Extension of the channel files (e.g. ``".HDF5"``).
    expected_frames : int, optional
        Passed on to every channel writer.
    """

    format_name: ClassVar[str] = "MULTIFILE"
    needs_path: ClassVar[bool] = False  # the folder may not exist yet: checked and made here

    def __init__(
        self,
        path: PathType,
        *,
        channel_writer: Callable[..., VideoWriter],
        suffix: str,
        expected_frames: int | None = None,
    ) -> None:
        if path is None:
            raise ValueError("a multi-file writer needs an output path, got None")
        super().__init__(path, expected_frames=expected_frames)
        self.channel_writer = channel_writer
        self.suffix = suffix
        self.writers: list[VideoWriter] = []

    @property
    def paths(self) -> list[Path]:
        """The channel files (known after the first write)."""
        return [w.path for w in self.writers]

    def _setup(self, frame_shape: tuple[int, int, int], dtype: np.dtype) -> None:
        paths = channel_file_paths(self.path, frame_shape[2], self.suffix)
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        try:
            for p in paths:
                self.writers.append(self.channel_writer(p, expected_frames=self.expected_frames))
        except BaseException:
            self._close()
            raise

    def _write(self, frames: np.ndarray) -> None:
        for i, writer in enumerate(self.writers):
            writer.write(frames[..., i : i + 1])

    def _close(self) -> None:
        errors = []
        for writer in self.writers:
            try:
                writer.close()
            except Exception as exc:  # close every file, then report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]
