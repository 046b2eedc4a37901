"""PyFlowReg's pre-alignment guide (``docs/user_guide/prealignment.md``) against this package:
``cc_initialization``, ``cc_hw`` (an int or an ``(H, W)`` pair) and ``cc_up`` (sub-pixel
up-sampling of the correlation peak), with ``compensate_recording`` and ``compensate_arr``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pyflowreg.datasets import make_recording
from pyflowreg.motion_correction import (
    OFOptions,
    RegistrationConfig,
    compensate_arr,
    compensate_recording,
)
from pyflowreg.motion_correction.reference import phase_correlation_shift
from pyflowreg.motion_correction.statistics import correlation_with_reference

SEQUENTIAL = RegistrationConfig(parallelization="sequential")


def _texture(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((size, size)), 2.0)


def test_defaults_and_values():
    opts = OFOptions()
    assert (opts.cc_initialization, opts.cc_hw, opts.cc_up) == (False, 256, 1)
    opts = OFOptions(cc_initialization=True, cc_hw=(128, 64), cc_up=4)
    assert opts.cc_hw == (128, 64) and opts.cc_up == 4
    with pytest.raises(ValueError, match="cc_up must be >= 1"):
        OFOptions(cc_up=0)
    with pytest.raises(ValueError, match=r"cc_hw must be an int or a pair"):
        OFOptions(cc_hw=(1, 2, 3))


@pytest.mark.parametrize("shift", [(1.3, -2.6), (-3.4, 0.7)])
def test_cc_up_resolves_the_shift_on_its_grid(shift):
    image = _texture()
    moving = ndimage.shift(image, shift, mode="wrap")
    dy, dx = shift
    for up, tol in ((10, 0.051), (20, 0.026)):
        u, v = phase_correlation_shift(image, moving, 256, upsample=up)
        # warp convention: moving(y + v, x + u) = reference(y, x)
        assert abs(u - dx) <= tol and abs(v - dy) <= tol
    u4, v4 = phase_correlation_shift(image, moving, 256, upsample=4)
    assert np.allclose(np.array([u4, v4]) * 4, np.round(np.array([u4, v4]) * 4))  # 1/4 px grid
    # cc_hw as (height, width): the copies are reduced by the larger ratio
    u2, v2 = phase_correlation_shift(image, moving, (32, 64), upsample=20)
    assert abs(u2 - dx) < 0.2 and abs(v2 - dy) < 0.2


def test_prealignment_registers_a_large_drift(tmp_path):
    rec = make_recording(10, (48, 48), 1, seed=7, max_rigid=0.0, max_nonrigid=0.5)
    drift = np.stack([ndimage.shift(f[..., 0], (6.0, -7.0), mode="nearest") for f in rec.video])
    video = drift[..., None].astype(np.float32)
    before = correlation_with_reference(video, rec.reference).mean()
    base = dict(quality_setting="fast", update_initialization_w=False, iterations=10)
    plain, _ = compensate_arr(
        video, rec.reference, OFOptions(**base), registration_config=SEQUENTIAL
    )
    opts = OFOptions(**base, cc_initialization=True, cc_hw=256, cc_up=4)
    aligned, w = compensate_arr(video, rec.reference, opts, registration_config=SEQUENTIAL)
    after_plain = correlation_with_reference(plain, rec.reference).mean()
    after_cc = correlation_with_reference(aligned, rec.reference).mean()
    # the engine alone now follows a 7 px drift on these frames too (coarsest level 8 px), so the
    # pre-alignment must register it and be no worse than the plain run
    assert after_cc > before + 0.1 and after_cc > after_plain - 0.005
    # the fields hold the rigid part: content moved 7 px left, 6 px down, so
    # moving(y + 6, x - 7) = reference(y, x): u = -7 (x), v = 6 (y) on average
    assert abs(w[..., 0].mean() + 7.0) < 1.0 and abs(w[..., 1].mean() - 6.0) < 1.0

    file_options = opts.model_copy(
        update={"input_file": video, "output_path": tmp_path, "output_format": "ARRAY"}
    )
    result = compensate_recording(file_options, rec.reference, config=SEQUENTIAL)
    np.testing.assert_array_equal(result.registered, aligned)


def test_estimate_rigid_xcorr_2d_as_documented():
    """``pyflowreg.util.xcorr_prealignment.estimate_rigid_xcorr_2d``: ``[dx, dy]`` in the
    fields' convention (warping the moving image by it aligns it to the reference)."""
    from pyflowreg.util.xcorr_prealignment import estimate_rigid_xcorr_2d

    rng = np.random.default_rng(0)
    ref = ndimage.gaussian_filter(rng.random((128, 128)), 2)
    mov = ndimage.shift(ref, (3.0, -5.0), order=3, mode="nearest")  # down 3, left 5
    shift = estimate_rigid_xcorr_2d(ref, mov)
    assert shift.dtype == np.float32 and shift.shape == (2,)
    np.testing.assert_allclose(shift, [-5.0, 3.0], atol=0.01)
    np.testing.assert_allclose(estimate_rigid_xcorr_2d(ref, mov, up=10), [-5.0, 3.0], atol=0.01)
    two = np.stack([ref, ref * 0.5], axis=-1), np.stack([mov, mov * 0.5], axis=-1)
    np.testing.assert_allclose(estimate_rigid_xcorr_2d(*two, weight=[0.7, 0.3]), shift, atol=1e-3)
    with pytest.raises(ValueError, match="weight has 3 entries"):
        estimate_rigid_xcorr_2d(*two, weight=[1, 1, 1])
