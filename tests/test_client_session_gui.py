"""The session GUI (``pyflowreg-session-gui`` on the package index) against this package, headless.

Skipped unless the client is installed; install it without its dependencies, so that it
cannot replace this package by PyFlowReg (its ``pyflowreg`` requirement) nor pull in Qt::

    pip install --no-deps pyflowreg-session-gui

Its Qt-free modules (``model_utils``, ``config_io``, ``serialization``, ``pyflowreg_api``,
``state``, ``remote_runner``) are called as the GUI calls them: the form reads
``SessionConfig.model_fields``, builds and copies configs, writes YAML and loads it back with
``SessionConfig.from_file``, lists the recordings; the generated SLURM scripts' Python is run
in-process with the array task id set. The local runner (``local_runner``, which imports
``PySide6.QtCore``) is loaded with a stand-in for ``QProcess`` that records the program and
arguments it would start; that command then runs in a subprocess, as the GUI would run it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import tifffile
from pydantic import ValidationError

gui = pytest.importorskip("pyflowreg_session_gui")

from pyflowreg_session_gui import (  # noqa: E402
    config_io,
    model_utils,
    pyflowreg_api,
    remote_runner,
    state,
)

import pyflowreg  # noqa: E402
from pyflowreg.datasets import make_recording  # noqa: E402
from pyflowreg.session import SessionConfig  # noqa: E402
from pyflowreg.session._status import verify_stage  # noqa: E402
from pyflowreg.session.stage1_compensate import discover_input_files  # noqa: E402

NAMES = ("rec_000", "rec_001", "rec_002")
N_FRAMES, SHAPE = 12, (48, 64)
VALUES = {
    "pattern": "rec_*.tif",
    "stage1_executor": "sequential",
    "iterations_between": 20,
    "flow_options": {"quality_setting": "fast", "buffer_size": 4, "save_meta_info": False},
}


def test_the_client_uses_this_package():
    assert Path(pyflowreg.__file__).resolve().parent == (
        Path(__file__).resolve().parents[1] / "src" / "pyflowreg"
    )
    assert pyflowreg_api.get_session_config_class() is SessionConfig


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for i, name in enumerate(NAMES):
        rec = make_recording(N_FRAMES, SHAPE, seed=30 + i, max_rigid=3.0, max_nonrigid=1.0)
        video = np.clip(rec.video[..., 0] * 1000.0, 0, 65535).astype(np.uint16)
        tifffile.imwrite(root / f"{name}.tif", video)
    return root


def _form_config(root: Path) -> SessionConfig:
    """A config as the GUI's form builds it from its widgets' values."""
    return model_utils.build_model(SessionConfig, {"root": str(root), **VALUES})


def test_form_model_functions(root):
    specs = model_utils.iter_model_fields(SessionConfig)
    assert [s.name for s in specs] == list(SessionConfig.model_fields)
    by_name = {s.name: s for s in specs}
    assert by_name["root"].required and not by_name["pattern"].required
    for name, field in SessionConfig.model_fields.items():
        assert by_name[name].annotation == field.annotation, name
        if not field.is_required() and field.default_factory is None:
            assert by_name[name].default == field.default, name

    config = _form_config(root)
    assert isinstance(config, SessionConfig) and config.root == root
    assert model_utils.model_to_dict(config) == config.model_dump(mode="python")
    copy = model_utils.deep_copy_model(config)
    assert copy == config and copy is not config
    copy.flow_options["buffer_size"] = 8
    assert config.flow_options["buffer_size"] == 4  # nothing shared
    with pytest.raises(ValidationError, match="alpha_between"):
        model_utils.build_model(SessionConfig, {"root": str(root), "alpha_between": -1.0})
    with pytest.raises(ValidationError, match="unknown session setting 'patern'"):
        model_utils.build_model(SessionConfig, {"root": str(root), "patern": "*.tif"})


def test_yaml_written_by_the_gui_loads_back(root, tmp_path):
    config = _form_config(root).model_copy(
        update={"output_root": root / "outputs", "center": "rec_002.tif"}
    )
    path = tmp_path / "gui_session.yaml"
    config_io.save_config_to_yaml(config, path)
    loaded = SessionConfig.from_file(path)
    assert loaded.resolve_output_paths() == config.resolve_output_paths()
    assert loaded.resolve_output_paths().output_root == root / "outputs"
    assert loaded.model_dump(exclude={"output_root"}) == config.model_dump(exclude={"output_root"})
    assert config_io.load_config_from_file(path).resolve_output_paths() == (
        config.resolve_output_paths()
    )
    assert pyflowreg_api.load_session_config(path).center == "rec_002.tif"
    assert pyflowreg_api.discover_input_files_for_config(loaded) == discover_input_files(loaded)
    assert [p.name for p in discover_input_files(loaded)] == [f"{n}.tif" for n in NAMES]
    assert loaded.resolve_center_file().name == "rec_002.tif"


def _heredoc(script: str) -> str:
    """The Python between ``python - <<'PY'`` and ``PY`` of a generated batch script."""
    match = re.search(r"<<'PY'\n(.*?)\nPY\n", script, re.S)
    assert match, script
    return match.group(1)


def test_generated_slurm_scripts_run(root, tmp_path, monkeypatch, capsys):
    """The GUI's remote run: stage-1 array script (1-based task ids) and the dependent
    stages 2-3 script, their Python run here in the folder of the uploaded config."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config_io.save_config_to_yaml(_form_config(root), run_dir / "session_config.yaml")
    profile = state.RemoteProfile()
    stage1 = remote_runner.generate_stage1_sbatch_script("session_config.yaml", 3, profile)
    stages23 = remote_runner.generate_stage23_sbatch_script("session_config.yaml", "4242", profile)
    assert "#SBATCH --array=1-3" in stage1
    assert "#SBATCH --dependency=afterok:4242" in stages23

    monkeypatch.chdir(run_dir)
    outputs = root / "compensated_outputs"
    for task in (3, 1, 2, 4):  # task 4: more tasks than recordings, skipped
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        exec(compile(_heredoc(stage1), "stage1.slurm", "exec"), {"__name__": "__main__"})
        if task <= 3:
            assert verify_stage(outputs / NAMES[task - 1], "stage1") == []
    assert "Skipping task 3: only 3 files discovered." in capsys.readouterr().out
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    exec(compile(_heredoc(stages23), "stages23.slurm", "exec"), {"__name__": "__main__"})
    with np.load(root / "final_results" / "final_valid_idx.npz") as data:
        assert int(data["middle_idx"]) == 1
        assert data["final_valid"].shape == SHAPE and data["final_valid"].any()
    for name in NAMES:
        assert verify_stage(outputs / name, "stage2") == []


class _Signal:
    """Stand-in for a bound Qt signal."""

    def __init__(self) -> None:
        self.slots: list = []

    def connect(self, slot) -> None:
        self.slots.append(slot)

    def emit(self, *args) -> None:
        for slot in self.slots:
            slot(*args)


class _SignalDescriptor:
    def __init__(self, *types_) -> None:
        self.name = ""

    def __set_name__(self, owner, name) -> None:
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return obj.__dict__.setdefault(f"_signal_{self.name}", _Signal())


class _QObject:
    def __init__(self, parent=None) -> None:
        self._parent = parent


class _QProcess(_QObject):
    """Records what the runner would start; starting always succeeds."""

    started: ClassVar[list[tuple[str, list[str]]]] = []
    NotRunning, Running = 0, 2

    class ExitStatus:
        NormalExit = 0
        CrashExit = 1

    class ProcessState:
        NotRunning = 0
        Running = 2

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.program, self.arguments = "", []

    def setProgram(self, program) -> None:
        self.program = program

    def setArguments(self, arguments) -> None:
        self.arguments = list(arguments)

    def start(self, *args) -> None:
        if args:
            self.program, self.arguments = args[0], list(args[1]) if len(args) > 1 else []
        _QProcess.started.append((self.program, self.arguments))

    def waitForStarted(self, *args) -> bool:
        return True

    def state(self):
        return self.NotRunning  # the test runs the command itself, to the end

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name[:1].islower() and name in (
            "readyReadStandardOutput",
            "readyReadStandardError",
            "finished",
            "errorOccurred",
            "stateChanged",
        ):
            return self.__dict__.setdefault(f"_signal_{name}", _Signal())
        return lambda *args, **kwargs: None


@pytest.fixture
def local_runner(monkeypatch):
    """``pyflowreg_session_gui.local_runner`` loaded with the QtCore stand-in (removed after)."""
    qtcore = types.ModuleType("PySide6.QtCore")
    qtcore.QObject, qtcore.QProcess, qtcore.Signal = _QObject, _QProcess, _SignalDescriptor
    package = types.ModuleType("PySide6")
    package.QtCore = qtcore
    monkeypatch.setitem(sys.modules, "PySide6", package)
    monkeypatch.setitem(sys.modules, "PySide6.QtCore", qtcore)
    monkeypatch.delitem(sys.modules, "pyflowreg_session_gui.local_runner", raising=False)
    _QProcess.started.clear()
    import pyflowreg_session_gui.local_runner as module

    yield module
    sys.modules.pop("pyflowreg_session_gui.local_runner", None)


def test_local_runner_command_runs_every_stage(root, local_runner):
    runner = local_runner.LocalRunner()
    runner.start(_form_config(root), "all")
    [(program, arguments)] = _QProcess.started
    assert Path(program).resolve() == Path(sys.executable).resolve()
    done = subprocess.run(
        [program, *arguments], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Completed Stage1 -> Stage2 -> Stage3" in done.stdout
    assert "middle_idx=1" in done.stdout
    outputs = root / "compensated_outputs"
    for name in NAMES:
        for stage in ("stage1", "stage2"):
            assert verify_stage(outputs / name, stage) == [], (name, stage)
    assert verify_stage(root / "final_results", "stage3") == []

    runner.start(_form_config(root), "stage3")  # stage 2 then 3 again: verified, reused
    program, arguments = _QProcess.started[-1]
    assert arguments[-1] == "stage3"
    again = subprocess.run(
        [program, *arguments], capture_output=True, text=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Completed Stage3 (after Stage2 preload)" in again.stdout
