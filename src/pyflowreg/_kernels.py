"""Compiled kernels: whether Numba's cache holds them, and compiling them once per environment.

The engine's kernels (:mod:`pyflowreg.core`) are compiled by Numba on first use and cached on
disk (``cache=True``), so only the first run in an environment pays for the compilation (tens
of seconds); later runs load them (about half a second). :func:`ensure_compiled` is called
before a run: when the cache is cold it says so once ("compiling kernels, first run only"),
compiles every kernel a run uses in this process and writes a small manifest next to Numba's
cache; the multiprocessing fork server and its workers then load them instead of compiling
them again. :func:`kernel_status` reads the manifest (for ``pyflowreg info``) without compiling
anything.

The manifest lists the kernels the warm-up used with the size and modification time of their
source files, the Python and Numba versions: exactly what Numba checks before it reuses a cached
kernel, so a changed source or another Numba version counts as not compiled.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

logger = logging.getLogger(__name__)

#: Output dtypes warmed up (the final warp is compiled per raw-frame dtype).
WARM_DTYPES = ("uint16", "int16", "uint8", "float32")
_MANIFEST = f"pyflowreg-kernels.py{sys.version_info.major}{sys.version_info.minor}.json"


def warm_up() -> None:
    """Register two small frames per output dtype and preset depth (loads every kernel a run
    uses, compiling those the cache lacks)."""
    import numpy as np

    from .backends.cpu import FlowregBackend
    from .core.params import FlowParameters
    from .executors.base import WarpSettings, register_frame

    rng = np.random.default_rng(0)
    reference = rng.random((48, 40, 1), dtype=np.float32)
    frame = np.roll(reference, 1, axis=1)
    uv = np.zeros((48, 40, 2), np.float32)
    for min_level in (0, 2):  # full-resolution solve, and a flow upsampled from a coarser level
        backend = FlowregBackend(FlowParameters(min_level=min_level, iterations=2), {})
        prepared = backend.prepare_reference(reference)
        for name in WARM_DTYPES:
            dtype = np.dtype(name)
            raw = (frame * 100).astype(dtype)
            register_frame(backend, prepared, raw, frame, uv, WarpSettings("cubic", dtype))


def _dispatchers() -> list:
    """Every Numba dispatcher with a disk cache in the modules of :mod:`pyflowreg.core`."""
    import importlib
    import pkgutil

    from numba.core.dispatcher import Dispatcher

    from . import core

    found = []
    for info in pkgutil.iter_modules(core.__path__, core.__name__ + "."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if isinstance(obj, Dispatcher) and obj.__module__ == module.__name__:
                try:
                    obj.stats.cache_path  # noqa: B018 - dispatchers without cache=True lack it
                except AttributeError:
                    continue
                found.append(obj)
    return found


def _stamp(path: str) -> list[float]:
    st = os.stat(path)
    return [st.st_mtime, st.st_size]


def _versions() -> dict:
    import numba

    return {"python": sys.version.split()[0], "numba": numba.__version__}


def _manifest_path(dispatchers: list) -> Path | None:
    return Path(dispatchers[0].stats.cache_path) / _MANIFEST if dispatchers else None


class KernelStatus(NamedTuple):
    """Whether the kernels are compiled for this environment (see :func:`kernel_status`)."""

    compiled: bool
    #: Kernels a run uses (from the manifest; 0 when there is none).
    n_kernels: int
    #: Where Numba keeps the compiled kernels of :mod:`pyflowreg.core`.
    cache_dir: str | None
    #: Why not, when not compiled.
    reason: str | None = None
    #: Seconds the compilation took, as recorded in the manifest.
    compile_seconds: float | None = None


def kernel_status() -> KernelStatus:
    """Whether Numba's cache holds the kernels a run needs (reads files; compiles nothing)."""
    dispatchers = _dispatchers()
    path = _manifest_path(dispatchers)
    if path is None:
        return KernelStatus(False, 0, None, "no cached kernels in pyflowreg.core")
    cache_dir = str(path.parent)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return KernelStatus(False, 0, cache_dir, "not compiled yet in this environment")
    kernels = manifest.get("kernels", {})
    seconds = manifest.get("compile_seconds")
    if manifest.get("versions") != _versions():
        reason = f"compiled for {manifest.get('versions')}, this is {_versions()}"
        return KernelStatus(False, len(kernels), cache_dir, reason, seconds)
    for name, entry in kernels.items():
        try:
            same = _stamp(entry["source"]) == entry["stamp"]
        except (OSError, KeyError, TypeError):
            same = False
        if not same:
            reason = f"the source of {name} changed since it was compiled"
            return KernelStatus(False, len(kernels), cache_dir, reason, seconds)
    return KernelStatus(True, len(kernels), cache_dir, None, seconds)


def _write_manifest(dispatchers: list, seconds: float | None) -> None:
    used = [d for d in dispatchers if d.signatures]
    kernels = {
        f"{d.__module__}.{d.__qualname__}": {
            "source": d.py_func.__code__.co_filename,
            "stamp": _stamp(d.py_func.__code__.co_filename),
        }
        for d in used
    }
    seconds = None if seconds is None else round(seconds, 2)
    record = {"versions": _versions(), "compile_seconds": seconds, "kernels": kernels}
    path = _manifest_path(dispatchers)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
    except OSError:  # a read-only cache: Numba then recompiles in each process anyway
        tmp.unlink(missing_ok=True)


_LOCK = threading.Lock()


def _cache_misses(dispatchers: list) -> int:
    return sum(sum(d.stats.cache_misses.values()) for d in dispatchers)


@functools.cache
def _compiled_once() -> float | None:
    status = kernel_status()
    if status.compiled:
        return None
    # without a manifest but with cached kernels (written before manifests existed, or by a
    # run that never got here): probably nothing to compile, so nothing to announce yet
    cached = status.cache_dir is not None and any(Path(status.cache_dir).glob("*.nbi"))
    announce = status.reason != "not compiled yet in this environment" or not cached
    if announce:
        logger.warning(
            "compiling kernels, first run only (%s; later runs load them from Numba's cache)",
            status.reason,
        )
    dispatchers = _dispatchers()
    misses = _cache_misses(dispatchers)
    tic = time.perf_counter()
    warm_up()
    seconds = time.perf_counter() - tic
    compiled = _cache_misses(dispatchers) > misses
    if dispatchers:
        _write_manifest(dispatchers, seconds if compiled else status.compile_seconds)
    if compiled:
        log = logger.warning if announce else logger.info
        log("kernels compiled in %.1f s", seconds)
    return seconds if compiled else None


def ensure_compiled() -> float | None:
    """Compile the kernels in this process if Numba's cache lacks them (said once, as a
    logging warning); the seconds it took, or None when they were compiled already.

    Call it before starting workers: they then load the kernels instead of each compiling
    them.
    """
    with _LOCK:
        return _compiled_once()
