"""Pipeline pieces and in-memory registration: statistics, rigid pre-alignment, the
halo pre-filter, the initial-flow rule, compensate_arr and FlowRegLive."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pyflowreg.core import estimate, prepare_reference
from pyflowreg.core.preprocess import gaussian_filter_video, normalize, reference_range
from pyflowreg.datasets import make_recording
from pyflowreg.executors.base import PendingBatch
from pyflowreg.motion_correction import (
    FlowRegLive,
    OFOptions,
    RegistrationConfig,
    compensate_arr,
)
from pyflowreg.motion_correction._outputs import valid_mask
from pyflowreg.motion_correction._source import FrameSource, batch_ranges, check_finite_frames
from pyflowreg.motion_correction.initialization import InitialFlowPlanner
from pyflowreg.motion_correction.reference import (
    normalization_range,
    phase_correlation_shift,
    prepared_reference_image,
)
from pyflowreg.motion_correction.statistics import (
    StatisticsAccumulator,
    correlation_with_reference,
    displacement_statistics,
)

SEQUENTIAL = RegistrationConfig(parallelization="sequential")


def fast_options(**kw) -> OFOptions:
    return OFOptions(quality_setting="custom", min_level=1, iterations=10, **kw)


@pytest.fixture(scope="module")
def recording():
    return make_recording(12, (40, 40), seed=3, max_rigid=3.0, max_nonrigid=1.0)


class ArrayReader:
    """Minimal reader over a (T, H, W, C) array that records the ranges asked for."""

    def __init__(self, video):
        self.video = video
        self.shape = video.shape
        self.dtype = video.dtype
        self.calls: list[tuple[int, int]] = []

    def read(self, start, stop):
        self.calls.append((start, stop))
        return self.video[start:stop].copy()


# ----------------------------------------------------------------------------- config


def test_registration_config_defaults_and_validation():
    config = RegistrationConfig()
    assert (config.n_jobs, config.verbose, config.parallelization) == (-1, False, None)
    with pytest.raises(ValueError, match="n_jobs must be -1 or >= 1, got 0"):
        RegistrationConfig(n_jobs=0)
    with pytest.raises(ValueError, match="got -3"):
        RegistrationConfig(n_jobs=-3)
    with pytest.raises(TypeError, match="n_jobs must be an int"):
        RegistrationConfig(n_jobs="4")
    with pytest.raises(TypeError, match="parallelization must be a str or None"):
        RegistrationConfig(parallelization=1)


# ----------------------------------------------------------------------------- statistics


def test_displacement_statistics_of_known_fields():
    h, w = 6, 8
    field = np.zeros((2, h, w, 2), np.float32)
    field[0, ..., 0], field[0, ..., 1] = 3.0, -4.0  # constant: |w| = 5, no divergence
    field[1, ..., 0] = 0.5 * np.arange(w)[None, :]  # du/dx = 0.5
    field[1, ..., 1] = 0.25 * np.arange(h)[:, None]  # dv/dy = 0.25
    stats = displacement_statistics(field)
    np.testing.assert_allclose(stats["mean_displacement"][0], 5.0)
    np.testing.assert_allclose(stats["max_displacement"][0], 5.0)
    np.testing.assert_allclose(stats["translation"][0], [3.0, -4.0])
    np.testing.assert_allclose(stats["mean_divergence"], [0.0, 0.75], atol=1e-12)
    corner = np.hypot(0.5 * (w - 1), 0.25 * (h - 1))
    np.testing.assert_allclose(stats["max_displacement"][1], corner, rtol=1e-6)


def test_correlation_and_accumulator():
    rng = np.random.default_rng(0)
    ref = rng.random((8, 8, 2))
    frames = np.stack([ref, 2 * ref + 1, -ref, np.ones_like(ref)])
    corr = correlation_with_reference(frames, ref)
    np.testing.assert_allclose(corr[:3], [1.0, 1.0, -1.0])
    assert np.isnan(corr[3])
    acc = StatisticsAccumulator(ref)
    zeros = np.zeros((4, 8, 8, 2), np.float32)
    acc.add(frames, frames, zeros)
    acc.add(frames[:1], frames[:1], zeros[:1])
    out = acc.result()
    assert out["translation"].shape == (5, 2)
    assert set(out) == {
        "mean_displacement",
        "max_displacement",
        "mean_divergence",
        "translation",
        "correlation",
        "correlation_before",
    }
    with pytest.raises(ValueError, match="do not match reference"):
        correlation_with_reference(frames[:, :4], ref)


def test_valid_mask_and_binning():
    w = np.zeros((1, 4, 5, 2), np.float32)
    w[0, :, :, 0] = 1.5  # x + 1.5 > 4 for the last two columns
    w[0, 0, :, 1] = -0.5  # first row samples above the frame
    mask = valid_mask(w)[0]
    expected = np.ones((4, 5), np.uint8)
    expected[:, 3:] = 0
    expected[0] = 0
    np.testing.assert_array_equal(mask, expected)


# ----------------------------------------------------------------------------- phase correlation


@pytest.mark.parametrize("shift", [(3, -2), (-5, 4), (0, 0)])
def test_phase_correlation_recovers_integer_shift(shift):
    rng = np.random.default_rng(1)
    from scipy import ndimage

    ref = ndimage.gaussian_filter(rng.random((64, 64)), 2)
    u, v = shift
    moving = np.roll(ref, (v, u), axis=(0, 1))  # moving(y + v, x + u) = ref(y, x)
    est = phase_correlation_shift(ref, moving, max_size=256)
    np.testing.assert_allclose(est, shift, atol=0.05)
    coarse = phase_correlation_shift(ref, moving, max_size=32)  # block averaged by 2
    np.testing.assert_allclose(coarse, shift, atol=0.1)
    with pytest.raises(ValueError, match="cc_hw must be >= 8"):
        phase_correlation_shift(ref, moving, max_size=4)


# ----------------------------------------------------------------------------- halo pre-filter


@pytest.mark.parametrize("buffer_size", [1, 3, 7, 40])
def test_filtered_batches_equal_whole_video_filter(buffer_size):
    rng = np.random.default_rng(2)
    video = rng.random((17, 12, 10, 2)).astype(np.float32) * 100
    sigma = np.array([[1.0, 1.0, 1.2], [0.5, 0.5, 0.6]])
    low, high = np.array([0.0, 5.0]), np.array([100.0, 90.0])
    whole = gaussian_filter_video(normalize(video, low, high), sigma)
    reader = ArrayReader(video)
    source = FrameSource(reader, low, high, sigma)
    assert source.halo == 5  # ceil(4 * 1.2 - 0.5)
    parts = []
    for start, stop in batch_ranges(len(source), buffer_size):
        raw, filtered = source.read(start, stop)
        np.testing.assert_array_equal(raw, video[start:stop])
        parts.append(filtered)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert max(stop - start for start, stop in reader.calls) <= buffer_size + 2 * source.halo


def test_frame_source_subset_and_nan_message():
    video = np.arange(10, dtype=np.float32)[:, None, None, None] * np.ones((10, 4, 4, 1))
    video[6, 1, 1] = np.nan
    source = FrameSource(ArrayReader(video), 0.0, 1.0, np.zeros((1, 3)), indices=[1, 2, 3, 8])
    np.testing.assert_array_equal(source.read_raw(0, 4)[:, 0, 0, 0], [1, 2, 3, 8])
    full = FrameSource(ArrayReader(video), 0.0, 1.0, np.zeros((1, 3)), name="clip")
    with pytest.raises(ValueError, match="frame 6 of clip contains NaN"):
        full.read(4, 8)
    video[3, 0, 0] = np.inf  # two bad frames read through the subset: recording numbers
    subset = FrameSource(ArrayReader(video), 0.0, 1.0, np.zeros((1, 3)), indices=[2, 3, 6, 8])
    with pytest.raises(ValueError, match=r"frame 3 of input .*\(and 1 more in frames 2-8\)"):
        subset.read_raw(0, 4)
    with pytest.raises(ValueError, match="buffer_size must be >= 1, got 0"):
        batch_ranges(5, 0)


# ----------------------------------------------------------------------------- initial flows


class SpyExecutor:
    """Executor stand-in: the field of frame t is its mean intensity plus the initial flow."""

    def __init__(self):
        self.calls = []

    def process_batch(self, raw, filtered, uv, first_index):
        self.calls.append((first_index, len(raw), uv.copy()))
        level = filtered.mean(axis=(1, 2, 3))[:, None, None, None]
        w = (uv[None] + level).astype(np.float32)
        return raw, w

    def submit_batch(self, raw, filtered, uv, first_index):
        return PendingBatch.completed(*self.process_batch(raw, filtered, uv, first_index))


def _planner(video, buffer_size, **kw):
    source = FrameSource(ArrayReader(video), 0.0, 1.0, np.zeros((1, 3)))
    batches = batch_ranges(len(video), buffer_size)
    spy = SpyExecutor()
    ref = video[0].astype(np.float32)
    return InitialFlowPlanner(source, spy, batches, ref, **kw), spy, batches


def test_initial_flow_rule_with_boundary_pass():
    video = (np.arange(50, dtype=np.float32) / 50)[:, None, None, None] * np.ones((50, 4, 4, 1))
    planner, spy, batches = _planner(video, 15)
    planned = planner.plan()
    # uv_0: mean of frames 0..19 from zero; uv_b: frames [s_b - 20, s_b) from uv_{b-1}
    expected = [video[:20].mean()]
    for start, _ in batches[1:]:
        expected.append(expected[-1] + video[max(0, start - 20) : start].mean())
    np.testing.assert_allclose([p[0, 0, 0] for p in planned], expected, rtol=1e-6)
    # windows [0, 20), [0, 15), [10, 30), [25, 45), read in chunks of at most 15 frames
    calls = [(c[0], c[1]) for c in spy.calls]
    assert calls == [(0, 15), (15, 5), (0, 15), (10, 15), (25, 5), (25, 15), (40, 5)]


def test_observed_tail_equals_boundary_pass():
    video = (np.arange(70, dtype=np.float32) / 70)[:, None, None, None] * np.ones((70, 4, 4, 1))
    planned, _, batches = _planner(video, 25)
    planned = planned.plan()
    planner, spy, _ = _planner(video, 25)
    for b, (start, stop) in enumerate(batches):
        uv = planner.next()
        np.testing.assert_array_equal(uv, planned[b])
        _, w = spy.process_batch(video[start:stop], video[start:stop], uv, start)
        planner.observe(w)
    # only the first window was estimated separately; later ones reused the batch tails
    assert [c[1] for c in spy.calls] == [20, 25, 25, 20]


def test_no_chaining_gives_zeros_or_rigid_shift():
    rng = np.random.default_rng(4)
    from scipy import ndimage

    base = ndimage.gaussian_filter(rng.random((32, 32)), 2).astype(np.float32)
    video = np.stack([np.roll(base, (2, -3), axis=(0, 1))] * 6)[..., None]
    planner, spy, _ = _planner(video, 3, chain=False)
    assert all(not p.any() for p in planner.plan()) and not spy.calls
    planner, spy, _ = _planner(video, 3, chain=False, cc=True)
    planner.reference = base[..., None]
    for uv in planner.plan():
        np.testing.assert_allclose(uv[0, 0], [-3.0, 2.0], atol=0.15)
    assert not spy.calls


# ----------------------------------------------------------------------------- compensate_arr


def _engine_fields(video, reference_raw, options, uv):
    """Fields computed directly with the core engine (same pre-processing as the pipeline)."""
    video = video if video.ndim == 4 else video[..., None]
    ref = reference_raw if reference_raw.ndim == 3 else reference_raw[..., None]
    low, high = reference_range(ref.astype(np.float32))
    sigma = options.sigma_for_channels(video.shape[-1])
    filtered = gaussian_filter_video(normalize(video, low, high), sigma)
    prepared = prepare_reference(
        prepared_reference_image(ref, low, high, sigma), options.flow_parameters()
    )
    return np.stack([estimate(prepared, f, uv) for f in filtered]), prepared, filtered


def test_compensate_arr_matches_engine_and_improves_alignment(recording):
    video = recording.video[..., 0]
    options = fast_options()
    registered, w = compensate_arr(
        video, recording.reference[..., 0], options, registration_config=SEQUENTIAL
    )
    assert registered.shape == video.shape and registered.dtype == video.dtype
    assert w.shape == (*video.shape, 2) and w.dtype == np.float32
    zero, prepared, filtered = _engine_fields(video, recording.reference, options, None)
    uv0 = zero.mean(axis=0, dtype=np.float64).astype(np.float32)  # 12 frames < 20: all of them
    expected = np.stack([estimate(prepared, f, uv0) for f in filtered])
    np.testing.assert_array_equal(w, expected)
    before = correlation_with_reference(recording.video, recording.reference).mean()
    after = correlation_with_reference(registered[..., None], recording.reference).mean()
    assert after > before + 0.02
    epe = np.linalg.norm(w - recording.flow, axis=-1).mean()
    assert epe < 0.6 * np.linalg.norm(recording.flow, axis=-1).mean()


def test_compensate_arr_shapes_follow_the_input(recording):
    options = fast_options()
    two = np.concatenate([recording.video, recording.video[..., ::-1] * 0.5], axis=-1)[:4]
    registered, w = compensate_arr(two, None, options, registration_config=SEQUENTIAL)
    assert registered.shape == (4, 40, 40, 2) and w.shape == (4, 40, 40, 2)
    frame = recording.video[3, ..., 0]
    registered, w = compensate_arr(
        frame, recording.reference[..., 0], options, registration_config=SEQUENTIAL
    )
    assert registered.shape == (40, 40) and w.shape == (40, 40, 2)
    frame_c = two[1]
    registered, w = compensate_arr(frame_c, two[0], options, registration_config=SEQUENTIAL)
    assert registered.shape == (40, 40, 2) and w.shape == (40, 40, 2)
    # a single frame registered to itself does not move
    registered, w = compensate_arr(frame, None, options, registration_config=SEQUENTIAL)
    assert np.abs(w).max() < 1e-3


def test_one_nan_check_names_the_first_bad_frame():
    block = np.zeros((5, 2, 2, 1), np.float32)
    block[1, 0, 1], block[3, 1, 0] = np.nan, -np.inf
    message = (
        "frame 11 of in.h5 contains NaN or inf values (and 1 more in frames 10-14); "
        "replace them (e.g. np.nan_to_num) before registering"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        check_finite_frames(block, "in.h5", 10)
    check_finite_frames(block[[0, 2, 4]], "in.h5")  # finite frames pass
    check_finite_frames(np.zeros((2, 2, 2, 1), np.uint16), "in.h5")  # so do integer ones
    check_finite_frames(block[:0], "in.h5")


def test_compensate_arr_rejects_bad_input(recording):
    video = recording.video[:5, ..., 0].copy()
    video[2, 3, 3] = np.inf
    with pytest.raises(ValueError, match="frame 2 of video contains NaN or inf"):
        compensate_arr(video, None, fast_options(), registration_config=SEQUENTIAL)
    with pytest.raises(ValueError, match=r"reference has shape \(20, 40, 1\)"):
        compensate_arr(recording.video[:3], np.zeros((20, 40)), fast_options())
    with pytest.raises(TypeError, match="registration_config must be a RegistrationConfig"):
        compensate_arr(recording.video[:3], None, fast_options(), registration_config={})


def test_update_initialization_off_starts_every_batch_from_zero(recording):
    video = recording.video[:8]
    options = fast_options(update_initialization_w=False, buffer_size=3)
    _, w = compensate_arr(video, recording.reference, options, registration_config=SEQUENTIAL)
    expected, _, _ = _engine_fields(video, recording.reference, options, None)
    np.testing.assert_array_equal(w, expected)


def test_update_reference_changes_the_result(recording):
    video = recording.video[:8]
    fixed = compensate_arr(
        video, recording.reference, fast_options(buffer_size=4), registration_config=SEQUENTIAL
    )
    moving = compensate_arr(
        video,
        recording.reference,
        fast_options(buffer_size=4, update_reference=True),
        registration_config=SEQUENTIAL,
    )
    np.testing.assert_array_equal(fixed[1][:4], moving[1][:4])  # first batch: same reference
    assert not np.array_equal(fixed[1][4:], moving[1][4:])


# ----------------------------------------------------------------------------- FlowRegLive


def test_live_uses_previous_flow_as_initial_field(recording):
    options = fast_options()
    live = FlowRegLive(options, reference=recording.reference)
    frame = recording.video[5]
    registered, w1 = live.register(frame)
    assert registered.shape == frame.shape and w1.shape == (40, 40, 2)
    _, w2 = live.register(frame)
    spatial = options.sigma_for_channels(1).copy()
    spatial[:, 2] = 0
    low, high = normalization_range(recording.reference)
    prepared = prepare_reference(
        prepared_reference_image(recording.reference, low, high, spatial), options.flow_parameters()
    )
    filtered = prepared_reference_image(frame, low, high, spatial)
    np.testing.assert_array_equal(w1, estimate(prepared, filtered, None))
    np.testing.assert_array_equal(w2, estimate(prepared, filtered, w1))
    live.close()


def test_live_reference_from_frames_and_updates(recording):
    with FlowRegLive(fast_options(), n_reference_frames=4, reference_update_rate=0.5) as live:
        with pytest.raises(RuntimeError, match="no reference"):
            live.register(recording.video[0, ..., 0])
        live.set_reference(recording.video[:10, ..., 0])  # (T, H, W): the last 4 frames
        assert live.reference.shape == (40, 40, 1)
        before = live.reference.copy()
        registered, _ = live.register(recording.video[10, ..., 0])
        assert registered.shape == (40, 40)
        np.testing.assert_allclose(
            live.reference[..., 0], 0.5 * before[..., 0] + 0.5 * registered, rtol=1e-5
        )
        with pytest.raises(ValueError, match="frame has shape"):
            live.register(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="reference_update_rate must be in"):
        FlowRegLive(reference_update_rate=2.0)


# ----------------------------------------------------------------------------- reference


def test_compute_reference_follows_the_model(recording):
    from dataclasses import replace

    from pyflowreg.backends.cpu import FlowregBackend
    from pyflowreg.core import warp
    from pyflowreg.executors.sequential import SequentialExecutor
    from pyflowreg.motion_correction._engine import executor_maker
    from pyflowreg.motion_correction.reference import compute_reference

    options = fast_options()
    video = recording.video[:7]
    sigma = options.sigma_for_channels(1)
    reader = ArrayReader(video)
    reference = compute_reference(
        reader,
        np.arange(1, 7),
        sigma=sigma,
        channel_normalization="joint",
        params=options.flow_parameters(),
        weight=None,
        make_executor=executor_maker(SequentialExecutor, FlowregBackend, options, 1),
        chunk_size=4,
    )
    assert max(stop - start for start, stop in reader.calls) <= 4 + 2 * 4
    # the model, on the whole clip at once
    frames = video[1:7]
    low, high = reference_range(frames.reshape(-1, 1, 1))
    filtered = gaussian_filter_video(
        normalize(frames, low, high), sigma + np.array([1.0, 1.0, 0.5])
    )
    target = filtered.mean(axis=0)
    params = replace(options.flow_parameters(), alpha=(3.5, 3.5))
    prepared = prepare_reference(target, params)
    warped = [
        warp(f, estimate(prepared, g, None), "cubic") for f, g in zip(frames, filtered, strict=True)
    ]
    np.testing.assert_allclose(reference, np.mean(warped, axis=0), rtol=1e-4, atol=1e-5)
    assert reference.shape == (40, 40, 1) and reference.dtype == np.float32


@pytest.mark.parametrize("sigma_t", [0.0, 0.1, 0.6, 2.0])
def test_temporal_mean_weights_give_the_mean_of_the_filtered_clip(sigma_t):
    from pyflowreg.motion_correction.reference import temporal_mean_weights

    rng = np.random.default_rng(3)
    clip = rng.random((9, 6, 5, 1)).astype(np.float32)
    filtered = gaussian_filter_video(clip, np.array([0.0, 0.0, sigma_t]))
    weights = temporal_mean_weights(len(clip), sigma_t)
    assert weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(
        np.tensordot(weights, clip, axes=(0, 0)), filtered.mean(axis=0), rtol=1e-5, atol=1e-6
    )
