"""Start-up of executor worker processes.

This module imports only the standard library, so that :func:`bootstrap` can limit the threads of
BLAS, OpenMP and Numba in a fresh worker *before* NumPy or Numba are imported there.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys

#: Environment of worker processes: one thread each, the pool provides the parallelism.
THREAD_LIMITS: dict[str, str] = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}


def bootstrap(env: dict[str, str], payload: bytes) -> None:
    """Process-pool initializer: ignore SIGINT, set ``env``, then unpickle and call
    ``(init, args)``.

    ``payload`` is ``pickle.dumps((init, args))``; unpickling it is what imports the heavy
    modules, so it happens after the environment is set. A worker forked from the warm fork
    server (:mod:`pyflowreg.executors._preload`) has Numba loaded already: its configuration is
    re-read so that the thread limit still applies.
    """
    # Ctrl-C reaches the whole process group: the caller handles it and stops the workers,
    # which must not each print a KeyboardInterrupt traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(env)
    if "numba" in sys.modules:  # forked from a warm fork server: numba read its config there
        try:
            from numba.core import config

            config.reload_config()
        except (ImportError, RuntimeError):  # pragma: no cover - threads already launched
            pass
    init, args = pickle.loads(payload)
    init(*args)
