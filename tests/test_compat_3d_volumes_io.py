"""PyFlowReg's user guide "3D Z-Stack Alignment", its IO part: binning the registered repetitions
of each z-slice with ``pyflowreg.util.io.factory.get_video_file_reader(..., bin_size=...)``."""

import h5py
import numpy as np
import pytest

from pyflowreg.util.io.factory import get_video_file_reader, get_video_file_writer

Z, REPS, H, W, C = 4, 9, 16, 16, 2


@pytest.fixture
def registered_stack(tmp_path):
    """``(Z * REPS, H, W, C)`` float32 frames: slice ``z`` is ``z * 100`` plus noise."""
    rng = np.random.default_rng(3)
    base = np.repeat(np.arange(Z, dtype=np.float32) * 100, REPS)[:, None, None, None]
    frames = (base + rng.normal(0, 5, (Z * REPS, H, W, C))).astype(np.float32)
    path = tmp_path / "aligned_sequence" / "compensated.HDF5"
    path.parent.mkdir()
    with get_video_file_writer(str(path), "HDF5") as writer:
        for start in range(0, len(frames), REPS):  # one slice per batch, as the pipeline writes
            writer.write_frames(frames[start : start + REPS])
    return path, frames


def manual_binning(frames):
    return frames.reshape(Z, REPS, H, W, C).mean(axis=1)


def test_reader_bins_repetitions(registered_stack):
    path, frames = registered_stack
    reader = get_video_file_reader(str(path), buffer_size=100, bin_size=REPS)
    assert reader.shape == (Z, H, W, C) and len(reader) == Z
    volume = []
    while reader.has_batch():
        volume.append(reader.read_batch())
    reader.close()
    volume = np.concatenate(volume, axis=0)
    assert volume.shape == (Z, H, W, C)
    np.testing.assert_allclose(volume, manual_binning(frames), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(volume.mean(axis=(1, 2, 3)), np.arange(Z) * 100, atol=1.0)


def test_binned_batches_and_indexing(registered_stack):
    path, frames = registered_stack
    expected = manual_binning(frames)
    with get_video_file_reader(str(path), buffer_size=3, bin_size=REPS) as reader:
        assert [b.shape[0] for b in reader] == [3, 1]  # buffer_size counts binned frames
        np.testing.assert_allclose(reader[1], expected[1], rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(reader[-1], expected[-1], rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(reader[::2], expected[::2], rtol=1e-6, atol=1e-4)


def test_partial_last_slice_is_dropped(registered_stack, tmp_path):
    _, frames = registered_stack
    path = tmp_path / "partial.h5"
    with get_video_file_writer(str(path), "HDF5") as writer:
        writer.write_frames(frames[: 2 * REPS + 4])
    with get_video_file_reader(path, bin_size=REPS) as reader:
        assert len(reader) == 2
        np.testing.assert_allclose(reader[:], manual_binning(frames)[:2], rtol=1e-6, atol=1e-4)


def test_manual_binning_through_the_reader(registered_stack):
    path, frames = registered_stack
    reader = get_video_file_reader(str(path))
    registered = reader[:]
    reader.close()
    np.testing.assert_array_equal(registered, frames)
    t, h, w, c = registered.shape
    volume = registered.reshape(t // REPS, REPS, h, w, c).mean(axis=1)
    np.testing.assert_allclose(volume, manual_binning(frames))
    with h5py.File(path) as f:  # the registered file itself, opened with h5py
        assert sorted(f) == ["ch1", "ch2"] and f["ch1"].shape == (Z * REPS, H, W)
