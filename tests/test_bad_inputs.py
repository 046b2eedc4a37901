"""Every bad input fails before any work, as a ValueError, TypeError or OSError naming the problem.

One table, one line per case: ``(case, make, exception, message)``. ``make(d, mp)`` builds the
arguments of :func:`compensate_recording` in the folder ``d`` (``mp``: pytest's monkeypatch)
and may itself raise (invalid options fail at construction). The test replaces the registration
loop by one that fails the test: no case may reach it, and no case may leave an output or a
staging folder behind. The CLI turns the same errors into one line and exit status 2.
"""

# ruff: noqa: E501 - one line per case

from __future__ import annotations

import importlib

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile

from pyflowreg.cli import main
from pyflowreg.io import CorruptFileError, DatasetNotFoundError, open_writer
from pyflowreg.io import base as io_base
from pyflowreg.motion_correction import (
    OFOptions,
    RegistrationConfig,
    RegistrationError,
    compensate_recording,
)
from pyflowreg.motion_correction import _preflight as preflight
from pyflowreg.motion_correction._preflight import InsufficientSpaceError

cr = importlib.import_module("pyflowreg.motion_correction.compensate_recording")
T, H, W = 4, 16, 16
VIDEO = np.random.default_rng(0).integers(0, 1000, (T, H, W), dtype=np.uint16)


def opts(d, source, **kw):
    return {"options": OFOptions(input_file=source, output_path=d / "out", **kw)}


def h5(d, data, name="x", **kw):
    path = d / "in.h5"
    with h5py.File(path, "w") as f:
        if data is not None:
            f.create_dataset(name, data=data)
    return opts(d, path, **kw)


def h5_vlen_strings(d):
    path = d / "in.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=["a", "bc"], dtype=h5py.string_dtype())
    return opts(d, path)


def npy(d, data, **kw):
    np.save(d / "in.npy", data, allow_pickle=True)
    return opts(d, d / "in.npy", **kw)


def mat(d, variables):
    scipy.io.savemat(d / "in.mat", variables)
    return opts(d, d / "in.mat")


def raw(d, name, content=b"this is not a video file at all" * 10):
    (d / name).write_bytes(content)
    return opts(d, d / name)


def truncated_h5(d):
    with open_writer(d / "in.h5") as writer:
        writer.write(VIDEO)
    data = (d / "in.h5").read_bytes()
    (d / "in.h5").write_bytes(data[: len(data) // 3])
    return opts(d, d / "in.h5")


def broken_zarr(d):
    (d / "in.zarr").mkdir()
    (d / "in.zarr" / "zarr.json").write_text("{not json")
    return opts(d, d / "in.zarr")


def with_nan(d, frame, value=np.nan, fmt="h5"):
    video = VIDEO.astype(np.float32)
    video[frame, 3, 3] = value
    if fmt == "array":
        return opts(d, video)
    return h5(d, video, name="mov") if fmt == "h5" else npy(d, video)


def good(d, **kw):
    return h5(d, VIDEO, name="mov", **kw)


def reference_arg(d, image):
    return {**good(d), "reference_frame": image}


def reference_file(d, image):
    tifffile.imwrite(d / "ref.tif", image)
    return good(d, reference_frames=d / "ref.tif")


def input_in_output(d):
    (d / "out").mkdir()
    with open_writer(d / "out" / "compensated.HDF5") as writer:
        writer.write(VIDEO)
    return opts(d, d / "out" / "compensated.HDF5")


def file_at_output(d):
    (d / "out").write_text("a file")
    return good(d)


def under_a_file(d):
    (d / "blocker").write_text("a file")
    source = good(d)["options"].input_file
    return {"options": OFOptions(input_file=source, output_path=d / "blocker" / "out")}


def unreadable(d, mp):
    mp.setattr(io_base, "readable", lambda path: False)  # chmod does not stop root
    return good(d)


def read_only(d, mp):
    mp.setattr(preflight, "writable", lambda path: False)  # chmod does not stop root
    return good(d)


def small_disk(d, mp, **kw):
    mp.setattr(preflight, "free_bytes", lambda path: 50_000)
    return good(d, **kw)


def two_files(d, second):
    np.save(d / "a.npy", VIDEO)
    if second is not None:
        np.save(d / "b.npy", second)
    return opts(d, [d / "a.npy", d / "b.npy"])


def with_config(d, config):
    return {**good(d), "config": config}


S = r"a video is a 3-D \(T, H, W\) or 4-D \(T, H, W, C\) array of integers or floating"

CASES = [
    # options, rejected at construction (pydantic's ValidationError is a ValueError)
    ("buffer_size 0", lambda d, mp: good(d, buffer_size=0), ValueError, "buffer_size must be >= 1, got 0"),
    ("unknown quality", lambda d, mp: good(d, quality_setting="best"), ValueError, "quality_setting"),
    ("unknown output format", lambda d, mp: good(d, output_format="gif"), ValueError, "output_format must be one of"),
    ("negative alpha", lambda d, mp: good(d, alpha=-1), ValueError, "alpha"),
    ("sigma of wrong shape", lambda d, mp: good(d, sigma=[[1, 2]]), ValueError, "sigma"),
    ("misspelt option", lambda d, mp: good(d, bufer_size=3), ValueError, "unknown option 'bufer_size'.*buffer_size"),
    ("iterations 0", lambda d, mp: good(d, iterations=0), ValueError, "iterations"),
    ("bin_size 0", lambda d, mp: good(d, bin_size=0), ValueError, "bin_size"),
    ("output dtype complex", lambda d, mp: good(d, output_dtype="complex64"), ValueError, "output_dtype"),
    ("config of another type", lambda d, mp: with_config(d, {"n_jobs": 2}), TypeError, "config must be a RegistrationConfig, got dict"),
    ("n_jobs 0", lambda d, mp: with_config(d, RegistrationConfig(n_jobs=0)), ValueError, "n_jobs must be -1 or >= 1, got 0"),
    # files that cannot be read
    ("missing file", lambda d, mp: opts(d, d / "nope.h5"), FileNotFoundError, r"nope\.h5"),
    ("unknown extension", lambda d, mp: raw(d, "in.avi"), ValueError, r"extension '\.avi'.*known formats"),
    ("junk .h5", lambda d, mp: raw(d, "in.h5"), CorruptFileError, r"in\.h5' is corrupt or unreadable"),
    ("junk .tif", lambda d, mp: raw(d, "in.tif"), CorruptFileError, r"in\.tif' is corrupt or unreadable"),
    ("junk .npy", lambda d, mp: raw(d, "in.npy"), CorruptFileError, r"in\.npy' is corrupt or unreadable"),
    ("junk .mat", lambda d, mp: raw(d, "in.mat"), CorruptFileError, r"in\.mat' is corrupt or unreadable"),
    ("empty .tif", lambda d, mp: raw(d, "in.tif", b""), CorruptFileError, r"in\.tif' is corrupt or unreadable"),
    ("truncated .h5", lambda d, mp: truncated_h5(d), CorruptFileError, r"in\.h5' is corrupt or unreadable"),
    ("damaged zarr store", lambda d, mp: broken_zarr(d), CorruptFileError, r"in\.zarr' is corrupt or unreadable"),
    ("second channel file missing", lambda d, mp: two_files(d, None), FileNotFoundError, r"b\.npy"),
    # datasets that are there but hold no video
    ("h5 without datasets", lambda d, mp: h5(d, None), DatasetNotFoundError, r"no 3-D or 4-D dataset found in '.*in\.h5'; available datasets: none"),
    ("h5 scalar dataset", lambda d, mp: h5(d, np.float32(3)), ValueError, rf"no video in '.*in\.h5': dataset 'x' has shape \(\) \(a scalar, dtype float32\); {S}"),
    ("h5 1-D dataset", lambda d, mp: h5(d, np.zeros(5)), ValueError, r"dataset 'x' has shape \(5,\) \(1-D, dtype float64\)"),
    ("h5 5-D dataset", lambda d, mp: h5(d, np.zeros((2, 2, 3, 4, 4))), ValueError, r"dataset 'x' has shape \(2, 2, 3, 4, 4\) \(5-D"),
    ("h5 complex dataset", lambda d, mp: h5(d, np.zeros((3, 8, 8), complex)), TypeError, rf"in\.h5': dataset 'x' has dtype complex128; {S}"),
    ("h5 fixed-length strings", lambda d, mp: h5(d, np.array([b"ab", b"cd"])), TypeError, r"dataset 'x' has dtype \|S2"),
    ("h5 variable-length strings", lambda d, mp: h5_vlen_strings(d), TypeError, r"dataset 'x' has dtype object"),
    ("h5 boolean video", lambda d, mp: h5(d, VIDEO > 500), TypeError, r"in\.h5 holds a boolean video"),
    ("h5 named dataset missing", lambda d, mp: h5(d, VIDEO, name="mov", dataset_name="frames"), DatasetNotFoundError, r"dataset 'frames' not found in '.*in\.h5'; available datasets: 'mov' \(4, 16, 16\)"),
    ("h5 named dataset 1-D", lambda d, mp: h5(d, np.zeros(5), dataset_name="x"), ValueError, r"dataset 'x' in '.*in\.h5' has shape \(5,\) \(1-D, dtype float64\)"),
    ("npy complex", lambda d, mp: npy(d, np.zeros((3, 8, 8), np.complex64)), TypeError, rf"in\.npy' holds dtype complex64 \(shape \(3, 8, 8\)\); {S}"),
    ("npy 1-D", lambda d, mp: npy(d, np.zeros(7)), ValueError, r"in\.npy' holds an array of shape \(7,\) \(1-D\)"),
    ("npy scalar", lambda d, mp: npy(d, np.float64(1)), ValueError, r"in\.npy' holds an array of shape \(\) \(a scalar\)"),
    ("npy object array", lambda d, mp: npy(d, np.array([None, 1], dtype=object)), TypeError, rf"in\.npy' holds dtype object \(shape \(2,\)\); {S}"),
    ("npy without frames", lambda d, mp: npy(d, np.zeros((0, 8, 8), np.uint16)), ValueError, r"in\.npy has no frames \(shape \(0, 8, 8, 1\)\)"),
    ("npy frames of 1 row", lambda d, mp: npy(d, np.zeros((3, 1, 8), np.uint16)), ValueError, r"in\.npy has frames of 1 x 8 pixels; at least 2 x 2"),
    ("mat v5 with only text and a struct", lambda d, mp: mat(d, {"note": "hello", "meta": {"a": 1}}), TypeError, r"no video in '.*in\.mat': variable 'note' has dtype char; variable 'meta' has dtype struct"),
    ("input not readable", lambda d, mp: unreadable(d, mp), PermissionError, r"input file is not readable \(permission denied\): '.*in\.h5'"),
    ("mat v5 complex", lambda d, mp: mat(d, {"mov": np.zeros((8, 8, 3), complex)}), TypeError, r"in\.mat' holds dtype complex128"),
    ("channel files differ in size", lambda d, mp: two_files(d, VIDEO[:, :8]), ValueError, r"a\.npy.*b\.npy|differ"),
    # frames that are not finite
    ("NaN in frame 2 (HDF5)", lambda d, mp: with_nan(d, 2), ValueError, r"frame 2 of .*in\.h5 contains NaN or inf values"),
    ("inf in frame 3 (NPY)", lambda d, mp: with_nan(d, 3, np.inf, "npy"), ValueError, r"frame 3 of .*in\.npy contains NaN or inf values"),
    ("-inf in frame 0 (array)", lambda d, mp: with_nan(d, 0, -np.inf, "array"), ValueError, r"frame 0 of array \(4, 16, 16\) contains NaN or inf"),
    # reference
    ("reference frames outside the video", lambda d, mp: good(d, reference_frames=[0, 50]), ValueError, r"reference_frames \[50\] out of range for a video of 4 frames.*in\.h5"),
    ("reference image of wrong size", lambda d, mp: reference_arg(d, np.zeros((8, 8))), ValueError, r"reference image for .*in\.h5: reference has shape \(8, 8, 1\) but the frames are \(H, W, C\) = \(16, 16, 1\)"),
    ("reference image complex", lambda d, mp: reference_arg(d, np.zeros((H, W), complex)), TypeError, r"reference image for .*in\.h5: reference must be a real numeric array, got dtype complex128"),
    ("reference image with NaN", lambda d, mp: reference_arg(d, np.full((H, W), np.nan)), ValueError, r"reference image for .*in\.h5: reference contains NaN or inf values"),
    ("reference file of wrong size", lambda d, mp: reference_file(d, np.zeros((8, 8), np.float32)), ValueError, r"reference .*ref\.tif for .*in\.h5: reference has shape \(8, 8, 1\)"),
    ("reference file missing", lambda d, mp: good(d, reference_frames=d / "nope.tif"), FileNotFoundError, r"nope\.tif"),
    ("weight map of wrong size", lambda d, mp: good(d, weight=np.ones((8, 8))), ValueError, r"weight map has shape \(8, 8\) but the frames of .*in\.h5 are \(16, 16, 1\)"),
    ("sigma rows for 3 channels, video has 2", lambda d, mp: h5(d, np.stack([VIDEO] * 2, -1), name="mov", sigma=[[1, 1, 0.5]] * 3), ValueError, r"sigma has 3 rows but the video has 2 channels \(.*in\.h5\)"),
    # output folder
    ("output path is a file", lambda d, mp: file_at_output(d), NotADirectoryError, r"output_path .*out is a file, not a folder"),
    ("output path under a file", lambda d, mp: under_a_file(d), NotADirectoryError, r"cannot create the output folder .*blocker is a file"),
    ("output folder not writable", lambda d, mp: read_only(d, mp), PermissionError, r"output folder .*out is not writable"),
    ("output would replace the input", lambda d, mp: input_in_output(d), ValueError, r"the output compensated\.HDF5 in .*out would replace the input file"),
    ("too little disk space", lambda d, mp: small_disk(d, mp, save_w=True), InsufficientSpaceError, r"not enough free disk space in .*out for the outputs: about 16\.\d MiB needed \(compensated 2\.0 KiB, w 8\.0 KiB"),
]  # fmt: skip


@pytest.fixture
def no_work(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("registration started although the input is bad")

    monkeypatch.setattr(cr, "run_registration", fail)


@pytest.mark.parametrize(
    ("make", "error", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_fails_before_any_work(tmp_path, monkeypatch, no_work, make, error, message):
    out = tmp_path / "out"
    with pytest.raises(error, match=message) as info:
        kwargs = make(tmp_path, monkeypatch)
        before = sorted(out.iterdir()) if out.is_dir() else []
        compensate_recording(**kwargs)
    assert isinstance(info.value, ValueError | TypeError | OSError)
    assert not isinstance(info.value, RegistrationError)
    if out.is_dir():  # no output, no staging folder, no lock
        assert sorted(out.iterdir()) == before


def test_the_table_is_long_enough():
    assert len(CASES) >= 40


CLI_CASES = ["h5 scalar dataset", "NaN in frame 2 (HDF5)", "output path is a file", "reference frames outside the video", "junk .tif"]  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_prints_one_line_and_exits_2(tmp_path, monkeypatch, no_work, capsys, case):
    make = {c[0]: c[1] for c in CASES}[case]
    options = make(tmp_path, monkeypatch)["options"]
    argv = ["compensate", str(options.input_file), "-o", str(options.output_path), "-q"]
    if isinstance(options.reference_frames, tuple):
        argv += ["--reference-frames", ",".join(map(str, options.reference_frames))]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyflowreg: error: ")
