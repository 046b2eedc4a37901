"""The commit protocol in one process: run.json as the completion record, load_run and
``pyflowreg info FOLDER``, earlier outputs removed, output checks, the folder's lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import pyflowreg
from pyflowreg.cli import main
from pyflowreg.datasets import make_recording
from pyflowreg.io import open_writer
from pyflowreg.io.base import VideoWriter
from pyflowreg.motion_correction import (
    OFOptions,
    RegistrationConfig,
    RegistrationError,
    compensate_recording,
)
from pyflowreg.motion_correction._run_folder import (
    LOCK_NAME,
    OutputFolderInUseError,
    RunFolder,
)
from pyflowreg.motion_correction.runs import IncompleteRunError, RunVerificationError

SEQUENTIAL = RegistrationConfig(parallelization="sequential")
T = 8


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    video = make_recording(T, (32, 32), seed=4, dtype=np.uint16).video
    path = tmp_path_factory.mktemp("input") / "input.h5"
    with open_writer(path) as writer:
        writer.write(video)
    return path


def register(source, folder, **kw):
    kw.setdefault("quality_setting", "fast")
    kw.setdefault("buffer_size", 4)
    options = OFOptions(input_file=source, output_path=folder, **kw)
    return compensate_recording(options, config=SEQUENTIAL)


@pytest.fixture(scope="module")
def finished(source, tmp_path_factory):
    """A finished run with save_w into a folder of its own (tests copy it before changing it)."""
    folder = tmp_path_factory.mktemp("run") / "out"
    register(source, folder, save_w=True, save_valid_mask=True)
    return folder


@pytest.fixture
def folder(finished, tmp_path):
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(finished, copy)
    return copy


def test_run_json_is_the_completion_record(folder):
    record = json.loads((folder / "run.json").read_text())
    outputs = record["outputs"]
    assert {"compensated", "w", "valid_mask", "statistics", "reference", "options"} <= set(outputs)
    for entry in outputs.values():
        path = folder / entry["file"]
        assert entry["bytes"] == path.stat().st_size and len(entry["header_sha256"]) == 64
    assert record["input_shape"] == [T, 32, 32, 1] and record["frames"] == T
    run = pyflowreg.load_run(folder)
    assert run.run_id == record["run_id"] and run.n_frames == T
    assert run.options["save_w"] is True
    with run.open("w") as reader:
        assert reader.shape == (T, 32, 32, 2)
    names = {p.name for p in folder.iterdir()}
    assert names == {entry["file"] for entry in outputs.values()} | {"run.json"}


def test_a_later_run_removes_outputs_it_does_not_write(folder, source):
    first = pyflowreg.load_run(folder).run_id
    register(source, folder)  # no w, no valid mask this time
    run = pyflowreg.load_run(folder)
    assert run.run_id != first
    assert not (folder / "w.h5").exists() and not (folder / "valid_mask.h5").exists()
    assert "w" not in run.files


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "w.h5").unlink(), r"w \(w\.h5\) is missing"),
        (lambda f: _truncate(f / "compensated.HDF5"), r"compensated \(compensated\.HDF5\) has \d+ bytes, run\.json says \d+"),  # noqa: E501
        (lambda f: _flip_first_byte(f / "statistics.npz"), r"statistics \(statistics\.npz\) has another header"),  # noqa: E501
    ],
)  # fmt: skip
def test_load_run_detects_a_changed_folder(folder, damage, message, capsys):
    damage(folder)
    with pytest.raises(
        RunVerificationError, match=rf"does not match its run\.json \(run .*\): {message}"
    ):
        pyflowreg.load_run(folder)
    assert main(["info", str(folder)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match its run.json" in err[0]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:-100])


def _flip_first_byte(path):
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def test_info_verifies_a_folder(folder, capsys):
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "compensated.HDF5" in out and "w.h5" in out


def test_a_folder_without_run_json_holds_no_finished_run(folder):
    (folder / "run.json").unlink()
    with pytest.raises(IncompleteRunError, match=r"holds no finished run: run\.json is missing"):
        pyflowreg.load_run(folder)
    (folder / LOCK_NAME).write_text(json.dumps({"run_id": "r1", "pid": 12345}))  # nobody holds it
    with pytest.raises(IncompleteRunError, match=r"run r1 \(pid 12345\) was interrupted"):
        pyflowreg.load_run(folder)
    assert isinstance(IncompleteRunError("x"), FileNotFoundError)


def test_an_output_missing_frames_fails_the_run_and_keeps_the_earlier_one(
    folder, source, monkeypatch
):
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    write = VideoWriter.write
    calls = []

    def lose_second_batch(self, frames):
        calls.append(self.path.name)
        if calls.count(self.path.name) != 2:
            write(self, frames)

    monkeypatch.setattr(VideoWriter, "write", lose_second_batch)
    with pytest.raises(
        RegistrationError,
        match=r"output 'compensated' \(compensated\.HDF5\) is incomplete: 4 frames instead of 8",
    ):
        register(source, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_of_a_dead_run_is_taken_over(folder, source):
    (folder / LOCK_NAME).write_text(
        json.dumps({"run_id": "dead", "pid": dead_pid(), "host": socket.gethostname()})
    )
    leftover = folder / ".pyflowreg-dead"
    leftover.mkdir()
    (leftover / "compensated.h5").write_bytes(b"half written")
    register(source, folder)
    assert not leftover.exists() and not (folder / LOCK_NAME).exists()
    pyflowreg.load_run(folder)


def test_lock_of_a_live_run_refuses(folder, source):
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    live = RunFolder(folder).open()  # another run, live, holds the folder
    try:
        message = rf"is in use by run {live.run_id} \(pid {os.getpid()}, started .*\)"
        with pytest.raises(OutputFolderInUseError, match=message):
            register(source, folder)
        (folder / "run.json").rename(folder / "run.json.bak")
        with pytest.raises(IncompleteRunError, match=rf"run {live.run_id} .* is writing to it now"):
            pyflowreg.load_run(folder)
        (folder / "run.json.bak").rename(folder / "run.json")
    finally:
        live.abort()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_abort_leaves_nothing_and_releases_the_lock(tmp_path):
    outputs = RunFolder(tmp_path / "out").open()
    writer = outputs.video_writer("compensated", "compensated.h5", "HDF5", expected_frames=3)
    writer.write(np.zeros((2, 4, 4, 1), np.uint16))
    outputs.abort()
    assert list((tmp_path / "out").iterdir()) == []


def test_commit_refuses_an_output_short_of_frames(tmp_path):
    outputs = RunFolder(tmp_path / "out").open()
    writer = outputs.video_writer("compensated", "compensated.npy", "NPY", expected_frames=3)
    writer.write(np.zeros((2, 4, 4, 1), np.uint16))
    with pytest.raises(
        RuntimeError, match=r"compensated\.npy\) is incomplete: 2 frames instead of 3"
    ):
        outputs.commit({})
    outputs.abort()
    assert list((tmp_path / "out").iterdir()) == []


def test_resume_of_a_finished_run_returns_it_without_work(tmp_path, source, monkeypatch):
    import importlib

    folder = tmp_path / "out"
    first = register(source, folder, save_w=True)
    run_id = pyflowreg.load_run(folder).run_id
    module = importlib.import_module("pyflowreg.motion_correction.compensate_recording")
    monkeypatch.setattr(module, "run_registration", None)  # any registration would fail
    options = OFOptions(
        input_file=source, output_path=folder, quality_setting="fast", buffer_size=4, save_w=True
    )
    again = compensate_recording(options, config=SEQUENTIAL, resume=True)
    assert pyflowreg.load_run(folder).run_id == run_id and again.files == first.files
    assert again.n_frames == T
    np.testing.assert_array_equal(again.reference, first.reference)
    for key, values in first.statistics.items():
        np.testing.assert_array_equal(again.statistics[key], values)
    assert not list(folder.glob(".pyflowreg*"))


def test_cli_refuses_a_folder_in_use_with_one_line(folder, source, capsys):
    live = RunFolder(folder).open()
    try:
        argv = ["compensate", str(source), "-o", str(folder), "--quality", "fast", "-q"]
        assert main(argv) == 1  # a runtime condition, not a usage error
    finally:
        live.abort()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"pyflowreg: error: output folder {folder} is in use by run {live.run_id} "
        f"(pid {os.getpid()}, started {live_started(err)}); wait for it to finish or choose "
        "another output_path"
    ]


def live_started(err):
    return err[0].split("started ")[1].split(")")[0]


def test_info_of_a_folder_without_a_finished_run(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert main(["info", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no finished run: run.json is missing" in err[0]


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_lock_held_by_leftovers_of_a_dead_run_says_so(folder, source):
    import fcntl

    lock = folder / LOCK_NAME
    lock.write_text(json.dumps({"run_id": "dead", "pid": dead_pid(), "host": socket.gethostname()}))
    fd = os.open(lock, os.O_RDONLY)  # a process the dead run left behind still holds its lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        message = (
            r"still locked by processes left over from run dead \(pid \d+, no longer running\)"
        )
        with pytest.raises(OutputFolderInUseError, match=message):
            register(source, folder)
    finally:
        os.close(fd)
    register(source, folder)  # released: taken over
