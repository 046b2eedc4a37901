"""compensate_recording on a real 2-photon clip with real motion.

``sima_example.tif`` (SIMA test data, see shared/data/README.md): 20 frames of
128 x 256 px, uint16, a single channel; frame 0 sits about 7 px away in x from the
other frames, which drift by a few pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyflowreg.io import open_reader
from pyflowreg.metrics import crispness, frame_correlation
from pyflowreg.motion_correction import OFOptions, RegistrationConfig, compensate_recording

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIMA = DATA / "sima_example.tif"

pytestmark = pytest.mark.skipif(not SIMA.is_file(), reason=f"real test data not found: {SIMA}")


def quality_of(video: np.ndarray) -> tuple[float, float]:
    """Mean correlation of the frames with their mean image, and its crispness."""
    video = video.astype(np.float64)
    mean = video.mean(axis=0)
    return float(frame_correlation(video, mean).mean()), float(crispness(mean))


@pytest.fixture(scope="module")
def corrected(tmp_path_factory):
    out = tmp_path_factory.mktemp("sima")
    options = OFOptions(
        input_file=SIMA, output_path=out, output_format="TIFF", save_w=True, buffer_size=8
    )
    result = compensate_recording(options, config=RegistrationConfig(parallelization="sequential"))
    return result


def test_correction_sharpens_the_mean_image(corrected):
    with open_reader(SIMA) as reader:
        raw = reader.read(0, len(reader))
    with open_reader(corrected.files["compensated"]) as reader:
        registered = reader.read(0, len(reader))
        assert reader.shape == raw.shape == (20, 128, 256, 1)
        assert reader.dtype == raw.dtype == np.uint16
    corr_before, crisp_before = quality_of(raw)
    corr_after, crisp_after = quality_of(registered)
    assert corr_after > corr_before + 0.05
    assert crisp_after > crisp_before * 1.03


def test_the_jump_of_frame_0_is_found(corrected):
    u = corrected.statistics["translation"][:, 0]
    assert abs(u[0] - np.median(u[1:])) > 4.0  # frame 0 sits about 5-7 px away in x
    assert np.ptp(u[1:]) < 6.0  # the others drift by a few pixels only
    stats = corrected.statistics
    assert stats["correlation"].mean() > stats["correlation_before"].mean()
    with open_reader(corrected.files["w"]) as reader:
        assert reader.shape == (20, 128, 256, 2) and reader.dtype == np.float32
