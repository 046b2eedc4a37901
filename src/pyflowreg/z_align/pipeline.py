"""The z-align stages: reference volume, depth estimation, depth-only simulation.

Stage 1 (:func:`run_stage1`) builds the compensated reference volume with
:func:`~pyflowreg.motion_correction.compensate_recording` (or takes a given one); stage 2
(:func:`run_stage2`) estimates each pixel's depth per frame (:mod:`pyflowreg.z_align.estimate`)
and writes the depth map and the depth-corrected recording; stage 3 (:func:`run_stage3`)
renders the recording the volume predicts from the depths alone. ``output_root/status.json``
records the finished stages (written atomically); with ``resume=True`` a stage whose marker
says ``"done"`` and whose outputs exist is skipped. A stage that computes anew clears the
markers of the stages built on its outputs, so they are computed again too. Outputs are
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pyflowreg.io import open_reader, open_writer
from pyflowreg.motion_correction import OFOptions
from pyflowreg.motion_correction._option_files import known_options, read_options_file
from pyflowreg.motion_correction.compensate_recording import compensate_recording
from pyflowreg.z_align import estimate
from pyflowreg.z_align.config import ZAlignConfig

__all__ = [
    "read_status",
    "run_all_stages",
    "run_recording_prealignment",
    "run_stage1",
    "run_stage2",
    "run_stage3",
]

log = logging.getLogger(__name__)

#: Markers cleared when a stage computes anew: the stages built on its outputs.
_LATER = {
    "stage1": {"stage2": None, "stage3": None},
    "recording_prealign": {"stage2": None, "stage3": None},
    "stage2": {"stage3": None},
}
#: Routing fields the workflow sets itself; dropped from user OFOptions overrides.
_ROUTING = ("input_file", "output_path", "output_format", "output_file_name", "naming_convention")


# ---------------------------------------------------------------------------- status


def read_status(config: ZAlignConfig) -> dict[str, Any]:
    """The stage markers of ``output_root/status.json`` (empty before the first stage)."""
    path = config.status_path
    if not path.exists():
        return {}
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"z-align status file {path} is not valid JSON: {exc}") from None
    if not isinstance(status, dict):
        raise ValueError(f"z-align status file {path} must hold a JSON object")
    return status


def _update_status(config: ZAlignConfig, **entries: Any) -> dict[str, Any]:
    status = read_status(config)
    status.update({k: (str(v) if isinstance(v, Path) else v) for k, v in entries.items()})
    path = config.status_path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".status.", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(status, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return status


def _done(config: ZAlignConfig, stage: str, *outputs: Path) -> bool:
    return (
        config.resume
        and read_status(config).get(stage) == "done"
        and all(p.exists() for p in outputs)
    )


@contextmanager
def _staged(path: Path) -> Iterator[Path]:
    """A temporary name next to ``path`` (same extension), renamed to ``path`` on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    partial.unlink(missing_ok=True)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- helpers


def _flow_overrides(value: dict[str, Any] | Path | None, config: ZAlignConfig, what: str):
    if value is None:
        return {}
    if isinstance(value, dict):
        data = dict(value)
    else:
        path = config.path(value)
        data = known_options(read_options_file(path), OFOptions.model_fields, path, "warn", 4)
    dropped = sorted(k for k in data if k in _ROUTING)
    if dropped:
        log.info("%s: ignoring the routing fields %s (set by the workflow)", what, dropped)
    return {k: v for k, v in data.items() if k not in _ROUTING}


def _mean_frames(path: Path, n_frames: int, buffer_size: int, bin_size: int) -> np.ndarray:
    """Mean of the first ``n_frames`` (binned) frames of a file: ``(H, W, C)`` float64."""
    with open_reader(path, bin_size=bin_size) as reader:
        stop = min(n_frames, len(reader))
        if stop == 0:
            raise ValueError(f"{path} has no (binned) frames to average into a reference")
        total = np.zeros(reader.frame_shape, dtype=np.float64)
        for start in range(0, stop, buffer_size):
            total += reader.read(start, min(start + buffer_size, stop)).sum(axis=0)
    return total / stop


def _reference_image(config: ZAlignConfig, fallback: Path | None) -> np.ndarray | None:
    source = config.path(config.reference_source_file) or fallback
    if source is None:
        return None
    return _mean_frames(
        source,
        config.reference_source_frames,
        config.reference_source_buffer_size,
        config.reference_source_bin_size,
    )


def _compensate(options: dict[str, Any], output: Path) -> None:
    options = OFOptions(
        **options,
        output_path=output.parent,
        output_format="HDF5",
        output_file_name=output.name,
    )
    compensate_recording(options)


def _volume_path(config: ZAlignConfig) -> Path:
    if config.reference_volume is not None:
        return config.path(config.reference_volume)
    if not config.prealign_stack:
        return config.path(config.volume_input_file)
    return config.volume_output_path


def _volume_bin_size(config: ZAlignConfig) -> int:
    return config.stack_scans_per_slice or config.volume_bin_size


def load_volume(config: ZAlignConfig, path: Path | None = None) -> np.ndarray:
    """The reference volume ``(H, W, C, Z)`` float64: one slice per (binned) frame."""
    path = path or _volume_path(config)
    with open_reader(path, bin_size=_volume_bin_size(config)) as reader:
        if len(reader) == 0:
            raise ValueError(f"reference volume {path} has no slices")
        blocks = [
            reader.read(s, s + config.volume_buffer_size)
            for s in range(0, len(reader), config.volume_buffer_size)
        ]
    return np.moveaxis(np.concatenate(blocks).astype(np.float64), 0, -1)


# ---------------------------------------------------------------------------- stages


def run_stage1(config: ZAlignConfig, of_params: dict[str, Any] | None = None) -> Path:
    """Build (or take) the compensated reference volume; returns its path.

    With ``reference_volume`` set, or ``prealign_stack=False`` (the raw ``volume_input_file``),
    nothing is computed. Otherwise ``volume_input_file`` is registered with
    ``compensate_recording`` (``alpha=stage1_alpha``, ``quality_setting``, ``bin_size``,
    ``update_reference`` and buffer size from the config, the ``stage1_flow_options`` and then
    ``of_params`` on top) into ``output_root/volume_output_dir/compensated.HDF5``. With
    ``stack_scans_per_slice`` the stack is registered one slice (that many scans) per batch
    with an updated reference. A ``reference_source_file`` gives the reference image.
    """
    path = _volume_path(config)
    if config.reference_volume is not None or not config.prealign_stack:
        if not path.exists():
            raise FileNotFoundError(f"reference volume not found: {path}")
        if read_status(config).get("volume_path") not in (None, str(path)):
            _update_status(config, **_LATER["stage1"])  # another volume: redo the depths
        _update_status(config, stage1="done", volume_path=path)
        return path
    if _done(config, "stage1", path):
        log.info("stage 1: reusing %s", path)
        return path
    source = config.path(config.volume_input_file)
    overrides = _flow_overrides(config.stage1_flow_options, config, "stage1_flow_options")
    overrides.pop("reference_frames", None)
    overrides.update(of_params or {})
    options: dict[str, Any] = {
        "input_file": source,
        "alpha": config.stage1_alpha,
        "quality_setting": config.stage1_quality_setting,
        "buffer_size": config.stack_scans_per_slice or config.stage1_buffer_size,
        "bin_size": config.stage1_bin_size,
        "update_reference": bool(config.stage1_update_reference or config.stack_scans_per_slice),
        "flow_backend": config.flow_backend,
        "backend_params": dict(config.backend_params),
    }
    reference = _reference_image(config, None)
    if reference is not None:
        options["reference_frames"] = reference
    options.update(overrides)
    log.info("stage 1: compensating the stack %s", source)
    _update_status(config, stage1=None, **_LATER["stage1"])
    _compensate(options, path)
    _update_status(config, stage1="done", volume_path=path)
    return path


def run_recording_prealignment(config: ZAlignConfig) -> Path:
    """Register the stage-2 recording in-plane before depth estimation; returns the path of
    ``output_root/recording_prealigned_output_dir/compensated.HDF5``.

    Reference: the mean of the leading frames of ``reference_source_file`` (else of
    ``input_file``); options ``alpha=stage1_alpha``, ``stage1_quality_setting``,
    ``buffer_size=input_buffer_size``, ``bin_size=input_bin_size``,
    ``update_reference=False``, the backend, then ``recording_prealign_flow_options``.
    """
    path = config.prealigned_path
    if _done(config, "recording_prealign", path):
        log.info("recording prealignment: reusing %s", path)
        return path
    source = config.path(config.input_file)
    options: dict[str, Any] = {
        "input_file": source,
        "alpha": config.stage1_alpha,
        "quality_setting": config.stage1_quality_setting,
        "buffer_size": config.input_buffer_size,
        "bin_size": config.input_bin_size,
        "update_reference": False,
        "flow_backend": config.flow_backend,
        "backend_params": dict(config.backend_params),
        "reference_frames": _reference_image(config, source),
    }
    options.update(
        _flow_overrides(
            config.recording_prealign_flow_options, config, "recording_prealign_flow_options"
        )
    )
    log.info("recording prealignment: compensating %s", source)
    _update_status(config, recording_prealign=None, **_LATER["recording_prealign"])
    _compensate(options, path)
    _update_status(config, recording_prealign="done", prealigned_path=path)
    return path


def run_stage2(config: ZAlignConfig) -> Path:
    """Estimate every pixel's depth per frame; returns the path of the depth map.

    Writes ``z_shift_file`` (HDF5 dataset ``ch1`` stored ``(H, W, T)``, MATLAB's layout,
    float32, **1-based** slice coordinates), with ``write_corrected`` the corrected
    recording (each frame plus ``V[anchor] - V(z)``, the volume's difference between the
    anchor slice and the estimated depth, interpolated linearly: the frame as if recorded at
    the anchor depth), and ``stage2_metadata.npz`` (``anchor_z``, ``anchor_z_1based``,
    ``volume_path``, ``input_path``). Needs stage 1's volume.
    """
    outputs = [config.z_shift_path] + ([config.corrected_path] if config.write_corrected else [])
    if _done(config, "stage2", *outputs):
        log.info("stage 2: reusing %s", config.z_shift_path)
        return config.z_shift_path
    volume_path = _volume_path(config)
    if not volume_path.exists():
        raise FileNotFoundError(f"stage 2 needs the reference volume {volume_path}: run stage 1")
    if config.prealign_recording:
        input_path, bin_size = run_recording_prealignment(config), 1  # already binned
    else:
        input_path, bin_size = config.path(config.input_file), config.input_bin_size
    _update_status(config, stage2=None, **_LATER["stage2"])
    volume = load_volume(config, volume_path)
    volume_gy, volume_gx = estimate.slice_gradients(volume, config.spatial_sigma)
    dtype = np.dtype(config.output_dtype)
    halo = estimate.halo_frames(config.temporal_sigma, config.z_smooth_sigma_temporal)
    anchor: int | None = None
    with open_reader(input_path, bin_size=bin_size) as reader, _staged(config.z_shift_path) as zp:
        if reader.frame_shape != volume.shape[:3]:
            raise ValueError(
                f"frames of {input_path} are (H, W, C) = {reader.frame_shape} but the slices "
                f"of the reference volume {volume_path} are {volume.shape[:3]}"
            )
        n_frames = len(reader)
        if n_frames == 0:
            raise ValueError(f"stage 2 input {input_path} has no (binned) frames")
        height, width = reader.frame_shape[:2]
        size = (min(config.patch_size, height), min(config.patch_size, width))
        ys = estimate.patch_starts(height, config.patch_size, config.patch_stride)
        xs = estimate.patch_starts(width, config.patch_size, config.patch_stride)
        corrected = _staged(config.corrected_path) if config.write_corrected else None
        threaded = config.parallelization == "threading"
        with (
            ThreadPoolExecutor(config.threads) if threaded else _nothing() as pool,
            open_writer(zp, "HDF5", axis_order="YXT", expected_frames=n_frames) as z_writer,
            corrected if corrected is not None else _nothing() as cp,
        ):
            c_writer = open_writer(cp, expected_frames=n_frames) if cp is not None else None
            try:
                for start in range(0, n_frames, config.input_buffer_size):
                    stop = min(start + config.input_buffer_size, n_frames)
                    lo, hi = max(0, start - halo), min(n_frames, stop + halo)
                    frames = reader.read(lo, hi)
                    gy, gx = estimate.frame_gradients(
                        frames, config.spatial_sigma, config.temporal_sigma
                    )
                    if anchor is None:
                        core = slice(start - lo, stop - lo)
                        anchor = estimate.anchor_slice(gy[core], gx[core], volume_gy, volume_gx)
                        first = max(0, anchor - config.win_half)
                        last = min(volume.shape[-1] - 1, anchor + config.win_half)
                        log.info("stage 2: anchor slice %d (0-based)", anchor)
                        difference = volume[..., anchor, None] - volume
                    scores = estimate.score_patches(
                        gy,
                        gx,
                        volume_gy,
                        volume_gx,
                        range(first, last + 1),
                        ys,
                        xs,
                        size,
                        map_fn=pool.map if pool is not None else map,
                    )
                    depths = first + estimate.refine_minimum(scores, config.parabolic_tau_scale)
                    depths = estimate.aggregate_patches(depths, ys, xs, size, (height, width))
                    depths = estimate.smooth_depths(
                        depths,
                        config.z_smooth_sigma_spatial,
                        config.z_smooth_sigma_temporal,
                        (first, last),
                    )[start - lo : stop - lo]
                    z_writer.write((depths + 1.0).astype(np.float32)[..., None])
                    if c_writer is not None:
                        shift = estimate.interpolate_slices(difference, depths)
                        raw = frames[start - lo : stop - lo].astype(np.float64)
                        c_writer.write(estimate.cast_frames(raw + shift, dtype))
            finally:
                if c_writer is not None:
                    c_writer.close()
    with _staged(config.metadata_path) as partial:
        np.savez(
            partial,
            anchor_z=anchor,
            anchor_z_1based=anchor + 1,
            volume_path=str(volume_path),
            input_path=str(input_path),
        )
    _update_status(config, stage2="done", anchor_z=anchor, anchor_z_1based=anchor + 1)
    return config.z_shift_path


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def run_stage3(config: ZAlignConfig) -> Path | None:
    """Render the depth-only recording: each frame is the reference volume interpolated at
    the stage-2 depths (in-plane content fixed to the volume), cast to ``output_dtype``;
    written to ``simulated_output_file``. Returns its path, or None with
    ``write_simulated=False``."""
    if not config.write_simulated:
        return None
    if _done(config, "stage3", config.simulated_path):
        log.info("stage 3: reusing %s", config.simulated_path)
        return config.simulated_path
    if not config.z_shift_path.exists():
        raise FileNotFoundError(f"stage 3 needs the depth map {config.z_shift_path}: run stage 2")
    _update_status(config, stage3=None)
    volume = load_volume(config)
    dtype = np.dtype(config.output_dtype)
    with (
        open_reader(config.z_shift_path) as depths,
        _staged(config.simulated_path) as partial,
        open_writer(partial, expected_frames=len(depths)) as writer,
    ):
        if depths.frame_shape[:2] != volume.shape[:2]:
            raise ValueError(
                f"depth map {config.z_shift_path} is {depths.frame_shape[:2]} but the volume "
                f"slices are {volume.shape[:2]}"
            )
        for start in range(0, len(depths), config.input_buffer_size):
            z = depths.read(start, start + config.input_buffer_size)[..., 0] - 1.0
            writer.write(estimate.cast_frames(estimate.interpolate_slices(volume, z), dtype))
    _update_status(config, stage3="done")
    return config.simulated_path


def run_all_stages(config: ZAlignConfig, of_params: dict[str, Any] | None = None) -> dict:
    """Stage 1, stage 2 (with the recording prealignment when configured), then stage 3 when
    ``write_simulated``; returns the paths written: ``volume``, ``z_shift``, ``corrected``,
    ``simulated`` (None where not written)."""
    volume = run_stage1(config, of_params)
    z_shift = run_stage2(config)
    simulated = run_stage3(config)
    return {
        "volume": volume,
        "z_shift": z_shift,
        "corrected": config.corrected_path if config.write_corrected else None,
        "simulated": simulated,
    }
