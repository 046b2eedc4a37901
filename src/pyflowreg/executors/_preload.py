"""Warm start of multiprocessing workers.

The multiprocessing executor adds this module to the forkserver's preload list (see
:func:`pyflowreg.executors.processes.use_warm_forkserver`). The fork server imports it once,
which imports pyflowreg and runs a tiny registration so that the compiled kernels are loaded
(from Numba's cache) into the server; every worker forked from it then starts with them in
memory instead of importing and loading them itself. Any error here is ignored: workers then
simply load what they need on their own. (A run compiles kernels missing from the cache in the
calling process first, :func:`pyflowreg._kernels.ensure_compiled`, so that the server loads
them rather than compiling them a second time.)
"""

from __future__ import annotations

import signal
import threading

from .._kernels import warm_up

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
