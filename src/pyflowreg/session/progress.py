"""Where a session stands: every recording with the state of each stage.

>>> from pyflowreg.session import SessionConfig
>>> from pyflowreg.session.progress import session_progress
>>> for rec in session_progress(SessionConfig.from_file("session.toml")):  # doctest: +SKIP
...     print(rec.name, rec.stage1, rec.stage2, rec.stage3, rec.frames)

States (see :func:`pyflowreg.session._status.stage_state`): ``"done"`` (outputs verify),
``"changed"`` (made with other settings than the config's), ``"stale"`` (stage 3 made from
results that are no longer current), ``"damaged"``, ``"running"``, ``"interrupted"``,
``"failed"``, ``"pending"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from ._status import stage_record, stage_state
from .config import SessionConfig, recording_name
from .stage1_compensate import discover_input_files, recording_options, stage1_options_hash

__all__ = ["RecordingProgress", "session_progress"]


class RecordingProgress(NamedTuple):
    """One recording of a session and the state of each stage."""

    name: str
    input_file: Path
    folder: Path
    center: bool
    stage1: str
    stage2: str
    stage3: str
    frames: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able values (paths as text)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in self._asdict().items()}


def session_progress(config: SessionConfig) -> list[RecordingProgress]:
    """The recordings of ``config`` in discovery order, with their stages' states.

    Stage 1 is compared with the config's stage-1 options and stage 2 with its stage-2
    settings (``"changed"`` when the outputs were made with others); stage 3 is the state of
    ``final_results``, ``"stale"`` when a recording's stage 1 or 2 is not done.
    """
    files = discover_input_files(config)
    paths = config.resolve_output_paths()
    base = config.stage1_options()
    center = config.center_index(files)
    stage2_hash = _stage2_hash(config, recording_name(files[center]))
    final_state = stage_state(paths.final_results, "stage3")
    rows = []
    for i, path in enumerate(files):
        folder = paths.output_root / recording_name(path)
        record = stage_record(folder, "stage1") or {}
        frames = record.get("frames") if record.get("state") == "done" else None
        rows.append(
            RecordingProgress(
                name=recording_name(path),
                input_file=path,
                folder=folder,
                center=i == center,
                stage1=stage_state(
                    folder, "stage1", stage1_options_hash(recording_options(base, path, folder))
                ),
                stage2=stage_state(folder, "stage2", stage2_hash),
                stage3=final_state,
                frames=frames,
            )
        )
    if final_state == "done" and any((r.stage1, r.stage2) != ("done", "done") for r in rows):
        rows = [r._replace(stage3="stale") for r in rows]  # to be redone from current results
    return rows


def _stage2_hash(config: SessionConfig, center_name: str) -> str | None:
    """The options hash stage 2 records (None where stage 2 is not installed)."""
    try:
        from .stage2_between_avgs import stage2_options_hash
    except ImportError:
        return None
    return stage2_options_hash(config, center_name)
