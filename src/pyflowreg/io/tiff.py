"""TIFF videos (tifffile): multi-page, ImageJ hyperstacks, ScanImage, BigTIFF.

Reading maps every frame and channel to a TIFF page, then reads only the pages asked for: from a
memory map when the data are uncompressed and contiguous, else page by page. The page layout comes
from, in this order:

1. ScanImage metadata (``SI.hChannels.channelSave`` = saved channels, ``SI.hStackManager.numSlices``
   = planes), pages ordered time, plane, channel;
2. the series axes tifffile reports (ImageJ ``T, Z, C, Y, X``; OME; tifffile's own shaped files);
   ``T``, ``I`` and ``Q`` axes are time;
3. ``n_channels=k`` for plain multi-page files whose pages alternate ``ch1, ch2, ..., chk``.

Files with several planes need ``plane=`` to pick one (registration works on 2-D frames).

Writing appends frame after frame to one open :class:`tifffile.TiffWriter`. uint8, uint16 and
float32 videos become ImageJ hyperstacks (``T, C, Y, X``; Fiji opens them with the channel axis);
other dtypes become tifffile "shaped" files with axes ``T, Z=1, C, Y, X``. :class:`TIFFReader`
reads both back. Files are uncompressed by default, so they can be memory-mapped; with
``compression=`` (or ``layout="pages"``, Suite2p's interleaved single-channel pages) every channel
of every frame is a page of its own.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import tifffile

from pyflowreg.io.base import (
    PathType,
    VideoReader,
    VideoWriter,
    check_input_path,
    corrupt_file_error,
    native_dtype,
)

__all__ = ["TIFFReader", "TIFFWriter", "scanimage_layout"]

_log = logging.getLogger(__name__)
_ROLES = {"T": "T", "I": "T", "Q": "T", "Z": "Z", "C": "C"}
_PAGE_AXES = set("YXS")
# Phrases of tifffile's log messages that mean damaged structure or missing data (its other
# warnings, e.g. about odd metadata tags, leave the image data readable).
_DAMAGE_PHRASES = (
    "invalid page offset",
    "invalid offset to",
    "corrupted tag list",
    "corrupted file",
    "failed to reshape",
    "missing data are zeroed",
    "bytes, got",
    "segments, got",
    "incompletely written",
    "circular reference",
    "is missing",
    "truncat",
)
_IMAGEJ_DTYPES = {np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)}
_TIFF_ERRORS = (tifffile.TiffFileError, ValueError, OSError, struct.error, IndexError, KeyError)


@contextmanager
def _tifffile_log() -> Iterator[list[str]]:
    """Collect the warnings tifffile logs (it reports damaged files by logging, not raising)."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def _damage(messages: list[str]) -> str | None:
    """The first logged message that reports a damaged file, if any."""
    for message in messages:
        if any(phrase in message.lower() for phrase in _DAMAGE_PHRASES):
            return message
    return None


def _find(frame_data: dict[str, Any], suffixes: tuple[str, ...]) -> Any:
    for key, value in frame_data.items():
        if key.endswith(suffixes):
            return value
    return None


def scanimage_layout(tif: tifffile.TiffFile) -> tuple[int, int, bool] | None:
    """``(n_channels, n_planes, planes_outer)`` from ScanImage metadata, or ``None``.

    ``planes_outer`` is True for slow stacks (``numSlices > 1`` and ``framesPerSlice > 1``), whose
    pages run plane, time, channel instead of time, plane, channel.
    """
    if not tif.is_scanimage:
        return None
    frame_data = dict((tif.scanimage_metadata or {}).get("FrameData") or {})
    if not frame_data:
        page = tif.pages[0]
        for text in (page.software, page.description):
            if text and "SI" in text:
                try:
                    parsed = tifffile.matlabstr2py(text)
                except Exception:  # free-form text: best effort
                    continue
                if isinstance(parsed, dict):
                    frame_data.update(parsed)
    saved = _find(frame_data, ("hChannels.channelSave", "channelsSave"))
    if saved is None:
        return None
    n_channels = len(np.atleast_1d(np.asarray(saved).ravel()))
    slices = _find(frame_data, ("hStackManager.numSlices", "stackNumSlices"))
    per_slice = _find(frame_data, ("hStackManager.framesPerSlice",))
    try:
        n_planes = max(int(slices), 1) if slices is not None else 1
        per_slice = int(per_slice) if per_slice is not None else 1
    except (TypeError, ValueError, OverflowError):  # framesPerSlice may be Inf
        n_planes, per_slice = max(int(slices or 1), 1), 1
    return n_channels, n_planes, n_planes > 1 and per_slice > 1


class TIFFReader(VideoReader):
    """Read a video from a TIFF file.

    Parameters
    ----------
    path : path-like
        The ``.tif``/``.tiff`` file.
    n_channels : int, optional
        Channels interleaved page by page in a plain multi-page file. Must match the file's
        metadata if it has a channel axis.
    plane : int or "all", optional
        Plane to read from a file with several planes (``Z``); required there. ``"all"`` reads
        every plane as a frame of its own, in acquisition order (a volume of ``Z`` planes gives
        ``Z`` frames per volume; PyFlowReg's flattening of ScanImage volumes).
    series : int, optional
        tifffile series index. By default the first series, or, in a file written one frame
        (or block of frames) per write call (one tifffile series each, all alike: what
        tifffile does when appending, and what several acquisition tools write), all of its
        series in file order.
    memmap : bool
        Memory-map uncompressed contiguous data (default); ``False`` always reads pages.
    bin_size : int
        Temporal binning, see :class:`~pyflowreg.io.base.VideoReader`.
    """

    format_name: ClassVar[str] = "TIFF"

    def __init__(
        self,
        path: PathType,
        *,
        n_channels: int | None = None,
        plane: int | str | None = None,
        series: int | None = None,
        memmap: bool = True,
        bin_size: int = 1,
    ) -> None:
        path = check_input_path(path)
        options = {"n_channels": n_channels, "plane": plane, "series": series, "memmap": memmap}
        super().__init__(path, bin_size=bin_size, options=options)
        if n_channels is not None and n_channels < 1:
            raise ValueError(f"n_channels must be >= 1, got {n_channels}")
        self._tif: tifffile.TiffFile | None = None
        self._mm: np.memmap | None = None
        with _tifffile_log() as log:
            try:
                self._tif = tifffile.TiffFile(path)
                self._open_series(series, n_channels, plane, memmap)
            except _TIFF_ERRORS as exc:
                self._close()
                if isinstance(exc, _LayoutError):
                    raise ValueError(f"'{path}': {exc}") from None
                raise corrupt_file_error(path, exc) from exc
            except BaseException:  # anything else (an interrupt, a bug): release the file too
                self._close()
                raise
        damage = _damage(log)
        if damage:
            self._close()
            raise corrupt_file_error(path, damage)

    @property
    def memory_mapped(self) -> bool:
        """True when frames are read from a memory map (uncompressed, contiguous data)."""
        return self._mm is not None

    def _open_series(
        self, series: int, n_channels: int | None, plane: int | str | None, memmap: bool
    ) -> None:
        tif = self._tif
        if series is not None and not 0 <= series < len(tif.series):
            raise _LayoutError(f"series={series} does not exist; the file has {len(tif.series)}")
        parts = _appended_series(tif) if series is None else None
        s = tif.series[series or 0]
        self._series = series or 0
        self._page_shape = tuple(s.keyframe.shape)
        page_axes = s.keyframe.axes
        if not set(page_axes) <= _PAGE_AXES:
            raise _LayoutError(f"unsupported TIFF page axes {page_axes!r}")
        axes, shape = s.get_axes(False), s.get_shape(False)
        outer = [(a, n) for a, n in zip(axes, shape, strict=True) if a not in _PAGE_AXES]
        n_pages = int(np.prod([n for _, n in outer], dtype=np.int64))
        grid = self._page_grid(tif, outer, n_pages)
        if parts is not None:  # every series alike: stack them in time, by file page index
            self._series = None
            grid = np.concatenate(
                [np.asarray([p.index for p in part.pages])[grid] for part in parts]
            )
            s, n_pages, memmap = parts[-1], n_pages * len(parts), False
        grid = self._apply_channels(grid, n_channels)
        grid = self._apply_plane(grid, plane)
        self._pages = grid  # (T, C_pages) page indices within the series
        self._to_yxs = [page_axes.index(a) for a in "YX"] + (
            [page_axes.index("S")] if "S" in page_axes else []
        )
        samples = self._page_shape[page_axes.index("S")] if "S" in page_axes else 1
        h, w = (self._page_shape[page_axes.index(a)] for a in "YX")
        self._raw_shape = (grid.shape[0], h, w, grid.shape[1] * samples)
        self._raw_dtype = native_dtype(s.dtype)
        self._check_extent(s, n_pages, memmap)

    @staticmethod
    def _page_grid(tif: tifffile.TiffFile, outer: list[tuple[str, int]], n: int) -> np.ndarray:
        """Page indices arranged ``(T, Z, C)``."""
        si = scanimage_layout(tif)
        if si is not None:
            c, z, planes_outer = si
            t = n // (c * z)
            if t == 0:
                raise _LayoutError(
                    f"ScanImage metadata says {c} channels x {z} planes, but only {n} pages"
                )
            if t * c * z != n:
                _log.warning(
                    "%s: %d pages are not a multiple of %d channels x %d planes; the last %d "
                    "pages (an incomplete volume) are ignored",
                    tif.filename, n, c, z, n - t * c * z,
                )  # fmt: skip
            if planes_outer:
                return np.arange(t * z * c).reshape(z, t, c).transpose(1, 0, 2)
            return np.arange(t * z * c).reshape(t, z, c)
        for axis, size in outer:
            if size > 1 and axis not in _ROLES:
                raise _LayoutError(
                    f"cannot map the TIFF axis {axis!r} (size {size}) to time, plane or channel"
                )
        roles = [_ROLES.get(a, "T") for a, _ in outer]
        grid = np.arange(n).reshape([size for _, size in outer] or [1])
        perm = [i for r in "TZC" for i, role in enumerate(roles) if role == r]
        sizes = [
            int(np.prod([outer[i][1] for i, role in enumerate(roles) if role == r])) for r in "TZC"
        ]
        return grid.transpose(perm).reshape(sizes) if outer else grid.reshape(1, 1, 1)

    @staticmethod
    def _apply_channels(grid: np.ndarray, n_channels: int | None) -> np.ndarray:
        if n_channels is None or n_channels == grid.shape[2]:
            return grid
        if grid.shape[2] != 1:
            raise _LayoutError(
                f"the file has {grid.shape[2]} channels in its metadata, "
                f"but n_channels={n_channels}"
            )
        if grid.shape[1] != 1:
            raise _LayoutError("n_channels (interleaved pages) cannot be combined with planes")
        flat = grid.ravel()
        if flat.size % n_channels:
            raise _LayoutError(
                f"{flat.size} pages cannot be split into n_channels={n_channels} interleaved "
                f"channels (not a multiple)"
            )
        return flat.reshape(-1, 1, n_channels)

    @staticmethod
    def _apply_plane(grid: np.ndarray, plane: int | str | None) -> np.ndarray:
        n_planes = grid.shape[1]
        if isinstance(plane, str):
            if plane != "all":
                raise _LayoutError(f"plane must be an int, 'all' or None, got {plane!r}")
            # Every plane a frame of its own, in acquisition (page) order.
            rows = grid.reshape(-1, grid.shape[2])
            return rows[np.argsort(rows[:, 0], kind="stable")]
        if plane is None:
            if n_planes > 1:
                raise _LayoutError(
                    f"the file holds {n_planes} planes; pass plane=0..{n_planes - 1} to read one"
                )
            return grid[:, 0, :]
        if not 0 <= plane < n_planes:
            raise _LayoutError(f"plane={plane} is out of range; the file has {n_planes} plane(s)")
        return grid[:, plane, :]

    def _check_extent(self, s: Any, n_pages: int, memmap: bool) -> None:
        size = self._tif.filehandle.size
        if self._series is None:  # appended series: each checked like a file of its own
            n_pages = n_pages // len(self._tif.series)
        page_bytes = int(np.prod(self._page_shape)) * s.dtype.itemsize
        if s.dataoffset is not None:
            end = s.dataoffset + n_pages * page_bytes
            if end > size:
                raise ValueError(f"the data end at byte {end}, after the end of the file ({size})")
            if memmap:
                dtype = np.dtype(s.dtype).newbyteorder(self._tif.byteorder)
                self._mm = np.memmap(
                    self.path, dtype=dtype, mode="r", offset=s.dataoffset,
                    shape=(n_pages, *self._page_shape),
                )  # fmt: skip
            return
        last = s.pages[len(s.pages) - 1] if len(s.pages) else None
        if len(s.pages) < n_pages and not s.is_multifile:
            raise ValueError(f"{len(s.pages)} pages found, {n_pages} expected")
        if last is not None and hasattr(last, "dataoffsets"):
            end = max(o + c for o, c in zip(last.dataoffsets, last.databytecounts, strict=True))
            if end > size:
                raise ValueError(f"the last page ends at byte {end}, after the end of the file")

    def _read_pages(self, pages: np.ndarray) -> np.ndarray:
        if self._mm is not None:
            if pages.size and np.array_equal(pages, np.arange(pages[0], pages[0] + pages.size)):
                return np.array(self._mm[pages[0] : pages[0] + pages.size])
            return self._mm[pages]
        with _tifffile_log() as log:
            try:
                data = self._tif.asarray(key=pages.tolist(), series=self._series, maxworkers=1)
            except _TIFF_ERRORS as exc:
                raise corrupt_file_error(self.path, exc) from exc
        damage = _damage(log)
        if damage:
            raise corrupt_file_error(self.path, damage)
        return np.asarray(data).reshape(pages.size, *self._page_shape)

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        rows = self._pages[start:stop]
        n, c_pages = rows.shape
        _, h, w, c = self._raw_shape
        if n == 0:
            return np.empty((0, h, w, c), dtype=self._raw_dtype)
        data = self._read_pages(rows.ravel())
        data = data.transpose(0, *(1 + i for i in self._to_yxs))
        if data.ndim == 3:
            data = data[..., None]
        data = data.reshape(n, c_pages, h, w, -1).transpose(0, 2, 3, 1, 4).reshape(n, h, w, c)
        return np.ascontiguousarray(data, dtype=self._raw_dtype)

    def _close(self) -> None:
        self._mm = None
        if self._tif is not None:
            self._tif.close()
            self._tif = None


def _appended_series(tif: tifffile.TiffFile) -> list | None:
    """The series of a file written by appending frames (several tifffile series, all with the
    same shape, axes and data type, and no ImageJ, OME or ScanImage metadata that would give
    them another meaning), or None."""
    series = tif.series
    if len(series) < 2 or tif.is_imagej or tif.is_ome or scanimage_layout(tif) is not None:
        return None
    first = series[0]
    key = (tuple(first.shape), first.axes, np.dtype(first.dtype))
    if any((tuple(t.shape), t.axes, np.dtype(t.dtype)) != key for t in series[1:]):
        return None
    sizes = zip(first.get_axes(False), first.get_shape(False), strict=True)
    n = math.prod(size for axis, size in sizes if axis not in _PAGE_AXES)  # pages per series
    if any(len(t.pages) != n or any(p is None for p in t.pages) for t in series):
        return None
    return list(series)


class _LayoutError(ValueError):
    """The file is readable but its layout does not fit the request."""


def _check_compression(compression: str | None) -> str | None:
    """Validate a TIFF compression name; ``None``/``"none"`` -> ``None``."""
    if compression is None:
        return None
    if not isinstance(compression, str):
        raise TypeError(f"compression must be a str or None, got {type(compression).__name__}")
    name = compression.strip().lower()
    if name == "none":
        return None
    known = {c.name.lower() for c in tifffile.COMPRESSION} | {"zlib", "deflate", "jpeg", "lzw"}
    if name not in known:
        raise ValueError(
            f"unknown TIFF compression {compression!r}; use None, 'zlib' (or 'deflate'), 'lzw', "
            f"'jpeg' or another tifffile codec"
        )
    if name not in ("zlib", "deflate", "adobe_deflate"):
        try:
            import imagecodecs  # noqa: F401
        except ImportError:
            raise ImportError(
                f"TIFF compression {compression!r} needs the imagecodecs package: "
                f"pip install imagecodecs (zlib/deflate works without it)"
            ) from None
    return "zlib" if name in ("deflate", "adobe_deflate") else name


class TIFFWriter(VideoWriter):
    """Append frames to a TIFF file.

    Parameters
    ----------
    path : path-like
        Output file, created (or overwritten) at the first write.
    imagej : bool, optional
        ImageJ hyperstack (``T, C, Y, X``). Default: for uint8, uint16 and float32 (the dtypes
        ImageJ supports); other dtypes are written as tifffile shaped files (``T, Z, C, Y, X``).
    bigtiff : bool, optional
        ``True``: always BigTIFF. ``False``: classic TIFF (ImageJ files over 4 GB use ImageJ's
        own large-file layout; other files over 4 GB raise ``ValueError`` before writing past the
        limit). ``None`` (default): BigTIFF when ``expected_frames`` says the file will exceed
        4 GB, classic otherwise; with no ``expected_frames``, BigTIFF unless ImageJ.
    expected_frames : int, optional
        Number of frames that will be written, for the BigTIFF decision.
    compression : {None, "none", "zlib", "deflate", "lzw", "jpeg", ...}
        Page compression (``"lzw"``, ``"jpeg"`` and the other codecs need the ``imagecodecs``
        package). Compressed files are written page by page (one 2-D page per frame and
        channel) and their ImageJ or shaped description is completed at :meth:`close`;
        they cannot be memory-mapped.
    layout : {"hyperstack", "pages"}
        ``"hyperstack"`` (default): the file describes its frames and channels. ``"pages"``:
        plain single-channel pages, channels interleaved (``ch1, ch2, ..., ch1, ...``) with no
        channel metadata, as Suite2p writes; read back with ``TIFFReader(n_channels=C)``.
    """

    format_name: ClassVar[str] = "TIFF"
    classic_limit: ClassVar[int] = 2**32 - 2**25  # 4 GB less room for the page directories

    def __init__(
        self,
        path: PathType,
        *,
        imagej: bool | None = None,
        bigtiff: bool | None = None,
        expected_frames: int | None = None,
        compression: str | None = None,
        layout: str = "hyperstack",
    ) -> None:
        super().__init__(path, expected_frames=expected_frames)
        if layout not in ("hyperstack", "pages"):
            raise ValueError(f"layout must be 'hyperstack' or 'pages', got {layout!r}")
        self.compression = _check_compression(compression)
        self.layout = layout
        self._paged = self.compression is not None or layout == "pages"
        self.imagej = imagej
        self.bigtiff = bigtiff
        self._tw: tifffile.TiffWriter | None = None
        self._pending: np.ndarray | None = None
        self._bytes = 0

    def _setup(self, frame_shape: tuple[int, int, int], dtype: np.dtype) -> None:
        if self.imagej is None:
            self.imagej = dtype in _IMAGEJ_DTYPES
        elif self.imagej and dtype not in _IMAGEJ_DTYPES:
            raise TypeError(
                f"ImageJ TIFF cannot hold dtype {dtype}; use uint8, uint16 or float32, "
                f"or imagej=False"
            )
        if self.bigtiff is None:
            if self.expected_frames is not None:
                size = self.expected_frames * int(np.prod(frame_shape)) * dtype.itemsize
                self.bigtiff = size > self.classic_limit
            else:
                self.bigtiff = not self.imagej or self._paged
        # Paged files carry their description on the first page (completed at close), so
        # tifffile's own ImageJ mode (contiguous pages only) is off for them.
        imagej_mode = self.imagej and not self._paged
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*writing nonconformant BigTIFF ImageJ")
            self._tw = tifffile.TiffWriter(self.path, bigtiff=self.bigtiff, imagej=imagej_mode)

    def _put(self, block: np.ndarray) -> None:
        if not self.bigtiff and not self.imagej:
            if self._bytes + block.nbytes > self.classic_limit:
                raise ValueError(
                    f"'{self.path}' would exceed 4 GB, the limit of classic TIFF; "
                    f"open the writer with bigtiff=True"
                )
        metadata = None if self.imagej else {"axes": "TZCYX"}
        self._tw.write(block, contiguous=True, photometric="minisblack", metadata=metadata)
        self._bytes += block.nbytes

    def _put_page(self, plane: np.ndarray) -> None:
        first = self._bytes == 0
        if not self.bigtiff and self._bytes + plane.nbytes > self.classic_limit:
            raise ValueError(
                f"'{self.path}' would exceed 4 GB, the limit of classic TIFF; "
                f"open the writer with bigtiff=True"
            )
        describe = first and self.layout == "hyperstack"
        self._tw.write(
            plane, photometric="minisblack", metadata=None, compression=self.compression,
            description=" " * 80 if describe else None,  # stored out of line, rewritable
        )  # fmt: skip
        self._bytes += plane.nbytes

    def _description(self) -> str:
        h, w, c = self._frame_shape
        t = self.frames_written
        if self.imagej:
            return tifffile.imagej_description((t, c, h, w), "TCYX")
        return json.dumps({"shape": [t, 1, c, h, w], "axes": "TZCYX"})

    def _write(self, frames: np.ndarray) -> None:
        if self._paged:
            for frame in frames:
                for i in range(frame.shape[2]):
                    self._put_page(np.ascontiguousarray(frame[:, :, i]))
            return
        for frame in frames:
            block = frame.transpose(2, 0, 1)[None]  # (1, C, H, W)
            if self.imagej:
                self._put(block)
                continue
            # Shaped files: the description written with the first frame is only updated later
            # if more frames follow, so a lone frame is held back and written 5-D at close.
            if self._pending is not None:
                self._put(self._pending)
                self._pending = None
            if self._bytes == 0:
                self._pending = block.copy()
            else:
                self._put(block)

    def _close(self) -> None:
        if self._tw is None:
            return
        try:
            if self._pending is not None:
                self._put(self._pending[None])
                self._pending = None
            if self._paged and self.layout == "hyperstack" and self.frames_written:
                self._tw.overwrite_description(self._description())
        finally:
            self._tw.close()
            self._tw = None
