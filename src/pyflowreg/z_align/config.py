"""Settings of the z-align pipeline: :class:`ZAlignConfig` (pydantic; TOML or YAML files).

Relative paths resolve against ``root``; the outputs go under ``root / output_root``.

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> config = ZAlignConfig(root=root, input_file="recording.tif", reference_volume="stack.h5")
>>> config.output_dir.relative_to(config.root).as_posix(), config.z_shift_path.name
('z_align_outputs', 'z_shift.HDF5')
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pyflowreg.motion_correction._compat import QualitySetting
from pyflowreg.motion_correction._option_files import read_options_file

__all__ = ["ZAlignConfig"]

_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
_CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")


class ZAlignConfig(BaseModel):
    """Paths and parameters of the z-align pipeline (PyFlowReg's documented fields).

    Parameters
    ----------
    root : path
        Existing base folder; relative paths below resolve against it.
    input_file : path
        Recording whose depth is estimated (stage 2 input).
    volume_input_file : path, optional
        Raw z-stack (frames = slices, or ``stack_scans_per_slice`` scans per slice) that
        stage 1 compensates; required without ``reference_volume``.
    reference_volume : path, optional
        An already compensated volume; stage 1 then only records it.
    reference_source_file : path, optional
        Recording whose first ``reference_source_frames`` (binned) frames are averaged into
        the reference image of stage 1 and of the recording prealignment.
    reference_source_frames, reference_source_buffer_size, reference_source_bin_size : int
        2000, 10, 20.
    output_root : path, default "z_align_outputs"
        Folder of all outputs and ``status.json`` (under ``root``).
    volume_output_dir, recording_prealigned_output_dir : path
        ``aligned_stack`` and ``prealigned_recording`` (under ``output_root``).
    z_shift_file : path, default "z_shift.HDF5"
        Depth map, 1-based slices, HDF5 (``.h5``, ``.hdf5`` or ``.hdf``).
    corrected_output_file, simulated_output_file : path
        ``compensated_shift_corrected.tif`` and ``simulated_from_z.tif``; the format follows
        the extension (TIFF, HDF5, MAT, ...).
    resume, prealign_stack, prealign_recording, write_corrected, write_simulated : bool
        True, True, False, True, True.
    stage1_alpha : float, default 5.0
    stage1_quality_setting : str, default "quality"
    stage1_buffer_size : int, default 500
    stage1_bin_size : int, default 1
    stage1_update_reference : bool, default True
    stack_scans_per_slice : int, optional
        Repeated scans per slice: stage 1's buffer size (with ``update_reference=True``)
        and the binning that turns the compensated stack into slices.
    flow_backend : str, default "flowreg"
    backend_params : dict
    stage1_flow_options, recording_prealign_flow_options : dict or path, optional
        Further ``OFOptions`` for stage 1 / the prealignment, inline or an options file; the
        input/output routing fields are ignored (and ``reference_frames`` for stage 1).
    input_buffer_size, input_bin_size, volume_buffer_size, volume_bin_size : int
        50, 1, 500, 1.
    win_half : int, default 10
        Half-width of the depth search window (slices) around the anchor slice.
    patch_size : int, default 128
    overlap : float in [0, 1), default 0.75
        Patch stride ``round(patch_size * (1 - overlap))`` (at least 1).
    spatial_sigma, temporal_sigma : float > 0
        1.5, 1.5: Gaussian smoothing before the gradients.
    z_smooth_sigma_spatial, z_smooth_sigma_temporal : float > 0
        5.0, 1.5: Gaussian smoothing of the depth map.
    parabolic_tau_scale : float > 0, default 1e-3
    output_dtype : str, default "uint16"
        Dtype of the corrected and simulated recordings (integers rounded and clipped).
    n_jobs : int, default -1
        Threads scoring the patches with ``parallelization="threading"`` (-1: all cores).
    parallelization : {"sequential", "threading"}
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    root: Path
    input_file: Path
    volume_input_file: Path | None = None
    reference_volume: Path | None = None
    reference_source_file: Path | None = None

    reference_source_frames: int = 2000
    reference_source_buffer_size: int = 10
    reference_source_bin_size: int = 20

    output_root: Path = Path("z_align_outputs")
    volume_output_dir: Path = Path("aligned_stack")
    recording_prealigned_output_dir: Path = Path("prealigned_recording")
    z_shift_file: Path = Path("z_shift.HDF5")
    corrected_output_file: Path = Path("compensated_shift_corrected.tif")
    simulated_output_file: Path = Path("simulated_from_z.tif")

    resume: bool = True
    prealign_stack: bool = True
    prealign_recording: bool = False
    write_corrected: bool = True
    write_simulated: bool = True

    stage1_alpha: float = 5.0
    stage1_quality_setting: str = "quality"
    stage1_buffer_size: int = 500
    stage1_bin_size: int = 1
    stage1_update_reference: bool = True
    stack_scans_per_slice: int | None = None
    flow_backend: str = "flowreg"
    backend_params: dict[str, Any] = Field(default_factory=dict)
    stage1_flow_options: dict[str, Any] | Path | None = None
    recording_prealign_flow_options: dict[str, Any] | Path | None = None

    input_buffer_size: int = 50
    input_bin_size: int = 1
    volume_buffer_size: int = 500
    volume_bin_size: int = 1
    win_half: int = 10
    patch_size: int = 128
    overlap: float = 0.75
    spatial_sigma: float = 1.5
    temporal_sigma: float = 1.5
    z_smooth_sigma_spatial: float = 5.0
    z_smooth_sigma_temporal: float = 1.5
    parabolic_tau_scale: float = 1e-3
    output_dtype: str = "uint16"
    n_jobs: int = -1
    parallelization: Literal["sequential", "threading"] = "sequential"

    # ------------------------------------------------------------------ validation

    @field_validator("root")
    @classmethod
    def _root_exists(cls, value: Path) -> Path:
        value = Path(value).expanduser()
        if not value.is_dir():
            raise ValueError(f"root must be an existing folder, got {str(value)!r}")
        return value.resolve()

    @field_validator(
        "reference_source_frames",
        "reference_source_buffer_size",
        "reference_source_bin_size",
        "stage1_buffer_size",
        "stage1_bin_size",
        "stack_scans_per_slice",
        "input_buffer_size",
        "input_bin_size",
        "volume_buffer_size",
        "volume_bin_size",
        "win_half",
        "patch_size",
    )
    @classmethod
    def _at_least_one(cls, value: int | None, info) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {value}")
        return value

    @field_validator(
        "stage1_alpha",
        "spatial_sigma",
        "temporal_sigma",
        "z_smooth_sigma_spatial",
        "z_smooth_sigma_temporal",
        "parabolic_tau_scale",
    )
    @classmethod
    def _positive(cls, value: float, info) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{info.field_name} must be a finite number > 0, got {value}")
        return value

    @field_validator("stage1_quality_setting")
    @classmethod
    def _quality(cls, value: str) -> str:
        allowed = [q.value for q in QualitySetting]
        if value not in allowed:
            raise ValueError(f"stage1_quality_setting must be one of {allowed}, got {value!r}")
        return value

    @field_validator("overlap")
    @classmethod
    def _overlap(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError(f"overlap must be in [0, 1), got {value}")
        return value

    @field_validator("z_shift_file")
    @classmethod
    def _hdf5_name(cls, value: Path) -> Path:
        if Path(value).suffix.lower() not in _HDF5_SUFFIXES:
            raise ValueError(
                f"z_shift_file must end in one of {list(_HDF5_SUFFIXES)}, got {str(value)!r}"
            )
        return Path(value)

    @field_validator("output_dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        try:
            dtype = np.dtype(value)
        except TypeError:
            raise ValueError(f"output_dtype must be a NumPy dtype name, got {value!r}") from None
        if dtype.kind not in "iuf":
            raise ValueError(f"output_dtype must be an integer or float dtype, got {value!r}")
        return dtype.name

    @field_validator("n_jobs")
    @classmethod
    def _n_jobs(cls, value: int) -> int:
        if value != -1 and value < 1:
            raise ValueError(f"n_jobs must be -1 (all cores) or >= 1, got {value}")
        return value

    @model_validator(mode="after")
    def _volume_source(self) -> ZAlignConfig:
        if self.reference_volume is None and self.volume_input_file is None:
            raise ValueError(
                "set volume_input_file (stage 1 builds the volume) or reference_volume"
            )
        return self

    # ------------------------------------------------------------------ files

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> ZAlignConfig:
        """Settings from a TOML file."""
        return cls._from(Path(path), (".toml",))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> ZAlignConfig:
        """Settings from a YAML file."""
        return cls._from(Path(path), (".yaml", ".yml"))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ZAlignConfig:
        """Settings from a ``.toml``, ``.yaml`` or ``.yml`` file (by extension)."""
        return cls._from(Path(path), _CONFIG_SUFFIXES)

    @classmethod
    def _from(cls, path: Path, suffixes: tuple[str, ...]) -> ZAlignConfig:
        if path.suffix.lower() not in suffixes:
            raise ValueError(f"config file must end in one of {list(suffixes)}, got {path.name!r}")
        if not path.is_file():
            raise FileNotFoundError(f"z-align config file not found: {path}")
        return cls(**read_options_file(path))

    # ------------------------------------------------------------------ resolved paths

    def _under(self, base: Path, value: Path) -> Path:
        value = Path(value).expanduser()
        return value if value.is_absolute() else base / value

    def path(self, value: Path | None) -> Path | None:
        """A configured input path resolved against ``root``."""
        return None if value is None else self._under(self.root, value)

    @property
    def output_dir(self) -> Path:
        return self._under(self.root, self.output_root)

    @property
    def status_path(self) -> Path:
        return self.output_dir / "status.json"

    @property
    def volume_output_path(self) -> Path:
        return self._under(self.output_dir, self.volume_output_dir) / "compensated.HDF5"

    @property
    def prealigned_path(self) -> Path:
        out = self._under(self.output_dir, self.recording_prealigned_output_dir)
        return out / "compensated.HDF5"

    @property
    def z_shift_path(self) -> Path:
        return self._under(self.output_dir, self.z_shift_file)

    @property
    def corrected_path(self) -> Path:
        return self._under(self.output_dir, self.corrected_output_file)

    @property
    def simulated_path(self) -> Path:
        return self._under(self.output_dir, self.simulated_output_file)

    @property
    def metadata_path(self) -> Path:
        return self.output_dir / "stage2_metadata.npz"

    @property
    def patch_stride(self) -> int:
        return max(1, round(self.patch_size * (1 - self.overlap)))

    @property
    def threads(self) -> int:
        return (os.cpu_count() or 1) if self.n_jobs == -1 else self.n_jobs
