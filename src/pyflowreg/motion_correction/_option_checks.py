"""Value checks of :class:`~pyflowreg.motion_correction.options.OFOptions`, one per option.

Each check takes the raw value and returns the normalised one, or raises ``ValueError`` /
``TypeError`` with a message that names the option, the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..core.params import QUALITY_PRESETS
from ..core.warp import METHODS as WARP_METHODS

OUTPUT_EXTENSIONS: dict[str, str] = {
    "HDF5": ".h5",
    "TIFF": ".tif",
    "MAT": ".mat",
    "NPY": ".npy",
    "ZARR": ".zarr",
    "ARRAY": "",
    "NULL": "",
}
#: Extensions of the default output names ``compensated.<FORMAT>``, as PyFlowReg names them
#: (``compensated.HDF5``); other formats use :data:`OUTPUT_EXTENSIONS`.
DEFAULT_NAME_EXTENSIONS: dict[str, str] = {"HDF5": ".HDF5", "TIFF": ".TIFF", "MAT": ".MAT"}
#: Formats whose runs write the displacement fields to ``w.h5`` (datasets ``u`` and ``v``,
#: ``(T, H, W)`` each), PyFlowReg's documented layout; other formats write ``w.<ext>``.
W_H5_FORMATS = ("HDF5", "TIFF", "MAT")
QUALITY_SETTINGS = (*QUALITY_PRESETS, "custom")
OUTPUT_DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64")
CONFIG_SUFFIXES = (".json", ".toml", ".yaml", ".yml")
DEFAULT_REFERENCE_FRAMES = range(50, 500)


# ---------------------------------------------------------------------------- checks


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _real(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if isinstance(value, (complex, np.complexfloating)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value}")
    return float(value)


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def _choice(name: str, value: Any, choices: tuple[str, ...], upper: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__} {value!r}")
    key = value.upper() if upper else value.lower()
    if key not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return key


def _path(name: str, value: Any) -> Path:
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{name} must not be an empty path, got {value!r}")
    if not isinstance(value, (str, Path)):
        raise TypeError(f"{name} must be a str or Path, got {type(value).__name__} {value!r}")
    return Path(value)


def _numeric_array(name: str, value: np.ndarray, ndims: tuple[int, ...]) -> np.ndarray:
    if value.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must be a numeric (integer or float) array, got dtype {value.dtype}"
        )
    if value.ndim not in ndims:
        raise ValueError(
            f"{name} array must have {' or '.join(map(str, ndims))} dimensions, "
            f"got shape {value.shape}"
        )
    if value.size == 0:
        raise ValueError(f"{name} array must not be empty, got shape {value.shape}")
    return value


def _int_sequence(name: str, values: Any) -> tuple[int, ...]:
    items = list(values)
    if not items:
        raise ValueError(f"{name} must not be empty")
    return tuple(_integer(f"{name}[{i}]", v, 0) for i, v in enumerate(items))


def _video_shape(array: np.ndarray) -> tuple[int, int, int, int]:
    """``(T, H, W, C)`` of an in-memory input: (H, W), (T, H, W) or (T, H, W, C)."""
    if array.ndim == 2:
        return (1, *array.shape, 1)
    if array.ndim == 3:
        return (*array.shape, 1)
    return array.shape  # type: ignore[return-value]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b)
        )
    return type(a) is type(b) and a == b


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a (validated) option value."""
    if isinstance(value, range):
        return {"start": value.start, "stop": value.stop, "step": value.step}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _ArraySummary:
    def __init__(self, array: np.ndarray) -> None:
        self.text = f"array(shape={array.shape}, dtype={array.dtype})"

    def __repr__(self) -> str:
        return self.text


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _fraction(name: str, value: Any, include_one: bool) -> float:
    x = _real(name, value)
    if not (0.0 < x <= 1.0 if include_one else 0.0 < x < 1.0):
        raise ValueError(f"{name} must be in (0, 1{']' if include_one else ')'}, got {value}")
    return x


def _check_input_file(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return _numeric_array("input_file", value, (2, 3, 4))
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("input_file must not be an empty list")
        return tuple(_path(f"input_file[{i}]", v) for i, v in enumerate(value))
    return _path("input_file", value)


def _check_alpha(value: Any) -> tuple[float, float] | str:
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        raise ValueError(f'alpha must be > 0, a pair (alpha_x, alpha_y) or "auto", got {value!r}')
    pair = value if isinstance(value, (list, tuple, np.ndarray)) else [value, value]
    if len(pair) != 2:
        raise ValueError(f"alpha must be a scalar or a pair (alpha_x, alpha_y), got {value}")
    alpha = tuple(_real("alpha", a) for a in pair)
    if min(alpha) <= 0:
        raise ValueError(f"alpha must be > 0, got {value}")
    return alpha  # type: ignore[return-value]


def _check_weight(value: Any) -> tuple[float, ...] | np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.ndim != 1:
        w = _numeric_array("weight", value, (2, 3)).astype(np.float64)
    elif isinstance(value, (list, tuple, np.ndarray)):
        w = np.array([_real(f"weight[{i}]", v) for i, v in enumerate(value)])
        if w.size == 0:
            raise ValueError("weight must not be empty")
    else:
        raise TypeError(
            "weight must be a list of channel weights or a (H, W) / (H, W, C) array, "
            f"got {type(value).__name__} {value!r}"
        )
    if not np.all(np.isfinite(w)) or w.min() < 0 or w.max() == 0:
        shown = value if w.ndim == 1 else f"an array with range [{w.min()}, {w.max()}]"
        raise ValueError(f"weight must be finite, >= 0 and not all zero, got {shown}")
    return tuple(float(x) for x in w) if w.ndim == 1 else w


def _check_sigma(value: Any) -> tuple[tuple[float, float, float], ...]:
    try:
        s = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"sigma must be numbers, got {value!r}") from None
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2 or s.shape[1] != 3 or s.shape[0] == 0:
        raise ValueError(
            "sigma must be a 3-vector (sigma_y, sigma_x, sigma_t) or a (C, 3) list, "
            f"got shape {np.shape(value)}"
        )
    if not np.all(np.isfinite(s)) or s.min() < 0:
        raise ValueError(f"sigma must be finite and >= 0, got {s.tolist()}")
    return tuple(tuple(float(x) for x in row) for row in s)  # type: ignore[return-value]


def _check_reference_frames(value: Any) -> Any:
    if isinstance(value, dict):  # how ranges are written to config files
        if set(value) - {"start", "stop", "step"} or "stop" not in value:
            raise ValueError(
                f"reference_frames as a mapping must be {{start, stop, step}}, got {value}"
            )
        start = _integer("reference_frames start", value.get("start", 0), 0)
        stop = _integer("reference_frames stop", value["stop"], 0)
        value = range(start, stop, _integer("reference_frames step", value.get("step", 1), 1))
    if isinstance(value, range):
        if len(value) == 0 or min(value) < 0:
            raise ValueError(f"reference_frames must be a non-empty range >= 0, got {value}")
        return value
    if isinstance(value, np.ndarray):
        if value.ndim == 1 and value.dtype.kind in "iu":
            return _int_sequence("reference_frames", value.tolist())
        image = _numeric_array("reference_frames", value, (2, 3))
        if not np.all(np.isfinite(image)):
            raise ValueError("reference_frames image must be finite")
        return image
    if isinstance(value, (list, tuple)):
        return _int_sequence("reference_frames", value)
    if isinstance(value, (str, Path)):
        return _path("reference_frames", value)
    raise TypeError(
        "reference_frames must be a range, a list of frame indices, a reference image "
        f"array or an image path, got {type(value).__name__} {value!r}"
    )


def _check_output_dtype(value: Any) -> str:
    try:
        name = np.dtype(value).name
    except TypeError:
        name = None
    if name not in OUTPUT_DTYPES:
        raise ValueError(
            f"output_dtype must be None or one of {list(OUTPUT_DTYPES)}, got {value!r}"
        )
    return name


def _check_flow_backend(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"flow_backend must be a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise ValueError(f"flow_backend must be a non-empty backend name, got {value!r}")
    return value


def _check_backend_params(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"backend_params must be a dict with str keys, got {value!r}")
    return dict(value)


def _check_dataset_name(value: Any) -> str | tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names:
        raise TypeError(f"dataset_name must be a str or a list of str, got {value!r}")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"dataset_name entries must be non-empty strings, got {value!r}")
    return value if isinstance(value, str) else tuple(names)


#: One check per option: normalises a value or raises ValueError / TypeError.
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "input_file": _check_input_file,
    "output_path": partial(_path, "output_path"),
    "output_format": partial(
        _choice, "output_format", choices=tuple(OUTPUT_EXTENSIONS), upper=True
    ),
    "output_file_name": _optional(lambda v: str(_path("output_file_name", v))),
    "quality_setting": partial(_choice, "quality_setting", choices=QUALITY_SETTINGS),
    "min_level": _optional(partial(_integer, "min_level", minimum=0)),
    "alpha": _check_alpha,
    "eta": partial(_fraction, "eta", include_one=False),
    "a_data": partial(_fraction, "a_data", include_one=True),
    "a_smooth": partial(_fraction, "a_smooth", include_one=True),
    "weight": _check_weight,
    "sigma": _check_sigma,
    "constancy_assumption": partial(_choice, "constancy_assumption", choices=("gc", "gray")),
    "reference_frames": _check_reference_frames,
    "cc_hw": partial(_integer, "cc_hw", minimum=8),
    "channel_normalization": partial(
        _choice, "channel_normalization", choices=("joint", "separate")
    ),
    "interpolation_method": partial(_choice, "interpolation_method", choices=tuple(WARP_METHODS)),
    "output_dtype": _optional(_check_output_dtype),
    "flow_backend": _check_flow_backend,
    "backend_params": _check_backend_params,
    "dataset_name": _optional(_check_dataset_name),
}
for _name in ("levels", "iterations", "update_lag", "buffer_size", "bin_size"):
    _CHECKS[_name] = partial(_integer, _name, minimum=1)
for _name in (
    "update_reference",
    "update_initialization_w",
    "cc_initialization",
    "save_w",
    "save_meta_info",
    "save_valid_mask",
    "verbose",
):
    _CHECKS[_name] = partial(_boolean, _name)


# ---------------------------------------------------------------------------- model
