"""The output folder of a run: a lock, a private staging folder and a commit that cannot lie.

A run writes nothing under its final names until it has finished:

1. :meth:`RunFolder.open` takes the folder's lock ``.pyflowreg.lock``: an exclusive ``flock``
   held for the whole run on that file, which names the run, its process id, host and start
   time. Another live run holding it makes the new run fail with
   :class:`OutputFolderInUseError` before any work. The kernel drops the lock of a process that
   dies (SIGKILL included), so the next run takes it over and removes that run's staging folder.
   (Without ``fcntl``, on Windows, the lock file is created exclusively and taken over when the
   process it names is gone.)
2. Every output is written into the run's own staging folder ``.pyflowreg-<run id>/``, so two
   runs can never write to or rename each other's files.
3. :meth:`RunFolder.commit` closes the writers, reads every video output back and checks its
   frame count and frame shape against what the run registered, then writes ``run.json`` (the
   completion record: every output with its size and a checksum of its header) into the staging
   folder, and publishes: the old ``run.json`` is removed first, then every output of an
   earlier run (also those this run does not write, such as a ``w.h5`` of an earlier ``save_w``
   run), the new outputs are renamed into place, and ``run.json`` is renamed into place last.

A run killed at any point therefore leaves either the earlier run's complete folder (killed
before the commit) or a folder without ``run.json`` (killed during it), never a ``run.json``
that describes files it does not match; :func:`pyflowreg.load_run` verifies a folder against its
``run.json``. The next run into the folder takes the dead run's lock over and cleans up.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: an exclusively created lock file, see RunFolder._acquire
    fcntl = None

LOCK_NAME = ".pyflowreg.lock"
LOCK_WAIT = 10.0  # seconds to wait for a lock that is being written or released
LOCK_WRITE_GRACE = 2.0  # an empty or unreadable lock younger than this is being written
RESUME_DIR = ".resume"  # checkpoints, inside the staging folder
PROGRESS = "progress.json"
STAGING_PREFIX = ".pyflowreg-"
RUN_RECORD = "run.json"
HEADER_BYTES = 64 * 1024

#: Names of the outputs a run may write (any extension for the video outputs); outputs of an
#: earlier run with these names that the new run does not write are removed at its commit.
VIDEO_OUTPUTS = ("compensated", "w", "valid_mask")
FILE_OUTPUTS = ("statistics.npz", "reference.tif", "reference_frame.npy", "idx.hdf", "options.json")


class OutputFolderInUseError(OSError):
    """Another live run holds the output folder's lock (``errno.EBUSY``)."""


class OutputCheckError(RuntimeError):
    """An output did not receive every frame of the run (checked before the commit)."""


def _in_use(message: str) -> OutputFolderInUseError:
    exc = OutputFolderInUseError(message)
    exc.errno = errno.EBUSY
    return exc


def new_run_id() -> str:
    """A unique, sortable run id: UTC time and 6 random hex digits."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{now}-{secrets.token_hex(3)}"


def _process_start(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    now = _process_start(pid)
    return started is None or now is None or now == started


def header_checksum(path: Path) -> str:
    """SHA-256 of the first 64 KiB of a file, or of the metadata files of a folder (Zarr)."""
    digest = hashlib.sha256()
    if path.is_dir():
        for meta in sorted(path.rglob("*")):
            if meta.is_file() and meta.name in ("zarr.json", ".zarray", ".zgroup", ".zattrs"):
                digest.update(str(meta.relative_to(path)).encode())
                digest.update(meta.read_bytes())
    else:
        with open(path, "rb") as fh:
            digest.update(fh.read(HEADER_BYTES))
    return digest.hexdigest()


def output_size(path: Path) -> int:
    """Bytes of a file, or of every file in a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def remove_path(path: Path) -> None:
    """Delete a file or a folder (Zarr stores are folders) if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def read_progress(staging: Path) -> dict[str, Any] | None:
    """The last checkpoint saved in a staging folder, or None."""
    try:
        progress = json.loads((staging / RESUME_DIR / PROGRESS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return progress if isinstance(progress, dict) else None


def lock_holder(folder: Path) -> tuple[dict[str, Any] | None, bool]:
    """The record of the lock of ``folder`` (None without one) and whether a live run holds it."""
    path = Path(folder) / LOCK_NAME
    held = read_lock(path)
    if held is None:
        return None, False
    if fcntl is None:
        pid = held.get("pid")
        return held, isinstance(pid, int) and _alive(pid, held.get("process_start"))
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return held, False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return held, True
    finally:
        os.close(fd)
    return held, False


def read_lock(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written by a process killed while creating it


class RunFolder:
    """Outputs of one run, staged in ``.pyflowreg-<run id>/`` and published by :meth:`commit`.

    Parameters
    ----------
    output_path : Path
        The output folder (created when missing).
    run_id : str, optional
        Default: :func:`new_run_id`.
    protect : iterable of Path
        Files never removed at the commit (the run's input files, when they lie in the folder).
    """

    def __init__(
        self, output_path: Path, run_id: str | None = None, protect: Iterable[Path] = ()
    ) -> None:
        self.output_path = Path(output_path)
        self.run_id = run_id or new_run_id()
        self.staging = self.output_path / f"{STAGING_PREFIX}{self.run_id}"
        self.lock_path = self.output_path / LOCK_NAME
        self._protect = {_resolved(p) for p in protect}
        self._pending: dict[str, str] = {}  # key -> final name
        self._videos: dict[str, tuple[Any, int | None]] = {}  # key -> (writer, frames)
        self._writers: list[Any] = []
        self._locked = False
        self._lock_fd: int | None = None
        #: The checkpoint of an interrupted run this run continues (see :meth:`open`), or None.
        self.resumed: dict[str, Any] | None = None

    # ------------------------------------------------------------------ lock

    def open(self, resume_key: str | None = None) -> RunFolder:
        """Take the folder's lock and create the staging folder.

        Staging folders of dead runs are removed, except, with ``resume_key``, the one whose
        last checkpoint was saved under that key: it becomes this run's staging folder and
        :attr:`resumed` its checkpoint.
        """
        self.output_path.mkdir(parents=True, exist_ok=True)
        self._acquire()
        try:
            for old in sorted(self.output_path.glob(STAGING_PREFIX + "*")):
                progress = read_progress(old) if resume_key is not None else None
                if self.resumed is None and progress and progress.get("key") == resume_key:
                    os.rename(old, self.staging)
                    self.resumed = progress
                else:  # left by a run that died: we hold the lock, nobody else writes
                    remove_path(old)
            if self.resumed is None:
                self.staging.mkdir()
        except BaseException:
            self._release()
            raise
        return self

    def restart(self) -> None:
        """Give up the checkpoint being resumed: start again in an empty staging folder."""
        self.close_writers_quietly()
        self._pending, self._videos, self.resumed = {}, {}, None
        remove_path(self.staging)
        self.staging.mkdir()

    def save_checkpoint(self, progress: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Flush the video writers, then save ``arrays`` and ``progress`` (last, atomically) in
        the staging folder: what :meth:`open` with the same ``progress["key"]`` resumes."""
        for writer in self._writers:
            writer.flush()
        folder = self.staging / RESUME_DIR
        folder.mkdir(exist_ok=True)
        for name, array in arrays.items():
            tmp = folder / f"{name}.tmp.npy"
            np.save(tmp, np.asarray(array), allow_pickle=False)
            os.replace(tmp, folder / f"{name}.npy")
        tmp = folder / f"{PROGRESS}.tmp"
        _write_json(tmp, progress)
        os.replace(tmp, folder / PROGRESS)

    def checkpoint_array(self, name: str) -> np.ndarray | None:
        """An array of the checkpoint being resumed (None if it saved none)."""
        path = self.staging / RESUME_DIR / f"{name}.npy"
        return np.load(path, allow_pickle=False) if path.exists() else None

    def close_writers_quietly(self) -> None:
        writers, self._writers = self._writers, []
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.close()

    def _acquire(self) -> None:
        record = {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process_start": _process_start(os.getpid()),
            "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        data = json.dumps(record).encode()
        if fcntl is None:
            self._acquire_exclusive(data)
            return
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live process holds it (the kernel drops a dead one's)
                os.close(fd)
                held = read_lock(self.lock_path)
                if held or time.monotonic() > deadline:
                    raise self._in_use_by(held or {}) from None
                time.sleep(0.05)  # being written by a starting run: read it again
                continue
            if not _same_file(fd, self.lock_path):  # released (unlinked) meanwhile: again
                os.close(fd)
                continue
            os.ftruncate(fd, 0)  # a dead run's record, if any: ours now
            os.write(fd, data)
            os.fsync(fd)
            self._lock_fd = fd
            self._locked = True
            return

    def _in_use_by(self, held: dict[str, Any]) -> OutputFolderInUseError:
        same_host = held.get("host") in (None, socket.gethostname())
        where = "" if same_host else f" on host {held['host']}"
        pid = held.get("pid")
        if fcntl is not None and same_host and isinstance(pid, int) and not _alive(pid, None):
            return _in_use(  # the lock lives on in processes the dead run left (its workers)
                f"output folder {self.output_path} is still locked by processes left over from "
                f"run {held.get('run_id', '?')} (pid {pid}, no longer running); end them "
                f"(e.g. fuser {self.lock_path}) or choose another output_path"
            )
        return _in_use(
            f"output folder {self.output_path} is in use by run {held.get('run_id', '?')} "
            f"(pid {held.get('pid', '?')}{where}, started {held.get('started', '?')}); wait for "
            "it to finish or choose another output_path"
        )

    def _acquire_exclusive(self, data: bytes) -> None:
        """Where ``fcntl`` is missing: an exclusively created lock file, taken over when the
        process it names is gone (same host) or it was left half-written."""
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                held = read_lock(self.lock_path)
                if held is None:
                    continue  # released meanwhile
                pid = held.get("pid")
                same_host = held.get("host") == socket.gethostname()
                if isinstance(pid, int) and (
                    not same_host or _alive(pid, held.get("process_start"))
                ):
                    raise self._in_use_by(held) from None
                if time.monotonic() > deadline:
                    raise self._in_use_by(held) from None
                if not held and _age(self.lock_path) < LOCK_WRITE_GRACE:
                    time.sleep(0.05)  # being written right now by a starting run
                    continue
                stale = self.lock_path.with_name(f"{LOCK_NAME}.stale-{self.run_id}")
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.lock_path, stale)
                    stale.unlink()
                continue
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._locked = True
            return

    def _release(self) -> None:
        if not self._locked:
            return
        self._locked = False
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            try:  # unlink while holding it, so a waiting run sees a fresh file
                if _same_file(fd, self.lock_path):
                    self.lock_path.unlink()
            except OSError:
                pass
            finally:
                os.close(fd)
            return
        held = read_lock(self.lock_path)
        if held and held.get("run_id") == self.run_id:
            with contextlib.suppress(OSError):
                self.lock_path.unlink()

    # ------------------------------------------------------------------ staged outputs

    def _register(self, key: str, final_name: str) -> Path:
        if key in self._pending:
            raise ValueError(f"output {key!r} is already open")
        self._pending[key] = final_name
        return self.staging / final_name

    def video_writer(
        self, key: str, final_name: str, output_format: str, *, expected_frames: int, **kwargs
    ):
        """A video writer (``pyflowreg.io.open_writer``) in the staging folder; the commit
        checks that it holds ``expected_frames`` frames."""
        from ..io import open_writer

        path = self._register(key, final_name)
        writer = open_writer(path, format=output_format, expected_frames=expected_frames, **kwargs)
        self._writers.append(writer)
        if self.resumed is not None:  # continue the file the interrupted run left
            writer.resume(self.resumed["frames"])
        self._videos[key] = (writer, expected_frames)
        return writer

    def write_file(self, key: str, final_name: str, write: Callable[[Path], None]) -> None:
        """Write a small output now, with ``write(staged_path)``."""
        write(self._register(key, final_name))

    def write_json(self, key: str, final_name: str, data: dict) -> None:
        self.write_file(key, final_name, lambda path: _write_json(path, data))

    def write_npz(self, key: str, final_name: str, arrays: dict[str, np.ndarray]) -> None:
        def write(path: Path) -> None:
            with open(path, "wb") as fh:
                np.savez(fh, **arrays)

        self.write_file(key, final_name, write)

    def write_tiff(self, key: str, final_name: str, image: np.ndarray) -> None:
        """One float32 image ``(H, W)`` or ``(H, W, C)`` (channels as samples)."""
        import tifffile

        image = np.ascontiguousarray(image, dtype=np.float32)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]

        def write(path: Path) -> None:
            with open(path, "wb") as fh:
                tifffile.imwrite(fh, image, photometric="minisblack", planarconfig="contig")

        self.write_file(key, final_name, write)

    def close_writers(self) -> None:
        """Close every video writer (finalising its file); all are closed even if one fails."""
        writers, self._writers = self._writers, []
        error: BaseException | None = None
        for writer in writers:
            try:
                writer.close()
            except BaseException as exc:  # re-raised once the others are closed
                error = error or exc
        if error is not None:
            raise error

    # ------------------------------------------------------------------ commit

    def check_outputs(self, frame_shape: tuple[int, ...] | None = None) -> None:
        """Read every staged video back: its frame count must be the expected one and its frames
        ``(H, W, ...)`` must match ``frame_shape`` (the input's ``(H, W)``)."""
        from ..io import open_reader

        for key, (_, expected) in self._videos.items():
            path = self.staging / self._pending[key]
            if not path.exists():
                raise OutputCheckError(f"output {key!r} ({path.name}) was never written")
            with open_reader(path) as reader:
                shape = tuple(int(s) for s in reader.shape)
            problems = []
            if expected is not None and shape[0] != expected:
                problems.append(f"{shape[0]} frames instead of {expected}")
            if frame_shape is not None and shape[1:3] != tuple(frame_shape[:2]):
                problems.append(f"frames of {shape[1:3]} instead of {tuple(frame_shape[:2])}")
            if problems:
                raise OutputCheckError(
                    f"output {key!r} ({path.name}) is incomplete: " + ", ".join(problems)
                )

    def commit(
        self, record: dict[str, Any], frame_shape: tuple[int, ...] | None = None
    ) -> dict[str, Path]:
        """Close, check and publish every output, then ``run.json`` (``record`` plus
        ``run_id`` and ``outputs``); returns key -> final path (``"run"`` included)."""
        self.close_writers()
        self.check_outputs(frame_shape)
        outputs = {}
        for key, name in self._pending.items():
            staged = self.staging / name
            if staged.exists():
                outputs[key] = {
                    "file": name,
                    "bytes": output_size(staged),
                    "header_sha256": header_checksum(staged),
                }
        complete = {"run_id": self.run_id, **record, "outputs": outputs}
        _write_json(self.staging / RUN_RECORD, complete)
        self._publish(outputs)
        files = {key: self.output_path / entry["file"] for key, entry in outputs.items()}
        files["run"] = self.output_path / RUN_RECORD
        return files

    def _publish(self, outputs: dict[str, dict]) -> None:
        final_record = self.output_path / RUN_RECORD
        earlier = _earlier_outputs(self.output_path)
        remove_path(final_record)  # from here on the folder claims no finished run
        for path in earlier:  # also those replaced below: never old and new files side by side
            if _resolved(path) not in self._protect:
                remove_path(path)
        for entry in outputs.values():
            staged, final = self.staging / entry["file"], self.output_path / entry["file"]
            if staged.is_dir() or final.is_dir():
                remove_path(final)  # os.replace cannot replace a folder by another
            os.replace(staged, final)
        os.replace(self.staging / RUN_RECORD, final_record)
        _fsync_dir(self.output_path)
        self._pending = {}
        self._videos = {}
        with contextlib.suppress(OSError):
            shutil.rmtree(self.staging)
        self._release()

    def abort(self) -> None:
        """Close what is open (ignoring errors), delete the staging folder, release the lock."""
        self.close_writers_quietly()
        with contextlib.suppress(OSError):
            remove_path(self.staging)
        self._pending = {}
        self._videos = {}
        self._release()


def _earlier_outputs(folder: Path) -> list[Path]:
    """Outputs of an earlier run in ``folder``: those its ``run.json`` lists, and files with
    the names pyflowreg writes."""
    found: dict[str, Path] = {}
    with contextlib.suppress(OSError, ValueError, AttributeError):
        record = json.loads((folder / RUN_RECORD).read_text(encoding="utf-8"))
        for entry in record.get("outputs", {}).values():
            name = Path(str(entry["file"])).name  # never outside the folder
            found[name] = folder / name
    for path in folder.iterdir():
        stem = path.name.rsplit(".", 1)[0] if "." in path.name else None
        if stem in VIDEO_OUTPUTS or path.name in FILE_OUTPUTS:
            found[path.name] = path
    return [p for p in found.values() if p.exists()]


def _resolved(path: Path) -> Path:
    with contextlib.suppress(OSError):
        return Path(path).resolve()
    return Path(path)


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open ``fd`` is the file at ``path`` (not one unlinked since)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, indent=2, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
