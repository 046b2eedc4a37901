"""Quality metrics on inputs with known answers."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from pyflowreg.metrics import EPE, crispness, endpoint_error, frame_correlation


@pytest.fixture
def field() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(20, 30, 2)).astype(np.float32)


# --- endpoint_error ------------------------------------------------------------------------------


def test_epe_of_half_pixel_offset(field):
    shifted = field.copy()
    shifted[..., 0] += 0.5
    epe = endpoint_error(shifted, field)
    assert isinstance(epe, EPE)
    assert epe.mean == pytest.approx(0.5, abs=1e-6)
    assert epe.p95 == pytest.approx(0.5, abs=1e-6)
    assert epe.max == pytest.approx(0.5, abs=1e-6)


def test_epe_is_euclidean_and_zero_for_equal_fields(field):
    assert endpoint_error(field, field) == (0.0, 0.0, 0.0)
    assert endpoint_error(field + np.float32(0.3), field - np.float32(0.1)).mean == pytest.approx(
        np.hypot(0.4, 0.4), abs=1e-6
    )


def test_epe_statistics_over_time_axis():
    w_true = np.zeros((4, 10, 10, 2))
    w_est = w_true.copy()
    w_est[0, ..., 1] = 1.0  # one frame of four is off by one pixel
    epe = endpoint_error(w_est, w_true, border=0.0)
    assert epe.mean == pytest.approx(0.25)
    assert epe.max == 1.0
    assert epe.p95 == 1.0


def test_epe_border_excludes_int_fraction_of_each_side():
    w_true = np.zeros((20, 40, 2))
    w_est = w_true.copy()
    # int(0.1 * 20) = 2 rows and int(0.1 * 40) = 4 columns are excluded on each side.
    w_est[:2] = 5.0
    w_est[-2:] = 5.0
    w_est[:, :4] = 5.0
    w_est[:, -4:] = 5.0
    assert endpoint_error(w_est, w_true).max == 0.0
    w_est[2, 4, 0] = 1.0
    assert endpoint_error(w_est, w_true).max == 1.0
    assert endpoint_error(w_est, w_true, border=0.0).max == pytest.approx(np.hypot(5.0, 5.0))


def test_epe_border_of_512_axis_is_51_pixels():
    w_true = np.zeros((512, 512, 2))
    w_est = w_true.copy()
    w_est[50] = 1.0
    assert endpoint_error(w_est, w_true).max == 0.0
    w_est[51] = 1.0
    assert endpoint_error(w_est, w_true).max == pytest.approx(np.sqrt(2))


def test_epe_rejects_bad_shapes(field):
    with pytest.raises(ValueError, match="w_est and w_true must have the same shape"):
        endpoint_error(field, field[:10])
    with pytest.raises(ValueError, match=r"fields must have shape \(H, W, 2\) or \(T, H, W, 2\)"):
        endpoint_error(field[..., :1], field[..., :1])
    with pytest.raises(ValueError, match=r"fields must have shape"):
        endpoint_error(field[0], field[0])
    with pytest.raises(ValueError, match=r"border must be in \[0, 0.5\), got 0.5"):
        endpoint_error(field, field, border=0.5)


# --- frame_correlation ---------------------------------------------------------------------------


def test_frame_correlation_known_values():
    rng = np.random.default_rng(1)
    reference = rng.random((16, 12, 2))
    video = np.stack(
        [reference, 3 * reference + 1, -reference, rng.random((16, 12, 2)), np.ones((16, 12, 2))]
    )
    corr = frame_correlation(video, reference)
    assert corr.shape == (5,) and corr.dtype == np.float64
    np.testing.assert_allclose(corr[:3], [1.0, 1.0, -1.0], atol=1e-12)
    assert abs(corr[3]) < 0.3
    assert np.isnan(corr[4])


def test_frame_correlation_matches_numpy_for_single_channel_video():
    rng = np.random.default_rng(2)
    reference = rng.random((8, 9))
    video = reference + 0.5 * rng.random((6, 8, 9))
    expected = [np.corrcoef(frame.ravel(), reference.ravel())[0, 1] for frame in video]
    np.testing.assert_allclose(frame_correlation(video, reference), expected, rtol=1e-12)


def test_frame_correlation_accepts_integer_video():
    reference = np.arange(20, dtype=np.uint16).reshape(4, 5)
    video = np.stack([reference, reference[::-1]])
    corr = frame_correlation(video, reference)
    assert corr[0] == pytest.approx(1.0)
    assert corr[1] < 0


def test_frame_correlation_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="reference the shape of one frame"):
        frame_correlation(np.zeros((3, 8, 8, 1)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="video must have shape"):
        frame_correlation(np.zeros((8, 8)), np.zeros(8))


# --- crispness -----------------------------------------------------------------------------------


def test_crispness_of_a_ramp():
    # Constant slope 0.5 along x, none along y: the norm is 0.5 * sqrt(H * W).
    image = 0.5 * np.tile(np.arange(30.0), (20, 1))
    assert crispness(image) == pytest.approx(0.5 * np.sqrt(20 * 30))
    assert crispness(np.ones((10, 10))) == 0.0


def test_blur_lowers_crispness():
    image = np.random.default_rng(3).random((32, 32))
    assert crispness(ndi.gaussian_filter(image, 1.5)) < 0.5 * crispness(image)


def test_crispness_sums_channels():
    rng = np.random.default_rng(4)
    a, b = rng.random((12, 14)), rng.random((12, 14))
    assert crispness(np.stack([a, b], -1)) == pytest.approx(crispness(a) + crispness(b))


def test_crispness_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"image must have shape \(H, W\) or \(H, W, C\)"):
        crispness(np.zeros(10))
    with pytest.raises(ValueError, match="H, W >= 2"):
        crispness(np.zeros((1, 10)))
