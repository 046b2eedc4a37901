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
import warnings
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
from ._compat import (
    COMPAT_CHECKS,
    TYPENAMES,
    ChannelNormalization,
    ConstancyAssumption,
    InterpolationMethod,
    OutputFormat,
    QualitySetting,
    as_enum,
    is_reader,
    plain_value,
)
from ._option_checks import (
    _CHECKS,
    DEFAULT_NAME_EXTENSIONS,
    DEFAULT_REFERENCE_FRAMES,
    OUTPUT_EXTENSIONS,
    W_H5_FORMATS,
    _ArraySummary,
    _equal,
    _integer,
    _plain,
    _video_shape,
)
from ._option_files import config_suffix, known_options, read_options_file, write_options_file

logger = logging.getLogger(__name__)


class OFOptions(BaseModel):
    """Options of a motion-correction run (validated at construction and assignment).

    Parameters
    ----------
    input_file : str, Path, list of paths, ndarray, VideoReader or None
        The recording: one file, one file per channel, an in-memory video
        ``(T, H, W)``, ``(T, H, W, C)`` or a single frame ``(H, W)``, or an open reader of
        ``pyflowreg.io`` / ``pyflowreg.util.io`` (the pipeline reads an independent twin,
        ``reader.reopen()``, and leaves the given reader as it is). ``None`` only for
        in-memory use (``compensate_arr``). Paths are not checked here; the pipeline
        calls :meth:`check_input_exists`.
    output_path : Path, default "results"
        Folder of the outputs.
    output_format : OutputFormat or {"HDF5", "TIFF", "MAT", "NPY", "ZARR", "ARRAY", "NULL"}
        Writer of the registered video (case-insensitive; stored as :class:`OutputFormat`).
        ``ARRAY`` keeps it in memory, ``NULL`` discards it.
    output_file_name : str, optional
        Defaults to ``compensated.<FORMAT>`` as PyFlowReg names it (``compensated.HDF5``,
        ``.TIFF``, ``.MAT``; ``.npy``, ``.zarr``); see ``naming_convention``.
    naming_convention : {"default", "batch"}
        ``"batch"`` names the registered video ``<input stem>_compensated.<FORMAT>``.
    quality_setting : QualitySetting or {"quality", "balanced", "fast", "custom"}
        Finest pyramid level solved: 0, 4, 6, or ``min_level`` for ``"custom"``.
    min_level : int >= -1, default -1
        ``-1``: from ``quality_setting`` (``"custom"`` without a level solves down to 0).
        A level ``>= 0`` switches ``quality_setting`` to ``"custom"``; assigning a named
        preset afterwards sets ``min_level`` back to -1.
    alpha : float or (float, float) or "auto", default (1.5, 1.5)
        Smoothness weights ``(alpha_x, alpha_y)``, > 0; a scalar means both. ``"auto"``
        chooses one weight from the recording by held-out-block cross-validation on four
        reference frames before the registration (:func:`pyflowreg.core.alpha.select_alpha`;
        ``run.json`` records the choice). Use it when the motion is smooth (rigid shifts,
        slow deformation), where weights far above 1.5 are much more accurate; it costs about
        64 extra flow estimates per run.
    levels, eta, iterations, update_lag, a_data, a_smooth, constancy_assumption
        Solver parameters, see ``pyflowreg.core.params.FlowParameters``;
        ``constancy_assumption`` also accepts ``"gradient"`` (= ``"gc"``) and
        ``"brightness"`` (= ``"gray"``).
    weight : list of float, ndarray or None
        Channel weights (>= 0, not all zero; normalised to sum 1), or a spatial weight
        map ``(H, W)`` or ``(H, W, C)``. ``None``: uniform. More channel weights than the
        video has channels: the first ones are used, with a warning.
    sigma : (3,) or (C, 3) floats, default [[1, 1, 0.1]]
        Gaussian pre-filter ``(sigma_y, sigma_x, sigma_t)`` in pixels / frames, for all
        channels or per channel; >= 0. More rows than channels: the first rows are used,
        with a warning.
    buffer_size : int >= 1, default 400
        Frames read and registered per batch.
    bin_size : int >= 1, default 1
        Temporal binning of the input before registration: every ``bin_size`` consecutive
        frames are averaged into one by the reader (a last, incomplete bin is dropped), so
        the outputs have ``T // bin_size`` frames; ``reference_frames`` index binned frames.
    reference_frames : range, list of int, ndarray, str or Path, default range(50, 500)
        Frames averaged into the reference (a range is clipped to the video, see
        :meth:`resolved_reference_frames`), or a reference image ``(H, W)`` /
        ``(H, W, C)`` given as an array or an image file.
    update_reference, update_initialization_w, cc_initialization : bool
        Rebuild the reference after each batch (False); start each batch from the
        previous batch's mean flow (True); rigid phase-correlation pre-alignment (False).
    cc_hw : int >= 8 or (int, int), default 256
        Largest side of the copy used for the phase correlation (of a pair: the larger).
    cc_up : int >= 1, default 1
        Up-sampling of the correlation peak search: ``> 1`` refines the peak on a grid of
        ``1 / cc_up`` px (matrix-multiply DFT); ``1`` keeps the parabolic sub-pixel fit.
    channel_normalization : {"joint", "separate"}
        Scale intensities by the reference's min/max jointly or per channel.
    interpolation_method : {"cubic", "catmull_rom", "bspline", "lanczos3", "linear", "nearest"}
        Kernel of the output warp (docs/numerics.md measures them): ``cubic`` is Keys' cubic
        convolution with a = -0.75 (PyFlowReg's, OpenCV's), ``catmull_rom`` a = -0.5 (smoother,
        MATLAB's), ``bspline`` the interpolating cubic B-spline (the most faithful on clean
        data), ``lanczos3`` the 6 x 6 windowed sinc (sharpest, most ringing).
    save_w, save_meta_info, save_valid_mask, save_valid_idx : bool
        Also write the displacement fields (False), statistics/metadata (True),
        the valid-pixel masks (False) as ``valid_mask.<ext>``, and the same masks as
        PyFlowReg's ``idx.hdf`` (HDF5 dataset ``idx``, False).
    output_dtype : {"uint8", "uint16", "int16", "int32", "float32", "float64"}, optional
        ``None``: the input's dtype (or ``output_typename``'s).
    output_typename : {"single", "double", "uint8", "uint16", "int16", "int32", ...}, optional
        PyFlowReg's (MATLAB's) name of the output dtype; ``None`` or ``""``: the input's.
        Must agree with ``output_dtype`` when both are set.
    n_references : int, default 1
        Only 1 (a multi-reference run is refused with a message).
    min_frames_per_reference : int >= 1, default 20
        Recorded for PyFlowReg option files; used only by multi-reference runs.
    flow_backend : str, default "flowreg"
        Name of a registered flow backend (checked by the registry at run time).
    backend_params : dict
        Keyword options of the flow backend, e.g. ``{"device": "cuda"}``.
    get_displacement_impl, get_displacement_factory : callable, optional
        Override ``flow_backend`` for an experiment: a ``get_displacement(fixed, moving,
        **kwargs) -> w (H, W, 2)`` callable, or a factory called with ``backend_params``
        that returns one. Run by the ``sequential`` and ``threading`` executors; never
        saved (``model_dump`` and option files leave them out).
    verbose : bool
    dataset_name : str or list of str, optional
        Dataset(s) to read from HDF5/MAT input (one per channel for a list).
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, arbitrary_types_allowed=True
    )

    input_file: Path | tuple[Path, ...] | np.ndarray | Any | None = None
    output_path: Path = Path("results")
    output_format: OutputFormat = OutputFormat.HDF5
    output_file_name: str | None = None
    naming_convention: Literal["default", "batch"] = "default"
    quality_setting: QualitySetting = QualitySetting.QUALITY
    min_level: int = -1
    alpha: tuple[float, float] | Literal["auto"] = (1.5, 1.5)
    levels: int = 100
    eta: float = 0.8
    iterations: int = 50
    update_lag: int = 5
    a_data: float = 0.45
    a_smooth: float = 1.0
    weight: tuple[float, ...] | np.ndarray | None = None
    sigma: tuple[tuple[float, float, float], ...] = ((1.0, 1.0, 0.1),)
    constancy_assumption: ConstancyAssumption = ConstancyAssumption.GC
    buffer_size: int = 400
    bin_size: int = 1
    reference_frames: range | tuple[int, ...] | np.ndarray | Path = DEFAULT_REFERENCE_FRAMES
    update_reference: bool = False
    update_initialization_w: bool = True
    cc_initialization: bool = False
    cc_hw: int | tuple[int, int] = 256
    cc_up: int = 1
    channel_normalization: ChannelNormalization = ChannelNormalization.JOINT
    interpolation_method: InterpolationMethod = InterpolationMethod.CUBIC
    save_w: bool = False
    save_meta_info: bool = True
    save_valid_mask: bool = False
    save_valid_idx: bool = False
    output_dtype: str | None = None
    output_typename: str | None = None
    n_references: int = 1
    min_frames_per_reference: int = 20
    flow_backend: str = "flowreg"
    backend_params: dict[str, Any] = Field(default_factory=dict)
    get_displacement_factory: Any = Field(default=None, exclude=True)
    get_displacement_impl: Any = Field(default=None, exclude=True)
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
        name = info.field_name
        check = COMPAT_CHECKS.get(name) or _CHECKS[name]
        return as_enum(name, check(value))

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

    @field_serializer(
        "output_format",
        "quality_setting",
        "channel_normalization",
        "interpolation_method",
        "constancy_assumption",
        "cc_hw",
    )
    def _enum_value(self, value: Any) -> Any:
        return _plain(plain_value(value))

    @model_validator(mode="after")
    def _check_consistency(self) -> OFOptions:
        if self.min_level >= 0 and self.quality_setting != QualitySetting.CUSTOM:
            # PyFlowReg's rule: an explicit finest level makes the preset "custom"
            self.__dict__["quality_setting"] = QualitySetting.CUSTOM
        if self.output_typename is not None and self.output_dtype is not None:
            if TYPENAMES[self.output_typename] != self.output_dtype:
                raise ValueError(
                    f"output_typename {self.output_typename!r} ("
                    f"{TYPENAMES[self.output_typename]}) contradicts output_dtype "
                    f"{self.output_dtype!r}; set one of them"
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
        old_min_level = self.__dict__.get("min_level")
        try:
            if name == "quality_setting" and isinstance(value, str) and value.lower() != "custom":
                self.__dict__["min_level"] = -1  # a named preset replaces a custom level
            super().__setattr__(name, value)
        except Exception:
            if name in fields:
                self.__dict__[name] = old
                self.__dict__["min_level"] = old_min_level
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
        if self.quality_setting == QualitySetting.CUSTOM:
            return max(self.min_level, 0)
        return resolve_min_level(self.quality_setting.value)

    @property
    def output_extension(self) -> str:
        """File extension of the output format (``""`` for ``ARRAY`` and ``NULL``)."""
        return OUTPUT_EXTENSIONS[self.output_format]

    @property
    def output_file(self) -> Path:
        """``output_path / output_file_name``.

        Default name: ``compensated.<FORMAT>`` (PyFlowReg's: ``compensated.HDF5``,
        ``compensated.TIFF``, ``compensated.MAT``; ``.npy`` and ``.zarr`` for the formats of this
        package); with ``naming_convention="batch"``, ``<stem of the (first) input
        file>_compensated.<FORMAT>``.
        """
        if self.output_file_name:
            return self.output_path / self.output_file_name
        stem = "compensated"
        if self.naming_convention == "batch":
            source = self.input_file
            first = source[0] if isinstance(source, tuple) else source
            if isinstance(first, Path):
                stem = f"{first.stem}_compensated"
        ext = DEFAULT_NAME_EXTENSIONS.get(self.output_format, self.output_extension)
        return self.output_path / (stem + ext)

    @property
    def w_output(self) -> tuple[str, str]:
        """``(file name, format)`` of the displacement fields of ``save_w``: ``w.h5`` (HDF5,
        datasets ``u`` and ``v``, ``(T, H, W)`` each) for the HDF5, TIFF and MAT formats, as
        PyFlowReg documents it; ``w.npy`` / ``w.zarr`` (``(T, H, W, 2)``) for NPY / ZARR."""
        if self.output_format in W_H5_FORMATS:
            return "w.h5", "HDF5"
        return "w" + self.output_extension, str(self.output_format)

    def resolved_output_dtype(self, input_dtype: np.dtype) -> np.dtype:
        """Dtype of the registered video: ``output_dtype``, ``output_typename``'s, or the
        input's (native byte order)."""
        if self.output_dtype:
            dtype = np.dtype(self.output_dtype)
        elif self.output_typename:
            dtype = np.dtype(TYPENAMES[self.output_typename])
        else:
            dtype = np.dtype(input_dtype)
        return dtype.newbyteorder("=")

    @property
    def reference_is_image(self) -> bool:
        """True when ``reference_frames`` is a reference image (array or file)."""
        return isinstance(self.reference_frames, (np.ndarray, Path))

    def flow_parameters(self, alpha: tuple[float, float] | None = None) -> FlowParameters:
        """The solver parameters of these options; ``alpha`` (the chosen weights) replaces an
        ``alpha="auto"``, which otherwise stands for the default (1.5, 1.5) here."""
        if alpha is None:
            alpha = (1.5, 1.5) if self.alpha == "auto" else self.alpha
        return FlowParameters(
            alpha=alpha,
            levels=self.levels,
            min_level=self.effective_min_level,
            eta=self.eta,
            iterations=self.iterations,
            update_lag=self.update_lag,
            a_data=self.a_data,
            a_smooth=self.a_smooth,
            constancy_assumption=self.constancy_assumption.value,  # type: ignore[arg-type]
        )

    def sigma_for_channels(self, n_channels: int) -> np.ndarray:
        """Pre-filter widths ``(C, 3)`` float64, rows ``(sigma_y, sigma_x, sigma_t)``."""
        sigma = np.array(self.sigma, dtype=np.float64)
        if len(sigma) == 1:
            return np.repeat(sigma, n_channels, axis=0)
        if n_channels == 1:  # options made for two channels (see check_channels)
            return sigma[:1]
        if len(sigma) != n_channels:
            raise ValueError(f"sigma has {len(sigma)} rows but the video has {n_channels} channels")
        return sigma

    def channel_weights(self, n_channels: int) -> np.ndarray:
        """Channel weights ``(C,)`` float64, normalised to sum 1.

        Uniform when ``weight`` is None or a spatial map (the map itself is handed to
        the flow backend unchanged; a ``(H, W, C)`` map must have ``C`` channels).
        """
        if isinstance(self.weight, tuple):
            if n_channels == 1 and self.weight[0] > 0:  # options made for more channels
                return np.ones(1)
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

    def check_channels(self, n_channels: int, stacklevel: int = 2) -> None:
        """Warn when ``sigma`` rows or channel weights were made for more than one channel
        but the video has one.

        PyFlowReg's default options carry two ``sigma`` rows (and two-channel options two
        weights); on a one-channel video the first row is used and the other weights are
        dropped (see :meth:`sigma_for_channels`, :meth:`channel_weights`), which this says.
        Other mismatches are errors.
        """
        if n_channels != 1:
            return
        extra = []
        if len(self.sigma) > 1:
            extra.append(f"sigma has {len(self.sigma)} rows")
        if isinstance(self.weight, tuple) and len(self.weight) > 1 and self.weight[0] > 0:
            extra.append(f"weight has {len(self.weight)} channel weights")
        if extra:
            warnings.warn(
                f"{' and '.join(extra)} but the video has {n_channels} channel(s): using the "
                f"first {n_channels} and dropping the rest",
                UserWarning,
                stacklevel=stacklevel + 1,
            )

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

    def resolve_get_displacement(self):
        """The per-pair flow function of these options' backend and solver parameters,
        ``get_displacement(fixed, moving, uv=None, weight=None) -> w (H, W, 2)``
        (PyFlowReg's name; see :func:`._resolve.resolve_get_displacement`)."""
        from ._resolve import resolve_get_displacement

        return resolve_get_displacement(self)

    def get_reference_frame(self, video=None) -> np.ndarray:
        """The raw reference ``(H, W, C)`` float32 a run with these options registers to,
        from ``video`` (reader, array or path) or ``input_file`` (PyFlowReg's name; see
        :func:`._resolve.get_reference_frame`)."""
        from ._resolve import get_reference_frame

        return get_reference_frame(self, video)

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
        if is_reader(self.input_file):
            return
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
        data = {k: getattr(self, k) for k in type(self).model_fields if k not in _NOT_SAVED}
        held = [k for k, v in data.items() if isinstance(v, np.ndarray) or is_reader(v)]
        if held and arrays == "raise":
            raise ValueError(
                f"options {held} hold arrays or readers, which cannot be saved to a config "
                "file; use file paths, or pass arrays='omit' to drop them"
            )
        if held:
            logger.info("options %s hold arrays and are left out of the saved options", held)
        out = {k: _plain(plain_value(v)) for k, v in data.items() if k not in held}
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
        config_suffix(path)  # a bad extension fails before the options are converted
        return write_options_file(path, self.to_dict(arrays=arrays))

    @classmethod
    def load(cls, path: str | Path, *, unknown: Literal["raise", "warn"] = "raise") -> OFOptions:
        """Read an options file (format chosen by the file extension).

        Reads what :meth:`save` writes (``.json``, ``.toml``, ``.yaml``), options saved by
        PyFlowReg (JSON) and MATLAB Flow-Registration options (``.mat``: a struct of
        options, 1-based frame indices). Bad values fail as in the constructor.

        Parameters
        ----------
        path : str or Path
        unknown : {"raise", "warn"}
            Keys that are not options of this package: a ``ValueError`` naming the first
            (a typo should not pass unnoticed), or a warning naming them all, the keys
            skipped (what :meth:`load_options`, PyFlowReg's name, does).
        """
        path = Path(path)
        data = read_options_file(path)
        return cls(**known_options(data, cls.model_fields, path, unknown, stacklevel=2))

    #: PyFlowReg's name of :meth:`save`.
    save_options = save

    @classmethod
    def load_options(cls, path: str | Path) -> OFOptions:
        """PyFlowReg's name of :meth:`load`, lenient: keys that are not options here
        (PyFlowReg or MATLAB extras) are skipped with a warning naming them."""
        path = Path(path)
        data = read_options_file(path)
        return cls(**known_options(data, cls.model_fields, path, "warn", stacklevel=2))


#: Options that are code, not configuration: never written to option files.
_NOT_SAVED = ("get_displacement_factory", "get_displacement_impl")
