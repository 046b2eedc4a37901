"""pyflowreg.io: reader specs without an import circle, batch reading, and the storage layouts
added for PyFlowReg's formats (HDF5 storage order and attributes, compressed and Suite2p TIFF,
v5 MAT, one file per channel)."""

import pickle

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile

from pyflowreg.io import ReaderSpec, open_reader, open_writer
from pyflowreg.io.hdf5 import (
    HDF5Reader,
    axis_order_to_dimension_ordering,
    dimension_ordering_to_axis_order,
)
from pyflowreg.io.mat import MAT5Writer
from pyflowreg.io.multifile import MultiFileWriter, channel_file_paths


def make_video(t=6, h=8, w=10, c=2, dtype=np.uint16, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1000, (t, h, w, c)).astype(dtype)


# -- reader specs and batches ---------------------------------------------------------------------


def test_spec_carries_its_opener(tmp_path):
    video = make_video()
    path = tmp_path / "v.h5"
    with open_writer(path) as writer:
        writer.write(video)
    with open_reader(path, bin_size=2) as reader:
        spec = reader.spec
        assert spec.opener is HDF5Reader
        assert spec == ReaderSpec("HDF5", str(path), spec.options)  # the opener is not compared
        plain = ReaderSpec("HDF5", str(path), spec.options)  # no opener: the factory opens it
        with pytest.raises(ValueError, match="no opener"):
            plain.open()
        for twin in (
            open_reader(plain),
            open_reader(spec),
            pickle.loads(pickle.dumps(spec)).open(),
        ):
            with twin:
                np.testing.assert_array_equal(twin[:], reader[:])


def test_array_reader_batches_and_asarray():
    video = make_video(t=7)
    reader = open_reader(video)
    assert reader.buffer_size == 500
    reader.buffer_size = 3
    assert [b.shape[0] for b in reader] == [3, 3, 1]
    assert reader.read_batch().shape[0] == 3 and reader.current_frame == 3
    np.testing.assert_array_equal(reader.read_batch(), video[3:6])
    assert np.asarray(reader, dtype=np.float32).dtype == np.float32
    np.testing.assert_array_equal(np.asarray(reader), video)
    with pytest.raises(ValueError, match="without a copy"):
        np.asarray(reader, copy=False)
    twin = pickle.loads(pickle.dumps(reader))
    assert twin.buffer_size == 3 and twin.current_frame == 0
    with pytest.raises(TypeError, match="buffer_size must be an int"):
        reader.buffer_size = 2.5
    with pytest.raises(ValueError, match="buffer_size must be >= 1, got 0"):
        reader.buffer_size = 0


# -- write-only formats ---------------------------------------------------------------------------


def test_write_only_formats(tmp_path):
    video = make_video()
    with open_writer(tmp_path / "s.tif", "suite2p_tiff") as writer:
        writer.write(video)
    with pytest.raises(ValueError, match="can only be written"):
        open_reader(tmp_path / "s.tif", format="SUITE2P_TIFF")
    with open_reader(tmp_path / "s.tif", n_channels=2) as reader:
        np.testing.assert_array_equal(reader[:], video)


def test_multifile_writer(tmp_path):
    assert channel_file_paths(tmp_path / "a" / "run.h5", 2, ".HDF5") == [
        tmp_path / "a" / "run_ch1.HDF5",
        tmp_path / "a" / "run_ch2.HDF5",
    ]
    assert channel_file_paths(tmp_path / "out", 1, ".TIFF") == [
        tmp_path / "out" / "compensated_ch1.TIFF"
    ]
    unused = open_writer(tmp_path / "none" / "x.h5", "MULTIFILE_HDF5")
    unused.close()
    assert not (tmp_path / "none").exists()  # nothing written, nothing created
    video = make_video(c=3)
    with open_writer(tmp_path / "m" / "x.mat", "MULTIFILE_MAT", version="5") as writer:
        assert isinstance(writer, MultiFileWriter)
        writer.write(video)
    assert [p.name for p in writer.paths] == ["x_ch1.MAT", "x_ch2.MAT", "x_ch3.MAT"]
    for i, p in enumerate(writer.paths):
        np.testing.assert_array_equal(scipy.io.loadmat(p)["ch1"], video[..., i].transpose(1, 2, 0))
    with open_writer(tmp_path / "z" / "x.tif", "MULTIFILE_TIFF", compression="zlib") as writer:
        writer.write(video)
    with tifffile.TiffFile(writer.paths[2]) as tif:
        assert tif.pages[0].compression == 8
        np.testing.assert_array_equal(tif.asarray(), video[..., 2])


# -- HDF5 storage order and attributes ------------------------------------------------------------


def test_dimension_ordering_conversions():
    assert dimension_ordering_to_axis_order((1, 2, 0)) == "TYX"
    assert dimension_ordering_to_axis_order([0, 1, 2]) == "YXT"
    assert axis_order_to_dimension_ordering("TYX") == (1, 2, 0)
    for order in ("TYX", "YXT", "XTY", "YTX"):
        assert dimension_ordering_to_axis_order(axis_order_to_dimension_ordering(order)) == order
    with pytest.raises(ValueError, match="permutation"):
        dimension_ordering_to_axis_order((0, 1, 1))


@pytest.mark.parametrize(("layout", "order"), [("channels", "YXT"), ("stacked", "CTYX")])
def test_hdf5_storage_order(tmp_path, layout, order):
    video = make_video()
    path = tmp_path / "o.h5"
    with open_writer(path, layout=layout, axis_order=order) as writer:
        writer.write(video[:2])
        writer.write(video[2:])
    with h5py.File(path) as f:
        ds = f["ch1"] if layout == "channels" else f["data"]
        assert ds.attrs["axis_order"] == order
        sizes = {"T": 6, "Y": 8, "X": 10, "C": 2}
        assert ds.shape == tuple(sizes[a] for a in order)
        assert ("dimension_ordering" in f.attrs) == (layout == "channels")
    with open_reader(path) as reader:
        np.testing.assert_array_equal(reader[:], video)
    with pytest.raises(ValueError, match="must order the letters"):
        open_writer(path, axis_order="TYXC")


def test_hdf5_ignores_attributes_that_do_not_fit(tmp_path):
    video = make_video(c=1)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["mov"] = video[..., 0]
        f["mov"].attrs["axis_order"] = "time-first"
        f.attrs["dataset_names"] = ["missing"]
        f.attrs["dimension_ordering"] = "n/a"
    with open_reader(tmp_path / "x.h5") as reader:
        np.testing.assert_array_equal(reader[:], video)


def test_hdf5_no_frames_no_file(tmp_path):
    open_writer(tmp_path / "e.h5").close()
    assert not (tmp_path / "e.h5").exists()


# -- TIFF compression and pages -------------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 4])
def test_compressed_imagej_tiff(tmp_path, t):
    video = make_video(t=t, dtype=np.uint8)
    with open_writer(tmp_path / "c.tif", compression="zlib", bigtiff=False) as writer:
        writer.write(video)
    with tifffile.TiffFile(tmp_path / "c.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata["channels"] == 2
        assert tif.imagej_metadata.get("frames", 1) == t
    with open_reader(tmp_path / "c.tif") as reader:
        assert not reader.memory_mapped
        np.testing.assert_array_equal(reader[:], video)


def test_tiff_writer_option_errors(tmp_path):
    with pytest.raises(ValueError, match="layout must be 'hyperstack' or 'pages'"):
        open_writer(tmp_path / "x.tif", layout="planar")
    with pytest.raises(TypeError, match="compression must be a str"):
        open_writer(tmp_path / "x.tif", compression=5)


# -- MAT v5 ---------------------------------------------------------------------------------------


def test_mat5_writer(tmp_path, monkeypatch):
    video = make_video()
    path = tmp_path / "v5.mat"
    with open_writer(path, "MAT", version="5", variable_names="g{}") as writer:
        writer.write(video[:1])
        writer.write(video[1:])
    assert sorted(k for k in scipy.io.loadmat(path) if not k.startswith("__")) == ["g1", "g2"]
    with open_reader(path, dataset_names=["g1", "g2"]) as reader:
        np.testing.assert_array_equal(reader[:], video)
    MAT5Writer(tmp_path / "none.mat").close()
    assert not (tmp_path / "none.mat").exists()
    monkeypatch.setattr(MAT5Writer, "v5_limit", 100)  # too large for v5: written as v7.3
    with MAT5Writer(tmp_path / "big.mat") as writer:
        writer.write(video)
    assert h5py.is_hdf5(tmp_path / "big.mat")
    with open_reader(tmp_path / "big.mat") as reader:
        np.testing.assert_array_equal(reader[:], video)
    with pytest.raises(ValueError, match="MAT version must be"):
        open_writer(path, "MAT", version="6")


def test_tiff_plane_all_keeps_acquisition_order(tmp_path):
    """ImageJ hyperstack with planes (T, Z, C): plane="all" gives T * Z frames."""
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 255, (2, 3, 2, 8, 10)).astype(np.uint8)  # T, Z, C, Y, X
    tifffile.imwrite(tmp_path / "z.tif", stack, imagej=True, metadata={"axes": "TZCYX"})
    with open_reader(tmp_path / "z.tif", plane="all") as reader:
        assert reader.shape == (6, 8, 10, 2)
        np.testing.assert_array_equal(reader[:], stack.reshape(6, 2, 8, 10).transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="plane must be an int, 'all' or None"):
        open_reader(tmp_path / "z.tif", plane="every")


def test_tiff_appended_frame_by_frame_reads_every_frame(tmp_path):
    """tifffile makes each write call its own series: a file appended one frame (or block)
    at a time, as several tools write it, is one video of all those frames."""
    single = tmp_path / "pages.tif"
    with tifffile.TiffWriter(single) as tw:
        for i in range(6):
            tw.write(np.full((16, 12), i, np.uint16))
    reader = open_reader(single)
    assert reader.shape == (6, 16, 12, 1)
    np.testing.assert_array_equal(reader.read(0, 6)[:, 3, 4, 0], np.arange(6))
    np.testing.assert_array_equal(reader.read(2, 5)[:, 0, 0, 0], [2, 3, 4])

    blocks = tmp_path / "blocks.tif"
    with tifffile.TiffWriter(blocks) as tw:
        for i in range(3):
            tw.write(
                np.stack([np.full((8, 8), 2 * i), np.full((8, 8), 2 * i + 1)]).astype(np.uint8)
            )
    np.testing.assert_array_equal(open_reader(blocks).read(0, 6)[:, 0, 0, 0], np.arange(6))

    # interleaved channels across the appended pages; one series asked for by index
    from pyflowreg.io.tiff import TIFFReader

    two = TIFFReader(single, n_channels=2)
    assert two.shape == (3, 16, 12, 2)
    np.testing.assert_array_equal(two.read(0, 3)[:, 0, 0, :], [[0, 1], [2, 3], [4, 5]])
    third = TIFFReader(single, series=3)
    assert third.shape == (1, 16, 12, 1) and third.read(0, 1).max() == 3

    # series that differ are not one video: the first series is read
    mixed = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(mixed) as tw:
        tw.write(np.zeros((16, 16), np.uint16))
        tw.write(np.ones((8, 8), np.uint16))
    assert open_reader(mixed).shape == (1, 16, 16, 1)
