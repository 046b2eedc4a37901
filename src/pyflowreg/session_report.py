"""Quality-control report of a multi-session run (``pyflowreg report session.toml``).

:func:`make_session_report` reads what the session's stages left (see
:mod:`pyflowreg.session`): per recording its stage-1 record, ``statistics.npz`` (when stage 1
saved it), ``temporal_average.npy`` and stage 2's ``w_to_reference.npz``; and
``final_results/final_valid_idx.npz`` of stage 3. It writes ``report/report.html`` in the
session's ``final_results`` folder: one self-contained page (figures embedded, also saved as
PNG next to it) with

* a table per recording: frames, stage states, run time, correlation of the frames with their
  reference (stage 1), crispness of the temporal mean, the inter-session displacement (mean and
  largest) and the correlation of the mean with the centre's before and after stage 2;
* the temporal means, the inter-session fields (colour-coded, one scale for all, and as arrows
  over the centre's mean), the means overlaid on the centre's before and after alignment;
* the final valid mask over the centre's mean, with every recording's aligned mask.

What is not there yet (stage 2 or 3 not run) is left out with a note.

>>> from pyflowreg.session_report import make_session_report
>>> make_session_report("session.toml")  # doctest: +SKIP
PosixPath('/data/experiment/final_results/report/report.html')
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .report import _CSS, _Figure, _import_pyplot, _png, _table

__all__ = ["is_session_source", "load_session", "make_session_report"]

CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")
STATUS_FILE = "status.json"
FINAL_FILE = "final_valid_idx.npz"
MEAN_FILE = "temporal_average.npy"
FIELD_FILE = "w_to_reference.npz"
#: At most this many recordings get their own panel in the grids of figures.
MAX_PANELS = 12


@dataclass
class SessionData:
    """What the report reads of a session (see :func:`load_session`)."""

    names: list[str]
    folders: list[Path]
    final_dir: Path | None
    center: int | None
    config_file: Path | None = None
    means: list[np.ndarray | None] = field(default_factory=list)
    fields: list[np.ndarray | None] = field(default_factory=list)
    final: dict[str, np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)
    #: Per recording, the verified state of stages 1 and 2; and the state of stage 3.
    states: list[tuple[str, str]] = field(default_factory=list)
    final_state: str = "pending"


# ---------------------------------------------------------------------- finding the session


def _status(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_recording_folder(folder: Path) -> bool:
    return folder.is_dir() and "stage1" in _status(folder)


def is_session_source(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a session config file or a session output folder (its root, its
    ``output_root`` or its ``final_results``) rather than the output folder of one run."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in CONFIG_SUFFIXES
    if not path.is_dir():
        return False
    if (path / FINAL_FILE).is_file() or "stage3" in _status(path):
        return True
    if (path / "compensated_outputs").is_dir():
        return True
    return any(_is_recording_folder(p) for p in path.iterdir())


def _natural(name: str) -> list:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in re.split(r"(\d+)", name)]


def load_session(source: str | os.PathLike) -> SessionData:
    """Find a session's folders from its config file or one of its output folders.

    Parameters
    ----------
    source : path
        A session config (``.toml``, ``.yaml``), the session's ``final_results`` folder, its
        ``output_root`` (holding ``<recording>/status.json``) or the ``root`` of a session
        with the default folder names.

    Raises
    ------
    FileNotFoundError
        ``source`` does not exist, or no recording folder with a stage-1 record is found.
    ValueError
        ``source`` is neither a config file nor a session folder.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"session config or folder not found: {source}")
    config_file = None
    final_dir: Path | None = None
    center = None
    if source.is_file():
        if source.suffix.lower() not in CONFIG_SUFFIXES:
            raise ValueError(
                f"{source} is not a session config ({', '.join(CONFIG_SUFFIXES)}) nor a folder"
            )
        from .session.config import SessionConfig, discover_input_files, recording_name
        from .session.progress import session_progress

        config = SessionConfig.from_file(source)
        files = discover_input_files(config)
        paths = config.resolve_output_paths()
        folders = [paths.output_root / recording_name(p) for p in files]
        final_dir, center, config_file = paths.final_results, config.center_index(files), source
        progress = session_progress(config)  # states checked against the config's settings
    elif (source / FINAL_FILE).is_file() or "stage3" in _status(source):
        final_dir = source
        folders = _folders_of_final(source)
    else:
        output_root = source
        if (source / "compensated_outputs").is_dir() and not any(
            _is_recording_folder(p) for p in source.iterdir()
        ):
            output_root, final_dir = source / "compensated_outputs", source / "final_results"
        folders = sorted(
            (p for p in output_root.iterdir() if _is_recording_folder(p)),
            key=lambda p: _natural(p.name),
        )
        if not folders:
            raise ValueError(
                f"{source} is not a session folder: no <recording>/status.json with stage 1 in "
                "it (give the session config, its output_root or its final_results folder)"
            )
        if final_dir is None and (output_root.parent / "final_results").is_dir():
            final_dir = output_root.parent / "final_results"
    if not folders:
        raise FileNotFoundError(f"no recording folders found for the session of {source}")
    data = SessionData(
        names=[f.name for f in folders],
        folders=folders,
        final_dir=final_dir,
        center=center,
        config_file=config_file,
    )
    if config_file is not None:
        data.states = [(r.stage1, r.stage2) for r in progress]
        data.final_state = progress[0].stage3
    else:  # no settings to compare with: the outputs are verified as recorded
        from .session._status import stage_state

        data.states = [(stage_state(f, "stage1"), stage_state(f, "stage2")) for f in folders]
        if final_dir is not None:
            data.final_state = stage_state(final_dir, "stage3")
    _read_results(data)
    return data


def _folders_of_final(final_dir: Path) -> list[Path]:
    path = final_dir / FINAL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: stage 3 has not finished; give the session config or its "
            "output_root instead"
        )
    with np.load(path, allow_pickle=False) as data:
        return [Path(str(p)).parent for p in data["compensated_h5_paths"]]


def _read_results(data: SessionData) -> None:
    for folder in data.folders:
        mean_path = folder / MEAN_FILE
        data.means.append(np.load(mean_path) if mean_path.is_file() else None)
        field_path = folder / FIELD_FILE
        if field_path.is_file():
            with np.load(field_path, allow_pickle=False) as f:
                data.fields.append(np.stack([f["u"], f["v"]], axis=-1).astype(np.float32))
        else:
            data.fields.append(None)
    missing = [n for n, m in zip(data.names, data.means, strict=True) if m is None]
    if missing:
        data.notes.append(f"Stage 1 has not finished for {', '.join(missing)}: no temporal mean.")
    if data.final_dir is not None and (data.final_dir / FINAL_FILE).is_file():
        with np.load(data.final_dir / FINAL_FILE, allow_pickle=False) as f:
            data.final = {k: f[k] for k in f.files if k not in ("temporal_averages",)}
        data.center = int(data.final["middle_idx"])
    else:
        data.notes.append("Stage 3 has not run: no final valid mask.")
    if data.center is None:
        for folder in data.folders:
            record = _status(folder).get("stages", {}).get("stage2") or {}
            center = record.get("center")
            if center:
                stems = [Path(center).stem]
                data.center = next((i for i, n in enumerate(data.names) if n in stems), None)
                break
    if data.center is None:
        data.center = (len(data.folders) + 1) // 2 - 1
    if all(f is None for f in data.fields):
        data.notes.append("Stage 2 has not run: no inter-session displacement fields.")


# ---------------------------------------------------------------------- numbers


def _correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    a, b = _gray(a), _gray(b)
    if mask is not None:
        a, b = a[mask], b[mask]
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.float64)
    return image.mean(axis=-1) if image.ndim == 3 else image


def _aligned_mean(mean: np.ndarray, w: np.ndarray) -> np.ndarray:
    from .core.warp import warp

    image = _gray(mean).astype(np.float32)
    return np.asarray(warp(image[None, ..., None], w), np.float64)[0, ..., 0]


def _recording_rows(data: SessionData) -> tuple[list[str], list[list[str]]]:
    from .metrics import crispness

    head = [
        "recording",
        "frames",
        "stage 1",
        "stage 2",
        "stage-1 time",
        "correlation with reference (before -> after)",
        "crispness of mean",
        "displacement to centre (mean / max)",
        "correlation with centre mean (before -> after stage 2)",
    ]
    centre_mean = data.means[data.center] if data.center is not None else None
    mask = None if data.final is None else data.final["final_valid"].astype(bool)
    rows = []
    for i, (name, folder) in enumerate(zip(data.names, data.folders, strict=True)):
        status = _status(folder)
        stage1 = (status.get("stages") or {}).get("stage1") or {}
        row = [name + (" (centre)" if i == data.center else "")]
        row.append(str(stage1.get("frames", "-")))
        row += list(data.states[i])
        seconds = stage1.get("seconds")
        row.append("-" if seconds is None else f"{float(seconds):.1f} s")
        row.append(_frame_correlation(folder))
        mean = data.means[i]
        row.append("-" if mean is None else f"{crispness(_gray(mean)):.4g}")
        w = data.fields[i]
        if w is None:
            row += ["-", "-"]
        else:
            length = np.hypot(w[..., 0], w[..., 1])
            row.append(f"{length.mean():.2f} / {length.max():.2f} px")
            if mean is None or centre_mean is None:
                row.append("-")
            else:
                before = _correlation(mean, centre_mean, mask)
                after = _correlation(_aligned_mean(mean, w), centre_mean, mask)
                row.append(f"{before:.4f} -> {after:.4f}")
        rows.append(row)
    return head, rows


def _frame_correlation(folder: Path) -> str:
    path = folder / "statistics.npz"
    if not path.is_file():
        return "-"
    with np.load(path) as s:
        if "correlation" not in s.files:
            return "-"
        after = f"{np.mean(s['correlation']):.4f}"
        if "correlation_before" in s.files:
            return f"{np.mean(s['correlation_before']):.4f} -> {after}"
        return after


# ---------------------------------------------------------------------- figures


def _panels(plt, n: int, size: float = 3.0):
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _shown(data: SessionData) -> list[int]:
    """Indices of the recordings with a panel (the centre always among them)."""
    indices = list(range(len(data.names)))
    if len(indices) <= MAX_PANELS:
        return indices
    step = np.linspace(0, len(indices) - 1, MAX_PANELS).round().astype(int)
    picked = sorted(set(step.tolist()) | {data.center})
    data.notes.append(f"Figures show {len(picked)} of the {len(indices)} recordings.")
    return picked


def _figure_means(plt, data: SessionData, shown: list[int]) -> _Figure | None:
    shown = [i for i in shown if data.means[i] is not None]
    if not shown:
        return None
    fig, axes = _panels(plt, len(shown))
    for ax, i in zip(axes, shown, strict=False):
        image = _gray(data.means[i])
        vmin, vmax = np.percentile(image, [0.5, 99.8])
        ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(data.names[i] + (" (centre)" if i == data.center else ""), fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return _Figure(
        "session_means.png",
        "Temporal means of the recordings (stage 1)",
        "The average of every motion-corrected recording. They should show the same field of "
        "view; differences in activity and brightness between sessions are expected.",
        _png(plt, fig),
    )


def _figure_fields(plt, data: SessionData, shown: list[int]) -> _Figure | None:
    from .util.visualization import flow_to_color

    shown = [i for i in shown if data.fields[i] is not None]
    if not shown:
        return None
    stack = np.stack([data.fields[i] for i in shown])
    max_flow = max(float(np.hypot(stack[..., 0], stack[..., 1]).max()), 1e-6)
    colors = flow_to_color(stack, max_flow=max_flow)
    fig, axes = _panels(plt, len(shown) + 1)
    for ax, i, image in zip(axes, shown, colors, strict=False):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(data.names[i], fontsize=9)
        ax.set_axis_off()
    grid = np.linspace(-max_flow, max_flow, 101)
    key = np.stack(np.meshgrid(grid, grid), axis=-1)
    ax = axes[len(shown)]
    ax.imshow(
        flow_to_color(key, max_flow=max_flow),
        extent=(-max_flow, max_flow, max_flow, -max_flow),
        interpolation="nearest",
    )
    ax.set_title("colour key (px)", fontsize=9)
    ax.set_xlabel("u (px)")
    ax.set_ylabel("v (px)")
    fig.tight_layout()
    return _Figure(
        "session_fields.png",
        "Inter-session displacement fields (stage 2)",
        "The field that maps each recording's mean onto the centre's, colour-coded (Middlebury "
        f"wheel): hue = direction, saturation = length, full colour at {max_flow:.2f} px, one "
        "scale for all recordings; white is no displacement (the centre). One colour is a "
        "rigid shift; changing colours are non-rigid deformation.",
        _png(plt, fig),
    )


def _figure_quivers(plt, data: SessionData, shown: list[int]) -> _Figure | None:
    from .util.visualization import quiver_visualization

    centre_mean = data.means[data.center]
    shown = [i for i in shown if data.fields[i] is not None and i != data.center]
    if not shown or centre_mean is None:
        return None
    h, w = data.fields[shown[0]].shape[:2]
    longest = max(
        float(np.hypot(data.fields[i][..., 0], data.fields[i][..., 1]).max()) for i in shown
    )
    spacing = max(1, round(max(h, w) / 12))
    scale = 0.8 * spacing / longest if longest > 0 else 1.0
    fig, axes = _panels(plt, len(shown), size=3.6)
    for ax, i in zip(axes, shown, strict=False):
        rgb = quiver_visualization(
            _gray(centre_mean),
            data.fields[i],
            scale=scale,
            downsample=spacing,
            backend="matplotlib",
            return_array=True,
            quiver_color=(1.0, 0.85, 0.0),
        )
        ax.imshow(rgb, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="lanczos")
        ax.set_title(data.names[i], fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return _Figure(
        "session_quivers.png",
        "Inter-session displacement arrows",
        f"The same fields as arrows over the centre recording's mean, drawn {scale:.2g} times "
        f"their length (the longest is {longest:.2f} px).",
        _png(plt, fig),
    )


def _overlay(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
    def scaled(image):
        lo, hi = np.percentile(image, [0.5, 99.8])
        return np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)

    ref, mov = scaled(_gray(reference)), scaled(_gray(moving))
    return np.stack([ref, mov, ref], axis=-1)  # centre magenta, recording green: grey = equal


def _figure_overlays(plt, data: SessionData, shown: list[int]) -> _Figure | None:
    centre_mean = data.means[data.center]
    shown = [
        i
        for i in shown
        if i != data.center and data.fields[i] is not None and data.means[i] is not None
    ]
    if not shown or centre_mean is None:
        return None
    fig, axes = plt.subplots(len(shown), 2, figsize=(6.4, 3.2 * len(shown)), squeeze=False)
    for row, i in zip(axes, shown, strict=True):
        row[0].imshow(_overlay(centre_mean, data.means[i]), interpolation="nearest")
        row[0].set_title(f"{data.names[i]}: before", fontsize=9)
        aligned = _aligned_mean(data.means[i], data.fields[i])
        row[1].imshow(_overlay(centre_mean, aligned), interpolation="nearest")
        row[1].set_title(f"{data.names[i]}: after stage 2", fontsize=9)
        for ax in row:
            ax.set_axis_off()
    fig.tight_layout()
    return _Figure(
        "session_overlays.png",
        "Alignment to the centre recording",
        "Each recording's mean (green) over the centre's (magenta), before and after warping "
        "it by its stage-2 field: where they agree the overlay is grey; coloured fringes are "
        "misalignment (or activity that differs between sessions).",
        _png(plt, fig),
    )


def _figure_mask(plt, data: SessionData) -> _Figure | None:
    if data.final is None:
        return None
    final = data.final["final_valid"].astype(bool)
    aligned = data.final.get("aligned_valid_masks")
    reference = data.final.get("reference_average")
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.2))
    if reference is not None:
        image = _gray(reference)
        vmin, vmax = np.percentile(image, [0.5, 99.8])
        axes[0].imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        shade = np.zeros((*final.shape, 4))
        shade[~final] = (1.0, 0.0, 0.0, 0.45)
        axes[0].imshow(shade, interpolation="nearest")
    else:
        axes[0].imshow(final, cmap="gray", interpolation="nearest")
    axes[0].set_title("Final mask over the centre's mean (red: invalid)", fontsize=9)
    if aligned is not None and len(aligned):
        counts = np.asarray(aligned, bool).sum(axis=0)
        im = axes[1].imshow(counts, cmap="viridis", vmin=0, vmax=len(aligned))
        fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04).set_label("recordings valid")
        axes[1].set_title("Recordings whose aligned mask is valid", fontsize=9)
    else:
        axes[1].set_visible(False)
    for ax in axes:
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    fig.tight_layout()
    valid = int(final.sum())
    return _Figure(
        "session_mask.png",
        "Final valid mask (stage 3)",
        f"Pixels of the centre's frame that every frame of every recording observed: {valid} "
        f"of {final.size} ({100.0 * valid / final.size:.1f} %). Right: for each pixel, how "
        "many recordings observe it after alignment; the final mask is where all do.",
        _png(plt, fig),
    )


# ---------------------------------------------------------------------- page


def make_session_report(
    source: str | os.PathLike, output_dir: str | os.PathLike | None = None
) -> Path:
    """Write the quality report of a session.

    Parameters
    ----------
    source : path
        The session config (``.toml``, ``.yaml``) or one of its output folders (see
        :func:`load_session`).
    output_dir : path, optional
        Folder of the report; default ``<final_results>/report`` (``<output_root>/report``
        when the ``final_results`` folder is not known).

    Returns
    -------
    Path
        The ``report.html`` written (figures embedded, and also saved as PNG next to it).

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install "pyflowreg[plot]"``).
    FileNotFoundError, ValueError
        ``source`` is not a session (see :func:`load_session`).
    """
    plt = _import_pyplot()
    data = load_session(source)
    if output_dir is None:
        base = data.final_dir if data.final_dir is not None else data.folders[0].parent
        output_dir = base / "report"
    report_dir = Path(output_dir)
    report_dir.mkdir(parents=True, exist_ok=True)

    shown = _shown(data)
    figures = [
        _figure_means(plt, data, shown),
        _figure_fields(plt, data, shown),
        _figure_quivers(plt, data, shown),
        _figure_overlays(plt, data, shown),
        _figure_mask(plt, data),
    ]
    figures = [f for f in figures if f is not None]
    for fig in figures:
        (report_dir / fig.filename).write_bytes(fig.png)
    head, rows = _recording_rows(data)
    page = _render(data, head, rows, figures)
    path = report_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _summary(data: SessionData) -> list[tuple[str, str]]:
    rows = [("Recordings", str(len(data.names)))]
    if data.config_file is not None:
        rows.append(("Config", str(data.config_file)))
    rows.append(("Output folders", str(data.folders[0].parent)))
    if data.center is not None:
        rows.append(("Centre (reference) recording", data.names[data.center]))
    if data.final is not None:
        final = data.final["final_valid"]
        rows.append(
            (
                "Final valid pixels",
                f"{int(final.sum())} of {final.size} ({100.0 * final.mean():.1f} %)",
            )
        )
    if data.final_dir is not None:
        rows.append(("Final results", str(data.final_dir)))
    rows.append(("Stage 3", data.final_state))
    return rows


def _render(data: SessionData, head: list[str], rows: list[list[str]], figures) -> str:
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>pyflowreg session report: {html.escape(data.folders[0].parent.name)}</title>",
        f"<style>{_CSS} th {{ text-align: left; font-weight: 600; padding: 3px 12px 3px 0; }}"
        "</style></head><body>",
        f"<h1>Session report: {html.escape(str(data.folders[0].parent))}</h1>",
        "<h2>Summary</h2>",
        _table(_summary(data)),
    ]
    for note in data.notes:
        parts.append(f'<p class="note">Note: {html.escape(note)}</p>')
    parts += [
        '<h2 id="recordings">Recordings</h2>',
        f'<table class="recordings"><tr>{header}</tr>{body}</table>',
    ]
    for fig in figures:
        png = base64.b64encode(fig.png).decode("ascii")
        parts += [
            f"<h2>{html.escape(fig.title)}</h2>",
            "<figure>",
            f'<img src="data:image/png;base64,{png}" alt="{html.escape(fig.title)}">',
            f"<figcaption>{html.escape(fig.caption)} "
            f'(<a href="{fig.filename}">{fig.filename}</a>)</figcaption>',
            "</figure>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)
