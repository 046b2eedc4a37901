"""Round trips (every writer's output reads back identically) and the reader interface."""

import pickle

import numpy as np
import pytest

from pyflowreg.io import ArrayWriter, ReaderSpec, open_reader, open_writer

FILE_FORMATS = {"HDF5": ".h5", "TIFF": ".tif", "MAT": ".mat", "NPY": ".npy", "ZARR": ".zarr"}
DTYPES = ["uint8", "uint16", "int16", "float32"]


def make_video(dtype="uint16", t=7, h=12, w=10, c=1, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(100, 30, (t, h, w, c)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (t, h, w, c), endpoint=True).astype(dtype)


def write_batches(path, video, fmt=None, batches=(3, 1, 2, 1), **kwargs):
    """Write ``video`` in several appends of the given sizes (the rest in one last batch)."""
    with open_writer(path, format=fmt, **kwargs) as writer:
        start = 0
        for n in batches:
            writer.write(video[start : start + n])
            start += n
        if start < len(video):
            writer.write(video[start:])
    assert writer.closed
    assert writer.frames_written == len(video)
    return path


@pytest.mark.parametrize("c", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_round_trip(tmp_path, fmt, dtype, c):
    video = make_video(dtype, c=c, seed=10 * DTYPES.index(dtype) + c)
    path = write_batches(tmp_path / f"video{FILE_FORMATS[fmt]}", video)
    with open_reader(path) as reader:
        assert reader.shape == video.shape
        assert reader.dtype == video.dtype
        assert reader.n_channels == c
        assert reader.frame_shape == video.shape[1:]
        assert len(reader) == len(video)
        np.testing.assert_array_equal(reader[:], video)
        np.testing.assert_array_equal(reader.read(2, 5), video[2:5])
        np.testing.assert_array_equal(reader[4], video[4])
        np.testing.assert_array_equal(reader[[5, 0, 5]], video[[5, 0, 5]])
        np.testing.assert_array_equal(reader[1::3], video[1::3])
    assert reader.closed


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_single_frame_video_round_trip(tmp_path, fmt):
    video = make_video("uint16", t=1, c=2)
    path = tmp_path / f"one{FILE_FORMATS[fmt]}"
    with open_writer(path) as writer:
        writer.write(video[0])  # (H, W, C): one frame
    with open_reader(path) as reader:
        assert reader.shape == video.shape
        np.testing.assert_array_equal(reader[:], video)


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_writer_without_frames_leaves_no_file(tmp_path, fmt):
    path = tmp_path / f"empty{FILE_FORMATS[fmt]}"
    writer = open_writer(path)
    writer.close()
    writer.close()  # idempotent
    assert not path.exists()


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_writer_leaves_no_side_files_and_accepts_any_name(tmp_path, fmt):
    # The pipeline writes to a temporary name and renames the finished file.
    partial = tmp_path / f".video{FILE_FORMATS[fmt]}.partial"
    video = make_video("float32", c=2)
    write_batches(partial, video, fmt=fmt.lower())
    assert sorted(p.name for p in tmp_path.iterdir()) == [partial.name]
    final = tmp_path / f"video{FILE_FORMATS[fmt]}"
    partial.rename(final)
    with open_reader(final) as reader:
        np.testing.assert_array_equal(reader[:], video)


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_writer_rejects_shape_change(tmp_path, fmt):
    writer = open_writer(tmp_path / f"v{FILE_FORMATS[fmt]}")
    with writer:
        writer.write(np.zeros((2, 8, 8, 1), np.uint16))
        with pytest.raises(ValueError, match=r"frame shape changed.*\(8, 8, 1\).*\(8, 9, 1\)"):
            writer.write(np.zeros((2, 8, 9, 1), np.uint16))
        with pytest.raises(TypeError, match="fixed the dtype to uint16"):
            writer.write(np.zeros((1, 8, 8, 1), np.float64))
        writer.write(np.ones((1, 8, 8, 1), np.uint8))  # safe cast is accepted
    assert writer.frames_written == 3
    with pytest.raises(ValueError, match="closed writer"):
        writer.write(np.zeros((1, 8, 8, 1), np.uint16))


def test_writer_rejects_bad_frame_arrays(tmp_path):
    with open_writer(tmp_path / "v.h5") as writer:
        with pytest.raises(ValueError, match=r"frames must be \(n, H, W, C\)"):
            writer.write(np.zeros((1, 2, 8, 8, 1)))
        with pytest.raises(TypeError, match="numeric"):
            writer.write(np.array([["a"]]))


def test_writer_stores_boolean_frames_as_uint8(tmp_path):
    mask = make_video("uint8", c=1) > 128
    write_batches(tmp_path / "m.h5", mask)
    with open_reader(tmp_path / "m.h5") as reader:
        assert reader.dtype == np.uint8
        np.testing.assert_array_equal(reader[:], mask.astype(np.uint8))


@pytest.mark.parametrize("source", ["npy", "array"])
def test_temporal_binning(tmp_path, source):
    video = make_video("uint16", t=11, c=2)
    if source == "npy":
        np.save(tmp_path / "v.npy", video)
        reader = open_reader(tmp_path / "v.npy", bin_size=3)
    else:
        reader = open_reader(video, bin_size=3)
    expected = video[:9].reshape(3, 3, *video.shape[1:]).mean(axis=1)
    with reader:
        assert reader.shape == (3, *video.shape[1:])  # the trailing partial bin is dropped
        assert reader.dtype == np.float32
        np.testing.assert_allclose(reader[:], expected, rtol=1e-6)
        np.testing.assert_allclose(reader[1], expected[1], rtol=1e-6)
        np.testing.assert_allclose(reader[[2, 0]], expected[[2, 0]], rtol=1e-6)


def test_binning_keeps_float64_and_promotes_int32():
    assert open_reader(np.zeros((4, 2, 2)), bin_size=2).dtype == np.float64
    assert open_reader(np.zeros((4, 2, 2), np.int32), bin_size=2).dtype == np.float64
    assert open_reader(np.zeros((4, 2, 2), np.uint8), bin_size=1).dtype == np.uint8


def test_bad_bin_size():
    with pytest.raises(ValueError, match="bin_size must be >= 1, got 0"):
        open_reader(np.zeros((4, 2, 2)), bin_size=0)
    with pytest.raises(TypeError, match="bin_size must be an int"):
        open_reader(np.zeros((4, 2, 2)), bin_size=1.5)


def test_indexing_forms():
    video = make_video("int16", t=9, c=2)
    reader = open_reader(video)
    np.testing.assert_array_equal(reader[-1], video[-1])
    np.testing.assert_array_equal(reader[::-2], video[::-2])
    np.testing.assert_array_equal(reader[np.array([8, -9])], video[[8, 0]])
    mask = np.arange(9) % 4 == 0
    np.testing.assert_array_equal(reader[mask], video[mask])
    np.testing.assert_array_equal(reader[2:6, ..., 1], video[2:6, ..., 1])
    np.testing.assert_array_equal(reader[3, 1:4, :, 0], video[3, 1:4, :, 0])
    np.testing.assert_array_equal(reader[...], video)
    assert reader[5:2].shape == (0, 12, 10, 2)
    assert reader[[]].shape == (0, 12, 10, 2)
    np.testing.assert_array_equal(reader.read(7, 100), video[7:])  # stop is clipped
    assert reader.read(9).shape == (0, 12, 10, 2)


def test_index_errors():
    reader = open_reader(np.zeros((5, 4, 4)))
    with pytest.raises(IndexError, match="frame index 5 is out of range for a video of 5 frames"):
        reader[5]
    with pytest.raises(IndexError, match="frame index -6 is out of range"):
        reader[-6]
    with pytest.raises(IndexError, match="frame index 7 is out of range"):
        reader[[0, 7]]
    with pytest.raises(IndexError, match=r"start must be in \[0, 5\]"):
        reader.read(6, 8)
    with pytest.raises(IndexError, match=r"start must be in \[0, 5\]"):
        reader.read(-1, 2)
    with pytest.raises(IndexError, match="stop must be >= start"):
        reader.read(3, 2)
    with pytest.raises(IndexError, match=r"boolean index must have shape \(5,\)"):
        reader[np.ones(4, bool)]
    with pytest.raises(TypeError, match="frame indices must be int, slice"):
        reader["a"]
    reader.close()
    with pytest.raises(ValueError, match="closed reader"):
        reader.read(0, 1)


def test_reader_returns_copies_not_views():
    video = make_video("float32")
    reader = open_reader(video)
    out = reader.read(0, 2)
    out[:] = -1
    np.testing.assert_array_equal(reader.read(0, 2), video[:2])
    assert not np.shares_memory(reader[0], video)


def test_iter_batches_cover_the_video():
    video = make_video("uint8", t=10)
    blocks = list(open_reader(video).iter_batches(4))
    assert [len(b) for b in blocks] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(blocks), video)


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_reader_pickles_and_reopens(tmp_path, fmt):
    video = make_video("uint16", t=6, c=2)
    path = write_batches(tmp_path / f"v{FILE_FORMATS[fmt]}", video)
    with open_reader(path, bin_size=2) as reader:
        spec = reader.spec
        assert isinstance(spec, ReaderSpec)
        assert spec.format == fmt
        assert spec.options["bin_size"] == 2
        twin = pickle.loads(pickle.dumps(reader))
        again = pickle.loads(pickle.dumps(spec)).open()
        for other in (twin, again, reader.reopen()):
            with other:
                assert other.shape == reader.shape
                np.testing.assert_array_equal(other[:], reader[:])


def test_array_reader_layouts():
    frame = make_video("uint16", t=1)[0, ..., 0]
    reader = open_reader(frame)  # (H, W): a single frame
    assert reader.shape == (1, 12, 10, 1)
    np.testing.assert_array_equal(reader[0][..., 0], frame)
    video = make_video("uint16", t=5)[..., 0]
    stored_yxt = np.ascontiguousarray(video.transpose(1, 2, 0))
    reader = open_reader(stored_yxt, axis_order="yxt")
    np.testing.assert_array_equal(reader[:][..., 0], video)
    with pytest.raises(ValueError, match="axis_order='TYXQ' does not fit a 3-D array"):
        open_reader(video, axis_order="TYXQ")
    with pytest.raises(ValueError, match=r"shape \(1, 2, 3, 4, 5\) \(5-D\); a video is a 3-D"):
        open_reader(np.zeros((1, 2, 3, 4, 5)))
    with pytest.raises(TypeError, match="must be numeric"):
        open_reader(np.array([["a"]]))


def test_array_writer_collects_frames():
    video = make_video("float32", c=2)
    writer = open_writer(None, format="array")
    assert isinstance(writer, ArrayWriter)
    with pytest.raises(ValueError, match="no frames have been written"):
        writer.result  # noqa: B018
    write_batches(None, video, fmt="ARRAY")
    with open_writer(None, "ARRAY") as writer:
        for block in np.array_split(video, 3):
            writer.write(block)
    np.testing.assert_array_equal(writer.result, video)
    with open_writer(None, "ARRAY", expected_frames=4) as writer:  # preallocated, then grown
        writer.write(video[:3])
        writer.write(video[3:])
    np.testing.assert_array_equal(writer.result, video)


def test_array_writer_copies_the_frames():
    frames = make_video("uint8")
    with open_writer(None, "ARRAY") as writer:
        writer.write(frames)
    frames[:] = 0
    assert writer.result.any()


def test_null_writer_counts_and_discards(tmp_path):
    with open_writer(tmp_path / "ignored.h5", format="NULL") as writer:
        writer.write(np.zeros((3, 4, 4, 1)))
        writer.write(np.zeros((4, 4, 1)))
        with pytest.raises(ValueError, match="frame shape changed"):
            writer.write(np.zeros((1, 5, 4, 1)))
    assert writer.frames_written == 4
    assert list(tmp_path.iterdir()) == []
