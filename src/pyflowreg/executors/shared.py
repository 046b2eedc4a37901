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

A block of reserved slots can be laid out again in place (:meth:`SharedTree.relayout`, e.g.
for a batch of another length or output dtype) while it is large enough; its
:attr:`~SharedTree.key` (name and generation) then changes, and an attached tree follows with
:meth:`AttachedTree.refresh` without mapping the block again.

Blocks are named ``pyflowreg_<pid>_<random>`` and are unlinked by :meth:`SharedTree.close`, when
the owner is garbage-collected, and at interpreter exit; at exit every block this process made
and has not unlinked goes as well (:func:`unlink_own_blocks`), such as one an interrupt (Ctrl-C)
hit between its creation and its owner taking charge of it.

Where POSIX shared memory is a filesystem (``/dev/shm`` on Linux, often only 64 MiB in a
container) its free space is checked before a block is made, since writing to a block that
does not fit kills the process with SIGBUS. A block that does not fit goes to a file in the
temporary directory instead, mapped the same way by every process, with a
:class:`SharedMemoryFallbackWarning`; if that does not fit either, :class:`OSError` (ENOSPC)
names the bytes needed and free.
"""

from __future__ import annotations

import atexit
import errno
import mmap
import os
import pickle
import secrets
import struct
import tempfile
import threading
import warnings
import weakref
from multiprocessing import shared_memory
from typing import Any, NamedTuple

import numpy as np

#: Name prefix of every shared-memory block pyflowreg creates.
PREFIX = "pyflowreg_"
_ALIGN = 64
_HEADER = struct.Struct("<QQ")  # length of the pickled layout, generation
#: Bytes kept for the pickled layout, so that another layout fits the header later.
_LAYOUT_ROOM = 1024
#: Where POSIX shared memory lives (Linux); blocks are checked against its free space.
SHM_DIR = "/dev/shm"
#: Name prefix of blocks placed in a file instead (the rest of the name is its path).
FILE_PREFIX = "file:"


class SharedMemoryFallbackWarning(UserWarning):
    """A shared block did not fit in shared memory and was placed in a temporary file."""


def free_bytes(path: str) -> int | None:
    """Bytes free for an unprivileged writer in the filesystem of ``path`` (None: unknown)."""
    try:
        stat = os.statvfs(path)
    except (OSError, AttributeError):  # no such folder, or no statvfs (Windows)
        return None
    return stat.f_bavail * stat.f_frsize


#: Blocks this process made in :data:`SHM_DIR` and has not released: name -> size.
_LIVE: dict[str, int] = {}
#: Names of the blocks this process created and has not unlinked (see :func:`unlink_own_blocks`).
_CREATED: set[str] = set()
_LIVE_LOCK = threading.Lock()


def _shm_available() -> int | None:
    """Bytes of :data:`SHM_DIR` still free for new blocks: its free space less the pages our
    live blocks have not touched yet (a filesystem of memory counts a page when it is first
    written, and a block too large would then fault). None where there is no such folder."""
    if not os.path.isdir(SHM_DIR):
        return None
    free = free_bytes(SHM_DIR)
    if free is None:
        return None
    with _LIVE_LOCK:
        live = list(_LIVE.items())
    for name, size in live:
        try:
            written = os.stat(os.path.join(SHM_DIR, name)).st_blocks * 512
        except OSError:  # released meanwhile
            continue
        free -= max(0, size - written)
    return free


class _FileBlock:
    """A block in a file of the temporary directory, with the :class:`SharedMemory` surface
    :class:`SharedTree` and :class:`AttachedTree` use (``buf``, ``size``, ``name``, ``close``,
    ``unlink``); its name is :data:`FILE_PREFIX` and the file's path."""

    def __init__(self, path: str, size: int = 0, create: bool = False) -> None:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
        try:
            if create:
                try:
                    if hasattr(os, "posix_fallocate"):  # reserve the space: no fault later
                        os.posix_fallocate(fd, 0, size)
                    else:  # pragma: no cover - macOS, Windows
                        os.ftruncate(fd, size)
                except OSError:
                    os.close(fd)
                    fd = -1
                    os.unlink(path)
                    raise
            else:
                size = os.fstat(fd).st_size
            self._mmap = mmap.mmap(fd, size)
        finally:
            if fd >= 0:
                os.close(fd)
        self.buf: memoryview | None = memoryview(self._mmap)
        self.size = size
        self.name = FILE_PREFIX + path
        self._path = path

    def close(self) -> None:
        if self.buf is not None:
            self.buf.release()  # BufferError while views exist, as SharedMemory.close
            self.buf = None
        self._mmap.close()

    def unlink(self) -> None:
        os.unlink(self._path)


def _create_block(size: int) -> shared_memory.SharedMemory | _FileBlock:
    """A new block of ``size`` bytes: in shared memory if it fits, else in a temporary file
    (with a warning), else :class:`OSError`."""
    name = f"{PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    available = _shm_available()
    if available is None or size <= available:
        _CREATED.add(name)  # before the block exists: an interrupt may come at any point
        block = shared_memory.SharedMemory(name=name, create=True, size=size)
        if available is not None:
            with _LIVE_LOCK:
                _LIVE[block.name] = size
        return block
    folder = tempfile.gettempdir()
    disk = free_bytes(folder)
    if disk is not None and size > disk:
        raise OSError(
            errno.ENOSPC,
            f"no room for a shared block of the multiprocessing executor: it needs {size} "
            f"bytes, {SHM_DIR} has {available} bytes free and {folder} {disk}; use a smaller "
            'buffer_size, give the machine more shared memory or use parallelization="threading"',
        )
    warnings.warn(
        f"{SHM_DIR} has {available} bytes free but a shared block of the multiprocessing "
        f"executor needs {size}: it is placed in a file under {folder} instead, which can be "
        "slower; give the machine or container more shared memory (docker run --shm-size=2g) "
        "or use a smaller buffer_size",
        SharedMemoryFallbackWarning,
        stacklevel=4,
    )
    path = os.path.join(folder, name)
    _CREATED.add(FILE_PREFIX + path)
    return _FileBlock(path, size, create=True)


def unlink_own_blocks() -> list[str]:
    """Unlink every block this process created and has not unlinked yet (shared memory or
    fallback file); returns their names. Run at interpreter exit, when no executor of this
    process uses a block any more. Only names this process made are touched (never a glob by
    process id: processes of other PID namespaces can share ``/dev/shm``)."""
    gone = []
    for name in sorted(_CREATED):
        if name.startswith(FILE_PREFIX):
            try:
                os.unlink(name[len(FILE_PREFIX) :])
            except OSError:
                continue
        else:
            try:  # attach, then unlink: also unregisters the name from the resource tracker
                block = shared_memory.SharedMemory(name=name)
            except (OSError, ValueError):  # FileNotFoundError: never made, or unlinked
                continue
            block.close()
            try:
                block.unlink()
            except FileNotFoundError:
                continue
        gone.append(name)
    _CREATED.clear()
    with _LIVE_LOCK:
        for name in gone:
            _LIVE.pop(name, None)
    return gone


atexit.register(unlink_own_blocks)
if hasattr(os, "register_at_fork"):  # a forked child must not unlink its parent's blocks
    os.register_at_fork(after_in_child=_CREATED.clear)


def _attach_block(name: str) -> shared_memory.SharedMemory | _FileBlock:
    if name.startswith(FILE_PREFIX):
        return _FileBlock(name[len(FILE_PREFIX) :])
    return shared_memory.SharedMemory(name=name)


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


def data_nbytes(tree: Any) -> int:
    """Bytes of array data a :class:`SharedTree` of ``tree`` holds (alignment included)."""
    return _plan(tree, [], 0)[1]


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


def _read_layout(shm: shared_memory.SharedMemory) -> tuple[Any, int, int]:
    """The layout stored in the block's header, where the data starts, and the generation."""
    length, generation = _HEADER.unpack_from(shm.buf, 0)
    spec = pickle.loads(shm.buf[_HEADER.size : _HEADER.size + length])
    return spec, _align(_HEADER.size + max(length, _LAYOUT_ROOM)), generation


def split_key(key: str) -> tuple[str, int]:
    """``(name, generation)`` of a :attr:`SharedTree.key` (or of a bare name)."""
    name, _, generation = key.rpartition("@")
    if not name or not generation.isdigit():  # no generation (a path may hold an "@")
        return key, 0
    return name, int(generation)


def _release(shm: shared_memory.SharedMemory | _FileBlock) -> None:
    """Unlink first (the name disappears even if views still exist), then unmap if possible."""
    with _LIVE_LOCK:
        _LIVE.pop(shm.name, None)
    try:
        shm.unlink()
    except FileNotFoundError:
        pass
    _CREATED.discard(shm.name)
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
    min_nbytes : int
        Room for data of at least this many bytes (to :meth:`relayout` larger trees later).
    """

    def __init__(self, tree: Any, min_nbytes: int = 0) -> None:
        leaves: list = []
        spec, size = _plan(tree, leaves, 0)
        layout = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
        start = _align(_HEADER.size + max(len(layout), _LAYOUT_ROOM))
        data = max(size, int(min_nbytes), 1)
        self._shm = _create_block(start + data)
        self._finalizer = weakref.finalize(self, _release, self._shm)
        self.name: str = self._shm.name
        self.nbytes: int = self._shm.size
        #: Bumped by every :meth:`relayout` that changes the layout.
        self.generation = 0
        self._start, self._room = start, data
        self._write_header(spec, layout)
        buf = self._shm.buf
        for offset, shape, dtype, source in leaves:
            if source is not None:
                target = np.ndarray(shape, dtype, buffer=buf, offset=start + offset)
                np.copyto(target, source)
                del target

    def _write_header(self, spec: Any, layout: bytes) -> None:
        buf = self._shm.buf
        _HEADER.pack_into(buf, 0, len(layout), self.generation)
        buf[_HEADER.size : _HEADER.size + len(layout)] = layout
        self._spec = spec

    @property
    def key(self) -> str:
        """``"<name>@<generation>"``: names the block and its current layout (for tasks)."""
        return f"{self.name}@{self.generation}"

    def relayout(self, tree: Any) -> bool:
        """Lay ``tree`` out in this block instead of the current layout, if it fits.

        ``tree`` holds :class:`ArraySlot` leaves (arrays would not be copied: TypeError). The
        data of the earlier layout is left as it is (no pages are touched); views taken
        before are invalid afterwards. Returns False, changing nothing, when the data or the
        pickled layout needs more room than the block has; True (and :attr:`generation` is
        bumped unless the layout is unchanged) otherwise.
        """
        if not self._finalizer.alive:
            raise RuntimeError(f"shared-memory block {self.name} is closed")
        leaves: list = []
        spec, size = _plan(tree, leaves, 0)
        if any(source is not None for *_, source in leaves):
            raise TypeError("relayout takes ArraySlot leaves only")
        if spec == self._spec:
            return True
        layout = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
        if size > self._room or len(layout) > self._start - _HEADER.size:
            return False
        self.generation += 1
        self._write_header(spec, layout)
        return True

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
        self.shm = _attach_block(name)
        self.name = name
        self.writable = writable
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the views from the block's current layout (after the owner's relayout)."""
        spec, start, self.generation = _read_layout(self.shm)
        self.tree: Any = _rebuild(spec, self.shm.buf, start, self.writable)

    def close(self) -> None:
        """Drop the views and unmap the block (never unlinks: the owner does)."""
        self.tree = None
        try:
            self.shm.close()
        except BufferError:
            pass  # a caller still holds a view; unmapped when it is garbage-collected


def attach_tree(name: str, writable: bool = False) -> AttachedTree:
    """Rebuild the tree stored in block ``name`` (or a :attr:`SharedTree.key`) as views
    (read-only unless ``writable``)."""
    return AttachedTree(split_key(name)[0], writable)
