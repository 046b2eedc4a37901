"""PyFlowReg's documented option vocabulary, mapped onto :class:`OFOptions`.

The enums of ``pyflowreg.motion_correction.OF_options`` (string enums: a member equals its
value, ``OutputFormat.HDF5 == "HDF5"``), the checks of the options PyFlowReg documents on
top of ours (``min_level=-1``, ``cc_up``, ``output_typename``, ``save_valid_idx``,
``n_references``, ``min_frames_per_reference``, ``naming_convention``, ``cc_hw`` as an
``(H, W)`` pair, the constancy names ``"gradient"`` / ``"brightness"``), and the reading
of options files written by PyFlowReg (JSON) and by the MATLAB Flow-Registration toolbox
(a ``.mat`` struct, 1-based frame indices).
"""

from __future__ import annotations

from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ._option_checks import OUTPUT_EXTENSIONS, _boolean, _check_input_file, _choice, _integer


class _ValueEnum(str, Enum):
    """A string enum whose members print, format and compare as their values."""

    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def _missing_(cls, value: object) -> _ValueEnum | None:
        if isinstance(value, str):  # case-insensitive, by value or name ("OutputFormat.HDF5")
            value = value.rsplit(".", 1)[-1]
            for member in cls:
                if value.lower() in (member.value.lower(), member.name.lower()):
                    return member
        return None


#: Output formats of the registered video; one member per format ``OFOptions`` accepts.
OutputFormat = _ValueEnum("OutputFormat", {name: name for name in OUTPUT_EXTENSIONS})
OutputFormat.__doc__ = (
    "Output format of the registered video (``OFOptions.output_format``); a member equals "
    'its name: ``OutputFormat.HDF5 == "HDF5"``.'
)


class QualitySetting(_ValueEnum):
    """Finest pyramid level: ``QUALITY`` 0, ``BALANCED`` 4, ``FAST`` 6, ``CUSTOM`` ``min_level``."""

    QUALITY = "quality"
    BALANCED = "balanced"
    FAST = "fast"
    CUSTOM = "custom"


class ChannelNormalization(_ValueEnum):
    """Intensity scaling by the reference's min/max: all channels together, or each alone."""

    JOINT = "joint"
    SEPARATE = "separate"


class InterpolationMethod(_ValueEnum):
    """Interpolation of the final warp of the raw frames (docs/numerics.md compares them)."""

    CUBIC = "cubic"
    LINEAR = "linear"
    NEAREST = "nearest"
    CATMULL_ROM = "catmull_rom"
    BSPLINE = "bspline"
    LANCZOS3 = "lanczos3"


class ConstancyAssumption(_ValueEnum):
    """Data term: gradient constancy (``GC``, alias ``GRADIENT``) or gray-value constancy
    (``GRAY``, alias ``BRIGHTNESS``)."""

    GC = "gc"
    GRAY = "gray"
    GRADIENT = "gc"
    BRIGHTNESS = "gray"


#: Option name -> enum its values are stored as.
ENUM_FIELDS: dict[str, type[_ValueEnum]] = {
    "output_format": OutputFormat,
    "quality_setting": QualitySetting,
    "channel_normalization": ChannelNormalization,
    "interpolation_method": InterpolationMethod,
    "constancy_assumption": ConstancyAssumption,
}

#: ``output_typename`` tags (MATLAB class names and NumPy names) -> output dtype.
TYPENAMES: dict[str, str] = {
    "single": "float32",
    "double": "float64",
    "float32": "float32",
    "float64": "float64",
    "uint8": "uint8",
    "uint16": "uint16",
    "int16": "int16",
    "int32": "int32",
}

NAMING_CONVENTIONS = ("default", "batch")


def as_enum(name: str, value: Any) -> Any:
    """The enum member of a checked option value (other options unchanged)."""
    cls = ENUM_FIELDS.get(name)
    return value if cls is None or value is None else cls(value)


def plain_value(value: Any) -> Any:
    """An enum member as its string value (for files)."""
    return value.value if isinstance(value, Enum) else value


def is_reader(value: Any) -> bool:
    """Whether ``value`` is an open video reader (``pyflowreg.io`` / ``pyflowreg.util.io``)."""
    return all(hasattr(value, name) for name in ("read", "shape", "dtype", "spec"))


def _check_input_file_or_reader(value: Any) -> Any:
    if is_reader(value) and not isinstance(value, (str, Path, np.ndarray)):
        if len(value.shape) != 4:
            raise ValueError(f"input_file reader must have a (T, H, W, C) shape, got {value.shape}")
        return value
    return _check_input_file(value)


def _check_callable(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
    return value


def _check_min_level(value: Any) -> int:
    if value is None:
        return -1
    return _integer("min_level", value, -1)


def _check_constancy(value: Any) -> str:
    if isinstance(value, str) and value.lower() in ("cs", "census"):
        raise ValueError(
            f"constancy_assumption {value!r} (census) is not implemented in this package; "
            "use one of ['gc', 'gray'] (aliases 'gradient', 'brightness')"
        )
    aliases = {"gradient": "gc", "brightness": "gray"}
    if isinstance(value, str):
        value = aliases.get(value.lower(), value)
    return _choice("constancy_assumption", value, ("gc", "gray"))


def _check_cc_hw(value: Any) -> int | tuple[int, int]:
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != 2:
            raise ValueError(f"cc_hw must be an int or a pair (height, width), got {value!r}")
        return tuple(_integer(f"cc_hw[{i}]", v, 8) for i, v in enumerate(value))  # type: ignore[return-value]
    return _integer("cc_hw", value, 8)


def _check_output_typename(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value):
        return None  # MATLAB's '' : the input's dtype
    if not isinstance(value, str):
        value = np.dtype(value).name if isinstance(value, type) else value
    if not isinstance(value, str) or value.lower() not in TYPENAMES:
        raise ValueError(
            f"output_typename must be None, '' or one of {list(TYPENAMES)}, got {value!r}"
        )
    return value.lower()


def _check_n_references(value: Any) -> int:
    n = _integer("n_references", value, 1)
    if n > 1:
        raise ValueError(
            f"n_references must be 1, got {n}: registration to several references "
            "(PyFlowReg's multi-reference mode) is not supported; register the recording "
            "in parts with one reference each, or use update_reference=True"
        )
    return n


#: Checks of the options added for PyFlowReg compatibility (and of those whose accepted
#: values it widens); ``OFOptions`` consults these before ``_option_checks._CHECKS``.
COMPAT_CHECKS = {
    "input_file": _check_input_file_or_reader,
    "min_level": _check_min_level,
    "constancy_assumption": _check_constancy,
    "cc_hw": _check_cc_hw,
    "cc_up": partial(_integer, "cc_up", minimum=1),
    "output_typename": _check_output_typename,
    "save_valid_idx": partial(_boolean, "save_valid_idx"),
    "n_references": _check_n_references,
    "min_frames_per_reference": partial(_integer, "min_frames_per_reference", minimum=1),
    "naming_convention": partial(_choice, "naming_convention", choices=NAMING_CONVENTIONS),
    "get_displacement_factory": partial(_check_callable, "get_displacement_factory"),
    "get_displacement_impl": partial(_check_callable, "get_displacement_impl"),
}


# ----------------------------------------------------------------------------- files


def read_matlab_options(path: Path) -> dict[str, Any]:
    """The options of a MATLAB ``.mat`` options file as Python values.

    The file holds either one struct (any variable name; ``options`` preferred) whose
    fields are the options, or one variable per option. MATLAB's 1-based frame indices
    (``reference_frames``) become 0-based; ``''`` and ``[]`` become "not set".
    """
    from scipy.io import loadmat

    raw = loadmat(str(path), squeeze_me=True, struct_as_record=False, chars_as_strings=True)
    variables = {k: v for k, v in raw.items() if not k.startswith("__")}
    structs = {k: v for k, v in variables.items() if hasattr(v, "_fieldnames")}
    if (len(variables) == 1 and structs) or "options" in structs:
        struct = structs.get("options") or next(iter(structs.values()))
        variables = {name: getattr(struct, name) for name in struct._fieldnames}
    data: dict[str, Any] = {}
    for key, value in variables.items():
        value = _from_matlab(value)
        if value is None:
            continue
        if key == "reference_frames" and not isinstance(value, str):
            value = (np.atleast_1d(np.asarray(value, dtype=np.int64)) - 1).tolist()
        data[key] = value
    return data


def _from_matlab(value: Any) -> Any:
    if hasattr(value, "_fieldnames"):  # a nested struct, e.g. backend_params
        return {name: _from_matlab(getattr(value, name)) for name in value._fieldnames}
    if isinstance(value, str):
        return value or None
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return None
        if value.dtype.kind == "U":
            return [str(v) for v in value.ravel()]
        if value.dtype.kind == "O":
            return [_from_matlab(v) for v in value.ravel()]
        value = value.tolist()
        if isinstance(value, list):
            return value
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, np.floating, float, int)):
        number = value.item() if isinstance(value, np.generic) else value
        return int(number) if float(number).is_integer() else number
    return value
