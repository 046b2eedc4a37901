"""Depth (z) alignment of a recording against a reference volume (PyFlowReg's ``z_align``).

In-plane registration cannot undo motion along the optical axis: when the imaged plane drifts
in depth, frames show other tissue. This pipeline estimates, per pixel and frame, which slice
of a compensated reference z-stack a recording shows, and writes the depth map, a recording
corrected to the anchor depth and a depth-only simulation. Stages (``status.json`` makes them
resumable): :func:`run_stage1` (reference volume), :func:`run_recording_prealignment`
(optional in-plane prealignment), :func:`run_stage2` (depths), :func:`run_stage3`
(simulation); :func:`run_all_stages` runs them in order. Settings: :class:`ZAlignConfig`.
Command line: ``pyflowreg-z-align run --config z_align.toml [--stage N] [--of-params K=V ...]``.
"""

from pyflowreg.z_align.config import ZAlignConfig
from pyflowreg.z_align.pipeline import (
    read_status,
    run_all_stages,
    run_recording_prealignment,
    run_stage1,
    run_stage2,
    run_stage3,
)

__all__ = [
    "ZAlignConfig",
    "read_status",
    "run_all_stages",
    "run_recording_prealignment",
    "run_stage1",
    "run_stage2",
    "run_stage3",
]
