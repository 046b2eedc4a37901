"""pyflowreg.evaluation: what ``pyflowreg demo`` and ``pyflowreg bench`` compute."""

from __future__ import annotations

import numpy as np
import pytest

from pyflowreg.datasets import displace, make_recording
from pyflowreg.evaluation import (
    accuracy_against_truth,
    engine_benchmark,
    reference_offset,
    warm_up,
    write_demo_recording,
)
from pyflowreg.io import open_reader
from pyflowreg.motion_correction.compensate_recording import RegistrationConfig

INNER = (slice(8, -8), slice(8, -8))


@pytest.fixture(scope="module")
def recording():
    return make_recording(n_frames=4, shape=(64, 64), seed=3)


def test_reference_offset_is_zero_for_the_scene_and_recovers_a_shift(recording):
    scene = recording.reference
    assert np.abs(reference_offset(scene, scene)[INNER]).max() < 0.05
    shifted = displace(scene, np.broadcast_to([1.5, -1.0], (64, 64, 2)))  # content moved by w0
    offset = reference_offset(shifted, scene)[INNER]  # reference(x) = scene(x - w0)
    np.testing.assert_allclose(offset.reshape(-1, 2).mean(axis=0), [-1.5, 1.0], atol=0.1)


def test_accuracy_against_truth(recording):
    scene, truth = recording.reference, recording.flow
    exact = accuracy_against_truth(truth, truth, scene, scene)
    assert exact.epe.mean < 0.02 and exact.reference_shift < 0.05
    off = accuracy_against_truth(truth + np.array([0.5, 0.0]), truth, scene, scene)
    assert off.epe.mean == pytest.approx(0.5, abs=0.02)


def test_engine_benchmark_rows_and_checks():
    rows = list(engine_benchmark(size=48, n_frames=2, presets=["fast", "balanced"]))
    assert [row.preset for row in rows] == ["fast", "balanced"]
    for row in rows:
        assert row.frames_per_second > 0
        assert row.ms_per_frame == pytest.approx(1000 / row.frames_per_second)
        assert 0 < row.epe.mean < 1.0 and row.epe.p95 >= row.epe.mean
    with pytest.raises(ValueError, match="size must be an int >= 16, got 8"):
        engine_benchmark(size=8)  # checked at the call, before any row is asked for
    with pytest.raises(ValueError, match="n_frames must be an int >= 1, got 0"):
        engine_benchmark(n_frames=0)
    with pytest.raises(
        ValueError, match=r"presets must be among \['quality', 'balanced', 'fast'\]"
    ):
        engine_benchmark(presets=["best"])


def test_demo_recording_round_trip_and_warm_up(tmp_path):
    path = tmp_path / "demo.h5"
    rec = write_demo_recording(path, n_frames=3, size=32, seed=1)
    assert rec.video.dtype == np.uint16 and rec.video.shape == (3, 32, 32, 1)
    with open_reader(path) as reader:
        np.testing.assert_array_equal(
            np.asarray(reader.read(0, 3)).reshape(rec.video.shape), rec.video
        )
    config = RegistrationConfig(parallelization="sequential")
    assert warm_up(rec.video, "fast", config) > 0
