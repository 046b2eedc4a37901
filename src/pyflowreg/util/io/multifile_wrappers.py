"""PyFlowReg's ``pyflowreg.util.io.multifile_wrappers``: one video from one file per channel,
and one output file per channel (:mod:`pyflowreg.io.multifile`)."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

from pyflowreg.io.base import VideoReader
from pyflowreg.io.multifile import MultiFileReader, MultiFileWriter, channel_file_paths
from pyflowreg.util.io._options import open_file

__all__ = ["MULTICHANNELFileReader", "MultiFileReader", "MultiFileWriter", "channel_file_paths"]


class MULTICHANNELFileReader(MultiFileReader):
    """Read several files as the channels of one video, ``(T, H, W, C_total)``.

    The files must have the same frame count and frame size; their channels are concatenated in
    the order given (a file with several channels contributes all of them).

    Parameters
    ----------
    input_files : sequence of path-like
        Two or more files, in any readable format (each chosen by its extension).
    buffer_size : int
        Frames per batch of :meth:`read_batch` and of iteration.
    bin_size : int
        Temporal binning: each output frame is the mean of ``bin_size`` input frames.
    **kwargs
        Reader options applied to every file (PyFlowReg's names, e.g. ``dataset_names``).

    Examples
    --------
    >>> reader = MULTICHANNELFileReader(["green.tif", "red.tif"])  # doctest: +SKIP
    >>> reader[:].shape  # (T, H, W, 2)                              # doctest: +SKIP
    """

    def __init__(
        self,
        input_files: Sequence[str | PathLike],
        buffer_size: int = 500,
        bin_size: int = 1,
        **kwargs: Any,
    ) -> None:
        if isinstance(input_files, str | PathLike) or len(input_files) < 2:
            raise ValueError(
                f"MULTICHANNELFileReader needs a list of two or more files, got {input_files!r}"
            )
        readers: list[VideoReader] = []
        try:
            for path in input_files:
                readers.append(open_file(path, bin_size, **kwargs))
            super().__init__(readers, input_files, None, {**kwargs, "bin_size": bin_size})
            self.buffer_size = buffer_size
        except BaseException:
            for r in readers:
                r.close()
            raise
