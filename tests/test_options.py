"""OFOptions: defaults, validation messages, derived values and config-file round trips."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from pyflowreg.core.params import FlowParameters
from pyflowreg.motion_correction.options import OFOptions


def _video(t=4, h=16, w=20, c=2, dtype=np.uint16):
    return np.zeros((t, h, w, c), dtype)


# ------------------------------------------------------------------------ defaults


def test_defaults_match_the_spec():
    opts = OFOptions()
    assert opts.input_file is None
    assert opts.buffer_size == 400
    assert opts.quality_setting == "quality"
    assert opts.effective_min_level == 0
    assert opts.output_format == "HDF5"
    assert opts.output_path == Path("results")
    assert opts.output_file == Path("results") / "compensated.HDF5"
    assert opts.flow_backend == "flowreg"
    assert opts.backend_params == {}
    assert opts.alpha == (1.5, 1.5)
    assert opts.sigma == ((1.0, 1.0, 0.1),)
    assert opts.reference_frames == range(50, 500)
    assert (opts.levels, opts.eta, opts.iterations, opts.update_lag) == (100, 0.8, 50, 5)
    assert (opts.a_data, opts.a_smooth, opts.constancy_assumption) == (0.45, 1.0, "gc")
    assert (opts.bin_size, opts.cc_hw) == (1, 256)
    assert opts.update_initialization_w and opts.save_meta_info
    assert not (opts.update_reference or opts.cc_initialization or opts.save_w)
    assert not (opts.save_valid_mask or opts.verbose)
    assert opts.channel_normalization == "joint"
    assert opts.interpolation_method == "cubic"
    assert opts.output_dtype is None and opts.weight is None


def test_spec_examples_construct():
    opts = OFOptions(
        input_file="large_video.h5", output_path="results/", quality_setting="balanced"
    )
    assert opts.input_file == Path("large_video.h5")
    assert opts.effective_min_level == 4
    gpu = OFOptions(flow_backend="flowreg_torch", backend_params={"device": "cuda"})
    assert gpu.backend_params == {"device": "cuda"}
    assert OFOptions(flow_backend="my_plugin_backend").flow_backend == "my_plugin_backend"


# ------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buffer_size": 0}, "buffer_size must be >= 1, got 0"),
        ({"bin_size": -2}, "bin_size must be >= 1, got -2"),
        ({"levels": 0}, "levels must be >= 1, got 0"),
        ({"iterations": 0}, "iterations must be >= 1, got 0"),
        ({"update_lag": 0}, "update_lag must be >= 1, got 0"),
        ({"cc_hw": 4}, "cc_hw must be >= 8, got 4"),
        ({"eta": 1.0}, r"eta must be in \(0, 1\), got 1.0"),
        ({"eta": 0}, r"eta must be in \(0, 1\), got 0"),
        ({"a_data": 1.5}, r"a_data must be in \(0, 1\], got 1.5"),
        ({"a_smooth": 0.0}, r"a_smooth must be in \(0, 1\], got 0.0"),
        ({"alpha": -1}, "alpha must be > 0, got -1"),
        ({"alpha": (1, 2, 3)}, r"alpha must be a scalar or a pair \(alpha_x, alpha_y\)"),
        ({"alpha": float("nan")}, "alpha must be a finite real number, got nan"),
        (
            {"output_format": "AVI"},
            re.escape(
                "output_format must be one of "
                "['HDF5', 'TIFF', 'MAT', 'NPY', 'ZARR', 'ARRAY', 'NULL'], got 'AVI'"
            ),
        ),
        (
            {"quality_setting": "best"},
            re.escape(
                "quality_setting must be one of "
                "['quality', 'balanced', 'fast', 'custom'], got 'best'"
            ),
        ),
        (
            {"constancy_assumption": "bright"},
            re.escape("constancy_assumption must be one of ['gc', 'gray'], got 'bright'"),
        ),
        (
            {"channel_normalization": "both"},
            re.escape("channel_normalization must be one of ['joint', 'separate'], got 'both'"),
        ),
        (
            {"interpolation_method": "spline"},
            re.escape(
                "interpolation_method must be one of ['nearest', 'linear', 'cubic', 'catmull_rom', "
                "'bspline', 'lanczos3'], got 'spline'"
            ),
        ),
        (
            {"output_dtype": "int8"},
            re.escape(
                "output_dtype must be None or one of "
                "['uint8', 'uint16', 'int16', 'int32', 'float32', 'float64'], got 'int8'"
            ),
        ),
        ({"output_dtype": "nonsense"}, "output_dtype must be None or one of .*got 'nonsense'"),
        (
            {"quality_setting": "custom", "min_level": -2},
            "min_level must be >= -1, got -2",
        ),
        ({"weight": [0, 0]}, r"weight must be finite, >= 0 and not all zero, got \[0, 0\]"),
        ({"weight": [1, -1]}, r"weight must be finite, >= 0 and not all zero, got \[1, -1\]"),
        ({"weight": []}, "weight must not be empty"),
        ({"weight": np.zeros((2, 2, 2, 2))}, r"weight array must have 2 or 3 dimensions"),
        ({"sigma": [1, 1]}, r"sigma must be a 3-vector .* got shape \(2,\)"),
        ({"sigma": [[1, 1, -0.1]]}, r"sigma must be finite and >= 0, got \[\[1.0, 1.0, -0.1\]\]"),
        ({"reference_frames": []}, "reference_frames must not be empty"),
        ({"reference_frames": [3, -1]}, r"reference_frames\[1\] must be >= 0, got -1"),
        ({"reference_frames": range(5, 5)}, "reference_frames must be a non-empty range"),
        ({"flow_backend": "  "}, "flow_backend must be a non-empty backend name"),
        ({"input_file": ""}, "input_file must not be an empty path"),
        ({"input_file": []}, "input_file must not be an empty list"),
        ({"input_file": np.zeros(5)}, r"input_file array must have 2 or 3 or 4 dimensions"),
        ({"dataset_name": ["ch1", ""]}, "dataset_name entries must be non-empty strings"),
    ],
)
def test_bad_values_name_the_field_value_and_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OFOptions(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buffer_size": "400"}, "buffer_size must be an integer, got str '400'"),
        ({"buffer_size": 400.0}, "buffer_size must be an integer, got float 400.0"),
        ({"levels": True}, "levels must be an integer, got bool True"),
        ({"eta": "0.8"}, "eta must be a number, got str '0.8'"),
        ({"save_w": "yes"}, "save_w must be True or False, got str 'yes'"),
        ({"verbose": 1}, "verbose must be True or False, got int 1"),
        ({"output_format": 5}, "output_format must be a string, got int 5"),
        ({"flow_backend": None}, "flow_backend must be a string, got NoneType None"),
        ({"backend_params": [1]}, r"backend_params must be a dict with str keys, got \[1\]"),
        ({"input_file": 3}, "input_file must be a str or Path, got int 3"),
        (
            {"input_file": np.zeros((2, 4, 4), bool)},
            "input_file must be a numeric .* got dtype bool",
        ),
        (
            {"input_file": np.zeros((2, 4, 4), complex)},
            "input_file must be a numeric .* got dtype complex128",
        ),
        ({"input_file": np.empty((2, 4, 4), object)}, "input_file must be a numeric"),
        ({"weight": 2.0}, "weight must be a list of channel weights or a"),
        ({"reference_frames": 3.5}, "reference_frames must be a range, a list of frame indices"),
        ({"reference_frames": [1.0, 2.0]}, r"reference_frames\[0\] must be an integer"),
    ],
)
def test_wrong_types_raise_type_error(kwargs, message):
    with pytest.raises(TypeError, match=message):
        OFOptions(**kwargs)


def test_unknown_option_is_rejected_by_name_with_a_suggestion():
    with pytest.raises(
        ValueError, match=r"unknown option 'bufer_size' \(did you mean 'buffer_size'\?\)"
    ):
        OFOptions(bufer_size=100)
    with pytest.raises(ValueError, match="unknown option 'zzz'"):
        OFOptions(zzz=1)


def test_assignment_is_validated_and_a_rejected_assignment_changes_nothing():
    opts = OFOptions()
    opts.buffer_size = 50
    assert opts.buffer_size == 50
    with pytest.raises(ValueError, match="buffer_size must be >= 1, got 0"):
        opts.buffer_size = 0
    assert opts.buffer_size == 50
    with pytest.raises(ValueError, match="quality_setting must be one of"):
        opts.quality_setting = "best"
    assert opts.quality_setting == "quality"
    opts.output_format = "tiff"
    assert opts.output_format == "TIFF"


def test_model_copy_validates_the_update():
    opts = OFOptions(buffer_size=10)
    custom = opts.model_copy(update={"quality_setting": "custom", "min_level": 2})
    assert custom.effective_min_level == 2 and custom.buffer_size == 10
    assert opts.quality_setting == "quality"
    with pytest.raises(ValueError, match="buffer_size must be >= 1, got 0"):
        opts.model_copy(update={"buffer_size": 0})
    with pytest.raises(ValueError, match="unknown option 'bufer_size'"):
        opts.model_copy(update={"bufer_size": 1})


@pytest.mark.parametrize(
    ("given", "stored", "extension"),
    [
        ("hdf5", "HDF5", ".h5"),
        ("Tiff", "TIFF", ".tif"),
        ("mat", "MAT", ".mat"),
        ("npy", "NPY", ".npy"),
        ("zarr", "ZARR", ".zarr"),
        ("array", "ARRAY", ""),
        ("null", "NULL", ""),
    ],
)
def test_output_formats_are_case_insensitive(given, stored, extension):
    opts = OFOptions(output_format=given)
    assert opts.output_format == stored
    assert opts.output_extension == extension


def test_output_file_name_overrides_the_default_name():
    opts = OFOptions(output_path="out", output_format="TIFF", output_file_name="reg.tif")
    assert opts.output_file == Path("out") / "reg.tif"


def test_quality_presets_and_custom_min_level():
    levels = {
        q: OFOptions(quality_setting=q).effective_min_level for q in ("quality", "balanced", "fast")
    }
    assert levels == {"quality": 0, "balanced": 4, "fast": 6}
    assert OFOptions(quality_setting="Custom", min_level=3).effective_min_level == 3


def test_normalised_values():
    opts = OFOptions(
        alpha=2,
        sigma=[2, 2, 0.5],
        output_dtype=np.uint16,
        dataset_name=["ch1", "ch2"],
        input_file=["a.tif", Path("b.tif")],
        reference_frames=np.array([3, 1, 2]),
    )
    assert opts.alpha == (2.0, 2.0)
    assert opts.sigma == ((2.0, 2.0, 0.5),)
    assert opts.output_dtype == "uint16"
    assert opts.dataset_name == ("ch1", "ch2")
    assert opts.input_file == (Path("a.tif"), Path("b.tif"))
    assert opts.reference_frames == (3, 1, 2)
    assert OFOptions(output_dtype="float32").output_dtype == "float32"


# ------------------------------------------------------------------------ in-memory arrays


def test_array_input_is_checked_against_channel_options():
    video = _video(c=2)
    assert (
        OFOptions(input_file=video, weight=[1, 1], sigma=[[1, 1, 0], [2, 2, 0]]).input_file is video
    )
    with pytest.raises(
        ValueError, match="weight has 3 channel weights but the video has 2 channels"
    ):
        OFOptions(input_file=video, weight=[1, 1, 1])
    with pytest.raises(ValueError, match="sigma has 3 rows but the video has 2 channels"):
        OFOptions(input_file=video, sigma=np.ones((3, 3)))
    with pytest.raises(
        ValueError,
        match=r"weight array has frame size \(8, 8\) but input_file frames are \(16, 20\)",
    ):
        OFOptions(input_file=video, weight=np.ones((8, 8)))
    with pytest.raises(
        ValueError, match="reference_frames array has 1 channels but input_file has 2"
    ):
        OFOptions(input_file=video, reference_frames=np.ones((16, 20, 1)))
    with pytest.raises(
        ValueError, match=r"reference_frames \[4, 9\] out of range for a video of 4 frames"
    ):
        OFOptions(input_file=video, reference_frames=[0, 4, 9])


def test_equality_and_repr_with_arrays():
    video = _video()
    opts = OFOptions(input_file=video, weight=np.ones((16, 20)))
    assert opts == opts.model_copy(deep=True)
    assert opts != opts.model_copy(update={"input_file": video + 1})
    assert "array(shape=(4, 16, 20, 2), dtype=uint16)" in repr(opts)
    assert OFOptions() != OFOptions(buffer_size=10)


# ------------------------------------------------------------------------ derived values


@pytest.mark.parametrize(
    ("n_frames", "expected"),
    [(3, np.arange(3)), (30, np.arange(30)), (100, np.arange(50, 100)), (1000, np.arange(50, 500))],
)
def test_default_reference_frames_are_clipped_never_padded(n_frames, expected):
    frames = OFOptions().resolved_reference_frames(n_frames)
    np.testing.assert_array_equal(frames, expected)


def test_explicit_reference_frames():
    opts = OFOptions(reference_frames=[0, 2, 5])
    np.testing.assert_array_equal(opts.resolved_reference_frames(10), [0, 2, 5])
    with pytest.raises(
        ValueError,
        match=r"reference_frames \[5\] out of range for a video of 4 frames \(valid indices 0..3\)",
    ):
        opts.resolved_reference_frames(4)
    stepped = OFOptions(reference_frames=range(1, 20, 3))
    np.testing.assert_array_equal(stepped.resolved_reference_frames(12), [1, 4, 7, 10])
    image = OFOptions(reference_frames=np.ones((8, 8)))
    assert image.reference_is_image and not OFOptions().reference_is_image
    with pytest.raises(ValueError, match="reference_frames is a reference image"):
        image.resolved_reference_frames(10)


def test_channel_weights_are_normalised():
    np.testing.assert_allclose(OFOptions().channel_weights(4), [0.25] * 4)
    np.testing.assert_allclose(OFOptions(weight=[1, 3]).channel_weights(2), [0.25, 0.75])
    np.testing.assert_allclose(OFOptions(weight=(2.0,)).channel_weights(1), [1.0])
    with pytest.raises(
        ValueError, match="weight has 2 channel weights but the video has 3 channels"
    ):
        OFOptions(weight=[1, 3]).channel_weights(3)
    spatial = OFOptions(weight=np.ones((8, 8, 2)))
    np.testing.assert_allclose(spatial.channel_weights(2), [0.5, 0.5])
    with pytest.raises(ValueError, match="weight map has 2 channels but the video has 1 channels"):
        spatial.channel_weights(1)


def test_sigma_for_channels():
    np.testing.assert_array_equal(OFOptions().sigma_for_channels(2), [[1, 1, 0.1], [1, 1, 0.1]])
    per_channel = OFOptions(sigma=[[1, 1, 0], [2, 3, 0.5]])
    np.testing.assert_array_equal(per_channel.sigma_for_channels(2), [[1, 1, 0], [2, 3, 0.5]])
    with pytest.raises(ValueError, match="sigma has 2 rows but the video has 3 channels"):
        per_channel.sigma_for_channels(3)


def test_flow_parameters_equal_the_hand_built_ones():
    opts = OFOptions(
        alpha=(2.0, 3.0),
        levels=7,
        eta=0.7,
        iterations=20,
        update_lag=4,
        a_data=0.5,
        a_smooth=0.8,
        constancy_assumption="gray",
        quality_setting="custom",
        min_level=1,
    )
    expected = FlowParameters(
        alpha=(2.0, 3.0),
        levels=7,
        min_level=1,
        eta=0.7,
        iterations=20,
        update_lag=4,
        a_data=0.5,
        a_smooth=0.8,
        constancy_assumption="gray",
    )
    assert opts.flow_parameters() == expected
    assert OFOptions(quality_setting="fast").flow_parameters() == FlowParameters(min_level=6)


def test_check_input_exists(tmp_path):
    present = tmp_path / "video.h5"
    present.write_bytes(b"")
    OFOptions(input_file=present).check_input_exists()
    OFOptions(input_file=_video()).check_input_exists()
    missing = tmp_path / "missing.tif"
    with pytest.raises(FileNotFoundError, match=r"missing\.tif"):
        OFOptions(input_file=[present, missing]).check_input_exists()
    with pytest.raises(FileNotFoundError, match=r"ref.tif \(reference_frames\)"):
        OFOptions(input_file=present, reference_frames=tmp_path / "ref.tif").check_input_exists()
    with pytest.raises(ValueError, match="input_file is None"):
        OFOptions().check_input_exists()


# ------------------------------------------------------------------------ serialisation


def _rich_options(tmp_path) -> OFOptions:
    return OFOptions(
        input_file=[tmp_path / "ch1.tif", tmp_path / "ch2.tif"],
        output_path=tmp_path / "out",
        output_format="tiff",
        output_file_name="registered.tif",
        quality_setting="custom",
        min_level=2,
        alpha=(1.25, 3.0),
        eta=0.75,
        a_data=0.3,
        weight=[0.3, 0.7],
        sigma=[[1, 1, 0.1], [2, 2, 0.5]],
        buffer_size=64,
        reference_frames=range(10, 90, 2),
        cc_initialization=True,
        output_dtype="float32",
        flow_backend="flowreg_torch",
        backend_params={"device": "cpu", "tile": [64, 64], "opts": {"fp16": False}},
        dataset_name=["a", "b"],
    )


@pytest.mark.parametrize("suffix", [".json", ".toml", ".yaml", ".yml"])
@pytest.mark.parametrize("which", ["default", "rich", "explicit_frames"])
def test_config_file_round_trip_is_exact(tmp_path, suffix, which):
    opts = {
        "default": OFOptions(),
        "rich": _rich_options(tmp_path),
        "explicit_frames": OFOptions(input_file="v.h5", reference_frames=[4, 1, 2], weight=[2.0]),
    }[which]
    path = opts.save(tmp_path / f"options{suffix}")
    loaded = OFOptions.load(path)
    assert loaded == opts
    assert loaded.to_dict() == opts.to_dict()
    assert type(loaded.reference_frames) is type(opts.reference_frames)


def test_to_dict_is_json_safe():
    data = OFOptions(input_file="v.h5").to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["reference_frames"] == {"start": 50, "stop": 500, "step": 1}
    assert data["alpha"] == [1.5, 1.5]
    assert data["input_file"] == "v.h5"


def test_arrays_are_not_saved_unless_omitted(tmp_path):
    opts = OFOptions(input_file=_video(), weight=np.ones((16, 20)), buffer_size=8)
    with pytest.raises(
        ValueError, match=r"options \['input_file', 'weight'\] hold arrays.*arrays='omit'"
    ):
        opts.save(tmp_path / "o.json")
    assert not (tmp_path / "o.json").exists()
    path = opts.save(tmp_path / "o.json", arrays="omit")
    loaded = OFOptions.load(path)
    assert loaded.input_file is None and loaded.weight is None
    assert loaded.buffer_size == 8
    with pytest.raises(ValueError, match=r"arrays must be one of \['raise', 'omit'\], got 'keep'"):
        opts.to_dict(arrays="keep")


def test_bad_config_files(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"options file must end in one of \['.json', '.toml', '.yaml', '.yml'\], got 'o.ini'",
    ):
        OFOptions().save(tmp_path / "o.ini")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"cannot parse options file .*broken\.json"):
        OFOptions.load(tmp_path / "broken.json")
    (tmp_path / "broken.yaml").write_text("a: [1, 2")
    with pytest.raises(ValueError, match=r"cannot parse options file .*broken\.yaml"):
        OFOptions.load(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping of options"):
        OFOptions.load(tmp_path / "list.yaml")
    (tmp_path / "typo.json").write_text('{"bufer_size": 3}')
    with pytest.raises(ValueError, match="unknown option 'bufer_size'"):
        OFOptions.load(tmp_path / "typo.json")
    # load_options (PyFlowReg's name) skips unknown keys with a warning instead
    with pytest.warns(UserWarning, match=r"skipped: \['bufer_size'\].*did you mean 'buffer_size'"):
        assert OFOptions.load_options(tmp_path / "typo.json").buffer_size == 400
    with pytest.raises(ValueError, match="backend_params must hold only"):
        OFOptions(backend_params={"device": object()}).save(tmp_path / "o.json")


def test_pydantic_json_dump_round_trips_without_warnings():
    opts = OFOptions(input_file=["a.h5", "b.h5"], weight=[1, 2], alpha=(1.0, 2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = opts.model_dump_json()
    assert json.loads(text)["reference_frames"] == {"start": 50, "stop": 500, "step": 1}
    assert OFOptions.model_validate_json(text) == opts
