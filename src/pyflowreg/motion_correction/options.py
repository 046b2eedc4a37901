"""``OFOptions``: the validated options of a motion-correction run.

Every option is checked when the object is built (and again on assignment);
a bad value fails with a message that names the option, the value and what is
allowed, e.g. ``"buffer_size must be >= 1, got 0"``. Bad values raise pydantic's
``ValidationError`` (a ``ValueError``); values of the wrong type raise ``TypeError``.

>>> opts = OFOptions(input_file="video.h5", quality_setting="balanced", buffer_size=100)
>>> opts.effective_min_level, opts.output_format, opts.output_extension
(4, 'HDF5', '.h5')
>>> opts.resolved_reference_frames(30)[[0, -1]]  # range(50, 500) clipped to 30 frames
array([ 0, 29])

Options round-trip through JSON, TOML and YAML files with :meth:`OFOptions.save` and
:meth:`OFOptions.load`; arrays (in-memory videos, weight maps, reference images)
cannot be written to a config file.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from ..core.params import FlowParameters, resolve_min_level
from ._option_checks import (
    _CHECKS,
    CONFIG_SUFFIXES,
    DEFAULT_REFERENCE_FRAMES,
    OUTPUT_EXTENSIONS,
    _ArraySummary,
    _equal,
    _integer,
    _plain,
    _video_shape,
)

logger = logging.getLogger(__name__)


class OFOptions(BaseModel):
    """Options of a motion-correction run (validated at construction and assignment).

    Parameters
    ----------
    input_file : str, Path, list of paths, ndarray or None
        The recording: one file, one file per channel, or an in-memory video
        ``(T, H, W)``, ``(T, H, W, C)`` or a single frame ``(H, W)``. ``None`` only for
        in-memory use (``compensate_arr``). Paths are not checked here; the pipeline
        calls :meth:`check_input_exists`.
    output_path : Path, default "results"
        Folder of the outputs.
    output_format : {"HDF5", "TIFF", "MAT", "NPY", "ZARR", "ARRAY", "NULL"}
        Writer of the registered video (case-insensitive). ``ARRAY`` keeps it in memory,
        ``NULL`` discards it.
    output_file_name : str, optional
        Defaults to ``"compensated"`` plus :attr:`output_extension`.
    quality_setting : {"quality", "balanced", "fast", "custom"}
        Finest pyramid level solved: 0, 4, 6, or ``min_level`` for ``"custom"``.
    min_level : int >= 0, optional
        Required with (and only allowed with) ``quality_setting="custom"``.
    alpha : float or (float, float), default (1.5, 1.5)
        Smoothness weights ``(alpha_x, alpha_y)``, > 0; a scalar means both.
    levels, eta, iterations, update_lag, a_data, a_smooth, constancy_assumption
        Solver parameters, see ``pyflowreg.core.params.FlowParameters``.
    weight : list of float, ndarray or None
        Channel weights (>= 0, not all zero; normalised to sum 1), or a spatial weight
        map ``(H, W)`` or ``(H, W, C)``. ``None``: uniform.
    sigma : (3,) or (C, 3) floats, default [[1, 1, 0.1]]
        Gaussian pre-filter ``(sigma_y, sigma_x, sigma_t)`` in pixels / frames, for all
        channels or per channel; >= 0.
    buffer_size : int >= 1, default 400
        Frames read and registered per batch.
    bin_size : int >= 1, default 1
        Temporal binning of the output.
    reference_frames : range, list of int, ndarray, str or Path, default range(50, 500)
        Frames averaged into the reference (a range is clipped to the video, see
        :meth:`resolved_reference_frames`), or a reference image ``(H, W)`` /
        ``(H, W, C)`` given as an array or an image file.
    update_reference, update_initialization_w, cc_initialization : bool
        Rebuild the reference after each batch (False); start each batch from the
        previous batch's mean flow (True); rigid phase-correlation pre-alignment (False).
    cc_hw : int >= 8, default 256
        Largest side of the copy used for the phase correlation.
    channel_normalization : {"joint", "separate"}
        Scale intensities by the reference's min/max jointly or per channel.
    interpolation_method : {"cubic", "linear", "nearest"}
        Warp of the output frames.
    save_w, save_meta_info, save_valid_mask : bool
        Also write the displacement fields (False), statistics/metadata (True),
        the valid-pixel masks (False).
    output_dtype : {"uint8", "uint16", "int16", "int32", "float32", "float64"}, optional
        ``None``: the input's dtype.
    flow_backend : str, default "flowreg"
        Name of a registered flow backend (checked by the registry at run time).
    backend_params : dict
        Keyword options of the flow backend, e.g. ``{"device": "cuda"}``.
    verbose : bool
    dataset_name : str or list of str, optional
        Dataset(s) to read from HDF5/MAT input (one per channel for a list).
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, arbitrary_types_allowed=True
    )

    input_file: Path | tuple[Path, ...] | np.ndarray | None = None
    output_path: Path = Path("results")
    output_format: str = "HDF5"
    output_file_name: str | None = None
    quality_setting: Literal["quality", "balanced", "fast", "custom"] = "quality"
    min_level: int | None = None
    alpha: tuple[float, float] = (1.5, 1.5)
    levels: int = 100
    eta: float = 0.8
    iterations: int = 50
    update_lag: int = 5
    a_data: float = 0.45
    a_smooth: float = 1.0
    weight: tuple[float, ...] | np.ndarray | None = None
    sigma: tuple[tuple[float, float, float], ...] = ((1.0, 1.0, 0.1),)
    constancy_assumption: Literal["gc", "gray"] = "gc"
    buffer_size: int = 400
    bin_size: int = 1
    reference_frames: range | tuple[int, ...] | np.ndarray | Path = DEFAULT_REFERENCE_FRAMES
    update_reference: bool = False
    update_initialization_w: bool = True
    cc_initialization: bool = False
    cc_hw: int = 256
    channel_normalization: Literal["joint", "separate"] = "joint"
    interpolation_method: Literal["cubic", "linear", "nearest"] = "cubic"
    save_w: bool = False
    save_meta_info: bool = True
    save_valid_mask: bool = False
    output_dtype: str | None = None
    flow_backend: str = "flowreg"
    backend_params: dict[str, Any] = Field(default_factory=dict)
    verbose: bool = False
    dataset_name: str | tuple[str, ...] | None = None

    # ------------------------------------------------------------------ validators

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    close = difflib.get_close_matches(str(key), cls.model_fields, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(f"unknown option {key!r}{hint}")
        return data

    @field_validator("*", mode="plain")
    @classmethod
    def _check_field(cls, value: Any, info: ValidationInfo) -> Any:
        return _CHECKS[info.field_name](value)

    @field_serializer(
        "input_file",
        "alpha",
        "weight",
        "sigma",
        "reference_frames",
        "dataset_name",
        when_used="json",
    )
    def _json_value(self, value: Any) -> Any:
        # for model_dump_json(); config files go through to_dict(), which refuses arrays
        return value.tolist() if isinstance(value, np.ndarray) else _plain(value)

    @model_validator(mode="after")
    def _check_consistency(self) -> OFOptions:
        if self.quality_setting == "custom" and self.min_level is None:
            raise ValueError('quality_setting "custom" needs min_level (an int >= 0), got None')
        if self.quality_setting != "custom" and self.min_level is not None:
            raise ValueError(
                f"min_level is only used with quality_setting='custom', got min_level="
                f"{self.min_level} with quality_setting={self.quality_setting!r}"
            )
        if isinstance(self.input_file, np.ndarray):
            t, h, w, c = _video_shape(self.input_file)
            self.sigma_for_channels(c)
            self.channel_weights(c)
            for name in ("weight", "reference_frames"):
                image = getattr(self, name)
                if not isinstance(image, np.ndarray):
                    continue
                if image.shape[:2] != (h, w):
                    raise ValueError(
                        f"{name} array has frame size {image.shape[:2]} but input_file "
                        f"frames are {(h, w)}"
                    )
                if image.ndim == 3 and image.shape[2] != c:
                    raise ValueError(
                        f"{name} array has {image.shape[2]} channels but input_file has {c}"
                    )
            if isinstance(self.reference_frames, tuple):
                self.resolved_reference_frames(t)
        return self

    # ------------------------------------------------------------------ model behaviour

    def __setattr__(self, name: str, value: Any) -> None:
        # pydantic assigns before the model-level check runs: undo a rejected assignment
        fields = type(self).model_fields
        old = self.__dict__.get(name)
        try:
            super().__setattr__(name, value)
        except Exception:
            if name in fields:
                self.__dict__[name] = old
            raise

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_equal(getattr(self, k), getattr(other, k)) for k in type(self).model_fields)

    def __repr_args__(self):
        for key, value in super().__repr_args__():
            yield key, _ArraySummary(value) if isinstance(value, np.ndarray) else value

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> OFOptions:
        """A copy with ``update`` applied, validated like a new object."""
        data = {k: getattr(self, k) for k in type(self).model_fields}
        if deep:
            data = copy.deepcopy(data)
        data.update(update or {})
        return type(self)(**data)

    # ------------------------------------------------------------------ derived values

    @property
    def effective_min_level(self) -> int:
        """Finest pyramid level solved (from ``quality_setting`` and ``min_level``)."""
        return resolve_min_level(self.quality_setting, self.min_level)

    @property
    def output_extension(self) -> str:
        """File extension of the output format (``""`` for ``ARRAY`` and ``NULL``)."""
        return OUTPUT_EXTENSIONS[self.output_format]

    @property
    def output_file(self) -> Path:
        """``output_path / output_file_name`` (default name ``"compensated" + extension``)."""
        return self.output_path / (self.output_file_name or "compensated" + self.output_extension)

    @property
    def reference_is_image(self) -> bool:
        """True when ``reference_frames`` is a reference image (array or file)."""
        return isinstance(self.reference_frames, (np.ndarray, Path))

    def flow_parameters(self) -> FlowParameters:
        """The solver parameters of these options."""
        return FlowParameters(
            alpha=self.alpha,
            levels=self.levels,
            min_level=self.effective_min_level,
            eta=self.eta,
            iterations=self.iterations,
            update_lag=self.update_lag,
            a_data=self.a_data,
            a_smooth=self.a_smooth,
            constancy_assumption=self.constancy_assumption,  # type: ignore[arg-type]
        )

    def sigma_for_channels(self, n_channels: int) -> np.ndarray:
        """Pre-filter widths ``(C, 3)`` float64, rows ``(sigma_y, sigma_x, sigma_t)``."""
        sigma = np.array(self.sigma, dtype=np.float64)
        if len(sigma) == 1:
            return np.repeat(sigma, n_channels, axis=0)
        if len(sigma) != n_channels:
            raise ValueError(f"sigma has {len(sigma)} rows but the video has {n_channels} channels")
        return sigma

    def channel_weights(self, n_channels: int) -> np.ndarray:
        """Channel weights ``(C,)`` float64, normalised to sum 1.

        Uniform when ``weight`` is None or a spatial map (the map itself is handed to
        the flow backend unchanged; a ``(H, W, C)`` map must have ``C`` channels).
        """
        if isinstance(self.weight, tuple):
            if len(self.weight) != n_channels:
                raise ValueError(
                    f"weight has {len(self.weight)} channel weights but the video has "
                    f"{n_channels} channels"
                )
            w = np.array(self.weight, dtype=np.float64)
            return w / w.sum()
        if isinstance(self.weight, np.ndarray) and self.weight.ndim == 3:
            if self.weight.shape[2] != n_channels:
                raise ValueError(
                    f"weight map has {self.weight.shape[2]} channels but the video has "
                    f"{n_channels} channels"
                )
        return np.full(n_channels, 1.0 / n_channels)

    def resolved_reference_frames(self, n_frames: int) -> np.ndarray:
        """Indices ``(K,)`` int64 of the frames averaged into the reference.

        A range (the default ``range(50, 500)``) is clipped to ``[0, n_frames)``, never
        padded with copies; when nothing of it lies inside the video, all frames are
        used (a 30-frame video gives 0..29). Explicit indices must all exist.
        """
        n_frames = _integer("n_frames", n_frames, 1)
        ref = self.reference_frames
        if isinstance(ref, range):
            picked = np.arange(ref.start, ref.stop, ref.step)
            picked = picked[(picked >= 0) & (picked < n_frames)]
            return picked if picked.size else np.arange(n_frames)
        if isinstance(ref, tuple):
            outside = [i for i in ref if i >= n_frames]
            if outside:
                raise ValueError(
                    f"reference_frames {outside} out of range for a video of {n_frames} "
                    f"frames (valid indices 0..{n_frames - 1})"
                )
            return np.array(ref, dtype=np.int64)
        shown = _ArraySummary(ref) if isinstance(ref, np.ndarray) else str(ref)
        raise ValueError(f"reference_frames is a reference image ({shown}), not frame indices")

    def check_input_exists(self) -> None:
        """Raise ``FileNotFoundError`` for missing input (or reference image) files.

        Called by the pipeline before it opens anything; arrays need no check.
        ``ValueError`` when ``input_file`` is None.
        """
        if self.input_file is None:
            raise ValueError(
                "input_file is None: set it to a file, a list of files or an array "
                "(compensate_arr handles in-memory videos)"
            )
        paths = [self.input_file] if isinstance(self.input_file, Path) else self.input_file
        missing = [str(p) for p in paths if isinstance(p, Path) and not p.exists()]
        if isinstance(self.reference_frames, Path) and not self.reference_frames.exists():
            missing.append(f"{self.reference_frames} (reference_frames)")
        if missing:
            raise FileNotFoundError(f"input file(s) not found: {', '.join(missing)}")

    # ------------------------------------------------------------------ serialisation

    def to_dict(self, arrays: Literal["raise", "omit"] = "raise") -> dict[str, Any]:
        """The options as plain JSON-safe values (ranges as ``{start, stop, step}``).

        Parameters
        ----------
        arrays : {"raise", "omit"}
            Options holding arrays cannot be written to config files: raise a
            ``ValueError`` naming them, or drop them (they load back as defaults).
        """
        if arrays not in ("raise", "omit"):
            raise ValueError(f"arrays must be one of ['raise', 'omit'], got {arrays!r}")
        data = {k: getattr(self, k) for k in type(self).model_fields}
        held = [k for k, v in data.items() if isinstance(v, np.ndarray)]
        if held and arrays == "raise":
            raise ValueError(
                f"options {held} hold arrays, which cannot be saved to a config file; "
                "use file paths, or pass arrays='omit' to drop them"
            )
        if held:
            logger.info("options %s hold arrays and are left out of the saved options", held)
        out = {k: _plain(v) for k, v in data.items() if k not in held}
        try:
            json.dumps(out["backend_params"])
        except (TypeError, ValueError) as exc:
            raise ValueError(
                "backend_params must hold only str, int, float, bool, None, lists and dicts "
                f"to be saved, got {self.backend_params!r} ({exc})"
            ) from None
        return out

    def save(self, path: str | Path, *, arrays: Literal["raise", "omit"] = "raise") -> Path:
        """Write the options to ``.json``, ``.toml`` or ``.yaml``/``.yml`` (by extension)."""
        path = Path(path)
        suffix = _config_suffix(path)
        data = self.to_dict(arrays=arrays)
        if suffix == ".json":
            text = json.dumps(data, indent=2) + "\n"
        elif suffix == ".toml":
            try:
                import tomli_w
            except ImportError:
                raise ImportError(
                    "writing TOML options needs tomli_w: pip install tomli-w"
                ) from None
            # TOML has no null; every option that can be None defaults to None
            text = tomli_w.dumps({k: v for k, v in data.items() if v is not None})
        else:
            import yaml

            text = yaml.safe_dump(data, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> OFOptions:
        """Read options written by :meth:`save` (format chosen by the file extension)."""
        path = Path(path)
        suffix = _config_suffix(path)
        text = path.read_text(encoding="utf-8")
        try:
            if suffix == ".json":
                data = json.loads(text)
            elif suffix == ".toml":
                try:
                    import tomllib
                except ImportError:  # Python 3.10
                    import tomli as tomllib
                data = tomllib.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except ValueError as exc:  # JSON and TOML decode errors
            raise ValueError(f"cannot parse options file {path}: {exc}") from None
        except Exception as exc:
            if type(exc).__module__.split(".")[0] != "yaml":
                raise
            raise ValueError(f"cannot parse options file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"options file {path} must hold a mapping of options, got {data!r}")
        return cls(**data)


def _config_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ValueError(
            f"options file must end in one of {list(CONFIG_SUFFIXES)}, got {path.name!r}"
        )
    return suffix
