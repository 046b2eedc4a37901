"""Static content of synthetic 2-photon scenes: neuropil, vessels, cells and calcium transients.

Everything here lives on a *canvas*: the field of view plus a margin on every side, so that motion
reveals real tissue at the borders instead of padding. Intensities are in arbitrary linear units;
the caller normalises them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

#: Standard deviation of the Gaussian point-spread function, in pixels.
PSF_SIGMA = 1.0
#: Default cell density: about 250 somata in a 512 x 512 field of view.
CELL_DENSITY = 250.0 / 512**2
#: Soma radii in pixels (diameters 8-16 px).
RADIUS_RANGE = (4.0, 8.0)
#: dF/F saturates softly at this value.
DFF_MAX = 2.0


class Scene(NamedTuple):
    """A static canvas per channel and the footprints that carry the transients.

    Attributes
    ----------
    base : ndarray, shape (C, Hc, Wc), float32
        PSF-blurred image of every channel with every cell at its resting brightness F0.
    patches : list of ndarray, float32
        Blurred footprint of each functional (channel 0) cell scaled by its F0, so that a frame
        with dF/F values ``dff`` is ``base[0] + sum_k dff[k] * patches[k]`` on ``boxes[k]``.
    boxes : ndarray, shape (K, 4), int
        ``(y0, y1, x0, x1)`` of every patch on the canvas.
    """

    base: np.ndarray
    patches: list[np.ndarray]
    boxes: np.ndarray


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with zero mean and unit standard deviation."""
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    std = field.std()
    return (field - field.mean()) / (std if std > 0 else 1.0)


def neuropil(rng: np.random.Generator, shape: tuple[int, int], level: float) -> np.ndarray:
    """Diffuse background: a log-normal low-frequency field times fine-grained texture."""
    low_sigma = max(6.0, min(shape) / 12.0)
    low = np.exp(0.35 * smooth_noise(rng, shape, low_sigma))
    fine = 1.0 + 0.25 * smooth_noise(rng, shape, 1.2)
    return (level * low * np.clip(fine, 0.2, None)).astype(np.float32)


def vessel_transmission(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Fraction of light left by blood-vessel shadows (1 = no vessel), shape ``shape``."""
    rows, cols = shape
    transmission = np.ones(shape, dtype=np.float32)
    n_vessels = rng.poisson(1.5 * rows * cols / 512**2)
    y = np.arange(rows, dtype=np.float32)[:, None]
    x = np.arange(cols, dtype=np.float32)[None, :]
    for _ in range(n_vessels):
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, rows), rng.uniform(0, cols)
        half_width = rng.uniform(2.5, 7.0)
        bend, wavelength, phase = (
            rng.uniform(0, 20),
            rng.uniform(150, 400),
            rng.uniform(0, 2 * np.pi),
        )
        along = (y - cy) * np.sin(angle) + (x - cx) * np.cos(angle)
        across = (y - cy) * np.cos(angle) - (x - cx) * np.sin(angle)
        across = across + bend * np.sin(2 * np.pi * along / wavelength + phase)
        shadow = 0.8 * _sigmoid((half_width - np.abs(across)) / 0.8)
        transmission *= 1.0 - shadow
    return transmission


def place_cells(
    rng: np.random.Generator, shape: tuple[int, int], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Soma centres (n, 2) (row, column) and radii (n,), with little overlap where possible."""
    centres = np.empty((n, 2))
    radii = rng.uniform(*RADIUS_RANGE, size=n)
    for k in range(n):
        for _ in range(20):
            candidate = rng.uniform((0, 0), shape)
            gaps = np.hypot(*(centres[:k] - candidate).T) - 0.8 * (radii[:k] + radii[k])
            if k == 0 or gaps.min() > 0:
                break
        centres[k] = candidate
    return centres, radii


def footprint(
    rng: np.random.Generator, centre: np.ndarray, radius: float, nucleus_depth: float
) -> tuple[np.ndarray, tuple[int, int]]:
    """Unblurred soma: an elliptical disk with a darker, slightly off-centre nucleus.

    Returns the patch and the canvas position ``(y0, x0)`` of its top-left pixel. The patch leaves
    room for the PSF blur around the cell.
    """
    half = int(np.ceil(1.3 * radius + 4 * PSF_SIGMA + 1))
    top_left = np.floor(centre).astype(int) - half
    dy, dx = (
        np.mgrid[0 : 2 * half + 1, 0 : 2 * half + 1]
        + top_left[:, None, None]
        - centre[:, None, None]
    )
    angle = rng.uniform(0, np.pi)
    a = dy * np.cos(angle) + dx * np.sin(angle)
    b = -dy * np.sin(angle) + dx * np.cos(angle)
    elongation = rng.uniform(1.0, 1.25)
    ra, rb = radius * np.sqrt(elongation), radius / np.sqrt(elongation)
    body = _soft_disk(np.hypot(a / ra, b / rb), radius)
    off_a, off_b = rng.uniform(-0.15, 0.15, size=2) * radius
    nucleus = _soft_disk(np.hypot((a - off_a) / (0.5 * ra), (b - off_b) / (0.5 * rb)), 0.5 * radius)
    patch = np.clip(body - nucleus_depth * nucleus, 0.0, None)
    return patch.astype(np.float32), (int(top_left[0]), int(top_left[1]))


def _soft_disk(normalised_radius: np.ndarray, radius: float) -> np.ndarray:
    """1 inside, 0 outside, with an edge about half a pixel wide."""
    return _sigmoid((1.0 - normalised_radius) * radius / 0.5)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function ``1 / (1 + exp(-x))`` without overflow."""
    return np.exp(-np.logaddexp(0.0, -x))


def _clip_box(
    patch: np.ndarray, top_left: tuple[int, int], shape: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Part of ``patch`` that lies on the canvas, and its ``(y0, y1, x0, x1)`` box."""
    y0, x0 = top_left
    y1, x1 = y0 + patch.shape[0], x0 + patch.shape[1]
    cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y1, shape[0]), min(x1, shape[1])
    return patch[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0], (cy0, cy1, cx0, cx1)


def build_scene(
    rng: np.random.Generator, shape: tuple[int, int], n_channels: int, n_cells: int
) -> Scene:
    """Draw a scene on a canvas of ``shape`` with ``n_cells`` somata per channel.

    Channel 0 is functional (GCaMP-like: dim nucleus, calcium transients on ``patches``). Every
    further channel is a static structural label: half of its cells are functional cells, the
    others its own, with filled nuclei. All channels share the vessels.
    """
    transmission = vessel_transmission(rng, shape)
    centres, radii = place_cells(rng, shape, n_cells)
    base = np.empty((n_channels, *shape), dtype=np.float32)
    patches: list[np.ndarray] = []
    boxes = np.zeros((n_cells, 4), dtype=int)

    tissue = neuropil(rng, shape, level=0.25) * transmission
    brightness = 0.35 * rng.lognormal(0.0, 0.35, size=n_cells)
    for k in range(n_cells):
        patch, top_left = footprint(rng, centres[k], radii[k], nucleus_depth=0.65)
        patch, box = _clip_box(patch, top_left, shape)
        y0, y1, x0, x1 = box
        patch = brightness[k] * patch * transmission[y0:y1, x0:x1]
        tissue[y0:y1, x0:x1] += patch
        patches.append(_blur(patch))
        boxes[k] = box
    base[0] = _blur(tissue)

    for c in range(1, n_channels):
        shared = rng.random(n_cells) < 0.5
        own_centres, own_radii = place_cells(rng, shape, n_cells - int(shared.sum()))
        label_centres = np.concatenate([centres[shared], own_centres])
        label_radii = np.concatenate([radii[shared], own_radii])
        tissue = neuropil(rng, shape, level=0.12) * transmission
        for centre, radius in zip(label_centres, label_radii, strict=True):
            patch, top_left = footprint(rng, centre, radius, nucleus_depth=0.15)
            patch, (y0, y1, x0, x1) = _clip_box(patch, top_left, shape)
            level = 0.5 * rng.lognormal(0.0, 0.3)
            tissue[y0:y1, x0:x1] += level * patch * transmission[y0:y1, x0:x1]
        base[c] = _blur(tissue)
    return Scene(base, patches, boxes)


def _blur(image: np.ndarray) -> np.ndarray:
    return ndi.gaussian_filter(image, PSF_SIGMA, mode="constant").astype(np.float32)


def calcium_traces(rng: np.random.Generator, n_cells: int, n_frames: int) -> np.ndarray:
    """dF/F of every cell over time, shape (n_cells, n_frames), float32, in [0, DFF_MAX).

    Sparse spikes (per-cell rate 0.2-4 % of frames, amplitudes 0.3-1.2) convolved with a kernel
    that rises in about one frame and decays in 4-15 frames, then softly saturated at DFF_MAX.
    A burn-in of 60 frames means the first frame already shows ongoing activity.
    """
    burn = 60
    length = n_frames + burn
    rate = rng.uniform(0.002, 0.04, size=(n_cells, 1))
    spikes = (rng.random((n_cells, length)) < rate) * rng.uniform(0.3, 1.2, size=(n_cells, length))
    t = np.arange(length, dtype=float)
    tau_decay = rng.uniform(4.0, 15.0, size=(n_cells, 1))
    kernel = (1.0 - np.exp(-t / 1.0)) * np.exp(-t / tau_decay)
    kernel /= kernel.max(axis=1, keepdims=True)
    n_fft = 2 * length
    summed = np.fft.irfft(np.fft.rfft(spikes, n_fft) * np.fft.rfft(kernel, n_fft), n_fft)
    summed = np.clip(summed[:, burn:length], 0.0, None)
    return (DFF_MAX * np.tanh(summed / DFF_MAX)).astype(np.float32)
