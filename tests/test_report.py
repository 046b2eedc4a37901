"""The quality report: figures and tables from a finished (tiny) registration run."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

pytest.importorskip("matplotlib")

from pyflowreg.io import open_writer
from pyflowreg.motion_correction import OFOptions, compensate_recording
from pyflowreg.motion_correction.compensate_recording import RegistrationConfig
from pyflowreg.report import MAX_SAMPLED_FRAMES, _sample_indices, make_report

FIGURES = (
    "mean_images.png",
    "displacement.png",
    "displacement_map.png",
    "flow_colors.png",
    "quiver.png",
    "correlation.png",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _video(n_frames: int = 6, size: int = 32, channels: int = 1) -> np.ndarray:
    """Smooth texture with random sub-pixel shifts, uint16 ``(T, H, W, C)``."""
    rng = np.random.default_rng(1)
    scene = ndimage.gaussian_filter(rng.random((size, size, channels)), (1.5, 1.5, 0))
    scene = (scene - scene.min()) / np.ptp(scene)
    shifts = rng.uniform(-1.5, 1.5, size=(n_frames, 2))
    frames = [ndimage.shift(scene, (*s, 0), order=3, mode="reflect") for s in shifts]
    return (np.clip(np.stack(frames), 0, 1) * 4000 + 100).astype(np.uint16)


def _run(tmp_path: Path, *, save_w: bool = True, channels: int = 1) -> Path:
    video = _video(channels=channels)
    if channels == 1:
        source = tmp_path / "rec.tif"
        tifffile.imwrite(source, video[..., 0])
    else:
        source = tmp_path / "rec.h5"
        with open_writer(source) as writer:
            writer.write(video)
    out = tmp_path / "out"
    options = OFOptions(
        input_file=source,
        output_path=out,
        quality_setting="fast",
        buffer_size=3,
        save_w=save_w,
    )
    compensate_recording(options, config=RegistrationConfig(parallelization="sequential"))
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("report"))


def test_report_embeds_and_writes_every_figure(finished_run):
    page = make_report(finished_run)
    assert page == finished_run / "report" / "report.html"
    html = page.read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == len(FIGURES)
    for name, encoded in zip(FIGURES, images, strict=True):
        assert f'href="{name}"' in html
        png = (finished_run / "report" / name).read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 1000
        assert base64.b64decode(encoded) == png


def test_report_tables_hold_run_numbers(finished_run):
    html = make_report(finished_run).read_text(encoding="utf-8")
    stats = np.load(finished_run / "statistics.npz")
    assert "Crispness of the mean image, before (higher = sharper)" in html
    assert "Crispness of the mean image, after" in html
    assert f"mean {np.mean(stats['correlation']):.4f}" in html
    assert f"{np.max(stats['max_displacement']):.3f} px" in html
    assert "frames/s" in html
    assert "<td>quality_setting</td><td>fast</td>" in html
    assert "Crispness gain, after / before" in html
    assert "<summary>All other options</summary>" in html and "<td>eta</td><td>0.8</td>" in html
    assert "Note:" not in html  # input, registered video and w were all found


def test_report_without_w_skips_the_map_with_a_note(tmp_path):
    out = _run(tmp_path, save_w=False)
    html = make_report(out).read_text(encoding="utf-8")
    assert "displacement_map.png" not in html
    assert "save_w" in html and "Note:" in html
    assert not (out / "report" / "displacement_map.png").exists()
    assert (out / "report" / "correlation.png").stat().st_size > 0


def test_report_input_video_argument_and_missing_input(finished_run, tmp_path):
    source = finished_run.parent / "rec.tif"
    video = tifffile.imread(source)
    moved = tmp_path / "elsewhere.tif"
    source.rename(moved)
    try:
        html = make_report(finished_run).read_text(encoding="utf-8")
        assert "no &#x27;before&#x27; mean image" in html
        assert "Crispness of the mean image, before" not in html
        html = make_report(finished_run, input_video=video).read_text(encoding="utf-8")
        assert "Crispness of the mean image, before (higher = sharper)" in html
    finally:
        moved.rename(source)


def test_two_channel_report(tmp_path):
    out = _run(tmp_path, channels=2)
    page = make_report(out)
    assert (out / "report" / "mean_images.png").stat().st_size > 0
    assert "Crispness of the mean image, after" in page.read_text(encoding="utf-8")


def test_sample_indices_are_bounded_and_even():
    assert np.array_equal(_sample_indices(7), np.arange(7))
    picked = _sample_indices(100_000)
    assert len(picked) == MAX_SAMPLED_FRAMES
    assert picked[0] == 0 and picked[-1] == 99_999
    assert np.all(np.diff(picked) > 0)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not the output folder of a finished run"):
        make_report(tmp_path)


def test_run_without_statistics(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="the run had save_meta_info=False"):
        make_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="output folder not found"):
        make_report(tmp_path / "missing")


def test_missing_matplotlib_gives_the_install_hint(finished_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "pyflowreg\[plot\]"'):
        make_report(finished_run)
