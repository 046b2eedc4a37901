"""Pytrees of NumPy arrays in one shared-memory block.

:class:`SharedTree` packs every array found in a tree of tuples, NamedTuples, lists and dicts
(other leaves, such as Python scalars, travel pickled) into one :class:`SharedMemory` block whose
header holds the pickled layout. Another process rebuilds the tree from the block name alone with
:func:`attach_tree`, so large data is written once and never pickled::

    owner = SharedTree({"frames": video, "scale": 0.5})     # parent
    attached = attach_tree(owner.name)                     # worker: read-only views
    attached.tree["frames"]
    attached.close()                                       # worker: unmaps
    owner.close()                                          # parent: unlinks the block

Blocks are named ``pyflowreg_<pid>_<random>`` and are unlinked by :meth:`SharedTree.close`, when
the owner is garbage-collected, and at interpreter exit.
"""

from __future__ import annotations

import os
import pickle
import secrets
import struct
import weakref
from multiprocessing import shared_memory
from typing import Any, NamedTuple

import numpy as np

#: Name prefix of every shared-memory block pyflowreg creates.
PREFIX = "pyflowreg_"
_ALIGN = 64
_HEADER = struct.Struct("<Q")


class ArraySlot(NamedTuple):
    """A leaf that reserves an uninitialised array of ``shape`` and ``dtype`` in the block."""

    shape: tuple[int, ...]
    dtype: np.dtype


class _ArrayRef(NamedTuple):
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _plan(tree: Any, leaves: list, offset: int) -> tuple[Any, int]:
    """The tree with arrays replaced by :class:`_ArrayRef`; ``leaves`` gets (offset, source)."""
    if isinstance(tree, ArraySlot):
        shape, dtype, source = tuple(int(s) for s in tree.shape), np.dtype(tree.dtype), None
    elif isinstance(tree, np.ndarray):
        if tree.dtype.hasobject:
            raise TypeError("arrays of Python objects cannot be placed in shared memory")
        shape, dtype, source = tree.shape, tree.dtype, tree
    elif isinstance(tree, tuple) and hasattr(type(tree), "_fields"):
        children = []
        for child in tree:
            spec, offset = _plan(child, leaves, offset)
            children.append(spec)
        return type(tree)(*children), offset
    elif isinstance(tree, (tuple, list)):
        children = []
        for child in tree:
            spec, offset = _plan(child, leaves, offset)
            children.append(spec)
        return (tuple if isinstance(tree, tuple) else list)(children), offset
    elif isinstance(tree, dict):
        specs = {}
        for key, child in tree.items():
            specs[key], offset = _plan(child, leaves, offset)
        return specs, offset
    else:
        return tree, offset
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes == 0:
        return _ArrayRef(0, shape, dtype), offset
    offset = _align(offset)
    leaves.append((offset, shape, dtype, source))
    return _ArrayRef(offset, shape, dtype), offset + nbytes


def _rebuild(spec: Any, buf: memoryview, start: int, writable: bool) -> Any:
    if isinstance(spec, _ArrayRef):
        view = np.ndarray(spec.shape, spec.dtype, buffer=buf, offset=start + spec.offset)
        view.flags.writeable = writable
        return view
    if isinstance(spec, tuple) and hasattr(type(spec), "_fields"):
        return type(spec)(*(_rebuild(s, buf, start, writable) for s in spec))
    if isinstance(spec, (tuple, list)):
        return type(spec)(_rebuild(s, buf, start, writable) for s in spec)
    if isinstance(spec, dict):
        return {k: _rebuild(s, buf, start, writable) for k, s in spec.items()}
    return spec


def _read_layout(shm: shared_memory.SharedMemory) -> tuple[Any, int]:
    (length,) = _HEADER.unpack_from(shm.buf, 0)
    spec = pickle.loads(shm.buf[_HEADER.size : _HEADER.size + length])
    return spec, _align(_HEADER.size + length)


def _release(shm: shared_memory.SharedMemory) -> None:
    """Unlink first (the name disappears even if views still exist), then unmap if possible."""
    try:
        shm.unlink()
    except FileNotFoundError:
        pass
    try:
        shm.close()
    except BufferError:
        pass  # views still alive: the mapping goes when they are garbage-collected


class SharedTree:
    """A tree of arrays copied into one shared-memory block owned by this process.

    Parameters
    ----------
    tree : object
        Tuples, NamedTuples (module-level classes), lists and dicts whose leaves are ndarrays
        (copied), :class:`ArraySlot` (reserved, uninitialised) or picklable Python objects.
    """

    def __init__(self, tree: Any) -> None:
        leaves: list = []
        spec, size = _plan(tree, leaves, 0)
        layout = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
        start = _align(_HEADER.size + len(layout))
        name = f"{PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        self._shm = shared_memory.SharedMemory(name=name, create=True, size=start + max(size, 1))
        self._finalizer = weakref.finalize(self, _release, self._shm)
        self.name: str = self._shm.name
        self.nbytes: int = self._shm.size
        buf = self._shm.buf
        _HEADER.pack_into(buf, 0, len(layout))
        buf[_HEADER.size : _HEADER.size + len(layout)] = layout
        for offset, shape, dtype, source in leaves:
            if source is not None:
                target = np.ndarray(shape, dtype, buffer=buf, offset=start + offset)
                np.copyto(target, source)
                del target
        self._spec, self._start = spec, start

    def views(self) -> Any:
        """The tree with writable views into the block (drop them before :meth:`close`)."""
        if not self._finalizer.alive:
            raise RuntimeError(f"shared-memory block {self.name} is closed")
        return _rebuild(self._spec, self._shm.buf, self._start, writable=True)

    @property
    def closed(self) -> bool:
        """Whether the block was released."""
        return not self._finalizer.alive

    def close(self) -> None:
        """Unlink and unmap the block (idempotent)."""
        self._finalizer()


class AttachedTree:
    """A tree rebuilt from a block another process owns; :meth:`close` it when done."""

    def __init__(self, name: str, writable: bool) -> None:
        self.shm = shared_memory.SharedMemory(name=name)
        spec, start = _read_layout(self.shm)
        self.name = name
        self.tree: Any = _rebuild(spec, self.shm.buf, start, writable)

    def close(self) -> None:
        """Drop the views and unmap the block (never unlinks: the owner does)."""
        self.tree = None
        try:
            self.shm.close()
        except BufferError:
            pass  # a caller still holds a view; unmapped when it is garbage-collected


def attach_tree(name: str, writable: bool = False) -> AttachedTree:
    """Rebuild the tree stored in block ``name`` as views (read-only unless ``writable``)."""
    return AttachedTree(name, writable)
