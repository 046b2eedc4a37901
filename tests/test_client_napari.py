"""The napari-flowreg plugin (a real client, 0.1.0a4 on PyPI) runs unchanged against this package.

Headless (``QT_QPA_PLATFORM=offscreen``): the plugin's own Qt widgets are built and driven
through their controls; "Start" runs the plugin's registration worker (a napari
``thread_worker`` that builds ``OFOptions`` through ``pyflowreg.motion_correction.OF_options``
and calls ``compensate_arr``) and "Visualize" its flow-colour and quiver views (``flow_to_color``
and ``quiver_visualization`` of ``pyflowreg.util.visualization``). The viewer is napari's
``ViewerModel``, the model that ``napari.Viewer`` extends with a Qt window: the widgets use only
the model (layers, ``add_image``, layer events), and the window's OpenGL canvas cannot be created
on an offscreen platform without a GL driver.

The plugin is not a dependency of this package (it depends on the PyFlowReg package of the same
import name, which must not replace this one); the module is skipped when it is absent. Install
it without its dependencies (see ``docs/migrating.md``, "Running the napari-flowreg client
test")::

    pip install --no-deps napari-flowreg==0.1.0a4
    pip install napari PyQt5 qtpy scikit-image opencv-python-headless

Data: ``make_recording(8, (64, 80), 2, max_rigid=3, max_nonrigid=1, snr=10, seed=3)`` (rigid
random walk plus smooth non-rigid motion, mean 1.9 px); the one-channel video is its channel 0.
The reference is given the way a napari user gives one: an external layer whose frames the
plugin averages (the motion-free clean frames), so the estimated flow is the known motion.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import importlib.util
import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage as ndi

# qtpy without a Qt binding raises an ImportError of its own: skip then too. A plugin that is
# installed but fails to import is not skipped.
pytest.importorskip("qtpy", exc_type=ImportError)
pytest.importorskip("napari")
flowreg_widget = pytest.importorskip("napari_flowreg.flowreg_widget")
visualization_widget = pytest.importorskip("napari_flowreg.flow_visualization_widget")

from napari.components import ViewerModel  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

from pyflowreg.datasets import make_recording  # noqa: E402
from pyflowreg.motion_correction import OFOptions, compensate_arr  # noqa: E402
from pyflowreg.util.visualization import flow_to_color, quiver_visualization  # noqa: E402

QUALITIES = ["quality", "balanced", "fast", "custom"]
#: Pixels ignored at each border: motion reveals content there that the reference lacks.
BORDER = 8
#: Stated accuracy bounds (interior pixels; the known motion has mean magnitude 1.9 px).
#: Measured with this recording: mean EPE 0.14-0.23 px, 95th percentile 0.29-0.48 px, and a
#: registered-to-reference RMS error 24-37 % of the raw one, depending on quality and channels.
MAX_MEAN_EPE = 0.35
MAX_P95_EPE = 0.75
MAX_ERROR_RATIO = 0.45
#: Custom settings entered in the widget (iterations differ from every preset).
CUSTOM = {"levels": 100, "iterations": 30, "eta": 0.8}
HAS_CV2 = importlib.util.find_spec("cv2") is not None


@pytest.fixture(scope="module")
def qapp() -> QApplication:
    return QApplication.instance() or QApplication([])


@pytest.fixture(scope="module")
def recording() -> SimpleNamespace:
    rec = make_recording(8, (64, 80), 2, max_rigid=3.0, max_nonrigid=1.0, snr=10, seed=3)
    return SimpleNamespace(
        video={1: rec.video[..., 0], 2: rec.video},
        clean={1: rec.clean[..., 0], 2: rec.clean},
        reference={1: rec.reference[..., 0], 2: rec.reference},
        flow=rec.flow,
    )


@pytest.fixture
def notifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Error notifications of the plugin (it reports failures in the GUI, not by raising)."""
    errors: list[str] = []
    for module in (flowreg_widget, visualization_widget):
        monkeypatch.setattr(module, "show_error", errors.append)
    return errors


def _wait_for(qapp: QApplication, done: Callable[[], bool], timeout: float = 120.0) -> None:
    start = time.monotonic()
    while not done():
        qapp.processEvents()
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"the plugin did not finish within {timeout} s")
        time.sleep(0.005)


def _interior(a: np.ndarray) -> np.ndarray:
    return a[:, BORDER:-BORDER, BORDER:-BORDER]


def _register(
    qapp: QApplication,
    viewer: ViewerModel,
    recording: SimpleNamespace,
    n_channels: int,
    quality: str,
    *,
    multi_channel: bool | None = None,
) -> SimpleNamespace:
    """Register ``rec`` through the plugin's widget, as a user would: pick the layers and the
    quality, tick "Export flow field", press Start, wait for the result layers."""
    viewer.add_image(recording.video[n_channels], name="rec", rgb=False)
    viewer.add_image(recording.clean[n_channels], name="ref", rgb=False)
    widget = flowreg_widget.FlowRegWidget(viewer)
    widget.show()  # showEvent fills the layer lists
    widget.input_combo.setCurrentText("rec")
    widget.ref_method_combo.setCurrentText("External layer")
    widget.ref_layer_combo.setCurrentText("ref")
    widget.quality_combo.setCurrentText(quality)
    if quality == "custom":
        widget.levels_spin.setValue(CUSTOM["levels"])
        widget.iterations_spin.setValue(CUSTOM["iterations"])
        widget.eta_spin.setValue(CUSTOM["eta"])
    widget.multi_channel_check.setChecked(
        n_channels == 2 if multi_channel is None else multi_channel
    )
    widget.export_flow_check.setChecked(True)

    # Watch the plugin's worker (the real one) for errors, warnings and progress.
    run = SimpleNamespace(errors=[], warnings=[], progress=[], widget=widget)
    worker_function = widget._run_motion_correction

    def watched(*args, **kwargs):
        worker = worker_function(*args, **kwargs)
        worker.errored.connect(run.errors.append)
        worker.warned.connect(lambda w: run.warnings.append(str(w[0])))
        return worker

    widget._run_motion_correction = watched
    widget.progress_val.connect(run.progress.append)
    widget.start_button.click()
    _wait_for(qapp, lambda: bool(run.errors) or "rec_corrected" in viewer.layers)
    assert not run.errors, run.errors
    run.registered = viewer.layers["rec_corrected"].data
    run.flow = viewer.layers["rec_flow"].data
    widget.close()
    return run


@pytest.mark.parametrize("n_channels", [1, 2])
@pytest.mark.parametrize("quality", QUALITIES)
def test_registration_worker_registers(qapp, recording, notifications, quality, n_channels):
    viewer = ViewerModel()
    run = _register(qapp, viewer, recording, n_channels, quality)
    assert notifications == []
    video, reference = recording.video[n_channels], recording.reference[n_channels]
    assert run.registered.shape == video.shape
    assert run.registered.dtype == np.float64  # the plugin asks for output_typename="double"
    assert run.flow.shape == (*video.shape[:3], 2)
    assert run.progress and run.progress[-1] == 100

    # The registered video is registered: its error to the motion-free reference is well below
    # the raw video's.
    raw_error = np.sqrt(np.mean(_interior(video.astype(np.float64) - reference) ** 2))
    registered_error = np.sqrt(np.mean(_interior(run.registered - reference) ** 2))
    assert registered_error < MAX_ERROR_RATIO * raw_error, (registered_error, raw_error)
    # ... and the flow is the known motion.
    epe = np.linalg.norm(_interior(run.flow - recording.flow), axis=-1)
    assert epe.mean() < MAX_MEAN_EPE and np.percentile(epe, 95) < MAX_P95_EPE, (
        epe.mean(),
        np.percentile(epe, 95),
    )

    # The plugin always sends two sigma rows; on a one-channel video the first is used and
    # that is said.
    dropped = [w for w in run.warnings if "using the first 1 and dropping the rest" in w]
    assert len(dropped) == (1 if n_channels == 1 else 0), run.warnings

    if quality == "custom":
        # "custom" with levels/iterations/eta and no min_level solves down to level 0.
        options = OFOptions(
            quality_setting="custom",
            min_level=0,
            alpha=1.5,
            sigma=[[1.0, 1.0, 0.1]] * n_channels,
            weight=[0.5, 0.5] if n_channels == 2 else None,
            output_typename="double",
            **CUSTOM,
        )
        plugin_reference = recording.clean[n_channels].mean(axis=0)  # what the plugin passes
        registered, flow = compensate_arr(video, plugin_reference, options)
        np.testing.assert_allclose(run.flow, flow, atol=1e-5)
        np.testing.assert_allclose(run.registered, registered, atol=1e-6)


def test_two_channel_weights_on_one_channel_video(qapp, recording, notifications):
    """ "Multi-channel" ticked on a one-channel video: two weights, two sigma rows; the first
    are used, the rest dropped with a warning, and the video is still registered."""
    viewer = ViewerModel()
    run = _register(qapp, viewer, recording, 1, "fast", multi_channel=True)
    assert notifications == []
    assert any(
        "weight has 2 channel weights" in w and "dropping the rest" in w for w in run.warnings
    )
    epe = np.linalg.norm(_interior(run.flow - recording.flow), axis=-1)
    assert epe.mean() < MAX_MEAN_EPE


def _visualize(qapp, viz, viz_type: str, result: str, viewer: ViewerModel) -> np.ndarray:
    viz.viz_type_combo.setCurrentText(viz_type)
    viz.visualize_button.click()
    _wait_for(qapp, lambda: result in viewer.layers, timeout=60)
    return np.asarray(viewer.layers[result].data)


def _red(image: np.ndarray) -> np.ndarray:
    """Pixels drawn in the arrow colour used below (pure red)."""
    r, g, b = (image[..., k].astype(int) for k in range(3))
    return (r > 200) & (g < 60) & (b < 60)


@pytest.mark.parametrize("n_channels", [1, 2])
def test_flow_visualisation_widget(qapp, recording, notifications, n_channels):
    viewer = ViewerModel()
    run = _register(qapp, viewer, recording, n_channels, "balanced")
    viz = visualization_widget.FlowVisualizationWidget(viewer)
    assert viz.flow_combo.currentText() == "rec_flow"  # the plugin finds the exported flow

    # Flow direction (HSV): flow_to_color(flow, max_flow=largest magnitude) on (T, H, W, 2).
    colors = _visualize(qapp, viz, "Flow Direction (HSV)", "rec_flow_hsv", viewer)
    assert notifications == []
    largest = float(np.linalg.norm(run.flow, axis=-1).max())
    assert colors.shape == (*run.flow.shape[:3], 3) and colors.dtype == np.uint8
    np.testing.assert_array_equal(colors, flow_to_color(run.flow, max_flow=largest))
    # The colours show the known motion: the same colour code of the ground truth differs by
    # a few levels of 255 in the interior.
    truth = flow_to_color(recording.flow, max_flow=largest)
    difference = np.abs(_interior(colors.astype(int) - truth.astype(int)))
    assert difference.mean() < 6, difference.mean()

    # One frame (H, W, 2) goes through the plugin's single-frame path.
    viewer.add_image(run.flow[3], name="frame_flow", rgb=False)
    viz.flow_combo.setCurrentText("frame_flow")
    frame_colors = _visualize(qapp, viz, "Flow Direction (HSV)", "frame_flow_hsv", viewer)
    frame_largest = float(np.linalg.norm(run.flow[3], axis=-1).max())
    np.testing.assert_array_equal(frame_colors, flow_to_color(run.flow[3], max_flow=frame_largest))
    assert notifications == []


@pytest.mark.parametrize(
    "backend",
    [
        "matplotlib",
        pytest.param("opencv", marks=pytest.mark.skipif(not HAS_CV2, reason="needs opencv (cv2)")),
    ],
)
@pytest.mark.parametrize("n_channels", [1, 2])
def test_quiver_visualisation_widget(qapp, recording, notifications, n_channels, backend):
    viewer = ViewerModel()
    run = _register(qapp, viewer, recording, n_channels, "balanced")
    # The quiver background is a one-channel image: for two channels, channel 1 of the registered
    # video as its own layer (the plugin passes a (T, H, W, C) background whole, as one image).
    background = run.registered if n_channels == 1 else run.registered[..., 0]
    viewer.add_image(background, name="background", rgb=False)
    viz = visualization_widget.FlowVisualizationWidget(viewer)
    viz.flow_combo.setCurrentText("rec_flow")
    viz.viz_type_combo.setCurrentText("Quiver Plot")
    viz.secondary_combo.setCurrentText("background")
    viz.backend_combo.setCurrentText(backend)
    viz.show_streamlines_check.setChecked(True)
    viz.quiver_color = (255, 0, 0)
    viz.streamline_color = (0, 0, 255)
    quiver = _visualize(qapp, viz, "Quiver Plot", "rec_flow_quiver", viewer)
    assert notifications == []
    assert quiver.ndim == 4 and quiver.shape[0] == run.flow.shape[0] and quiver.shape[-1] == 3
    assert quiver.dtype == np.uint8

    # Each frame is quiver_visualization(frame background, frame flow, ...) with the widget's
    # settings, and its arrows are those of the known motion: drawn from the ground truth with
    # the same call, the arrow pixels (within 1 px) overlap far more than those drawn from the
    # reversed motion. Measured: 0.44-0.69 against 0.02-0.21.
    settings = {
        "scale": viz.quiver_scale_spin.value(),
        "downsample": viz.quiver_downsample_spin.value(),
        "show_streamlines": True,
        "backend": backend,
        "return_array": True,
        "quiver_color": (255, 0, 0),
        "streamline_color": (0, 0, 255),
    }
    for t in (2, 5):
        arrows = _red(quiver[t])
        assert arrows.sum() > 500  # arrows were drawn
        np.testing.assert_array_equal(
            quiver[t], quiver_visualization(background[t], run.flow[t], **settings)
        )
        truth = _red(quiver_visualization(background[t], recording.flow[t], **settings))
        reversed_ = _red(quiver_visualization(background[t], -recording.flow[t], **settings))
        assert _overlap(arrows, truth) > 0.4 > 0.25 > _overlap(arrows, reversed_)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two pixel masks, each widened by 1 px (anti-aliasing)."""
    a, b = ndi.binary_dilation(a), ndi.binary_dilation(b)
    return float((a & b).sum() / (a | b).sum())
