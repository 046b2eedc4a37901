"""PyFlowReg's motion-correction API page (``docs/api/motion_correction.md``) and its
workflows guide (``docs/user_guide/workflows.md``) against this package.

Written from the documented behaviour: ``compensate_arr`` with its three callbacks, the
file workflow through ``BatchMotionCorrector`` and ``compensate_recording``, the output
formats (``OutputFormat.NULL`` / ``ARRAY`` / ``HDF5`` / ``TIFF`` / ``MAT``), the files a run
leaves (``compensated.<ext>``, ``w``, ``idx.hdf``, ``statistics.npz``,
``reference_frame.npy``) and ``naming_convention``. Small generated recordings; results are
checked to be registered (correlation with the true reference improves).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile

from pyflowreg.datasets import make_recording
from pyflowreg.io import open_reader
from pyflowreg.motion_correction import BatchMotionCorrector as TopLevelCorrector
from pyflowreg.motion_correction import FlowRegLive, compensate_arr, compensate_recording
from pyflowreg.motion_correction.compensate_recording import (
    BatchMotionCorrector,
    RegistrationConfig,
)
from pyflowreg.motion_correction.OF_options import OFOptions, OutputFormat
from pyflowreg.motion_correction.statistics import correlation_with_reference

SEQUENTIAL = RegistrationConfig(parallelization="sequential")
SIZE = 32


@pytest.fixture(scope="module")
def recording():
    return make_recording(12, (SIZE, SIZE), 1, seed=11, max_rigid=2.5, dtype=np.uint16)


@pytest.fixture
def h5_input(tmp_path, recording):
    path = tmp_path / "recording.h5"
    with h5py.File(path, "w") as f:
        f["mov"] = recording.video[..., 0]
    return path


def _gain(registered, recording) -> float:
    before = correlation_with_reference(recording.video, recording.reference).mean()
    after = correlation_with_reference(registered, recording.reference).mean()
    return float(after - before)


def _file_options(h5_input, tmp_path, **kw) -> OFOptions:
    base = dict(
        input_file=h5_input,
        output_path=tmp_path / "results",
        quality_setting="custom",
        min_level=1,
        iterations=20,
        buffer_size=5,
        reference_frames=list(range(12)),
    )
    return OFOptions(**{**base, **kw})


# ----------------------------------------------------------------------------- array


def test_compensate_arr_with_the_three_callbacks(recording):
    progress, w_calls, reg_calls = [], [], []
    options = OFOptions(quality_setting="balanced", buffer_size=5)
    registered, w = compensate_arr(
        recording.video,
        recording.reference,
        options,
        progress_callback=lambda current, total: progress.append((current, total)),
        w_callback=lambda w_batch, start, end: w_calls.append((w_batch.copy(), start, end)),
        registered_callback=lambda batch, start, end: reg_calls.append((batch.copy(), start, end)),
    )
    assert registered.shape == recording.video.shape and w.shape == (12, SIZE, SIZE, 2)
    assert [(s, e) for _, s, e in w_calls] == [(0, 5), (5, 10), (10, 12)]
    assert [(s, e) for _, s, e in reg_calls] == [(0, 5), (5, 10), (10, 12)]
    assert progress[-1] == (12, 12)
    np.testing.assert_array_equal(np.concatenate([b for b, _, _ in w_calls]), w)
    np.testing.assert_array_equal(np.concatenate([b for b, _, _ in reg_calls]), registered)
    assert all(b.shape[1:] == (SIZE, SIZE, 2) for b, _, _ in w_calls)
    assert _gain(registered, recording) > 0.02
    with pytest.raises(TypeError, match="callable"):
        compensate_arr(recording.video, recording.reference, options, w_callback=3)


def test_compensate_arr_pyflowreg_signature(recording):
    """``compensate_arr(c1, c_ref, options, progress_callback, *, flow_backend=...,
    backend_params=..., get_displacement=...)`` as PyFlowReg documents it."""
    video, ref = recording.video, recording.reference
    options = OFOptions(quality_setting="fast")
    by_name = compensate_arr(c1=video, c_ref=ref, options=options, registration_config=SEQUENTIAL)
    seen = []
    positional = compensate_arr(
        video, ref, options, lambda done, total: seen.append((done, total)),
        registration_config=SEQUENTIAL,
    )  # fmt: skip
    assert seen[-1] == (12, 12)
    np.testing.assert_array_equal(by_name[1], positional[1])
    np.testing.assert_array_equal(by_name[0], positional[0])
    # flowreg ignores backend_params meant for other backends (PyFlowReg's documented rule)
    ignored = compensate_arr(
        video, ref, options, backend_params={"device": "cuda:0"}, registration_config=SEQUENTIAL
    )
    np.testing.assert_array_equal(ignored[1], by_name[1])

    def shift_one(fixed, moving, **kwargs):
        return np.dstack([np.ones(fixed.shape[:2]), np.zeros(fixed.shape[:2])]).astype(np.float32)

    _, w = compensate_arr(video, ref, options, get_displacement=shift_one)
    assert np.all(w[..., 0] == 1) and np.all(w[..., 1] == 0)
    with pytest.raises(TypeError, match="both video and c1"):
        compensate_arr(video, c1=video)
    with pytest.raises(TypeError, match="needs the video"):
        compensate_arr(c_ref=ref)


def test_compensate_arr_ignores_output_format(recording):
    options = OFOptions(quality_setting="fast", output_format=OutputFormat.NULL)
    registered, w = compensate_arr(recording.video[:3], recording.reference, options)
    assert registered.shape == (3, SIZE, SIZE, 1) and w.shape == (3, SIZE, SIZE, 2)


# ----------------------------------------------------------------------------- files


def test_batch_motion_corrector_file_workflow(tmp_path, h5_input, recording):
    assert TopLevelCorrector is BatchMotionCorrector
    batches, w_batches, progress, w_parts = [], [], [], []
    options = _file_options(h5_input, tmp_path, output_format=OutputFormat.HDF5, save_w=True)
    corrector = BatchMotionCorrector(options, SEQUENTIAL)
    corrector.register_registered_callback(lambda b, s, e: batches.append((s, e, b.copy())))
    corrector.register_w_callback(
        lambda w, s, e: (w_batches.append((s, e)), w_parts.append(w.copy()))
    )
    corrector.register_progress_callback(lambda current, total: progress.append(current))
    result = corrector.run()
    assert corrector.result is result
    assert [(s, e) for s, e, _ in batches] == [(0, 5), (5, 10), (10, 12)] == w_batches
    assert progress == [5, 10, 12]
    out = tmp_path / "results"
    registered = open_reader(out / "compensated.HDF5").read(0, 12)
    np.testing.assert_array_equal(registered, np.concatenate([b for _, _, b in batches]))
    assert _gain(registered, recording) > 0.02
    with h5py.File(out / "w.h5") as f:  # PyFlowReg's layout: u and v, (T, H, W) each
        assert sorted(f) == ["u", "v"] and f["u"].shape == f["v"].shape == (12, SIZE, SIZE)
        fields = np.stack([f["u"][()], f["v"][()]], axis=-1)
    np.testing.assert_array_equal(fields, np.concatenate(w_parts))
    with pytest.raises(TypeError, match="progress callback must be callable"):
        corrector.register_progress_callback(None)


def test_null_output_is_callback_only(tmp_path, h5_input):
    seen = []
    options = _file_options(h5_input, tmp_path, output_format="NULL", save_meta_info=False)
    corrector = BatchMotionCorrector(options, SEQUENTIAL)
    corrector.register_registered_callback(lambda b, s, e: seen.append(len(b)))
    result = corrector.run()
    assert sum(seen) == 12 and result.registered is None
    assert not list((tmp_path / "results").glob("compensated*"))


def test_array_output_returns_the_video(tmp_path, h5_input, recording):
    options = _file_options(h5_input, tmp_path, output_format=OutputFormat.ARRAY, save_w=True)
    result = compensate_recording(options, config=SEQUENTIAL)
    assert result.registered.shape == (12, SIZE, SIZE, 1) and result.w.shape == (12, SIZE, SIZE, 2)
    assert _gain(result.registered, recording) > 0.02


@pytest.mark.parametrize(("fmt", "ext"), [("TIFF", ".TIFF"), ("MAT", ".MAT")])
def test_tiff_and_mat_outputs_open_in_their_libraries(tmp_path, h5_input, fmt, ext):
    options = _file_options(h5_input, tmp_path, output_format=fmt, output_typename="single")
    compensate_recording(options, config=SEQUENTIAL)
    path = tmp_path / "results" / f"compensated{ext}"
    if fmt == "TIFF":
        data = tifffile.imread(path)
        assert data.shape[0] == 12 and data.dtype == np.float32
    else:
        try:
            names = scipy.io.whosmat(path)
            assert names and names[0][1][-1] in (12, SIZE)
        except NotImplementedError:  # MAT v7.3 is HDF5
            with h5py.File(path) as f:
                assert any(f[k].dtype == np.float32 for k in f if hasattr(f[k], "dtype"))


def test_output_files_of_a_run(tmp_path, h5_input):
    options = _file_options(
        h5_input, tmp_path, output_format="HDF5", save_w=True, save_valid_idx=True
    )
    result = compensate_recording(options, config=SEQUENTIAL)
    out = tmp_path / "results"
    names = {p.name for p in out.iterdir()}
    assert {"compensated.HDF5", "w.h5", "idx.hdf", "statistics.npz", "reference_frame.npy"} <= names
    with h5py.File(out / "idx.hdf") as f:
        idx = f["ch1"][()]
    assert idx.shape[0] == 12 and set(np.unique(idx)) <= {0, 1}
    w = open_reader(out / "w.h5").read(0, 12)
    inside = (
        (np.arange(SIZE)[None, None, :] + w[..., 0] >= 0)
        & (np.arange(SIZE)[None, None, :] + w[..., 0] <= SIZE - 1)
        & (np.arange(SIZE)[None, :, None] + w[..., 1] >= 0)
        & (np.arange(SIZE)[None, :, None] + w[..., 1] <= SIZE - 1)
    )
    np.testing.assert_array_equal(idx.reshape(12, SIZE, SIZE), inside.astype(np.uint8))
    reference = np.load(out / "reference_frame.npy")
    assert reference.shape == (SIZE, SIZE) and reference.dtype == np.float32
    np.testing.assert_array_equal(reference, result.reference[..., 0])
    stats = np.load(out / "statistics.npz")
    pyflowreg_names = {"mean_disp", "max_disp", "mean_div", "mean_translation"}
    assert set(stats.files) == set(result.statistics) | pyflowreg_names
    assert all(len(stats[k]) == 12 for k in stats.files)
    np.testing.assert_array_equal(stats["mean_disp"], stats["mean_displacement"])
    np.testing.assert_array_equal(stats["max_disp"], stats["max_displacement"])
    np.testing.assert_array_equal(stats["mean_div"], stats["mean_divergence"])
    np.testing.assert_allclose(
        stats["mean_translation"], np.linalg.norm(stats["translation"], axis=1), rtol=1e-12
    )
    # PyFlowReg's compensate_recording returns the reference: the result acts as that array
    np.testing.assert_array_equal(np.asarray(result), result.reference)
    assert result.shape == (SIZE, SIZE, 1) and result.ndim == 3
    np.testing.assert_array_equal(result[..., 0], result.reference[..., 0])


def test_batch_naming_convention(tmp_path, h5_input):
    options = _file_options(h5_input, tmp_path, naming_convention="batch", save_meta_info=False)
    compensate_recording(options, config=SEQUENTIAL)
    assert (tmp_path / "results" / "recording_compensated.HDF5").exists()


def test_default_configuration_runs_without_config(tmp_path, h5_input, recording):
    """The documented call: no RegistrationConfig (the executor is auto-selected)."""
    options = _file_options(h5_input, tmp_path, output_format="ARRAY")
    result = compensate_recording(options)
    assert result.registered.shape == recording.video.shape


def test_flowreglive_is_exported():
    from pyflowreg.motion_correction.flow_reg_live import FlowRegLive as FromModule

    assert FromModule is FlowRegLive


def test_a_reader_as_input_file(tmp_path, recording):
    from pyflowreg.util.io import get_video_file_reader

    path = tmp_path / "recording.tif"
    tifffile.imwrite(path, recording.video[..., 0])
    reader = get_video_file_reader(str(path))
    options = OFOptions(
        input_file=reader,
        output_path=tmp_path / "out",
        output_format="ARRAY",
        quality_setting="fast",
        reference_frames=list(range(6)),  # indices of the binned frames
        bin_size=2,
    )
    result = compensate_recording(options, config=SEQUENTIAL)
    assert result.registered.shape == (6, SIZE, SIZE, 1)  # binned by the pipeline's twin
    assert reader.shape == (12, SIZE, SIZE, 1)  # the given reader is left as it was
    np.testing.assert_array_equal(reader[0:2][..., 0], recording.video[:2, ..., 0])
    assert "input_file" not in options.to_dict(arrays="omit")
    with pytest.raises(ValueError, match="hold arrays or readers"):
        options.to_dict()
    reader.close()
