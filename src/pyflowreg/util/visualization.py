"""Displacement-field visualisation: colour-coded flow and quiver overlays.

:func:`flow_to_color` maps a field to colours with the Middlebury colour wheel (Baker et
al., "A Database and Evaluation Methodology for Optical Flow", IJCV 2011): the hue is the
direction of the displacement, the saturation its length relative to ``max_flow``.
:func:`quiver_visualization` draws arrows (and optionally streamlines) of a field over
its image, with matplotlib (``pip install "pyflowreg[plot]"``) or OpenCV (``cv2``).

Fields follow the package's convention: ``w[..., 0] = u`` along x (columns, to the
right), ``w[..., 1] = v`` along y (rows, downwards), in pixels.

>>> import numpy as np
>>> w = np.zeros((4, 4, 2), np.float32)
>>> w[..., 0] = 1.0  # everything moves to the right
>>> rgb = flow_to_color(w, max_flow=1.0)
>>> rgb.shape, rgb.dtype
((4, 4, 3), dtype('uint8'))
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "flow_to_color",
    "get_visualization",
    "make_color_wheel",
    "multispectral_mapping",
    "quiver_visualization",
]

#: Hue segments of the Middlebury wheel: red-yellow, yellow-green, green-cyan,
#: cyan-blue, blue-magenta, magenta-red (number of steps in each).
_WHEEL_SEGMENTS = (15, 6, 4, 11, 13, 6)
#: Longest side, in px, that :func:`quiver_visualization` renders at least (small frames
#: are drawn enlarged so that arrows stay visible).
MIN_RENDER_SIZE = 512
_NAMED_COLORS = {
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 0.5, 0.0),
    "lime": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "orange": (1.0, 0.647, 0.0),
}


def make_color_wheel() -> np.ndarray:
    """The Middlebury colour wheel, ``(55, 3)`` float64 RGB in [0, 1], red first."""
    rows = []
    ramps = [
        ((1, 0, 0), (1, 1, 0)),  # red -> yellow
        ((1, 1, 0), (0, 1, 0)),  # yellow -> green
        ((0, 1, 0), (0, 1, 1)),  # green -> cyan
        ((0, 1, 1), (0, 0, 1)),  # cyan -> blue
        ((0, 0, 1), (1, 0, 1)),  # blue -> magenta
        ((1, 0, 1), (1, 0, 0)),  # magenta -> red
    ]
    for n, (start, stop) in zip(_WHEEL_SEGMENTS, ramps, strict=True):
        t = np.arange(n)[:, None] / n
        rows.append((1 - t) * np.array(start, float) + t * np.array(stop, float))
    return np.concatenate(rows)


def _as_field(flow: Any) -> np.ndarray:
    w = np.asarray(flow)
    if w.ndim not in (3, 4) or w.shape[-1] != 2:
        raise ValueError(f"flow must be (H, W, 2) or (T, H, W, 2), got shape {w.shape}")
    if w.dtype.kind not in "uif":
        raise TypeError(f"flow must be real numbers, got dtype {w.dtype}")
    return w.astype(np.float64, copy=False)


def flow_to_color(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """Colour-code displacement fields (Middlebury colour wheel).

    Parameters
    ----------
    flow : ndarray, shape (H, W, 2) or (T, H, W, 2)
        ``u`` (x) and ``v`` (y) in pixels. NaN or inf entries are drawn black.
    max_flow : float, optional
        Length that gets full saturation; longer vectors are drawn darker (x 0.75).
        ``None``: the longest finite vector of the whole input (one scale for all the
        frames of a ``(T, H, W, 2)`` input, so colours compare across frames).

    Returns
    -------
    ndarray, uint8, shape (H, W, 3) or (T, H, W, 3)
        RGB. Zero displacement is white; the hue gives the direction (right: red,
        down: yellow-green ... by the wheel), the saturation the length.
    """
    w = _as_field(flow)
    if max_flow is not None and not (np.isfinite(max_flow) and max_flow > 0):
        raise ValueError(f"max_flow must be a finite number > 0, got {max_flow}")
    u, v = w[..., 0], w[..., 1]
    bad = ~(np.isfinite(u) & np.isfinite(v))
    u, v = np.where(bad, 0.0, u), np.where(bad, 0.0, v)
    radius = np.hypot(u, v)
    if max_flow is None:
        max_flow = float(radius.max()) if radius.size else 0.0
    max_flow = max(float(max_flow), np.finfo(np.float64).eps)
    wheel = make_color_wheel()
    n_colors = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    position = (angle + 1.0) / 2.0 * (n_colors - 1)
    k0 = np.floor(position).astype(np.int64)
    k1 = (k0 + 1) % n_colors
    frac = (position - k0)[..., None]
    color = (1.0 - frac) * wheel[k0] + frac * wheel[k1]
    r = (radius / max_flow)[..., None]
    inside = r <= 1.0
    color = np.where(inside, 1.0 - r * (1.0 - color), color * 0.75)
    color[bad] = 0.0
    return np.floor(255.0 * np.clip(color, 0.0, 1.0)).astype(np.uint8)


# ----------------------------------------------------------------------------- quiver


def _rgb(color: Any, name: str) -> tuple[float, float, float]:
    """A colour as RGB floats in [0, 1]: a name, ``"#rrggbb"``, or 3 numbers (0-1 or 0-255)."""
    if isinstance(color, str):
        key = color.lower()
        if key in _NAMED_COLORS:
            return _NAMED_COLORS[key]
        if key.startswith("#") and len(key) == 7:
            return tuple(int(key[i : i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]
        try:
            from matplotlib.colors import to_rgb
        except ImportError:
            raise ValueError(
                f"{name} {color!r} is not a known colour name (use one of "
                f"{sorted(_NAMED_COLORS)}, '#rrggbb' or an (r, g, b) tuple)"
            ) from None
        try:
            return tuple(float(c) for c in to_rgb(color))  # type: ignore[return-value]
        except ValueError:
            raise ValueError(f"{name} {color!r} is not a colour") from None
    values = np.asarray(color, dtype=np.float64).ravel()
    if values.size not in (3, 4) or not np.all(np.isfinite(values)) or values.min() < 0:
        raise ValueError(f"{name} must be a colour name or (r, g, b), got {color!r}")
    values = values[:3]
    if values.max() > 1.0:
        if values.max() > 255:
            raise ValueError(f"{name} values must be in [0, 1] or [0, 255], got {color!r}")
        values = values / 255.0
    return tuple(float(c) for c in values)  # type: ignore[return-value]


def _scaled_channels(img: np.ndarray) -> np.ndarray:
    """Each channel of ``(H, W, C)`` scaled to [0, 1] by its own finite min/max (NaN: 0)."""
    img = np.where(np.isfinite(img), img, np.nan)
    if not np.isfinite(img).any():
        return np.zeros(img.shape)
    low = np.nanmin(img, axis=(0, 1))
    high = np.nanmax(img, axis=(0, 1))
    low, high = np.nan_to_num(low), np.nan_to_num(high)
    return np.nan_to_num((img - low) / np.where(high > low, high - low, 1.0))


def multispectral_mapping(image: np.ndarray) -> np.ndarray:
    """Colour image ``(H, W, 3)`` float64 in [0, 1] of a one- or multi-channel frame.

    Each channel is scaled to its own range. One channel: gray; two: red (channel 0) and
    green (channel 1); three: RGB; more: the first three principal components of the
    channels (an SVD over the pixels; no extra dependency), each scaled to [0, 1].

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    """
    img = np.asarray(image)
    if img.dtype.kind not in "uifb":
        raise TypeError(f"image must be numeric, got dtype {img.dtype}")
    img = img.astype(np.float64)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or 0 in img.shape:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {np.shape(image)}")
    scaled = _scaled_channels(img)
    h, w, c = scaled.shape
    if c == 1:
        return np.repeat(scaled, 3, axis=2)
    if c == 2:
        return np.concatenate([scaled, np.zeros((h, w, 1))], axis=2)
    if c == 3:
        return scaled
    pixels = scaled.reshape(-1, c)
    centred = pixels - pixels.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = centred @ vt[:3].T
    return _scaled_channels(components.reshape(h, w, 3))


def get_visualization(*channels: np.ndarray) -> np.ndarray:
    """RGB ``uint8`` image of a frame: ``get_visualization(image)`` with ``image``
    ``(H, W)`` / ``(H, W, C)``, or ``get_visualization(ch1, ch2, ...)`` with ``(H, W)``
    channels (see :func:`multispectral_mapping` for the colours).

    Returns
    -------
    ndarray, uint8, shape (H, W, 3)
    """
    if not channels:
        raise TypeError("get_visualization() needs an image or its channels")
    if len(channels) == 1:
        image = np.asarray(channels[0])
    else:
        arrays = [np.asarray(ch) for ch in channels]
        if any(a.ndim != 2 or a.shape != arrays[0].shape for a in arrays):
            raise ValueError(
                f"channels must be (H, W) arrays of one shape, got {[a.shape for a in arrays]}"
            )
        image = np.stack(arrays, axis=-1)
    return np.round(255.0 * multispectral_mapping(image)).astype(np.uint8)


def _display_image(image: Any, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` float RGB in [0, 1] of a background (see :func:`multispectral_mapping`)."""
    if np.ndim(image) not in (2, 3) or np.shape(image)[:2] != shape:
        raise ValueError(
            f"image must be (H, W) or (H, W, C) with (H, W) = {shape} (the field's), "
            f"got shape {np.shape(image)}"
        )
    return multispectral_mapping(image)


def _grid_step(downsample: float, shape: tuple[int, int]) -> int:
    if isinstance(downsample, bool) or not isinstance(downsample, (int, float, np.number)):
        raise TypeError(f"downsample must be a number, got {type(downsample).__name__}")
    if not (np.isfinite(downsample) and downsample > 0):
        raise ValueError(f"downsample must be > 0, got {downsample}")
    if downsample < 1:  # a fraction of the longer side
        return max(1, round(downsample * max(shape)))
    return round(downsample)


def _bilinear(field: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    h, w = field.shape[:2]
    y = np.clip(y, 0, h - 1)
    x = np.clip(x, 0, w - 1)
    y0 = np.minimum(np.floor(y).astype(int), h - 2 if h > 1 else 0)
    x0 = np.minimum(np.floor(x).astype(int), w - 2 if w > 1 else 0)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (y - y0)[:, None], (x - x0)[:, None]
    top = (1 - fx) * field[y0, x0] + fx * field[y0, x1]
    bottom = (1 - fx) * field[y1, x0] + fx * field[y1, x1]
    return (1 - fy) * top + fy * bottom


def _streamlines(w: np.ndarray, step: int, n_steps: int = 40) -> list[np.ndarray]:
    """Polylines ``(n, 2)`` (x, y) traced along ``w`` from a grid of seeds (both ways)."""
    h, wd = w.shape[:2]
    speed = np.hypot(w[..., 0], w[..., 1])
    top = float(speed.max())
    if top == 0:
        return []
    ys, xs = np.mgrid[step // 2 : h : 2 * step, step // 2 : wd : 2 * step]
    lines = []
    for direction in (1.0, -1.0):
        y, x = ys.ravel().astype(float), xs.ravel().astype(float)
        alive = np.ones(len(x), bool)
        path = [np.stack([x, y], axis=1)]
        for _ in range(n_steps):
            uv = _bilinear(w, y, x)
            norm = np.hypot(uv[:, 0], uv[:, 1])
            # steps of half a pixel along the field; a line ends where the field vanishes
            # or where it leaves the frame
            scale = 0.5 * direction / np.maximum(norm, 1e-12) * (norm > 1e-3 * top)
            nx, ny = x + uv[:, 0] * scale, y + uv[:, 1] * scale
            alive &= (nx >= 0) & (nx <= wd - 1) & (ny >= 0) & (ny <= h - 1)
            x, y = np.where(alive, nx, x), np.where(alive, ny, y)
            path.append(np.stack([x, y], axis=1))
        traces = np.stack(path, axis=1)  # (seeds, n_steps + 1, 2)
        lines.extend(t if direction > 0 else t[::-1] for t in traces)
    return [line for line in lines if np.ptp(line, axis=0).max() > 0.5]


def quiver_visualization(
    img: np.ndarray,
    w: np.ndarray,
    scale: float = 1.0,
    downsample: float = 0.05,
    show_streamlines: bool = False,
    backend: str = "matplotlib",
    return_array: bool = True,
    quiver_color: Any = (1.0, 1.0, 1.0),
    streamline_color: Any = (0.0, 1.0, 1.0),
    title: str | None = None,
):
    """Arrows (and streamlines) of a displacement field drawn over its image.

    Parameters
    ----------
    img : ndarray, shape (H, W) or (H, W, C)
        Background; each channel is scaled to its own range (one channel gray, two
        red/green, three RGB, more: :func:`multispectral_mapping`).
    w : ndarray, shape (H, W, 2)
        ``u`` (x) and ``v`` (y) in pixels.
    scale : float, default 1.0
        Arrow length per pixel of displacement (1: an arrow is as long as the
        displacement, in image pixels).
    downsample : float, default 0.05
        Spacing of the arrows: a fraction of the longer image side when < 1, else pixels.
    show_streamlines : bool, default False
        Also trace the field's streamlines.
    backend : {"matplotlib", "opencv"}
        Renderer; ``"opencv"`` needs ``cv2`` (``pip install opencv-python-headless``),
        ``"matplotlib"`` needs ``pip install "pyflowreg[plot]"``.
    return_array : bool, default True
        Return the rendered RGB image. ``False``: matplotlib returns its ``Figure``
        (for ``plt.show()``); OpenCV always returns the array.
    quiver_color, streamline_color : colour
        A name (``"white"``, ...), ``"#rrggbb"``, or ``(r, g, b)`` in [0, 1] or [0, 255].
    title : str, optional
        Figure title (matplotlib only).

    Returns
    -------
    ndarray, uint8, shape (k H, k W, 3), or matplotlib Figure
        RGB, the image enlarged by an integer ``k`` so that its longer side is at least
        ``MIN_RENDER_SIZE`` px (arrows stay visible on small frames).
    """
    field = _as_field(w)
    if field.ndim != 3:
        raise ValueError(f"w must be one field (H, W, 2), got shape {field.shape}")
    shape = field.shape[:2]
    background = _display_image(img, shape)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    step = _grid_step(downsample, shape)
    quiver_rgb = _rgb(quiver_color, "quiver_color")
    stream_rgb = _rgb(streamline_color, "streamline_color")
    field = np.nan_to_num(field)
    zoom = max(1, math.ceil(MIN_RENDER_SIZE / max(shape)))
    if backend == "opencv":
        return _quiver_opencv(
            background, field, scale, step, show_streamlines, quiver_rgb, stream_rgb, zoom
        )
    if backend != "matplotlib":
        raise ValueError(f"backend must be one of ['matplotlib', 'opencv'], got {backend!r}")
    return _quiver_matplotlib(
        background,
        field,
        scale,
        step,
        show_streamlines,
        quiver_rgb,
        stream_rgb,
        zoom,
        return_array,
        title,
    )


def _grid(shape: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[step // 2 : shape[0] : step, step // 2 : shape[1] : step]


def _quiver_matplotlib(
    background, field, scale, step, streamlines, quiver_rgb, stream_rgb, zoom, as_array, title
):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            'quiver_visualization(backend="matplotlib") needs matplotlib: '
            'pip install "pyflowreg[plot]"'
        ) from None
    h, w = field.shape[:2]
    dpi = 100
    fig = Figure(figsize=(w * zoom / dpi, h * zoom / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(background, interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    if streamlines:
        for line in _streamlines(field, step):
            ax.plot(line[:, 0], line[:, 1], color=stream_rgb, linewidth=1.0, alpha=0.8)
    ys, xs = _grid((h, w), step)
    ax.quiver(
        xs,
        ys,
        field[ys, xs, 0],
        field[ys, xs, 1],
        color=quiver_rgb,
        angles="xy",
        scale_units="xy",
        scale=1.0 / scale,
        width=0.003,
    )
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)  # rows downwards, as the image
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    if not as_array:
        return fig
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3])


def _quiver_opencv(background, field, scale, step, streamlines, quiver_rgb, stream_rgb, zoom):
    try:
        import cv2
    except ImportError:
        raise ImportError(
            'quiver_visualization(backend="opencv") needs OpenCV: '
            "pip install opencv-python-headless (or use backend='matplotlib')"
        ) from None
    h, w = field.shape[:2]
    canvas = np.ascontiguousarray(
        np.repeat(np.repeat((background * 255).astype(np.uint8), zoom, 0), zoom, 1)
    )

    def px(x: float, y: float) -> tuple[int, int]:  # image coordinates -> canvas pixel
        return round((x + 0.5) * zoom - 0.5), round((y + 0.5) * zoom - 0.5)

    # the canvas is RGB: OpenCV colours are taken in the canvas's channel order
    arrow = tuple(round(255 * c) for c in quiver_rgb)
    stream = tuple(round(255 * c) for c in stream_rgb)
    if streamlines:
        for line in _streamlines(field, step):
            points = np.array([px(x, y) for x, y in line], np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [points], False, stream, 1, cv2.LINE_AA)
    ys, xs = _grid((h, w), step)
    for y, x in zip(ys.ravel(), xs.ravel(), strict=True):
        u, v = field[y, x] * scale
        start, end = px(x, y), px(x + u, y + v)
        if start == end:
            continue
        cv2.arrowedLine(canvas, start, end, arrow, 1, cv2.LINE_AA, tipLength=0.3)
    return canvas
