"""Faults for real: runs in child processes killed with SIGKILL, racing for one folder, and
failing writers. Whatever happens, the folder never holds a ``run.json`` that does not match
its files, nor a file under a final name that is not complete, and the next run succeeds.

The child (``tests/_fault_child.py``) registers a 16-frame 32x32 video in batches of 4 with the
sequential executor (a couple of seconds); kills happen at points the child announces on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pyflowreg
from pyflowreg.datasets import make_recording
from pyflowreg.io import open_reader, open_writer
from pyflowreg.motion_correction import OFOptions, RegistrationConfig, compensate_recording
from pyflowreg.motion_correction.runs import IncompleteRunError

CHILD = Path(__file__).with_name("_fault_child.py")
T = 16

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    video = make_recording(T, (32, 32), seed=3, dtype=np.uint16).video
    path = tmp_path_factory.mktemp("input") / "input.h5"
    with open_writer(path) as writer:
        writer.write(video)
    return path


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory, source):
    """A finished run with ``save_w`` (copied into each test's folder): ``(folder, run id)``."""
    folder = tmp_path_factory.mktemp("earlier") / "out"
    return folder, run(source, folder, options={"save_w": True})


def copy_of(earlier_run, tmp_path) -> tuple[Path, str]:
    folder = tmp_path / "out"
    shutil.copytree(earlier_run[0], folder)
    return folder, earlier_run[1]


def start(source, folder, **settings) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(source), str(folder), json.dumps(settings)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(proc: subprocess.Popen, word: str, timeout: float = 120.0) -> None:
    """Read the child's stdout until a line starts with ``word``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(word):
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"child ended ({proc.returncode}): {proc.stderr.read()}")
    raise AssertionError(f"child never reached {word!r}")


def finish(proc: subprocess.Popen, timeout: float = 120.0) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def run(source, folder, **settings) -> str:
    """A complete run in a child; returns its run id."""
    code, out, err = finish(start(source, folder, **settings))
    assert code == 0, err
    return out.split("run ")[-1].strip()


def assert_nothing_looks_complete_but_a_verified_run(folder: Path) -> str | None:
    """Either ``load_run`` verifies the folder (return its run id) or there is no run.json;
    either way every video under a final name reads back with all its frames."""
    for path in folder.iterdir():
        if path.name.split(".")[0] in ("compensated", "w", "valid_mask"):
            with open_reader(path) as reader:
                assert reader.shape[0] == T, f"{path.name} has {reader.shape[0]} frames"
    try:
        return pyflowreg.load_run(folder).run_id
    except IncompleteRunError:
        return None


@pytest.mark.parametrize("point", ["reference", "batch", "commit"])
def test_sigkill_leaves_nothing_that_looks_complete_and_a_rerun_succeeds(
    tmp_path, source, earlier_run, point
):
    folder, first = copy_of(earlier_run, tmp_path)
    proc = start(source, folder, pause=point)  # without save_w this time
    wait_for(proc, point)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL

    found = assert_nothing_looks_complete_but_a_verified_run(folder)
    if point == "commit":
        assert found is None  # run.json of the first run is gone, the new one not yet there
        assert not (folder / "w.h5").exists()  # no file of the first run beside the new ones
    else:
        assert found == first  # the first run's folder is intact
        assert (folder / "w.h5").exists()
    assert (folder / ".pyflowreg.lock").exists()  # held by the dead run

    again = run(source, folder)  # takes the dead run's lock over
    loaded = pyflowreg.load_run(folder)
    assert loaded.run_id == again != first
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["run.json", *(f.name for k, f in loaded.files.items() if k != "run")])
    assert "w.h5" not in names  # the second run did not save w: the first run's is gone


def test_two_runs_at_once_end_consistent(tmp_path, source):
    folder = tmp_path / "out"
    procs = [start(source, folder, options={"save_w": save_w}) for save_w in (True, False)]
    results = [finish(p) for p in procs]
    codes = [code for code, _, _ in results]
    assert 0 in codes, results
    for code, out, err in results:
        assert code in (0, 3), err
        if code == 3:
            assert "is in use by run" in out and "pid" in out
    loaded = pyflowreg.load_run(folder)  # one consistent run
    assert ("w" in loaded.files) == loaded.options["save_w"]
    assert not list(folder.glob(".pyflowreg*"))


def test_a_live_run_holding_the_folder_refuses_the_second(tmp_path, source):
    folder = tmp_path / "out"
    release = tmp_path / "release"
    first = start(source, folder, hold=str(release))
    wait_for(first, "holding")
    code, out, _ = finish(start(source, folder, options={"save_w": True}))
    assert code == 3
    assert f"output folder {folder} is in use by run" in out and f"(pid {first.pid}" in out
    release.touch()
    code, _, err = finish(first)
    assert code == 0, err
    assert "w" not in pyflowreg.load_run(folder).files


@pytest.mark.parametrize("error", ["ENOSPC", "EIO"])
def test_failing_writer_leaves_the_earlier_run_intact(tmp_path, source, earlier_run, error):
    folder, first = copy_of(earlier_run, tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, _, err = finish(start(source, folder, fail=error))
    assert code == 1
    assert "RegistrationError" in err and os.strerror(getattr(__import__("errno"), error)) in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # untouched, no leftovers
    assert pyflowreg.load_run(folder).run_id == first


@pytest.mark.parametrize("fmt", ["HDF5", "NPY", "ZARR"])
def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, source, fmt):
    settings = {"output_format": fmt, "save_w": True, "save_valid_mask": True}
    folder = tmp_path / "killed"
    proc = start(source, folder, pause="batch", options=settings)
    wait_for(proc, "batch")  # batch 3 of 4 written, its checkpoint not yet saved
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    kw = {"quality_setting": "fast", "buffer_size": 4, **settings}
    config = RegistrationConfig(parallelization="sequential")
    resumed = compensate_recording(
        OFOptions(input_file=source, output_path=folder, **kw), config=config, resume=True
    )
    whole = compensate_recording(
        OFOptions(input_file=source, output_path=tmp_path / "whole", **kw), config=config
    )
    a, b = pyflowreg.load_run(folder), pyflowreg.load_run(tmp_path / "whole")
    assert a.record["resumed_at_frame"] == 8 and b.record["resumed_at_frame"] is None
    for name in ("compensated", "w", "valid_mask"):
        with a.open(name) as x, b.open(name) as y:
            np.testing.assert_array_equal(x[:], y[:])
    for key, values in whole.statistics.items():
        np.testing.assert_array_equal(resumed.statistics[key], values)
    np.testing.assert_array_equal(resumed.reference, whole.reference)
    assert not list(folder.glob(".pyflowreg*"))


def test_resume_without_a_matching_checkpoint_starts_again(tmp_path, source):
    folder = tmp_path / "out"
    proc = start(source, folder, pause="batch")
    wait_for(proc, "batch")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    config = RegistrationConfig(parallelization="sequential")
    options = OFOptions(  # other options: the dead run's checkpoint does not apply
        input_file=source, output_path=folder, quality_setting="fast", buffer_size=8
    )
    result = compensate_recording(options, config=config, resume=True)
    assert pyflowreg.load_run(folder).record["resumed_at_frame"] is None
    assert result.n_frames == T and not list(folder.glob(".pyflowreg*"))


def test_cli_resume(tmp_path, source, capsys):
    from pyflowreg.cli import main

    folder = tmp_path / "out"
    proc = start(source, folder, pause="batch")
    wait_for(proc, "batch")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    argv = ["compensate", str(source), "-o", str(folder), "--quality", "fast", "--buffer-size", "4"]
    assert main([*argv, "--executor", "sequential", "-q", "--resume"]) == 0, capsys.readouterr()
    assert pyflowreg.load_run(folder).record["resumed_at_frame"] == 8
