"""Stage 1 of a session on three tiny recordings: outputs checked against values, resume that
skips only verified work, a killed task redone cleanly, claims, array tasks and the CLI."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from pyflowreg.cli import main as pyflowreg_main
from pyflowreg.datasets import make_recording
from pyflowreg.io import open_reader
from pyflowreg.session import SessionConfig, run_stage1, run_stage1_array
from pyflowreg.session import cli as session_cli
from pyflowreg.session._status import (
    CLAIM_FILE,
    RecordingClaimedError,
    claim,
    claim_holder,
    read_status,
    stage_done,
    stage_record,
    stage_state,
    verify_stage,
    write_status,
)
from pyflowreg.session.stage1_compensate import (
    atomic_save_npy,
    atomic_save_npz,
    compute_and_save_temporal_average,
)

CHILD = Path(__file__).with_name("_session_child.py")
NAMES = ("rec_000", "rec_001", "rec_002")
N_FRAMES, SHAPE = 12, (48, 64)
#: Small batches (3 per recording), one worker: quick, and a kill can land between batches.
FLOW_OPTIONS = {"quality_setting": "fast", "buffer_size": 4, "save_meta_info": False}
ARRAY_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SGE_TASK_ID", "PBS_ARRAY_INDEX")


def _make_session(root: Path) -> Path:
    """Three uint16 TIFF recordings of 12 frames 48 x 64 (one scene each, known motion)."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(NAMES):
        rec = make_recording(N_FRAMES, SHAPE, seed=10 + i, max_rigid=3.0, max_nonrigid=1.0)
        video = np.clip(rec.video[..., 0] * 1000.0, 0, 65535).astype(np.uint16)
        tifffile.imwrite(root / f"{name}.tif", video)
    return root


def _config(root: Path, **settings) -> SessionConfig:
    values = {
        "root": root,
        "pattern": "rec_*.tif",
        "stage1_executor": "sequential",
        "flow_options": dict(FLOW_OPTIONS),
    }
    values.update(settings)
    return SessionConfig(**values)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted stage 1 (outputs compared by the other tests)."""
    root = _make_session(tmp_path_factory.mktemp("reference") / "data")
    config = _config(root)
    folders = run_stage1(config)
    return config, folders


@pytest.fixture
def session(tmp_path, reference_run):
    """A fresh copy of the recordings (no outputs)."""
    config, _ = reference_run
    root = tmp_path / "data"
    root.mkdir()
    for name in NAMES:
        shutil.copy2(config.root / f"{name}.tif", root / f"{name}.tif")
    return _config(root)


def _outputs(folder: Path) -> dict[str, np.ndarray]:
    with h5py.File(folder / "idx.hdf", "r") as fh:
        idx = fh["ch1"][()]
    with open_reader(folder / "compensated.hdf5") as reader:
        video = reader.read()
    return {"video": video, "idx": idx, "mean": np.load(folder / "temporal_average.npy")}


def _assert_same_outputs(folder: Path, reference: Path) -> None:
    got, want = _outputs(folder), _outputs(reference)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


# ---------------------------------------------------------------------- outputs


def test_stage1_outputs_hold_the_right_values(reference_run):
    config, folders = reference_run
    assert [f.name for f in folders] == list(NAMES)
    assert all(f.parent == config.resolve_output_paths().output_root for f in folders)
    for folder in folders:
        outputs = _outputs(folder)
        video = outputs["video"]
        assert video.shape == (N_FRAMES, *SHAPE, 1) and video.dtype == np.uint16
        mean = outputs["mean"]
        assert mean.shape == SHAPE and mean.dtype == np.float64
        # the streamed mean is the mean of the frames as written
        np.testing.assert_allclose(mean, video[..., 0].mean(axis=0, dtype=np.float64), rtol=1e-12)
        idx = outputs["idx"]
        assert idx.shape == (N_FRAMES, *SHAPE) and idx.dtype == np.uint8
        assert set(np.unique(idx)) <= {0, 1} and idx.mean() > 0.5
        status = json.loads((folder / "status.json").read_text())
        assert status["stage1"] == "done"
        record = status["stages"]["stage1"]
        assert record["frames"] == N_FRAMES and record["shape"] == [N_FRAMES, *SHAPE, 1]
        assert set(record["outputs"]) == {"compensated.hdf5", "idx.hdf", "temporal_average.npy"}
        assert record["outputs"]["idx.hdf"]["shapes"] == {"ch1": [N_FRAMES, *SHAPE]}
        assert verify_stage(folder, "stage1") == []
        assert not (folder / CLAIM_FILE).exists()  # released


def test_stage1_registers_as_the_pipeline_does(reference_run, tmp_path):
    """The session adds nothing to the registration: the same options give the same video."""
    from pyflowreg.motion_correction import OFOptions, RegistrationConfig, compensate_recording

    config, folders = reference_run
    options = OFOptions(
        input_file=config.root / "rec_001.tif", output_path=tmp_path, **FLOW_OPTIONS
    )
    result = compensate_recording(options, config=RegistrationConfig(parallelization="sequential"))
    with open_reader(result.files["compensated"]) as reader:
        np.testing.assert_array_equal(reader.read(), _outputs(folders[1])["video"])


# ---------------------------------------------------------------------- resume


def test_resume_skips_verified_recordings(session, monkeypatch):
    run_stage1(session)
    module = importlib.import_module("pyflowreg.motion_correction.compensate_recording")

    def refuse(*args, **kwargs):
        raise AssertionError("a verified recording was registered again")

    monkeypatch.setattr(module, "compensate_recording", refuse)
    run_stage1(session)  # nothing to do


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_output_is_redone(session, reference_run, damage):
    folders = run_stage1(session)
    target = folders[1] / ("compensated.hdf5" if damage != "flip" else "temporal_average.npy")
    if damage == "truncate":
        with open(target, "r+b") as fh:
            fh.truncate(target.stat().st_size // 2)
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[-5] ^= 0xFF  # one byte of the mean
        target.write_bytes(bytes(data))
    else:
        target.unlink()
    assert not stage_done(folders[1], "stage1", None)
    assert stage_state(folders[1], "stage1") == "damaged"
    run_ids = [stage_record(f, "stage1")["run_id"] for f in folders]
    run_stage1(session)
    after = [stage_record(f, "stage1")["run_id"] for f in folders]
    assert after[0] == run_ids[0] and after[2] == run_ids[2]  # untouched
    assert verify_stage(folders[1], "stage1") == []
    _assert_same_outputs(folders[1], reference_run[1][1])


def test_changed_options_redo_the_recordings_and_invalidate_stage2(session):
    folders = run_stage1(session)
    write_status(folders[0], "stage2", outputs=["temporal_average.npy"])  # a stand-in result
    first = stage_record(folders[0], "stage1")
    changed = session.model_copy(update={"flow_options": {**FLOW_OPTIONS, "iterations": 20}})
    assert stage_state(folders[0], "stage1") == "done"
    run_stage1(changed)
    second = stage_record(folders[0], "stage1")
    assert second["run_id"] != first["run_id"]
    assert second["options_hash"] != first["options_hash"]
    assert stage_record(folders[0], "stage2") is None  # stage 2 of the recording must be redone
    assert "stage2" not in read_status(folders[0])
    # options that do not change the results (executor, workers) redo nothing
    run_stage1(changed.model_copy(update={"stage1_executor": "threading", "n_workers": 2}))
    assert stage_record(folders[0], "stage1")["run_id"] == second["run_id"]


def test_no_resume_redoes_everything(session):
    folders = run_stage1(session)
    before = [stage_record(f, "stage1")["run_id"] for f in folders]
    run_stage1(session.model_copy(update={"resume": False}))
    after = [stage_record(f, "stage1")["run_id"] for f in folders]
    assert all(a != b for a, b in zip(before, after, strict=True))


def test_a_killed_task_is_redone_cleanly(session, reference_run, tmp_path):
    """SIGKILL in the middle of the first recording: nothing counts as done; the next run
    continues it and every output equals that of the uninterrupted run."""
    config_file = session.save(tmp_path / "session.toml")
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(config_file), json.dumps({"pause_after": 2})],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "paused"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    folder = session.resolve_output_paths().output_root / NAMES[0]
    assert read_status(folder)["stage1"] == "running"
    assert not stage_done(folder, "stage1", None)
    assert stage_state(folder, "stage1") == "interrupted"
    assert (folder / CLAIM_FILE).exists() and claim_holder(folder) is None  # stale: owner gone
    assert not (folder / "temporal_average.npy").exists()

    run_stage1(session)
    record = json.loads((folder / "run.json").read_text())
    assert record["resumed_at_frame"] == 4  # continued after its first checkpointed batch
    for name, reference in zip(NAMES, reference_run[1], strict=True):
        folder = session.resolve_output_paths().output_root / name
        assert verify_stage(folder, "stage1") == []
        _assert_same_outputs(folder, reference)


def test_sigterm_of_a_cli_run_frees_the_claim_and_keeps_the_checkpoint(session, tmp_path):
    """A batch system's time limit (SIGTERM): the claim goes at once, the run continues later."""
    config_file = session.save(tmp_path / "session.toml")
    settings = json.dumps({"pause_after": 2, "cli": True})
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(config_file), settings],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "paused"
        folder = session.resolve_output_paths().output_root / NAMES[0]
        assert claim_holder(folder)["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (folder / CLAIM_FILE).exists()
    assert stage_state(folder, "stage1") == "interrupted"
    run_stage1(session, task_index=0)
    assert json.loads((folder / "run.json").read_text())["resumed_at_frame"] == 4


def test_a_run_killed_after_its_video_was_committed_is_finished_from_the_file(
    session, reference_run, monkeypatch
):
    """Killed between the commit of compensated.hdf5 and its status: the video is taken as it
    is (no registration) and the mean is computed from it, equal to the streamed one."""
    folder = run_stage1(session, task_index=0)[0]
    (folder / "temporal_average.npy").unlink()
    write_status(folder, "stage1", state="running")
    engine = importlib.import_module("pyflowreg.motion_correction.compensate_recording")

    def refuse(*args, **kwargs):
        raise AssertionError("the finished video was registered again")

    monkeypatch.setattr(engine, "run_registration", refuse)
    run_stage1(session, task_index=0)
    assert verify_stage(folder, "stage1") == []
    _assert_same_outputs(folder, reference_run[1][0])


def test_status_records_verify_what_they_describe(tmp_path):
    folder = tmp_path / "rec"
    atomic_save_npz(folder / "w_to_reference.npz", u=np.zeros((4, 5)), v=np.ones((4, 5)))
    store = folder / "aligned.zarr"
    store.mkdir()
    (store / ".zarray").write_text('{"shape": [3, 4, 5]}')
    status = write_status(
        folder,
        "stage2",
        options_hash="abc",
        outputs=["w_to_reference.npz", "aligned.zarr"],
        inputs={"stage1": "f1"},
        note="free field",
    )
    record = status["stages"]["stage2"]
    assert status["stage2"] == "done" and record["note"] == "free field"
    assert record["outputs"]["w_to_reference.npz"]["shapes"] == {"u": [4, 5], "v": [4, 5]}
    assert verify_stage(folder, "stage2", "abc", {"stage1": "f1"}) == []
    assert verify_stage(folder, "stage2", "xyz") == ["stage2 was made with other options"]
    assert verify_stage(folder, "stage2", "abc", {"stage1": "f2"}) == [
        "stage2 was made from other upstream results"
    ]
    (store / ".zarray").write_text('{"shape": [3, 4, 6]}')
    assert verify_stage(folder, "stage2")[0].startswith("aligned.zarr: checksum differs")
    edited = json.loads((folder / "status.json").read_text())
    edited["stages"]["stage2"]["options_hash"] = "xyz"
    (folder / "status.json").write_text(json.dumps(edited))
    assert verify_stage(folder, "stage2", "xyz") == ["stage2's record was edited"]
    with pytest.raises(ValueError, match=r"stage must be one of \['stage1', 'stage2', 'stage3'\]"):
        write_status(folder, "stage4")
    with pytest.raises(FileNotFoundError, match="output not found"):
        write_status(folder, "stage1", outputs=["missing.npy"])


# ---------------------------------------------------------------------- claims


def test_a_claimed_folder_is_refused_until_released(tmp_path):
    folder = tmp_path / "rec"
    with claim(folder, "stage1") as held:
        holder = claim_holder(folder)
        assert holder["pid"] == os.getpid() and holder["claim_id"] == held.claim_id
        with pytest.raises(RecordingClaimedError, match=r"being processed \(stage1\) by pid "):
            with claim(folder):
                pass
    assert claim_holder(folder) is None and not (folder / CLAIM_FILE).exists()
    with claim(folder):
        pass


def test_stale_claims_are_taken_over(tmp_path):
    folder = tmp_path / "rec"
    folder.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    record = {"claim_id": "old", "host": os.uname().nodename, "pid": int(dead.stdout)}
    (folder / CLAIM_FILE).write_text(json.dumps(record))
    with claim(folder) as held:  # same host, process gone
        assert json.loads((folder / CLAIM_FILE).read_text())["claim_id"] == held.claim_id
    other = {"claim_id": "remote", "host": "node-17.cluster", "pid": 4242}
    (folder / CLAIM_FILE).write_text(json.dumps(other))
    with pytest.raises(RecordingClaimedError, match=r"on host node-17\.cluster"):
        with claim(folder, stale_after=60):
            pass
    old = time.time() - 120
    os.utime(folder / CLAIM_FILE, (old, old))  # no heartbeat for two minutes
    with claim(folder, stale_after=60):
        pass


def test_two_processes_never_process_the_same_recording(session, tmp_path, caplog):
    """A child process and this one run stage 1 of one session at the same time."""
    config_file = session.save(tmp_path / "session.toml")
    settings = json.dumps({"batch_delay": 0.3, "announce": True})
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(config_file), settings],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "started"  # busy with the first recording
        with caplog.at_level(logging.INFO, logger="pyflowreg.session"):
            run_stage1(session)
        _, log = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log
    ours = [r.getMessage() for r in caplog.records]
    assert any("left to the process holding it" in m for m in ours), ours
    done = [line.split()[2] for line in log.splitlines() if " done in " in line]
    done += [m.split()[2] for m in ours if " done in " in m]
    assert sorted(done) == sorted(NAMES), (log, ours)  # each recording processed exactly once
    for name in NAMES:
        assert verify_stage(session.resolve_output_paths().output_root / name, "stage1") == []


# ---------------------------------------------------------------------- one recording, arrays


def test_one_recording_by_index_and_by_array_task(session, monkeypatch):
    root = session.resolve_output_paths().output_root
    assert run_stage1(session, task_index=1) == [root / NAMES[1]]
    assert sorted(p.name for p in root.iterdir()) == [NAMES[1]]
    with pytest.raises(IndexError, match=r"task_index 3 is out of range: 3 recordings"):
        run_stage1(session, task_index=3)
    for name in ARRAY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="no array task id"):
        run_stage1_array(session)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")  # 1-based: the third recording
    assert run_stage1_array(session) == [root / NAMES[2]]
    assert run_stage1_array(session, task_index=0) == [root / NAMES[0]]
    with pytest.warns(RuntimeWarning, match="array task index 5 has no recording"):
        assert run_stage1_array(session, task_index=5) == []
    with claim(root / NAMES[0]):
        with pytest.raises(RecordingClaimedError):
            run_stage1(session.model_copy(update={"resume": False}), task_index=0)


def test_forced_outputs_warn(session):
    options = {**FLOW_OPTIONS, "output_format": "TIFF", "save_valid_idx": False}
    with pytest.warns(UserWarning) as caught:
        run_stage1(session.model_copy(update={"flow_options": options}), task_index=0)
    messages = " ".join(str(w.message) for w in caught)
    assert "output_format 'TIFF'" in messages and "save_valid_idx=False" in messages
    assert (session.resolve_output_paths().output_root / NAMES[0] / "compensated.hdf5").exists()


# ---------------------------------------------------------------------- helpers


def test_atomic_saves_and_the_mean_of_a_file(tmp_path, reference_run):
    array = np.arange(12.0).reshape(3, 4)
    atomic_save_npy(tmp_path / "a.npy", array)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), array)
    atomic_save_npz(tmp_path / "w.npz", u=array, v=-array)
    with np.load(tmp_path / "w.npz") as data:
        assert sorted(data.files) == ["u", "v"]
        np.testing.assert_array_equal(data["v"], -array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "w.npz"]  # no temporaries
    folder = reference_run[1][0]
    mean = compute_and_save_temporal_average(folder / "compensated.hdf5", tmp_path / "m.npy", 4)
    np.testing.assert_array_equal(mean, np.load(folder / "temporal_average.npy"))
    with pytest.raises(ValueError, match="chunk_frames must be >= 1"):
        compute_and_save_temporal_average(folder / "compensated.hdf5", tmp_path / "m.npy", 0)


# ---------------------------------------------------------------------- command line


def test_cli_run_status_and_array(session, tmp_path, capsys, monkeypatch):
    config_file = str(session.save(tmp_path / "session.toml"))
    for name in ARRAY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert pyflowreg_main(["session", "status", "--config", config_file]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["recording", "stage", "1", "stage", "2", "stage", "3", "frames"]
    assert table[1].split() == ["rec_000", "pending", "pending", "pending", "-"]

    argv = ["session", "array", "-c", config_file, "--task-index", "1"]
    assert pyflowreg_main([*argv, "--of-params", "iterations=20"]) == 0
    assert "run stages 2 and 3" in capsys.readouterr().out
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert session_cli.main([config_file, "--stage", "1", "--array-job", "-q"]) == 0
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert pyflowreg_main(["session", "status", "-c", config_file]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:4]]
    assert rows[0] == ["rec_000", "done", "pending", "pending", "12"]
    assert rows[1][:3] == ["rec_001", "(centre)", "changed"]  # made with the override
    assert rows[2] == ["rec_002", "pending", "pending", "pending", "-"]

    argv = ["session", "run", "--config", config_file, "--stage", "1", "--of-params"]
    assert pyflowreg_main([*argv, "iterations=20"]) == 0  # changed options: all redone
    assert "stage 1: 3 recording(s)" in capsys.readouterr().out
    assert pyflowreg_main(["session", "status", "-c", config_file]) == 0
    assert [r.split()[1] for r in capsys.readouterr().out.splitlines()[1:4]] == [
        "changed",  # status compares with the config's options, not the override
        "(centre)",
        "changed",
    ]


def test_cli_errors_are_usage_errors(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'root = "{tmp_path}"\nn_workers = 0\n')
    assert pyflowreg_main(["session", "status", "--config", str(bad)]) == 2
    assert "bad.toml: n_workers must be -1" in capsys.readouterr().err
    good = SessionConfig(root=tmp_path).save(tmp_path / "good.toml")
    for name in ARRAY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert pyflowreg_main(["session", "array", "--config", str(good)]) == 2
    assert "no array task id" in capsys.readouterr().err
    argv = ["session", "run", "--config", str(good), "--stage", "2", "--index", "0"]
    assert pyflowreg_main(argv) == 2
    assert "belong to stage 1" in capsys.readouterr().err


def test_cli_stops_before_stage2_while_a_recording_is_busy(session, tmp_path, capsys):
    config_file = str(session.save(tmp_path / "session.toml"))
    folder = session.resolve_output_paths().output_root / NAMES[2]
    with claim(folder, "stage1"):  # as if another process were registering it
        assert pyflowreg_main(["session", "run", "--config", config_file, "-q"]) == 1
    err = capsys.readouterr().err
    assert f"stage 1 of {NAMES[2]} (pid {os.getpid()}" in err and "still running" in err


def test_cli_all_stages(session, tmp_path, capsys):
    pytest.importorskip("pyflowreg.session.stage2_between_avgs")
    pytest.importorskip("pyflowreg.session.stage3_valid_mask")
    config_file = str(session.save(tmp_path / "session.toml"))
    assert pyflowreg_main(["session", "run", "--config", config_file]) == 0
    out = capsys.readouterr().out
    assert "stage 1: 3 recording(s)" in out and "stage 3: final mask" in out
    assert pyflowreg_main(["session", "status", "-c", config_file]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:4]]
    assert [row[-4:] for row in rows] == [["done", "done", "done", "12"]] * 3
    changed = session.model_copy(update={"alpha_between": 10.0}).save(tmp_path / "c.toml")
    assert pyflowreg_main(["session", "status", "-c", str(changed)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:4]]
    assert [row[-4:] for row in rows] == [["done", "changed", "stale", "12"]] * 3
    assert pyflowreg_main(["session", "status", "-c", str(changed), "--json"]) == 0
    states = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in states] == list(NAMES) and states[1]["center"]
    assert {(s["stage1"], s["stage2"], s["stage3"], s["frames"]) for s in states} == {
        ("done", "changed", "stale", 12)
    }


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["s.toml"], ["run", "--config", "s.toml"]),
        (
            ["s.toml", "--stage", "1", "--array-job"],
            ["run", "--config", "s.toml", "--stage", "1", "--array"],
        ),
        (
            ["--no-resume", "--stage", "1", "s.yml"],
            ["run", "--config", "s.yml", "--no-resume", "--stage", "1"],
        ),
        (["run", "--config", "s.toml"], ["run", "--config", "s.toml"]),
        (["status", "-c", "s.toml"], ["status", "-c", "s.toml"]),
        (["--help"], ["--help"]),
    ],
)
def test_pyflowreg_session_short_form(argv, expected):
    assert session_cli.translate_argv(argv) == expected


def test_pyflowreg_session_command_help():
    exe = shutil.which("pyflowreg-session")
    command = [exe] if exe else [sys.executable, "-m", "pyflowreg.session.cli"]
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for word in ("run", "status", "array", "pyflowreg-session", "--array-job"):
        assert word in done.stdout


def test_cli_pyflowreg_short_flags_and_of_params_outside_stage_1(tmp_path, capsys):
    """PyFlowReg's ``-s`` / ``-i`` and its acceptance of ``--of-params`` with stage 2 or 3
    (they only change stage 1: ignored there, with a warning)."""
    import argparse

    from pyflowreg.session.cli import add_session_parser

    good = str(SessionConfig(root=tmp_path).save(tmp_path / "good.toml"))
    parser = argparse.ArgumentParser()
    add_session_parser(parser.add_subparsers())
    args = parser.parse_args(["session", "run", "--config", good, "-s", "1", "-i", "0"])
    assert args.stage == 1 and args.index == 0
    argv = ["session", "run", "--config", good, "--stage", "2", "--of-params", "alpha=3"]
    capsys.readouterr()
    status = pyflowreg_main(argv)
    err = capsys.readouterr().err
    assert "warning: --of-params only changes stage 1; ignored with --stage 2" in err
    assert status != 2  # not a usage error (stage 2 itself finds no recordings here)
