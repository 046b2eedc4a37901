"""Options files: writing and reading the option mappings of ``OFOptions``.

``.json``, ``.toml`` and ``.yaml`` / ``.yml`` are written and read; ``.mat`` files (MATLAB
Flow-Registration options, see :func:`._compat.read_matlab_options`) are read. Keys that
are not options are either left to the constructor (which names the first) or skipped with
a warning naming them all (PyFlowReg's ``load_options``).
"""

from __future__ import annotations

import difflib
import json
import warnings
from pathlib import Path
from typing import Any

from ._compat import read_matlab_options
from ._option_checks import CONFIG_SUFFIXES


def config_suffix(path: Path) -> str:
    """The lower-case suffix of a writable options file, or ``ValueError``."""
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ValueError(
            f"options file must end in one of {list(CONFIG_SUFFIXES)}, got {path.name!r}"
        )
    return suffix


def write_options_file(path: Path, data: dict[str, Any]) -> Path:
    """Write plain option values to ``path`` in the format of its extension."""
    suffix = config_suffix(path)
    if suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    elif suffix == ".toml":
        try:
            import tomli_w
        except ImportError:
            raise ImportError("writing TOML options needs tomli_w: pip install tomli-w") from None
        # TOML has no null; every option that can be None defaults to None
        text = tomli_w.dumps({k: v for k, v in data.items() if v is not None})
    else:
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def _without_header(text: str) -> str:
    """JSON text without the title line PyFlowReg's ``save_options`` writes before the object
    (``Compensation options <date>``): lines before the first line that opens the object are
    dropped when they hold no JSON (no brace or bracket)."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.lstrip().startswith("{"):
            head = "".join(lines[:i])
            return text if any(c in head for c in "{}[]") else "".join(lines[i:])
    return text


def read_options_file(path: Path) -> dict[str, Any]:
    """The mapping of options held by ``path`` (by extension; ``.mat`` included)."""
    if path.suffix.lower() == ".mat":
        if not path.exists():
            raise FileNotFoundError(f"options file not found: {path}")
        return read_matlab_options(path)
    suffix = config_suffix(path)
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".json":
            data = json.loads(_without_header(text))
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
    return data


def known_options(
    data: dict[str, Any], fields: dict[str, Any], path: Path, unknown: str, stacklevel: int
) -> dict[str, Any]:
    """The keyword arguments of ``OFOptions`` from a file's mapping.

    ``unknown="raise"``: every key is kept (the constructor rejects the unknown ones);
    ``"warn"``: unknown keys are dropped with one warning naming them (and the option each
    may be a typo of). MATLAB logicals (0 / 1) of boolean options become ``bool``.
    """
    if unknown not in ("raise", "warn"):
        raise ValueError(f"unknown must be one of ['raise', 'warn'], got {unknown!r}")
    extra = sorted(str(k) for k in data if k not in fields)
    if extra and unknown == "raise":
        return dict(data)
    if extra:
        hints = []
        for key in extra:
            close = difflib.get_close_matches(key, fields, n=1)
            if close:
                hints.append(f"{key!r}: did you mean {close[0]!r}?")
        hint = f" ({'; '.join(hints)})" if hints else ""
        warnings.warn(
            f"options file {path} has keys that are not options of this package, "
            f"skipped: {extra}{hint}",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
    known = {k: v for k, v in data.items() if k in fields}
    for key, value in known.items():  # MATLAB logicals arrive as 0 / 1
        if fields[key].annotation is bool and value in (0, 1):
            known[key] = bool(value)
    return known
