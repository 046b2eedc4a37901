"""Accuracy and behaviour of the flow engine against known motion."""

import numpy as np
import pytest
from scipy import ndimage

from pyflowreg.core import (
    QUALITY_PRESETS,
    FlowParameters,
    estimate,
    get_displacement,
    prepare_reference,
    warp,
)


def texture(shape, seed=0, sigma=2.0, channels=None):
    rng = np.random.default_rng(seed)
    full = shape if channels is None else (*shape, channels)
    img = ndimage.gaussian_filter(rng.random(full), sigma=(sigma, sigma, 0)[: len(full)])
    img = (img - img.min()) / (img.max() - img.min())
    return img.astype(np.float32)


def shifted(img, dy, dx):
    """``moving`` with moving(y + dy, x + dx) = img(y, x), i.e. the true field is (dx, dy)."""
    shift = (dy, dx) if img.ndim == 2 else (dy, dx, 0)
    return ndimage.shift(img, shift, order=3, mode="nearest").astype(np.float32)


def interior(w, frac=0.2):
    h, wd = w.shape[:2]
    bh, bw = int(h * frac), int(wd * frac)
    return w[bh : h - bh, bw : wd - bw]


def test_identical_frames_give_zero_flow():
    img = texture((64, 80))
    w = get_displacement(img, img)
    assert w.shape == (64, 80, 2) and w.dtype == np.float32
    assert np.abs(w).max() < 0.01


@pytest.mark.parametrize(
    "dy, dx",
    [(0, 2), (0, -2), (3, 0), (-3, 0), (0, 0.4), (0, -0.4), (0.3, 0), (-0.3, 0), (0.6, -1.7)],
)
def test_translation_recovered_per_axis(dy, dx):
    # x and y separately and both signs: an axis swap or sign flip cannot pass
    img = texture((96, 96), seed=1)
    w = get_displacement(img, shifted(img, dy, dx))
    c = interior(w)
    assert abs(c[..., 0].mean() - dx) < 0.05
    assert abs(c[..., 1].mean() - dy) < 0.05
    assert np.abs(c[..., 0] - dx).mean() < 0.1


def test_large_translation_through_the_pyramid():
    img = texture((128, 128), seed=2, sigma=3.0)
    w = get_displacement(img, shifted(img, -7, 9))
    c = interior(w, 0.25)
    assert abs(np.median(c[..., 0]) - 9) < 0.1
    assert abs(np.median(c[..., 1]) + 7) < 0.1


@pytest.mark.parametrize("preset", list(QUALITY_PRESETS))
def test_presets_recover_translation(preset):
    img = texture((160, 160), seed=3, sigma=3.0)
    params = FlowParameters.from_quality(preset)
    w = estimate(prepare_reference(img, params), shifted(img, 1.2, -0.8))
    c = interior(w, 0.25)
    assert abs(c[..., 0].mean() + 0.8) < 0.15
    assert abs(c[..., 1].mean() - 1.2) < 0.15


def test_warping_back_aligns_frames():
    img = texture((96, 96), seed=4)
    mov = shifted(img, 1.5, -2.25)
    w = get_displacement(img, mov)
    before = np.abs(interior(mov) - interior(img)).mean()
    after = np.abs(interior(warp(mov, w)) - interior(img)).mean()
    assert after < 0.1 * before


def test_anisotropic_frames():
    img = texture((48, 320), seed=5)
    w = get_displacement(img, shifted(img, 0.5, 1.5))
    c = interior(w)
    assert w.shape == (48, 320, 2)
    assert abs(c[..., 0].mean() - 1.5) < 0.05
    assert abs(c[..., 1].mean() - 0.5) < 0.05


def test_two_channels_with_weights():
    img = texture((80, 80), seed=6, channels=2)
    mov = shifted(img, -1.0, 0.7)
    # the second channel carries pure noise that must not matter when it has no weight
    rng = np.random.default_rng(0)
    noisy = mov.copy()
    noisy[..., 1] = rng.random((80, 80))
    w_both = get_displacement(img, mov)
    w_first = get_displacement(img, noisy, weight=np.array([1.0, 0.0]))
    for w in (w_both, w_first):
        c = interior(w)
        assert abs(c[..., 0].mean() - 0.7) < 0.05
        assert abs(c[..., 1].mean() + 1.0) < 0.05


def test_spatial_weight_map_changes_the_result_only_where_weighted():
    img = texture((64, 64), seed=7)
    mov = shifted(img, 0.0, 1.0)
    wmap = np.ones((64, 64))
    w1 = get_displacement(img, mov, weight=wmap)
    w2 = get_displacement(img, mov)
    np.testing.assert_allclose(w1, w2, atol=1e-5)  # uniform map == default weights


def test_initial_field_is_used():
    img = texture((96, 96), seed=8)
    mov = shifted(img, 0.0, 2.0)
    params = FlowParameters(levels=1, iterations=5)  # one level, few sweeps: init matters
    prepared = prepare_reference(img, params)
    uv = np.zeros((96, 96, 2), np.float32)
    uv[..., 0] = 2.0
    err_init = np.abs(interior(estimate(prepared, mov, uv))[..., 0] - 2.0).mean()
    err_zero = np.abs(interior(estimate(prepared, mov))[..., 0] - 2.0).mean()
    assert err_init < 0.05 < err_zero


def test_gray_value_constancy():
    img = texture((96, 96), seed=9)
    w = get_displacement(img, shifted(img, 0.8, -0.6), constancy_assumption="gray")
    c = interior(w)
    assert abs(c[..., 0].mean() + 0.6) < 0.05
    assert abs(c[..., 1].mean() - 0.8) < 0.05


def test_robust_smoothness_runs_and_is_accurate():
    img = texture((96, 96), seed=10)
    w = get_displacement(img, shifted(img, 0.5, 0.5), a_smooth=0.5)
    c = interior(w)
    assert abs(c[..., 0].mean() - 0.5) < 0.05 and abs(c[..., 1].mean() - 0.5) < 0.05


def test_float32_matches_float64():
    img = texture((64, 64), seed=11)
    mov = shifted(img, 0.7, -1.1)
    w32 = get_displacement(img, mov, dtype=np.float32)
    w64 = get_displacement(img, mov, dtype=np.float64)
    # stated tolerance: mean difference below 5e-3 px, no pixel off by more than 0.05 px
    assert np.abs(w32 - w64).mean() < 5e-3
    assert np.abs(w32 - w64).max() < 0.05


def test_prepared_reference_is_reusable_and_deterministic():
    img = texture((64, 64), seed=12)
    prepared = prepare_reference(img, FlowParameters())
    mov = shifted(img, 0.4, 0.4)
    a = estimate(prepared, mov)
    b = estimate(prepared, mov)
    assert np.array_equal(a, b)
    assert np.array_equal(a, get_displacement(img, mov))


@pytest.mark.parametrize(
    "ref, mov, exc, match",
    [
        (np.zeros((32, 32)), np.full((32, 32), np.nan), ValueError, "moving contains NaN"),
        (
            np.full((32, 32), np.inf),
            np.zeros((32, 32)),
            ValueError,
            "reference contains NaN or inf",
        ),
        (np.zeros((32, 32)), np.zeros((32, 33)), ValueError, "does not match the reference"),
        (np.zeros((32, 32)), np.zeros((32, 32, 2)), ValueError, "does not match the reference"),
        (np.zeros((1, 1)), np.zeros((1, 1)), ValueError, "at least 3x3 pixels"),
        (np.zeros((32,)), np.zeros((32,)), ValueError, r"must be \(H, W\) or \(H, W, C\)"),
        (np.zeros((8, 8), bool), np.zeros((8, 8), bool), TypeError, "real numeric dtype"),
        (np.zeros((8, 8), complex), np.zeros((8, 8)), TypeError, "real numeric dtype"),
    ],
)
def test_bad_input_raises_clear_errors(ref, mov, exc, match):
    with pytest.raises(exc, match=match):
        get_displacement(ref, mov)


def test_bad_parameters_raise():
    img = texture((16, 16))
    with pytest.raises(ValueError, match="eta must be in"):
        get_displacement(img, img, eta=1.5)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        get_displacement(img, img, alpha=-1)
    with pytest.raises(ValueError, match="constancy_assumption must be one of"):
        get_displacement(img, img, constancy_assumption="brightness")
    with pytest.raises(ValueError, match=r"initial flow uv must have shape"):
        get_displacement(img, img, uv=np.zeros((16, 16)))
    with pytest.raises(ValueError, match="weight has 3 channel weights for 1 channels"):
        get_displacement(img, img, weight=np.ones(3))


def test_quality_presets_mapping():
    assert QUALITY_PRESETS == {"quality": 0, "balanced": 4, "fast": 6}
    assert FlowParameters.from_quality("fast").min_level == 6
    assert FlowParameters.from_quality("custom", min_level=2).min_level == 2
    with pytest.raises(ValueError, match="quality_setting must be one of"):
        FlowParameters.from_quality("best")
