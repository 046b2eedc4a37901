"""Per-folder progress of a session: ``status.json`` records that verify, and claims.

Every recording folder ``<output_root>/<stem>/`` (and ``final_results/`` for stage 3) holds a
``status.json``::

    {
      "format": 1,
      "stage1": "done",                      # PyFlowReg's summary: stage -> state
      "stages": {
        "stage1": {
          "state": "done",                   # "running", "done" or "failed"
          "options_hash": "<sha256>",        # of the settings the outputs were made with
          "inputs": {"<name>": "<fingerprint>", ...},   # upstream results used (optional)
          "outputs": {
            "compensated.hdf5": {"bytes": 123, "checksum": "full", "sha256": "...",
                                 "shapes": {"compensated": [12, 48, 64, 1]}},
            ...
          },
          "fingerprint": "<sha256>",         # of options_hash, inputs and outputs
          "host": "...", "pid": 123, "updated": "<ISO time>",
          ...                                # free fields of the stage (frames, shape, ...)
        }
      }
    }

A stage counts as done only when it *verifies* (:func:`verify_stage`): its record says
``"done"``, was made with the options hash the caller expects (and, if given, from the same
upstream fingerprints), and every output it lists exists with the recorded size, checksum
(SHA-256 of the whole file up to :data:`FULL_HASH_LIMIT`, of 17 evenly spread 64 KiB blocks
above it) and array shapes (HDF5 datasets, ``.npy``, ``.npz``, TIFF). ``status.json`` is
rewritten atomically (temporary file, ``fsync``, ``os.replace``) under a short lock, so a
killed process never leaves a half-written record.

A dependent stage records its upstream results in ``inputs`` (their :func:`stage_fingerprint`):
redoing stage 1 of a recording changes its fingerprint and so invalidates its stage 2.

Claims
------
:func:`claim` makes sure that two processes (array tasks, Dask workers, two ``run`` commands)
never process the same folder at once: it creates ``.session-claim.json`` with
``O_CREAT | O_EXCL`` (atomic on local and NFS file systems), holding the host, process id,
process start time and stage, and touches it every :data:`HEARTBEAT` seconds while held. A
claim whose owner is gone is stale and taken over: on the same host when the process it names
no longer runs (a reused pid is told apart by its start time), on another host when it has not
been touched for ``stale_after`` seconds (default :data:`STALE_AFTER`). A live claim raises
:class:`RecordingClaimedError`. The session commands remove their claims when ``SIGTERM`` ends
them (:func:`release_claims_on_sigterm`), so a task stopped by a batch system's time limit
leaves no claim behind.

API (used by stages 1-3 and the runners)
----------------------------------------
``read_status(folder) -> dict``, ``stage_record(folder, stage) -> dict | None``,
``write_status(folder, stage, *, state="done", options_hash=None, outputs=(), inputs=None,
**fields) -> dict``, ``invalidate(folder, *stages)``, ``stage_fingerprint(folder, stage)``,
``verify_stage(folder, stage, options_hash=None, inputs=None) -> list[str]`` (problems; empty
when it verifies), ``stage_done(folder, stage, options_hash, inputs=None) -> bool``,
``stage_state(folder, stage, options_hash=None) -> str``, ``describe_output(path) -> dict``,
``claim(folder, stage=None)`` (context manager yielding a :class:`Claim`),
``claim_holder(folder) -> dict | None``, ``release_claims_on_sigterm()`` (context manager).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..motion_correction._run_folder import (
    _age,
    _alive,
    _process_start,
    header_checksum,
    output_size,
    read_lock,
)
from .config import STATUS_FILE

try:
    import fcntl
except ImportError:  # Windows: status updates are atomic, but not serialised
    fcntl = None

logger = logging.getLogger(__name__)

__all__ = [
    "CLAIM_FILE",
    "STAGES",
    "STATUS_FILE",
    "Claim",
    "RecordingClaimedError",
    "claim",
    "claim_holder",
    "describe_output",
    "invalidate",
    "read_status",
    "release_claims_on_sigterm",
    "stage_done",
    "stage_fingerprint",
    "stage_record",
    "stage_state",
    "verify_stage",
    "write_status",
]

STATUS_LOCK = ".status.lock"
CLAIM_FILE = ".session-claim.json"
STAGES = ("stage1", "stage2", "stage3")
STATUS_FORMAT = 1
#: Files up to this size are hashed whole; larger ones by 17 blocks of 64 KiB.
FULL_HASH_LIMIT = 256 * 1024 * 1024
SAMPLE_BLOCK = 64 * 1024
SAMPLE_BLOCKS = 17
#: Seconds between touches of a held claim, and the default age at which a claim of another
#: host counts as abandoned.
HEARTBEAT = 20.0
STALE_AFTER = 180.0
CLAIM_WRITE_GRACE = 2.0  # an empty claim file younger than this is being written
CLAIM_BREAK_STALE = 30.0  # a takeover marker older than this was left by a killed process
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


class RecordingClaimedError(OSError):
    """Another live process holds the claim of the folder (``errno.EBUSY``)."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(errno.EBUSY, message)
        self.holder = holder or {}

    def __str__(self) -> str:
        return str(self.args[1])

    def __reduce__(self):
        # OSError pickles its args (errno, message); rebuild from (message, holder) instead, so
        # the error keeps its message when it comes back from a Dask worker or a process pool
        return type(self), (str(self.args[1]), self.holder)


# ---------------------------------------------------------------------- status records


def read_status(folder: str | os.PathLike) -> dict[str, Any]:
    """The status of ``folder`` (``{}`` without a readable ``status.json``)."""
    path = Path(folder) / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable %s (%s)", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    if not isinstance(data.get("stages"), dict):
        data["stages"] = {}
    return data


def stage_record(folder: str | os.PathLike, stage: str) -> dict[str, Any] | None:
    """The record of ``stage`` in ``folder``'s status, or None."""
    _check_stage(stage)
    record = read_status(folder).get("stages", {}).get(stage)
    return record if isinstance(record, dict) else None


def write_status(
    folder: str | os.PathLike,
    stage: str,
    *,
    state: str = "done",
    options_hash: str | None = None,
    outputs: Iterable[str] | Mapping[str, dict] = (),
    inputs: Mapping[str, str | None] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Record ``stage`` of ``folder`` (replacing its earlier record); return the new status.

    Parameters
    ----------
    folder : path
    stage : {"stage1", "stage2", "stage3"}
    state : {"running", "done", "failed"}
    options_hash : str, optional
        Hash of the settings the outputs were made with (e.g.
        :func:`pyflowreg.session.config.options_hash`).
    outputs : iterable of str or mapping
        Output file names in ``folder`` (described now with :func:`describe_output`: size,
        checksum, shapes), or ready descriptions by name.
    inputs : mapping, optional
        Upstream results used, e.g. ``{"stage1": stage_fingerprint(folder, "stage1")}``.
    **fields
        Further JSON-able values to keep (frames, shape, seconds, ...).
    """
    _check_stage(stage)
    if state not in ("running", "done", "failed"):
        raise ValueError(f"state must be one of ['running', 'done', 'failed'], got {state!r}")
    folder = Path(folder)
    if isinstance(outputs, Mapping):
        described = {str(k): dict(v) for k, v in outputs.items()}
    else:
        described = {str(name): describe_output(folder / name) for name in outputs}
    record: dict[str, Any] = {
        **fields,
        "state": state,
        "options_hash": options_hash,
        "inputs": dict(inputs or {}),
        "outputs": described,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "updated": _now(),
    }
    record["fingerprint"] = _fingerprint(record)

    def update(status: dict[str, Any]) -> None:
        status.setdefault("stages", {})[stage] = record

    return _update_status(folder, update)


def invalidate(folder: str | os.PathLike, *stages: str) -> None:
    """Forget the records of ``stages`` in ``folder`` (their outputs no longer count)."""
    for stage in stages:
        _check_stage(stage)
    folder = Path(folder)
    if not (folder / STATUS_FILE).exists():
        return

    def update(status: dict[str, Any]) -> None:
        for stage in stages:
            status.get("stages", {}).pop(stage, None)

    _update_status(folder, update)


def stage_fingerprint(folder: str | os.PathLike, stage: str) -> str | None:
    """Fingerprint of the done record of ``stage`` (None if not done): store it in the
    ``inputs`` of a stage that uses these results."""
    record = stage_record(folder, stage)
    if record is None or record.get("state") != "done":
        return None
    return record.get("fingerprint")


def verify_stage(
    folder: str | os.PathLike,
    stage: str,
    options_hash: str | None = None,
    inputs: Mapping[str, str | None] | None = None,
) -> list[str]:
    """What is wrong with ``stage``'s results in ``folder``; an empty list when they verify.

    Checks the record's state and fingerprint, ``options_hash`` and ``inputs`` (when given)
    against the recorded ones, and every listed output's size, checksum and shapes.
    """
    record = stage_record(folder, stage)
    if record is None:
        return [f"{stage} has no record"]
    if record.get("state") != "done":
        return [f"{stage} is {record.get('state', 'unknown')!r}, not done"]
    if record.get("fingerprint") != _fingerprint(record):
        return [f"{stage}'s record was edited"]
    problems = []
    if options_hash is not None and record.get("options_hash") != options_hash:
        problems.append(f"{stage} was made with other options")
    if inputs is not None and dict(record.get("inputs") or {}) != dict(inputs):
        problems.append(f"{stage} was made from other upstream results")
    folder = Path(folder)
    for name, expected in (record.get("outputs") or {}).items():
        problem = _verify_output(folder / name, expected)
        if problem:
            problems.append(f"{name}: {problem}")
    return problems


def stage_done(
    folder: str | os.PathLike,
    stage: str,
    options_hash: str | None,
    inputs: Mapping[str, str | None] | None = None,
) -> bool:
    """Whether ``stage`` is done in ``folder`` with these options (see :func:`verify_stage`)."""
    problems = verify_stage(folder, stage, options_hash, inputs)
    if problems:
        logger.debug("%s of %s does not verify: %s", stage, folder, "; ".join(problems))
    return not problems


def stage_state(folder: str | os.PathLike, stage: str, options_hash: str | None = None) -> str:
    """One word for a status table: ``"done"`` (verifies), ``"changed"`` (made with other
    options or upstream results), ``"damaged"`` (outputs missing or altered), ``"running"``
    (claimed by a live process), ``"interrupted"`` (running, owner gone), ``"failed"`` or
    ``"pending"`` (no record)."""
    record = stage_record(folder, stage)
    if record is None:
        return "pending"
    state = record.get("state")
    if state == "running":
        holder = claim_holder(folder)
        return "running" if holder and holder.get("stage") in (None, stage) else "interrupted"
    if state != "done":
        return str(state or "pending")
    if verify_stage(folder, stage):
        return "damaged"
    if options_hash is not None and record.get("options_hash") != options_hash:
        return "changed"
    return "done"


# ---------------------------------------------------------------------- outputs


def describe_output(path: str | os.PathLike) -> dict[str, Any]:
    """Size, checksum and array shapes of an output file (or Zarr folder)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"output not found: {path}")
    if path.is_dir():
        entry = {
            "bytes": output_size(path),
            "checksum": "metadata",
            "sha256": header_checksum(path),
        }
    else:
        size = path.stat().st_size
        kind = "full" if size <= FULL_HASH_LIMIT else "sampled"
        entry = {"bytes": size, "checksum": kind, "sha256": _file_checksum(path, kind)}
    shapes = _shapes(path)
    if shapes:
        entry["shapes"] = shapes
    return entry


def _verify_output(path: Path, expected: Mapping[str, Any]) -> str | None:
    if not path.exists():
        return "missing"
    try:
        size = output_size(path)  # a file's size, or a Zarr folder's total
        if size != expected.get("bytes"):
            return f"{size} bytes instead of {expected.get('bytes')}"
        if path.is_dir():
            digest = header_checksum(path)
        else:
            digest = _file_checksum(path, expected.get("checksum", "full"))
        if digest != expected.get("sha256"):
            return "checksum differs (the file was changed or damaged)"
        shapes = _shapes(path) if expected.get("shapes") else None
        if shapes is not None and shapes != expected["shapes"]:
            return f"shapes {shapes} instead of {expected['shapes']}"
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"
    return None


def _file_checksum(path: Path, kind: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if kind == "full":
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        else:
            size = os.fstat(fh.fileno()).st_size
            digest.update(str(size).encode())
            last = max(size - SAMPLE_BLOCK, 0)
            for i in range(SAMPLE_BLOCKS):
                fh.seek(last * i // (SAMPLE_BLOCKS - 1))
                digest.update(fh.read(SAMPLE_BLOCK))
    return digest.hexdigest()


def _shapes(path: Path) -> dict[str, list[int]]:
    """Shapes of the arrays in an output (by extension); ``{}`` for other files."""
    suffix = path.suffix.lower()
    try:
        if suffix in HDF5_SUFFIXES:
            import h5py

            found: dict[str, list[int]] = {}
            with h5py.File(path, "r") as fh:

                def visit(name: str, obj: Any) -> None:
                    if isinstance(obj, h5py.Dataset):
                        found[name] = [int(s) for s in obj.shape]

                fh.visititems(visit)
            return found
        if suffix == ".npy":
            import numpy as np

            return {"": [int(s) for s in np.load(path, mmap_mode="r").shape]}
        if suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as data:
                return {k: [int(s) for s in data[k].shape] for k in data.files}
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return {"": [int(s) for s in tif.series[0].shape]} if tif.series else {}
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot read {path.name}: {exc}") from None
    return {}


# ---------------------------------------------------------------------- claims


class Claim:
    """A held claim of a folder (see :func:`claim`); ``record`` is what the claim file says."""

    def __init__(
        self,
        folder: Path,
        stage: str | None = None,
        stale_after: float = STALE_AFTER,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        if stale_after <= 0 or heartbeat <= 0:
            raise ValueError(
                f"stale_after and heartbeat must be > 0, got {stale_after} and {heartbeat}"
            )
        self.folder = Path(folder)
        self.path = self.folder / CLAIM_FILE
        self.stale_after = float(stale_after)
        self.heartbeat = float(heartbeat)
        self.record = {
            "claim_id": f"{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%S}-"
            f"{secrets.token_hex(4)}",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "started": _now(),
            "stage": stage,
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    @property
    def claim_id(self) -> str:
        return self.record["claim_id"]

    def acquire(self, timeout: float = 0.0) -> Claim:
        """Take the claim, waiting up to ``timeout`` seconds for a live holder to release it;
        :class:`RecordingClaimedError` if it stays held."""
        self.folder.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.record).encode()
        deadline = time.monotonic() + max(timeout, 0.0) + CLAIM_WRITE_GRACE + 1.0
        wait_until = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                held = read_lock(self.path)
                if held is None:
                    continue  # released meanwhile
                if held == {} and _age(self.path) < CLAIM_WRITE_GRACE:
                    if time.monotonic() > deadline:
                        raise self._claimed(held) from None
                    time.sleep(0.05)  # being written by a starting claimer
                    continue
                if self._is_stale(held):
                    self._take_over(held)
                    continue
                if time.monotonic() < wait_until:
                    time.sleep(0.2)
                    continue
                raise self._claimed(held) from None
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.held = True
            _HELD[self.claim_id] = self
            self._thread = threading.Thread(
                target=self._beat, name=f"claim-{self.folder.name}", daemon=True
            )
            self._thread.start()
            return self

    def release(self) -> None:
        """Give the claim up (nothing if it was taken over meanwhile)."""
        if not self.held:
            return
        self.held = False
        _HELD.pop(self.claim_id, None)
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._remove_file()

    def _remove_file(self) -> None:
        held = read_lock(self.path)
        if held and held.get("claim_id") == self.claim_id:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            held = read_lock(self.path)
            if not held or held.get("claim_id") != self.claim_id:
                logger.warning("the claim of %s was taken over by another process", self.folder)
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def _is_stale(self, held: dict[str, Any]) -> bool:
        if not held:
            return True  # empty or unreadable past the write grace: a claimer died writing it
        pid = held.get("pid")
        if held.get("host") == socket.gethostname() and isinstance(pid, int):
            return not _alive(pid, held.get("process_start"))
        return _age(self.path) > self.stale_after

    def _take_over(self, held: dict[str, Any]) -> None:
        """Remove a stale claim, one taker at a time (a ``.break`` marker made exclusively)."""
        marker = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _age(marker) > CLAIM_BREAK_STALE:
                with contextlib.suppress(FileNotFoundError):
                    marker.unlink()
            time.sleep(0.05)
            return
        try:
            now = read_lock(self.path)
            if now is not None and now.get("claim_id") == held.get("claim_id"):
                logger.warning(
                    "taking over the abandoned claim of %s (pid %s on %s, since %s)",
                    self.folder,
                    held.get("pid", "?"),
                    held.get("host", "?"),
                    held.get("started", "?"),
                )
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()

    def _claimed(self, held: dict[str, Any]) -> RecordingClaimedError:
        host = held.get("host", "?")
        where = "" if host == socket.gethostname() else f" on host {host}"
        stage = f" ({held['stage']})" if held.get("stage") else ""
        return RecordingClaimedError(
            f"{self.folder} is being processed{stage} by pid {held.get('pid', '?')}{where} "
            f"since {held.get('started', '?')}",
            held,
        )


@contextlib.contextmanager
def claim(
    folder: str | os.PathLike,
    stage: str | None = None,
    *,
    timeout: float = 0.0,
    stale_after: float = STALE_AFTER,
    heartbeat: float = HEARTBEAT,
) -> Iterator[Claim]:
    """Hold the claim of ``folder`` for the ``with`` block (see the module docstring).

    Raises
    ------
    RecordingClaimedError
        Another live process holds it (still after ``timeout`` seconds).

    Examples
    --------
    >>> with claim(folder, "stage1"):  # doctest: +SKIP
    ...     if not stage_done(folder, "stage1", digest):
    ...         ...  # process, then write_status(folder, "stage1", ...)
    """
    held = Claim(Path(folder), stage, stale_after, heartbeat).acquire(timeout)
    try:
        yield held
    finally:
        held.release()


#: Claims held by this process, by claim id (for :func:`release_claims_on_sigterm`).
_HELD: dict[str, Claim] = {}


def _release_all_held() -> None:
    """Remove the claim files this process holds (not those of a parent it was forked from)."""
    for held in list(_HELD.values()):
        if held.record["pid"] == os.getpid():
            with contextlib.suppress(OSError):
                held._remove_file()


@contextlib.contextmanager
def release_claims_on_sigterm() -> Iterator[None]:
    """For command-line runs: on ``SIGTERM`` (a batch system's time limit), remove the claim
    files this process holds, then die of ``SIGTERM`` as without the handler.

    The checkpoints of an interrupted recording stay for the next run to continue, as after a
    ``SIGKILL``; without the claim files, that run need not wait ``stale_after`` seconds for a
    claim made on another host. Outside the main thread, or where ``SIGTERM`` does not exist,
    nothing is installed.
    """
    import signal

    sigterm = getattr(signal, "SIGTERM", None)
    if sigterm is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(sigterm)

    def handler(signum, frame) -> None:
        _release_all_held()
        signal.signal(sigterm, signal.SIG_DFL)
        os.kill(os.getpid(), sigterm)

    signal.signal(sigterm, handler)
    try:
        yield
    finally:
        signal.signal(sigterm, previous)


def claim_holder(folder: str | os.PathLike, stale_after: float = STALE_AFTER) -> dict | None:
    """The record of the live claim of ``folder``, or None (unclaimed or stale)."""
    probe = Claim(Path(folder), stale_after=stale_after)
    held = read_lock(probe.path)
    if held is None or probe._is_stale(held):
        return None
    return held


# ---------------------------------------------------------------------- helpers


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {list(STAGES)}, got {stage!r}")


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _fingerprint(record: Mapping[str, Any]) -> str:
    described = {
        "options_hash": record.get("options_hash"),
        "inputs": record.get("inputs") or {},
        "outputs": record.get("outputs") or {},
        "state": record.get("state"),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _status_lock(folder: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    fd = os.open(folder / STATUS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _update_status(folder: Path, update) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    with _status_lock(folder):
        status = read_status(folder)
        status.setdefault("stages", {})
        update(status)
        status["format"] = STATUS_FORMAT
        for stage in STAGES:  # PyFlowReg's summary: "stage1": "done"
            record = status["stages"].get(stage)
            if record is None:
                status.pop(stage, None)
            else:
                status[stage] = record.get("state")
        ordered = {"format": STATUS_FORMAT}
        ordered.update({s: status[s] for s in STAGES if s in status})
        ordered.update({k: v for k, v in status.items() if k not in ordered})
        text = json.dumps(ordered, indent=2, default=str) + "\n"
        atomic_write(folder / STATUS_FILE, lambda fh: fh.write(text.encode("utf-8")))
        return ordered


def atomic_write(path: Path, write) -> Path:
    """Write ``path`` through ``write(binary_file)`` into a temporary sibling, fsync it and
    rename it over ``path``: readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path
