"""PyFlowReg's configuration page (``docs/user_guide/configuration.md``) against this package.

Each test is one section of the page, written from its documented behaviour: the
``OFOptions`` fields, their defaults and what they do, the enums of
``pyflowreg.motion_correction.OF_options``, validation, and options files (JSON written by
``save_options``, PyFlowReg-style JSON, MATLAB ``.mat``). Inputs are small generated videos.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from pydantic import ValidationError

from pyflowreg.datasets import make_recording
from pyflowreg.motion_correction import (
    OFOptions,
    OutputFormat,
    RegistrationConfig,
    compensate_arr,
    compensate_recording,
)
from pyflowreg.motion_correction.OF_options import (
    ChannelNormalization,
    ConstancyAssumption,
    InterpolationMethod,
    QualitySetting,
)
from pyflowreg.motion_correction.OF_options import OFOptions as OFOptionsFromModule
from pyflowreg.motion_correction.statistics import correlation_with_reference

SEQUENTIAL = RegistrationConfig(parallelization="sequential")


@pytest.fixture(scope="module")
def recording():
    return make_recording(8, (32, 32), 1, seed=4, max_rigid=2.0, dtype=np.uint16)


# ----------------------------------------------------------------------------- module path


def test_module_path_and_enums():
    assert OFOptionsFromModule is OFOptions
    from pyflowreg.motion_correction import OutputFormat as Top
    from pyflowreg.motion_correction.OF_options import OutputFormat as Mod

    assert Top is Mod
    for name in ("HDF5", "TIFF", "MAT", "ARRAY", "NULL"):
        member = getattr(OutputFormat, name)
        assert member == name and member.value == name and str(member) == name
    assert [q.value for q in QualitySetting] == ["quality", "balanced", "fast", "custom"]
    assert ChannelNormalization.JOINT == "joint" and ChannelNormalization.SEPARATE == "separate"
    assert InterpolationMethod.CUBIC == "cubic"
    assert ConstancyAssumption.GRADIENT is ConstancyAssumption.GC
    opts = OFOptions(output_format=OutputFormat.TIFF, quality_setting=QualitySetting.FAST)
    assert opts.output_format is OutputFormat.TIFF and opts.output_format.value == "TIFF"
    assert opts.quality_setting.value == "fast"
    assert OFOptions(output_format="hdf5").output_format is OutputFormat.HDF5


# ----------------------------------------------------------------------------- quality


def test_quality_settings_and_min_level():
    levels = {q: OFOptions(quality_setting=q).effective_min_level for q in ("fast", "balanced")}
    assert levels == {"fast": 6, "balanced": 4}
    default = OFOptions()
    assert default.quality_setting == "quality" and default.effective_min_level == 0
    assert default.min_level == -1  # "derives the finest level from quality_setting"
    explicit = OFOptions(quality_setting="balanced", min_level=2)
    assert explicit.quality_setting == QualitySetting.CUSTOM and explicit.effective_min_level == 2
    explicit.quality_setting = "fast"  # a named preset again: the level comes from it
    assert explicit.min_level == -1 and explicit.effective_min_level == 6
    # "custom" with levels/iterations/eta and no min_level solves down to level 0
    custom = OFOptions(quality_setting="custom", levels=20, iterations=10, eta=0.7)
    assert custom.effective_min_level == 0 and custom.flow_parameters().min_level == 0
    assert OFOptions(min_level=-1, quality_setting="balanced").effective_min_level == 4


def test_core_parameters_defaults_and_scalar_alpha():
    opts = OFOptions()
    assert opts.alpha == (1.5, 1.5)
    assert (opts.iterations, opts.levels, opts.eta) == (50, 100, 0.8)
    assert (opts.a_smooth, opts.a_data, opts.update_lag) == (1.0, 0.45, 5)
    assert OFOptions(alpha=2.0).alpha == (2.0, 2.0)
    params = OFOptions(alpha=(1.5, 2.5), iterations=7, levels=9, eta=0.6).flow_parameters()
    assert (params.alpha, params.iterations, params.levels, params.eta) == ((1.5, 2.5), 7, 9, 0.6)


def test_documented_defaults_of_the_other_fields():
    opts = OFOptions()
    assert opts.bin_size == 1 and opts.buffer_size == 400
    assert opts.update_reference is False and opts.cc_initialization is False
    assert (opts.cc_hw, opts.cc_up) == (256, 1)
    assert opts.channel_normalization == "joint" and opts.interpolation_method == "cubic"
    assert opts.save_w is False and opts.save_meta_info is True
    assert opts.save_valid_idx is False and opts.save_valid_mask is False
    assert (opts.n_references, opts.min_frames_per_reference) == (1, 20)
    assert opts.naming_convention == "default"
    assert str(opts.output_path) == "results"
    for name in (
        "save_valid_idx",
        "n_references",
        "min_frames_per_reference",
        "cc_up",
        "save_meta_info",
        "save_valid_mask",
        "output_typename",
        "min_level",
    ):
        assert name in OFOptions.model_fields  # what form builders read


# ----------------------------------------------------------------------------- validation


def test_validation():
    with pytest.raises(ValidationError, match="alpha must be > 0"):
        OFOptions(alpha=-1)
    with pytest.raises(ValidationError, match=r"unknown option 'alhpa'.*did you mean 'alpha'"):
        OFOptions(alhpa=2.0)
    with pytest.raises(ValidationError, match="census"):
        OFOptions(constancy_assumption="cs")
    with pytest.raises(ValidationError, match="n_references must be 1"):
        OFOptions(n_references=2)
    with pytest.raises(ValidationError, match="output_typename must be"):
        OFOptions(output_typename="quad")
    assert OFOptions(constancy_assumption="brightness").constancy_assumption == "gray"


def test_pydantic_model_semantics():
    opts = OFOptions(quality_setting="balanced", alpha=2.0, sigma=[[1, 1, 0.1], [2, 2, 0.2]])
    dumped = opts.model_dump()
    assert dumped["quality_setting"] == "balanced" and dumped["alpha"] == (2.0, 2.0)
    assert OFOptions.model_validate(dumped) == opts
    assert OFOptions.model_validate_json(opts.model_dump_json()) == opts
    assert set(OFOptions.model_fields) >= {"quality_setting", "alpha", "sigma", "cc_up"}


# ----------------------------------------------------------------------------- outputs


def test_output_typename_sets_the_output_dtype(recording):
    for tag, dtype in (("single", np.float32), ("double", np.float64), ("uint16", np.uint16)):
        opts = OFOptions(quality_setting="fast", output_typename=tag)
        registered, _ = compensate_arr(
            recording.video, recording.reference, opts, registration_config=SEQUENTIAL
        )
        assert registered.dtype == dtype
    assert OFOptions(output_typename="").output_typename is None  # MATLAB's '': input dtype
    with pytest.raises(ValidationError, match="contradicts output_dtype"):
        OFOptions(output_typename="single", output_dtype="uint16")


def test_io_paths_and_naming_convention(tmp_path):
    opts = OFOptions(input_file="raw_video.h5", output_path="results/", output_format="HDF5")
    assert opts.output_file.name == "compensated.HDF5"
    batch = OFOptions(input_file=tmp_path / "mouse1.tif", naming_convention="batch")
    assert batch.output_file.name == "mouse1_compensated.HDF5"


# ----------------------------------------------------------------------------- preprocessing


def test_temporal_binning_averages_frames_before_registration(tmp_path, recording):
    opts = OFOptions(
        input_file=recording.video,
        output_path=tmp_path,
        output_format="ARRAY",
        quality_setting="fast",
        bin_size=2,
        save_w=True,
        reference_frames=recording.reference,
    )
    result = compensate_recording(opts, config=SEQUENTIAL)
    assert result.registered.shape == (4, 32, 32, 1) and result.w.shape == (4, 32, 32, 2)
    binned = recording.video.astype(np.float64).reshape(4, 2, 32, 32, 1).mean(axis=1)
    expected, w = compensate_arr(
        binned.astype(np.float32),
        recording.reference,
        opts.model_copy(update={"bin_size": 1}),
        registration_config=SEQUENTIAL,
    )
    np.testing.assert_allclose(result.registered, expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(result.w, w, atol=1e-4)


def test_two_channel_sigma_and_weights_on_a_one_channel_video(recording):
    opts = OFOptions(
        quality_setting="fast", sigma=[[1.0, 1.0, 0.1], [2.0, 2.0, 0.2]], weight=[0.5, 0.5]
    )
    with pytest.warns(UserWarning, match="sigma has 2 rows and weight has 2 channel weights"):
        registered, w = compensate_arr(
            recording.video, recording.reference, opts, registration_config=SEQUENTIAL
        )
    one = OFOptions(quality_setting="fast", sigma=[1.0, 1.0, 0.1])
    expected, w_one = compensate_arr(
        recording.video, recording.reference, one, registration_config=SEQUENTIAL
    )
    np.testing.assert_array_equal(registered, expected)  # the first row, the weight dropped
    np.testing.assert_array_equal(w, w_one)


def test_channel_normalization_modes_register_two_channels():
    rec = make_recording(6, (32, 32), 2, seed=5, max_rigid=2.0)
    before = correlation_with_reference(rec.video, rec.reference).mean()
    for mode in ("joint", ChannelNormalization.SEPARATE):
        opts = OFOptions(quality_setting="custom", min_level=1, channel_normalization=mode)
        registered, _ = compensate_arr(
            rec.video, rec.reference, opts, registration_config=SEQUENTIAL
        )
        assert correlation_with_reference(registered, rec.reference).mean() > before


# ----------------------------------------------------------------------------- references


def test_reference_frames_forms(tmp_path, recording):
    import tifffile

    assert OFOptions(reference_frames=[0]).reference_frames == (0,)
    assert OFOptions(reference_frames=list(range(2, 6))).resolved_reference_frames(8).tolist() == [
        2,
        3,
        4,
        5,
    ]
    tifffile.imwrite(tmp_path / "reference.tif", recording.reference[..., 0])
    from_file = OFOptions(reference_frames=str(tmp_path / "reference.tif"))
    assert from_file.reference_is_image
    array = OFOptions(reference_frames=np.mean(recording.video[2:5], axis=0))
    assert array.reference_is_image and array.reference_frames.shape == (32, 32, 1)
    assert OFOptions(update_reference=True).update_reference is True


# ----------------------------------------------------------------------------- files


def _every_field_changed() -> OFOptions:
    return OFOptions(
        input_file="video.h5",
        output_path="out",
        output_format="TIFF",
        naming_convention="batch",
        quality_setting="balanced",
        min_level=3,
        alpha=(2.0, 3.0),
        levels=30,
        eta=0.7,
        iterations=20,
        update_lag=4,
        a_data=0.5,
        a_smooth=0.9,
        weight=[0.3, 0.7],
        sigma=[[1.0, 1.0, 0.2], [2.0, 2.0, 0.3]],
        constancy_assumption="gray",
        buffer_size=64,
        bin_size=2,
        reference_frames=[1, 2, 3],
        update_reference=True,
        update_initialization_w=False,
        cc_initialization=True,
        cc_hw=(128, 96),
        cc_up=4,
        channel_normalization="separate",
        interpolation_method="linear",
        save_w=True,
        save_meta_info=False,
        save_valid_mask=True,
        save_valid_idx=True,
        output_typename="single",
        min_frames_per_reference=10,
        flow_backend="flowreg",
        backend_params={"device": "cpu"},
        verbose=True,
        dataset_name="mov",
        output_file_name="reg.tif",
    )


def test_save_options_and_load_options_round_trip_every_field(tmp_path):
    opts = _every_field_changed()
    code = ("get_displacement_factory", "get_displacement_impl")  # callables, never saved
    saved = [k for k in OFOptions.model_fields if k not in code]
    changed = [k for k in saved if getattr(opts, k) != getattr(OFOptions(), k)]
    assert len(changed) >= len(saved) - 3  # output_dtype, n_references, flow_backend
    path = opts.save_options(tmp_path / "config.json")
    loaded = OFOptions.load_options(path)
    assert loaded == opts
    for name in OFOptions.model_fields:
        assert getattr(loaded, name) == getattr(opts, name), name
    assert OFOptions.load(path) == opts  # the strict reader reads it too
    data = json.loads(path.read_text())
    assert data["quality_setting"] == "custom" and data["cc_hw"] == [128, 96]


def test_a_pyflowreg_json_loads_with_the_same_meaning(tmp_path):
    saved = {
        "input_file": None,
        "output_path": "results",
        "output_format": "HDF5",
        "quality_setting": "balanced",
        "min_level": -1,
        "alpha": [4.0, 4.0],
        "levels": 100,
        "eta": 0.8,
        "iterations": 50,
        "a_smooth": 1.0,
        "a_data": 0.45,
        "update_lag": 5,
        "sigma": [[1.0, 1.0, 0.1], [1.0, 1.0, 0.1]],
        "weight": [0.5, 0.5],
        "bin_size": 1,
        "buffer_size": 400,
        "reference_frames": list(range(100, 201)),
        "update_reference": False,
        "n_references": 1,
        "min_frames_per_reference": 20,
        "verbose": False,
        "save_meta_info": True,
        "save_w": True,
        "save_valid_mask": False,
        "save_valid_idx": True,
        "output_typename": "double",
        "channel_normalization": "separate",
        "interpolation_method": "cubic",
        "cc_initialization": True,
        "cc_hw": 256,
        "cc_up": 2,
        "constancy_assumption": "gc",
        "naming_convention": "default",
        "flow_backend": "flowreg",
        "backend_params": {},
        "gnc_schedule": None,
        "mdf_options": {},
    }
    path = tmp_path / "pyflowreg_options.json"
    path.write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match=r"skipped: \['gnc_schedule', 'mdf_options'\]"):
        opts = OFOptions.load_options(path)
    assert opts.effective_min_level == 4 and opts.alpha == (4.0, 4.0)
    assert opts.reference_frames == tuple(range(100, 201))
    assert opts.resolved_output_dtype(np.uint16) == np.float64
    assert (opts.save_w, opts.save_valid_idx, opts.cc_initialization, opts.cc_up) == (
        True,
        True,
        True,
        2,
    )
    assert opts.channel_normalization is ChannelNormalization.SEPARATE


def test_a_matlab_options_file_loads_with_the_same_meaning(tmp_path):
    from scipy.io import savemat

    matlab = {
        "output_path": "results",
        "output_format": "HDF5",
        "quality_setting": "balanced",
        "alpha": 4.0,
        "levels": 100.0,
        "min_level": -1.0,
        "iterations": 50.0,
        "eta": 0.8,
        "sigma": np.array([[1.0, 1.0, 0.1], [1.0, 1.0, 0.1]]),
        "weight": np.array([0.5, 0.5]),
        "reference_frames": np.arange(50, 501, dtype=np.float64),  # MATLAB's 50:500
        "save_w": np.uint8(1),
        "save_meta_info": True,
        "output_typename": "",
        "channel_normalization": "joint",
        "interpolation_method": "cubic",
        "n_references": 1.0,
        "min_frames_per_reference": 20.0,
        "input_file": "",
        "verbose": False,
        "buffer_size": 400.0,
    }
    path = tmp_path / "options.mat"
    savemat(path, {"options": matlab})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key is an option here: no warning
        opts = OFOptions.load_options(path)
    assert opts.alpha == (4.0, 4.0) and opts.levels == 100 and opts.effective_min_level == 4
    assert opts.reference_frames == tuple(range(49, 500))  # 1-based -> 0-based
    assert opts.save_w is True and opts.output_typename is None and opts.input_file is None
    assert np.array(opts.sigma).shape == (2, 3) and opts.weight == (0.5, 0.5)
    # options as separate variables, with a MATLAB-only key
    savemat(
        tmp_path / "flat.mat",
        {
            "alpha": 2.0,
            "bin_size": 2.0,
            "matlab_only_key": 1.0,
            "backend_params": {"device": "cpu"},
        },
    )
    with pytest.warns(UserWarning, match="matlab_only_key"):
        flat = OFOptions.load_options(tmp_path / "flat.mat")
    assert flat.alpha == (2.0, 2.0) and flat.bin_size == 2
    assert flat.backend_params == {"device": "cpu"}


def test_load_options_reads_pyflowreg_saved_files_with_their_title_line(tmp_path):
    """PyFlowReg's ``save_options`` writes a title line (``Compensation options <date>``)
    before the JSON object; ``load_options`` skips it."""
    path = tmp_path / "saved.json"
    body = {"alpha": [4.0, 4.0], "quality_setting": "balanced", "channel_idx": None}
    path.write_text("Compensation options 2026-12-04\n\n" + json.dumps(body, indent=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        options = OFOptions.load_options(path)
    assert options.alpha == (4.0, 4.0) and options.quality_setting == "balanced"
    assert any("channel_idx" in str(c.message) for c in caught)
    broken = tmp_path / "broken.json"
    broken.write_text("Compensation options\n[1, 2\n{")
    with pytest.raises(ValueError, match="cannot parse options file"):
        OFOptions.load_options(broken)
