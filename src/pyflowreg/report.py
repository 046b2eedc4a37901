"""Quality-control report of a finished registration run.

:func:`make_report` reads what :func:`pyflowreg.motion_correction.compensate_recording`
left in its output folder (``run.json``, ``options.json``, ``statistics.npz``, the
registered video, the optional displacement fields ``w``) and writes
``OUTDIR/report/report.html``: one self-contained page (figures embedded) plus the
same figures as PNG files next to it.

Needs matplotlib (``pip install "pyflowreg[plot]"``)::

    from pyflowreg.report import make_report
    make_report("results/")          # -> results/report/report.html
"""

from __future__ import annotations

import base64
import html
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: At most this many frames are read (evenly spaced) for mean images and maps.
MAX_SAMPLED_FRAMES = 500

_PLOT_HINT = 'the quality report needs matplotlib: pip install "pyflowreg[plot]"'
_IMAGE_CMAP = "gray"  # perceptually linear lightness for intensities
_FIELD_CMAP = "viridis"  # perceptually uniform, colour-blind safe, for magnitudes


@dataclass
class _Figure:
    filename: str
    title: str
    caption: str
    png: bytes


@dataclass
class _Run:
    """Everything a report reads from one output folder."""

    folder: Path
    run: dict[str, Any]
    options: dict[str, Any]
    statistics: dict[str, np.ndarray]
    compensated: Path | None
    w: Path | None
    notes: list[str] = field(default_factory=list)


def make_report(output_dir: str | Path, *, input_video: Any = None) -> Path:
    """Write the quality report of the run in ``output_dir``.

    Parameters
    ----------
    output_dir : str or Path
        Output folder of a finished :func:`~pyflowreg.motion_correction.compensate_recording`
        run (holds ``statistics.npz`` and ``run.json``).
    input_video : str, Path, array_like or reader, optional
        The uncorrected recording ``(T, H, W[, C])`` for the "before" mean image. Default:
        ``input_file`` from ``options.json`` when it is a path. Without it the "before" image
        is left out (with a note in the report).

    Returns
    -------
    Path
        ``output_dir/report/report.html``. The figures are embedded in it and also written as
        PNG files in ``output_dir/report/``.

    Raises
    ------
    ImportError
        matplotlib is not installed (install the ``plot`` extra).
    FileNotFoundError
        ``output_dir`` is not the output folder of a finished run.
    """
    plt = _import_pyplot()
    run = _load_run(Path(output_dir))
    report_dir = run.folder / "report"
    report_dir.mkdir(exist_ok=True)

    source, reader_kwargs = _input_source(run, input_video)
    before = _mean_image(source, run, "uncorrected recording", **reader_kwargs)
    after = _mean_image(run.compensated, run, "registered video")
    crisp = _crispness_rows(before, after)

    figures: list[_Figure] = []
    if before is not None or after is not None:
        figures.append(_figure_mean_images(plt, before, after))
    if "translation" in run.statistics or "max_displacement" in run.statistics:
        figures.append(_figure_displacement_traces(plt, run.statistics))
    fields = _field_summary(run)
    if fields is not None:
        figures.append(_figure_magnitude_map(plt, fields.magnitude))
        figures.append(_figure_flow_colors(plt, fields))
        figures.append(_figure_quiver(plt, fields, after))
    if "correlation" in run.statistics:
        figures.append(_figure_correlation(plt, run.statistics))

    for fig in figures:
        (report_dir / fig.filename).write_bytes(fig.png)
    page = _render_html(run, figures, _summary_rows(run, crisp), *_run_rows(run))
    path = report_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- loading


def _import_pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(_PLOT_HINT) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _load_run(folder: Path) -> _Run:
    stats_path = folder / "statistics.npz"
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder not found: {folder}")
    if not stats_path.is_file():
        why = (
            "the run had save_meta_info=False"
            if (folder / "run.json").is_file()
            else "no statistics.npz in it"
        )
        raise FileNotFoundError(f"{folder} is not the output folder of a finished run ({why})")
    with np.load(stats_path) as data:
        statistics = {name: np.asarray(data[name]) for name in data.files}
    run = _read_json(folder / "run.json")
    options = _read_json(folder / "options.json")
    name = options.get("output_file_name")
    compensated = folder / name if name else _find_output(folder, "compensated")
    return _Run(
        folder=folder,
        run=run,
        options=options,
        statistics=statistics,
        compensated=compensated if compensated is not None and compensated.exists() else None,
        w=_find_output(folder, "w"),
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _find_output(folder: Path, stem: str) -> Path | None:
    matches = sorted(folder.glob(f"{stem}.*"))
    return matches[0] if matches else None


def _input_source(run: _Run, input_video: Any) -> tuple[Any, dict[str, Any]]:
    """The uncorrected recording (path(s), array or reader) and its reader options."""
    if input_video is not None:
        return input_video, {}
    source = run.options.get("input_file")
    dataset = run.options.get("dataset_name")
    kwargs = {} if dataset is None else {"dataset_name": dataset}
    paths = [source] if isinstance(source, str) else source
    if isinstance(paths, list) and paths and all(isinstance(p, str) for p in paths):
        missing = [p for p in paths if not Path(p).exists()]
        if not missing:
            return (Path(paths[0]) if len(paths) == 1 else [Path(p) for p in paths]), kwargs
        run.notes.append(f"Input file {', '.join(missing)} not found: no 'before' mean image.")
    else:
        run.notes.append("The input was not a file: no 'before' mean image.")
    return None, {}


def _sample_indices(n_frames: int, limit: int = MAX_SAMPLED_FRAMES) -> np.ndarray:
    """At most ``limit`` evenly spaced frame indices in ``[0, n_frames)``."""
    if n_frames <= limit:
        return np.arange(n_frames)
    return np.unique(np.linspace(0, n_frames - 1, limit).round().astype(np.int64))


def _iter_sampled(source: Any, **reader_kwargs: Any):
    """Yield sampled frames ``(H, W, C)`` float64 of path(s), an array or a reader."""
    from .io import open_reader

    if isinstance(source, (str, Path, list)):
        with open_reader(source, **reader_kwargs) as reader:
            yield from _iter_sampled(reader)
        return
    if hasattr(source, "read") and hasattr(source, "shape"):
        n = int(source.shape[0])
        indices = _sample_indices(n)
        if len(indices) == n:  # contiguous: read in blocks
            for start in range(0, n, 64):
                block = np.asarray(source.read(start, min(n, start + 64)), dtype=np.float64)
                yield from block
        else:
            for i in indices:
                yield np.asarray(source.read(int(i), int(i) + 1), dtype=np.float64)[0]
        return
    video = np.asarray(source)
    if video.ndim == 3:
        video = video[..., None]
    if video.ndim != 4:
        raise ValueError(f"input_video must be (T, H, W) or (T, H, W, C), got shape {video.shape}")
    for i in _sample_indices(video.shape[0]):
        yield np.asarray(video[i], dtype=np.float64)


def _mean_image(source: Any, run: _Run, what: str, **reader_kwargs: Any) -> np.ndarray | None:
    """Mean ``(H, W, C)`` over at most MAX_SAMPLED_FRAMES frames, or None (with a note)."""
    if source is None:
        if what == "registered video":
            run.notes.append("No registered video in the output folder: no 'after' image.")
        return None
    total, count = None, 0
    for frame in _iter_sampled(source, **reader_kwargs):
        total = frame.copy() if total is None else total + frame
        count += 1
    if total is None:
        run.notes.append(f"The {what} has no frames.")
        return None
    return total / count


@dataclass
class _Fields:
    """Summary of the (sampled) displacement fields: mean ``|w|`` ``(H, W)``, mean field and
    the field of the sampled frame that moved most on average, ``(H, W, 2)`` each."""

    magnitude: np.ndarray
    mean: np.ndarray
    peak: np.ndarray
    peak_sample: int


def _field_summary(run: _Run) -> _Fields | None:
    """One pass over the sampled fields; None when w was not saved."""
    if run.w is None:
        run.notes.append(
            "Displacement fields were not saved (save_w=False): no map of the displacement. "
            "Run again with save_w=True (CLI: --save-w) to get it."
        )
        return None
    total = total_w = peak = None
    count, peak_value, peak_sample = 0, -1.0, 0
    for w in _iter_sampled(run.w):
        magnitude = np.hypot(w[..., 0], w[..., 1])
        total = magnitude if total is None else total + magnitude
        total_w = w[..., :2].copy() if total_w is None else total_w + w[..., :2]
        if float(magnitude.mean()) > peak_value:
            peak_value, peak, peak_sample = float(magnitude.mean()), w[..., :2].copy(), count
        count += 1
    if total is None:
        return None
    return _Fields(total / count, total_w / count, peak, peak_sample)


# ----------------------------------------------------------------------------- numbers


def _crispness_rows(before: np.ndarray | None, after: np.ndarray | None) -> list[tuple[str, str]]:
    """Crispness (gradient norm) of the mean images per channel; higher is sharper."""
    from .metrics import crispness

    values = {}
    for label, image in (("before", before), ("after", after)):
        if image is not None:
            values[label] = [float(crispness(image[..., c])) for c in range(image.shape[-1])]
    rows = [
        (f"Crispness of the mean image, {label} (higher = sharper)", _join(v, "{:.4g}"))
        for label, v in values.items()
    ]
    if len(values) == 2 and all(b > 0 for b in values["before"]):
        gains = [a / b for a, b in zip(values["after"], values["before"], strict=True)]
        rows.append(("Crispness gain, after / before", _join(gains, "{:.2f}x")))
    return rows


def _join(values, fmt: str) -> str:
    return ", ".join(fmt.format(v) for v in values)


def _summary_rows(run: _Run, crisp: list[tuple[str, str]]) -> list[tuple[str, str]]:
    s = run.statistics
    rows: list[tuple[str, str]] = []
    n = run.run.get("frames", len(s.get("correlation", [])))
    rows.append(("Frames", str(n)))
    if "mean_displacement" in s:
        mean = np.nanmean(s["mean_displacement"])
        rows.append(("Mean displacement (average over frames)", f"{mean:.3f} px"))
    if "max_displacement" in s:
        largest = np.nanmax(s["max_displacement"])
        rows.append(("Largest displacement (any frame, any pixel)", f"{largest:.3f} px"))
    if "correlation_before" in s:
        rows.append(("Correlation with the reference, before", _stat(s["correlation_before"])))
    if "correlation" in s:
        rows.append(("Correlation with the reference, after", _stat(s["correlation"])))
    rows.extend(crisp)
    return rows


def _stat(values: np.ndarray) -> str:
    return f"mean {np.mean(values):.4f} (min {np.min(values):.4f})"


#: Options shown in the run table; the others are listed under "all options".
_KEY_OPTIONS = (
    "input_file",
    "output_path",
    "output_format",
    "quality_setting",
    "flow_backend",
    "backend_params",
    "buffer_size",
    "reference_frames",
    "alpha",
    "sigma",
    "save_w",
)


def _run_rows(run: _Run) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Rows of the run table (timings, versions, key options) and of all other options."""
    r, rows = run.run, []
    if "seconds" in r:
        rows.append(("Run time", f"{float(r['seconds']):.2f} s"))
    if r.get("frames_per_second"):
        rows.append(("Speed", f"{float(r['frames_per_second']):.1f} frames/s"))
    for key, label in (
        ("executor", "Executor"),
        ("n_workers", "Workers"),
        ("start_time", "Started"),
        ("end_time", "Finished"),
    ):
        if key in r:
            rows.append((label, str(r[key])))
    versions = r.get("versions") or {}
    if versions:
        rows.append(("Versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    else:
        rows.append(("Python", platform.python_version()))
    rows += [
        (key, _option_text(key, run.options[key])) for key in _KEY_OPTIONS if key in run.options
    ]
    others = [(k, _option_text(k, v)) for k, v in run.options.items() if k not in _KEY_OPTIONS]
    return rows, others


def _option_text(key: str, value: Any) -> str:
    if key == "reference_frames" and isinstance(value, dict) and "stop" in value:
        start, stop, step = value.get("start", 0), value["stop"], value.get("step", 1)
        text = f"frames {start} to {stop - 1}" + (f" every {step}" if step != 1 else "")
        return text + " (clipped to the recording)"
    return _short(value)


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------- figures


def _png(plt, fig) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _figure_mean_images(plt, before: np.ndarray | None, after: np.ndarray | None) -> _Figure:
    shown = [
        (label, img) for label, img in (("before", before), ("after", after)) if img is not None
    ]
    n_channels = min(3, shown[0][1].shape[-1])
    stack = np.concatenate([img[..., :n_channels].ravel() for _, img in shown])
    fig, axes = plt.subplots(
        n_channels, len(shown), figsize=(4.2 * len(shown), 4.0 * n_channels), squeeze=False
    )
    for c in range(n_channels):
        channel_values = np.concatenate([img[..., c].ravel() for _, img in shown])
        vmin, vmax = np.percentile(channel_values if channel_values.size else stack, [0.5, 99.8])
        for j, (label, img) in enumerate(shown):
            ax = axes[c, j]
            ax.imshow(img[..., c], cmap=_IMAGE_CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
            title = f"Mean image {label} correction"
            ax.set_title(title + (f" (channel {c + 1})" if n_channels > 1 else ""))
            ax.set_xlabel("x (px)")
            ax.set_ylabel("y (px)")
    fig.tight_layout()
    return _Figure(
        "mean_images.png",
        "Average image before and after motion correction",
        "Averaging the video blurs structures that move. After correction the average should "
        "look sharper: cell outlines and processes crisp instead of smeared. Both images use "
        "the same grey scale.",
        _png(plt, fig),
    )


def _figure_displacement_traces(plt, stats: dict[str, np.ndarray]) -> _Figure:
    fig, ax = plt.subplots(figsize=(9, 3.6))
    if "translation" in stats:
        t = np.asarray(stats["translation"])
        frames = np.arange(len(t))
        ax.plot(frames, t[:, 0], lw=1.0, color="#0072B2", label="mean shift along x (u)")
        ax.plot(frames, t[:, 1], lw=1.0, color="#D55E00", label="mean shift along y (v)")
    if "max_displacement" in stats:
        m = np.asarray(stats["max_displacement"])
        ax.plot(
            np.arange(len(m)),
            m,
            lw=1.0,
            color="0.35",
            ls="--",
            label="largest displacement in the frame",
        )
    ax.axhline(0.0, color="0.7", lw=0.6)
    ax.set_xlabel("frame")
    ax.set_ylabel("displacement (px)")
    ax.set_title("Motion over time: how far each frame was moved back")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=9, frameon=False, ncol=3)
    ax.margins(x=0)
    fig.tight_layout()
    return _Figure(
        "displacement.png",
        "Displacement over time",
        "The solid lines are the average shift of each frame against the reference, in x and y; "
        "the dashed line is the largest displacement anywhere in the frame. Slow drifts, "
        "breathing or heartbeat rhythms and sudden jumps show up here.",
        _png(plt, fig),
    )


def _figure_magnitude_map(plt, magnitude: np.ndarray) -> _Figure:
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    im = ax.imshow(magnitude, cmap=_FIELD_CMAP, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("mean displacement (px)")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.set_title("Where the tissue moved most")
    fig.tight_layout()
    return _Figure(
        "displacement_map.png",
        "Map of the average displacement",
        "Average length of the displacement vector at each pixel over the recording. A uniform "
        "map means the whole field of view moved together; gradients reveal non-rigid motion "
        "(e.g. stretching) that a rigid correction would miss.",
        _png(plt, fig),
    )


def _figure_flow_colors(plt, fields: _Fields) -> _Figure:
    from .util.visualization import flow_to_color

    both = np.stack([fields.mean, fields.peak])
    max_flow = max(float(np.hypot(both[..., 0], both[..., 1]).max()), 1e-6)
    colors = flow_to_color(both, max_flow=max_flow)  # one scale for both panels
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 4.0), width_ratios=[1, 1, 0.55])
    for ax, image, title in zip(
        axes[:2], colors, ("Average displacement field", "Frame that moved most"), strict=True
    ):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    n = 101
    grid = np.linspace(-max_flow, max_flow, n)
    key = np.stack(np.meshgrid(grid, grid), axis=-1)  # u along x, v along y (downwards)
    axes[2].imshow(
        flow_to_color(key, max_flow=max_flow),
        extent=(-max_flow, max_flow, max_flow, -max_flow),
        interpolation="nearest",
    )
    axes[2].set_title("Colour key")
    axes[2].set_xlabel("u (px)")
    axes[2].set_ylabel("v (px)")
    fig.tight_layout()
    return _Figure(
        "flow_colors.png",
        "Direction and size of the displacement",
        "Displacement fields colour-coded (Middlebury colour wheel): the hue is the direction "
        "in which the frame content was found relative to the reference, the saturation the "
        f"length (full colour at {max_flow:.2f} px, white: no displacement). Left: the "
        "average over the recording; middle: the sampled frame with the largest average "
        "displacement. A single colour across the field of view is a rigid shift; "
        "changing colours are non-rigid motion.",
        _png(plt, fig),
    )


def _figure_quiver(plt, fields: _Fields, after: np.ndarray | None) -> _Figure:
    from .util.visualization import quiver_visualization

    h, w = fields.peak.shape[:2]
    background = after if after is not None else np.hypot(fields.peak[..., 0], fields.peak[..., 1])
    if background.ndim == 3 and background.shape[2] > 3:
        background = background[..., :3]
    longest = float(np.hypot(fields.peak[..., 0], fields.peak[..., 1]).max())
    spacing = max(1, round(max(h, w) / 12))
    scale = 0.8 * spacing / longest if longest > 0 else 1.0  # the longest arrow: 0.8 spacings
    rgb = quiver_visualization(
        background,
        fields.peak,
        scale=scale,
        downsample=spacing,
        show_streamlines=True,
        backend="matplotlib",
        return_array=True,
        quiver_color=(1.0, 0.85, 0.0),
        streamline_color=(0.0, 0.8, 1.0),
    )
    fig, ax = plt.subplots(figsize=(5.6, 5.6 * h / w + 0.4))
    ax.imshow(rgb, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="lanczos")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.set_title("Displacement of the frame that moved most")
    fig.tight_layout()
    what = "the mean registered image" if after is not None else "the displacement length"
    return _Figure(
        "quiver.png",
        "Displacement arrows",
        f"Arrows (yellow) and streamlines (blue) of the displacement field of the sampled "
        f"frame with the largest average displacement, over {what}. Arrows are drawn "
        f"{scale:.2g} times the displacement (the longest is {longest:.2f} px).",
        _png(plt, fig),
    )


def _figure_correlation(plt, stats: dict[str, np.ndarray]) -> _Figure:
    fig, ax = plt.subplots(figsize=(9, 3.6))
    if "correlation_before" in stats:
        before = np.asarray(stats["correlation_before"])
        ax.plot(np.arange(len(before)), before, lw=1.0, color="#D55E00", label="before correction")
    after = np.asarray(stats["correlation"])
    ax.plot(np.arange(len(after)), after, lw=1.0, color="#009E73", label="after correction")
    ax.set_xlabel("frame")
    ax.set_ylabel("correlation with reference")
    ax.set_title("Similarity of every frame to the reference image")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=9, frameon=False, ncol=2)
    ax.margins(x=0)
    fig.tight_layout()
    return _Figure(
        "correlation.png",
        "Frame-to-reference correlation",
        "Pearson correlation of each frame with the reference (1 = identical). Motion lowers "
        "it; after correction the curve should be higher and flatter. Remaining dips are "
        "usually activity, bleaching or out-of-plane motion, which 2-D registration cannot undo.",
        _png(plt, fig),
    )


# ----------------------------------------------------------------------------- HTML


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
td { border-bottom: 1px solid #ddd; padding: 3px 12px 3px 0; vertical-align: top; }
td:first-child { color: #555; white-space: nowrap; }
figure { margin: 1em 0; } img { max-width: 100%; }
figcaption { color: #444; font-size: 0.9em; max-width: 800px; }
.note { color: #8a5a00; }
"""


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _render_html(
    run: _Run,
    figures: list[_Figure],
    summary: list[tuple[str, str]],
    details: list[tuple[str, str]],
    other_options: list[tuple[str, str]],
) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>pyflowreg report: {html.escape(run.folder.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Motion-correction report: {html.escape(str(run.folder))}</h1>",
        "<h2>Summary</h2>",
        _table(summary),
    ]
    for note in run.notes:
        parts.append(f'<p class="note">Note: {html.escape(note)}</p>')
    for fig in figures:
        data = base64.b64encode(fig.png).decode("ascii")
        parts += [
            f"<h2>{html.escape(fig.title)}</h2>",
            "<figure>",
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(fig.title)}">',
            f"<figcaption>{html.escape(fig.caption)} "
            f'(<a href="{fig.filename}">{fig.filename}</a>)</figcaption>',
            "</figure>",
        ]
    parts += ["<h2>Run details</h2>", _table(details)]
    if other_options:
        parts += ["<details><summary>All other options</summary>", _table(other_options)]
        parts.append("</details>")
    parts.append("</body></html>")
    return "\n".join(parts)
