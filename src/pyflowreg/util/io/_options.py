"""PyFlowReg's reader and writer option names, translated to :mod:`pyflowreg.io`'s.

One table per direction; :mod:`pyflowreg.util.io.factory` and the classes of this package apply
them, so each option has one meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["reader_options", "writer_options"]

#: PyFlowReg reader option -> this package's, by format.
_READER_RENAMES: dict[str, dict[str, str]] = {
    "TIFF": {"use_memmap": "memmap", "deinterleave": "n_channels"},
}
#: PyFlowReg writer option -> this package's, by format family.
_WRITER_RENAMES: dict[str, dict[str, str]] = {
    "HDF5": {"compression_level": "compression_opts", "chunk_size": "chunk_frames"},
    "MAT": {"dataset_names": "variable_names"},
    "TIFF": {},
}
_FAMILIES = {
    "HDF5": "HDF5",
    "MULTIFILE_HDF5": "HDF5",
    "CAIMAN_HDF5": "HDF5",
    "TIFF": "TIFF",
    "MULTIFILE_TIFF": "TIFF",
    "SUITE2P_TIFF": "TIFF",
    "MAT": "MAT",
    "MULTIFILE_MAT": "MAT",
}


def _renamed(options: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in options.items():
        name = renames.get(key, key)
        if name in out:
            raise TypeError(f"got both {key!r} and {name!r}; pass one of them")
        out[name] = value
    return out


def reader_options(format: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of this package's ``format`` reader for PyFlowReg's ``options``.

    TIFF: ``use_memmap`` -> ``memmap``; ``deinterleave=N`` -> ``n_channels=N`` (``1``: none);
    volumes (ScanImage stacks, ImageJ ``Z``) are flattened into a sequence of 2-D frames in
    acquisition order unless ``plane=`` picks one plane.
    HDF5 and MAT: ``dataset_names`` may be one name or a list (one dataset per channel).
    """
    out = _renamed(options, _READER_RENAMES.get(format, {}))
    if format == "TIFF":
        if out.get("n_channels") in (0, 1) and "deinterleave" in options:
            out["n_channels"] = None
        out.setdefault("plane", "all")  # volumes flattened into a sequence of 2-D frames
    if format in ("HDF5", "MAT") and isinstance(out.get("dataset_names"), str):
        out["dataset_name"] = out.pop("dataset_names")
    return out


def writer_options(format: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of this package's ``format`` writer for PyFlowReg's ``options``.

    HDF5: ``compression_level`` -> ``compression_opts``, ``chunk_size`` -> ``chunk_frames``,
    ``dimension_ordering`` -> ``axis_order``. TIFF: ``compression="none"`` is no compression;
    BigTIFF is the default (``bigtiff=True``, as MATLAB's ``'w8'``) and ImageJ metadata is
    written only with ``imagej=True`` (then classic TIFF unless ``bigtiff=True``). MAT: a v5 file
    unless ``use_v73=True``; ``dataset_names`` -> ``variable_names``.
    """
    family = _FAMILIES.get(format)
    if family is None:
        return dict(options)
    out = _renamed(options, _WRITER_RENAMES[family])
    if family == "HDF5" and "dimension_ordering" in out:
        from pyflowreg.io.hdf5 import dimension_ordering_to_axis_order

        ordering = out.pop("dimension_ordering")
        if ordering is not None:
            out["axis_order"] = dimension_ordering_to_axis_order(ordering)
    if family == "TIFF":
        # PyFlowReg's defaults: BigTIFF, ImageJ metadata only when asked for (then classic TIFF
        # unless bigtiff=True, so that ImageJ itself opens the file).
        out.setdefault("imagej", False)
        if not out["imagej"]:
            out.setdefault("bigtiff", True)
    if family == "MAT":
        use_v73 = out.pop("use_v73", False)
        if not isinstance(use_v73, bool):
            raise TypeError(f"use_v73 must be a bool, got {use_v73!r}")
        out["version"] = "7.3" if use_v73 else "5"
        if not use_v73 and "compression" in out:
            out["do_compression"] = out.pop("compression") not in (None, False, "none")
    return out


_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def file_format(path: Any) -> str:
    """Reader format of ``path``: from its extension, else HDF5 if it is one (PyFlowReg probes
    unknown extensions as HDF5). ``.mdf`` (Sutter MesaScope) and folders of images raise
    ``NotImplementedError``; a folder without images (and not a Zarr store) ``ValueError``."""
    from pathlib import Path

    import h5py

    from pyflowreg.io.formats import detect_format

    path = Path(path)
    if path.is_dir() and path.suffix.lower() != ".zarr":
        try:
            return detect_format(path)  # a Zarr store without the extension
        except ValueError:
            pass
        if any(p.suffix.lower() in _IMAGE_SUFFIXES for p in path.iterdir()):
            raise NotImplementedError(
                f"'{path}' is a folder of images; reading image folders is not implemented: "
                f"combine the images into a TIFF stack and read that"
            )
        raise ValueError(f"Folder '{path}' does not contain images (nor a Zarr store)")
    if path.suffix.lower() == ".mdf":
        raise NotImplementedError(
            f"cannot read '{path}': MDF files are read through the MCSX.Data COM server of "
            f"Sutter's MesaScope software (Windows only), which this package does not use; "
            f"export the recording to TIFF or HDF5"
        )
    try:
        return detect_format(path)
    except ValueError:
        if path.is_file() and h5py.is_hdf5(path):
            return "HDF5"
        raise


def open_file(path: Any, bin_size: int = 1, **options: Any):
    """Open one video file with PyFlowReg's reader options (see :func:`reader_options`)."""
    from pyflowreg.io.base import check_input_path
    from pyflowreg.io.formats import open_reader

    fmt = file_format(check_input_path(path))
    return open_reader(path, fmt, bin_size=bin_size, **reader_options(fmt, options))
