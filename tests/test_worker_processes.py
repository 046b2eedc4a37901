"""The multiprocessing executor seen from outside: user scripts run as subprocesses.

Scripts here are written to a temporary folder and run with the test's interpreter; each one
registers a tiny synthetic recording (6 frames of 32x32, ``quality_setting="fast"``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process handling")

#: A user script, as most notebooks-turned-scripts look: everything at top level. ``{body}``
#: is the registration, indented under a main guard or not.
SCRIPT = """\
import sys
from pathlib import Path

import numpy as np

from pyflowreg.motion_correction import OFOptions, compensate_arr, compensate_recording
from pyflowreg.motion_correction.compensate_recording import RegistrationConfig

out = Path(sys.argv[1])
config = RegistrationConfig(parallelization="multiprocessing", n_jobs=2)
y, x = np.mgrid[:32, :32]
video = np.stack(
    [1000 + 400 * np.sin((x + 0.4 * t) / 4.0) * np.cos((y - 0.3 * t) / 5.0) for t in range(6)]
).astype(np.uint16)
{guard}
{body}
"""

BODY = """\
# twice: the second run takes over the idle workers of the first, so that every frame is
# registered by a worker (the first run registers some in this process while they start)
for _ in range(2):
    registered, w = compensate_arr(
        video, video[0], OFOptions(quality_setting="fast", buffer_size=2),
        registration_config=config,
    )
np.save(out / "arr_registered.npy", registered)
np.save(out / "arr_w.npy", w)
np.save(out / "video.npy", video)
options = OFOptions(
    input_file=out / "video.npy", output_path=out / "recording", output_format="NPY",
    quality_setting="fast", buffer_size=2, save_w=True,
)
result = compensate_recording(options, config=config)
print("executor", result.executor)
"""


def write_script(folder: Path, guarded: bool) -> Path:
    if guarded:
        text = SCRIPT.format(guard='if __name__ == "__main__":', body=textwrap.indent(BODY, "    "))
    else:
        text = SCRIPT.format(guard="", body=BODY)
    path = folder / ("guarded.py" if guarded else "unguarded.py")
    path.write_text(text)
    return path


def run_script(script: Path, out: Path, stdin: bool = False) -> subprocess.CompletedProcess:
    out.mkdir()
    if stdin:
        with script.open() as source:
            args = [sys.executable, "-", str(out)]
            done = subprocess.run(args, stdin=source, capture_output=True, text=True, timeout=240)
    else:
        args = [sys.executable, str(script), str(out)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return done


def outputs(out: Path) -> dict[str, bytes]:
    """Every .npy file the script wrote (registered frames and fields), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.npy"))}


@pytest.mark.timeout(600)
def test_scripts_without_a_main_guard_give_the_guarded_output(tmp_path):
    guarded = write_script(tmp_path, guarded=True)
    unguarded = write_script(tmp_path, guarded=False)
    runs = {
        "guarded": run_script(guarded, tmp_path / "guarded"),
        "unguarded": run_script(unguarded, tmp_path / "unguarded"),
        "stdin": run_script(unguarded, tmp_path / "stdin", stdin=True),
    }
    for name, done in runs.items():
        assert "executor multiprocessing" in done.stdout, name
        # the workers did not run the script: no second registration, no failed process
        # start in a worker, no semaphores left behind by one
        assert done.stdout.count("executor") == 1, name
        assert "Traceback" not in done.stderr, (name, done.stderr)
        assert "leaked" not in done.stderr, (name, done.stderr)
    expected = outputs(tmp_path / "guarded")
    assert {"arr_registered.npy", "arr_w.npy"} <= set(expected)
    assert any(name.startswith("recording") for name in expected)
    assert len(expected) >= 5  # video, arr x 2, recording: frames and fields
    for name in ("unguarded", "stdin"):
        assert outputs(tmp_path / name) == expected, name
    # and the frames did move: the fields are not all zero
    assert np.abs(np.load(tmp_path / "guarded" / "arr_w.npy")).max() > 0.05


SPAWN_SCRIPT = """\
import numpy as np

from pyflowreg.backends.cpu import FlowregBackend
from pyflowreg.core import FlowParameters
from pyflowreg.executors import MultiprocessingExecutor, SequentialExecutor, WarpSettings

y, x = np.mgrid[:32, :32]
filtered = np.stack(
    [0.5 + 0.2 * np.sin((x + 0.4 * t) / 4.0) * np.cos((y - 0.3 * t) / 5.0) for t in range(6)]
)[..., None].astype(np.float32)
raw = np.round(filtered * 4000).astype(np.uint16)
params = FlowParameters(min_level=0, iterations=3)
outputs = []
for cls, kwargs in ((SequentialExecutor, {}), (MultiprocessingExecutor, {"start_method": "spawn"})):
    with cls(2, FlowregBackend, params, {}, WarpSettings(), **kwargs) as ex:
        if kwargs:
            assert ex.wait_until_started(timeout=120)  # every frame goes to a spawned worker
        ex.set_reference(filtered[0])
        outputs.append(ex.process_batch(raw, filtered, None))
(reg, w), (reg_mp, w_mp) = outputs
assert np.array_equal(reg, reg_mp) and np.array_equal(w, w_mp)
print("same")
"""


@pytest.mark.timeout(300)
def test_spawned_workers_do_not_run_an_unguarded_script(tmp_path):
    script = tmp_path / "spawn_unguarded.py"
    script.write_text(SPAWN_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("same") == 1
    assert "Traceback" not in done.stderr and "leaked" not in done.stderr, done.stderr


class ScriptBackend:
    """Stands for a flow-backend class defined in the user's script."""


def test_workers_import_the_script_only_for_a_factory_defined_there(monkeypatch):
    import pickle

    from pyflowreg.backends.cpu import FlowregBackend
    from pyflowreg.executors._context import refers_to_main, worker_context

    ours = pickle.dumps((FlowregBackend, {"name": "__main__ x"}))
    assert not refers_to_main(ours)
    for method in ("spawn", "forkserver"):
        context = worker_context(method, ours)
        assert context.get_start_method() == method
        assert context.Process.__module__ == "pyflowreg.executors._context"
    # a class of the script: the standard context, whose workers import the script to find it
    # (which then needs its main guard)
    monkeypatch.setattr(ScriptBackend, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "ScriptBackend", ScriptBackend, raising=False)
    for protocol in (0, pickle.DEFAULT_PROTOCOL):
        theirs = pickle.dumps((ScriptBackend, {}), protocol=protocol)
        assert refers_to_main(theirs)
        assert worker_context("spawn", theirs).Process.__module__ == "multiprocessing.context"


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="lists /dev/shm")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("delay", [0.0, 2.5], ids=["while-starting", "mid-run"])
def test_ctrl_c_in_a_multiprocessing_run_is_clean(tmp_path, delay):
    """SIGINT to the process group, as a terminal sends it on Ctrl-C, while the workers
    start (the fork server warming up, the caller registering frames itself) or in the middle
    of the run: exit code 130, one line instead of a traceback per worker, no shared memory
    left, no output that looks complete."""
    import os
    import signal
    import time

    y, x = np.mgrid[:96, :96]
    video = np.stack(
        [1000 + 400 * np.sin((x + 0.1 * t) / 4.0) * np.cos((y - 0.1 * t) / 5.0) for t in range(300)]
    ).astype(np.uint16)
    np.save(tmp_path / "long.npy", video)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "pyflowreg", "compensate", str(tmp_path / "long.npy")]
    args += ["-o", str(out), "--executor", "multiprocessing", "-j", "2", "--quality", "balanced"]
    args += ["--buffer-size", "10", "--output-format", "NPY", "--save-w"]
    args += ["--reference-frames", "0:4"]
    child = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        blocks = f"pyflowreg_{child.pid}_*"
        deadline = time.monotonic() + 120
        while not list(Path("/dev/shm").glob(blocks)) and time.monotonic() < deadline:
            assert child.poll() is None, child.communicate()
            time.sleep(0.05)
        time.sleep(delay)
        assert child.poll() is None, "the run ended before the interrupt: make it longer"
        os.killpg(child.pid, signal.SIGINT)
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert "leaked" not in stderr, stderr
    assert list(Path("/dev/shm").glob(blocks)) == []
    looks_complete = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert looks_complete == [], looks_complete
