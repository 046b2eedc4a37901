"""A session on a Dask cluster and through batch-job scripts, on three tiny recordings: the
outputs equal those of the sequential ``pyflowreg session run``, verified recordings are not
submitted, a killed recording is redone cleanly, a claimed recording is never processed twice,
and the scripts' directives and array commands are right for SLURM, SGE and PBS."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from pyflowreg.cli import main as pyflowreg_main
from pyflowreg.datasets import make_recording
from pyflowreg.io import open_reader
from pyflowreg.session import SessionConfig, run_stage1
from pyflowreg.session._status import claim, read_status, stage_record, verify_stage

distributed = pytest.importorskip("distributed")

from pyflowreg.session.dask_runner import (  # noqa: E402
    run_session_dask,
    run_stage1_dask,
    session_client,
)
from pyflowreg.session.jobscript import make_jobscripts, write_jobscripts  # noqa: E402

CHILD = Path(__file__).with_name("_session_child.py")
NAMES = ("rec_000", "rec_001", "rec_002")
N_FRAMES, SHAPE = 12, (48, 64)
FLOW_OPTIONS = {"quality_setting": "fast", "buffer_size": 4, "save_meta_info": False}
ARRAY_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SGE_TASK_ID", "PBS_ARRAY_INDEX")


def _make_session(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(NAMES):
        rec = make_recording(N_FRAMES, SHAPE, seed=20 + i, max_rigid=3.0, max_nonrigid=1.0)
        video = np.clip(rec.video[..., 0] * 1000.0, 0, 65535).astype(np.uint16)
        tifffile.imwrite(root / f"{name}.tif", video)


def _config(root: Path, **settings) -> SessionConfig:
    values = {
        "root": root,
        "pattern": "rec_*.tif",
        "stage1_executor": "sequential",
        "iterations_between": 20,
        "flow_options": dict(FLOW_OPTIONS),
    }
    values.update(settings)
    return SessionConfig(**values)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sequential ``pyflowreg session run`` of the three recordings."""
    root = tmp_path_factory.mktemp("sequential") / "data"
    _make_session(root)
    config = _config(root)
    config_file = config.save(root.parent / "session.toml")
    assert pyflowreg_main(["session", "run", "--config", str(config_file), "-q"]) == 0
    return config


@pytest.fixture
def session(tmp_path, reference):
    root = tmp_path / "data"
    root.mkdir()
    for name in NAMES:
        shutil.copy2(reference.root / f"{name}.tif", root / f"{name}.tif")
    return _config(root)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded in-process workers (fast to start)."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as made,
    ):
        yield made


@pytest.fixture
def no_array_env(monkeypatch):
    for name in ARRAY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _stage1_outputs(folder: Path) -> dict[str, np.ndarray]:
    with h5py.File(folder / "idx.hdf", "r") as fh:
        idx = fh["ch1"][()]
    with open_reader(folder / "compensated.hdf5") as reader:
        video = reader.read()
    return {"video": video, "idx": idx, "mean": np.load(folder / "temporal_average.npy")}


def _assert_same_session(config: SessionConfig, reference: SessionConfig, stages=(1, 2, 3)):
    got, want = config.resolve_output_paths(), reference.resolve_output_paths()
    for name in NAMES:
        if 1 in stages:
            assert verify_stage(got.output_root / name, "stage1") == []
            a, b = _stage1_outputs(got.output_root / name), _stage1_outputs(want.output_root / name)
            for key in b:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
        if 2 in stages:
            with (
                np.load(got.output_root / name / "w_to_reference.npz") as a,
                np.load(want.output_root / name / "w_to_reference.npz") as b,
            ):
                np.testing.assert_array_equal(a["u"], b["u"])
                np.testing.assert_array_equal(a["v"], b["v"])
    if 3 in stages:
        with (
            np.load(got.final_results / "final_valid_idx.npz") as a,
            np.load(want.final_results / "final_valid_idx.npz") as b,
        ):
            assert a["final_valid"].any()
            np.testing.assert_array_equal(a["final_valid"], b["final_valid"])
            np.testing.assert_array_equal(a["aligned_valid_masks"], b["aligned_valid_masks"])


# ---------------------------------------------------------------------- dask


def test_dask_run_equals_the_sequential_session_run(session, reference, client):
    seen = []
    result = run_session_dask(session, client=client, progress=lambda *a: seen.append(a))
    assert result.processed == list(NAMES) and result.skipped == []
    assert sorted(name for name, _, _ in seen) == [f"{n}.tif" for n in NAMES]  # any order
    assert [(done, total) for _, done, total in seen] == [(1, 3), (2, 3), (3, 3)]
    assert result.middle_idx == 1 and result.center_file.name == "rec_001.tif"
    assert result.final_mask.dtype == bool and result.final_mask.shape == SHAPE
    _assert_same_session(session, reference)
    for name in NAMES:  # each recording ran as one task, with one thread
        record = stage_record(session.resolve_output_paths().output_root / name, "stage1")
        assert record["executor"] == "sequential"

    # everything verifies: nothing is submitted again
    again = run_session_dask(session, client=client)
    assert again.processed == [] and again.skipped == list(NAMES)


def test_dask_cli_skips_verified_and_redoes_a_killed_recording(
    session, reference, client, tmp_path, capsys
):
    """rec_000 killed mid-recording (running record, stale claim), rec_002 done: the CLI
    submits rec_000 and rec_001 only; rec_000 continues from its checkpoint; all outputs equal
    the uninterrupted sequential run's."""
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
    outputs = session.resolve_output_paths().output_root
    assert read_status(outputs / "rec_000")["stage1"] == "running"
    run_stage1(session, task_index=2)
    capsys.readouterr()

    argv = ["session", "dask", "--config", str(config_file), "--address"]
    assert pyflowreg_main([*argv, client.scheduler.address, "--stage", "1"]) == 0
    printed = capsys.readouterr().out
    assert "stage 1 on dask: 2 recording(s) processed, 1 verified done before" in printed
    assert json.loads((outputs / "rec_000" / "run.json").read_text())["resumed_at_frame"] == 4
    _assert_same_session(session, reference, stages=(1,))

    assert pyflowreg_main([*argv, client.scheduler.address]) == 0  # stages 2-3 on the client
    printed = capsys.readouterr().out
    assert "0 recording(s) processed, 3 verified done before" in printed
    assert "stage 2: 3 field(s), centre rec_001.tif (index 1)" in printed
    _assert_same_session(session, reference)


def test_a_claimed_recording_is_never_processed_twice(session, client):
    """A live process holds rec_001: the task waits for it, and fails naming it when the
    claim outlasts claim_wait; once released, the task processes it."""
    folder = session.resolve_output_paths().output_root / "rec_001"
    run_stage1(session, task_index=0)
    run_stage1(session, task_index=2)
    with claim(folder, "stage1"):
        with pytest.raises(RuntimeError, match=r"rec_001\.tif: RecordingClaimedError.*waited"):
            run_stage1_dask(session, client=client, claim_wait=0.3, retries=0)
        assert stage_record(folder, "stage1") is None  # untouched while claimed

    held = claim(folder, "stage1")
    held.__enter__()
    timer = threading.Timer(1.0, held.__exit__, (None, None, None))
    timer.start()
    try:
        _, processed, skipped = run_stage1_dask(session, client=client, claim_wait=30.0)
    finally:
        timer.join()
    assert processed == ["rec_001"] and skipped == ["rec_000", "rec_002"]
    assert verify_stage(folder, "stage1") == []


def test_cluster_choices(session, monkeypatch):
    with pytest.raises(ValueError, match="give one of client, address"):
        with session_client(address="tcp://127.0.0.1:1", jobqueue="slurm"):
            pass
    with pytest.raises(ValueError, match="jobqueue must be one of"):
        with session_client(jobqueue="lsf"):
            pass
    with pytest.raises(FileNotFoundError, match="dask scheduler file not found"):
        with session_client(scheduler_file=session.root / "missing.json"):
            pass
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(ImportError, match="pip install dask-jobqueue"):
        with session_client(jobqueue="slurm"):
            pass

    made = []

    class FakeSLURMCluster(distributed.LocalCluster):
        """dask_jobqueue's interface on an in-process cluster (records its arguments)."""

        def __init__(self, **kwargs):
            made.append(kwargs)
            super().__init__(
                n_workers=0,
                processes=False,
                dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # any free port
            )

        def scale(self, jobs=None, **kwargs):
            made.append({"jobs": jobs})
            return super().scale(jobs)

    fake = types.ModuleType("dask_jobqueue")
    fake.SLURMCluster = FakeSLURMCluster
    monkeypatch.setitem(sys.modules, "dask_jobqueue", fake)
    options = {"cores": 4, "memory": "16GB", "walltime": "01:00:00", "queue": "short"}
    with session_client(2, jobqueue="slurm", jobqueue_kwargs=options) as made_client:
        made_client.wait_for_workers(2, timeout=30)
        assert made_client.submit(sum, [1, 2]).result() == 3
    assert made[:2] == [{"processes": 1, **options}, {"jobs": 2}]  # then scale(0) at close


def test_dask_cli_errors(session, tmp_path, capsys, monkeypatch):
    config_file = session.save(tmp_path / "session.toml")
    base = ["session", "dask", "--config", str(config_file)]
    assert pyflowreg_main([*base, "--memory", "4GB"]) == 2
    assert "need --jobqueue" in capsys.readouterr().err
    assert pyflowreg_main([*base, "--n-workers", "0"]) == 2
    assert "--n-workers must be >= 1, got 0" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    assert pyflowreg_main([*base, "--jobqueue", "pbs"]) == 1
    assert "pip install dask-jobqueue" in capsys.readouterr().err


# ---------------------------------------------------------------------- job scripts


def _command_argv(line: str) -> list[str]:
    """``pyflowreg`` arguments of a script line ``<python> -m pyflowreg session ...``."""
    words = shlex.split(line)
    return words[words.index("pyflowreg") + 1 :]


def _script_commands(script: str) -> list[list[str]]:
    """The ``pyflowreg`` commands of a script (lines chained with ``&&`` split)."""
    commands = []
    for line in script.splitlines():
        if "-m pyflowreg session" in line and not line.startswith("#"):
            commands += [_command_argv(part) for part in line.split("&&")]
    return commands


EXPECTED = {
    "slurm": (
        "#SBATCH --array=1-3%2",
        "#SBATCH --time=00:30:00",
        "#SBATCH --mem=8G",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --partition=short",
        "#SBATCH --job-name=mysession",
    ),
    "sge": ("#$ -t 1-3", "#$ -tc 2", "#$ -l h_rt=00:30:00", "#$ -l h_vmem=8G", "#$ -pe smp 2"),
    "pbs": ("#PBS -J 1-3", "#PBS -l walltime=00:30:00", "#PBS -l select=1:ncpus=2:mem=8G"),
}
TASK_VARIABLE = {"slurm": "SLURM_ARRAY_TASK_ID", "sge": "SGE_TASK_ID", "pbs": "PBS_ARRAY_INDEX"}
DEPENDENCY = {
    "slurm": "sbatch --dependency=afterok:$JOBID stages23.slurm",
    "sge": "qsub -hold_jid $JOBID stages23.sge",
    "pbs": "qsub -W depend=afterok:$JOBID stages23.pbs",
}


def test_jobscripts_run_the_right_recording_per_task(
    session, reference, tmp_path, no_array_env, capsys
):
    config_file = session.save(tmp_path / "session.toml")
    settings = {"time": "00:30:00", "mem": "8G", "cpus": 2, "partition": "short"}
    tasks = {"pbs": 1, "slurm": 2, "sge": 3}  # 1-based task id -> recording task - 1
    outputs = session.resolve_output_paths().output_root
    for scheduler, task in tasks.items():
        scripts = make_jobscripts(
            config_file, scheduler, **settings, max_parallel=2, job_name="mysession"
        )
        assert scripts.n_tasks == 3
        for directive in EXPECTED[scheduler]:
            assert directive in scripts.stage1.splitlines(), (scheduler, directive)
        assert DEPENDENCY[scheduler] in scripts.submit
        assert DEPENDENCY[scheduler] in scripts.stage1  # explained in the comments
        assert str(config_file.resolve()) in scripts.stage1
        [command] = _script_commands(scripts.stage1)
        assert command == ["session", "array", "--config", str(config_file.resolve())]

        no_array_env.setenv(TASK_VARIABLE[scheduler], str(task))
        assert pyflowreg_main(command) == 0
        no_array_env.delenv(TASK_VARIABLE[scheduler])
        done = [n for n in NAMES if stage_record(outputs / n, "stage1")]
        assert NAMES[task - 1] in done and len(done) == list(tasks).index(scheduler) + 1
    _assert_same_session(session, reference, stages=(1,))

    commands = _script_commands(scripts.stages23)
    assert [c[:2] for c in commands] == [["session", "run"]] * 2 + [["session", "status"]]
    for command in commands:
        assert pyflowreg_main(command) == 0
    capsys.readouterr()
    _assert_same_session(session, reference)


def test_jobscript_cli_prints_and_writes(session, tmp_path, capsys, no_array_env):
    config_file = session.save(tmp_path / "session.toml")
    base = ["session", "jobscript", "--config", str(config_file), "--scheduler", "slurm"]
    assert pyflowreg_main([*base, "--setup", "module load python"]) == 0
    stage1 = capsys.readouterr().out
    assert stage1.startswith("#!/bin/bash\n#SBATCH --job-name=pyflowreg-session\n")
    assert "#SBATCH --array=1-3\n" in stage1 and "\nmodule load python\n" in stage1
    logs = session.root / "logs"  # made now: SLURM opens --output before the job starts
    assert f"#SBATCH --output={logs}/%x_%A_%a.out" in stage1 and logs.is_dir()
    assert pyflowreg_main([*base, "--stage", "2-3"]) == 0
    stages23 = capsys.readouterr().out
    assert "--array" not in stages23 and "#SBATCH --job-name=pyflowreg-session-23" in stages23
    jobs = ["--write", str(tmp_path / "jobs"), "--setup", "module load python"]
    assert pyflowreg_main([*base, *jobs]) == 0
    printed = capsys.readouterr().out
    assert "JOBID=$(sbatch --parsable stage1.slurm)" in printed
    assert (tmp_path / "jobs" / "stage1.slurm").read_text() == stage1
    assert (tmp_path / "jobs" / "stages23.slurm").stat().st_mode & 0o111

    assert pyflowreg_main([*base[:-1], "lsf"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert pyflowreg_main([*base, "--cpus", "0"]) == 2
    assert "cpus must be an int >= 1, got 0" in capsys.readouterr().err


def test_single_recording_pbs_script_names_its_task(tmp_path):
    root = tmp_path / "one"
    root.mkdir()
    tifffile.imwrite(root / "rec_000.tif", np.zeros((2, 8, 8), np.uint16))
    config_file = _config(root).save(tmp_path / "one.toml")
    scripts = make_jobscripts(config_file, "pbs")
    assert "#PBS -J" not in scripts.stage1  # PBS Pro arrays need two or more subjobs
    assert _script_commands(scripts.stage1)[0][-2:] == ["--task-index", "0"]
    paths = write_jobscripts(scripts, tmp_path / "jobs")
    assert [p.name for p in paths] == ["stage1.pbs", "stages23.pbs"]


def _slow_batches(marker: str) -> None:
    """Worker-side: every stage-1 batch sleeps; after the second, ``marker`` is written."""
    from pyflowreg.session import stage1_compensate as stage1

    add = stage1._TemporalAverage.add
    seen = {"batches": 0}

    def add_then_wait(self, batch):
        add(self, batch)
        seen["batches"] += 1
        if seen["batches"] == 2:
            Path(marker).write_text("2")
        time.sleep(1.0)

    stage1._TemporalAverage.add = add_then_wait


@pytest.mark.slow
def test_a_dask_worker_killed_mid_recording(session, reference):
    """SIGKILL of the worker process running a recording: Dask reruns the task on the
    restarted worker, which takes over the dead worker's claim and continues the recording
    from its checkpoint; the outputs equal the sequential run's."""
    config = session.model_copy(update={"pattern": "rec_000.tif"})
    folder = config.resolve_output_paths().output_root / "rec_000"
    marker = session.root / "two-batches"
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as made,
    ):
        made.run(_slow_batches, str(marker))
        [pid] = made.run(os.getpid).values()
        errors = []

        def run():
            try:
                errors.append(run_stage1_dask(config, client=made, claim_wait=5.0))
            except Exception as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists()
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=180)
    assert not thread.is_alive()
    [result] = errors
    assert not isinstance(result, Exception), result
    assert result[1] == ["rec_000"]
    assert json.loads((folder / "run.json").read_text())["resumed_at_frame"] > 0
    assert verify_stage(folder, "stage1") == []
    want = _stage1_outputs(reference.resolve_output_paths().output_root / "rec_000")
    got = _stage1_outputs(folder)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_claimed_error_keeps_its_message_across_processes():
    """What a Dask worker sends back is pickled: the message and the holder survive."""
    import pickle

    from pyflowreg.session._status import RecordingClaimedError

    error = RecordingClaimedError("rec_001 is being processed by pid 7", {"pid": 7})
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is RecordingClaimedError and str(back) == str(error)
    assert back.holder == {"pid": 7} and back.errno == error.errno
