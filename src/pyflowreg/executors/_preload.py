"""Warm start of multiprocessing workers.

The multiprocessing executor adds this module to the forkserver's preload list (see
:func:`pyflowreg.executors.processes.use_warm_forkserver`). The fork server imports it once,
which imports pyflowreg and runs a tiny registration so that the compiled kernels are loaded
(from Numba's cache) into the server; every worker forked from it then starts with them in
memory instead of importing and loading them itself. Any error here is ignored: workers then
simply load what they need on their own.
"""

from __future__ import annotations

import signal
import threading

#: Output dtypes warmed up (the final warp is compiled per raw-frame dtype).
WARM_DTYPES = ("uint16", "int16", "uint8", "float32")


def warm_up() -> None:
    """Register two small frames per output dtype and preset depth (loads every kernel)."""
    import numpy as np

    from ..backends.cpu import FlowregBackend
    from ..core.params import FlowParameters
    from .base import WarpSettings, register_frame

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


# A Ctrl-C in the terminal reaches the whole process group, the fork server included; the
# server ignores SIGINT only once its preloading is done, so the warm-up ignores it itself (the
# caller handles the interrupt and stops the workers).
_IN_MAIN_THREAD = threading.current_thread() is threading.main_thread()
_previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _IN_MAIN_THREAD else None
try:
    warm_up()
except Exception:  # a warm-up must never break the fork server
    pass
finally:
    if _IN_MAIN_THREAD:
        signal.signal(signal.SIGINT, _previous)
