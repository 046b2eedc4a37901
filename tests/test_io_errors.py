"""Errors of the io layer: missing and damaged files, unknown formats, missing datasets."""

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile

from pyflowreg.io import CorruptFileError, DatasetNotFoundError, open_reader, open_writer


def video(dtype="uint16", t=20, size=32, c=1):
    rng = np.random.default_rng(3)
    return (rng.random((t, size, size, c)) * 1000).astype(dtype)


def truncate_to_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _pyflowreg_file(tmp_path, name):
    with open_writer(tmp_path / name) as writer:
        writer.write(video())
    return tmp_path / name


CORRUPT_CASES = {
    "imagej.tif": lambda p: _pyflowreg_file(p.parent, p.name),
    "shaped.tif": lambda p: tifffile.imwrite(p, video("int16")[..., 0], photometric="minisblack"),
    "zlib.tif": lambda p: tifffile.imwrite(
        p, video()[..., 0], compression="zlib", photometric="minisblack"
    ),
    "pages.tif": lambda p: [
        tifffile.imwrite(p, frame, append=True, metadata=None) for frame in video()[..., 0]
    ],
    "chunked.h5": lambda p: _pyflowreg_file(p.parent, p.name),
    "plain.h5": lambda p: h5py.File(p, "w").create_dataset("data", data=video()).file.close(),
    "v73.mat": lambda p: _pyflowreg_file(p.parent, p.name),
    "v5.mat": lambda p: scipy.io.savemat(p, {"mov": video()[..., 0].transpose(1, 2, 0)}),
    "video.npy": lambda p: np.save(p, video()),
}


@pytest.mark.parametrize("name", CORRUPT_CASES)
def test_truncated_file_is_reported_as_corrupt(tmp_path, name):
    path = tmp_path / name
    CORRUPT_CASES[name](path)
    with open_reader(path) as reader:  # the intact file reads
        assert reader.shape == (20, 32, 32, 1)
    truncate_to_half(path)
    with pytest.raises(CorruptFileError, match=rf"'.*{name}' is corrupt or unreadable") as info:
        with open_reader(path) as reader:
            reader[:]
    assert isinstance(info.value, ValueError) and isinstance(info.value, OSError)


@pytest.mark.parametrize("name", ["junk.h5", "junk.tif", "junk.mat", "junk.npy"])
def test_file_in_another_format_is_corrupt(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is not a video file at all" * 10)
    with pytest.raises(CorruptFileError, match=rf"'.*{name}' is corrupt or unreadable"):
        open_reader(tmp_path / name)


def test_damaged_zarr_store_is_corrupt(tmp_path):
    store = tmp_path / "bad.zarr"
    store.mkdir()
    (store / "zarr.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match=r"bad\.zarr' is corrupt or unreadable"):
        open_reader(store)


@pytest.mark.parametrize("name", ["nope.h5", "nope.tif", "nope.mat", "nope.npy", "nope.zarr"])
def test_missing_file(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=rf"input file not found: '.*{name}'"):
        open_reader(tmp_path / name)


def test_missing_file_in_a_multi_file_input(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 4, 4)))
    with pytest.raises(FileNotFoundError, match=r"b\.npy"):
        open_reader([tmp_path / "a.npy", tmp_path / "b.npy"])


def test_unknown_extension_lists_the_formats(tmp_path):
    (tmp_path / "video.avi").write_bytes(b"")
    with pytest.raises(ValueError, match=r"extension '\.avi'.*HDF5 \(\.h5.*TIFF.*MAT.*NPY.*ZARR"):
        open_reader(tmp_path / "video.avi")
    with pytest.raises(ValueError, match=r"extension '\.avi'.*known formats"):
        open_writer(tmp_path / "out.avi")


def test_bad_format_names():
    with pytest.raises(ValueError, match=r"unknown format 'jpeg'; known formats: HDF5"):
        open_writer("x.h5", format="jpeg")
    with pytest.raises(TypeError, match="format must be a str"):
        open_writer("x.h5", format=5)
    with pytest.raises(ValueError, match="'NULL' can only be written"):
        open_reader(__file__, format="null")
    with pytest.raises(TypeError, match="read with format='ARRAY', not 'tiff'"):
        open_reader(np.zeros((2, 3, 3)), format="tiff")
    with pytest.raises(ValueError, match="needs a path or a format"):
        open_writer(None)
    with pytest.raises(ValueError, match="the HDF5 writer needs an output path"):
        open_writer(None, format="HDF5")
    with pytest.raises(TypeError, match="source must be a path"):
        open_reader(3.5)
    with pytest.raises(ValueError, match="list of input files is empty"):
        open_reader([])


def test_writer_output_folder_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="output folder does not exist"):
        open_writer(tmp_path / "missing" / "out.h5")


def test_dataset_not_found_lists_available(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("mov", data=np.zeros((3, 4, 4)))
        f.create_dataset("ref", data=np.zeros((4, 4)))
    expected = r"dataset 'frames' not found in '.*d\.h5'.*'mov' \(3, 4, 4\)"
    with pytest.raises(KeyError, match=expected):
        open_reader(path, dataset_name="frames")
    with pytest.raises(DatasetNotFoundError, match="available datasets: 'ref'"):
        with h5py.File(path, "a") as f:
            del f["mov"]
        open_reader(path)
    with pytest.raises(ValueError, match="either dataset_name or dataset_names"):
        open_reader(path, dataset_name="ref", dataset_names=["ref"])


def test_mat_variable_not_found(tmp_path):
    scipy.io.savemat(tmp_path / "m.mat", {"mov": np.zeros((4, 4, 3))})
    with pytest.raises(KeyError, match=r"variable 'Y' not found.*available variables: 'mov'"):
        open_reader(tmp_path / "m.mat", variable_name="Y")


def test_tiff_layout_errors_name_the_file(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((3, 4, 4), np.uint8), photometric="minisblack")
    with pytest.raises(ValueError, match=r"'.*a\.tif': series=2 does not exist; the file has 1"):
        open_reader(tmp_path / "a.tif", series=2)
    with pytest.raises(ValueError, match="n_channels must be >= 1, got 0"):
        open_reader(tmp_path / "a.tif", n_channels=0)


@pytest.mark.parametrize(
    ("message", "corrupt"),
    [
        ("<tifffile.read_tags> coercing invalid ASCII to bytes, due to UnicodeDecodeError", False),
        ("<tifffile.TiffPages @8> invalid page offset 2160", True),
    ],
)
def test_tifffile_log_messages_and_corruption(tmp_path, monkeypatch, message, corrupt):
    # tifffile reports damage by logging; only messages about damaged data mean "corrupt".
    import logging

    tifffile.imwrite(tmp_path / "a.tif", video()[..., 0], photometric="minisblack")
    original = tifffile.TiffFile.__init__

    def init_with_log(self, *args, **kwargs):
        original(self, *args, **kwargs)
        logging.getLogger("tifffile").warning(message)

    monkeypatch.setattr(tifffile.TiffFile, "__init__", init_with_log)
    if corrupt:
        with pytest.raises(CorruptFileError, match="invalid page offset"):
            open_reader(tmp_path / "a.tif")
    else:
        with open_reader(tmp_path / "a.tif") as reader:
            assert reader.shape == (20, 32, 32, 1)
