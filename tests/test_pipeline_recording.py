"""compensate_recording end to end on small files: outputs, equivalences with the
engine, atomicity, dtypes, odd inputs and bounded reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

import pyflowreg.io
from pyflowreg.core import estimate, prepare_reference
from pyflowreg.core.preprocess import gaussian_filter_video, normalize, reference_range
from pyflowreg.datasets import make_recording
from pyflowreg.io import open_reader, open_writer
from pyflowreg.motion_correction import (
    OFOptions,
    RegistrationConfig,
    RegistrationError,
    compensate_arr,
    compensate_recording,
)
from pyflowreg.motion_correction.statistics import correlation_with_reference

SEQUENTIAL = RegistrationConfig(parallelization="sequential")
T, SIZE = 10, 32


@pytest.fixture(scope="module")
def recording():
    return make_recording(T, (SIZE, SIZE), seed=5, max_rigid=2.5, max_nonrigid=0.8, dtype=np.uint16)


def write_video(path, video):
    with open_writer(path) as writer:
        writer.write(video)
    return path


def read_video(path):
    with open_reader(path) as reader:
        return reader.read(0, len(reader))


def options_for(tmp_path, source, **kw) -> OFOptions:
    kw.setdefault("quality_setting", "custom")
    kw.setdefault("min_level", 1)
    kw.setdefault("iterations", 10)
    return OFOptions(input_file=source, output_path=tmp_path / "out", **kw)


def collect_batches():
    fields = []

    def callback(batch):
        fields.append((batch.start, batch.registered.copy(), batch.w.copy()))

    return fields, callback


def engine_fields(video, reference, options):
    """Every frame's field computed directly with the core engine, following the
    initial-flow rule of the pipeline (first 20 frames from zero; then the 20 frames
    before each batch from the previous batch's initial flow)."""
    ref = reference if reference.ndim == 3 else reference[..., None]
    low, high = reference_range(ref, separate=options.channel_normalization == "separate")
    sigma = options.sigma_for_channels(video.shape[-1])
    spatial = sigma.copy()
    spatial[:, 2] = 0
    filtered = gaussian_filter_video(normalize(video, low, high), sigma)
    ref_pre = gaussian_filter_video(normalize(ref[None], low, high), spatial)[0]
    prepared = prepare_reference(ref_pre, options.flow_parameters())

    def mean_flow(frames, uv):
        fields = np.stack([estimate(prepared, filtered[t], uv) for t in frames])
        return fields.mean(axis=0, dtype=np.float64).astype(np.float32)

    n, size = len(video), options.buffer_size
    uv = mean_flow(range(min(20, n)), None)
    out = []
    for start in range(0, n, size):
        if start > 0:
            uv = mean_flow(range(max(0, start - 20), start), uv)
        out.extend(estimate(prepared, filtered[t], uv) for t in range(start, min(start + size, n)))
    return np.stack(out)


# ----------------------------------------------------------------------------- outputs


@pytest.mark.parametrize(
    ("fmt", "ext", "name"), [("HDF5", ".h5", ".HDF5"), ("TIFF", ".tif", ".TIFF")]
)
def test_outputs_have_expected_names_shapes_and_dtypes(tmp_path, recording, fmt, ext, name):
    source = write_video(tmp_path / f"input{ext}", recording.video)
    options = options_for(
        tmp_path, source, output_format=fmt, save_w=True, save_valid_mask=True, buffer_size=4
    )
    batches, callback = collect_batches()
    result = compensate_recording(options, config=SEQUENTIAL, batch_callback=callback)
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert names == {
        f"compensated{name}",  # PyFlowReg's names: compensated.<FORMAT>, w.h5
        "w.h5",
        f"valid_mask{ext}",
        "statistics.npz",
        "reference.tif",
        "reference_frame.npy",
        "options.json",
        "run.json",
    }
    assert set(result.files) == {
        "compensated",
        "w",
        "valid_mask",
        "statistics",
        "reference",
        "reference_frame",
        "options",
        "run",
    }
    registered = read_video(out / f"compensated{name}")
    assert registered.shape == (T, SIZE, SIZE, 1) and registered.dtype == np.uint16
    np.testing.assert_array_equal(registered, np.concatenate([b[1] for b in batches]))
    w = read_video(out / "w.h5")
    assert w.shape == (T, SIZE, SIZE, 2) and w.dtype == np.float32
    np.testing.assert_array_equal(w, np.concatenate([b[2] for b in batches]))
    assert [b[0] for b in batches] == [0, 4, 8]
    mask = read_video(out / f"valid_mask{ext}")
    assert mask.shape == (T, SIZE, SIZE, 1) and set(np.unique(mask)) <= {0, 1}

    with np.load(out / "statistics.npz") as stats:
        assert stats["translation"].shape == (T, 2)
        for key in ("mean_displacement", "max_displacement", "mean_divergence", "correlation"):
            assert stats[key].shape == (T,)
        np.testing.assert_allclose(stats["translation"], w.mean(axis=(1, 2)), atol=1e-5)
        np.testing.assert_array_equal(stats["correlation"], result.statistics["correlation"])
    reference = tifffile.imread(out / "reference.tif")
    assert reference.dtype == np.float32 and reference.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(reference, result.reference[..., 0])
    run = json.loads((out / "run.json").read_text())
    assert run["frames"] == T and run["executor"] == "sequential" and run["n_workers"] == 1
    assert set(run["versions"]) == {"python", "numpy", "numba", "pyflowreg"}
    assert {"seconds", "frames_per_second", "flow_backend", "start_time", "end_time"} <= set(run)
    # the sequential executor registers in this thread: its flow time is part of the wall time,
    # and the reference pass (computed from the frames here) is part of the flow time
    assert 0 < run["reference_flow_seconds"] < run["flow_seconds"] <= run["seconds"]
    # phases of the run in this process: the sequential executor registers in submit
    phases = run["phase_seconds"]
    for key in (
        "preflight",
        "kernels",
        "reference",
        "initial_flow",
        "read_wait",
        "submit",
        "write",
    ):
        assert phases[key] >= 0, key
    assert phases["reference"] + phases["initial_flow"] + phases["submit"] <= run["seconds"]
    assert phases["submit"] > 0 and "workers_ready" not in phases
    saved = json.loads((out / "options.json").read_text())
    assert saved["buffer_size"] == 4 and saved["output_format"] == fmt
    assert result.n_frames == T and result.executor == "sequential"


def test_default_config_equals_explicit_default(tmp_path, recording):
    source = write_video(tmp_path / "input.h5", recording.video[:6])
    first = options_for(tmp_path / "a", source, save_w=True)
    second = options_for(tmp_path / "b", source, save_w=True)
    compensate_recording(first)
    compensate_recording(second, config=RegistrationConfig())
    for name in ("compensated.HDF5", "w.h5"):
        np.testing.assert_array_equal(
            read_video(tmp_path / "a" / "out" / name), read_video(tmp_path / "b" / "out" / name)
        )


@pytest.mark.parametrize("buffer_size", [10, 4])
def test_saved_w_equals_engine_and_its_epe(tmp_path, recording, buffer_size):
    source = write_video(tmp_path / "input.h5", recording.video)
    options = options_for(tmp_path, source, save_w=True, buffer_size=buffer_size)
    result = compensate_recording(options, config=SEQUENTIAL)
    saved = read_video(result.files["w"])
    expected = engine_fields(recording.video, result.reference, options)
    np.testing.assert_array_equal(saved, expected)
    epe_saved = np.linalg.norm(saved - recording.flow, axis=-1).mean(axis=(1, 2))
    epe_engine = np.linalg.norm(expected - recording.flow, axis=-1).mean(axis=(1, 2))
    np.testing.assert_array_equal(epe_saved, epe_engine)


def test_registered_video_is_closer_to_the_clean_reference(tmp_path, recording):
    source = write_video(tmp_path / "input.h5", recording.video)
    result = compensate_recording(options_for(tmp_path, source), config=SEQUENTIAL)
    registered = read_video(result.files["compensated"])
    clean = recording.reference
    before = correlation_with_reference(recording.video, clean)
    after = correlation_with_reference(registered, clean)
    assert after.mean() > before.mean() + 0.01
    assert np.mean(after > before) >= 0.8
    assert result.statistics["correlation"].mean() > result.statistics["correlation_before"].mean()


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize("error", [ValueError("boom"), KeyboardInterrupt()])
def test_failed_run_leaves_no_output(tmp_path, recording, error):
    source = write_video(tmp_path / "input.h5", recording.video)
    options = options_for(tmp_path, source, save_w=True, buffer_size=4)

    def fail(batch):
        if batch.start == 4:
            raise error

    expected = RegistrationError if isinstance(error, Exception) else KeyboardInterrupt
    with pytest.raises(expected) as info:
        compensate_recording(options, config=SEQUENTIAL, batch_callback=fail)
    if expected is RegistrationError:
        message = str(info.value)
        assert "batch 2/3 (frames 4-7)" in message and "ValueError: boom" in message
        assert info.value.__cause__ is error
    leftovers = list((tmp_path / "out").iterdir())
    assert leftovers == []


def test_nan_frame_fails_with_its_index(tmp_path, recording):
    video = recording.video.astype(np.float32)
    video[7, 5, 5, 0] = np.nan
    source = write_video(tmp_path / "input.h5", video)
    options = options_for(tmp_path, source, buffer_size=4, reference_frames=[0, 1, 2])
    with pytest.raises(ValueError, match=r"frame 7 of .*input.h5 contains NaN or inf") as info:
        compensate_recording(options, config=SEQUENTIAL)
    assert not isinstance(info.value, RegistrationError)  # an input error, before any work
    assert not (tmp_path / "out").exists()


def test_missing_input_file_is_named(tmp_path):
    options = options_for(tmp_path, tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError, match=r"nope\.h5"):
        compensate_recording(options, config=SEQUENTIAL)


# ----------------------------------------------------------------------------- dtypes and shapes


def test_integer_output_is_rounded_and_clipped_not_wrapped(tmp_path):
    rng = np.random.default_rng(7)
    video = np.where(rng.random((4, SIZE, SIZE, 1)) > 0.5, 65535, 0).astype(np.uint16)
    video[:, ::7] = 30000
    source = write_video(tmp_path / "input.h5", video)
    as_int = compensate_recording(options_for(tmp_path / "i", source), config=SEQUENTIAL)
    as_float = compensate_recording(
        options_for(tmp_path / "f", source, output_dtype="float32"), config=SEQUENTIAL
    )
    out = read_video(as_int.files["compensated"])
    ref = read_video(as_float.files["compensated"])
    assert out.dtype == np.uint16 and ref.dtype == np.float32
    assert (ref < 0).any() and (ref > 65535).any()  # the cubic warp does overshoot here
    assert (out[ref < 0] == 0).all() and (out[ref > 65535] == 65535).all()
    assert np.abs(out.astype(np.float64) - np.clip(ref, 0, 65535)).max() <= 0.5 + 1e-3


def test_short_video_and_single_frame(tmp_path, recording):
    source = write_video(tmp_path / "short.h5", recording.video[:5])
    result = compensate_recording(options_for(tmp_path / "s", source), config=SEQUENTIAL)
    assert read_video(result.files["compensated"]).shape == (5, SIZE, SIZE, 1)
    # the reference is built from the 5 frames there are (range(50, 500) clipped, not padded)
    explicit = compensate_recording(
        options_for(tmp_path / "e", source, reference_frames=range(0, 5)), config=SEQUENTIAL
    )
    np.testing.assert_array_equal(result.reference, explicit.reference)

    single = write_video(tmp_path / "single.tif", recording.video[:1])
    result = compensate_recording(options_for(tmp_path / "one", single), config=SEQUENTIAL)
    registered = read_video(result.files["compensated"])
    assert registered.shape == (1, SIZE, SIZE, 1)
    np.testing.assert_array_equal(result.reference, recording.video[0].astype(np.float32))
    assert np.abs(result.statistics["max_displacement"]).max() < 1e-3


def test_two_channels_from_two_files_equal_the_stacked_array(tmp_path):
    rec = make_recording(6, (SIZE, SIZE), 2, seed=9, max_rigid=2.0, dtype=np.uint16)
    green = write_video(tmp_path / "green.h5", rec.video[..., :1])
    red = write_video(tmp_path / "red.h5", rec.video[..., 1:])
    options = options_for(tmp_path, [green, red], save_w=True)
    result = compensate_recording(options, config=SEQUENTIAL)
    registered = read_video(result.files["compensated"])
    assert registered.shape == (6, SIZE, SIZE, 2)
    expected, w = compensate_arr(rec.video, None, options, registration_config=SEQUENTIAL)
    np.testing.assert_array_equal(registered, expected)
    np.testing.assert_array_equal(read_video(result.files["w"]), w)


def test_binning_reference_argument_and_in_memory_formats(tmp_path, recording):
    source = write_video(tmp_path / "input.h5", recording.video)
    options = options_for(tmp_path / "bin", source, bin_size=3, buffer_size=4)
    result = compensate_recording(options, recording.reference, config=SEQUENTIAL)
    binned = read_video(result.files["compensated"])
    # the input is binned before registration: 10 frames in bins of 3, the last one dropped
    assert binned.shape == (3, SIZE, SIZE, 1)
    np.testing.assert_array_equal(result.reference, recording.reference)
    expected_binned, w_binned = compensate_arr(
        recording.video, recording.reference, options, registration_config=SEQUENTIAL
    )
    assert w_binned.shape == (3, SIZE, SIZE, 2)
    np.testing.assert_array_equal(binned, expected_binned)

    options = options_for(
        tmp_path / "arr", source, output_format="ARRAY", save_w=True, buffer_size=4
    )
    result = compensate_recording(options, recording.reference, config=SEQUENTIAL)
    expected, w = compensate_arr(
        recording.video, recording.reference, options, registration_config=SEQUENTIAL
    )
    np.testing.assert_array_equal(result.registered, expected)
    np.testing.assert_array_equal(result.w, w)
    assert "compensated" not in result.files


# ----------------------------------------------------------------------------- memory


def test_reader_is_asked_for_bounded_ranges(tmp_path, recording, monkeypatch):
    video = np.concatenate([recording.video] * 3)  # 30 frames
    source = write_video(tmp_path / "input.h5", video)
    requests = []
    original = pyflowreg.io.open_reader

    def spy_open_reader(*args, **kwargs):
        reader = original(*args, **kwargs)
        read = reader.read

        def spy_read(start=0, stop=None):
            out = read(start, stop)
            requests.append(len(out))
            return out

        reader.read = spy_read
        return reader

    monkeypatch.setattr(pyflowreg.io, "open_reader", spy_open_reader)
    options = options_for(
        tmp_path, source, buffer_size=5, sigma=[1.0, 1.0, 0.5], reference_frames=range(0, 30)
    )
    compensate_recording(options, config=SEQUENTIAL)
    # frames: halo ceil(4 * 0.5 - 0.5) = 2; reference frames (sigma_t + 0.5): halo 4
    assert requests and max(requests) <= options.buffer_size + 2 * 4
    # two passes (range and mean, registration) over chunks of buffer_size // 2 = 2 frames
    n_reference_reads = 2 * 15
    assert max(requests[:n_reference_reads]) <= options.buffer_size // 2 + 2 * 4
    assert max(requests[n_reference_reads:]) <= options.buffer_size + 2 * 2


# ----------------------------------------------------------------------------- API details


def test_unsupported_executor_falls_back_with_a_warning_at_the_caller(
    tmp_path, recording, monkeypatch
):
    from pyflowreg import _runtime
    from pyflowreg.backends.cpu import FlowregBackend

    monkeypatch.setattr(_runtime, "_RUNTIME", None)  # a fresh registry, restored afterwards
    _runtime.get_runtime().register_flow_backend(
        "sequential_only_test", FlowregBackend, supported_executors=["sequential"]
    )
    source = write_video(tmp_path / "input.h5", recording.video[:3])
    options = options_for(tmp_path, source, flow_backend="sequential_only_test")
    with pytest.warns(UserWarning, match="Falling back to 'sequential'") as record:
        result = compensate_recording(
            options, config=RegistrationConfig(parallelization="threading")
        )
    assert record[0].filename == __file__
    assert result.executor == "sequential"


def test_array_input_reference_image_file_and_progress(tmp_path, recording, capsys):
    reference_file = tmp_path / "reference.tif"
    tifffile.imwrite(reference_file, recording.reference[..., 0])
    video = recording.video[..., 0]  # (T, H, W) array as input_file
    options = options_for(tmp_path, video, reference_frames=reference_file, buffer_size=4)
    calls = []
    result = compensate_recording(
        options,
        config=RegistrationConfig(parallelization="sequential", verbose=True),
        progress_callback=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(4, T), (8, T), (T, T)]
    assert "registering" in capsys.readouterr().err  # the tqdm bar
    np.testing.assert_array_equal(result.reference, recording.reference)
    expected, _ = compensate_arr(
        recording.video, recording.reference, options, registration_config=SEQUENTIAL
    )
    np.testing.assert_array_equal(read_video(result.files["compensated"]), expected)
    saved = json.loads(result.files["options"].read_text())
    assert "input_file" not in saved  # arrays are left out of options.json


def test_wrong_reference_shape_fails_before_any_output(tmp_path, recording):
    source = write_video(tmp_path / "input.h5", recording.video[:3])
    options = options_for(tmp_path, source)
    with pytest.raises(ValueError, match=r"reference has shape \(16, 32, 1\)"):
        compensate_recording(options, np.zeros((16, 32)), config=SEQUENTIAL)
    assert not (tmp_path / "out").exists()
