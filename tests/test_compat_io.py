"""PyFlowReg's documented IO: ``pyflowreg.util.io`` (its user guide "File Formats" page and the
module paths of its API page "I/O System"), checked on small generated videos.

Outputs are opened with the formats' own libraries (h5py, tifffile, scipy.io) as well as read
back through the factory.
"""

import ast
import importlib
import pickle
from enum import Enum
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile

import pyflowreg.io.base
import pyflowreg.io.memory
from pyflowreg.util.io import (
    ArrayWriter,
    MULTICHANNELFileReader,
    VideoReader,
    VideoWriter,
    get_video_file_reader,
    get_video_file_writer,
)

T, H, W = 12, 16, 16


def video(c=2, t=T, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(100, 20, (t, H, W, c)).astype(dtype)
    return rng.integers(0, 4000, (t, H, W, c)).astype(dtype)


def write(path, frames, fmt, **kwargs):
    with get_video_file_writer(str(path), fmt, **kwargs) as writer:
        writer.write_frames(frames[:5])
        writer.write_frames(frames[5:])
    assert writer.closed
    return path


@pytest.fixture
def h5_video(tmp_path):
    frames = video()
    return write(tmp_path / "video.h5", frames, "HDF5"), frames


# -- module paths of the API page ------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        "pyflowreg.util.io",
        "pyflowreg.util.io.factory",
        "pyflowreg.util.io._base",
        "pyflowreg.util.io.hdf5",
        "pyflowreg.util.io.tiff",
        "pyflowreg.util.io.mat",
        "pyflowreg.util.io.multifile_wrappers",
        "pyflowreg.util.io._arr",
        "pyflowreg.util.io._scanimage",
    ],
)
def test_documented_modules_import(module):
    assert importlib.import_module(module).__all__


def test_scanimage_layout_of_plain_and_scanimage_files(tmp_path):
    from pyflowreg.util.io._scanimage import scanimage_layout

    tifffile.imwrite(tmp_path / "plain.tif", video(c=1)[..., 0])
    with tifffile.TiffFile(tmp_path / "plain.tif") as tif:
        assert scanimage_layout(tif) is None


def test_names_are_this_packages_classes():
    """Aliases, not copies: one reader and one writer interface."""
    import pyflowreg.util
    from pyflowreg.io.hdf5 import HDF5Reader, HDF5Writer
    from pyflowreg.io.tiff import TIFFReader, TIFFWriter
    from pyflowreg.util.io import hdf5, tiff
    from pyflowreg.util.io._base import VideoReader as BaseReader

    assert VideoReader is BaseReader is pyflowreg.io.base.VideoReader
    assert VideoWriter is pyflowreg.io.base.VideoWriter
    assert ArrayWriter is pyflowreg.io.memory.ArrayWriter
    assert hdf5.HDF5FileReader is HDF5Reader and hdf5.HDF5FileWriter is HDF5Writer
    assert tiff.TIFFFileReader is TIFFReader and tiff.TIFFFileWriter is TIFFWriter
    assert pyflowreg.util.io is importlib.import_module("pyflowreg.util.io")
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        pyflowreg.util.nothing_here  # noqa: B018


def _io_imports(path: Path) -> set[str]:
    """Modules of pyflowreg.io that ``path`` imports, at any level (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("pyflowreg.io."):
                found.add(node.module.rsplit(".", 1)[1])
            elif node.module == "pyflowreg.io":
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                a.name.rsplit(".", 1)[1] for a in node.names if a.name.startswith("pyflowreg.io.")
            )
    return found


def test_io_has_no_import_circle():
    folder = Path(pyflowreg.io.base.__file__).parent
    modules = {p.stem: p for p in folder.glob("*.py") if p.stem != "__init__"}
    graph = {m: _io_imports(p) & set(modules) for m, p in modules.items()}
    assert graph["base"] == set()  # the interface imports no reader and no factory
    assert "formats" not in set().union(*(graph[m] for m in modules if m != "formats"))
    state: dict[str, int] = {}

    def visit(m, trail):
        if state.get(m) == 1:
            pytest.fail(f"import circle in pyflowreg.io: {' -> '.join([*trail, m])}")
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in sorted(graph[m]):
            visit(n, [*trail, m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])


# -- readers: selection by extension, arrays, readers, lists --------------------------------------


@pytest.mark.parametrize("suffix", [".h5", ".hdf5", ".hdf", ".tif", ".tiff", ".mat"])
def test_reader_by_extension(tmp_path, suffix):
    frames = video()
    fmt = {".tif": "TIFF", ".tiff": "TIFF", ".mat": "MAT"}.get(suffix, "HDF5")
    path = write(tmp_path / f"v{suffix}", frames, fmt)
    with get_video_file_reader(str(path)) as reader:
        assert reader.shape == (T, H, W, 2)
        assert reader.dtype == np.uint16
        assert reader.n_channels == 2 and len(reader) == T
        np.testing.assert_array_equal(reader[:], frames)


def test_unknown_extension_is_probed_as_hdf5(tmp_path):
    frames = video(c=1)
    with h5py.File(tmp_path / "rec.dat", "w") as f:
        f["mov"] = frames[..., 0]
    with get_video_file_reader(tmp_path / "rec.dat") as reader:
        np.testing.assert_array_equal(reader[:], frames)
    (tmp_path / "notes.dat").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot tell the format"):
        get_video_file_reader(tmp_path / "notes.dat")


def test_folders_as_input(tmp_path):
    frames = video(c=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="does not contain images"):
        get_video_file_reader(tmp_path / "empty")
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "f000.tif", frames[0, ..., 0])
    with pytest.raises(NotImplementedError, match="TIFF stack"):
        get_video_file_reader(str(tmp_path / "images"))


def test_mdf_input_is_not_implemented(tmp_path):
    (tmp_path / "rec.mdf").write_bytes(b"\0" * 16)
    with pytest.raises(NotImplementedError, match="MDF"):
        get_video_file_reader(tmp_path / "rec.mdf")


def test_reader_from_array_and_from_reader(h5_video):
    path, frames = h5_video
    file_reader = get_video_file_reader(str(path), buffer_size=500, bin_size=1)
    array = file_reader[:]
    file_reader.close()
    array_reader = get_video_file_reader(array)
    assert array_reader.shape == (T, H, W, 2)
    np.testing.assert_array_equal(array_reader[3], frames[3])
    assert get_video_file_reader(array_reader, buffer_size=4) is array_reader
    assert array_reader.buffer_size == 4
    with pytest.raises(ValueError, match="bin_size"):
        get_video_file_reader(array_reader, bin_size=2)
    single = get_video_file_reader(frames[..., 0])  # (T, H, W) is one channel
    assert single.shape == (T, H, W, 1)


def test_bad_reader_options(h5_video):
    path, _ = h5_video
    with pytest.raises(TypeError, match="no_such_option"):
        get_video_file_reader(str(path), no_such_option=1)
    with pytest.raises(ValueError, match="buffer_size must be >= 1, got 0"):
        get_video_file_reader(str(path), buffer_size=0)
    with pytest.raises(ValueError, match="bin_size must be >= 1, got 0"):
        get_video_file_reader(str(path), bin_size=0)
    with pytest.raises(FileNotFoundError, match=r"missing\.h5"):
        get_video_file_reader(str(path.parent / "missing.h5"))


# -- array-like indexing --------------------------------------------------------------------------


def test_array_like_indexing(h5_video):
    path, frames = h5_video
    with get_video_file_reader(str(path)) as reader:
        assert reader[0].shape == (H, W, 2)
        np.testing.assert_array_equal(reader[0], frames[0])
        np.testing.assert_array_equal(reader[-1], frames[-1])
        np.testing.assert_array_equal(reader[2:9], frames[2:9])
        np.testing.assert_array_equal(reader[::2], frames[::2])
        np.testing.assert_array_equal(reader[-4:], frames[-4:])
        np.testing.assert_array_equal(reader[::-3], frames[::-3])
        np.testing.assert_array_equal(reader[[0, 10, 3, 3]], frames[[0, 10, 3, 3]])
        np.testing.assert_array_equal(reader[0:10, 4:12, 2:6, :], frames[0:10, 4:12, 2:6, :])
        np.testing.assert_array_equal(reader[5, 1:3, :, 1], frames[5, 1:3, :, 1])
        np.testing.assert_array_equal(np.asarray(reader), frames)
        assert (reader.height, reader.width, reader.frame_count) == (H, W, T)
        with pytest.raises(IndexError, match="out of range"):
            reader[T]
    with pytest.raises(ValueError, match="closed"):
        reader[0]


def test_indices_refer_to_binned_frames(h5_video):
    path, frames = h5_video
    with get_video_file_reader(str(path), bin_size=3) as reader:
        assert reader.shape == (T // 3, H, W, 2)
        expected = frames.reshape(T // 3, 3, H, W, 2).mean(axis=1)
        np.testing.assert_allclose(reader[0], expected[0], rtol=1e-6)
        np.testing.assert_allclose(reader[:], expected, rtol=1e-6)
        assert reader.dtype == np.float32


# -- batch iteration ------------------------------------------------------------------------------


def test_batch_iteration(h5_video):
    path, frames = h5_video
    reader = get_video_file_reader(str(path), buffer_size=5)
    sizes = [batch.shape[0] for batch in reader]
    assert sizes == [5, 5, 2]
    np.testing.assert_array_equal(np.concatenate(list(reader)), frames)  # every loop starts at 0
    got = []
    while reader.has_batch():
        got.append(reader.read_batch())
    assert [b.shape for b in got] == [(5, H, W, 2), (5, H, W, 2), (2, H, W, 2)]
    np.testing.assert_array_equal(np.concatenate(got), frames)
    assert reader.read_batch().shape == (0, H, W, 2)
    reader.reset()
    assert reader.has_batch() and reader.current_frame == 0
    np.testing.assert_array_equal(reader.read_batch(), frames[:5])
    reader.close()


# -- multi-channel from separate files ------------------------------------------------------------


def test_multichannel_reader_from_separate_files(tmp_path):
    frames = video(c=2)
    paths = [
        str(write(tmp_path / f"ch{i + 1}.tif", frames[..., i : i + 1], "TIFF")) for i in range(2)
    ]
    reader = MULTICHANNELFileReader(paths)
    assert reader.shape == (T, H, W, 2)
    np.testing.assert_array_equal(reader[:], frames)
    same = get_video_file_reader(paths, buffer_size=7)
    assert isinstance(same, MULTICHANNELFileReader)
    assert [b.shape[0] for b in same] == [7, 5]
    np.testing.assert_array_equal(same[:], frames)
    twin = pickle.loads(pickle.dumps(same))
    np.testing.assert_array_equal(twin[:], frames)
    for r in (reader, same, twin):
        r.close()
    mixed = [paths[0], str(write(tmp_path / "other.h5", frames[:6, ..., :1], "HDF5"))]
    with pytest.raises(ValueError, match="same"):
        MULTICHANNELFileReader(mixed)
    with pytest.raises(ValueError, match="two or more files"):
        MULTICHANNELFileReader(paths[:1])


def test_multichannel_reader_bins_every_file(tmp_path):
    frames = video(c=2)
    paths = [write(tmp_path / f"c{i}.h5", frames[..., i : i + 1], "HDF5") for i in range(2)]
    with get_video_file_reader(paths, bin_size=2) as reader:
        assert reader.shape == (T // 2, H, W, 2)
        np.testing.assert_allclose(reader[:], frames.reshape(T // 2, 2, H, W, 2).mean(1))


# -- HDF5 -----------------------------------------------------------------------------------------


def test_hdf5_writer_layout_and_attributes(tmp_path):
    frames = video(c=2, dtype=np.float32)
    path = write(tmp_path / "output.h5", frames, "HDF5")
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["ch1", "ch2"]
        for i in range(2):
            assert f[f"ch{i + 1}"].shape == (T, H, W)
            assert f[f"ch{i + 1}"].dtype == np.float32
            np.testing.assert_array_equal(f[f"ch{i + 1}"][()], frames[..., i])
        assert f.attrs["frame_count"] == T
        assert (f.attrs["height"], f.attrs["width"], f.attrs["n_channels"]) == (H, W, 2)
        assert tuple(f.attrs["dimension_ordering"]) == (1, 2, 0)
        assert f.attrs["format"] == "HDF5"
        assert list(f.attrs["dataset_names"]) == ["ch1", "ch2"]


def test_hdf5_compression_and_chunks(tmp_path):
    frames = video(c=1, dtype=np.float32)
    write(tmp_path / "c.h5", frames, "HDF5", compression="gzip", compression_level=4)
    write(tmp_path / "k.h5", frames, "HDF5", chunk_size=10)
    write(tmp_path / "l.h5", frames, "HDF5", compression="lzf")
    with h5py.File(tmp_path / "c.h5") as f:
        assert (f["ch1"].compression, f["ch1"].compression_opts) == ("gzip", 4)
        np.testing.assert_array_equal(f["ch1"][()], frames[..., 0])
    with h5py.File(tmp_path / "k.h5") as f:
        assert f["ch1"].chunks == (10, H, W) and f["ch1"].compression is None
    with h5py.File(tmp_path / "l.h5") as f:
        assert f["ch1"].compression == "lzf"
    for name in ("c.h5", "k.h5", "l.h5"):
        with get_video_file_reader(tmp_path / name) as reader:
            np.testing.assert_array_equal(reader[:], frames)
    with pytest.raises(ValueError, match="compression must be one of"):
        get_video_file_writer(str(tmp_path / "x.h5"), "HDF5", compression="zip")


def test_hdf5_dataset_names_and_dimension_ordering(tmp_path):
    frames = video(c=2)
    write(tmp_path / "a.h5", frames, "HDF5", dataset_names=["green", "red"])
    write(tmp_path / "b.h5", frames, "HDF5", dataset_names="chan{}")
    write(tmp_path / "m.h5", frames, "HDF5", dimension_ordering=(0, 1, 2))
    with h5py.File(tmp_path / "a.h5") as f:
        assert sorted(f) == ["green", "red"]
    with h5py.File(tmp_path / "b.h5") as f:
        assert sorted(f) == ["chan1", "chan2"]
    with h5py.File(tmp_path / "m.h5") as f:  # MATLAB order (H, W, T)
        assert f["ch1"].shape == (H, W, T)
        np.testing.assert_array_equal(f["ch2"][()], frames[..., 1].transpose(1, 2, 0))
        assert tuple(f.attrs["dimension_ordering"]) == (0, 1, 2)
    for name in ("a.h5", "b.h5", "m.h5"):  # names and order are read back from the file
        with get_video_file_reader(tmp_path / name) as reader:
            np.testing.assert_array_equal(reader[:], frames)
    with get_video_file_reader(tmp_path / "a.h5", dataset_names="red") as reader:
        np.testing.assert_array_equal(reader[:], frames[..., 1:])
    with get_video_file_reader(tmp_path / "a.h5", dataset_names=["red", "green"]) as reader:
        np.testing.assert_array_equal(reader[:], frames[..., ::-1])
    with pytest.raises(ValueError, match="permutation"):
        get_video_file_writer(str(tmp_path / "x.h5"), "HDF5", dimension_ordering=(0, 0, 1))


def test_hdf5_dataset_discovery(tmp_path):
    frames = video(c=2)
    with h5py.File(tmp_path / "named.h5", "w") as f:
        f["other"] = np.zeros((3, 4, 4))
        f["mov"] = frames[..., 0]
    with h5py.File(tmp_path / "largest.h5", "w") as f:
        f["small"] = np.zeros((2, 4, 4), np.uint16)
        f["big"] = frames[..., 1]
    with h5py.File(tmp_path / "stacked.h5", "w") as f:
        f["video"] = frames  # 4-D: (T, H, W, C)
    with get_video_file_reader(tmp_path / "named.h5") as r:
        np.testing.assert_array_equal(r[:], frames[..., :1])
    with get_video_file_reader(tmp_path / "largest.h5") as r:
        np.testing.assert_array_equal(r[:], frames[..., 1:])
    with get_video_file_reader(tmp_path / "stacked.h5") as r:
        np.testing.assert_array_equal(r[:], frames)


# -- TIFF -----------------------------------------------------------------------------------------


def test_tiff_writer_defaults_and_options(tmp_path):
    frames = video(c=2)
    write(tmp_path / "big.tif", frames, "TIFF")
    write(tmp_path / "ij.tif", frames, "TIFF", imagej=True)
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff and not tif.is_imagej  # BigTIFF, no ImageJ metadata by default
        assert len(tif.pages) == T * 2
        assert tif.pages[0].compression == 1
    with tifffile.TiffFile(tmp_path / "ij.tif") as tif:
        assert tif.is_imagej and not tif.is_bigtiff
        np.testing.assert_array_equal(tif.asarray(), frames.transpose(0, 3, 1, 2))
    for name in ("big.tif", "ij.tif"):
        with get_video_file_reader(tmp_path / name) as reader:
            np.testing.assert_array_equal(reader[:], frames)


@pytest.mark.parametrize("compression", ["zlib", "deflate", "none"])
@pytest.mark.parametrize("dtype", [np.uint16, np.float64])
def test_tiff_compression(tmp_path, compression, dtype):
    frames = video(c=2, dtype=dtype)
    path = write(tmp_path / "z.tif", frames, "TIFF", compression=compression)
    with tifffile.TiffFile(path) as tif:
        expected = 1 if compression == "none" else 8  # ADOBE_DEFLATE
        assert {p.compression for p in tif.pages} == {expected}
        stored = tif.asarray()
    np.testing.assert_array_equal(
        stored.reshape(frames.shape[0], 2, H, W), frames.transpose(0, 3, 1, 2)
    )
    with get_video_file_reader(path) as reader:
        assert reader.shape == frames.shape
        np.testing.assert_array_equal(reader[:], frames)


def test_tiff_codecs_that_need_imagecodecs(tmp_path):
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install imagecodecs"):
            get_video_file_writer(str(tmp_path / "l.tif"), "TIFF", compression="lzw")
    else:
        frames = video(c=1)
        path = write(tmp_path / "l.tif", frames, "TIFF", compression="lzw")
        with get_video_file_reader(path) as reader:
            np.testing.assert_array_equal(reader[:], frames)
    with pytest.raises(ValueError, match="unknown TIFF compression"):
        get_video_file_writer(str(tmp_path / "x.tif"), "TIFF", compression="rar")


def test_tiff_deinterleave_and_memmap(tmp_path):
    frames = video(c=2)
    pages = frames.transpose(0, 3, 1, 2).reshape(T * 2, H, W)  # ch1, ch2, ch1, ...
    tifffile.imwrite(tmp_path / "plain.tif", pages, photometric="minisblack")
    with get_video_file_reader(tmp_path / "plain.tif") as reader:
        assert reader.shape == (T * 2, H, W, 1)
    with get_video_file_reader(tmp_path / "plain.tif", deinterleave=2) as reader:
        np.testing.assert_array_equal(reader[:], frames)
    mapped = get_video_file_reader(tmp_path / "plain.tif")
    unmapped = get_video_file_reader(tmp_path / "plain.tif", use_memmap=False)
    assert mapped.memory_mapped and not unmapped.memory_mapped
    np.testing.assert_array_equal(mapped[:], unmapped[:])
    mapped.close()
    unmapped.close()


def test_scanimage_volumes_are_flattened(tmp_path):
    rng = np.random.default_rng(5)
    volume = rng.integers(0, 1000, (3, 2, 2, H, W)).astype(np.int16)  # T, Z, C pages
    software = "SI.hChannels.channelSave = [1;2]\nSI.hStackManager.numSlices = 2\n"
    with tifffile.TiffWriter(tmp_path / "vol.tif", bigtiff=True) as tw:
        for page in volume.reshape(-1, H, W):
            tw.write(page, software=software, description="frameNumbers = 1", metadata=None)
    with get_video_file_reader(tmp_path / "vol.tif") as reader:  # channels from the metadata
        assert reader.shape == (6, H, W, 2)
        expected = volume.reshape(6, 2, H, W).transpose(0, 2, 3, 1)  # t0z0, t0z1, t1z0, ...
        np.testing.assert_array_equal(reader[:], expected)
    with get_video_file_reader(tmp_path / "vol.tif", plane=1) as reader:
        np.testing.assert_array_equal(reader[:], volume[:, 1].transpose(0, 2, 3, 1))


def test_suite2p_tiff(tmp_path):
    frames = video(c=2)
    path = write(tmp_path / "s2p.tif", frames, "SUITE2P_TIFF")
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == T * 2
        assert all(p.shape == (H, W) for p in tif.pages)
        np.testing.assert_array_equal(tif.pages[2 * 5 + 1].asarray(), frames[5, ..., 1])
        assert not tif.is_imagej and not tif.is_shaped  # no channel metadata
    with get_video_file_reader(path, deinterleave=2) as reader:
        np.testing.assert_array_equal(reader[:], frames)


# -- MAT ------------------------------------------------------------------------------------------


def test_mat_writer_default_v5_and_v73(tmp_path):
    frames = video(c=2)
    v5 = write(tmp_path / "out.mat", frames, "MAT")
    loaded = scipy.io.loadmat(v5)
    assert loaded["ch1"].shape == (H, W, T)  # MATLAB order
    np.testing.assert_array_equal(loaded["ch2"], frames[..., 1].transpose(1, 2, 0))
    v73 = write(tmp_path / "out73.mat", frames, "MAT", use_v73=True)
    assert h5py.is_hdf5(v73) and not h5py.is_hdf5(v5)
    with h5py.File(v73) as f:
        np.testing.assert_array_equal(f["ch1"][()], frames[..., 0].transpose(0, 2, 1))
    named = write(tmp_path / "named.mat", frames, "MAT", dataset_names=["g", "r"])
    assert {"g", "r"} <= set(scipy.io.loadmat(named))
    for path in (v5, v73):
        with get_video_file_reader(path) as reader:
            np.testing.assert_array_equal(reader[:], frames)
    with get_video_file_reader(named, dataset_names=["g", "r"]) as reader:
        np.testing.assert_array_equal(reader[:], frames)


def test_mat_reader_discovery(tmp_path):
    frames = video(c=1)
    scipy.io.savemat(
        tmp_path / "mov.mat", {"note": np.ones(3), "mov": frames[..., 0].transpose(1, 2, 0)}
    )
    with get_video_file_reader(tmp_path / "mov.mat") as reader:
        np.testing.assert_array_equal(reader[:], frames)
    with get_video_file_reader(tmp_path / "mov.mat", dataset_names="mov") as reader:
        assert reader.shape == (T, H, W, 1)
    larger = np.zeros((H, W, 2 * T), np.uint16)
    scipy.io.savemat(
        tmp_path / "ds.mat", {"big": larger, "dataset": frames[..., 0].transpose(1, 2, 0)}
    )
    with get_video_file_reader(tmp_path / "ds.mat") as reader:  # a common name before size
        np.testing.assert_array_equal(reader[:], frames)


# -- output format table --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "suffix", "open_channel"),
    [
        ("MULTIFILE_HDF5", ".HDF5", lambda p: h5py.File(p)["ch1"][()]),
        ("MULTIFILE_TIFF", ".TIFF", lambda p: tifffile.imread(p)),
        ("MULTIFILE_MAT", ".MAT", lambda p: scipy.io.loadmat(p)["ch1"].transpose(2, 0, 1)),
        ("CAIMAN_HDF5", ".hdf5", lambda p: h5py.File(p)["mov"][()]),
    ],
)
def test_one_file_per_channel(tmp_path, fmt, suffix, open_channel):
    frames = video(c=2, dtype=np.float32)
    folder = tmp_path / "multifile"
    writer = get_video_file_writer(str(folder / "compensated.h5"), fmt)
    assert not folder.exists()  # files are created at the first write
    with writer:
        writer.write_frames(frames[:4])
        writer.write_frames(frames[4:])
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"compensated_ch1{suffix}", f"compensated_ch2{suffix}"]
    for i in range(2):
        path = folder / f"compensated_ch{i + 1}{suffix}"
        np.testing.assert_array_equal(np.squeeze(open_channel(path)), frames[..., i])
        with get_video_file_reader(path) as reader:
            np.testing.assert_array_equal(reader[:], frames[..., i : i + 1])
    channels = [str(folder / f"compensated_ch{i + 1}{suffix}") for i in range(2)]
    with get_video_file_reader(channels) as reader:
        np.testing.assert_array_equal(reader[:], frames)


def test_multifile_path_without_extension_is_a_folder(tmp_path):
    frames = video(c=2)
    write(tmp_path / "out", frames, "MULTIFILE_HDF5")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "compensated_ch1.HDF5",
        "compensated_ch2.HDF5",
    ]


def test_memory_writers():
    frames = video(c=2, t=5, dtype=np.float32)
    array_writer = get_video_file_writer("", "ARRAY")
    array_writer.write_frames(frames[:2])
    array_writer.write_frames(frames[2:])
    assert array_writer.get_array().shape == (5, H, W, 2)
    np.testing.assert_array_equal(array_writer.get_array(), frames)
    null_writer = get_video_file_writer("", "NULL")
    null_writer.write_frames(frames)
    assert null_writer.frames_written == 5
    with get_video_file_writer(None, "array") as writer:  # any case, no path
        writer.write_frames(frames[0])
    np.testing.assert_array_equal(writer.get_array(), frames[:1])


def test_format_names_enums_and_errors(tmp_path):
    class OutputFormat(Enum):
        HDF5 = "HDF5"

    frames = video(c=1)
    write(tmp_path / "e.h5", frames, OutputFormat.HDF5)
    with h5py.File(tmp_path / "e.h5") as f:
        np.testing.assert_array_equal(f["ch1"][()], frames[..., 0])
    with pytest.raises(NotImplementedError, match="BEGONIA"):
        get_video_file_writer(str(tmp_path / "b"), "BEGONIA")
    with pytest.raises(ValueError, match="unknown format 'AVI'"):
        get_video_file_writer(str(tmp_path / "a.avi"), "AVI")
    with pytest.raises(ValueError, match="needs an output path"):
        get_video_file_writer("", "HDF5")
    with pytest.raises(TypeError, match="chunk_size"):
        get_video_file_writer(str(tmp_path / "t.tif"), "TIFF", chunk_size=3)


# -- writing: batches, context manager; conversion ------------------------------------------------


def test_batch_writing_and_context_manager(tmp_path):
    batches = [video(c=2, t=4, dtype=np.float32, seed=s) for s in range(3)]
    writer = get_video_file_writer(str(tmp_path / "output.h5"), "HDF5")
    for batch in batches:
        writer.write_frames(batch)
    writer.close()
    writer.close()  # closing twice is harmless
    with get_video_file_reader(tmp_path / "output.h5") as reader:
        np.testing.assert_array_equal(reader[:], np.concatenate(batches))
    with get_video_file_writer(str(tmp_path / "ctx.h5"), "HDF5") as writer:
        writer.write_frames(batches[0])
    assert writer.closed
    with pytest.raises(ValueError, match="closed"):
        writer.write_frames(batches[0])
    with pytest.raises(ValueError, match="frame shape changed"):
        with get_video_file_writer(str(tmp_path / "bad.h5"), "HDF5") as writer:
            writer.write_frames(batches[0])
            writer.write_frames(batches[0][:, :8])


def test_tiff_to_hdf5_conversion(tmp_path):
    frames = video(c=2)
    tiff_dir, h5_dir = tmp_path / "tiff_files", tmp_path / "hdf5_files"
    tiff_dir.mkdir()
    h5_dir.mkdir()
    for i in range(3):
        write(tiff_dir / f"rec{i}.tif", frames[i:], "TIFF")
    for tiff_file in sorted(tiff_dir.glob("*.tif")):
        reader = get_video_file_reader(str(tiff_file), buffer_size=4)
        with get_video_file_writer(str(h5_dir / f"{tiff_file.stem}.h5"), "HDF5") as writer:
            for batch in reader:
                writer.write_frames(batch)
        reader.close()
    for i in range(3):
        with h5py.File(h5_dir / f"rec{i}.h5") as f:
            np.testing.assert_array_equal(f["ch1"][()], frames[i:, ..., 0])
            assert f["ch2"].dtype == np.uint16


def test_write_frames_reads_3d_blocks_as_pyflowreg_does(tmp_path):
    """``write_frames`` of a 3-D block: ``(T, H, W)`` frames (PyFlowReg's reading), unless it
    is one ``(H, W, C)`` frame of the writer's shape or has at most 4 channels up front."""
    stack = np.arange(10 * 16 * 12, dtype=np.float32).reshape(10, 16, 12)
    with get_video_file_writer(str(tmp_path / "t.h5"), "HDF5") as writer:
        writer.write_frames(stack)
        writer.write_frames(stack[:2])  # more (T, H, W) frames of the one-channel writer
        writer.write_frames(stack[0][..., None])  # one (H, W, 1) frame
    back = get_video_file_reader(str(tmp_path / "t.h5"))[:]
    assert back.shape == (13, 16, 12, 1)
    np.testing.assert_array_equal(back[:10, ..., 0], stack)
    np.testing.assert_array_equal(back[12, ..., 0], stack[0])
    two = np.zeros((16, 12, 2), np.float32)
    with get_video_file_writer(str(tmp_path / "c.h5"), "HDF5") as writer:
        writer.write_frames(two)  # a frame with 2 channels
        writer.write_frames(two)
    assert get_video_file_reader(str(tmp_path / "c.h5"))[:].shape == (2, 16, 12, 2)
