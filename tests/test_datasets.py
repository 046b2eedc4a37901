"""Synthetic recordings and pairs: shapes, bounds, reproducibility, noise level, ground truth."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from pyflowreg.datasets import SyntheticRecording, displace, make_pair, make_recording

SHAPE = (48, 64)


def warp_back(frame: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The package's backward warp, written independently: frame(y + v, x + u)."""
    y, x = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]].astype(float)
    return ndi.map_coordinates(
        frame.astype(float), [y + w[..., 1], x + w[..., 0]], order=3, mode="nearest"
    )


def interior(image: np.ndarray, margin: int = 6) -> np.ndarray:
    return image[margin:-margin, margin:-margin]


@pytest.fixture(scope="module")
def recording() -> SyntheticRecording:
    return make_recording(5, SHAPE, 2, max_rigid=3.0, max_nonrigid=1.0, seed=1)


# --- make_recording ------------------------------------------------------------------------------


def test_recording_shapes_and_dtypes(recording):
    assert isinstance(recording, SyntheticRecording)
    assert recording.video.shape == (5, *SHAPE, 2)
    assert recording.video.dtype == np.float32
    assert recording.reference.shape == (*SHAPE, 2)
    assert recording.reference.dtype == np.float32
    assert recording.flow.shape == (5, *SHAPE, 2)
    assert recording.flow.dtype == np.float32
    assert recording.clean.shape == (5, *SHAPE, 2)
    assert recording.clean.dtype == np.float32
    assert recording.rigid.shape == (5, 2)
    assert recording.seed == 1
    assert recording.max_rigid == 3.0
    assert recording.max_nonrigid == 1.0
    assert recording.n_cells == round(250 / 512**2 * SHAPE[0] * SHAPE[1])


def test_reference_is_mean_of_clean_frames(recording):
    np.testing.assert_allclose(recording.clean.mean(axis=0), recording.reference, atol=1e-5)
    assert 0 < recording.reference.min() and recording.clean.max() <= 1.0


def test_functional_channel_has_transients_structural_is_static(recording):
    clean = make_recording(40, SHAPE, 2, seed=4).clean
    assert np.ptp(clean[..., 0], axis=0).max() > 0.05
    assert np.ptp(clean[..., 1], axis=0).max() == 0.0


def test_motion_bounds():
    rec = make_recording(
        30, (64, 64), max_rigid=3.0, max_nonrigid=1.5, jump_probability=0.2, seed=5
    )
    rigid_magnitude = np.hypot(*rec.rigid.T)
    assert rigid_magnitude.max() <= 3.0 + 1e-5
    assert rigid_magnitude.max() > 1.0
    nonrigid = rec.flow - rec.rigid[:, None, None, :]
    nonrigid_magnitude = np.hypot(nonrigid[..., 0], nonrigid[..., 1])
    assert nonrigid_magnitude.max() <= 1.5 + 1e-5
    assert nonrigid_magnitude.max() > 0.1
    assert np.hypot(rec.flow[..., 0], rec.flow[..., 1]).max() <= 4.5 + 1e-5
    # Smooth in time: no frame-to-frame change of the non-rigid part beyond a fraction of a pixel.
    assert np.abs(np.diff(nonrigid, axis=0)).max() < 0.5


def test_drift_is_smooth_and_jumps_are_sudden():
    def steps(jump_probability):
        rec = make_recording(
            60, (32, 32), max_rigid=10.0, max_nonrigid=0.0, jump_probability=jump_probability
        )
        return np.hypot(*np.diff(rec.rigid, axis=0).T)

    assert steps(0.0).max() < 1.0
    assert steps(0.1).max() > 3.0


def test_zero_motion_gives_zero_flow_and_clean_frames():
    rec = make_recording(3, SHAPE, max_rigid=0.0, max_nonrigid=0.0, snr=np.inf, seed=2)
    assert not rec.flow.any()
    np.testing.assert_allclose(rec.video, rec.clean, atol=1e-5)
    assert rec.noise_std == (0.0,)


def test_frames_are_the_clean_scene_displaced_by_the_flow():
    rec = make_recording(4, (64, 64), 2, snr=np.inf, max_rigid=3.0, max_nonrigid=1.0, seed=2)
    assert np.abs(rec.flow).max() > 1.0
    for t in range(4):
        for c in range(2):
            registered = warp_back(rec.video[t, ..., c], rec.flow[t])
            error = interior(np.abs(registered - rec.clean[t, ..., c]))
            assert error.max() < 5e-3
            # Without the warp the frame is far from the clean scene.
            assert interior(np.abs(rec.video[t, ..., c] - rec.clean[t, ..., c])).max() > 0.05


def test_same_seed_same_recording_other_seed_differs():
    a = make_recording(3, SHAPE, seed=7)
    b = make_recording(3, SHAPE, seed=7)
    c = make_recording(3, SHAPE, seed=8)
    np.testing.assert_array_equal(a.video, b.video)
    np.testing.assert_array_equal(a.flow, b.flow)
    assert not np.array_equal(a.video, c.video)
    assert not np.array_equal(a.flow, c.flow)


def test_seed_none_is_recorded_and_reproducible():
    a = make_recording(2, SHAPE, seed=None)
    b = make_recording(2, SHAPE, seed=a.seed)
    np.testing.assert_array_equal(a.video, b.video)


@pytest.mark.parametrize("snr", [2.0, 5.0, 20.0])
def test_snr_as_requested(snr):
    rec = make_recording(20, (64, 64), snr=snr, max_rigid=0.0, max_nonrigid=0.0, seed=3)
    noise = rec.video.astype(float) - rec.clean
    measured = rec.clean.mean() / noise.std()
    assert measured == pytest.approx(snr, rel=0.05)
    assert noise.std() == pytest.approx(rec.noise_std[0], rel=0.1)
    assert abs(noise.mean()) < 0.1 * noise.std()


def test_integer_dtype_is_scaled_rounded_and_in_units_of_reference():
    rec = make_recording(
        10, SHAPE, snr=5.0, max_rigid=0.0, max_nonrigid=0.0, seed=3, dtype=np.uint16
    )
    assert rec.video.dtype == np.uint16
    assert rec.offset == pytest.approx(0.1 * 65535)
    assert rec.reference.dtype == np.float32
    assert rec.video.mean() == pytest.approx(rec.reference.mean(), rel=0.02)
    assert rec.reference.max() <= 0.8 * 65535
    noise = rec.video.astype(float) - rec.clean
    measured = (rec.clean.mean() - rec.offset) / noise.std()
    assert measured == pytest.approx(5.0, rel=0.2)


def test_integer_undershoot_is_clipped_not_wrapped():
    rec = make_recording(3, SHAPE, snr=1.0, seed=3, dtype=np.uint8)
    assert rec.video.dtype == np.uint8
    # Noise as large as the signal pushes many pixels below zero: they must read 0, not ~255.
    assert (rec.video == 0).sum() > 10
    assert (rec.video > 250).sum() == 0


def test_no_cells_still_textured():
    rec = make_recording(2, SHAPE, n_cells=0, seed=1)
    assert rec.n_cells == 0
    assert rec.reference.std() > 0.01


def test_default_cell_count_scales_with_area():
    assert make_recording(1, (64, 64), seed=0).n_cells == round(250 / 64)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_frames": 0}, ValueError, "n_frames must be >= 1, got 0"),
        ({"n_frames": 2.5}, TypeError, "n_frames must be an integer, got float"),
        ({"shape": (4, 64)}, ValueError, r"shape must be \(H, W\) with integers >= 8"),
        ({"shape": (8, 8, 8)}, ValueError, "shape must be"),
        ({"n_channels": 0}, ValueError, "n_channels must be >= 1"),
        ({"snr": 0.0}, ValueError, "snr must be > 0"),
        ({"max_rigid": -1.0}, ValueError, "max_rigid must be a finite number >= 0"),
        ({"max_nonrigid": np.inf}, ValueError, "max_nonrigid must be a finite number"),
        ({"jump_probability": 1.5}, ValueError, r"jump_probability must be in \[0, 1\]"),
        ({"n_cells": -3}, ValueError, "n_cells must be None or an integer >= 0"),
        ({"dtype": bool}, ValueError, "dtype must be a floating or integer dtype, got bool"),
    ],
)
def test_make_recording_rejects_bad_arguments(kwargs, error, match):
    args = {"n_frames": 2, "shape": (16, 16), **kwargs}
    with pytest.raises(error, match=match):
        make_recording(**args)


@pytest.mark.slow
def test_full_size_recording():
    rec = make_recording(20, (512, 512), 2, seed=0)
    assert rec.video.shape == (20, 512, 512, 2)
    assert np.hypot(rec.flow[..., 0], rec.flow[..., 1]).max() <= 12.0 + 1e-4
    nonrigid = rec.flow - rec.rigid[:, None, None, :]
    assert np.hypot(nonrigid[..., 0], nonrigid[..., 1]).max() == pytest.approx(2.0, abs=1e-3)


# --- displace ------------------------------------------------------------------------------------


def smooth_image(shape=(48, 64), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 2.0, mode="wrap") * 4


def test_displace_sign_positive_u_moves_content_right():
    image = smooth_image()
    w = np.zeros((*image.shape, 2))
    w[..., 0] = 2.0
    moving = displace(image, w)
    np.testing.assert_allclose(moving[:, 2:], image[:, :-2], atol=1e-6)


def test_displace_sign_positive_v_moves_content_down():
    image = smooth_image()
    w = np.zeros((*image.shape, 2))
    w[..., 1] = 3.0
    moving = displace(image, w)
    np.testing.assert_allclose(moving[3:], image[:-3], atol=1e-6)


def test_displace_constant_subpixel_round_trip():
    image = smooth_image()
    w = np.empty((*image.shape, 2))
    w[...] = (0.37, -1.61)
    registered = warp_back(displace(image, w), w)
    assert interior(np.abs(registered - image)).max() < 2e-3 * np.ptp(image)


def test_displace_nonrigid_round_trip():
    image = smooth_image()
    y, x = np.mgrid[0:48, 0:64].astype(float)
    w = np.stack([1.5 * np.sin(2 * np.pi * y / 48), 1.2 * np.cos(2 * np.pi * x / 64) + 0.4], -1)
    moving = displace(image, w)
    assert interior(np.abs(moving - image)).max() > 0.1 * np.ptp(image)
    registered = warp_back(moving, w)
    assert interior(np.abs(registered - image)).max() < 2e-3 * np.ptp(image)


def test_displace_keeps_channels_and_float_dtype():
    image = np.stack([smooth_image(seed=0), smooth_image(seed=1)], axis=-1)
    w = np.full((48, 64, 2), 0.5)
    moving = displace(image.astype(np.float32), w)
    assert moving.shape == image.shape and moving.dtype == np.float32
    np.testing.assert_allclose(moving[..., 1], displace(image[..., 1], w), atol=1e-5)
    assert displace(image, w).dtype == np.float64


def test_displace_rejects_bad_input():
    with pytest.raises(ValueError, match=r"w must have shape \(48, 64, 2\)"):
        displace(smooth_image(), np.zeros((48, 64)))
    with pytest.raises(ValueError, match="image must have shape"):
        displace(np.zeros(10), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="w must be finite"):
        displace(smooth_image(), np.full((48, 64, 2), np.nan))
    folding = np.zeros((48, 64, 2))
    folding[..., 0] = 30 * np.sin(np.arange(64) / 2.0)
    with pytest.raises(ValueError, match="w is not invertible"):
        displace(smooth_image(), folding)


# --- make_pair -----------------------------------------------------------------------------------


def test_make_pair_default_motion_round_trip():
    reference, moving, w = make_pair((64, 64), seed=3)
    assert reference.shape == moving.shape == (64, 64, 1)
    assert reference.dtype == moving.dtype == w.dtype == np.float32
    assert w.shape == (64, 64, 2)
    assert reference.min() == 0.0 and reference.max() == 1.0
    assert -0.05 < moving.min() and moving.max() < 1.05
    assert 0.1 < np.abs(w).max() <= 2.5 * np.sqrt(2) + 1.0
    registered = warp_back(moving[..., 0], w)
    assert interior(np.abs(registered - reference[..., 0])).max() < 5e-3


def test_make_pair_given_translation_and_channels():
    w = np.zeros((40, 56, 2), dtype=np.float32)
    w[..., 0], w[..., 1] = 1.0, -2.0
    reference, moving, w_out = make_pair((40, 56), w, n_channels=2, seed=1)
    assert moving.shape == (40, 56, 2)
    np.testing.assert_array_equal(w_out, w)
    np.testing.assert_allclose(moving[:-2, 1:], reference[2:, :-1], atol=1e-5)


def test_make_pair_noise_and_seed():
    reference, clean_moving, _ = make_pair((32, 32), seed=5)
    _, noisy, _ = make_pair((32, 32), seed=5, noise=0.05)
    _, other, _ = make_pair((32, 32), seed=6)
    assert (noisy - clean_moving).std() == pytest.approx(0.05, rel=0.15)
    assert not np.array_equal(reference, other)
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        make_pair(noise=-1.0)
    with pytest.raises(ValueError, match=r"w must have shape \(64, 64, 2\)"):
        make_pair((64, 64), np.zeros((32, 32, 2)))


# --- agreement with the engine's convention ------------------------------------------------------


def test_core_warp_with_ground_truth_aligns_moving_to_reference():
    core = pytest.importorskip("pyflowreg.core")
    reference, moving, w = make_pair((64, 64), seed=3)
    # the frames are cubic-spline resamplings: the B-spline warp undoes them almost exactly,
    # the default Keys kernel (a = -0.75) to about 1 % of the range
    for method, bound in (("bspline", 2e-3), ("cubic", 1.5e-2)):
        registered = core.warp(moving, w, method=method)
        assert interior(np.abs(registered - reference)).max() < bound, method
    rec = make_recording(3, (64, 64), snr=np.inf, max_rigid=3.0, max_nonrigid=1.0, seed=4)
    registered = core.warp(rec.video, rec.flow, method="bspline")
    assert np.abs(registered - rec.clean)[:, 6:-6, 6:-6].max() < 2e-3 * rec.clean.max()
