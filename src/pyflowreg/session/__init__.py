"""Multi-session registration: many recordings of one field of view, aligned to each other.

Stage 1 motion-corrects every recording (:func:`run_stage1`, one recording per array task with
:func:`run_stage1_array`), stage 2 aligns their temporal means to the centre recording's
(:func:`run_stage2`), stage 3 warps their valid-pixel masks into the centre's frame and ANDs them
(:func:`run_stage3`). Every stage resumes from verified outputs (``status.json``, see
:mod:`pyflowreg.session._status`).

>>> from pyflowreg.session import SessionConfig, run_stage1, run_stage2, run_stage3
>>> config = SessionConfig.from_file("session.toml")  # doctest: +SKIP
>>> folders = run_stage1(config)  # doctest: +SKIP
>>> middle_idx, center_file, displacements = run_stage2(config)  # doctest: +SKIP
>>> final_mask = run_stage3(config, middle_idx, displacements)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import SessionConfig, get_array_task_id
    from .stage1_compensate import discover_input_files, run_stage1, run_stage1_array
    from .stage2_between_avgs import run_stage2
    from .stage3_valid_mask import run_stage3

__all__ = [
    "SessionConfig",
    "discover_input_files",
    "get_array_task_id",
    "run_stage1",
    "run_stage1_array",
    "run_stage2",
    "run_stage3",
]

#: Names loaded from their modules on first use (``import pyflowreg.session.cli`` stays light,
#: and stages 2 and 3 load only when used).
_LAZY = {
    "SessionConfig": "pyflowreg.session.config",
    "get_array_task_id": "pyflowreg.session.config",
    "discover_input_files": "pyflowreg.session.stage1_compensate",
    "run_stage1": "pyflowreg.session.stage1_compensate",
    "run_stage1_array": "pyflowreg.session.stage1_compensate",
    "run_stage2": "pyflowreg.session.stage2_between_avgs",
    "run_stage3": "pyflowreg.session.stage3_valid_mask",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
