"""PyFlowReg's online-processing guide (``docs/user_guide/online_processing.md``) against
this package: ``FlowRegLive`` built as documented, the reference from its buffer of first
frames, per-frame correction, the causal temporal filter, reference updates, batch calls and
get/set of the current flow. Small generated recordings.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyflowreg.datasets import make_recording
from pyflowreg.motion_correction.flow_reg_live import FlowRegLive, causal_temporal_weights
from pyflowreg.motion_correction.OF_options import OFOptions
from pyflowreg.motion_correction.statistics import correlation_with_reference

SIZE = 40


@pytest.fixture(scope="module")
def recording():
    return make_recording(24, (SIZE, SIZE), 1, seed=21, max_rigid=2.5)


def _options(**kw) -> OFOptions:
    return OFOptions(quality_setting="custom", min_level=1, iterations=20, **kw)


def test_documented_constructor_and_defaults():
    live = FlowRegLive(
        options=None,
        reference_buffer_size=50,
        reference_update_interval=20,
        reference_update_weight=0.2,
        truncate=4.0,
    )
    assert live.options.quality_setting == "fast"  # None: fast defaults
    assert live.reference is None and live.get_current_flow() is None
    default = FlowRegLive()
    assert (default.reference_buffer_size, default.reference_update_interval) == (50, 20)
    assert (default.reference_update_weight, default.truncate) == (0.2, 4.0)
    # keyword arguments are option overrides
    tuned = FlowRegLive(_options(), alpha=4)
    assert tuned.options.alpha == (4.0, 4.0)
    with pytest.raises(ValueError, match="reference_update_weight must be in"):
        FlowRegLive(reference_update_weight=1.5)
    with pytest.raises(ValueError, match="reference_buffer_size must be >= 1"):
        FlowRegLive(reference_buffer_size=0)


def test_frames_before_a_reference_are_buffered_then_the_reference_is_automatic(recording):
    live = FlowRegLive(_options(), reference_buffer_size=6)
    for t in range(5):
        frame = recording.video[t]
        out, flow = live(frame)
        np.testing.assert_array_equal(out, frame)  # returned unchanged
        assert flow.shape == (SIZE, SIZE, 2) and not flow.any()
        assert live.reference is None
    live(recording.video[5])  # the sixth frame fills the buffer: the reference is built
    assert live.reference is not None and live.reference.shape == (SIZE, SIZE, 1)
    registered, flow = live(recording.video[6])
    assert registered.shape == (SIZE, SIZE, 1) and flow.shape == (SIZE, SIZE, 2)
    assert flow.any()


def test_set_reference_forms(recording):
    live = FlowRegLive(_options())
    with pytest.raises(ValueError, match="none were given yet"):
        live.set_reference()
    live.set_reference(recording.video[:6])  # (T, H, W, C): registered, then averaged
    from_stack = live.reference.copy()
    live.set_reference(recording.video[0])  # (H, W, C): used as it is
    np.testing.assert_allclose(live.reference, recording.video[0])
    live.reset_reference(recording.video[:6, ..., 0])  # (T, H, W) stack
    np.testing.assert_allclose(live.reference, from_stack, atol=1e-5)
    for frame in recording.video[:3]:
        live(frame)
    assert live.get_current_flow() is not None
    live.set_reference(recording.reference)  # resets the flow initialisation
    assert live.get_current_flow() is None


def test_streaming_registers_frames(recording):
    live = FlowRegLive(_options(), reference_update_weight=0.0)
    live.set_reference(recording.reference)
    registered = np.stack([live(frame)[0] for frame in recording.video])
    before = correlation_with_reference(recording.video, recording.reference).mean()
    after = correlation_with_reference(registered, recording.reference).mean()
    assert after > before + 0.02


def test_register_frames_equals_frame_by_frame(recording):
    a = FlowRegLive(_options(), reference=recording.reference)
    b = FlowRegLive(_options(), reference=recording.reference)
    frames, flows = a.register_frames(recording.video[:5])
    assert frames.shape == (5, SIZE, SIZE, 1) and flows.shape == (5, SIZE, SIZE, 2)
    for t in range(5):
        registered, flow = b(recording.video[t])
        np.testing.assert_array_equal(frames[t], registered)
        np.testing.assert_array_equal(flows[t], flow)


def test_current_flow_get_and_set(recording):
    live = FlowRegLive(_options(), reference=recording.reference)
    _, flow = live(recording.video[3])
    current = live.get_current_flow()
    np.testing.assert_array_equal(current, flow)
    current[:] = 99  # a copy
    assert not np.array_equal(live.get_current_flow(), current)
    # the initial flow of the next frame is what set_flow_init gives
    twin = FlowRegLive(_options(), reference=recording.reference)
    twin.set_flow_init(flow)
    np.testing.assert_array_equal(live(recording.video[4])[1], twin(recording.video[4])[1])
    with pytest.raises(ValueError, match="w_init must have shape"):
        live.set_flow_init(np.zeros((5, 5, 2)))


def test_reference_update_interval_and_weight(recording):
    live = FlowRegLive(_options(), reference_update_interval=3, reference_update_weight=0.5)
    live.set_reference(recording.reference)
    start = live.reference.copy()
    outputs = [live(frame)[0] for frame in recording.video[:3]]
    assert live.n_registered == 3
    expected = 0.5 * start + 0.5 * outputs[2].astype(np.float32)
    np.testing.assert_allclose(live.reference, expected, rtol=1e-6)
    live(recording.video[3])  # not an update frame
    np.testing.assert_allclose(live.reference, expected, rtol=1e-6)


def test_causal_temporal_filter():
    assert causal_temporal_weights(0.1).tolist() == [1.0]  # default sigma: no filtering
    weights = causal_temporal_weights(1.0, truncate=4.0)
    assert len(weights) == 5 and np.isclose(weights.sum(), 1.0)
    assert np.all(np.diff(weights) < 0)  # the current frame weighs most
    rec = make_recording(8, (SIZE, SIZE), 1, seed=3, max_rigid=0.0, max_nonrigid=0.0, snr=2.0)
    smooth = FlowRegLive(_options(sigma=[1.0, 1.0, 1.5]), reference=rec.reference)
    plain = FlowRegLive(_options(sigma=[1.0, 1.0, 0.0]), reference=rec.reference)
    assert len(smooth._temporal_weights) == int(4.0 * 1.5 + 0.5) + 1
    flows_smooth = np.stack([smooth(f)[1] for f in rec.video])
    flows_plain = np.stack([plain(f)[1] for f in rec.video])
    # no motion: temporal averaging of the noise gives smaller spurious fields
    assert np.abs(flows_smooth[4:]).mean() < np.abs(flows_plain[4:]).mean()


def test_two_channel_stream():
    rec = make_recording(8, (SIZE, SIZE), 2, seed=8, max_rigid=2.0)
    live = FlowRegLive(_options(channel_normalization="separate"), reference=rec.reference)
    registered, flow = live(rec.video[2])
    assert registered.shape == (SIZE, SIZE, 2) and flow.shape == (SIZE, SIZE, 2)
