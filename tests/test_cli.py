"""The ``pyflowreg`` command, called in-process through ``main(argv)``.

Inputs are tiny (32 x 32 px, 6 frames, "fast" preset) so that every test runs the whole
pipeline in well under a second once Numba's cache is warm.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from pyflowreg import cli
from pyflowreg.cli import UsageError, main, parse_reference_frames
from pyflowreg.io import open_reader

FAST = ["--quality", "fast", "--executor", "sequential", "--buffer-size", "3"]


def _recording(n_frames: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth random texture shifted by up to ~1.5 px per frame, uint16 ``(T, H, W)``."""
    rng = np.random.default_rng(seed)
    scene = ndimage.gaussian_filter(rng.random((size, size)), 1.5)
    scene = (scene - scene.min()) / np.ptp(scene)
    shifts = rng.uniform(-1.5, 1.5, size=(n_frames, 2))
    frames = [ndimage.shift(scene, s, order=3, mode="reflect") for s in shifts]
    return (np.clip(np.stack(frames), 0, 1) * 4000 + 100).astype(np.uint16)


@pytest.fixture
def tif(tmp_path: Path) -> Path:
    path = tmp_path / "rec.tif"
    tifffile.imwrite(path, _recording())
    return path


def _single_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("pyflowreg: error: ")
    assert "Traceback" not in stderr
    return lines[0]


# ----------------------------------------------------------------------------- compensate


def test_compensate_writes_outputs_and_prints_summary(tif, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["compensate", str(tif), "-o", str(out), *FAST, "--save-w"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "Registered 6 frames" in captured.out
    assert "frames/s" in captured.out
    assert "displacement:" in captured.out and " px" in captured.out
    assert "correlation:" in captured.out and "before" in captured.out
    assert str(out / "compensated.HDF5") in captured.out
    assert (out / "compensated.HDF5").is_file()
    assert (out / "w.h5").is_file()
    stats = np.load(out / "statistics.npz")
    assert stats["correlation"].shape == (6,)
    saved = json.loads((out / "options.json").read_text())
    assert saved["quality_setting"] == "fast"
    assert saved["buffer_size"] == 3
    assert saved["save_w"] is True


def test_several_inputs_are_channels(tmp_path, capsys):
    red, green = tmp_path / "red.tif", tmp_path / "green.tif"
    tifffile.imwrite(red, _recording(seed=0))
    tifffile.imwrite(green, _recording(seed=0)[:, ::-1])
    out = tmp_path / "out"
    status = main(["compensate", str(red), str(green), "-o", str(out), *FAST, "-q"])
    assert status == 0, capsys.readouterr().err
    saved = json.loads((out / "options.json").read_text())
    assert saved["input_file"] == [str(red), str(green)]
    with open_reader(out / "compensated.HDF5") as reader:
        assert reader.shape == (6, 32, 32, 2)
    assert main(["report", str(out)]) == 0
    html = (out / "report" / "report.html").read_text()
    before = re.search(r"before \(higher = sharper\)</td><td>([^<]*)</td>", html)
    assert before is not None and len(before.group(1).split(", ")) == 2  # one per channel


def test_progress_bar_on_a_terminal(tif, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(["compensate", str(tif), "-o", str(tmp_path / "out"), *FAST]) == 0
    err = capsys.readouterr().err
    assert "registering" in err and "6/6" in err and "frame/s" in err


def test_quiet_prints_nothing(tif, tmp_path, capsys):
    status = main(["compensate", str(tif), "-o", str(tmp_path / "out"), *FAST, "--quiet"])
    captured = capsys.readouterr()
    assert status == 0
    assert captured.out == ""
    assert captured.err == ""


_CONFIG_YAML = "input_file: {}\nquality_setting: fast\nbuffer_size: 2\nsave_w: true\nalpha: 2.0\n"
_CONFIG_TOML = (
    'input_file = "{}"\nquality_setting = "fast"\nbuffer_size = 2\nsave_w = true\nalpha = 2.0\n'
)


@pytest.mark.parametrize(("suffix", "template"), [(".yaml", _CONFIG_YAML), (".toml", _CONFIG_TOML)])
def test_config_file_with_flag_override(tif, tmp_path, capsys, suffix, template):
    config = tmp_path / f"options{suffix}"
    config.write_text(template.format(tif))
    out = tmp_path / "out"
    argv = ["compensate", "--config", str(config), "-o", str(out), "--buffer-size", "4"]
    status = main([*argv, "--no-save-w", "--executor", "sequential"])
    assert status == 0, capsys.readouterr().err
    saved = json.loads((out / "options.json").read_text())
    assert saved["buffer_size"] == 4  # flag beats the file
    assert saved["save_w"] is False  # flag beats the file
    assert saved["quality_setting"] == "fast"  # from the file
    assert saved["alpha"] == [2.0, 2.0]  # from the file
    assert not (out / "w.h5").exists()


def test_reference_frames_reach_the_options(tif, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["compensate", str(tif), "-o", str(out), *FAST, "--reference-frames", "1:4"]
    assert main(argv) == 0, capsys.readouterr().err
    saved = json.loads((out / "options.json").read_text())
    assert saved["reference_frames"] == {"start": 1, "stop": 4, "step": 1}


def test_alpha_auto_and_interpolation_reach_the_run(tmp_path, capsys):
    path = tmp_path / "rec.tif"
    tifffile.imwrite(path, _recording(n_frames=6, size=64))
    out = tmp_path / "out"
    argv = ["compensate", str(path), "-o", str(out), *FAST, "--alpha", "auto"]
    assert main([*argv, "--interpolation", "bspline"]) == 0, capsys.readouterr().err
    saved = json.loads((out / "options.json").read_text())
    assert saved["alpha"] == "auto" and saved["interpolation_method"] == "bspline"
    run = json.loads((out / "run.json").read_text())
    selection = run["alpha_selection"]
    assert selection["frames"] == [0, 1, 3, 5]  # four, spread over the reference frames
    assert len(selection["scores"]) == len(selection["candidates"])
    assert run["alpha"] == [selection["alpha"]] * 2


@pytest.mark.parametrize(
    ("text", "expected"), [("auto", "auto"), ("AUTO", "auto"), ("4", 4.0), ("2,3", (2.0, 3.0))]
)
def test_alpha_argument(text, expected):
    assert cli._alpha_arg(text) == expected


@pytest.mark.parametrize("text", ["smooth", "1,2,3", ""])
def test_alpha_argument_errors(text, tif, capsys):
    assert main(["compensate", "x.tif", "--alpha", text]) == 2
    assert "--alpha" in capsys.readouterr().err


def test_interpolation_choices_are_the_warp_kernels():
    from pyflowreg.core.warp import METHODS

    assert set(cli.INTERPOLATIONS) == set(METHODS)


def test_device_goes_to_backend_params(tif, tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    argv = ["compensate", str(tif), "-o", str(out), *FAST, "--backend", "flowreg_torch"]
    assert main([*argv, "--device", "cpu"]) == 0, capsys.readouterr().err
    saved = json.loads((out / "options.json").read_text())
    assert saved["flow_backend"] == "flowreg_torch"
    assert saved["backend_params"] == {"device": "cpu"}


def test_runtime_failure_is_one_line(tif, tmp_path, capsys):
    pytest.importorskip("torch")
    out = str(tmp_path / "out")
    argv = ["compensate", str(tif), "-o", out, *FAST, "--backend", "flowreg_torch"]
    status = main([*argv, "--device", "nonsense"])  # fails when the backend is built
    line = _single_error_line(capsys.readouterr().err)
    assert status == 1
    assert "motion correction of" in line and "device" in line
    assert not (tmp_path / "out" / "compensated.HDF5").exists()


def test_device_without_a_gpu_backend_is_a_usage_error(tif, tmp_path, capsys):
    argv = ["compensate", str(tif), "-o", str(tmp_path / "out"), *FAST, "--device", "cuda"]
    status = main(argv)  # flowreg would ignore the device: say so before any work
    line = _single_error_line(capsys.readouterr().err)
    assert status == 2 and "--device applies to the GPU backends" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0:50", range(0, 50)),
        (":8", range(0, 8)),
        ("2:10:2", range(2, 10, 2)),
        ("1,2,3", [1, 2, 3]),
        ("7", [7]),
    ],
)
def test_parse_reference_frames(text, expected):
    assert parse_reference_frames(text) == expected


def test_parse_reference_frames_image_and_errors(tmp_path):
    image = tmp_path / "ref.tif"
    tifffile.imwrite(image, np.ones((8, 8), np.uint16))
    assert parse_reference_frames(str(image)) == image
    with pytest.raises(UsageError, match="selects no frames"):
        parse_reference_frames("5:5")
    with pytest.raises(UsageError, match=r"START:STOP.*got 'first ten'"):
        parse_reference_frames("first ten")


def test_scheduler_selects_dask():
    from pyflowreg.motion_correction import RegistrationConfig

    args = cli.build_parser().parse_args(["compensate", "x.tif", "--scheduler", "tcp://h:8786"])
    if "dask_address" in RegistrationConfig.__dataclass_fields__:
        config = cli._registration_config(args)
        assert config.parallelization == "dask"
        assert config.dask_address == "tcp://h:8786"
    else:
        with pytest.raises(UsageError, match="--scheduler is not supported"):
            cli._registration_config(args)


def test_scheduler_with_another_executor(capsys):
    argv = ["compensate", "x.tif", "--scheduler", "tcp://h:8786", "--executor", "threading"]
    assert main(argv) == 2
    line = _single_error_line(capsys.readouterr().err)
    assert line.endswith("--scheduler needs --executor dask, got --executor threading")


# ----------------------------------------------------------------------------- errors


def test_missing_input_is_one_line(tmp_path, capsys):
    status = main(["compensate", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "out")])
    line = _single_error_line(capsys.readouterr().err)
    assert status == 2  # an input error, found before any work
    assert "not found" in line and "nope.tif" in line


def test_bad_option_value_is_a_usage_error(tif, tmp_path, capsys):
    status = main(["compensate", str(tif), "-o", str(tmp_path / "out"), "--buffer-size", "0"])
    line = _single_error_line(capsys.readouterr().err)
    assert status == 2
    assert line == "pyflowreg: error: invalid option: buffer_size must be >= 1, got 0"


def test_unknown_backend_is_a_usage_error(tif, tmp_path, capsys):
    status = main(["compensate", str(tif), "-o", str(tmp_path / "out"), "--backend", "foo"])
    line = _single_error_line(capsys.readouterr().err)
    assert status == 2
    assert "flow_backend must be one of" in line and "'flowreg'" in line and "'foo'" in line


def test_bad_output_format_lists_the_choices(tif, tmp_path, capsys):
    argv = ["compensate", str(tif), "-o", str(tmp_path / "out"), "--output-format", "gif"]
    status = main(argv)
    line = _single_error_line(capsys.readouterr().err)
    assert status == 2
    assert "output_format must be one of" in line and "'gif'" in line


def test_bad_config_option_is_a_usage_error(tif, tmp_path, capsys):
    config = tmp_path / "options.json"
    config.write_text(json.dumps({"input_file": str(tif), "bufer_size": 3}))
    status = main(["compensate", "--config", str(config)])
    line = _single_error_line(capsys.readouterr().err)
    assert status == 2
    assert "unknown option 'bufer_size'" in line and "buffer_size" in line


def test_no_input_at_all(capsys):
    assert main(["compensate"]) == 2
    assert "no input file" in _single_error_line(capsys.readouterr().err)


def test_bad_n_jobs(capsys):
    assert main(["compensate", "x.tif", "-j", "0"]) == 2
    assert _single_error_line(capsys.readouterr().err).endswith(
        "--n-jobs must be -1 or >= 1, got 0"
    )


def test_argparse_usage_error_exits_2(capsys):
    assert main(["compensate", "x.tif", "--quality", "best"]) == 2
    assert "invalid choice: 'best'" in capsys.readouterr().err


def test_unwritable_output_folder(tif, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    status = main(["compensate", str(tif), "-o", str(blocker / "out"), *FAST])
    line = _single_error_line(capsys.readouterr().err)
    assert status == 2
    assert "cannot create the output folder" in line and "file.txt" in line


def test_debug_shows_the_traceback(tmp_path, capsys):
    status = main(["compensate", str(tmp_path / "nope.tif"), "--debug"])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" in err
    assert err.rstrip().splitlines()[-1].startswith("pyflowreg: error: ")


def test_keyboard_interrupt_returns_130(tif, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pyflowreg.motion_correction.compensate_recording", interrupted)
    status = main(["compensate", str(tif), "-o", str(tmp_path / "out"), *FAST])
    assert status == 130
    assert _single_error_line(capsys.readouterr().err) == "pyflowreg: error: interrupted"


def test_help_through_python_m():
    proc = subprocess.run(
        [sys.executable, "-m", "pyflowreg", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    for command in ("compensate", "demo", "info", "backends", "report", "bench"):
        assert command in proc.stdout


# ----------------------------------------------------------------------------- info, backends


def test_info_lists_versions_and_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pyflowreg ")
    for name in ("python", "numpy", "numba", "matplotlib", "executors:", "flow backends:"):
        assert name in out
    assert "sequential" in out and "flowreg" in out


def test_backends_marks_availability(capsys):
    assert main(["backends"]) == 0
    lines = capsys.readouterr().out.splitlines()
    sequential = next(line for line in lines if line.split()[:1] == ["sequential"])
    assert "available" in sequential and "unavailable" not in sequential
    assert any(line.split()[:1] == ["flowreg"] for line in lines)
    for line in lines:
        if "unavailable" in line:
            assert line.split("unavailable: ", 1)[1].strip()  # a reason is given


# ----------------------------------------------------------------------------- report, demo


def test_report_command(tif, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compensate", str(tif), "-o", str(out), *FAST, "--save-w", "-q"]) == 0
    assert main(["report", str(out)]) == 0
    assert str(out / "report" / "report.html") in capsys.readouterr().out
    assert (out / "report" / "report.html").stat().st_size > 0


def test_report_of_a_folder_without_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "not the output folder of a finished run" in _single_error_line(capsys.readouterr().err)


def test_report_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(tmp_path)]) == 1
    assert 'pip install "pyflowreg[plot]"' in _single_error_line(capsys.readouterr().err)


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "-o", str(out), "--size", "48", "--frames", "8", "--quality", "fast"]
    status = main([*argv, "--executor", "sequential"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "endpoint error:" in captured.out
    assert "frames/s" in captured.out
    assert "Report:" in captured.out
    assert (out / "demo_input.h5").is_file()
    assert (out / "report" / "report.html").is_file()
    assert (out / "report" / "mean_images.png").stat().st_size > 0


def test_demo_without_matplotlib_still_reports_accuracy(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    argv = ["demo", "-o", str(tmp_path / "demo"), "--size", "32", "--frames", "4"]
    status = main([*argv, "--quality", "fast", "--executor", "sequential", "-q"])
    out = capsys.readouterr().out
    assert status == 0
    assert "endpoint error:" in out
    assert 'pip install "pyflowreg[plot]"' in out
    assert not (tmp_path / "demo" / "report").exists()


def test_bench_prints_one_row_per_preset(capsys):
    assert main(["bench", "--size", "32", "--frames", "2", "--presets", "fast", "balanced"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    by_preset = {row[0]: row for row in rows if row and row[0] in ("fast", "balanced")}
    assert set(by_preset) == {"fast", "balanced"}
    for row in by_preset.values():
        fps, ms, epe_mean, epe_p95 = map(float, row[1:5])
        assert fps > 0 and ms > 0
        assert 0 <= epe_mean <= epe_p95


def test_describe_is_one_line():
    message = cli._describe(OSError(13, "Permission denied", "/data/x.h5"))
    assert message == "/data/x.h5: Permission denied"
    assert "\n" not in cli._describe(ValueError("two\nlines"))


def test_an_error_while_unwinding_from_ctrl_c_is_still_an_interruption(monkeypatch, capsys):
    """Ctrl-C that surfaces as another error (here a lock the interrupt left released, as
    happens when SIGINT lands inside a pool's shutdown) exits 130 with one line."""
    import os
    import signal
    import threading
    import time

    def command(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the terminal's Ctrl-C
            time.sleep(5)
        except KeyboardInterrupt:
            threading.Lock().release()  # RuntimeError: release unlocked lock

    real = cli.build_parser

    class Parser:
        def parse_args(self, argv):
            args = real().parse_args(argv)
            args.func = command
            return args

    monkeypatch.setattr(cli, "build_parser", Parser)
    assert cli.main(["info"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "release unlocked lock" not in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
