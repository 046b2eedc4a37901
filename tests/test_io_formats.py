"""Format-specific behaviour: HDF5, TIFF (ImageJ, ScanImage, BigTIFF), MAT, NPY, Zarr, multi-file,
and the real recordings in the shared data folder."""

import pickle
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile

from pyflowreg.io import detect_format, normalize_format, open_reader, open_writer

DATA = Path(__file__).parents[2] / "shared" / "data"


def make_video(dtype="uint16", t=6, h=10, w=8, c=1, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((t, h, w, c)) * 1000).astype(dtype)


# -- HDF5 -----------------------------------------------------------------------------------------
def test_hdf5_big_endian_is_returned_native(tmp_path):
    video = make_video("uint16", c=1)[..., 0]
    with h5py.File(tmp_path / "be.h5", "w") as f:
        f.create_dataset("data", data=video.astype(">u2"))
    with open_reader(tmp_path / "be.h5") as reader:
        assert reader.dtype == np.dtype("uint16") and reader.dtype.isnative
        out = reader[:]
        assert out.dtype.isnative
        np.testing.assert_array_equal(out[..., 0], video)


def test_hdf5_dataset_choice(tmp_path):
    video = make_video(c=1)[..., 0]
    path = tmp_path / "many.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("big_other", data=np.zeros((50, 10, 8), np.uint8))
        f.create_dataset("mov", data=video)
        f.create_dataset("mean", data=video.mean(axis=0))
        f.create_dataset("acq/frames", data=video[::-1])
    with open_reader(path) as reader:  # a common name wins over size
        np.testing.assert_array_equal(reader[:][..., 0], video)
    with open_reader(path, dataset_name="acq/frames") as reader:
        np.testing.assert_array_equal(reader[:][..., 0], video[::-1])
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("small", data=np.zeros((2, 4, 4)))
        f.create_dataset("large", data=video)
    with open_reader(tmp_path / "other.h5") as reader:  # else the largest 3-D/4-D dataset
        np.testing.assert_array_equal(reader[:][..., 0], video)


def test_hdf5_one_dataset_per_channel(tmp_path):
    video = make_video(c=2)
    with h5py.File(tmp_path / "ch.h5", "w") as f:
        f.create_dataset("green", data=video[..., 0])
        f.create_dataset("red", data=video[..., 1])
    with open_reader(tmp_path / "ch.h5", dataset_names=["green", "red"]) as reader:
        assert reader.shape == video.shape
        np.testing.assert_array_equal(reader.read(1, 4), video[1:4])
        assert reader.spec.options["dataset_names"] == ["green", "red"]


def test_hdf5_axis_order(tmp_path):
    video = make_video(c=2)
    with h5py.File(tmp_path / "yxt.h5", "w") as f:
        f.create_dataset("imaging", data=video[..., 0].transpose(1, 2, 0))  # SIMA: (y, x, t)
        f.create_dataset("ctyx", data=video.transpose(3, 0, 1, 2))
    with open_reader(tmp_path / "yxt.h5", dataset_name="imaging", axis_order="YXT") as reader:
        assert reader.shape == (6, 10, 8, 1)
        np.testing.assert_array_equal(reader.read(2, 5)[..., 0], video[2:5, ..., 0])
    with open_reader(tmp_path / "yxt.h5", dataset_name="ctyx", axis_order="CTYX") as reader:
        np.testing.assert_array_equal(reader[[4, 1]], video[[4, 1]])


def test_hdf5_writer_layouts_and_chunks(tmp_path):
    video = make_video("uint16", t=5, c=2)
    with open_writer(tmp_path / "ch.h5", chunk_frames=2) as writer:
        writer.write(video)
    with h5py.File(tmp_path / "ch.h5") as f:
        assert sorted(f) == ["ch1", "ch2"]
        assert f["ch1"].shape == (5, 10, 8)
        assert f["ch1"].chunks == (2, 10, 8)
        assert f["ch1"].maxshape == (None, 10, 8)
        np.testing.assert_array_equal(f["ch2"][:], video[..., 1])
    with open_writer(tmp_path / "st.h5", layout="stacked", dataset_name="w") as writer:
        writer.write(video[:2])
        writer.write(video[2:])
    with h5py.File(tmp_path / "st.h5") as f:
        assert list(f) == ["w"]
        assert f["w"].shape == (5, 10, 8, 2)
        assert f["w"].chunks[0] >= 1
    with open_reader(tmp_path / "st.h5") as reader:
        np.testing.assert_array_equal(reader[:], video)


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_hdf5_writer_compression(tmp_path, compression):
    video = make_video("int16", c=2)
    with open_writer(tmp_path / "z.h5", compression=compression) as writer:
        writer.write(video)
    with h5py.File(tmp_path / "z.h5") as f:
        assert f["ch1"].compression == compression
    with open_reader(tmp_path / "z.h5") as reader:
        np.testing.assert_array_equal(reader[:], video)


def test_hdf5_writer_option_errors(tmp_path):
    with pytest.raises(ValueError, match="layout must be one of"):
        open_writer(tmp_path / "a.h5", layout="planar")
    with pytest.raises(ValueError, match="compression must be one of"):
        open_writer(tmp_path / "a.h5", compression="zstd")
    writer = open_writer(tmp_path / "a.h5", dataset_names=["only_one"])
    with pytest.raises(ValueError, match="dataset_names has 1 names but the frames have 2 chan"):
        writer.write(np.zeros((1, 4, 4, 2)))
    writer.close()


# -- TIFF -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [1, 2])
@pytest.mark.parametrize(
    ("dtype", "imagej"), [("uint16", True), ("float32", True), ("int16", False)]
)
def test_tiff_writer_output_kind(tmp_path, dtype, imagej, c):
    video = make_video(dtype, c=c)
    with open_writer(tmp_path / "v.tif") as writer:
        for frame in video:
            writer.write(frame)
    with tifffile.TiffFile(tmp_path / "v.tif") as tif:
        assert tif.is_imagej == imagej
        assert len(tif.pages) == 6 * c
        if imagej:
            assert tif.series[0].axes == ("TCYX" if c == 2 else "TYX")
            assert tif.imagej_metadata["frames"] == 6
    with open_reader(tmp_path / "v.tif") as reader:
        assert reader.memory_mapped
        np.testing.assert_array_equal(reader[:], video)


def test_tiff_imagej_hyperstack_with_planes(tmp_path):
    stack = make_video("uint16", t=3 * 2 * 2).reshape(3, 2, 2, 10, 8)  # T, Z, C, Y, X
    tifffile.imwrite(tmp_path / "h.tif", stack, imagej=True, metadata={"axes": "TZCYX"})
    with pytest.raises(ValueError, match=r"holds 2 planes; pass plane=0\.\.1"):
        open_reader(tmp_path / "h.tif")
    with pytest.raises(ValueError, match="plane=2 is out of range"):
        open_reader(tmp_path / "h.tif", plane=2)
    with open_reader(tmp_path / "h.tif", plane=1) as reader:
        assert reader.shape == (3, 10, 8, 2)
        np.testing.assert_array_equal(reader[:], stack[:, 1].transpose(0, 2, 3, 1))


def test_tiff_interleaved_channels(tmp_path):
    video = make_video("uint16", t=4, c=2)
    pages = video.transpose(0, 3, 1, 2).reshape(8, 10, 8)  # ch1, ch2, ch1, ch2, ...
    tifffile.imwrite(tmp_path / "il.tif", pages, photometric="minisblack")
    with open_reader(tmp_path / "il.tif", n_channels=2) as reader:
        assert reader.shape == video.shape
        np.testing.assert_array_equal(reader[:], video)
        np.testing.assert_array_equal(reader[3], video[3])
    with pytest.raises(ValueError, match="8 pages cannot be split into n_channels=3"):
        open_reader(tmp_path / "il.tif", n_channels=3)
    with open_writer(tmp_path / "two.tif") as writer:
        writer.write(video)
    with pytest.raises(ValueError, match="has 2 channels in its metadata, but n_channels=3"):
        open_reader(tmp_path / "two.tif", n_channels=3)


def _scanimage_file(path, pages, software):
    with tifffile.TiffWriter(path, bigtiff=True) as tw:  # ScanImage 2016+ files are BigTIFF
        for page in pages:
            tw.write(page, software=software, description="frameNumbers = 1", metadata=None)


def test_tiff_scanimage_channels_and_planes(tmp_path, caplog):
    video = make_video("int16", t=4, c=2)
    software = "SI.hChannels.channelSave = [1;2]\nSI.hStackManager.numSlices = 1\n"
    pages = video.transpose(0, 3, 1, 2).reshape(8, 10, 8)
    _scanimage_file(tmp_path / "si.tif", pages, software)
    with open_reader(tmp_path / "si.tif") as reader:
        assert reader.shape == video.shape
        np.testing.assert_array_equal(reader[:], video)
    _scanimage_file(tmp_path / "cut.tif", pages[:7], software)  # acquisition stopped mid-frame
    with open_reader(tmp_path / "cut.tif") as reader:
        assert reader.shape == (3, 10, 8, 2)
        np.testing.assert_array_equal(reader[:], video[:3])
    assert "the last 1 pages (an incomplete volume) are ignored" in caplog.text
    volume = make_video("int16", t=3 * 2 * 2).reshape(3, 2, 2, 10, 8)  # T, Z, C
    software = "SI.hChannels.channelSave = [1;2]\nSI.hStackManager.numSlices = 2\n"
    _scanimage_file(tmp_path / "vol.tif", volume.reshape(-1, 10, 8), software)
    with open_reader(tmp_path / "vol.tif", plane=0) as reader:
        assert reader.shape == (3, 10, 8, 2)
        np.testing.assert_array_equal(reader[:], volume[:, 0].transpose(0, 2, 3, 1))


@pytest.mark.parametrize("memmap", [True, False])
def test_tiff_big_endian(tmp_path, memmap):
    video = make_video("uint16", t=4)[..., 0]
    tifffile.imwrite(tmp_path / "be.tif", video, byteorder=">", photometric="minisblack")
    with open_reader(tmp_path / "be.tif", memmap=memmap) as reader:
        assert reader.memory_mapped == memmap
        out = reader[:]
        assert out.dtype == np.uint16 and out.dtype.isnative
        np.testing.assert_array_equal(out[..., 0], video)


def test_tiff_compressed_reads_only_requested_pages(tmp_path, monkeypatch):
    video = make_video("uint16", t=8)[..., 0]
    tifffile.imwrite(tmp_path / "z.tif", video, compression="zlib", photometric="minisblack")
    requested = []
    original = tifffile.TiffFile.asarray

    def spy(self, *args, **kwargs):
        requested.append(list(kwargs.get("key")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffFile, "asarray", spy)
    with open_reader(tmp_path / "z.tif") as reader:
        assert not reader.memory_mapped
        np.testing.assert_array_equal(reader.read(3, 5)[..., 0], video[3:5])
        np.testing.assert_array_equal(reader[[6, 1]][..., 0], video[[6, 1]])
    assert requested == [[3, 4], [1], [6]]


def test_tiff_rgb_samples_are_channels(tmp_path):
    rgb = make_video("uint8", t=4, c=3)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with open_reader(tmp_path / "rgb.tif") as reader:
        assert reader.shape == rgb.shape
        np.testing.assert_array_equal(reader[:], rgb)


def test_tiff_bigtiff_choice(tmp_path, monkeypatch):
    frames = make_video("uint16", t=3, c=2)

    def written(name, **kwargs):
        with open_writer(tmp_path / name, **kwargs) as writer:
            writer.write(frames)
        with open_reader(tmp_path / name) as reader:
            np.testing.assert_array_equal(reader[:], frames)
        with tifffile.TiffFile(tmp_path / name) as tif:
            return tif.is_bigtiff

    assert written("classic.tif") is False  # ImageJ, size unknown
    assert written("always.tif", bigtiff=True) is True
    assert written("huge.tif", expected_frames=100_000_000) is True  # 32 GB
    assert written("small.tif", expected_frames=3) is False
    with open_writer(tmp_path / "shaped.tif") as writer:  # non-ImageJ dtype, size unknown
        writer.write(frames.astype(np.int32))
    with tifffile.TiffFile(tmp_path / "shaped.tif") as tif:
        assert tif.is_bigtiff
    from pyflowreg.io.tiff import TIFFWriter

    wide = frames.astype(np.int32)
    monkeypatch.setattr(TIFFWriter, "classic_limit", wide[0].nbytes * 2)
    writer = open_writer(tmp_path / "limit.tif", bigtiff=False)
    writer.write(wide[:2])
    with pytest.raises(ValueError, match=r"would exceed 4 GB.*bigtiff=True"):
        writer.write(wide[2:])
    writer.close()
    with tifffile.TiffFile(tmp_path / "limit.tif") as tif:  # what was written is intact
        assert not tif.is_bigtiff
    with open_reader(tmp_path / "limit.tif") as reader:
        np.testing.assert_array_equal(reader[:], wide[:2])


def test_tiff_writer_rejects_imagej_for_unsupported_dtype(tmp_path):
    writer = open_writer(tmp_path / "a.tif", imagej=True)
    with pytest.raises(TypeError, match="ImageJ TIFF cannot hold dtype int16"):
        writer.write(np.zeros((1, 4, 4, 1), np.int16))
    writer.close()


# -- MAT ------------------------------------------------------------------------------------------
def test_mat_v5_layouts(tmp_path):
    video = make_video("uint16", c=2)
    scipy.io.savemat(
        tmp_path / "v5.mat",
        {
            "mov": video[..., 0].transpose(1, 2, 0),  # MATLAB (H, W, T)
            "both": video.transpose(1, 2, 0, 3),  # (H, W, T, C)
            "tyx": video[..., 1],
            "label": "not a video",
        },
    )
    with open_reader(tmp_path / "v5.mat") as reader:
        assert reader.shape == (6, 10, 8, 1)
        np.testing.assert_array_equal(reader[:][..., 0], video[..., 0])
    with open_reader(tmp_path / "v5.mat", variable_name="both") as reader:
        np.testing.assert_array_equal(reader.read(1, 3), video[1:3])
    with open_reader(tmp_path / "v5.mat", variable_name="tyx", axis_order="TYX") as reader:
        np.testing.assert_array_equal(reader[:][..., 0], video[..., 1])


def test_mat_writer_is_matlab_v73(tmp_path):
    video = make_video("uint16", c=2)
    with open_writer(tmp_path / "out.mat") as writer:
        writer.write(video[:4])
        writer.write(video[4:])
    header = (tmp_path / "out.mat").read_bytes()[:128]
    assert header.startswith(b"MATLAB 7.3 MAT-file")
    assert header[124:128] == b"\x00\x02IM"
    with h5py.File(tmp_path / "out.mat") as f:
        assert f.userblock_size == 512
        assert sorted(f) == ["ch1", "ch2"]
        assert f["ch1"].shape == (6, 8, 10)  # MATLAB (H, W, T), column-major
        assert f["ch1"].attrs["MATLAB_class"] == b"uint16"
        np.testing.assert_array_equal(f["ch2"][:], video[..., 1].transpose(0, 2, 1))
    with open_reader(tmp_path / "out.mat") as reader:
        np.testing.assert_array_equal(reader[:], video)


def test_mat_writer_stacked_and_named(tmp_path):
    video = make_video("float32", c=2)
    with open_writer(tmp_path / "w.mat", layout="stacked", variable_name="w") as writer:
        writer.write(video)
    with h5py.File(tmp_path / "w.mat") as f:
        assert f["w"].shape == (2, 6, 8, 10)  # MATLAB (H, W, T, C)
        assert f["w"].attrs["MATLAB_class"] == b"single"
    with open_reader(tmp_path / "w.mat") as reader:
        np.testing.assert_array_equal(reader[:], video)
    with open_writer(tmp_path / "uv.mat", variable_names=["u", "v"]) as writer:
        writer.write(video)
    with open_reader(tmp_path / "uv.mat", variable_names=["u", "v"]) as reader:
        np.testing.assert_array_equal(reader[:], video)
    writer = open_writer(tmp_path / "bad.mat")
    with pytest.raises(TypeError, match="MAT files cannot hold dtype float16"):
        writer.write(np.zeros((1, 4, 4, 1), np.float16))
    writer.close()


def test_mat_v73_file_from_matlab_layout(tmp_path):
    video = make_video("int16")[..., 0]
    path = tmp_path / "m.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("frames", data=video.transpose(0, 2, 1))  # MATLAB (H, W, T) on disk
        f.create_dataset("#refs#/a", data=np.zeros((9, 9, 9)))
    with open_reader(path) as reader:
        assert reader.shape == (6, 10, 8, 1)
        np.testing.assert_array_equal(reader[2][..., 0], video[2])


# -- NPY ------------------------------------------------------------------------------------------
def test_npy_writer_header(tmp_path):
    video = make_video("float32", t=12, c=2)
    with open_writer(tmp_path / "v.npy") as writer:
        for block in np.array_split(video, 5):
            writer.write(block)
    raw = (tmp_path / "v.npy").read_bytes()
    header_len = int.from_bytes(raw[8:10], "little")
    assert (10 + header_len) % 64 == 0
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), video)


def test_npy_reader_fortran_order_and_axis_order(tmp_path):
    video = make_video("uint16")[..., 0]
    np.save(tmp_path / "f.npy", np.asfortranarray(video))
    np.save(tmp_path / "yxt.npy", video.transpose(1, 2, 0))
    with open_reader(tmp_path / "f.npy") as reader:
        np.testing.assert_array_equal(reader.read(1, 4)[..., 0], video[1:4])
    with open_reader(tmp_path / "yxt.npy", axis_order="YXT") as reader:
        np.testing.assert_array_equal(reader[:][..., 0], video)


# -- Zarr -----------------------------------------------------------------------------------------
def test_zarr_parallel_region_writes(tmp_path):
    video = make_video("uint16", t=8, c=2)
    path = tmp_path / "v.zarr"
    with open_writer(path, chunk_frames=4) as creator:
        creator.create(video.shape, video.dtype)
    first = open_writer(path, "zarr", mode="r+")
    second = open_writer(path, "zarr", mode="r+")
    assert second.chunk_frames == 4
    with second:
        second.write_at(4, video[4:])
    with first:
        first.write_at(0, video[:4])
        with pytest.raises(IndexError, match=r"write_at\(start=6\) of 4 frames does not fit"):
            first.write_at(6, video[:4])
    assert first.frames_written == 4
    with open_reader(path) as reader:
        np.testing.assert_array_equal(reader[:], video)


def test_zarr_write_at_needs_create(tmp_path):
    writer = open_writer(tmp_path / "v.zarr")
    with pytest.raises(ValueError, match=r"call create\(shape, dtype\) before write_at"):
        writer.write_at(0, np.zeros((1, 4, 4, 1)))
    writer.create((2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="already been created"):
        writer.create((2, 4, 4), np.float32)
    writer.write(np.ones((3, 4, 4, 1), np.float32))  # appends from frame 0, growing the array
    writer.close()
    with open_reader(tmp_path / "v.zarr") as reader:
        assert reader.shape == (3, 4, 4, 1)


def test_zarr_group_dataset(tmp_path):
    import zarr

    video = make_video("int16")[..., 0]
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("mov", shape=video.shape, dtype=video.dtype)[:] = video
    group.create_array("mean", shape=video.shape[1:], dtype="f8")
    with open_reader(tmp_path / "g.zarr") as reader:
        np.testing.assert_array_equal(reader[:][..., 0], video)
    with open_reader(tmp_path / "g.zarr", dataset_name="mov") as reader:
        assert reader.spec.options["dataset_names"] == ["mov"]


def test_missing_zarr_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(ImportError, match=r'pip install "pyflowreg\[zarr\]"'):
        open_writer(tmp_path / "v.zarr")


# -- multi-file, format names ---------------------------------------------------------------------
def test_multi_file_channels(tmp_path):
    video = make_video("uint16", c=2)
    with open_writer(tmp_path / "green.tif") as writer:
        writer.write(video[..., :1])
    with open_writer(tmp_path / "red.h5") as writer:
        writer.write(video[..., 1:])
    with open_reader([tmp_path / "green.tif", tmp_path / "red.h5"]) as reader:
        assert reader.shape == video.shape
        np.testing.assert_array_equal(reader[:], video)
        np.testing.assert_array_equal(reader[[4, 2]], video[[4, 2]])
        twin = pickle.loads(pickle.dumps(reader))
        np.testing.assert_array_equal(twin[1], video[1])
        twin.close()
    with open_reader([str(tmp_path / "green.tif"), str(tmp_path / "red.h5")], bin_size=2) as r:
        assert r.shape == (3, 10, 8, 2)
        np.testing.assert_allclose(r[0], video[:2].mean(axis=0), rtol=1e-6)


def test_multi_file_shape_mismatch(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((5, 4, 4)))
    np.save(tmp_path / "b.npy", np.zeros((6, 4, 4)))
    with pytest.raises(ValueError, match=r"same \(T, H, W\).*'.*b\.npy' \(6, 4, 4\)"):
        open_reader([tmp_path / "a.npy", tmp_path / "b.npy"])


def test_format_names_and_detection(tmp_path):
    assert normalize_format("hdf5") == normalize_format("H5") == "HDF5"
    assert normalize_format("tif") == normalize_format(".TIFF") == "TIFF"
    assert normalize_format("Zarr") == "ZARR"
    assert detect_format("x.H5") == "HDF5"
    assert detect_format("x.btf") == "TIFF"
    video = make_video("uint8")
    write_zarr = open_writer(tmp_path / "store", format="ZARR")
    with write_zarr:
        write_zarr.write(video)
    assert detect_format(tmp_path / "store") == "ZARR"
    with open_reader(tmp_path / "store") as reader:
        np.testing.assert_array_equal(reader[:], video)
    np.save(tmp_path / "v.npy", video)
    (tmp_path / "v.npy").rename(tmp_path / "v.data")
    with open_reader(tmp_path / "v.data", format="npy") as reader:
        np.testing.assert_array_equal(reader[:], video)


# -- real recordings ------------------------------------------------------------------------------
def _data(name):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{name} not found in {DATA}")
    return path


def test_real_sima_example_tif():
    path = _data("sima_example.tif")
    with open_reader(path) as reader:
        assert reader.shape == (20, 128, 256, 1)
        assert reader.dtype == np.uint16
        expected = tifffile.imread(path)
        np.testing.assert_array_equal(reader[:][..., 0], expected)
        np.testing.assert_array_equal(reader.read(5, 8)[..., 0], expected[5:8])
        assert 0 <= reader[:].min() and reader[:].max() <= 4095


def test_real_allen_big_endian_h5():
    path = _data("allen_dewarping_regression_test_input.h5")
    with h5py.File(path) as f:
        assert f["data"].dtype == np.dtype(">u2")
        expected = f["data"][:]
    with open_reader(path) as reader:
        assert reader.shape == (5, 512, 512, 1)
        assert reader.dtype == np.dtype("uint16") and reader.dtype.isnative
        np.testing.assert_array_equal(reader.read(1, 3)[..., 0], expected[1:3])


def test_real_allen_input_frames_h5():
    path = _data("allen_792757260_test_data.h5")
    with h5py.File(path) as f:
        expected = f["input_frames"][:]
    with open_reader(path) as reader:
        assert reader.shape == (100, 100, 100, 1)
        assert reader.dtype == np.int16
        np.testing.assert_array_equal(reader[[0, 99]][..., 0], expected[[0, 99]])
    with open_reader(path, bin_size=5) as reader:
        assert reader.shape == (20, 100, 100, 1)
        np.testing.assert_allclose(reader[3][..., 0], expected[15:20].mean(axis=0), rtol=1e-6)


def test_dataset_name_list_means_one_dataset_per_channel(tmp_path):
    # The pipeline's OFOptions.dataset_name may be a list (one per channel), for HDF5 and MAT.
    video = make_video("uint16", c=2)
    with open_writer(tmp_path / "v.h5", dataset_names=["g", "r"]) as writer:
        writer.write(video)
    with open_writer(tmp_path / "v.mat", variable_names=["g", "r"]) as writer:
        writer.write(video)
    for name in ("v.h5", "v.mat"):
        with open_reader(tmp_path / name, dataset_name=("r", "g")) as reader:
            np.testing.assert_array_equal(reader[:], video[..., ::-1])
    with open_reader(tmp_path / "v.mat", dataset_name="g") as reader:
        np.testing.assert_array_equal(reader[:], video[..., :1])
    with pytest.raises(ValueError, match=r"variable_name\(s\) or their alias"):
        open_reader(tmp_path / "v.mat", dataset_name="g", variable_name="g")
