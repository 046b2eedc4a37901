"""Configuration of a multi-session run: :class:`SessionConfig` and array-job task ids.

A session is a folder ``root`` of recordings of one field of view (matched by ``pattern``).
Stage 1 motion-corrects every recording into ``<output_root>/<recording stem>/``, stage 2 aligns
their temporal means to the centre recording's, stage 3 builds the common valid-pixel mask in
``final_results/``. :class:`SessionConfig` is a pydantic v2 model: it loads from TOML or YAML
(:meth:`SessionConfig.from_file`), validates every value on construction and on assignment, and
names the key (and the file) of a bad value.

>>> from pyflowreg.session import SessionConfig
>>> config = SessionConfig(root="/data/experiment", pattern="*.tif", n_workers=4)
>>> config.resolve_output_paths().output_root
PosixPath('/data/experiment/compensated_outputs')

Relative paths
--------------
In a config file, a relative ``root`` is relative to the folder of the file, and a relative
``flow_options`` file to the folder of the file (or, when no such file is there, to ``root``,
where the session GUI writes it). ``output_root``, ``final_results`` and ``center`` are relative
to ``root`` wherever the config comes from (:meth:`SessionConfig.resolve_output_paths`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if TYPE_CHECKING:
    from ..motion_correction import OFOptions
    from ..motion_correction.compensate_recording import RegistrationConfig

__all__ = [
    "ARRAY_TASK_VARIABLES",
    "SessionConfig",
    "SessionConfigError",
    "SessionPaths",
    "array_task_index",
    "discover_input_files",
    "get_array_task_id",
    "options_hash",
    "recording_name",
]

#: Environment variables holding the task id of an array job, in the order they are read.
ARRAY_TASK_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SGE_TASK_ID", "PBS_ARRAY_INDEX")

#: Config-file extensions and their formats.
CONFIG_FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}

#: Stage-2 data terms: PyFlowReg's names and their aliases.
CONSTANCY_ALIASES = {"gradient": "gc", "brightness": "gray", "census": "cs"}

#: The status file of a session output folder (see ``_status``).
STATUS_FILE = "status.json"

#: Recordings that are folders (Zarr stores) rather than files.
FOLDER_RECORDINGS = (".zarr",)


class SessionConfigError(ValueError):
    """A config file that cannot be read or holds bad values; the message names the file."""


class SessionPaths(NamedTuple):
    """Absolute output folders of a session (:meth:`SessionConfig.resolve_output_paths`)."""

    output_root: Path
    final_results: Path


class SessionConfig(BaseModel):
    """Settings of a multi-session run (every field can be set in the TOML/YAML file).

    Parameters
    ----------
    root : path
        Folder holding the recordings.
    pattern : str, default "*.tif"
        Glob pattern of the recordings, relative to ``root`` (``"**/*.tif"`` searches
        sub-folders). Zarr stores (folders ending in ``.zarr``) count as recordings.
    center : str, optional
        The reference recording of stage 2: a file name, a stem or a path. Default: the middle
        one in sorted order (MATLAB's ``ceil(n / 2)``, 1-based: index ``(n - 1) // 2``).
    output_root : path, default "compensated_outputs"
        Folder of the per-recording outputs (``<output_root>/<stem>/``), relative to ``root``
        unless absolute.
    final_results : path, default "final_results"
        Folder of the session outputs of stage 3, relative to ``root`` unless absolute.
    resume : bool, default True
        Skip what verified outputs show done and continue interrupted recordings; False redoes
        everything.
    scheduler : {"local", "array", "dask"}, default "local"
        Where stage 1 runs: here (one recording after the other, frames in parallel), one
        recording per array-job task, or on a Dask cluster.
    n_workers : int, default -1
        Stage-1 workers (``-1``: all cores). Passed to the executor as ``n_jobs``.
    stage1_executor : str, optional
        Executor of stage 1 (``"sequential"``, ``"threading"``, ``"multiprocessing"``,
        ``"dask"``, ...). Default: ``"dask"`` with ``scheduler="dask"``, else the best available.
    flow_backend : str, default "flowreg"
        Flow backend of both stages (``"flowreg"``, ``"flowreg_torch"``, ``"flowreg_cuda"``).
    backend_params : dict
        Keyword options of the flow backend, e.g. ``{"device": "cuda:0"}``.
    flow_options : dict or path, optional
        Stage-1 ``OFOptions`` values (a TOML table / YAML mapping), or a saved options file
        (``.json``, ``.toml``, ``.yaml`` or MATLAB ``.mat``, read with
        ``OFOptions.load_options``). The session sets the input, output folder, output file
        (``compensated.hdf5``) and ``save_valid_idx=True`` itself.
    stage1_quality_setting : {"quality", "balanced", "fast"}, optional
        Quality preset of stage 1; overrides ``flow_options``' ``quality_setting``.
    cc_upsample : int, default 4
        Up-sampling factor of stage 2's phase correlation (1: whole pixels).
    sigma_smooth : float, default 6.0
        Gaussian sigma (px) of the temporal means in stage 2's first (coarsest) alignment
        pass; the following passes halve it down to 1 px (:mod:`pyflowreg.session.between`).
    alpha_between : float, default 25.0
        Smoothness weight of stage 2's flow (isotropic).
    iterations_between : int, default 100
        Solver iterations per pyramid level of stage 2.
    stage2_constancy_assumption : {"gc", "gray", "cs"}, default "gc"
        Data term of stage 2 (aliases ``"gradient"``, ``"brightness"``, ``"census"``).
    align_chunk_size : int, default 64
        Frames per chunk when stage 3 reprojects a video into the centre's frame.
    align_output_format : str, default "TIFF"
        Format of stage 3's ``aligned_<recording>.<ext>`` videos (an ``OFOptions``
        ``output_format``: ``"TIFF"``, ``"HDF5"``, ``"NPY"``, ``"ZARR"``, ``"MAT"``).
    save_aligned : bool, default False
        Let stage 3 write the reprojected videos ``aligned_<recording>.<ext>``.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    root: Path
    pattern: str = "*.tif"
    center: str | None = None
    output_root: Path = Path("compensated_outputs")
    final_results: Path = Path("final_results")
    resume: bool = True
    scheduler: Literal["local", "array", "dask"] = "local"
    n_workers: int = -1
    stage1_executor: str | None = None
    flow_backend: str = "flowreg"
    backend_params: dict[str, Any] = Field(default_factory=dict)
    flow_options: dict[str, Any] | Path | None = None
    stage1_quality_setting: Literal["quality", "balanced", "fast"] | None = None
    cc_upsample: int = 4
    sigma_smooth: float = 6.0
    alpha_between: float = 25.0
    iterations_between: int = 100
    stage2_constancy_assumption: Literal["gc", "gray", "cs"] = "gc"
    align_chunk_size: int = 64
    align_output_format: str = "TIFF"
    save_aligned: bool = False

    # ------------------------------------------------------------------ validation

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in data:
                if key not in cls.model_fields:
                    close = difflib.get_close_matches(str(key), list(cls.model_fields), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(f"unknown session setting {key!r}{hint}")
        return data

    @field_validator("root", mode="before")
    @classmethod
    def _check_root(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("root must name the folder of the recordings, got ''")
        return value

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("pattern must not be empty")
        if Path(value).is_absolute():
            raise ValueError(f"pattern must be relative to root, got {value!r}")
        return value

    @field_validator("center", mode="before")
    @classmethod
    def _check_center(cls, value: Any) -> Any:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str) and not value.strip():
            return None  # an empty form field
        return value

    @field_validator("n_workers")
    @classmethod
    def _check_workers(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError(f"n_workers must be -1 (all cores) or >= 1, got {value}")
        return value

    @field_validator("stage1_executor", "flow_backend")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a non-empty name")
        return value

    @field_validator("stage2_constancy_assumption", mode="before")
    @classmethod
    def _constancy_alias(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return CONSTANCY_ALIASES.get(value, value)
        return value

    @field_validator("stage1_quality_setting", mode="before")
    @classmethod
    def _quality_lower(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return value or None
        return value

    @field_validator("cc_upsample", "iterations_between", "align_chunk_size")
    @classmethod
    def _check_positive_int(cls, value: int, info) -> int:
        if value < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {value}")
        return value

    @field_validator("sigma_smooth")
    @classmethod
    def _check_sigma(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"sigma_smooth must be finite and >= 0, got {value}")
        return value

    @field_validator("alpha_between")
    @classmethod
    def _check_alpha(cls, value: float) -> float:
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"alpha_between must be finite and > 0, got {value}")
        return value

    @field_validator("align_output_format")
    @classmethod
    def _check_align_format(cls, value: str) -> str:
        from ..motion_correction._option_checks import OUTPUT_EXTENSIONS

        fmt = value.strip().upper()
        allowed = [f for f, ext in OUTPUT_EXTENSIONS.items() if ext]
        if fmt not in allowed:
            raise ValueError(f"align_output_format must be one of {allowed}, got {value!r}")
        return fmt

    @field_validator("backend_params")
    @classmethod
    def _check_backend_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"backend_params must hold only plain values (str, numbers, lists, dicts): {exc}"
            ) from None
        return value

    @field_validator("flow_options", mode="before")
    @classmethod
    def _check_flow_options(cls, value: Any) -> Any:
        if isinstance(value, str):
            return Path(value) if value.strip() else None
        if isinstance(value, Mapping):
            from ..motion_correction import OFOptions

            data = dict(value)
            try:
                OFOptions(**data)  # every key and value checked now, not when stage 1 starts
            except ValidationError as exc:
                raise ValueError(_first_error(exc)) from None
            return data
        return value

    # ------------------------------------------------------------------ files

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> SessionConfig:
        """Load a TOML config file (relative paths as described in the module docstring)."""
        return cls._from_path(Path(path), "toml")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> SessionConfig:
        """Load a YAML config file (relative paths as described in the module docstring)."""
        return cls._from_path(Path(path), "yaml")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> SessionConfig:
        """Load a config file, TOML (``.toml``) or YAML (``.yaml``, ``.yml``) by extension.

        Raises
        ------
        FileNotFoundError
            The file does not exist.
        SessionConfigError
            (a ``ValueError``) Unknown extension, unreadable file, or bad values: the message
            names the file and every bad key.
        """
        path = Path(path)
        kind = CONFIG_FORMATS.get(path.suffix.lower())
        if kind is None:
            raise SessionConfigError(
                f"session config {path} must end in one of {sorted(CONFIG_FORMATS)}"
            )
        return cls._from_path(path, kind)

    @classmethod
    def _from_path(cls, path: Path, kind: str) -> SessionConfig:
        if not path.is_file():
            raise FileNotFoundError(f"session config not found: {path}")
        data = _read_mapping(path, kind)
        base = path.resolve().parent
        if "root" not in data:
            raise SessionConfigError(f"{path}: the required setting 'root' is missing")
        if isinstance(data.get("root"), str):
            data["root"] = str(_under(base, data["root"]))
        options_file = data.get("flow_options")
        if isinstance(options_file, str) and options_file.strip():
            data["flow_options"] = str(_options_file(options_file, base, data["root"]))
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SessionConfigError(f"{path}: {describe_errors(exc)}") from exc

    def save(self, path: str | os.PathLike) -> Path:
        """Write the config to ``.toml`` or ``.yaml``/``.yml`` (by extension).

        A relative ``root`` (or ``flow_options`` file), relative to the working directory here,
        is written absolute, so that the file means the same wherever it is loaded from; the
        rest is written as it is, and loads back equal. Unset optional values (None) are left
        out of TOML, which has no null.
        """
        path = Path(path)
        kind = CONFIG_FORMATS.get(path.suffix.lower())
        if kind is None:
            raise SessionConfigError(
                f"session config {path} must end in one of {sorted(CONFIG_FORMATS)}"
            )
        data = self.model_dump(mode="json")
        data["root"] = str(self.root_path())
        if isinstance(self.flow_options, Path):
            data["flow_options"] = os.path.abspath(self.flow_options.expanduser())
        if kind == "toml":
            import tomli_w

            text = tomli_w.dumps({k: v for k, v in data.items() if v is not None})
        else:
            import yaml

            text = yaml.safe_dump(data, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    # ------------------------------------------------------------------ derived values

    def resolve_output_paths(self) -> SessionPaths:
        """The absolute ``output_root`` and ``final_results`` (relative ones under ``root``).

        Nothing is created; see :class:`SessionPaths`.
        """
        root = self.root_path()
        return SessionPaths(
            _under(root, self.output_root).resolve(), _under(root, self.final_results).resolve()
        )

    def root_path(self) -> Path:
        """``root``, absolute (``~`` expanded)."""
        return Path(os.path.abspath(self.root.expanduser()))

    def output_folder(self, input_file: str | os.PathLike) -> Path:
        """The output folder of one recording: ``<output_root>/<recording stem>``."""
        return self.resolve_output_paths().output_root / recording_name(Path(input_file))

    def resolve_center_file(self, input_files: Sequence[Path] | None = None) -> Path:
        """The centre (reference) recording of stage 2 among ``input_files``.

        ``center`` may be a file name, a stem or a path; without it, the middle recording in
        sorted order. ``input_files`` defaults to :func:`discover_input_files`.
        """
        files = list(discover_input_files(self) if input_files is None else input_files)
        return files[self.center_index(files)]

    def center_index(self, input_files: Sequence[Path]) -> int:
        """0-based index of the centre recording in ``input_files`` (see
        :meth:`resolve_center_file`)."""
        files = [Path(p) for p in input_files]
        if not files:
            raise ValueError(f"no recordings match pattern {self.pattern!r} in {self.root}")
        if self.center is None:
            return math.ceil(len(files) / 2) - 1
        wanted = Path(self.center).expanduser()
        candidates = [wanted] if wanted.is_absolute() else [self.root_path() / wanted]
        for i, path in enumerate(files):  # a path to one of them
            if any(_same_path(path, c) for c in candidates):
                return i
        for key in (lambda p: p.name, lambda p: recording_name(p)):  # a name, then a stem
            hits = [i for i, p in enumerate(files) if key(p) == wanted.name]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                names = [files[i].name for i in hits]
                raise ValueError(f"center {self.center!r} matches several recordings: {names}")
        names = [p.name for p in files]
        raise ValueError(f"center {self.center!r} is none of the recordings {names}")

    def stage1_options(self, of_options_override: Mapping[str, Any] | None = None) -> OFOptions:
        """The stage-1 ``OFOptions`` common to every recording (input and output not set).

        Precedence, lowest first: ``flow_options`` (mapping or file), this config's
        ``flow_backend`` / ``backend_params`` (when set here or not in ``flow_options``),
        ``stage1_quality_setting``, then ``of_options_override``.
        """
        from ..motion_correction import OFOptions

        source = self.flow_options
        if isinstance(source, Path):
            path = source.expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"flow_options file not found: {path}")
            try:
                base = OFOptions.load_options(path)
            except ValidationError as exc:
                raise SessionConfigError(f"flow_options file {path}: {_first_error(exc)}") from exc
            given = set(base.model_fields_set)  # what the file sets; defaults stay defaults
            values = {k: getattr(base, k) for k in given}
        else:
            values = dict(source or {})
            given = set(values)
        for key in ("flow_backend", "backend_params"):
            if key in self.model_fields_set or key not in given:
                values[key] = getattr(self, key)
        if self.stage1_quality_setting is not None:
            values["quality_setting"] = self.stage1_quality_setting
        values.update(of_options_override or {})
        try:
            return OFOptions(**values)
        except ValidationError as exc:
            raise SessionConfigError(f"stage-1 options: {_first_error(exc)}") from exc

    def registration_config(self, verbose: bool = False) -> RegistrationConfig:
        """The ``RegistrationConfig`` of stage 1: executor from ``stage1_executor`` (or
        ``"dask"`` with ``scheduler="dask"``, else the best available), ``n_jobs=n_workers``."""
        from ..motion_correction.compensate_recording import RegistrationConfig

        executor = self.stage1_executor
        if executor is None and self.scheduler == "dask":
            executor = "dask"
        return RegistrationConfig(n_jobs=self.n_workers, verbose=verbose, parallelization=executor)

    def stage2_parameters(self) -> dict[str, Any]:
        """The settings stage 2's results depend on (hash them with :func:`options_hash`)."""
        return {
            "cc_upsample": self.cc_upsample,
            "sigma_smooth": self.sigma_smooth,
            "alpha_between": self.alpha_between,
            "iterations_between": self.iterations_between,
            "stage2_constancy_assumption": self.stage2_constancy_assumption,
            "flow_backend": self.flow_backend,
        }

    def stage3_parameters(self) -> dict[str, Any]:
        """The settings stage 3's results depend on (hash them with :func:`options_hash`)."""
        return {
            "align_output_format": self.align_output_format,
            "save_aligned": self.save_aligned,
        }


# ---------------------------------------------------------------------- discovery


def recording_name(path: Path) -> str:
    """Name of a recording's output folder: the file name without its extension."""
    return Path(path).stem


def _natural_key(path: Path) -> list:
    parts = re.split(r"(\d+)", path.name)
    return [(0, int(p), p) if p.isdigit() else (1, p.lower(), p) for p in parts]


def discover_input_files(config: SessionConfig) -> list[Path]:
    """The recordings of a session: ``pattern`` matched under ``root``, in natural order.

    Natural order sorts the digits in names as numbers (``rec_2`` before ``rec_10``); it is the
    plain sorted order when numbers are zero-padded. Hidden files, and files inside the
    session's output folders (``output_root``, ``final_results``, any folder holding a session
    ``status.json``) are left out.

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder, or nothing matches ``pattern``.
    ValueError
        Two recordings would share an output folder (same name, different extensions).
    """
    root = config.root_path()
    if not root.is_dir():
        raise FileNotFoundError(f"session root is not a folder: {root}")
    real_root = root.resolve()
    # output folders that do not hold the recordings themselves (output_root may be root)
    outputs = [o for o in config.resolve_output_paths() if not _inside(real_root, o)]
    found = []
    for path in root.glob(config.pattern):
        if path.name.startswith(".") or (
            path.is_dir() and path.suffix.lower() not in FOLDER_RECORDINGS
        ):
            continue
        resolved = path.resolve()
        if any(_inside(resolved, out) for out in outputs) or _in_session_output(
            resolved, real_root
        ):
            continue
        found.append(path)
    if not found:
        raise FileNotFoundError(f"no recordings match pattern {config.pattern!r} in {root}")
    found.sort(key=_natural_key)
    seen: dict[str, Path] = {}
    for path in found:
        name = recording_name(path)
        if name in seen:
            raise ValueError(
                f"recordings {seen[name].name} and {path.name} would share the output folder "
                f"{name!r}; narrow pattern {config.pattern!r}"
            )
        seen[name] = path
    return found


# ---------------------------------------------------------------------- array jobs


def get_array_task_id(environ: Mapping[str, str] | None = None) -> int | None:
    """The task id of an array job as the scheduler gives it, or None outside one.

    Reads ``SLURM_ARRAY_TASK_ID``, then ``SGE_TASK_ID``, then ``PBS_ARRAY_INDEX`` (SGE sets
    ``"undefined"`` outside array jobs: skipped). The id is returned unchanged; schedulers
    number tasks from 1 by convention (``#SBATCH --array=1-N``), and
    :func:`array_task_index` turns it into a 0-based recording index.

    Raises
    ------
    ValueError
        The variable holds something other than an integer.
    """
    env = os.environ if environ is None else environ
    for name in ARRAY_TASK_VARIABLES:
        raw = env.get(name)
        if raw is None or not raw.strip() or raw.strip().lower() == "undefined":
            continue
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name} must be an integer task id, got {raw!r}") from None
    return None


def array_task_index(environ: Mapping[str, str] | None = None) -> int | None:
    """The 0-based recording index of this array-job task, or None outside an array job.

    Task ids are 1-based (PyFlowReg's and MATLAB's convention, ``--array=1-N``): task 1
    processes the first recording. A SLURM array that starts at 0 (``SLURM_ARRAY_TASK_MIN=0``,
    ``--array=0-(N-1)``) is taken as 0-based.

    Raises
    ------
    ValueError
        A task id below the array's first index (e.g. ``PBS_ARRAY_INDEX=0``: submit 1-based).
    """
    env = os.environ if environ is None else environ
    task = get_array_task_id(env)
    if task is None:
        return None
    base = 0 if str(env.get("SLURM_ARRAY_TASK_MIN", "")).strip() == "0" else 1
    if "SLURM_ARRAY_TASK_ID" not in env:
        base = 1
    if task < base:
        raise ValueError(
            f"array task id {task} is below 1: array tasks are numbered from 1 "
            "(e.g. #SBATCH --array=1-N, qsub -t 1-N, qsub -J 1-N)"
        )
    return task - base


# ---------------------------------------------------------------------- helpers


def options_hash(values: Any) -> str:
    """SHA-256 of a JSON-able mapping (keys sorted; Paths and enums as strings)."""
    text = json.dumps(values, sort_keys=True, default=_plain_json)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain_json(value: Any) -> Any:
    if hasattr(value, "value") and not isinstance(value, (int, float)):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def describe_errors(exc: ValidationError) -> str:
    """One line naming every bad key of a ``ValidationError`` and what is wrong with it."""
    parts = []
    for err in exc.errors():
        msg = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
        loc = [str(x) for x in err.get("loc", ())]
        # a union's branch names ("dict[str,any]", "function-after[...]") are not keys
        keys = [x for x in loc if x in SessionConfig.model_fields or not _branch_name(x)]
        key = ".".join(keys[:1] + [x for x in keys[1:] if x not in SessionConfig.model_fields])
        given = err.get("input")
        shown = "" if isinstance(given, Mapping) or "unknown session setting" in msg else given
        value = f" (got {shown!r})" if shown not in ("", None) and repr(shown) not in msg else ""
        parts.append(f"{key}: {msg}{value}" if key and key not in msg else f"{msg}{value}")
    return "; ".join(parts)


def _branch_name(text: str) -> bool:
    return "[" in text or text in ("is-instance", "lax-or-strict", "json-or-python")


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)
    err = errors[0]
    msg = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
    loc = ".".join(str(x) for x in err.get("loc", ()))
    return msg if not loc or loc in msg else f"{loc}: {msg}"


def _read_mapping(path: Path, kind: str) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if kind == "toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SessionConfigError(f"{path} is not valid TOML: {exc}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SessionConfigError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SessionConfigError(
            f"{path} must hold a mapping of settings, got {type(data).__name__}"
        )
    return data


def _under(base: Path, value: str | os.PathLike) -> Path:
    path = Path(value).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _options_file(value: str, config_dir: Path, root: Any) -> Path:
    """A relative ``flow_options`` file: next to the config file, else under ``root``."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    beside = Path(os.path.normpath(config_dir / path))
    if not beside.exists() and isinstance(root, str):
        under_root = _under(config_dir, root) / path
        if under_root.exists():
            return under_root
    return beside


def _in_session_output(path: Path, root: Path) -> bool:
    """Whether a folder between ``root`` (excluded) and ``path`` holds a session status."""
    folder = path.parent
    while folder != root and _inside(folder, root):
        if (folder / STATUS_FILE).is_file():
            return True
        folder = folder.parent
    return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
