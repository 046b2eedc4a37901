"""Start methods whose workers never run the caller's script.

With the ``spawn`` and ``forkserver`` start methods, :mod:`multiprocessing` tells every new
process how to rebuild the parent's ``__main__`` (its preparation data holds
``init_main_from_path`` or ``init_main_from_name``), and the child runs the main module again,
as ``__mp_main__``, before it does anything else. That is why the :mod:`multiprocessing`
documentation asks for ``if __name__ == "__main__":`` ("Safe importing of main module"): a
script that calls ``compensate_recording`` at top level would run the whole registration again
in every worker, which then fails to start processes of its own.

Our workers never need the caller's ``__main__``: their tasks are functions of pyflowreg and
the flow-backend factory, both pickled by reference to importable modules. The contexts here
start processes while :mod:`multiprocessing` sees a ``__main__`` with neither a file nor a
module spec, so the preparation data asks the child to rebuild nothing and a script works with
or without a main guard. The only exception is a factory defined in the script itself
(``__main__``): the workers must import the script to find it, so
:func:`worker_context` keeps the standard behaviour for it, main guard required.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import pickletools
import sys
import threading
import types
from collections.abc import Iterator
from multiprocessing import context as mp_context

_LOCK = threading.Lock()
#: What :mod:`multiprocessing` sees as ``__main__`` while a worker is launched.
_NO_MAIN = types.ModuleType("__main__")


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """Show :mod:`multiprocessing` a ``__main__`` without ``__file__`` or ``__spec__``.

    Only process launches run inside (they compute the preparation data of the child); the
    real module is back in :data:`sys.modules` as soon as the launch returns.
    """
    with _LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = _NO_MAIN
        try:
            yield
        finally:
            if main is None:
                del sys.modules["__main__"]
            else:
                sys.modules["__main__"] = main


class _SpawnProcess(mp_context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj):
        with main_module_hidden():
            return mp_context.SpawnProcess._Popen(process_obj)


class _SpawnContext(mp_context.SpawnContext):
    Process = _SpawnProcess


_CONTEXTS: dict[str, mp_context.BaseContext] = {"spawn": _SpawnContext()}

if hasattr(mp_context, "ForkServerProcess"):  # POSIX only

    class _ForkServerProcess(mp_context.ForkServerProcess):
        @staticmethod
        def _Popen(process_obj):
            with main_module_hidden():
                return mp_context.ForkServerProcess._Popen(process_obj)

    class _ForkServerContext(mp_context.ForkServerContext):
        Process = _ForkServerProcess

    _CONTEXTS["forkserver"] = _ForkServerContext()


def refers_to_main(payload: bytes) -> bool:
    """Whether the pickle ``payload`` names anything of the ``__main__`` module."""
    for opcode, arg, _ in pickletools.genops(payload):
        if opcode.name == "GLOBAL" and str(arg).split(" ", 1)[0] == "__main__":
            return True
        if isinstance(arg, str) and arg == "__main__":  # the module of a STACK_GLOBAL
            return True
    return False


def worker_context(start_method: str, payload: bytes) -> mp_context.BaseContext:
    """The :mod:`multiprocessing` context for workers that unpickle ``payload``.

    For ``spawn`` and ``forkserver`` a context whose processes do not run the caller's main
    module, unless ``payload`` refers to ``__main__`` (then the workers need it, and the
    script needs its main guard); any other start method as :func:`multiprocessing.get_context`
    gives it (``fork`` copies the parent and runs nothing).
    """
    context = _CONTEXTS.get(start_method)
    if context is None or refers_to_main(payload):
        return mp.get_context(start_method)
    return context
