"""Finished runs: :func:`load_run` reads an output folder and verifies it against its ``run.json``.

``run.json`` is written last by :func:`~pyflowreg.motion_correction.compensate_recording`: a folder
without it holds no finished run (the run is still going, failed, or was killed). With it, every
output it lists must be there with the recorded size and header checksum; anything else means
the folder was changed after the run (a file replaced, truncated or deleted).

Examples
--------
>>> import pyflowreg
>>> run = pyflowreg.load_run("results")  # doctest: +SKIP
>>> run.files["compensated"]  # doctest: +SKIP
PosixPath('results/compensated.HDF5')
>>> with run.open("compensated") as reader:  # doctest: +SKIP
...     first = reader[0]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._run_folder import RUN_RECORD, header_checksum, lock_holder, output_size

__all__ = ["IncompleteRunError", "Run", "RunVerificationError", "load_run"]


class IncompleteRunError(FileNotFoundError):
    """The folder holds no finished run: its ``run.json`` is missing."""


class RunVerificationError(ValueError):
    """A folder does not match its ``run.json``: outputs missing, resized or rewritten."""


@dataclass(frozen=True)
class Run:
    """A verified finished run.

    Attributes
    ----------
    folder : Path
    run_id : str
    files : dict of str to Path
        Outputs by name (``compensated``, ``w``, ``valid_mask``, ``statistics``, ``reference``,
        ``options``) and ``run`` (the ``run.json`` itself).
    record : dict
        The contents of ``run.json``.
    options : dict
        The contents of ``options.json`` (empty if the run wrote none).
    """

    folder: Path
    run_id: str
    files: dict[str, Path]
    record: dict[str, Any] = field(repr=False)
    options: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.record.get("frames", 0))

    def open(self, name: str = "compensated"):
        """Open a video output (``"compensated"``, ``"w"``, ``"valid_mask"``) for reading."""
        from ..io import open_reader

        if name not in self.files:
            raise KeyError(f"run {self.run_id} has no output {name!r}; it has {sorted(self.files)}")
        return open_reader(self.files[name])


def load_run(folder: str | os.PathLike) -> Run:
    """Read the finished run in ``folder`` and verify every output against ``run.json``.

    Parameters
    ----------
    folder : path-like
        Output folder of :func:`~pyflowreg.motion_correction.compensate_recording`.

    Returns
    -------
    Run

    Raises
    ------
    IncompleteRunError
        (a ``FileNotFoundError``) ``run.json`` is missing: no run finished in this folder, or one
        was interrupted while committing; the message says whether a run holds the folder now.
    RunVerificationError
        (a ``ValueError``) an output listed in ``run.json`` is missing, has another size or
        another header checksum, or ``run.json`` is not a completion record.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder not found: '{folder}'")
    record_path = folder / RUN_RECORD
    if not record_path.is_file():
        held, alive = lock_holder(folder)
        now = ""
        if held:
            who = f"run {held.get('run_id')} (pid {held.get('pid')})"
            now = f"; {who} is writing to it now" if alive else f"; {who} was interrupted"
        raise IncompleteRunError(
            f"'{folder}' holds no finished run: {RUN_RECORD} is missing (it is written last; a "
            f"run that is still going, failed or was killed leaves none){now}"
        )
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunVerificationError(f"'{record_path}' cannot be read: {exc}") from exc
    outputs = record.get("outputs") if isinstance(record, dict) else None
    if not isinstance(outputs, dict) or "run_id" not in record:
        raise RunVerificationError(
            f"'{record_path}' is not a completion record (no run_id and outputs): written by "
            "an older pyflowreg, or not by pyflowreg"
        )
    problems = []
    files = {}
    for key, entry in outputs.items():
        path = folder / Path(str(entry.get("file", ""))).name
        files[key] = path
        if not path.exists():
            problems.append(f"{key} ({path.name}) is missing")
            continue
        size = output_size(path)
        if size != entry.get("bytes"):
            problems.append(f"{key} ({path.name}) has {size} bytes, run.json says {entry['bytes']}")
        elif header_checksum(path) != entry.get("header_sha256"):
            problems.append(f"{key} ({path.name}) has another header than the run wrote")
    if problems:
        raise RunVerificationError(
            f"'{folder}' does not match its {RUN_RECORD} (run {record['run_id']}): "
            + "; ".join(problems)
        )
    files["run"] = record_path
    options: dict[str, Any] = {}
    if "options" in files:
        try:
            options = json.loads(files["options"].read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunVerificationError(f"'{files['options']}' cannot be read: {exc}") from exc
    return Run(folder, str(record["run_id"]), files, record, options)
