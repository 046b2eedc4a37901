"""``docs/sessions.md`` stays true: its table of keys is ``SessionConfig.model_fields`` (names,
types, defaults), its TOML config validates, every command line it shows parses with the real
``pyflowreg`` parser, its SLURM script is what ``pyflowreg session jobscript`` writes, and its
links resolve."""

from __future__ import annotations

import re
import shlex
import typing
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pyflowreg.cli import build_parser
from pyflowreg.session import SessionConfig
from pyflowreg.session.cli import translate_argv
from pyflowreg.session.jobscript import make_jobscripts

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

PAGE = Path(__file__).resolve().parents[1] / "docs" / "sessions.md"
TEXT = PAGE.read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", TEXT, re.S)


def _table() -> dict[str, list[str]]:
    section = TEXT.split("### Every key", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        match = re.fullmatch(r"`(\w+)`", cells[0]) if len(cells) == 4 else None
        if match:
            rows[match.group(1)] = cells[1:]
    return rows


def _type_text(annotation) -> str:
    """How the table writes a field's type."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return ", ".join(f'`"{a}"`' for a in args)
    if args and typing.get_origin(args[0]) is typing.Literal:  # Optional[Literal[...]]
        return _type_text(args[0])
    names = {Path: "path", str: "str", bool: "bool", int: "int", float: "float", dict: "table"}
    if annotation in names or origin in names:
        return names[origin or annotation]
    parts = [names.get(typing.get_origin(a) or a) for a in args]
    return " or ".join(p for p in parts if p) if parts else names[origin]


def _default_text(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (str, Path)):
        return f'`"{value}"`'
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


def test_key_table_is_the_model():
    table = _table()
    assert list(table) == list(SessionConfig.model_fields)
    for name, field in SessionConfig.model_fields.items():
        type_text, default, meaning = table[name]
        assert type_text == _type_text(field.annotation), name
        assert default == _default_text(field), name
        assert meaning.endswith("."), name


def test_config_example_validates():
    [example] = [b for b in _blocks("toml") if "[flow_options]" in b]
    config = SessionConfig.model_validate(tomllib.loads(example))
    assert config.pattern == "day_*.tif" and config.flow_options["buffer_size"] == 500


def _command_lines() -> list[list[str]]:
    lines = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if re.match(r"pyflowreg(-session)? ", line):
                lines.append(shlex.split(line))
    return lines


def test_every_command_line_parses():
    parser = build_parser()
    commands = _command_lines()
    seen = set()
    for words in commands:
        if words[0] == "pyflowreg-session":
            argv = ["session", *translate_argv(words[1:])]
        else:
            argv = words[1:]
        parser.parse_args(argv)  # a wrong option exits with status 2
        seen.add(" ".join(argv[:2]) if argv[0] == "session" else argv[0])
    assert {"session run", "session status", "session jobscript", "session dask", "report"} <= seen


def test_slurm_example_is_what_jobscript_writes(tmp_path):
    root = tmp_path / "mouse1"
    root.mkdir()
    for day in (1, 2, 3):
        tifffile.imwrite(root / f"day_0{day}.tif", np.zeros((2, 8, 8), np.uint16))
    config_file = root / "session.toml"
    config_file.write_text(f'root = "{root}"\npattern = "day_*.tif"\n')
    [example] = [b for b in _blocks("bash") if b.startswith("#!/bin/bash\n#SBATCH")]
    python = "python"  # the --python of the documented command: the venv --setup activates
    scripts = make_jobscripts(
        config_file,
        "slurm",
        time="04:00:00",
        mem="32G",
        cpus=8,
        partition="compute",
        max_parallel=10,
        setup=["source ~/venvs/flowreg/bin/activate"],
        python=python,
    )
    assert scripts.stage1.replace(str(root), "/data/mouse1") == example


def test_links_resolve():
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", TEXT)
    local = [t for t in targets if "://" not in t]
    assert "dask.md" in local
    missing = [t for t in local if not (PAGE.parent / t).exists()]
    assert not missing, missing


@pytest.mark.parametrize("name", ["README.md", "CHANGELOG.md"])
def test_page_is_linked(name):
    text = (PAGE.parents[1] / name).read_text(encoding="utf-8")
    assert "docs/sessions.md" in text


def test_claim_timing_is_the_code():
    from pyflowreg.session._status import STALE_AFTER

    assert f"after {STALE_AFTER:.0f} s without a heartbeat" in TEXT
