"""PyFlowReg's utilities page (``docs/api/utilities.md``, visualisation section) and the
flow-visualisation calls of the napari plugin against this package:
``pyflowreg.util.visualization.flow_to_color`` / ``quiver_visualization`` /
``get_visualization`` / ``multispectral_mapping``.
"""

from __future__ import annotations

import builtins
import importlib.util

import numpy as np
import pytest

from pyflowreg.util.visualization import (
    flow_to_color,
    get_visualization,
    make_color_wheel,
    multispectral_mapping,
    quiver_visualization,
)

HAS_CV2 = importlib.util.find_spec("cv2") is not None


def _field(h: int = 24, w: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x - w / 2) / 4, (y - h / 2) / 4], axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------- flow colours


def test_flow_to_color_shapes_and_dtype():
    w = _field()
    rgb = flow_to_color(w, max_flow=2.0)
    assert rgb.shape == (24, 32, 3) and rgb.dtype == np.uint8
    video = np.stack([w, -w, 0 * w])
    colors = flow_to_color(video)
    assert colors.shape == (3, 24, 32, 3) and colors.dtype == np.uint8
    np.testing.assert_array_equal(colors[2], 255)  # no displacement: white
    with pytest.raises(ValueError, match=r"flow must be \(H, W, 2\) or \(T, H, W, 2\)"):
        flow_to_color(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="max_flow must be"):
        flow_to_color(w, max_flow=0)


def test_flow_to_color_encodes_direction_and_length():
    wheel = make_color_wheel()
    assert wheel.shape == (55, 3) and wheel.min() >= 0 and wheel.max() <= 1
    right = np.array([[[1.0, 0.0]]])
    left = np.array([[[-1.0, 0.0]]])
    assert tuple(flow_to_color(right, max_flow=1.0)[0, 0]) == (255, 0, 0)  # red
    assert tuple(flow_to_color(left, max_flow=1.0)[0, 0]) != (255, 0, 0)
    half = flow_to_color(right * 0.5, max_flow=1.0)[0, 0].astype(int)
    assert half[0] == 255 and 120 <= half[1] <= 135  # paler: half the saturation
    beyond = flow_to_color(right * 2.0, max_flow=1.0)[0, 0]
    assert tuple(beyond) == (191, 0, 0)  # longer than max_flow: darker
    # max_flow=None scales by the longest vector of the whole input (frames compare)
    video = np.stack([right, right * 0.5])
    np.testing.assert_array_equal(flow_to_color(video), flow_to_color(video, max_flow=1.0))
    nan = np.array([[[np.nan, 0.0]]])
    assert tuple(flow_to_color(nan, max_flow=1.0)[0, 0]) == (0, 0, 0)


# ----------------------------------------------------------------------------- quiver


@pytest.mark.parametrize("streamlines", [False, True])
def test_quiver_matplotlib_returns_an_rgb_array(streamlines):
    pytest.importorskip("matplotlib")
    image = np.random.default_rng(0).random((24, 32))
    rgb = quiver_visualization(
        image,
        _field(),
        scale=1.0,
        downsample=0.2,
        show_streamlines=streamlines,
        backend="matplotlib",
        return_array=True,
        quiver_color=(1.0, 0.0, 0.0),
        streamline_color="cyan",
    )
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.shape[0] * 32 == rgb.shape[1] * 24  # aspect kept, enlarged
    assert max(rgb.shape[:2]) >= 512
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    assert red.sum() > 50  # arrows drawn in the quiver colour
    cyan = (rgb[..., 0] < 60) & (rgb[..., 1] > 200) & (rgb[..., 2] > 200)
    assert (cyan.sum() > 50) == streamlines


def test_quiver_matplotlib_figure_and_two_channel_background():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    image = np.random.default_rng(1).random((24, 32, 2))
    fig = quiver_visualization(image, _field(), return_array=False)
    assert isinstance(fig, Figure)


def test_quiver_argument_errors():
    image = np.zeros((24, 32))
    with pytest.raises(ValueError, match="backend must be one of"):
        quiver_visualization(image, _field(), backend="vtk")
    with pytest.raises(ValueError, match=r"image must be \(H, W\)"):
        quiver_visualization(np.zeros((10, 10)), _field())
    with pytest.raises(ValueError, match="quiver_color"):
        quiver_visualization(image, _field(), quiver_color=(1, 2))


@pytest.mark.skipif(not HAS_CV2, reason="OpenCV not installed")
def test_quiver_opencv_backend():
    image = np.random.default_rng(0).random((24, 32))
    rgb = quiver_visualization(
        image, _field(), backend="opencv", show_streamlines=True, quiver_color="red"
    )
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3 and max(rgb.shape[:2]) >= 512
    assert ((rgb[..., 0] > 200) & (rgb[..., 1] < 60)).sum() > 50


def test_quiver_opencv_without_cv2_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2":
            raise ImportError("No module named 'cv2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(ImportError, match="opencv-python-headless"):
        quiver_visualization(np.zeros((24, 32)), _field(), backend="opencv")


# ----------------------------------------------------------------------------- colour mapping


def test_multispectral_mapping_and_get_visualization():
    rng = np.random.default_rng(3)
    one = rng.random((8, 9))
    gray = multispectral_mapping(one)
    assert gray.shape == (8, 9, 3)
    np.testing.assert_allclose(gray[..., 0], gray[..., 1])
    assert gray.min() == 0.0 and gray.max() == 1.0
    two = rng.random((8, 9, 2)) * [1.0, 100.0]
    rgb = multispectral_mapping(two)
    np.testing.assert_allclose(rgb[..., 2], 0.0)  # red / green
    assert rgb[..., 1].max() == 1.0  # each channel on its own range
    five = rng.random((8, 9, 5))
    assert multispectral_mapping(five).shape == (8, 9, 3)
    image = get_visualization(two[..., 0], two[..., 1])
    assert image.dtype == np.uint8 and image.shape == (8, 9, 3)
    np.testing.assert_array_equal(image, get_visualization(two))
    with pytest.raises(ValueError, match="channels must be"):
        get_visualization(np.zeros((8, 9)), np.zeros((8, 8)))
